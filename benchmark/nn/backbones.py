"""What `--backbone` means: entries of the backbone registry, `models/backbones/NAME.yaml`.

A backbone names the checkpoints a system is built on, and how the system's recipe is scaled:
- `encoder`: per encoder family (`hubert`, `wavlm`, `wav2vec2`), a HuggingFace repo id, read from
  a local copy (`benchmark.nn.hub`), or a builder: `tiny` (a seeded random small config) or `demo`
  (the suite's own HuBERT, `benchmark.train.demo_backbone`); a family it lacks cannot be built.
- `llm`: a Llama-family causal LM's repo id, or `tiny` (a random small Llama); `dtype`: its weights'.
- `random_weights`: repo ids are built with random weights from their shipped `config.json` (the
  paper's architectures, `paper-shape`), so `run` measures speed and memory and never scores.
- `decoder_regime` (null: the system's), `stage_lr`, `epoch_scale`: the recipe's profile;
  `features`: the default feature source, `cache` or `online`; `max_seconds`: the longest audio
  the encoder takes in one pass (default 30).
A new encoder or LLM is a new YAML file; docs/paper-scale.md ("Backbones") has the fields.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from benchmark.config import StrictModel, SystemConfig
from benchmark.errors import BenchmarkError
from benchmark.nn.hub import require_checkpoint
from benchmark.registry import entries, load_entry

Family = Literal["hubert", "wavlm", "wav2vec2"]
BUILDERS = ("tiny", "demo")  # checkpoints the suite makes itself instead of loading them
REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")  # a HuggingFace repo id, owner/name


def _checkpoint(value: str, builders: tuple[str, ...]) -> str:
    if value in builders or REPO_ID.fullmatch(value):
        return value
    raise ValueError(f"{value!r} is neither a HuggingFace repo id (owner/name) nor {' or '.join(builders)}")


class Backbone(StrictModel):
    """One backbone of the registry (module docstring)."""

    name: str
    encoder: dict[Family, str] = Field(min_length=1)
    llm: str
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # the LLM's weights
    decoder_regime: Literal["lora", "full"] | None = None  # None: the system's own setting
    features: Literal["cache", "online"]
    stage_lr: float | None = Field(None, gt=0)  # replaces every stage's peak learning rate
    epoch_scale: int = Field(1, ge=1)  # multiplies every stage's epochs
    random_weights: bool = False  # random stand-ins for pretrained weights: speed and memory only
    # The longest audio the encoder takes in one pass (`benchmark predict` refuses longer files):
    # HuBERT, WavLM and wav2vec 2.0 were trained on utterances of at most ~35 s, and their
    # self-attention's memory grows with the square of the length.
    max_seconds: float = Field(30.0, gt=0)

    @field_validator("encoder")
    @classmethod
    def _encoders(cls, encoder: dict[str, str]) -> dict[str, str]:
        for family, checkpoint in encoder.items():
            if checkpoint == "demo" and family != "hubert":
                raise ValueError(f"{family}: the demo encoder is a HuBERT")
            _checkpoint(checkpoint, BUILDERS)
        return encoder

    @field_validator("llm")
    @classmethod
    def _llm(cls, llm: str) -> str:
        return _checkpoint(llm, ("tiny",))

    def encoder_checkpoint(self, family: str) -> str:
        """The checkpoint of this backbone's `family` encoder; one error line if it has none."""
        if family in self.encoder:
            return self.encoder[family]
        having = [name for name, backbone in backbones().items() if family in backbone.encoder]
        raise BenchmarkError(
            f"backbone '{self.name}' has no {family} encoder", hint=f"backbones with one: {', '.join(having)}"
        )

    def hub_folder(self, checkpoint: str) -> Path | None:
        """The local copy `checkpoint` (one of this backbone's) is loaded from, or None when it is
        built instead (a builder, or random weights). A missing copy is one error naming where it
        was looked for (`benchmark.nn.hub.require_checkpoint`)."""
        if checkpoint in BUILDERS or self.random_weights:
            return None
        return require_checkpoint(checkpoint)

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


def get_backbone(name: str) -> Backbone:
    """The backbone `models/backbones/NAME.yaml` of the registry, validated; its `name` must be the
    file's."""
    return load_entry("backbones", name, Backbone)


def backbones() -> dict[str, Backbone]:
    """Every backbone of the registry, by name in sorted order."""
    return {name: get_backbone(name) for name in sorted(entries("backbones"))}
