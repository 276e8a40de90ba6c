"""The feature cache: misses are computed and stored, hits are loaded, keys follow the audio content."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.data.audio import write_wav
from benchmark.data.batching import pad_waveforms
from benchmark.data.features import FeatureCache
from benchmark.data.manifest import Utterance
from benchmark.nn.encoder import SpeechEncoder, build_encoder


def _utterance(folder: Path, name: str, seconds: float, seed: int) -> Utterance:
    rng = np.random.default_rng(seed)
    wave = (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32)
    path = folder / f"{name}.wav"
    write_wav(path, wave)
    return Utterance(
        id=name, audio=str(path), duration=seconds, transcript="hello", emotion=None, descriptor=None,
        speaker="s1", gender=None, group="1", dataset="test",
    )  # fmt: skip


@pytest.fixture
def utterances(tmp_path: Path) -> list[Utterance]:
    return [_utterance(tmp_path, f"u{i}", s, i) for i, s in enumerate((1.0, 0.4, 1.7, 0.9, 1.2))]


@pytest.fixture
def encoder() -> SpeechEncoder:
    return build_encoder("tiny", "hubert")


def _alone(encoder: SpeechEncoder, utterance: Utterance) -> torch.Tensor:
    from benchmark.data.audio import load_audio

    return encoder(*pad_waveforms([load_audio(utterance.audio)])).hidden_states[:, 0]


def test_miss_computes_and_stores_then_hit_loads_without_the_encoder(
    encoder: SpeechEncoder, utterances: list[Utterance], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = FeatureCache(tmp_path / "features", encoder, batch_size=3, progress=False)
    first = cache.get(utterances)
    assert cache.folder == tmp_path / "features" / encoder.key
    assert len(list(cache.folder.rglob("*.pt"))) == len(utterances)
    for utterance, feature in zip(utterances, first, strict=True):
        frames = int(encoder.frame_lengths(torch.tensor(int(utterance.duration * 16000))))
        assert feature.shape == (encoder.num_layers, frames, encoder.hidden_size)
        assert feature.dtype == torch.float32
        # Batched with padding, stored in float16: equal to the utterance encoded alone.
        torch.testing.assert_close(feature, _alone(encoder, utterance), atol=2e-2, rtol=1e-2)

    monkeypatch.setattr(encoder, "forward", lambda *a, **k: pytest.fail("encoder called on a cache hit"))
    second = FeatureCache(tmp_path / "features", encoder, progress=False).get(utterances[::-1])
    for a, b in zip(first, second[::-1], strict=True):
        assert torch.equal(a, b)


def test_default_root_is_under_benchmark_home(encoder: SpeechEncoder, isolated_home: Path) -> None:
    assert FeatureCache(None, encoder).folder == isolated_home / "features" / encoder.key


def test_key_follows_audio_content_and_encoder(
    encoder: SpeechEncoder, utterances: list[Utterance], tmp_path: Path
) -> None:
    cache = FeatureCache(tmp_path / "features", encoder, progress=False)
    before = cache.path(utterances[0])
    cache.get(utterances[:1])
    _utterance(tmp_path, "u0", 1.0, seed=99)  # the same file, new content
    assert cache.path(utterances[0]) != before
    assert cache.get(utterances[:1])[0].shape[1] == 49
    assert len(list(cache.folder.rglob("*.pt"))) == 2
    other = FeatureCache(tmp_path / "features", build_encoder("tiny", "wavlm"), progress=False)
    assert other.folder != cache.folder


def test_disabled_cache_computes_on_the_fly_and_stores_nothing(
    encoder: SpeechEncoder, utterances: list[Utterance], tmp_path: Path
) -> None:
    cache = FeatureCache(tmp_path / "features", encoder, enabled=False, progress=False)
    features = cache.get(utterances)
    assert not (tmp_path / "features").exists()
    torch.testing.assert_close(features[2], _alone(encoder, utterances[2]), atol=1e-4, rtol=1e-4)


def test_padding_sensitive_encoders_are_run_one_utterance_at_a_time(
    encoder: SpeechEncoder, tmp_path: Path
) -> None:
    encoder.model.config.feat_extract_norm = "group"  # what a base-style checkpoint says
    assert not encoder.padding_invariant
    assert FeatureCache(tmp_path, encoder, batch_size=8).batch_size == 1


def test_loaders_read_the_cache_files_lazily_with_the_numbers_of_get(
    encoder: SpeechEncoder, utterances: list[Utterance], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmark.data.examples import examples_of

    cache = FeatureCache(tmp_path / "features", encoder, batch_size=2, progress=False)
    warm = cache.get(utterances[:2])  # two hits, three misses
    loaders = cache.loaders(utterances)
    assert [loader.path for loader in loaders] == [cache.path(u) for u in utterances]
    assert all(loader.path.is_file() for loader in loaders)  # the misses were written
    in_memory = cache.get(utterances)  # every file is there now
    for loader, feature in zip(loaders, in_memory, strict=True):
        assert loader.num_frames == feature.shape[1]
        assert torch.equal(loader(), feature)
    assert torch.equal(loaders[0](), warm[0])  # a miss returns the float16 values it stores

    monkeypatch.setattr(encoder, "forward", lambda *a, **k: pytest.fail("encoder called on a cache hit"))
    again = FeatureCache(tmp_path / "features", encoder, progress=False).loaders(utterances)
    assert [loader.num_frames for loader in again] == [loader.num_frames for loader in loaders]

    examples = examples_of(utterances, {u.id: loader for u, loader in zip(utterances, loaders, strict=True)})
    assert [e.num_frames for e in examples] == [loader.num_frames for loader in loaders]
    assert not any(isinstance(e.features, torch.Tensor) for e in examples)  # nothing held in memory
    assert torch.equal(examples[3].load(), in_memory[3])


def test_a_disabled_cache_has_no_loaders(encoder: SpeechEncoder, utterances: list[Utterance]) -> None:
    with pytest.raises(ValueError, match="no files"):
        FeatureCache(None, encoder, enabled=False).loaders(utterances)


def test_the_online_source_gives_the_loss_of_the_cache_on_the_same_batch(
    encoder: SpeechEncoder, utterances: list[Utterance], tmp_path: Path
) -> None:
    """The same training batch from the two feature sources: cache-file loaders (float16 on disk)
    and waveform loaders encoded inside the step give one loss, within the cache's rounding."""
    from benchmark.config import SystemConfig
    from benchmark.data.examples import examples_of
    from benchmark.data.features import AudioInput, audio_inputs
    from benchmark.nn.system import build_system
    from benchmark.registry import load_system
    from benchmark.train.data import collate

    labelled = [u.model_copy(update={"emotion": "happy", "descriptor": "a calm voice"}) for u in utterances]
    cached = FeatureCache(tmp_path / "features", encoder, progress=False).loaders(labelled)
    online = audio_inputs(labelled, encoder)
    assert all(isinstance(loader, AudioInput) for loader in online)
    assert [a.num_frames for a in online] == [c.num_frames for c in cached]  # plans are the same
    system: SystemConfig = load_system("full")
    torch.manual_seed(0)
    model = build_system(system, encoder.num_layers, encoder.hidden_size, "tiny").eval()
    losses, states = [], []
    for loaders in (cached, online):
        inputs = dict(zip([u.id for u in labelled], loaders, strict=True))
        batch = collate(examples_of(labelled, inputs), "full")
        assert batch.inputs.is_audio == (loaders is online)
        hidden, mask = batch.inputs.encoded(encoder)
        states.append(hidden * mask[None, :, :, None])  # the online encoder fills padded frames too
        losses.append(model(hidden, mask, batch.targets).loss)
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-3, atol=1e-3)
    assert not torch.equal(*states)  # really two sources: float16 rounding on one side only
    torch.testing.assert_close(states[0], states[1], rtol=1e-2, atol=2e-2)
