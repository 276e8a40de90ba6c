"""The frozen encoder: shapes, masks, frozenness, padding invariance, offline errors, demo backbone,
and its top layers re-run on cached hidden states (`TopLayers`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from benchmark.data.batching import pad_waveforms
from benchmark.data.examples import pad_features
from benchmark.errors import BenchmarkError
from benchmark.nn import ctc
from benchmark.nn.encoder import (
    FAMILIES,
    SpeechEncoder,
    TopLayers,
    build_encoder,
    normalise_waveforms,
    prepare_waveforms,
    read_do_normalize,
    tiny_config,
)
from benchmark.train import demo_backbone

LENGTHS = (16000, 9000, 23456)  # samples: 1 s, a short and a long utterance


def _waves(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in LENGTHS]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_shapes_and_frame_mask(family: str) -> None:
    encoder = build_encoder("tiny", family)
    waves, mask = pad_waveforms(_waves())
    out = encoder(waves, mask)
    layers, batch, frames, dim = out.hidden_states.shape
    assert (layers, batch, dim) == (encoder.num_layers, 3, encoder.hidden_size)
    assert encoder.num_layers == encoder.model.config.num_hidden_layers + 1
    expected = encoder.model._get_feat_extract_output_lengths(torch.tensor(LENGTHS))
    assert out.frame_mask.shape == (3, frames) and out.frame_mask.dtype == torch.bool
    assert out.frame_mask.sum(dim=1).tolist() == expected.tolist()
    assert frames == max(expected.tolist())  # 50 frames per second: 1 s -> 49 frames
    assert expected[0] == 49


def test_frozen_and_stays_in_eval_mode_under_a_training_parent() -> None:
    encoder = build_encoder("tiny", "hubert")
    parent = nn.ModuleDict({"encoder": encoder, "head": nn.Linear(4, 4)})
    parent.train()
    assert parent["head"].training
    assert not encoder.training and not any(m.training for m in encoder.modules())
    assert not any(p.requires_grad for p in encoder.parameters())
    assert encoder.model.config.layerdrop == 0.0 and encoder.model.config.mask_time_prob == 0.0
    waves, mask = pad_waveforms(_waves())
    first = encoder(waves, mask)
    assert not first.hidden_states.requires_grad
    assert first.hidden_states.shape[0] == encoder.num_layers
    assert torch.equal(first.hidden_states, encoder(waves, mask).hidden_states)  # no dropout


def test_layerdrop_of_a_checkpoint_config_is_switched_off() -> None:
    """A checkpoint saved with layerdrop (HuBERT-large-ft has 0.1) must still give L+1 states."""
    from benchmark.nn.encoder import SpeechEncoder, tiny_config

    config = tiny_config("hubert")
    config.layerdrop = 0.9
    model = FAMILIES["hubert"][1](config)
    encoder = SpeechEncoder(model, "tiny", "hubert")
    nn.Sequential(encoder).train()
    waves, mask = pad_waveforms(_waves())
    for _ in range(5):
        assert encoder(waves, mask).hidden_states.shape[0] == config.num_hidden_layers + 1


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_outputs_on_real_frames_do_not_depend_on_padding(family: str) -> None:
    encoder = build_encoder("tiny", family)
    assert encoder.padding_invariant
    waves = _waves(1)
    batched = encoder(*pad_waveforms(waves))
    for row, wave in enumerate(waves):
        alone = encoder(*pad_waveforms([wave])).hidden_states[:, 0]
        frames = alone.shape[1]
        torch.testing.assert_close(batched.hidden_states[:, row, :frames], alone, atol=1e-4, rtol=1e-4)


def test_waveforms_are_normalised_over_real_samples_only() -> None:
    ramp = 3.0 + np.arange(100, dtype=np.float32)
    waves, mask = pad_waveforms([ramp, np.ones(40, np.float32)])
    out = normalise_waveforms(waves, mask)
    assert abs(out[0].mean().item()) < 1e-5 and abs(out[0].std(unbiased=False).item() - 1) < 1e-3
    assert torch.all(out[1, 40:] == 0)


def test_do_normalize_is_read_from_the_checkpoint_and_raw_input_keeps_loudness(tmp_path) -> None:
    assert read_do_normalize(tmp_path)  # no preprocessor_config.json: Wav2Vec2FeatureExtractor's default
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"do_normalize": False}))
    assert not read_do_normalize(tmp_path)
    waves, mask = pad_waveforms([np.full(100, 0.5, np.float32), np.full(40, 0.5, np.float32)])
    raw = prepare_waveforms(waves, mask, do_normalize=False)
    assert torch.all(raw[0] == 0.5) and torch.all(raw[1, :40] == 0.5) and torch.all(raw[1, 40:] == 0)
    torch.testing.assert_close(
        prepare_waveforms(waves, mask, do_normalize=True), normalise_waveforms(waves, mask)
    )
    raw_encoder = build_encoder("tiny")
    raw_encoder.do_normalize = False
    assert raw_encoder.key != build_encoder("tiny").key  # raw input is part of the feature-cache key


def test_tiny_weights_and_key_are_the_same_in_every_build() -> None:
    first, second = build_encoder("tiny", "hubert"), build_encoder("tiny", "hubert")
    assert first.key == second.key and first.key.startswith("tiny-hubert-")
    assert build_encoder("tiny", "wavlm").key != first.key


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_missing_paper_weights_give_a_benchmark_error_with_a_hint(
    family: str, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setenv("BENCHMARK_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(BenchmarkError) as err:
        build_encoder("paper", family)
    assert err.value.hint and "huggingface-cli download" in err.value.hint


def test_unknown_backbone_and_family_are_user_errors() -> None:
    with pytest.raises(BenchmarkError):
        build_encoder("huge")
    with pytest.raises(BenchmarkError):
        build_encoder("tiny", "whisper")
    with pytest.raises(BenchmarkError, match="backbone 'demo' has no wavlm encoder"):
        build_encoder("demo", "wavlm")
    with pytest.raises(BenchmarkError, match="needs its weights folder"):
        build_encoder("demo")


def test_ctc_text_round_trip() -> None:
    ids = ctc.encode_text("The old man fixed the radio at nine o'clock.")
    logits = torch.nn.functional.one_hot(torch.tensor(ids), len(ctc.VOCAB)).float()
    assert ctc.greedy_decode(logits, len(ids)) == "the old man fixed the radio at nine o'clock"


@pytest.mark.timeout(120)
def test_small_demo_backbone_is_built_once_and_loads_as_the_demo_encoder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An 8-utterance, 2-step build stands in for the real one (the same code path, minutes less)."""
    monkeypatch.setattr(demo_backbone, "DEFAULT_SIZE", 8)
    monkeypatch.setattr(demo_backbone, "DEFAULT_STEPS", 2)
    folder = demo_backbone.ensure_demo_backbone()
    assert folder == demo_backbone.demo_backbone_dir()
    assert (folder / "config.json").is_file() and (folder / "ctc_head.pt").is_file()
    assert read_do_normalize(folder) == demo_backbone.DO_NORMALIZE
    info = json.loads((folder / "build.json").read_text())
    assert info["version"] == demo_backbone.BUILD_VERSION and (info["size"], info["steps"]) == (8, 2)
    assert not any(p.name.endswith(".tmp") for p in folder.parent.iterdir())

    stamp = (folder / "config.json").stat().st_mtime_ns
    monkeypatch.setattr(demo_backbone, "train_ctc", lambda *a, **k: pytest.fail("rebuilt a cached backbone"))
    assert demo_backbone.ensure_demo_backbone() == folder
    assert (folder / "config.json").stat().st_mtime_ns == stamp

    assert demo_backbone.encoder_weights("demo") == folder
    assert demo_backbone.encoder_weights("tiny") is None
    encoder = build_encoder("demo", weights=folder)
    assert encoder.num_layers == demo_backbone.demo_config().num_hidden_layers + 1
    assert encoder.model.config.layerdrop == 0.0 and encoder.model.config.mask_time_prob == 0.0
    assert encoder.do_normalize == demo_backbone.DO_NORMALIZE
    out = encoder(*pad_waveforms(_waves()))
    assert out.hidden_states.shape[-1] == encoder.hidden_size


def _cached_batch(encoder: SpeechEncoder) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The encoder's hidden states of a padded batch of two utterances (1 s and 0.56 s), and the
    same states as the cache serves them: each utterance's real frames on their own, zero-padded
    into a batch (`pad_features`); and the frame mask."""
    out = encoder(*pad_waveforms(_waves(3)[:2]))
    frames = out.frame_mask.sum(dim=1).tolist()
    hidden, mask = pad_features([out.hidden_states[:, row, :n] for row, n in enumerate(frames)])
    assert torch.equal(mask, out.frame_mask) and len(set(frames)) == len(frames)  # really padded
    return out.hidden_states, hidden, mask


def _tiny(family: str, stable: bool) -> SpeechEncoder:
    config = tiny_config(family)
    config.do_stable_layer_norm = stable  # False: base-style layer norm before the layers
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        return SpeechEncoder(FAMILIES[family][1](config), "tiny", family)


def _assert_same_on_real_frames(new: torch.Tensor, own: torch.Tensor, mask: torch.Tensor) -> None:
    for row, n in enumerate(mask.sum(dim=1).tolist()):
        torch.testing.assert_close(new[:, row, :n], own[:, row, :n], atol=1e-5, rtol=1e-5)
    assert torch.all(new[:, ~mask] == 0)  # padding stays zero, as the cache pads


@pytest.mark.parametrize("stable", [True, False], ids=["stable-layer-norm", "layer-norm-first"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("k", [1, 2, "all"])
def test_top_layers_rerun_on_cached_states_give_the_encoders_own_hidden_states(
    family: str, stable: bool, k
) -> None:
    """The split point, the attention mask, WavLM's position bias and the norms are those of the
    encoder: the untrained copies reproduce every hidden state above the split, on a padded batch."""
    encoder = _tiny(family, stable)
    own, cached, mask = _cached_batch(encoder)
    top = TopLayers(encoder, k).eval()
    assert len(top.layers) == (2 if k == "all" else k) and top.start == 2 - len(top.layers)
    assert (top.position_bias is not None) == (family == "wavlm" and top.start > 0)
    with torch.no_grad():
        new = top(cached, mask)
    assert new.shape == cached.shape
    assert torch.equal(new[: top.start + 1], cached[: top.start + 1])  # the cached states below
    _assert_same_on_real_frames(new, own, mask)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_top_layers_are_sensitive_to_the_mask_and_the_final_norm_matches_last_hidden_state(
    family: str,
) -> None:
    """The check above is not vacuous: without the mask the short utterance attends its padding.
    And the final norm, where a transformers version puts it into hidden state L (4.x), gives the
    model's `last_hidden_state`."""
    encoder = build_encoder("tiny", family)
    own, cached, mask = _cached_batch(encoder)
    top = TopLayers(encoder, 1).eval()
    short = mask[1].sum().item()
    with torch.no_grad():
        unmasked = top(cached, torch.ones_like(mask))
        assert not torch.allclose(unmasked[-1, 1, :short], own[-1, 1, :short], atol=1e-4)
        top.final_norm = encoder.model.encoder.layer_norm
        normed = top(cached, mask)[-1]
        waves, wave_mask = pad_waveforms(_waves(3)[:2])
        inputs = prepare_waveforms(waves, wave_mask, encoder.do_normalize)
        last = encoder.model(inputs, attention_mask=wave_mask.long()).last_hidden_state
    for row, n in enumerate(mask.sum(dim=1).tolist()):
        torch.testing.assert_close(normed[row, :n], last[row, :n], atol=1e-5, rtol=1e-5)


def test_top_layers_of_the_demo_architecture_reproduce_its_hidden_states() -> None:
    """The demo backbone's architecture (two-layer front end, conv bias, raw input, 4 layers of 128),
    with random weights: building the real one takes minutes."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        model = FAMILIES["hubert"][1](demo_backbone.demo_config())
    encoder = SpeechEncoder(model, "demo", "hubert", do_normalize=demo_backbone.DO_NORMALIZE)
    own, cached, mask = _cached_batch(encoder)
    for k in (1, 3, "all"):
        with torch.no_grad():
            new = TopLayers(encoder, k).eval()(cached, mask)
        _assert_same_on_real_frames(new, own, mask)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_top_layers_train_and_the_encoder_stays_frozen(family: str) -> None:
    encoder = build_encoder("tiny", family)
    _, cached, mask = _cached_batch(encoder)
    top = TopLayers(encoder, 1).train()
    assert all(p.requires_grad for p in top.layers.parameters())
    assert not any(p.requires_grad for p in encoder.parameters())
    assert top.position_bias is None or not any(p.requires_grad for p in top.position_bias.parameters())
    new = top(cached, mask)
    assert torch.equal(new[:-1], cached[:-1])
    new[-1].pow(2).sum().backward()
    assert all(p.grad is not None for p in top.layers.parameters())
    assert all(p.grad is None for p in encoder.parameters())


def test_top_layers_count_is_checked() -> None:
    encoder = build_encoder("tiny")
    with pytest.raises(BenchmarkError, match="finetune_layers=3"):
        TopLayers(encoder, 3)  # the tiny encoder has 2 layers
    with pytest.raises(ValueError, match="frozen"):
        TopLayers(encoder, 0)
    with pytest.raises(ValueError, match="hidden states"):
        TopLayers(encoder, 1)(torch.zeros(2, 1, 5, encoder.hidden_size), torch.ones(1, 5, dtype=torch.bool))
