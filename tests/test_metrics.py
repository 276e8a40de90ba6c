from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import jiwer
import numpy as np
import pytest

from benchmark.eval.metrics import (
    asr_errors,
    asr_scores,
    confusion_matrix,
    normalize_transcript,
    plot_confusion_matrix,
    ser_correct,
    ser_scores,
)

LABELS = ["angry", "happy", "sad"]
# Worked by hand: 4 angry, 2 happy, 4 sad references; one None and one off-label ('bored') answer.
REFS = ["angry"] * 4 + ["happy"] * 2 + ["sad"] * 4
HYPS = ["angry", "angry", "sad", None, "happy", "bored", "sad", "sad", "sad", "happy"]


def test_ser_scores_match_a_hand_computation():
    scores = ser_scores(REFS, HYPS, LABELS).corpus
    # recall: angry 2/4, happy 1/2, sad 3/4; precision: angry 2/2, happy 1/2, sad 3/4
    # F1: angry 2/3, happy 1/2, sad 3/4
    expected = {
        "ser.ua": (Fraction(2, 4) + Fraction(1, 2) + Fraction(3, 4)) / 3,  # 7/12
        "ser.wa": Fraction(6, 10),
        "ser.macro_f1": (Fraction(2, 3) + Fraction(1, 2) + Fraction(3, 4)) / 3,  # 23/36
        "ser.invalid_rate": Fraction(2, 10),
    }
    assert scores == pytest.approx({key: float(value) for key, value in expected.items()})


def test_confusion_matrix_has_an_invalid_column():
    matrix = confusion_matrix(REFS, HYPS, LABELS)
    assert matrix.tolist() == [[2, 0, 1, 1], [0, 1, 0, 1], [0, 1, 3, 0]]
    assert ser_correct(REFS, HYPS, LABELS) == [True, True, False, False, True, False, True, True, True, False]


def test_ua_averages_only_classes_present_in_the_references():
    scores = ser_scores(["a", "a", "b"], ["a", "c", "b"], ["a", "b", "c"]).corpus
    assert scores["ser.ua"] == pytest.approx((1 / 2 + 1) / 2)
    assert scores["ser.macro_f1"] == pytest.approx((2 / 3 + 1) / 2)


def test_ser_rejects_references_outside_the_labels():
    with pytest.raises(ValueError, match="bored"):
        ser_scores(["bored"], ["angry"], LABELS)
    with pytest.raises(ValueError, match="hypotheses"):
        ser_scores(["angry"], [], LABELS)


def test_confusion_matrix_png(tmp_path: Path):
    path = plot_confusion_matrix(confusion_matrix(REFS, HYPS, LABELS), LABELS, tmp_path / "plots" / "cm.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty_row = np.array([[1, 0], [0, 0]])
    assert plot_confusion_matrix(empty_row, ["x", "y"], tmp_path / "square.png").stat().st_size > 0


def test_normalisation():
    assert normalize_transcript("Don't SHOUT -- it's 'fine', OK?") == "don't shout it's fine ok"
    assert normalize_transcript("I\u2019m  well-known [LAUGHTER] <noise>") == "i'm well known"
    assert normalize_transcript("It's 20 past") == "it's 20 past"  # numbers as written
    assert normalize_transcript(None) == ""


# Hand-aligned pairs: (reference, hypothesis, substitutions, deletions, insertions, reference words).
ASR_CASES = [
    ("The cat sat on the mat.", "a cat sat on mat", 1, 1, 0, 6),  # the->a, second 'the' dropped
    ("I don't know!", "um I don't know", 0, 0, 1, 3),  # 'um' inserted
    ("Well-known facts.", None, 0, 3, 0, 3),  # no hypothesis: all deletions
    ("[LAUGHTER]", "ha ha", 0, 0, 0, 0),  # empty reference after normalisation: skipped
    ("It's twenty.", "it's 20", 1, 0, 0, 2),  # numbers are not normalised
]


def test_asr_counts_match_a_hand_alignment():
    refs = [case[0] for case in ASR_CASES]
    hyps = [case[1] for case in ASR_CASES]
    counts = asr_errors(refs, hyps)
    scored = [case for case in ASR_CASES if case[5]]
    assert counts.index == [0, 1, 2, 4] and counts.skipped == 1
    assert counts.errors == [s + d + i for _, _, s, d, i, _ in scored]
    assert counts.words == [words for *_, words in scored]
    assert (counts.substitutions, counts.deletions, counts.insertions) == (2, 4, 1)
    assert asr_scores(refs, hyps).corpus == {"asr.wer": 7 / 14, "asr.skipped": 1.0}


def test_asr_agrees_with_jiwer_on_normalised_text():
    refs = ["hello world how are you", "good morning to you all", "it is what it is"]
    hyps = ["hello word how you", "good morning to to you all", ""]
    assert asr_scores(refs, hyps).corpus["asr.wer"] == pytest.approx(jiwer.wer(refs, hyps))
    raw_refs = ["Hello, World!", "Fine -- thanks."]
    raw_hyps = ["hello world", "fine thanks you"]
    expected = jiwer.wer(
        [normalize_transcript(t) for t in raw_refs], [normalize_transcript(t) for t in raw_hyps]
    )
    assert asr_scores(raw_refs, raw_hyps).corpus["asr.wer"] == pytest.approx(expected)
