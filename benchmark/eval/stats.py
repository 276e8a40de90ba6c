"""Paired significance tests between two systems, utterance by utterance (paper 4.5).

The paper's test is a paired one-sided t-test (p = 0.05) on per-utterance scores. A t-test
compares means, so each utterance's score is weighted to make its mean exactly the reported
metric (N utterances, C classes, n_c references of class c, e_i edits, w_i reference words):
- `ser.ua`:  s_i = correct_i * N / (C * n_c(i))   (mean = UA)
- `ser.wa`:  s_i = correct_i                      (mean = WA)
- `asr.wer`: s_i = e_i * N / sum(w)               (mean = corpus WER; lower is better)
With F folds the weights are taken per fold and scaled by N / (F * N_f), so the mean is the fold
mean that `run` logs. `sed.*` compares sentence scores (docs/design.md). Beyond the paper: a paired
bootstrap confidence interval and Holm's correction across one table's comparisons (`holm`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Literal

import numpy as np
from scipy.stats import ttest_rel
from statsmodels.stats.multitest import multipletests

from benchmark.config import LANGUAGES, Language
from benchmark.errors import BenchmarkError
from benchmark.eval.captioning import LANGUAGE_MISMATCH, language_metric
from benchmark.eval.metrics import (
    UtteranceScores,
    descriptor_scores,
    emotion_scores,
    fold_scores,
    transcript_scores,
)

if TYPE_CHECKING:  # records are only read here
    from benchmark.data.records import PredictionRecord as Record

Target = Literal["emotion", "transcript", "descriptor"]
SED_METRICS = ("sed.bleu4", "sed.meteor", "sed.rouge_l", "sed.cider", "sed.spice")
# Everything `caption_utterance_scores` can return: the metrics and the language-mismatch share,
# over all utterances and per reference language (the latter only for runs with several).
CAPTION_SCORE_NAMES = (
    *SED_METRICS,
    LANGUAGE_MISMATCH,
    *(language_metric(name, lang) for lang in LANGUAGES for name in (*SED_METRICS, LANGUAGE_MISMATCH)),
)


class MetricUnavailable(BenchmarkError):
    """The per-utterance scores of a metric cannot be computed here (e.g. no captioning scorer)."""


@dataclass(frozen=True)
class MetricSpec:
    """A metric's direction and the record field it scores (its target)."""

    higher_is_better: bool
    target: Target


# Explanation quality (`benchmark.explain.quality` computes them from a run's explanation records).
EXPLAIN_METRICS = ("explain.deletion", "explain.plausibility", "explain.agreement")

# Metric name -> how to test it; SER and ASR scores come from `per_utterance_scores`, captioning
# ones from `caption_utterance_scores` (a lower language-mismatch share is better).
METRICS: dict[str, MetricSpec] = {
    "ser.ua": MetricSpec(True, "emotion"),
    "ser.wa": MetricSpec(True, "emotion"),
    "asr.wer": MetricSpec(False, "transcript"),
    **{name: MetricSpec(not name.endswith("mismatch"), "descriptor") for name in CAPTION_SCORE_NAMES},
    **{name: MetricSpec(True, "emotion") for name in EXPLAIN_METRICS},  # of the emotion decision
}


def caption_utterance_scores(records: Sequence[Record], language: Language) -> dict[str, UtteranceScores]:
    """Every captioning metric that can run here, for the records with a reference descriptor.

    `language` is the corpus language, which records written without a `language` were scored in.
    The result has `sed.<metric>` and `sed.language_mismatch` over all those records and, when
    their references have several languages, `sed.<lang>.<metric>` over each language's records
    (`benchmark.eval.metrics.descriptor_scores`, fold by fold as `run` scored them). A metric that
    cannot run (SPICE without its jars) is absent; `available_caption_metrics` says why.
    """
    scores = fold_scores(records, partial(descriptor_scores, language=language))
    if not scores:
        raise MetricUnavailable("no utterance has a reference descriptor for the sed.* metrics")
    return scores


def metric_spec(metric: str) -> MetricSpec:
    if metric not in METRICS:
        raise BenchmarkError(f"unknown metric '{metric}'", hint=f"known metrics: {', '.join(METRICS)}")
    return METRICS[metric]


def per_utterance_scores(
    metric: str,
    records: Sequence[Record],
    labels: Sequence[str] | None = None,
    precomputed: Sequence[float] | None = None,
) -> UtteranceScores:
    """Per-utterance scores of the SER or ASR `metric` for one run's records, from the scoring
    functions `run` logs its metrics with (`fold_scores`).

    `labels` are the corpus's emotion labels in its card's order (`emotion_scores` says why).
    `precomputed[i]` is the score of `records[i]`, passed in by hand instead.
    """
    spec = metric_spec(metric)
    if precomputed is not None:
        if len(precomputed) != len(records):
            raise ValueError(f"{len(precomputed)} precomputed {metric} scores for {len(records)} records")
        return UtteranceScores(metric, tuple(r.id for r in records), np.asarray(precomputed, dtype=float))
    if spec.target == "descriptor":
        raise MetricUnavailable(
            f"no per-utterance scorer for {metric} is registered",
            hint="captioning scores come from caption_utterance_scores, or pass them as `precomputed`",
        )
    if metric in EXPLAIN_METRICS:
        raise MetricUnavailable(
            f"{metric} is not scored from prediction records",
            hint="it comes from a run's explanation records (benchmark.explain.quality.explanation_scores)",
        )
    score = transcript_scores if spec.target == "transcript" else partial(emotion_scores, labels=labels)
    scores = fold_scores(records, score)
    if metric not in scores:
        raise MetricUnavailable(f"no utterance has a reference for {metric}")
    return scores[metric]


def paired_values(
    scores: UtteranceScores, baseline: UtteranceScores, name: str, baseline_name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Both runs' scores in one utterance order.

    A paired test needs the same utterances on both sides; a run on another fold or corpus
    version is refused rather than silently tested on the intersection.
    """
    only_here = sorted(set(scores.ids) - set(baseline.ids))
    only_there = sorted(set(baseline.ids) - set(scores.ids))
    if only_here or only_there:
        examples = ", ".join([*only_here[:3], *only_there[:3]])
        raise BenchmarkError(
            f"cannot pair {name} with {baseline_name} on {scores.metric}: {len(only_here)} utterance "
            f"id(s) only in {name}, {len(only_there)} only in {baseline_name} (e.g. {examples})",
            hint="compare runs evaluated on the same dataset and fold(s)",
        )
    position = {utt: i for i, utt in enumerate(baseline.ids)}
    return scores.values, baseline.values[[position[utt] for utt in scores.ids]]


def paired_t_test(values: np.ndarray, baseline: np.ndarray, higher_is_better: bool) -> float:
    """p of the paired one-sided t-test that `values` beat `baseline` (the paper's test).

    Identical scores give no evidence of an improvement: p = 1 (scipy would return NaN).
    """
    if len(values) < 2:
        raise BenchmarkError(f"a paired t-test needs at least 2 utterances, got {len(values)}")
    if np.array_equal(values, baseline):
        return 1.0
    alternative = "greater" if higher_is_better else "less"
    return float(ttest_rel(values, baseline, alternative=alternative).pvalue)


def bootstrap_ci(
    differences: np.ndarray, n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile interval of the mean difference, resampling utterances (pairs stay together).

    The seed is fixed so that a table is reproduced digit for digit by a rerun.
    """
    rng = np.random.default_rng(seed)
    n = len(differences)
    means = [differences[rng.integers(0, n, n)].mean() for _ in range(n_resamples)]
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values of one family of comparisons (statsmodels' step-down method)."""
    if not p_values:
        return []
    return [float(p) for p in multipletests(list(p_values), method="holm")[1]]


@dataclass(frozen=True)
class PairedTest:
    """One system against one baseline on one metric. `diff` = value - baseline_value (for WER a
    negative diff is the improvement); `ci` is the bootstrap interval of `diff`; `p` is one-sided in
    the metric's direction; `p_holm` is filled in by `with_holm` across a family of tests."""

    metric: str
    n: int
    value: float
    baseline_value: float
    diff: float
    ci: tuple[float, float]
    p: float
    p_holm: float | None = None


def paired_test(
    scores: UtteranceScores,
    baseline: UtteranceScores,
    name: str = "system",
    baseline_name: str = "baseline",
    n_resamples: int = 2000,
    seed: int = 0,
) -> PairedTest:
    """Is `scores` better than `baseline`? `name`s label the runs in errors."""
    if scores.metric != baseline.metric:
        raise ValueError(f"cannot pair {scores.metric} scores with {baseline.metric} scores")
    values, base = paired_values(scores, baseline, name, baseline_name)
    higher = metric_spec(scores.metric).higher_is_better
    return PairedTest(
        metric=scores.metric,
        n=len(values),
        value=float(values.mean()),
        baseline_value=float(base.mean()),
        diff=float((values - base).mean()),
        ci=bootstrap_ci(values - base, n_resamples, seed=seed),
        p=paired_t_test(values, base, higher),
    )


def with_holm(tests: Sequence[PairedTest]) -> list[PairedTest]:
    """The tests with `p_holm` set, treating all of them as one family (one table)."""
    return [
        dataclasses.replace(test, p_holm=p) for test, p in zip(tests, holm([t.p for t in tests]), strict=True)
    ]
