"""The frozen speech encoder (paper section 3.1): every hidden state of an SSL model and a frame mask.

`build_encoder(backbone, family)` wraps a transformers model (`HubertModel`, `WavLMModel`,
`Wav2Vec2Model`) in a `SpeechEncoder`: the checkpoint the registry's backbone names for the family
(`benchmark.nn.backbones`), read offline (`benchmark.nn.hub`), the demo backbone's folder, a seeded
tiny config, or a shipped config with random weights.
The encoder never trains: no grad, always eval mode, `layerdrop=0` and `mask_time_prob=0` (layerdrop
also drops hidden states). Input normalisation follows the checkpoint's `preprocessor_config.json`
(`do_normalize`). Layer-norm front ends get the attention mask and are padding invariant;
group-norm ones get zero padding only and report `padding_invariant = False`.
Where encoder layers do train (the SSL baselines), `TopLayers` holds trainable copies of the top k
layers that re-run on cached hidden states (docs/design.md).
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
import transformers
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
from transformers.models.wavlm.modeling_wavlm import WavLMAttention

from benchmark.errors import BenchmarkError
from benchmark.nn.backbones import Family, get_backbone
from benchmark.nn.hub import shipped_config

FAMILIES: dict[str, tuple[type[PretrainedConfig], type[PreTrainedModel]]] = {
    # family -> (config class, model class)
    "hubert": (HubertConfig, HubertModel),
    "wavlm": (WavLMConfig, WavLMModel),
    "wav2vec2": (Wav2Vec2Config, Wav2Vec2Model),
}
# Settings that keep a frozen encoder deterministic and its layer count fixed (module docstring).
FROZEN_OVERRIDES = {"layerdrop": 0.0, "mask_time_prob": 0.0, "mask_feature_prob": 0.0}
# Random (tiny, paper-shape) weights are the same in every process, so their feature-cache key is stable.
RANDOM_WEIGHTS_SEED = 0


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
        hashed too; normalised input adds nothing, so keys of normalising encoders are unchanged.
        For stable-layer-norm encoders the transformers major version is hashed as well: 4.x puts
        the final layer norm into the top hidden state, 5.x does not (`top_state_is_normed`)."""
        digest = hashlib.sha256(json.dumps(self.model.config.to_dict(), sort_keys=True).encode())
        if not self.do_normalize:
            digest.update(b"do_normalize=False")
        if getattr(self.model.config, "do_stable_layer_norm", False):
            digest.update(f"transformers={transformers.__version__.split('.')[0]}".encode())
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


def build_encoder(backbone: str, family: str = "hubert", weights: Path | None = None) -> SpeechEncoder:
    """The frozen `family` encoder of the registry's `backbone`, from the checkpoint it names:
    loaded from `weights` or the checkpoint's local copy (`Backbone.hub_folder`), or, for `tiny` and
    random weights, built seeded from a small config or the shipped one. `weights` is the folder a
    `demo` encoder needs (`benchmark.train.demo_backbone.encoder_weights` builds it)."""
    if family not in FAMILIES:
        raise BenchmarkError(f"unknown encoder family '{family}'", hint=f"choose one of {sorted(FAMILIES)}")
    spec = get_backbone(backbone)
    checkpoint = spec.encoder_checkpoint(family)
    config_class, model_class = FAMILIES[family]
    folder = weights or spec.hub_folder(checkpoint)
    if checkpoint == "demo" and folder is None:
        raise BenchmarkError(
            "the demo backbone needs its weights folder",
            hint="pass benchmark.train.demo_backbone.encoder_weights('demo'), which builds it",
        )
    if folder is not None:
        model = model_class.from_pretrained(folder, **FROZEN_OVERRIDES)
        return SpeechEncoder(model, backbone, family, read_do_normalize(folder))
    if checkpoint == "tiny":
        config = tiny_config(family)
    else:
        config = config_class.from_dict({**shipped_config(checkpoint), **FROZEN_OVERRIDES})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        return SpeechEncoder(model_class(config), backbone, family)


def top_state_is_normed(model: PreTrainedModel) -> bool:
    """Whether the model's top hidden state (number L) has gone through the encoder's final norm.

    Only "stable layer norm" encoders (`do_stable_layer_norm`: the large checkpoints and the
    tiny/demo configs) have a norm after their last layer. transformers 4 returned its output as
    hidden state L; transformers 5 (`capture_outputs(tie_last_hidden_states=False)`) returns the
    last layer's raw output there and normalises `last_hidden_state` only. Rather than trust a
    version number, this runs the model once on a second of noise and compares hidden state L with
    the last layer's own output, caught by a hook.
    """
    if not model.config.do_stable_layer_norm:
        return False  # the norm is applied before the layers, and is part of hidden state 0
    caught: list[torch.Tensor] = []
    last = model.encoder.layers[-1]
    handle = last.register_forward_hook(
        lambda _m, _a, out: caught.append(out[0] if isinstance(out, tuple) else out)
    )
    try:
        generator = torch.Generator().manual_seed(0)
        noise = torch.randn(1, 16000, generator=generator).to(device=model.device, dtype=model.dtype)
        with torch.no_grad():
            top = model(noise, output_hidden_states=True).hidden_states[-1]
            normed = model.encoder.layer_norm(caught[-1])
    finally:
        handle.remove()
    if torch.equal(top, caught[-1]):
        return False
    if torch.allclose(top, normed, atol=1e-5, rtol=1e-4):
        return True
    raise BenchmarkError(
        f"{type(model).__name__}: hidden state L is neither the last layer's output nor its final norm",
        hint="this transformers version computes hidden states in a way TopLayers does not know",
    )


def resolve_finetune_layers(finetune_layers: int | str, num_transformer_layers: int) -> int:
    """The number k of top transformer layers `finetune_layers` names (`"all"`: every one)."""
    k = num_transformer_layers if finetune_layers == "all" else int(finetune_layers)
    if not 0 <= k <= num_transformer_layers:
        raise BenchmarkError(
            f"ssl.finetune_layers={finetune_layers} but the encoder has {num_transformer_layers} layers",
            hint=f"choose 0 (frozen) to {num_transformer_layers}, or 'all'",
        )
    return k


class RelativePositionBias(nn.Module):
    """WavLM's relative position bias: made by layer 0's bucket embedding from the frame count only,
    then passed, ungated, to every later layer (each gates it by its own input). Fine-tuning layers
    above layer 0 needs it, from a frozen copy of that embedding, as layer 0 itself stays frozen.
    The bucketing is transformers' own (`WavLMAttention`'s methods, used on this module's fields)."""

    compute_bias = WavLMAttention.compute_bias
    _relative_positions_bucket = WavLMAttention._relative_positions_bucket

    def __init__(self, attention: WavLMAttention) -> None:
        super().__init__()
        self.num_heads, self.num_buckets = attention.num_heads, attention.num_buckets
        self.max_distance = attention.max_distance
        self.rel_attn_embed = copy.deepcopy(attention.rel_attn_embed).requires_grad_(False)

    def forward(self, batch: int, frames: int) -> torch.Tensor:
        """(batch * heads, frames, frames), as layer 0 makes it when given no bias."""
        bias = self.compute_bias(frames, frames).unsqueeze(0)
        return bias.repeat(batch, 1, 1, 1).view(batch * self.num_heads, frames, frames)


class TopLayers(nn.Module):
    """Trainable copies of the encoder's top k transformer layers, re-run on cached hidden states.

    Hidden state i is the input of layer i, so layers L-k..L-1 map cached state L-k to new states
    L-k+1..L and states 0..L-k stay cached; k = L (`finetune_layers: all`) starts from the frozen
    front end's output. What the encoder's forward does around its layers is reproduced, so the
    untrained copies give back its hidden states on real frames (tests/test_encoder.py): padded
    keys are masked (the additive (B, 1, F, F) mask for HuBERT / wav2vec2, the (B, F) mask for
    WavLM) and padded outputs zeroed; WavLM gets layer 0's relative position bias
    (`RelativePositionBias`); stable-layer-norm encoders get their final norm, trainable, where
    state L includes it (`top_state_is_normed`). Train mode uses the config's dropout, never
    LayerDrop or time masking. The copies are float32 whatever the checkpoint's dtype.
    """

    def __init__(self, encoder: SpeechEncoder, finetune_layers: int | str) -> None:
        super().__init__()
        model = encoder.model
        total = model.config.num_hidden_layers
        k = resolve_finetune_layers(finetune_layers, total)
        if k == 0:
            raise ValueError("finetune_layers=0 keeps the encoder frozen: build no TopLayers")
        self.num_hidden_states, self.start = total + 1, total - k
        self.relative_bias = isinstance(model, WavLMModel)  # its layers take and return position_bias
        layers = model.encoder.layers
        self.layers = copy.deepcopy(layers[self.start :]).float().requires_grad_(True)
        self.final_norm = (
            copy.deepcopy(model.encoder.layer_norm).float().requires_grad_(True)
            if top_state_is_normed(model)
            else None
        )
        self.position_bias = (
            RelativePositionBias(layers[0].attention).float()
            if self.relative_bias and self.start > 0
            else None
        )

    def forward(self, hidden_states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """hidden_states (L+1, B, F, D) with zero padding, mask (B, F) -> (L+1, B, F, D): states
        0..L-k as given, L-k+1..L recomputed (with gradients when training)."""
        if hidden_states.shape[0] != self.num_hidden_states:
            raise ValueError(f"expected {self.num_hidden_states} hidden states, got {hidden_states.shape[0]}")
        hidden = hidden_states[self.start]
        batch, frames = mask.shape
        kwargs: dict = {}
        if self.relative_bias:
            kwargs["attention_mask"] = mask
            if self.position_bias is not None:
                kwargs["position_bias"] = self.position_bias(batch, frames)
        else:
            blocked = torch.zeros(batch, 1, 1, frames, dtype=hidden.dtype, device=hidden.device)
            blocked = blocked.masked_fill(~mask[:, None, None, :], torch.finfo(hidden.dtype).min)
            kwargs["attention_mask"] = blocked.expand(batch, 1, frames, frames)
        new = []
        for layer in self.layers:
            out = layer(hidden, **kwargs)
            hidden = out[0] if isinstance(out, tuple) else out
            if self.relative_bias:
                kwargs["position_bias"] = out[1]  # layer 0's bias, when layer 0 is among the copies
            new.append(hidden)
        if self.final_norm is not None:
            new[-1] = self.final_norm(new[-1])
        top = torch.stack(new) * mask[None, :, :, None].to(new[-1].dtype)
        return torch.cat([hidden_states[: self.start + 1], top.to(hidden_states.dtype)])
