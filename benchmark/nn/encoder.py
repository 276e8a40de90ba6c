"""The frozen speech encoder (paper section 3.1): every hidden state of an SSL model and a frame mask.

`build_encoder(backbone, family)` wraps a transformers model (`HubertModel`, `WavLMModel`,
`Wav2Vec2Model`) in a `SpeechEncoder`:

- `paper`: the paper's checkpoints, found offline only (`benchmark.nn.hub`);
- `demo`: the suite's own tiny HuBERT, fine-tuned with CTC on the synthesised backbone pool
  (`benchmark.nn.demo_backbone`), built on first use;
- `tiny`: small random-initialised configs of the same classes, seeded, for tests.

The encoder is never trained: its parameters do not require grad, it stays in eval mode whatever
its parent does (`train()` is overridden), and its config has `layerdrop=0` and `mask_time_prob=0`,
because transformers drops whole layers *and their hidden states* in train mode with layerdrop > 0,
which would change the number of layers the weighted layer sum sees.

Input handling follows the checkpoint's own `Wav2Vec2FeatureExtractor` (`preprocessor_config.json`):
with `do_normalize=True` (hubert-large-ls960-ft, the tiny configs, and any checkpoint without that
file) each utterance is normalised to zero mean and unit variance over its real samples; with
`do_normalize=False` (the demo backbone, which is trained on raw waveforms so that absolute
loudness, an emotion cue, reaches its features) the samples pass as they are. Padding is zero either
way.

Models whose feature extractor uses layer norm (`feat_extract_norm == "layer"`: HuBERT-large,
WavLM-large, wav2vec2-large and the tiny/demo configs here) always get the attention mask, and their
outputs on real frames do not depend on how much padding a batch has. Group-norm (base-style) models
were trained without an attention mask, so they get zero padding only, as their model cards
prescribe; group norm over time then mixes padding into the statistics, so such encoders report
`padding_invariant = False` and the feature cache runs them one utterance at a time.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from transformers import (
    HubertConfig,
    HubertModel,
    PretrainedConfig,
    PreTrainedModel,
    Wav2Vec2Config,
    Wav2Vec2Model,
    WavLMConfig,
    WavLMModel,
)

from benchmark.errors import BenchmarkError
from benchmark.nn.hub import PAPER_CHECKPOINTS, require_checkpoint

Backbone = Literal["tiny", "demo", "paper"]
Family = Literal["hubert", "wavlm", "wav2vec2"]

FAMILIES: dict[str, tuple[type[PretrainedConfig], type[PreTrainedModel], str]] = {
    # family -> (config class, model class, PAPER_CHECKPOINTS name)
    "hubert": (HubertConfig, HubertModel, "hubert-large"),
    "wavlm": (WavLMConfig, WavLMModel, "wavlm-large"),
    "wav2vec2": (Wav2Vec2Config, Wav2Vec2Model, "wav2vec2-large"),
}
# Settings that keep a frozen encoder deterministic and its layer count fixed (module docstring).
FROZEN_OVERRIDES = {"layerdrop": 0.0, "mask_time_prob": 0.0, "mask_feature_prob": 0.0}
TINY_SEED = 0  # tiny weights are the same in every process, so their feature-cache key is stable


def tiny_config(family: Family) -> PretrainedConfig:
    """A small config of the family's class: the standard conv strides (50 frames/s), 2 layers of 32.

    Layer norm in the feature extractor and stable layer norm, like the paper's large checkpoints.
    """
    config_class = FAMILIES[family][0]
    return config_class(
        conv_dim=(16,) * 7,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        **FROZEN_OVERRIDES,
    )


@dataclass
class EncoderOutput:
    hidden_states: torch.Tensor  # (L+1, B, F, D): the CNN features' projection, then every layer
    frame_mask: torch.Tensor  # (B, F) bool, True on frames computed from real samples


def normalise_waveforms(waves: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance per utterance over its real samples; padding set to zero.

    The same formula as `Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm` (eps 1e-7).
    """
    weights = mask.to(waves.dtype)
    count = weights.sum(dim=1, keepdim=True).clamp_min(1.0)
    mean = (waves * weights).sum(dim=1, keepdim=True) / count
    var = ((waves - mean).pow(2) * weights).sum(dim=1, keepdim=True) / count
    return (waves - mean) / torch.sqrt(var + 1e-7) * weights


def prepare_waveforms(waves: torch.Tensor, mask: torch.Tensor, do_normalize: bool) -> torch.Tensor:
    """The model input: `normalise_waveforms` when `do_normalize`, else the raw samples, padding zero."""
    return normalise_waveforms(waves, mask) if do_normalize else waves * mask.to(waves.dtype)


def read_do_normalize(folder: Path) -> bool:
    """`do_normalize` of a checkpoint folder's `preprocessor_config.json`; True when it has none or
    does not say, which is `Wav2Vec2FeatureExtractor`'s default."""
    try:
        config = json.loads((Path(folder) / "preprocessor_config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return True
    return bool(config.get("do_normalize", True))


class SpeechEncoder(nn.Module):
    """A frozen transformers speech model returning all L+1 hidden states and a frame mask."""

    def __init__(self, model: PreTrainedModel, backbone: str, family: str, do_normalize: bool = True) -> None:
        super().__init__()
        model.config.update(FROZEN_OVERRIDES)
        self.model = model.requires_grad_(False)
        self.backbone = backbone
        self.family = family
        self.do_normalize = do_normalize
        self.train(False)

    def train(self, mode: bool = True) -> SpeechEncoder:
        """Stay in eval mode whatever `mode` a parent module passes down (module docstring)."""
        return super().train(False)

    @property
    def num_layers(self) -> int:
        """Number of hidden states returned: the transformer layers plus their input."""
        return self.model.config.num_hidden_layers + 1

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def padding_invariant(self) -> bool:
        """Whether outputs on real frames are independent of batch padding (layer-norm front end)."""
        return self.model.config.feat_extract_norm == "layer"

    @cached_property
    def key(self) -> str:
        """`<backbone>-<family>-<hash>`: the hash covers the config and every weight, so features
        cached for one set of weights are never served for another. Raw (unnormalised) input is
        hashed too; normalised input adds nothing, so keys of normalising encoders are unchanged."""
        digest = hashlib.sha256(json.dumps(self.model.config.to_dict(), sort_keys=True).encode())
        if not self.do_normalize:
            digest.update(b"do_normalize=False")
        for name, tensor in sorted(self.model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        return f"{self.backbone}-{self.family}-{digest.hexdigest()[:16]}"

    def frame_lengths(self, sample_lengths: torch.Tensor) -> torch.Tensor:
        """Number of encoder frames for each number of samples (the conv stack's arithmetic)."""
        return self.model._get_feat_extract_output_lengths(sample_lengths).to(torch.long)

    @torch.no_grad()
    def forward(self, waves: torch.Tensor, mask: torch.Tensor) -> EncoderOutput:
        """waves (B, S) float at 16 kHz, mask (B, S) bool True on real samples."""
        device, dtype = self.model.device, self.model.dtype
        waves, mask = waves.to(device=device, dtype=torch.float32), mask.to(device)
        inputs = prepare_waveforms(waves, mask, self.do_normalize).to(dtype)
        attention_mask = mask.long() if self.padding_invariant else None
        out = self.model(inputs, attention_mask=attention_mask, output_hidden_states=True)
        hidden_states = torch.stack(out.hidden_states)
        lengths = self.frame_lengths(mask.sum(dim=1))
        frames = torch.arange(hidden_states.shape[2], device=device)
        return EncoderOutput(hidden_states, frames[None, :] < lengths[:, None])


def build_encoder(backbone: str, family: str = "hubert") -> SpeechEncoder:
    """The frozen encoder of `backbone` (`tiny`, `demo` or `paper`) and `family`."""
    if family not in FAMILIES:
        raise BenchmarkError(f"unknown encoder family '{family}'", hint=f"choose one of {sorted(FAMILIES)}")
    _, model_class, checkpoint_name = FAMILIES[family]
    do_normalize = True
    if backbone == "tiny":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(TINY_SEED)
            model = model_class(tiny_config(family))
    elif backbone == "demo":
        if family != "hubert":
            raise BenchmarkError(
                f"the demo backbone is a HuBERT; there is no demo {family}",
                hint="use --backbone tiny or paper for the wavlm and wav2vec2 baselines",
            )
        from benchmark.nn.demo_backbone import ensure_demo_backbone

        path = ensure_demo_backbone()
        model = HubertModel.from_pretrained(path, **FROZEN_OVERRIDES)
        do_normalize = read_do_normalize(path)
    elif backbone == "paper":
        path = require_checkpoint(PAPER_CHECKPOINTS[checkpoint_name])
        model = model_class.from_pretrained(path, **FROZEN_OVERRIDES)
        do_normalize = read_do_normalize(path)
    else:
        raise BenchmarkError(f"unknown backbone '{backbone}'", hint="choose one of tiny, demo, paper")
    return SpeechEncoder(model, backbone, family, do_normalize)
