from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch

from benchmark.data.audio import AudioError, load_audio, probe_audio, write_wav
from benchmark.data.batching import LengthBucketSampler, pad_waveforms


def sine(freq: float, seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_frequency(wave: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave))
    return float(np.fft.rfftfreq(len(wave), 1 / rate)[spectrum.argmax()])


def test_stereo_44k_becomes_mono_16k(tmp_path: Path):
    left = sine(440, 1.0, 44100)
    sf.write(tmp_path / "s.wav", np.stack([left, left], axis=1), 44100)
    wave = load_audio(tmp_path / "s.wav")
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - 16000) <= 1
    assert dominant_frequency(wave, 16000) == pytest.approx(440, abs=2)


def test_write_wav_roundtrip(tmp_path: Path):
    write_wav(tmp_path / "sub" / "x.wav", sine(300, 0.5, 16000))
    assert probe_audio(tmp_path / "sub" / "x.wav") == pytest.approx(0.5)
    assert not list((tmp_path / "sub").glob(".*tmp"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "audio file not found"),
        (b"this is not audio", "unreadable or corrupt"),
        (b"", r"empty file \(0 bytes\)"),
    ],
)
def test_unusable_files_name_the_file(tmp_path: Path, content: bytes | None, message: str):
    path = tmp_path / "bad.wav"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(AudioError, match=message) as err:
        load_audio(path)
    assert str(path) in err.value.message


def test_empty_wav_is_an_error(tmp_path: Path):
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="no samples"):
        load_audio(tmp_path / "empty.wav")


def test_mp4_audio_is_decoded_in_process(tmp_path: Path):
    path = tmp_path / "clip.mp4"
    rate = 44100
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate, layout="mono")
        wave = sine(500, 1.0, rate)
        frame = av.AudioFrame.from_ndarray(wave[None, :], format="fltp", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    decoded = load_audio(path)
    assert abs(len(decoded) / 16000 - 1.0) < 0.1
    assert dominant_frequency(decoded, 16000) == pytest.approx(500, abs=3)
    (tmp_path / "junk.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(AudioError, match=r"junk\.mp4"):
        load_audio(tmp_path / "junk.mp4")


def test_pad_waveforms_masks_real_samples():
    batch, mask = pad_waveforms([np.ones(3, np.float32), np.ones(5, np.float32)])
    assert batch.shape == mask.shape == (2, 5)
    assert mask.tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert torch.equal(batch[0, 3:], torch.zeros(2))


def test_bucket_sampler_covers_everything_once_and_reduces_padding():
    rng = np.random.default_rng(0)
    lengths = rng.uniform(1, 20, size=203).tolist()
    sampler = LengthBucketSampler(lengths, batch_size=8, seed=3)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(203))
    assert len(batches) == len(sampler) == 26

    def padding(batches):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    random_batches = [rng.permutation(203)[k : k + 8].tolist() for k in range(0, 203, 8)]
    assert padding(batches) < 0.25 * padding(random_batches)


def test_bucket_sampler_order_depends_only_on_seed_and_epoch():
    lengths = list(range(1, 100))
    a, b = LengthBucketSampler(lengths, 4, seed=1), LengthBucketSampler(lengths, 4, seed=1)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
    b.set_epoch(1)
    assert list(a) == list(b)


def test_bucket_sampler_max_total_bounds_padded_size():
    lengths = [1.0] * 10 + [10.0] * 10
    sampler = LengthBucketSampler(lengths, batch_size=8, max_total=25.0, shuffle=False)
    batches = list(sampler)
    assert all(max(lengths[i] for i in b) * len(b) <= 25.0 for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(20))
    assert len(sampler) == len(batches)
