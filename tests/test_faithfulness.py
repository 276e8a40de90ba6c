from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from benchmark.data.cues import UtteranceCues
from benchmark.data.demo import EMOTIONS, TEMPLATES, build_demo_corpus, describe
from benchmark.data.manifest import read_manifest
from benchmark.errors import BenchmarkError
from benchmark.eval.predict import RECORD_FIELDS, score_records
from benchmark.explain.faithfulness import (
    descriptor_claims,
    faithfulness,
    faithfulness_scores,
    measured_levels,
    measured_levels_from_cues,
)
from benchmark.registry import load_dataset_card, load_system
from benchmark.workflows.scoring import split_scores

LEVELS = ("low", "normal", "high")


def test_every_demo_descriptor_phrasing_is_read_back():
    for template, gender, emotion in itertools.product(range(len(TEMPLATES)), ("female", "male"), EMOTIONS):
        for pitch, energy, speed in itertools.product(LEVELS, repeat=3):
            levels = {"pitch": pitch, "energy": energy, "speed": speed}
            text = describe(gender, levels, emotion, template)
            assert descriptor_claims(text) == levels | {"gender": gender}, text


@pytest.mark.parametrize(
    ("text", "claims"),
    [
        ("She speaks quickly in a loud voice.", {"energy": "high", "speed": "high", "gender": "female"}),
        ("A low-pitched man.", {"pitch": "low", "gender": "male"}),
        ("The woman talks at a normal pace.", {"speed": "normal", "gender": "female"}),
        ("His speech rate is rather slow and the volume is moderate.",
         {"energy": "normal", "speed": "low", "gender": "male"}),
        ("Pitch: high. Speed: fast. Volume: LOW", {"pitch": "high", "energy": "low", "speed": "high"}),
        ("A girl with a deep voice speaks softly.", {"pitch": "low", "energy": "low", "gender": "female"}),
        ("A middle-aged man speaks at a moderate speed with medium pitch.",
         {"pitch": "normal", "speed": "normal", "gender": "male"}),
        ("He speaks neither too fast nor too slow.", {"speed": "normal", "gender": "male"}),
        ("The volume is not very loud; the pitch isn't high.", {}),  # negations are no claims
        ("A woman who is not angry speaks loudly.", {"energy": "high", "gender": "female"}),
        ("He starts slowly and then speaks quickly.", {"gender": "male"}),  # two speeds: no single claim
        ("In a low voice, sounding sad.", {}),  # deep or quiet? ambiguous
        ("一位女性，语速很快。", {}),  # English only
        ("", {}),
        (None, {}),
    ],
)  # fmt: skip
def test_free_text_claims(text: str | None, claims: dict[str, str]):
    assert descriptor_claims(text) == claims


def test_faithfulness_share_by_hand():
    descriptors = [
        "A woman speaks quickly in a loud voice.",  # energy yes, speed no, gender yes: 2/3
        "A man with a low-pitched voice.",  # pitch yes, gender no: 1/2
        "Sounding calm.",  # no claim: None, not counted
        None,  # no descriptor: None
        "He speaks slowly.",  # speed not measured (no transcript): only gender, yes: 1/1
    ]
    measured = [
        {"pitch": "high", "energy": "high", "speed": "normal", "gender": "female"},
        {"pitch": "low", "energy": "normal", "speed": "low", "gender": "female"},
        {"pitch": "low", "energy": "low", "speed": "low", "gender": "male"},
        {"pitch": "low", "energy": "low", "speed": "low", "gender": "male"},
        {"pitch": "normal", "energy": "normal", "gender": "male"},
    ]
    result = faithfulness(descriptors, measured)
    assert result.per_utterance == pytest.approx([2 / 3, 1 / 2, None, None, 1.0])
    assert result.claims == {"pitch": 1, "energy": 1, "speed": 1, "gender": 3}
    assert result.agreeing == {"pitch": 1, "energy": 1, "speed": 0, "gender": 2}
    assert result.share == pytest.approx(4 / 6)  # pooled claims, not the mean of shares (13/18)


def test_no_claims_give_no_share_and_mismatch_is_an_error():
    result = faithfulness(["Sounding calm.", None], [{"pitch": "low"}, {}])
    assert result.per_utterance == [None, None] and result.share is None
    with pytest.raises(BenchmarkError, match="2 descriptors but 1 measurements"):
        faithfulness(["a", "b"], [{}])


def cues(f0: float, rate: float | None) -> UtteranceCues:
    return UtteranceCues(
        f0_mean=f0, f0_range=2.0, loudness=1.0, jitter=0.01, shimmer=1.0, hnr=10.0,
        spectral_slope=-0.01, duration=2.0, voiced_time=1.5, speaking_rate=rate,
    )  # fmt: skip


def test_measured_levels_share_the_claim_vocabulary():
    # One speaker, F0 1, 2, 3 semitones: z = -1.22, 0, 1.22; loudness constant: z = 0 (normal).
    measured = measured_levels_from_cues(
        [cues(1, 3.0), cues(2, None), cues(3, 5.0)], ["a"] * 3, ["female", "female", None]
    )
    assert measured == [
        {"pitch": "low", "energy": "normal", "speed": "low", "gender": "female"},
        {"pitch": "normal", "energy": "normal", "gender": "female"},  # no speaking rate: unchecked
        {"pitch": "high", "energy": "normal", "speed": "high"},  # unknown gender: unchecked
    ]


def test_demo_descriptors_are_faithful_to_their_measured_cues(tmp_path: Path):
    # The demo corpus writes descriptors from the same cue levels: every claim must agree.
    rows = read_manifest(build_demo_corpus(size=12, seed=0, out_dir=tmp_path / "demo", progress=False))
    measured = measured_levels(rows)
    result = faithfulness([row.descriptor for row in rows], measured)
    assert result.share == 1.0 and None not in result.per_utterance
    assert sum(result.claims.values()) >= 3 * len(rows)
    swap = {"female": "male", "male": "female"}
    swapped = [re.sub(r"\b(?:fe)?male\b", lambda m: swap[m[0]], row.descriptor) for row in rows]
    wrong_gender = faithfulness(swapped, measured)
    assert wrong_gender.claims == result.claims
    assert wrong_gender.agreeing == result.agreeing | {"gender": 0}

    # As a run logs it: records of the rows, scored by eval and checked by explain.
    records = [
        dict.fromkeys(RECORD_FIELDS) | {"id": r.id, "ref_descriptor": r.descriptor, "hyp_descriptor": hyp}
        for r, hyp in zip(rows, swapped, strict=True)
    ]
    expected = wrong_gender.share
    assert faithfulness_scores(records, rows) == {"sed.faithfulness": expected}
    system = load_system("fd-ser-sed")
    logged = split_scores(records, load_dataset_card("demo"), system, rows)
    assert logged["sed.faithfulness"] == expected and "sed.bleu4" in logged
    assert "sed.faithfulness" not in score_records(records, load_dataset_card("demo"), system, rows)
    no_claims = [r | {"hyp_descriptor": "mm"} for r in records]
    assert faithfulness_scores(no_claims, rows) == {}
