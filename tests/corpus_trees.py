"""Small, clean release trees of the four real corpora, in their on-disk layouts, for protocol tests.

The reader tests (tests/test_reader_*.py) cover each release's quirks; these trees are the
well-formed minimum a whole protocol runs on: five IEMOCAP sessions of two speakers each, MELD's
three splits, a SpeechCraft part with all seven of its emotions, and an EMOSEC caption set.
`prepare_all` writes their manifests into the current `$BENCHMARK_HOME`.
"""

from __future__ import annotations

from pathlib import Path

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


def iemocap_tree(root: Path) -> Path:
    for number in range(1, 6):
        dialog = f"Ses0{number}F_impro01"
        rows = [(f"{dialog}_{suffix}", label, text, "ok") for suffix, label, text in IEMOCAP_LINES]
        write_dialog(root / f"Session{number}", dialog, rows)
    return root


def meld_tree(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for split, rows in MELD_ROWS.items():
        lines = [HEADER] + [
            row(i + 1, text, who, emotion, 0, i) for i, (text, who, emotion) in enumerate(rows)
        ]
        (root / f"{split}_sent_emo.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        for i in range(len(rows)):
            write_clip(root / MELD_FOLDERS[split] / f"dia0_utt{i}.mp4", seconds=0.4 + 0.05 * i)
    return root


def speechcraft_tree(root: Path) -> Path:
    chunk = root / "gigaspeech" / "data" / "audio" / "m_files_additional" / "m_chunks_0000"
    entries = []
    for i, emotion in enumerate(SPEECHCRAFT_EMOTIONS):
        segment = f"POD000000000{i % 3}_S00000{i + 10}"
        write_wav(chunk / f"{segment}.wav", seconds=0.4 + 0.05 * i)
        entry = {
            "labels": labels(emotion, transcript=" I said hello there."),
            "description": f"A {emotion} voice.",
        }
        entries.append((f"m_chunks_0000_{segment}", entry))
    write_json_lines(root / "description_en.json", entries)
    return root


def emosec_tree(root: Path) -> Path:
    captions = [("tx_emotion_00201000015", "悲伤 逆流成河"), ("tx_emotion_00201000107", "心情畅快，语气坚定")]
    for utt_id, _ in captions:
        write_wav(root / "wav" / f"{utt_id}.wav")
    write_json_lines(root / "fid2captions.json", captions)
    return root


def prepare_all(trees: Path) -> None:
    """Write every tree under `trees` (once) and prepare it into the current `$BENCHMARK_HOME`."""
    builders = {
        "iemocap": (iemocap_tree, "IEMOCAP_full_release"),
        "meld": (meld_tree, "MELD.Raw"),
        "speechcraft": (speechcraft_tree, "SpeechCraft"),
        "emosec": (emosec_tree, "SECap/dataset"),
    }
    for name, (build, folder) in builders.items():
        root = trees / folder
        if not root.exists():
            build(root)
        prepare_corpus(load_dataset_card(name), root, strict=True)
