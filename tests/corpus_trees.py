"""Small, clean release trees of the four real corpora, in their on-disk layouts, for protocol tests.

The reader tests (tests/test_reader_*.py) cover each release's quirks; these trees are the
well-formed minimum a whole protocol runs on: five IEMOCAP sessions of two speakers each, MELD's
three splits, a SpeechCraft part with all seven of its emotions, and an EMOSEC caption set.
`prepare_all` writes their manifests into the current `$BENCHMARK_HOME`.

Every clip is a steady tone of a frequency of its own (`distinct=True`, the default), so no two
clips hold the same audio and `run` trains on them (it refuses a fold whose test audio is in its
training mixture, `benchmark.data.audit`). With `distinct=False` the clips are the reader tests'
tones: every IEMOCAP session and MELD split then repeats the same clips, and EMOSEC's two clips
are one SpeechCraft clip (tests/test_audit.py audits both).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
from test_reader_iemocap import write_dialog
from test_reader_meld import HEADER, row, write_clip
from test_reader_speechcraft import labels, write_json_lines, write_wav

from benchmark.data.prepare import prepare_corpus
from benchmark.registry import load_dataset_card

IEMOCAP_LINES = [
    ("F000", "neu", "Excuse me, where is the line?"),
    ("M000", "ang", "Get out of here right now!"),
    ("F001", "hap", "That is wonderful news."),
    ("M001", "sad", "It is gone, all of it."),
]
# Every SpeechCraft emotion; surprised, disgusted and fearful are outside IEMOCAP's four classes.
SPEECHCRAFT_EMOTIONS = ["neutral", "happy", "sad", "angry", "surprised", "disgusted", "fearful", "happy"]
MELD_ROWS = {
    "train": [("Oh my God.", "Phoebe", "surprise"), ("How you doin'?", "Joey", "joy"),
              ("I am fine.", "Ross", "neutral"), ("Get out!", "Monica", "anger")],
    "dev": [("Is that a spider?", "Rachel", "fear"), ("Ew.", "Ross", "disgust")],
    "test": [("Okay.", "Phoebe", "neutral"), ("That is sad.", "Chandler", "sadness")],
}  # fmt: skip
MELD_FOLDERS = {"train": "train_splits", "dev": "dev_splits_complete", "test": "output_repeated_splits_test"}


# The first tone frequency (Hz) of each tree's clips, 10 Hz apart from clip to clip (`distinct=True`).
FIRST_TONE = {"iemocap": 200, "meld": 600, "speechcraft": 1000, "emosec": 1400}


def tone(path: Path, frequency: float, seconds: float | None = None, amplitude: float = 0.3) -> None:
    """Write a steady 16 kHz PCM_16 tone to `path`; `seconds=None`: as long as the wav already there."""
    if seconds is None:
        seconds = sf.info(str(path)).frames / 16000
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(str(path), amplitude * np.sin(2 * np.pi * frequency * t), 16000, subtype="PCM_16")


def iemocap_tree(root: Path, distinct: bool = True) -> Path:
    for number in range(1, 6):
        dialog = f"Ses0{number}F_impro01"
        rows = [(f"{dialog}_{suffix}", label, text, "ok") for suffix, label, text in IEMOCAP_LINES]
        write_dialog(root / f"Session{number}", dialog, rows)
        for i, (utt_id, *_) in enumerate(rows if distinct else []):
            wav = root / f"Session{number}" / "sentences" / "wav" / dialog / f"{utt_id}.wav"
            tone(wav, FIRST_TONE["iemocap"] + 10 * (len(rows) * (number - 1) + i))
    return root


def meld_tree(root: Path, distinct: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    clips = 0
    for split, rows in MELD_ROWS.items():
        lines = [HEADER] + [
            row(i + 1, text, who, emotion, 0, i) for i, (text, who, emotion) in enumerate(rows)
        ]
        (root / f"{split}_sent_emo.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        for i in range(len(rows)):
            clip, seconds = root / MELD_FOLDERS[split] / f"dia0_utt{i}.mp4", 0.4 + 0.05 * i
            if distinct:
                write_clip(clip, seconds, frequency=FIRST_TONE["meld"] + 10 * clips)
            else:
                write_clip(clip, seconds=seconds)
            clips += 1
    return root


def speechcraft_tree(root: Path, distinct: bool = True) -> Path:
    chunk = root / "gigaspeech" / "data" / "audio" / "m_files_additional" / "m_chunks_0000"
    entries = []
    for i, emotion in enumerate(SPEECHCRAFT_EMOTIONS):
        segment = f"POD000000000{i % 3}_S00000{i + 10}"
        write_wav(chunk / f"{segment}.wav", seconds=0.4 + 0.05 * i)
        if distinct:
            tone(chunk / f"{segment}.wav", FIRST_TONE["speechcraft"] + 10 * i, amplitude=0.1)
        entry = {
            "labels": labels(emotion, transcript=" I said hello there."),
            "description": f"A {emotion} voice.",
        }
        entries.append((f"m_chunks_0000_{segment}", entry))
    write_json_lines(root / "description_en.json", entries)
    return root


def emosec_tree(root: Path, distinct: bool = True) -> Path:
    captions = [("tx_emotion_00201000015", "悲伤 逆流成河"), ("tx_emotion_00201000107", "心情畅快，语气坚定")]
    for i, (utt_id, _) in enumerate(captions):
        write_wav(root / "wav" / f"{utt_id}.wav")
        if distinct:
            tone(root / "wav" / f"{utt_id}.wav", FIRST_TONE["emosec"] + 10 * i, amplitude=0.1)
    write_json_lines(root / "fid2captions.json", captions)
    return root


def prepare_all(trees: Path, distinct: bool = True) -> None:
    """Write every tree under `trees` (once) and prepare it into the current `$BENCHMARK_HOME`;
    `distinct=False`: with the reader tests' shared tones (see the module docstring)."""
    builders = {
        "iemocap": (iemocap_tree, "IEMOCAP_full_release"),
        "meld": (meld_tree, "MELD.Raw"),
        "speechcraft": (speechcraft_tree, "SpeechCraft"),
        "emosec": (emosec_tree, "SECap/dataset"),
    }
    for name, (build, folder) in builders.items():
        root = trees / folder
        if not root.exists():
            build(root, distinct)
        prepare_corpus(load_dataset_card(name), root, strict=True)
