"""Acoustic cues: openSMILE values on known signals, the on-disk cache, speaker z-scores, levels."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from benchmark.config import benchmark_home
from benchmark.data import cues
from benchmark.data.audio import AudioError, write_wav
from benchmark.data.cues import (
    UtteranceCues,
    batch_cues,
    count_words,
    frame_cues,
    level,
    speaker_zscores,
    utterance_cues,
)


def tone(path: Path, freq: float = 220.0, amplitude: float = 0.3, seconds: float = 1.5) -> Path:
    """A sine with a little harmonic content and noise, like a sustained vowel."""
    t = np.arange(int(seconds * 16000)) / 16000
    wave = np.sin(2 * np.pi * freq * t) + 0.3 * np.sin(2 * np.pi * 2 * freq * t)
    wave += 0.01 * np.random.default_rng(0).standard_normal(len(t))
    write_wav(path, amplitude * wave / np.abs(wave).max())
    return path


def test_tone_f0_loudness_and_voicing(tmp_path: Path):
    quiet = utterance_cues(tone(tmp_path / "quiet.wav", amplitude=0.1), "one two three")
    loud = utterance_cues(tone(tmp_path / "loud.wav", amplitude=0.6))
    # 220 Hz is 12*log2(220/27.5) = 36 semitones above openSMILE's 27.5 Hz reference.
    assert quiet.f0_mean == pytest.approx(36.0, abs=0.5)
    assert quiet.f0_range < 0.5
    assert loud.loudness > quiet.loudness
    assert quiet.duration == pytest.approx(1.5)
    assert 1.3 < quiet.voiced_time <= 1.5
    assert quiet.speaking_rate == pytest.approx(3 / quiet.voiced_time)
    assert loud.speaking_rate is None


def test_higher_tone_has_higher_f0(tmp_path: Path):
    low = utterance_cues(tone(tmp_path / "low.wav", freq=150))
    high = utterance_cues(tone(tmp_path / "high.wav", freq=300))
    assert high.f0_mean - low.f0_mean == pytest.approx(12.0, abs=0.5)  # one octave


def test_silence_has_no_voiced_cues(tmp_path: Path):
    write_wav(tmp_path / "silence.wav", np.zeros(16000, np.float32))
    result = utterance_cues(tmp_path / "silence.wav", "some words")
    assert result.voiced_time == 0 and math.isnan(result.f0_mean)
    assert result.get("f0_mean") is None and result.speaking_rate is None


def test_frame_cues(tmp_path: Path):
    frames = frame_cues(tone(tmp_path / "a.wav"))
    assert frames.index.name == "time"
    assert np.allclose(np.diff(frames.index), cues.HOP_SECONDS)
    assert 140 <= len(frames) <= 150
    assert {"Loudness_sma3", "F0semitoneFrom27.5Hz_sma3nz", "HNRdBACF_sma3nz"} <= set(frames.columns)
    voiced = frames["F0semitoneFrom27.5Hz_sma3nz"] > 0
    assert frames.loc[voiced, "F0semitoneFrom27.5Hz_sma3nz"].median() == pytest.approx(36.0, abs=0.5)


def test_cache_hit_skips_opensmile_and_changed_file_is_measured(tmp_path: Path, monkeypatch):
    path = tone(tmp_path / "a.wav")
    first = utterance_cues(path, "a b")
    assert list((benchmark_home() / "cues").rglob("*.npz"))

    calls = []
    real_measure = cues._measure
    monkeypatch.setattr(cues, "_measure", lambda wave: calls.append(1) or real_measure(wave))
    assert utterance_cues(path, "a b") == first
    assert frame_cues(path).shape[0] > 0
    assert calls == []

    tone(path, freq=300)  # same name, new content
    assert utterance_cues(path).f0_mean > first.f0_mean + 4
    assert calls == [1]

    monkeypatch.setattr(cues, "CUE_VERSION", cues.CUE_VERSION + 1)  # new definitions: measure again
    utterance_cues(path)
    assert calls == [1, 1]


def test_damaged_cache_entry_is_measured_again(tmp_path: Path):
    path = tone(tmp_path / "a.wav")
    first = utterance_cues(path)
    (entry,) = (benchmark_home() / "cues").rglob("*.npz")
    entry.write_bytes(b"not a zip")
    assert utterance_cues(path) == first


def test_unreadable_and_missing_files_name_the_file(tmp_path: Path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF garbage")
    with pytest.raises(AudioError, match=r"bad\.wav"):
        utterance_cues(bad)
    with pytest.raises(AudioError, match=r"missing\.wav"):
        frame_cues(tmp_path / "missing.wav")


def test_batch_cues_matches_single_calls(tmp_path: Path):
    paths = [tone(tmp_path / f"{f}.wav", freq=f) for f in (150, 200, 250)]
    texts = ["one", None, "one two"]
    assert batch_cues(paths, texts, workers=2) == [
        utterance_cues(p, t) for p, t in zip(paths, texts, strict=True)
    ]


def test_count_words():
    assert count_words("The nurse locked the door at nine o'clock.") == 8
    assert count_words(" -- ") == 0


def make(f0: float, rate: float | None = 4.0) -> UtteranceCues:
    return UtteranceCues(
        f0_mean=f0, f0_range=2.0, loudness=1.0, jitter=0.01, shimmer=1.0, hnr=10.0,
        spectral_slope=-0.01, duration=2.0, voiced_time=1.5, speaking_rate=rate,
    )  # fmt: skip


def test_speaker_zscores_hand_case():
    # Speaker a: 1, 2, 3 -> mean 2, population std sqrt(2/3). Speaker b: two utterances, so the
    # global mean and std of all five (1, 2, 3, 10, 10 -> mean 5.2) are used. Speaker c: constant.
    values = [make(1), make(2), make(3), make(10), make(10), make(7), make(7), make(7)]
    speakers = ["a", "a", "a", "b", "b", "c", "c", "c"]
    z = speaker_zscores(values, speakers)
    sd_a = math.sqrt(2 / 3)
    assert [z[i]["f0_mean"] for i in range(3)] == pytest.approx([-1 / sd_a, 0, 1 / sd_a])
    everything = np.array([1, 2, 3, 10, 10, 7, 7, 7], dtype=float)
    assert z[3]["f0_mean"] == pytest.approx((10 - everything.mean()) / everything.std())
    assert [z[i]["f0_mean"] for i in (5, 6, 7)] == [0.0, 0.0, 0.0]  # std 0: nothing to tell apart
    assert z[0]["loudness"] == 0.0


def test_speaker_zscores_missing_values_stay_missing():
    values = [make(1, rate=None), make(2, rate=3.0), make(3, rate=5.0), make(4, rate=4.0)]
    z = speaker_zscores(values, ["a"] * 4)
    assert z[0]["speaking_rate"] is None
    assert [z[i]["speaking_rate"] for i in (1, 2, 3)] == pytest.approx([-1.2247, 1.2247, 0.0], abs=1e-4)
    nan_f0 = replace(make(1), f0_mean=math.nan)
    assert speaker_zscores([nan_f0, make(2), make(3)], ["a"] * 3)[0]["f0_mean"] is None
    with pytest.raises(ValueError):
        speaker_zscores(values, ["a"])


def test_level_words():
    assert cues.LEVEL_THRESHOLD == 0.5
    assert level(0.6) == "high" and level(-0.6) == "low"
    assert level(0.2) == "normal" and level(0.5) == "normal" and level(-0.5) == "normal"
    assert level(1.2, threshold=1.5) == "normal"
    assert level(None) is None and level(math.nan) is None
