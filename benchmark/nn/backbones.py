"""What `--backbone` means for the encoder and the decoder of a system.

- `paper`: HuBERT-large (or WavLM / wav2vec2 for the SSL baselines) and Llama-3.1-8B-Instruct
  from local weights, trained as the system's YAML says (LoRA).
- `demo` (the default): the suite's own tiny HuBERT (`benchmark.train.demo_backbone`) and a tiny
  random Llama whose weights all train (`regime: full`): every stage at one larger learning rate
  for a multiple of the paper's epochs, re-checked on validation data by
  `measurements/demo_recipe.py` (docs/demo.md, "How the demo recipe was chosen").
- `tiny`: random small configs of the same classes for tests; also `regime: full`.
- `paper-shape`: the exact `paper` architectures with random weights, nothing downloaded, to
  measure speed and memory at paper size (docs/paper-scale.md); `random_weights` makes `run`
  train and log throughput but never predict or score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from benchmark.config import SystemConfig
from benchmark.errors import BenchmarkError


@dataclass(frozen=True)
class Backbone:
    name: str
    encoder: Literal["tiny", "demo", "paper", "paper-shape"]
    decoder: Literal["tiny", "paper", "paper-shape"]
    decoder_regime: Literal["lora", "full"] | None  # None: the system's own setting
    stage_lr: float | None = None  # replaces every stage's peak learning rate (None: the system's)
    epoch_scale: int = 1  # multiplies every stage's epochs
    random_weights: bool = False  # random stand-ins for pretrained weights: speed and memory only

    def overrides(self, system: SystemConfig) -> dict[str, Any]:
        """This backbone's profile as overrides of `system` (`benchmark.config.override_system`):
        the decoder regime, and every stage's learning rate and epochs; empty for `paper`."""
        profile: dict[str, Any] = {}
        if self.decoder_regime is not None:
            profile["decoder"] = {"regime": self.decoder_regime}
        if system.stages and (self.stage_lr is not None or self.epoch_scale != 1):
            lr, scale = self.stage_lr, self.epoch_scale
            profile["stages"] = [
                {**stage.model_dump(), "lr": lr or stage.lr, "epochs": stage.epochs * scale}
                for stage in system.stages
            ]
        return profile


BACKBONES = {
    "paper": Backbone("paper", encoder="paper", decoder="paper", decoder_regime=None),
    "demo": Backbone(
        "demo", encoder="demo", decoder="tiny", decoder_regime="full", stage_lr=1e-3, epoch_scale=6
    ),
    "tiny": Backbone("tiny", encoder="tiny", decoder="tiny", decoder_regime="full"),
    "paper-shape": Backbone(
        "paper-shape", encoder="paper-shape", decoder="paper-shape", decoder_regime=None, random_weights=True
    ),
}


def get_backbone(name: str) -> Backbone:
    if name not in BACKBONES:
        raise BenchmarkError(f"unknown backbone '{name}'", hint=f"known backbones: {', '.join(BACKBONES)}")
    return BACKBONES[name]
