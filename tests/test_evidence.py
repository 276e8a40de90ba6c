"""Saliency-linked cues: window statistics by hand, the expert table, verdicts, plausibility,
descriptor-evidence agreement, and the demo corpus whose prosody per emotion is known."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from benchmark.data.demo import build_demo_corpus
from benchmark.data.manifest import read_manifest
from benchmark.errors import BenchmarkError
from benchmark.explain.evidence import (
    Baseline,
    corpus_evidence,
    cue_evidence,
    cue_plausibility,
    descriptor_evidence,
    descriptor_evidence_agreement,
    judge,
    region_stats,
    speaker_baselines,
    utterance_profile,
    window_mask,
)
from benchmark.explain.expert_cues import (
    CUE_KEYS,
    F0,
    F0_VARIABILITY,
    HNR,
    JITTER,
    LOUDNESS,
    SHIMMER,
    SPEAKING_RATE,
    SPECTRAL_SLOPE,
    Expectation,
    load_expert_table,
)

REPO = Path(__file__).resolve().parents[1]


# --- window statistics by hand ------------------------------------------------------------------


def hand_frames() -> pd.DataFrame:
    """Eight 10 ms frames; F0 is 0 (unvoiced) at 0.00, 0.02 and 0.06 s. Jitter, shimmer and HNR
    hold a value in the unvoiced frames too, so that including them would show."""
    times = [0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07]
    return pd.DataFrame(
        {
            F0: [0.0, 30.0, 0.0, 32.0, 34.0, 40.0, 0.0, 36.0],
            LOUDNESS: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8],
            SPECTRAL_SLOPE: [0.9, -0.02, 0.9, -0.01, -0.03, -0.04, 0.9, -0.05],
            JITTER: [9.0, 0.01, 9.0, 0.02, 0.04, 0.05, 9.0, 0.06],
            SHIMMER: [9.0, 1.0, 9.0, 2.0, 4.0, 3.0, 9.0, 5.0],
            HNR: [-9.0, 5.0, -9.0, 6.0, 8.0, 7.0, -9.0, 9.0],
        },
        index=pd.Index(times, name="time"),
    )


def test_frame_belongs_to_window_by_its_start_time():
    times = hand_frames().index.to_numpy()
    # 0.02 starts inside [0.02, 0.05); 0.05 starts at the window's end and is outside.
    assert window_mask(times, [(0.02, 0.05)]).tolist() == [0, 0, 1, 1, 1, 0, 0, 0]
    # Windows are pooled, and a frame in two overlapping windows counts once.
    assert window_mask(times, [(0.02, 0.05), (0.03, 0.045), (0.07, 0.08)]).sum() == 4
    assert not window_mask(times, []).any()
    with pytest.raises(BenchmarkError, match="start < end"):
        window_mask(times, [(0.05, 0.02)])


def test_inside_and_outside_means_by_hand():
    frames = hand_frames()
    mask = window_mask(frames.index.to_numpy(), [(0.02, 0.05)])
    inside, outside = region_stats(frames, mask), region_stats(frames, ~mask)
    # Inside: frames 0.02 (unvoiced), 0.03 and 0.04. F0 over the voiced two only, never the 0.
    assert inside[F0].value == pytest.approx(33.0) and inside[F0].frames == 2
    assert inside[F0].spread == pytest.approx(1.0)
    assert inside[F0_VARIABILITY].value == pytest.approx(1.0) and inside[F0_VARIABILITY].spread is None
    assert inside[LOUDNESS].value == pytest.approx(0.4) and inside[LOUDNESS].frames == 3  # all frames
    assert inside[JITTER].value == pytest.approx(0.03)  # the 9.0 of the unvoiced frame is left out
    assert inside[SHIMMER].value == pytest.approx(3.0)
    assert inside[HNR].value == pytest.approx(7.0)
    assert inside[SPECTRAL_SLOPE].value == pytest.approx(-0.02)
    # Outside: 0.00 and 0.06 unvoiced; voiced F0 30, 40, 36 (0.05 starts at the window's end).
    assert outside[F0].value == pytest.approx(106 / 3) and outside[F0].frames == 3
    assert outside[F0_VARIABILITY].value == pytest.approx(np.std([30.0, 40.0, 36.0]))
    assert outside[LOUDNESS].value == pytest.approx(np.mean([0.1, 0.2, 0.6, 0.7, 0.8]))
    # A window with no voiced frame: voiced cues are unmeasured, loudness is not.
    silent = region_stats(frames, window_mask(frames.index.to_numpy(), [(0.0, 0.01)]))
    assert silent[F0].value is None and silent[F0].frames == 0 and silent[JITTER].value is None
    assert silent[LOUDNESS].value == pytest.approx(0.1)
    # In a verdict, F0 variability is the whole utterance's (a window holds no phrase contour).
    baseline = speaker_baselines([utterance_profile(frames, None)] * 3, ["s"] * 3)["s"]
    evidence = cue_evidence(frames, [(0.02, 0.05)], "angry", baseline)
    variability = evidence.cues[F0_VARIABILITY]
    assert variability.scope == "utterance" and variability.outside is None
    assert variability.inside == pytest.approx(np.std([30.0, 32.0, 34.0, 40.0, 36.0]))
    assert evidence.cues[F0].scope == "window" and evidence.cues[F0].inside == pytest.approx(33.0)


def test_speaker_baseline_and_its_fallback():
    a = [{F0: 30.0, LOUDNESS: 1.0}, {F0: 32.0, LOUDNESS: 1.0}, {F0: 34.0, LOUDNESS: 1.0}]
    b = [{F0: 50.0, LOUDNESS: 3.0}]  # one utterance: too few, the corpus's statistics stand in
    baselines = speaker_baselines([*a, *b], ["a", "a", "a", "b"])
    assert baselines["a"].mean[F0] == pytest.approx(32.0)
    assert baselines["a"].std[F0] == pytest.approx(np.std([30, 32, 34]))  # population std
    assert baselines["a"].z(F0, 34.0) == pytest.approx(2 / np.std([30, 32, 34]))
    assert baselines["a"].z(LOUDNESS, 5.0) == 0.0  # no spread: nothing to tell apart
    assert baselines["a"].z(SPEAKING_RATE, 3.0) is None  # no value at all
    assert baselines["b"].pooled[F0] and not baselines["a"].pooled[F0]
    assert baselines["b"].mean[F0] == pytest.approx(36.5) and baselines["b"].utterances[F0] == 4
    with pytest.raises(BenchmarkError):
        speaker_baselines(a, ["a"])


def test_judge_thresholds():
    assert judge(0.6, "up") == "agrees" and judge(-0.6, "down") == "agrees"
    assert judge(-0.6, "up") == "disagrees" and judge(0.6, "down") == "disagrees"
    assert judge(0.5, "up") == "neutral"  # z must exceed the threshold
    assert judge(None, "up") == "unmeasured"
    assert judge(0.5, "baseline") == "agrees" and judge(-0.51, "baseline") == "disagrees"


def hand_baseline() -> Baseline:
    """A speaker whose cues have mean 0 and std 1, so z = the in-window value."""
    return Baseline("s", dict.fromkeys(CUE_KEYS, 0.0), dict.fromkeys(CUE_KEYS, 1.0), {}, {})


def constant_frames(values: dict[str, float], n: int = 10) -> pd.DataFrame:
    """n frames 10 ms apart, all voiced, each cue constant except F0, which alternates ±1 around
    its value so that its variability is 1."""
    frames = pd.DataFrame({cue: [values[cue]] * n for cue in values}, index=pd.Index(np.arange(n) / 100))
    frames[F0] = values[F0] + np.tile([-1.0, 1.0], n // 2)
    return frames


def test_verdicts_plausibility_and_unreferenced_labels():
    frames = constant_frames({F0: 2.0, LOUDNESS: 2.0, SPECTRAL_SLOPE: -2.0, JITTER: -3, SHIMMER: -3, HNR: 3})
    baseline = hand_baseline()
    angry = cue_evidence(frames, [(0.0, 1.0)], "angry", baseline, speaking_rate=0.2, utterance_id="u1")
    assert angry.reference == "anger"
    verdicts = {cue: c.verdict for cue, c in angry.cues.items()}
    assert verdicts == {
        F0: "agrees", F0_VARIABILITY: "agrees", LOUDNESS: "agrees", SPECTRAL_SLOPE: "disagrees",
        SPEAKING_RATE: "neutral", JITTER: "disagrees", SHIMMER: "disagrees", HNR: "disagrees",
    }  # fmt: skip
    assert angry.cues[SPEAKING_RATE].scope == "utterance" and angry.cues[SPEAKING_RATE].outside is None
    assert angry.cues[LOUDNESS].inside_frames == 10 and angry.cues[LOUDNESS].outside_frames == 0
    assert angry.cues[F0].citation and all(angry.cues[c].weak for c in (JITTER, SHIMMER, HNR))
    assert angry.agrees_with_experts  # 3 of the 5 established cues agree
    # No transcript: the rate is unmeasured and leaves the denominator.
    no_rate = cue_evidence(frames, [(0.0, 1.0)], "angry", baseline, speaking_rate=None)
    # Happiness has no loudness row: loudness is measured, has no verdict.
    joy = cue_evidence(frames, [(0.0, 1.0)], "joy", baseline, speaking_rate=0.2)
    assert joy.reference == "happiness" and joy.cues[LOUDNESS].verdict is None
    assert joy.cues[LOUDNESS].z == pytest.approx(2.0)
    # A label with no row: cues measured, no verdicts, counted as such.
    fearful = cue_evidence(frames, [(0.0, 1.0)], "fearful", baseline, speaking_rate=0.2)
    assert fearful.reference is None and fearful.agrees_with_experts is None
    assert all(c.verdict is None and c.z is not None for c in fearful.cues.values())

    result = cue_plausibility([angry, no_rate, joy, fearful])
    anger = result.per_emotion["anger"]
    # Weak cues (3 per anger window set) never enter the share, whatever their verdicts.
    assert (anger.agrees, anger.disagrees, anger.neutral, anger.unmeasured, anger.weak) == (6, 2, 1, 1, 6)
    assert anger.share == pytest.approx(6 / 9)
    happiness = result.per_emotion["happiness"]
    assert (happiness.agrees, happiness.neutral, happiness.weak) == (2, 1, 3)
    assert result.share == pytest.approx(8 / 12)
    assert result.unreferenced == {"fearful": 1} and result.window_sets == 4
    assert result.per_cue[LOUDNESS].agrees == 2 and JITTER in result.per_cue
    json.dumps(result.to_json()), json.dumps(angry.to_json())  # JSON-friendly all the way down


def test_neutral_expects_the_speaker_baseline():
    baseline = hand_baseline()
    calm = constant_frames({F0: 30.2, LOUDNESS: -0.3, SPECTRAL_SLOPE: 0.0, JITTER: 0, SHIMMER: 0, HNR: 0})
    loud = constant_frames({F0: 30.2, LOUDNESS: 1.5, SPECTRAL_SLOPE: 0.0, JITTER: 0, SHIMMER: 0, HNR: 0})
    # A speaker around 30 semitones; F0 variability is 1 by construction: baselines with z = 0.
    baseline = replace(baseline, mean=baseline.mean | {F0: 30.0, F0_VARIABILITY: 1.0})
    calm_ev = cue_evidence(calm, [(0.0, 1.0)], "neutral", baseline, speaking_rate=0.1)
    loud_ev = cue_evidence(loud, [(0.0, 1.0)], "neutral", baseline, speaking_rate=0.1)
    assert {c.verdict for c in calm_ev.established()} == {"agrees"} and len(calm_ev.established()) == 5
    assert loud_ev.cues[LOUDNESS].verdict == "disagrees"


# --- expert table ---------------------------------------------------------------------------------


def test_shipped_table_loads_with_citations_and_label_mapping():
    table = load_expert_table()
    assert set(table.rows) == {"anger", "happiness", "sadness", "neutral"}
    for emotion, cues in table.rows.items():
        for expectation in cues.values():
            assert expectation.citation and all(len(c) > 40 for c in expectation.citation), (
                emotion,
                expectation,
            )
            # Only voice-quality directions are weak; neutral has no direction.
            assert expectation.weak == (expectation.cue in (JITTER, SHIMMER, HNR))
            assert (expectation.direction == "baseline") == (emotion == "neutral")
    assert table.rows["anger"][LOUDNESS].direction == "up"
    assert table.rows["sadness"][SPECTRAL_SLOPE].direction == "down"
    assert "Psychological Bulletin, 129(5)" in table.rows["anger"][F0].citation[0]
    # Every emotion label of the shipped dataset cards maps onto a row or is one with none.
    no_row = {"surprise", "surprised", "fear", "fearful", "disgust", "disgusted"}
    for card in sorted((REPO / "datasets").glob("*.yaml")):
        for label in yaml.safe_load(card.read_text()).get("labels") or []:
            assert (table.emotion(label) is None) == (label in no_row), (card.name, label)
    assert table.emotion("JOY") == "happiness" and table.expectations("fearful") is None


def write_table(path: Path, edit) -> Path:
    data = yaml.safe_load((REPO / "benchmark" / "explain" / "expert_cues.yaml").read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d["rows"][2].update(direction="upward"), "rows.2.direction"),
        (lambda d: d["rows"][0].pop("citation"), "rows.0.citation"),
        (lambda d: d["rows"][1].update(citation=[]), "rows.1.citation"),
        (lambda d: d["rows"][3].update(citation=["Nobody 2020"]), "rows.3.citation"),
        (lambda d: d["rows"][4].update(cue="pitch"), "rows.4.cue"),
        (lambda d: d["rows"][5].update(emotion="boredom"), "rows.5.emotion"),
        (lambda d: d["rows"].append(dict(d["rows"][0])), "rows.27"),
        (lambda d: d["rows"][0].update(strength="high"), "rows.0.strength"),
    ],
)
def test_malformed_table_names_file_and_field(tmp_path: Path, edit, field: str):
    path = write_table(tmp_path / "bad.yaml", edit)
    with pytest.raises(BenchmarkError) as err:
        load_expert_table(path)
    assert str(path) in str(err.value) and field in str(err.value)


# --- descriptor-evidence agreement ---------------------------------------------------------------


def test_descriptor_evidence_by_hand():
    # Inside the windows: pitch high (z = 2), energy low (z = -1), no speaking rate (no transcript).
    frames = constant_frames({F0: 2.0, LOUDNESS: -1.0, SPECTRAL_SLOPE: 0, JITTER: 0, SHIMMER: 0, HNR: 0})
    evidence = cue_evidence(
        frames, [(0.0, 1.0)], "angry", hand_baseline(), speaking_rate=None, utterance_id="u"
    )
    checked = descriptor_evidence("A woman with a high pitch and a loud voice speaks slowly.", evidence)
    records = {(c.attribute, c.claimed, c.measured, c.verdict) for c in checked.claims}
    assert records == {
        ("pitch", "high", "high", "agrees"),
        ("energy", "high", "low", "disagrees"),
        ("speed", "low", None, "unmeasured"),
    }  # gender is not a window cue: no record
    assert checked.share == 0.5
    pitch = next(c for c in checked.claims if c.attribute == "pitch")
    assert pitch.cue == F0 and pitch.value == pytest.approx(2.0) and pitch.z == pytest.approx(2.0)
    nothing = descriptor_evidence("An emotional speaker.", evidence)
    assert nothing.claims == () and nothing.share is None

    agreement = descriptor_evidence_agreement(
        ["A woman with a high pitch and a loud voice speaks slowly.", "An emotional speaker.", None,
         "Quiet speech at a normal pitch."],
        [evidence] * 4,
    )  # fmt: skip
    assert agreement.claims == {"pitch": 2, "energy": 2, "speed": 0} and agreement.unmeasured == 1
    assert agreement.agreeing == {"pitch": 1, "energy": 1, "speed": 0} and agreement.share == 0.5
    assert [d.share for d in agreement.per_utterance] == [0.5, None, None, 0.5]
    json.dumps(agreement.to_json())
    with pytest.raises(BenchmarkError):
        descriptor_evidence_agreement(["x"], [])


# --- the demo corpus: known prosody per emotion -----------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    """The 40-utterance demo corpus (as the `workdir` fixture builds it), with windows covering
    each whole utterance, judged with its reference emotions; openSMILE runs for real. `judged`
    judges it again with another table, reading the cues measured here from their cache."""
    home = tmp_path_factory.mktemp("evidence_home")

    def judged(table=None):
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("BENCHMARK_HOME", str(home))
            return corpus_evidence(rows, windows, table=table)

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENCHMARK_HOME", str(home))
        rows = read_manifest(build_demo_corpus(size=40, seed=0, progress=False))
    windows = {r.id: [(0.0, r.duration + 1.0)] for r in rows}
    return rows, judged(), judged


def agreement_report(evidence) -> tuple[float, dict[str, float], str]:
    """Share of utterances whose measured established cues agree with the table by a strict
    majority (`UtteranceEvidence.agrees_with_experts`), per label, and a printable report with the
    per-cue shares for the assertion messages."""
    per_label: dict[str, list[bool]] = {}
    for item in evidence:
        per_label.setdefault(item.emotion, []).append(bool(item.agrees_with_experts))
    pooled = [a for values in per_label.values() for a in values]
    shares = {label: sum(v) / len(v) for label, v in per_label.items()}
    lines = [f"utterances agreeing: {sum(pooled) / len(pooled):.1%}"]
    lines += [f"  {label}: {share:.0%}" for label, share in shares.items()]
    for emotion in ("anger", "happiness", "sadness", "neutral"):
        result = cue_plausibility([e for e in evidence if e.reference == emotion])
        cells = ", ".join(f"{cue} {c.share:.0%}" for cue, c in result.per_cue.items() if c.share is not None)
        lines.append(f"  {emotion} per cue: {cells}")
    return sum(pooled) / len(pooled), shares, "\n".join(lines)


def test_demo_cue_verdicts_follow_the_synthesised_prosody(demo):
    """The demo synthesises every emotion relative to its speaker in the expert directions
    (`benchmark.data.demo.PROFILES`), so the verdicts of the reference emotions must agree.

    Measured with seed 0: 92.5 % of these 40 utterances agree by strict majority (93.8 % of the
    full 420-utterance corpus). Single cues agree less often: a sentence's phonemes move the
    spectral slope and the speaking rate (words per voiced second) as much as the designed shifts,
    so those cues carry most of the disagreements.
    """
    rows, evidence, _ = demo
    assert len(evidence) == len(rows) == 40
    share, per_label, report = agreement_report(evidence)
    assert share >= 0.9, report
    assert min(per_label.values()) >= 0.8, report
    # The cues the demo moves by a wide margin agree almost always: loudness of anger and
    # sadness, F0 of every emotion, F0 variability and rate of sadness.
    designed = {
        "anger": (LOUDNESS, F0),
        "sadness": (LOUDNESS, F0, F0_VARIABILITY, SPEAKING_RATE),
        "happiness": (F0,),
    }
    verdicts = [
        e.cues[cue].verdict for e in evidence if e.reference in designed for cue in designed[e.reference]
    ]
    assert verdicts.count("agrees") / len(verdicts) >= 0.9, (
        verdicts.count("agrees") / len(verdicts),
        report,
    )
    # No cue is unmeasured on synthetic speech with a transcript.
    assert all(c.verdict != "unmeasured" for e in evidence for c in e.cues.values()), report


def test_flipped_expert_direction_is_caught(demo):
    _, evidence, judged = demo
    table = load_expert_table()
    anger_quieter = {**table.rows["anger"], LOUDNESS: Expectation(LOUDNESS, "down", False, ("flipped",))}
    wrong = judged(replace(table, rows={**table.rows, "anger": anger_quieter}))
    right_loudness = cue_plausibility([e for e in evidence if e.reference == "anger"]).per_cue[LOUDNESS]
    wrong_loudness = cue_plausibility([e for e in wrong if e.reference == "anger"]).per_cue[LOUDNESS]
    assert right_loudness.share >= 0.9 and wrong_loudness.share <= 0.1
    _, right_per_label, report = agreement_report(evidence)
    _, wrong_per_label, wrong_report = agreement_report(wrong)
    # One flipped cue of five loses the majority only where another cue already disagreed.
    assert wrong_per_label["angry"] < right_per_label["angry"], (report, wrong_report)
    # Every direction reversed (neutral's "baseline" has no reverse): the emotional labels collapse.
    reverse = {"up": "down", "down": "up", "baseline": "baseline"}
    mirrored = {
        emotion: {cue: replace(e, direction=reverse[e.direction]) for cue, e in cues.items()}
        for emotion, cues in table.rows.items()
    }
    _, mirrored_per_label, mirrored_report = agreement_report(judged(replace(table, rows=mirrored)))
    for label in ("angry", "happy", "sad"):
        assert mirrored_per_label[label] <= 0.2 <= right_per_label[label] - 0.5, (report, mirrored_report)
