"""What `--backbone` means for the encoder and the decoder of a system.

- `paper`: HuBERT-large (or WavLM / wav2vec2 for the SSL baselines) and Llama-3.1-8B-Instruct
  from local weights, trained as the system's YAML says (LoRA).
- `demo` (the embedded default): the suite's own tiny HuBERT (`benchmark.nn.demo_backbone`) and a
  tiny random Llama. A random LLM has nothing to preserve and LoRA alone barely moves it, so its
  weights all train (`regime: full`).
- `tiny`: random small configs of the same classes for tests; also `regime: full`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from benchmark.errors import BenchmarkError


@dataclass(frozen=True)
class Backbone:
    name: str
    encoder: Literal["tiny", "demo", "paper"]
    decoder: Literal["tiny", "paper"]
    decoder_regime: Literal["lora", "full"] | None  # None: the system's own setting


BACKBONES = {
    "paper": Backbone("paper", encoder="paper", decoder="paper", decoder_regime=None),
    "demo": Backbone("demo", encoder="demo", decoder="tiny", decoder_regime="full"),
    "tiny": Backbone("tiny", encoder="tiny", decoder="tiny", decoder_regime="full"),
}


def get_backbone(name: str) -> Backbone:
    if name not in BACKBONES:
        raise BenchmarkError(f"unknown backbone '{name}'", hint=f"known backbones: {', '.join(BACKBONES)}")
    return BACKBONES[name]
