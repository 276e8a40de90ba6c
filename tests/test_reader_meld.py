"""MELD reader on a small release written in the real on-disk format: CSVs with mojibake, mp4 clips."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from benchmark.data import audio
from benchmark.data.manifest import read_manifest
from benchmark.data.prepare import prepare_corpus
from benchmark.data.readers import meld
from benchmark.errors import BenchmarkError
from benchmark.registry import load_dataset_card

HEADER = (
    "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime"
)
TIMES = '"00:16:16,059","00:16:21,731"'


def row(number: int, text: str, speaker: str, emotion: str, dialogue: int, utterance: int) -> str:
    return f'{number},"{text}",{speaker},{emotion},neutral,{dialogue},{utterance},3,19,{TIMES}'


def write_clip(path: Path, seconds: float = 0.3, rate: int = 44100, frequency: float = 440) -> None:
    """An audio-only mp4 with one AAC stream of a steady tone, as PyAV writes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = np.arange(int(rate * seconds))
    wave = (0.3 * np.sin(2 * np.pi * frequency * samples / rate)).astype(np.float32)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(wave.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate, frame.pts = rate, 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)


def write_video_only_clip(path: Path) -> None:
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        black = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
        for packet in [*stream.encode(black), *stream.encode(None)]:
            container.mux(packet)


def make_release(root: Path) -> None:
    """Three splits with every quirk of the real release; the comments give each row's line."""
    train = [
        HEADER,
        row(1, "Oh my God, he\u00e2\u20ac\u2122s lost it. He\u00e2\u20ac\u2122s totally lost it.",
            "Phoebe", "sadness", 0, 0),  # line 2: UTF-8 read as cp1252
        row(2, "Wait,\nwhat?\u00c2\u00a0", "Chandler", "surprise", 0, 1),  # lines 3-4
        row(3, "\u0093Hi\u0094 \u0097 I\u0092m here", "Joey", "joy", 0, 2),  # line 5: C1 controls
        row(4, "Where is it?", "Ross", "neutral", 1, 0),  # line 6: clip absent
        row(5, "Corrupt.", "Ross", "neutral", 1, 1),  # line 7: random bytes
        row(6, "", "Monica", "neutral", 1, 2),  # line 8: empty utterance
        row(7, "Hmph.", "Rachel", "contempt", 1, 3),  # line 9: unknown label
    ]  # fmt: skip
    (root / "train_sent_emo.csv").parent.mkdir(parents=True, exist_ok=True)
    (root / "train_sent_emo.csv").write_text("\n".join(train) + "\n", encoding="utf-8")
    write_clip(root / "train_splits" / "dia0_utt0.mp4", rate=44100)
    write_clip(root / "train_splits" / "dia0_utt1.mp4", rate=16000)
    write_clip(root / "train_splits" / "dia0_utt2.mp4")
    (root / "train_splits" / "dia1_utt1.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    write_clip(root / "train_splits" / "dia1_utt2.mp4")
    write_clip(root / "train_splits" / "dia1_utt3.mp4")
    (root / "train_splits" / "._dia0_utt0.mp4").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")
    write_clip(root / "train_splits" / "dia9_utt9.mp4")  # not listed: ignored

    dev = [
        HEADER,
        row(1, "You\x92re late\x97again. Caf\xe9!", "Monica", "anger", 0, 0),
        row(2, "Is that a \x93spider\x94?", "Rachel", "fear", 0, 1),
        row(3, "Ew.", "Ross", "disgust", 0, 2),
    ]
    (root / "dev_sent_emo.csv").write_bytes("\r\n".join(dev).encode("latin-1") + b"\r\n")  # cp1252 bytes
    for utterance in range(3):
        write_clip(root / "dev_splits_complete" / f"dia0_utt{utterance}.mp4")

    test = [
        HEADER,
        row(1, "How you doin'?", "Joey", "joy", 0, 0),
        row(2, "No sound.", "Chandler", "neutral", 0, 1),  # line 3: no audio stream
        row(3, "Okay.", "Phoebe", "neutral", 0, 2),
    ]
    (root / "test_sent_emo.csv").write_text("\n".join(test) + "\n", encoding="utf-8")
    folder = root / "output_repeated_splits_test"
    write_clip(folder / "dia0_utt0.mp4")
    write_video_only_clip(folder / "dia0_utt1.mp4")
    write_clip(folder / "dia0_utt2.mp4")
    write_clip(folder / "final_videos_test0.mp4")
    write_clip(folder / "final_videos_testdia0_utt0.mp4")
    (folder / "._dia0_utt0.mp4").write_bytes(b"\x00\x05\x16\x07junk")


@pytest.fixture
def card():
    return load_dataset_card("meld")


@pytest.fixture
def release(tmp_path: Path) -> Path:
    root = tmp_path / "MELD.Raw"
    make_release(root)
    return root


def test_reader_repairs_text_decodes_clips_and_locates_bad_rows(tmp_path: Path, release: Path, card):
    out = tmp_path / "audio"
    result = meld.read(release, card, out)

    ids = {split: [r.id for r in rows] for split, rows in result.splits.items()}
    assert ids == {
        "train": ["meld_train_dia0_utt0", "meld_train_dia0_utt1", "meld_train_dia0_utt2"],
        "dev": ["meld_dev_dia0_utt0", "meld_dev_dia0_utt1", "meld_dev_dia0_utt2"],
        "test": ["meld_test_dia0_utt0", "meld_test_dia0_utt2"],
    }
    rows = {r.id: r for split in result.splits.values() for r in split}
    assert [rows[f"meld_train_dia0_utt{u}"].transcript for u in range(3)] == [
        "Oh my God, he's lost it. He's totally lost it.",
        "Wait, what?",
        '"Hi" — I\'m here',
    ]
    assert rows["meld_dev_dia0_utt0"].transcript == "You're late—again. Café!"
    assert rows["meld_dev_dia0_utt1"].transcript == 'Is that a "spider"?'
    first = rows["meld_train_dia0_utt0"]
    assert (first.emotion, first.speaker, first.gender, first.group) == ("sadness", "Phoebe", None, "train")
    assert first.dataset == "meld" and first.descriptor is None
    assert {r.language for r in rows.values()} == {"en"}  # the card's language
    assert {r.emotion for r in rows.values()} == set(card.labels) and len(card.labels) == 7

    wav = out / "train" / "dia0_utt0.wav"
    assert first.audio == str(wav.resolve())
    info = sf.info(str(wav))
    assert (info.samplerate, info.channels) == (16000, 1)
    assert first.duration == pytest.approx(0.3, abs=0.05)
    assert sf.info(str(out / "train" / "dia0_utt1.wav")).samplerate == 16000
    assert sorted(p.name for p in (out / "test").iterdir()) == ["dia0_utt0.wav", "dia0_utt2.wav"]

    located = {(Path(i.source).name, i.line): i.reason for i in result.issues}
    assert set(located) == {
        ("train_sent_emo.csv", 6),
        ("train_sent_emo.csv", 7),
        ("train_sent_emo.csv", 8),
        ("train_sent_emo.csv", 9),
        ("test_sent_emo.csv", 3),
    }
    assert "dia1_utt0: clip not found" in located["train_sent_emo.csv", 6]
    assert "dia1_utt1" in located["train_sent_emo.csv", 7] and "corrupt" in located["train_sent_emo.csv", 7]
    assert "dia1_utt2: empty utterance text" in located["train_sent_emo.csv", 8]
    assert "unknown emotion label 'contempt'" in located["train_sent_emo.csv", 9]
    assert "no audio stream" in located["test_sent_emo.csv", 3]
    assert all(Path(i.source).parent == release for i in result.issues)


def test_prepare_reuses_cached_wavs(tmp_path: Path, release: Path, card, monkeypatch: pytest.MonkeyPatch):
    out = tmp_path / "prepared"
    prepare_corpus(card, release, out)
    wavs = sorted((tmp_path / "prepared-audio").rglob("*.wav"))
    assert len(wavs) == 8 and not list(out.rglob("*.wav"))  # decoded audio lives beside the manifests
    stamps = [wav.stat().st_mtime_ns for wav in wavs]

    decoded = []

    def recording_load_audio(path, *args):
        decoded.append(Path(path).name)
        return audio.load_audio(path, *args)

    monkeypatch.setattr(meld, "load_audio", recording_load_audio)
    report = prepare_corpus(card, release, out)
    assert [wav.stat().st_mtime_ns for wav in wavs] == stamps
    assert sorted(decoded) == ["dia0_utt1.mp4", "dia1_utt1.mp4"]  # only the broken clips are retried
    assert sum(s.utterances for s in report.summaries) == 8
    for split in card.splits:
        assert read_manifest(out / f"{split}.jsonl", check_audio=True)

    newer = wavs[0].stat().st_mtime + 10
    os.utime(release / "dev_splits_complete" / "dia0_utt0.mp4", (newer, newer))
    prepare_corpus(card, release, out)
    changed = [wav.name for wav, stamp in zip(wavs, stamps, strict=True) if wav.stat().st_mtime_ns != stamp]
    assert changed == ["dia0_utt0.wav"] and wavs[0].parent.name == "dev"


def test_strict_names_csv_and_line(tmp_path: Path, release: Path, card):
    out = tmp_path / "prepared"
    with pytest.raises(BenchmarkError) as err:
        prepare_corpus(card, release, out, strict=True)
    message = str(err.value)
    assert f"{release / 'train_sent_emo.csv'}:6: dia1_utt0: clip not found" in message
    assert f"{release / 'test_sent_emo.csv'}:3: dia0_utt1:" in message
    assert not list(out.glob("*.jsonl"))


def test_process_pool_gives_the_same_result(tmp_path: Path, release: Path, card, monkeypatch):
    monkeypatch.setattr(meld, "POOL_THRESHOLD", 0)
    pooled = meld.read(release, card, tmp_path / "pooled")
    monkeypatch.setattr(meld, "POOL_THRESHOLD", 10_000)
    sequential = meld.read(release, card, tmp_path / "sequential")

    def content(result):
        return {
            split: [(r.id, r.transcript, r.duration) for r in rows] for split, rows in result.splits.items()
        }

    assert content(pooled) == content(sequential)
    assert pooled.issues == sequential.issues
    assert len(list((tmp_path / "pooled").rglob("*.wav"))) == 8


@pytest.mark.parametrize(
    ("raw", "fixed"),
    [
        ("I\x92m", "I'm"),
        ("it\u00e2\u20ac\u2122s", "it's"),
        ("\u00e2\u20ac\u0153Hey\u00e2\u20ac\u009d", '"Hey"'),
        ("so\x85", "so..."),
        ("Oh\u00c2 no", "Oh no"),
        ("caf\u00c3\u00a9 caf\u00e9", "café café"),
        ("  two\n lines ", "two lines"),
    ],
)
def test_repair_text(raw: str, fixed: str):
    assert meld.repair_text(raw) == fixed


def test_line_numbers_count_physical_lines():
    text = (
        HEADER
        + "\r\n"
        + row(1, "a,\nb\nc", "Ross", "joy", 0, 0)
        + "\r\n\r\n"
        + row(2, "d", "Ross", "joy", 0, 1)
    )
    assert [line for line, _ in meld.csv_records(text)] == [1, 2, 6]
