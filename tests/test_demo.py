"""eSpeak NG synthesis and the demo corpora: layout, balance, pools, determinism, caching, and that
the measured cues follow the expert-referenced directions per emotion."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from benchmark.cli import main
from benchmark.data import demo, espeak
from benchmark.data.audio import resample, write_wav
from benchmark.data.cues import DESCRIPTOR_CUES, batch_cues, level, speaker_zscores, utterance_cues
from benchmark.data.demo import (
    ENERGY_PHRASES,
    PITCH_PHRASES,
    POOLS,
    SPEED_PHRASES,
    build_demo_corpus,
)
from benchmark.data.espeak import Prosody, synthesise
from benchmark.data.manifest import read_manifest
from benchmark.errors import BenchmarkError

SIZE = 48
TEXT = "My sister painted the old fence after lunch on Tuesday."


def measure(tmp_path: Path, name: str, voice: str, prosody: Prosody | None = None):
    wave, rate = synthesise(TEXT, voice, prosody)
    path = tmp_path / f"{name}.wav"
    write_wav(path, resample(wave, rate))
    return wave, rate, utterance_cues(path, TEXT)


def test_espeak_speaks_both_genders(tmp_path: Path):
    female_wave, rate, female = measure(tmp_path, "f", "en-us+f3")
    male_wave, _, male = measure(tmp_path, "m", "en-us+m3")
    assert rate == 22050
    for wave in (female_wave, male_wave):
        assert wave.dtype == np.float32 and np.abs(wave).max() <= 1.0
        assert np.sqrt(np.mean(wave**2)) > 0.02
    assert female.f0_mean > male.f0_mean + 6  # about an octave apart in practice


def test_espeak_parameters_change_measured_cues(tmp_path: Path):
    *_, base = measure(tmp_path, "base", "en-us+f1")
    *_, high = measure(tmp_path, "high", "en-us+f1", Prosody(pitch=80))
    *_, fast = measure(tmp_path, "fast", "en-us+f1", Prosody(rate=260))
    *_, loud = measure(tmp_path, "loud", "en-us+f1", Prosody(volume=60))
    assert high.f0_mean > base.f0_mean + 2
    assert fast.speaking_rate > base.speaking_rate * 1.2 and fast.duration < base.duration
    assert loud.loudness < base.loudness


def test_espeak_output_depends_only_on_the_request():
    # The library's hidden state (pitch flutter phase, gain control) must not leak between calls.
    first, _ = synthesise(TEXT, "en-us+f1", Prosody(pitch=40))
    synthesise("Something else entirely.", "en-gb-scotland+m5", Prosody(rate=300, volume=190, pitch=90))
    again, _ = synthesise(TEXT, "en-us+f1", Prosody(pitch=40))
    assert np.array_equal(first, again)


def test_espeak_errors(monkeypatch):
    with pytest.raises(BenchmarkError, match="no voice 'en-us\\+nosuchvariant'"):
        synthesise("hello", "en-us+nosuchvariant")
    with pytest.raises(BenchmarkError, match="no voice"):
        synthesise("hello", "xx-nosuchlanguage")
    import espeakng_loader

    monkeypatch.setattr(espeak, "_engine", None)
    monkeypatch.setattr(espeakng_loader, "get_library_path", lambda: "/nonexistent/libespeak-ng.so")
    with pytest.raises(BenchmarkError, match="cannot load the eSpeak NG library"):
        synthesise("hello")


def test_pools_are_disjoint_and_balanced():
    eval_pool, backbone = POOLS["eval"], POOLS["backbone"]
    assert not {s.variant for s in eval_pool.speakers} & {s.variant for s in backbone.speakers}
    assert not set(eval_pool.sentences) & set(backbone.sentences)
    assert len(set(eval_pool.sentences)) >= 300
    for pool in (eval_pool, backbone):
        groups: dict[str, set[str]] = {}
        for speaker in pool.speakers:
            groups.setdefault(speaker.group, set()).add(speaker.gender)
        assert groups == {g: {"female", "male"} for g in "12345"}
    words = {w.lower().strip(".") for s in eval_pool.sentences + backbone.sentences for w in s.split()}
    assert not words & {"happy", "angry", "sad", "glad", "furious", "upset", "terrible", "wonderful"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory):
    """A small eval corpus built once, in its own BENCHMARK_HOME (which also holds its cue cache)."""
    home = tmp_path_factory.mktemp("demo_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENCHMARK_HOME", str(home))
        manifest = build_demo_corpus(SIZE, seed=0, progress=False)
    return home, manifest


@pytest.mark.slow
def test_corpus_rows_and_audio(corpus):
    home, manifest = corpus
    assert manifest == home / "datasets" / "demo" / "all.jsonl"
    rows = read_manifest(manifest, check_audio=True)
    assert len(rows) == SIZE
    for row in rows:
        assert re.fullmatch(r"demo_s\d\d_(neutral|happy|angry|sad)_\d{4}", row.id)
        assert row.dataset == "demo" and row.emotion in row.id and row.speaker in row.id
        assert row.transcript and row.descriptor and row.emotion in row.descriptor
        info = sf.info(row.audio)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert row.duration == pytest.approx(info.frames / 16000)
    assert not list(manifest.parent.parent.glob(".demo.*"))  # no temporary folder left behind


@pytest.mark.slow
def test_corpus_groups_genders_and_balance(corpus):
    rows = read_manifest(corpus[1])
    assert Counter(r.emotion for r in rows) == {e: SIZE // 4 for e in demo.EMOTIONS}
    group_of: dict[str, set[str]] = {}
    for row in rows:
        group_of.setdefault(row.speaker, set()).add(row.group)
    assert all(len(groups) == 1 for groups in group_of.values())  # speaker-independent folds
    assert {r.group for r in rows} == set("12345")
    for group in "12345":
        assert {r.gender for r in rows if r.group == group} == {"female", "male"}
    for speaker in group_of:
        assert len({r.emotion for r in rows if r.speaker == speaker}) == 4


@pytest.mark.slow
def test_corpus_second_call_is_cached(corpus, monkeypatch):
    home, manifest = corpus
    monkeypatch.setenv("BENCHMARK_HOME", str(home))
    before = manifest.stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("a cached corpus was synthesised again")

    monkeypatch.setattr(demo, "synthesise", fail)
    assert build_demo_corpus(SIZE, seed=0, progress=False) == manifest
    assert manifest.stat().st_mtime_ns == before


@pytest.mark.slow
def test_corpus_is_deterministic(corpus, tmp_path: Path, monkeypatch):
    home, manifest = corpus
    monkeypatch.setenv("BENCHMARK_HOME", str(home))  # reuse the cue cache: same audio, same cues
    copy = build_demo_corpus(SIZE, seed=0, out_dir=tmp_path / "copy", progress=False)
    first, second = read_manifest(manifest), read_manifest(copy)
    assert [r.model_dump(exclude={"audio"}) for r in first] == [
        r.model_dump(exclude={"audio"}) for r in second
    ]
    for a, b in zip(first, second, strict=True):
        assert Path(a.audio).read_bytes() == Path(b.audio).read_bytes()
    other = read_manifest(build_demo_corpus(8, seed=1, out_dir=tmp_path / "other", progress=False))
    assert [r.transcript for r in other] != [r.transcript for r in first[:8]]


@pytest.mark.slow
def test_changed_request_rebuilds_in_place(tmp_path: Path):
    out = tmp_path / "corpus"
    build_demo_corpus(4, seed=3, out_dir=out, progress=False)
    manifest = build_demo_corpus(8, seed=3, out_dir=out, progress=False)
    assert len(read_manifest(manifest, check_audio=True)) == 8
    assert len(list((out / "wav").glob("*.wav"))) == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]  # nothing half-built or old left

    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("mine")
    with pytest.raises(BenchmarkError, match="does not hold a demo corpus"):
        build_demo_corpus(4, out_dir=precious, progress=False)
    assert (precious / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_backbone_pool_is_disjoint_and_unlabelled(corpus, tmp_path: Path):
    eval_rows = read_manifest(corpus[1])
    manifest = build_demo_corpus(24, seed=0, pool="backbone", progress=False)
    assert manifest.parent.name == "demo-backbone"
    rows = read_manifest(manifest, check_audio=True)
    assert len(rows) == 24
    assert all(r.emotion is None and r.descriptor is None and r.transcript for r in rows)
    assert all(re.fullmatch(r"demo-backbone_b\d\d_\d{4}", r.id) for r in rows)
    assert not {r.speaker for r in rows} & {r.speaker for r in eval_rows}
    assert not {r.transcript for r in rows} & set(POOLS["eval"].sentences)
    assert {r.gender for r in rows} == {"female", "male"}


@pytest.mark.slow
def test_cli_builds_the_demo_corpus(tmp_path: Path):
    assert main(["data", "demo", "--size", "4", "--seed", "5", "--out", str(tmp_path / "cli")]) == 0
    assert len(read_manifest(tmp_path / "cli" / "all.jsonl")) == 4


def class_means(rows, zscores, cue: str) -> dict[str, float]:
    return {
        emotion: float(np.mean([z[cue] for z, r in zip(zscores, rows, strict=True) if r.emotion == emotion]))
        for emotion in demo.EMOTIONS
    }


def check_measured_cues(rows) -> None:
    """Measured, speaker-normalised cues follow the expert-referenced directions, and every
    descriptor says what the measurements say."""
    measured = batch_cues([r.audio for r in rows], [r.transcript for r in rows], workers=2)
    zscores = speaker_zscores(measured, [r.speaker for r in rows])

    f0 = class_means(rows, zscores, "f0_mean")
    assert min(f0["angry"], f0["happy"]) > f0["neutral"] > f0["sad"], f0
    loudness = class_means(rows, zscores, "loudness")
    assert loudness["angry"] > loudness["neutral"] > loudness["sad"], loudness
    rate = class_means(rows, zscores, "speaking_rate")
    assert rate["angry"] > rate["neutral"] > rate["sad"], rate

    phrases = {"pitch": PITCH_PHRASES, "energy": ENERGY_PHRASES, "speed": SPEED_PHRASES}
    for row, z in zip(rows, zscores, strict=True):
        for dimension, cue in DESCRIPTOR_CUES.items():
            words = phrases[dimension]
            said = [lvl for lvl, phrase in words.items() if re.search(rf"\b{phrase}\b", row.descriptor)]
            assert said == [level(z[cue])], (row.id, row.descriptor, dimension, z[cue])
        assert row.gender in row.descriptor and row.descriptor.endswith(f"{row.emotion}.")


@pytest.mark.slow
def test_measured_cues_follow_emotion_directions(corpus, monkeypatch):
    monkeypatch.setenv("BENCHMARK_HOME", str(corpus[0]))
    check_measured_cues(read_manifest(corpus[1]))


@pytest.mark.slow
def test_measured_cues_follow_emotion_directions_other_seed(tmp_path: Path):
    manifest = build_demo_corpus(SIZE, seed=1, out_dir=tmp_path / "seed1", progress=False)
    rows = read_manifest(manifest)
    check_measured_cues(rows)
    # The descriptors follow the measurements, not the request: the classes overlap, so some
    # emotion has utterances described with different levels of one cue.
    said = {
        (emotion, dimension): {
            word
            for word, phrase in words.items()
            for r in rows
            if r.emotion == emotion and phrase in r.descriptor
        }
        for emotion in demo.EMOTIONS
        for dimension, words in {
            "pitch": PITCH_PHRASES,
            "energy": ENERGY_PHRASES,
            "speed": SPEED_PHRASES,
        }.items()
    }
    assert any(len(words) > 1 for words in said.values()), said


def test_tilt_spectrum_changes_the_level_above_the_corner_only():
    """A tilt of T dB per octave above 500 Hz: a 1500 Hz tone gains T * log2(3) dB against a
    250 Hz one (below the corner, untouched), and the wave keeps its RMS."""
    t = np.arange(16000) / 16000
    low, high = np.sin(2 * np.pi * 250 * t), np.sin(2 * np.pi * 1500 * t)
    wave = (low + high).astype(np.float32)
    assert demo.tilt_spectrum(wave, 0.0) is wave
    for tilt in (-6.0, 1.5):
        tilted = demo.tilt_spectrum(wave, tilt).astype(np.float64)
        assert np.sqrt(np.mean(tilted**2)) == pytest.approx(
            np.sqrt(np.mean(wave.astype(np.float64) ** 2)), rel=1e-5
        )
        amplitude = {f: abs(np.fft.rfft(tilted)[f]) for f in (250, 1500)}  # 1 Hz bins
        gain_db = 20 * np.log10(amplitude[1500] / amplitude[250])
        assert gain_db == pytest.approx(tilt * np.log2(1500 / 500), abs=1e-3)
