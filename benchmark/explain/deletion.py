"""The deletion test: does removing the salient windows remove the decision?

Per utterance, the probability of the predicted emotion is measured on the audio as it is, with
its top-k salient windows occluded, and with k random non-overlapping windows of the same length
occluded (the occlusion saliency baseline; seeded by the utterance id). The random control
matters because occluding any stretch of a short clip lowers most decisions. The score is the
*excess drop* p_random - p_top; `explain.deletion` is its mean, and a paired one-sided t-test
(scipy's `ttest_rel`, alternative "greater") asks whether the top windows' drops exceed the
random ones'.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import ttest_rel

from benchmark.data.audio import SAMPLE_RATE
from benchmark.explain.saliency import OcclusionBaseline, ProbabilityDecision, Waveform

Span = tuple[float, float]  # (start, end) in seconds of the original audio


@dataclass(frozen=True)
class Deletion:
    """The predicted label's probability of one utterance, as it is and with windows occluded."""

    id: str
    original: float
    top: float  # with the top-k salient windows occluded
    random: float  # with as many random windows of the same length occluded
    random_windows: tuple[Span, ...]

    @property
    def excess_drop(self) -> float:
        """How much more the top windows' occlusion lowers the probability than random windows'."""
        return (self.original - self.top) - (self.original - self.random)


@dataclass(frozen=True)
class DeletionSummary:
    utterances: int
    excess_drop: float  # mean over utterances: `explain.deletion`
    top_drop: float  # mean of original - top
    random_drop: float  # mean of original - random
    p_value: float | None  # paired one-sided t-test, top drops > random drops; None below 2 utterances


def occluded(wave: np.ndarray, windows: Sequence[Span], baseline: OcclusionBaseline) -> np.ndarray:
    """A copy of `wave` with the samples of every window replaced by the baseline value."""
    fill = 0.0 if baseline == "silence" else float(np.mean(wave))
    out = np.array(wave, dtype=np.float32, copy=True)
    for start, end in windows:
        out[round(start * SAMPLE_RATE) : round(end * SAMPLE_RATE)] = fill
    return out


def random_windows(duration: float, count: int, window_s: float, seed: int) -> list[Span]:
    """`count` non-overlapping windows of `window_s` seconds inside [0, duration], drawn uniformly
    by rejection (as many as fit when the clip is too short for all of them)."""
    rng = np.random.default_rng(seed)
    fits = int(duration // window_s) if window_s > 0 else 0
    chosen: list[Span] = []
    for _ in range(1000 * max(count, 1)):
        if len(chosen) >= min(count, fits):
            break
        start = float(rng.uniform(0, max(duration - window_s, 0)))
        if all(start + window_s <= s or start >= e for s, e in chosen):
            chosen.append((start, start + window_s))
    return sorted(chosen)


def utterance_seed(utterance_id: str, seed: int = 0) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{utterance_id}".encode()).digest()[:4], "little")


def deletion_test(
    decision: ProbabilityDecision,
    wave: Waveform,
    windows: Sequence[Span],
    utterance_id: str,
    baseline: OcclusionBaseline = "silence",
    seed: int = 0,
) -> Deletion:
    """The three probabilities of one utterance (module docstring); the random windows have the
    length of the first salient window and their number."""
    wave = np.asarray(torch.as_tensor(wave).detach().cpu(), dtype=np.float32).reshape(-1)
    window_s = windows[0][1] - windows[0][0] if windows else 0.0
    duration = len(wave) / SAMPLE_RATE
    control = random_windows(duration, len(windows), window_s, utterance_seed(utterance_id, seed))
    batch = torch.from_numpy(
        np.stack([wave, occluded(wave, windows, baseline), occluded(wave, control, baseline)])
    )
    original, top, random = decision.probability(batch, torch.ones_like(batch, dtype=torch.bool)).tolist()
    return Deletion(utterance_id, original, top, random, tuple(control))


def summarise_deletions(deletions: Sequence[Deletion]) -> DeletionSummary:
    """Means over utterances and the paired one-sided test of the top drops against the random ones."""
    top = np.array([d.original - d.top for d in deletions])
    random = np.array([d.original - d.random for d in deletions])
    p_value = None
    if len(deletions) >= 2 and np.any(top != random):
        p_value = float(ttest_rel(top, random, alternative="greater").pvalue)
    return DeletionSummary(
        utterances=len(deletions),
        excess_drop=float(np.mean(top - random)) if len(deletions) else float("nan"),
        top_drop=float(np.mean(top)) if len(deletions) else float("nan"),
        random_drop=float(np.mean(random)) if len(deletions) else float("nan"),
        p_value=p_value,
    )
