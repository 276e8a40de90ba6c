"""Explanation quality: the deletion test and the metrics computed from explanation records."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

from benchmark.explain.deletion import (
    Deletion,
    deletion_test,
    occluded,
    random_windows,
    summarise_deletions,
)
from benchmark.explain.quality import ExplanationRecord, explanation_scores

RATE = 16000


class LoudSegment:
    """A decision that reads only the loudness of 0.60-0.75 s: its probability is that RMS, squashed."""

    description = "p(segment is loud)"

    def probability(self, waves: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        segment = waves[:, int(0.60 * RATE) : int(0.75 * RATE)]
        return torch.sigmoid(10 * segment.pow(2).mean(dim=1).sqrt() - 2)

    def from_waveforms(self, waves: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.probability(waves, mask).log()


def test_occluded_replaces_exactly_the_windows_samples():
    wave = np.arange(1, 2 * RATE + 1, dtype=np.float32)
    out = occluded(wave, [(0.5, 0.65)], "silence")
    assert (out[int(0.5 * RATE) : int(0.65 * RATE)] == 0).all()
    assert (out[: int(0.5 * RATE)] == wave[: int(0.5 * RATE)]).all()
    assert (out[int(0.65 * RATE) :] == wave[int(0.65 * RATE) :]).all()
    assert occluded(wave, [(0.0, 0.1)], "mean")[0] == pytest.approx(wave.mean())
    assert wave[0] == 1  # the input is not changed


def test_random_windows_are_inside_apart_and_reproducible():
    windows = random_windows(2.0, 5, 0.15, seed=7)
    assert len(windows) == 5 and windows == random_windows(2.0, 5, 0.15, seed=7)
    assert windows != random_windows(2.0, 5, 0.15, seed=8)
    assert all(s >= 0 and e <= 2.0 and e - s == pytest.approx(0.15) for s, e in windows)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(windows))
    assert len(random_windows(0.4, 5, 0.15, seed=0)) == 2  # as many as fit


def test_occluding_the_deciding_segment_drops_more_than_random_windows():
    rng = np.random.default_rng(0)
    wave = (0.05 * rng.standard_normal(2 * RATE)).astype(np.float32)
    wave[int(0.60 * RATE) : int(0.75 * RATE)] *= 12  # the loud segment the decision reads
    deletion = deletion_test(LoudSegment(), wave, [(0.60, 0.75)], "utt-1")
    assert deletion.original > 0.5 and deletion.top < deletion.original - 0.3
    assert deletion.random_windows and all(e <= 2.0 for _, e in deletion.random_windows)
    assert deletion.excess_drop == pytest.approx(deletion.random - deletion.top)
    if not any(s < 0.75 and e > 0.60 for s, e in deletion.random_windows):
        assert deletion.random == pytest.approx(deletion.original)  # random windows missed the segment


def test_the_summary_is_the_mean_excess_drop_and_a_paired_one_sided_t_test():
    deletions = [
        Deletion("a", 0.9, 0.2, 0.8, ()), Deletion("b", 0.8, 0.5, 0.7, ()),
        Deletion("c", 0.6, 0.5, 0.6, ()), Deletion("d", 0.7, 0.6, 0.5, ()),
    ]  # fmt: skip
    summary = summarise_deletions(deletions)
    top = np.array([0.7, 0.3, 0.1, 0.1])
    random = np.array([0.1, 0.1, 0.0, 0.2])
    assert summary.excess_drop == pytest.approx((top - random).mean())
    assert (summary.top_drop, summary.random_drop) == pytest.approx((top.mean(), random.mean()))
    diff = top - random  # the paired t statistic by hand, one-sided (top drops larger)
    t = diff.mean() / (diff.std(ddof=1) / math.sqrt(len(diff)))
    assert summary.p_value == pytest.approx(stats.t.sf(t, df=len(diff) - 1))
    assert summarise_deletions(deletions[:1]).p_value is None


def record(uid: str, verdicts: dict[str, str], claims: tuple[int, int], p: tuple[float, float, float]):
    return ExplanationRecord(
        id=uid, fold="1", emotion="angry", reference_emotion="angry", method="occlusion",
        windows=[(0.1, 0.25)], p_original=p[0], p_top=p[1], p_random=p[2], verdicts=verdicts,
        claims_measured=claims[0], claims_agreeing=claims[1],
    )  # fmt: skip


def test_quality_metrics_pool_shares_and_keep_per_utterance_scores():
    records = [
        record("a", {"loud": "agrees", "rate": "agrees", "F0": "disagrees"}, (2, 2), (0.9, 0.3, 0.8)),
        record("b", {"loud": "neutral"}, (1, 0), (0.6, 0.5, 0.4)),
        record("c", {}, (0, 0), (0.5, 0.5, 0.5)),
    ]  # fmt: skip
    scores = explanation_scores(records)
    deletion = scores["explain.deletion"]
    assert deletion.ids == ("a", "b", "c") and deletion.values.tolist() == pytest.approx([0.5, -0.1, 0.0])
    assert deletion.value == pytest.approx(0.4 / 3)
    plausibility = scores["explain.plausibility"]
    assert plausibility.ids == ("a", "b")  # c has no established cue: not scored, not a zero
    assert plausibility.values.tolist() == pytest.approx([2 / 3, 0.0])
    assert plausibility.value == pytest.approx(2 / 4)  # pooled over (window set, cue) pairs
    agreement = scores["explain.agreement"]
    assert agreement.ids == ("a", "b") and agreement.value == pytest.approx(2 / 3)
    no_claims = explanation_scores([record("x", {"F0": "agrees"}, (0, 0), (0.5, 0.4, 0.5))])
    assert "explain.agreement" not in no_claims and explanation_scores([]) == {}
