"""What `--backbone` means for the encoder and the decoder of a system.

- `paper`: HuBERT-large (or WavLM / wav2vec2 for the SSL baselines) and Llama-3.1-8B-Instruct
  from local weights, trained as the system's YAML says (LoRA).
- `demo` (the embedded default): the suite's own tiny HuBERT (`benchmark.train.demo_backbone`) and a
  tiny random Llama. A random LLM has nothing to preserve and LoRA alone barely moves it, so its
  weights all train (`regime: full`). The paper's learning rates and epochs are tuned for LoRA on a
  pretrained 8B model; a random LLM that must learn to read speech from a few hundred utterances
  needs larger steps and many more passes, so the demo trains every stage at 1e-3 for six times
  the epochs.

  How that was chosen. The first search (below) compared settings on held-out *test* groups, which
  a benchmark must not do, so the choice was checked again on validation data only
  (`benchmarks/demo_recipe.py`: `full`, fold 1 with `--validation`, i.e. trained on groups 3-5,
  chosen on group 2, group 1 untouched). Validation UA / WER / CIDEr: 2e-3 (the earlier choice)
  73.9 / 54.4 / 356; 1e-3 72.7 / 43.8 / 392; 3e-3 68.2 / 57.9 / 366. 1e-3 transcribes and
  describes clearly better at the same UA (one of 88 validation utterances is 1.1 points of UA),
  so it replaced 2e-3; the other grid points are in the README.

  The first search, on test groups (`full`, held-out speaker group 5; 1 and 3 in brackets):
  with the paper's values (2e-4 then 2e-5, 4 + 4 epochs) no output held a parseable emotion;
  5e-4 for 8 + 8 epochs gave UA 0.30, WER 0.84, the LLM ignoring the speech (teacher-forced loss
  the same with the audio of another utterance); 2e-3 for 16 + 16, UA 0.74, WER 0.60; 2e-3 for
  24 + 24 (the earlier setting), UA 0.69 (0.65, 0.75), WER 0.37 (0.54, 0.64). 3e-3 did worse
  (UA 0.65, WER 0.65 at 16 + 16) and a wider LLM (hidden 128) diverged at 2e-3. With the
  IB-VAE's scale-preserving init (`benchmark.nn.bottleneck`) the same setting gives, over the
  five folds, UA 0.68 +- 0.03 and WER 0.33 +- 0.03 (every fold at most 0.39).
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
    stage_lr: float | None = None  # replaces every stage's peak learning rate (None: the system's)
    epoch_scale: int = 1  # multiplies every stage's epochs


BACKBONES = {
    "paper": Backbone("paper", encoder="paper", decoder="paper", decoder_regime=None),
    "demo": Backbone(
        "demo", encoder="demo", decoder="tiny", decoder_regime="full", stage_lr=1e-3, epoch_scale=6
    ),
    "tiny": Backbone("tiny", encoder="tiny", decoder="tiny", decoder_regime="full"),
}


def get_backbone(name: str) -> Backbone:
    if name not in BACKBONES:
        raise BenchmarkError(f"unknown backbone '{name}'", hint=f"known backbones: {', '.join(BACKBONES)}")
    return BACKBONES[name]
