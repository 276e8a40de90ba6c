"""Paired significance tests between two systems, utterance by utterance (paper 4.5).

The paper's test is a paired one-sided t-test (p = 0.05) on per-utterance scores. A t-test
compares means, so each utterance's score is weighted to make its mean exactly the reported
metric (N utterances, C classes, n_c references of class c, e_i edits, w_i reference words):
- `ser.ua`:  s_i = correct_i * N / (C * n_c(i))   (mean = UA)
- `ser.wa`:  s_i = correct_i                      (mean = WA)
- `asr.wer`: s_i = e_i * N / sum(w)               (mean = corpus WER; lower is better)
With F folds the weights are taken per fold and scaled by N / (F * N_f), so the mean is the fold
mean that `run` logs. `sed.*` compares sentence scores (docs/design.md). Beyond the paper: Holm's
correction across one table's comparisons (`holm`) and paired bootstrap intervals of the mean
difference, one resampling utterances and one resampling speakers (and folds) with all their
utterances (`cluster_bootstrap`), an effect size (`effect_size`) and the smallest difference the
test would detect (`minimum_detectable_difference`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Literal

import numpy as np
from scipy.stats import norm, ttest_rel
from scipy.stats import t as t_distribution
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


@dataclass(frozen=True)
class Bootstrap:
    """A bootstrap of the mean paired difference: its percentile interval `ci`, its standard error
    `se` (the standard deviation of the resampled means) and what was resampled: `clusters`
    clusters and `replicates` replicate labels (1: replicates were not resampled)."""

    ci: tuple[float, float]
    se: float
    clusters: int
    replicates: int


# Uniform draws held in memory at once by `cluster_bootstrap` (16 MiB); the draws do not depend on it.
_DRAWS_AT_ONCE = 1 << 21


def _codes(labels: Sequence[Hashable] | np.ndarray | None, n: int) -> tuple[np.ndarray, int]:
    """Labels as 0..k-1 in order of first appearance, and k; None: each observation its own label."""
    if labels is None:
        return np.arange(n), n
    if len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} observations")
    index: dict[Hashable, int] = {}
    codes = np.fromiter((index.setdefault(label, len(index)) for label in labels), dtype=np.intp, count=n)
    return codes, len(index)


def _pick_counts(rng: np.random.Generator, rows: int, k: int) -> np.ndarray:
    """(rows, k): how often each of k units is drawn in each of `rows` draws of k with replacement.
    Unit j of a row is floor(k * u_j) of k uniforms u from `rng.random`, taken row by row, so the
    draws do not depend on how many rows are drawn at once."""
    picks = np.minimum((rng.random((rows, k)) * k).astype(np.intp), k - 1)
    picks += k * np.arange(rows)[:, None]
    return np.bincount(picks.ravel(), minlength=rows * k).reshape(rows, k)


def cluster_bootstrap(
    differences: np.ndarray,
    clusters: Sequence[Hashable] | np.ndarray | None = None,
    replicates: Sequence[Hashable] | np.ndarray | None = None,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Bootstrap:
    """Paired cluster bootstrap of the mean of `differences` (one per observation, e.g. utterance).

    `clusters[i]` is observation i's cluster (its speaker; None: every observation is a cluster of
    its own, the plain utterance bootstrap). A resample draws as many clusters as there are, with
    replacement, and keeps all of a drawn cluster's observations together. `replicates[i]` is
    observation i's replicate label, crossed with the clusters (a training seed): with two or more
    labels, the labels are drawn with replacement too, independently (a crossed two-way
    bootstrap), and a resample holds, for each drawn cluster and each drawn label, the cluster's
    observations with that label. The statistic is the mean difference over a resample's
    observations; a resample with none (possible where clusters are nested in the labels) is left out.

    Each resample draws its clusters as floor(K u) of K uniforms u of a generator seeded by the
    first child of `SeedSequence(seed)`, and its replicate labels likewise from the second child;
    clusters and labels are numbered in order of first appearance. The seed is fixed so that a
    table is reproduced digit for digit by a rerun. With fewer than 2 clusters there is nothing to
    resample: the interval and the standard error are NaN.
    """
    d = np.asarray(differences, dtype=float)
    n = len(d)
    cluster, k = _codes(clusters, n)
    replicate, r = _codes(replicates, n) if replicates is not None else (None, 1)
    if r < 2:
        replicate, r = np.zeros(n, dtype=np.intp), 1
    if k < 2:
        return Bootstrap((float("nan"), float("nan")), float("nan"), k, r)
    cells = cluster * r + replicate  # (cluster, replicate) sums and counts: all a resample needs
    sums = np.bincount(cells, weights=d, minlength=k * r).reshape(k, r)
    counts = np.bincount(cells, minlength=k * r).reshape(k, r).astype(float)
    cluster_rng, replicate_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    means, empty = np.empty(n_resamples), np.zeros(n_resamples, dtype=bool)
    step = max(1, _DRAWS_AT_ONCE // k)
    for start in range(0, n_resamples, step):
        rows = min(step, n_resamples - start)
        weights = _pick_counts(cluster_rng, rows, k)
        total, count = weights @ sums, weights @ counts  # (rows, r): per replicate label
        if r > 1:
            label_weights = _pick_counts(replicate_rng, rows, r)
            total, count = (total * label_weights).sum(axis=1), (count * label_weights).sum(axis=1)
        else:
            total, count = total[:, 0], count[:, 0]
        empty[start : start + rows] = count == 0
        means[start : start + rows] = total / np.where(count == 0, 1, count)
    means = means[~empty]  # a resample with no observation has no mean
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Bootstrap((float(low), float(high)), float(np.std(means, ddof=1)), k, r)


def bootstrap_ci(
    differences: np.ndarray, n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile interval of the mean difference, resampling utterances (pairs stay together):
    `cluster_bootstrap` with every utterance a cluster of its own.

    The seed is fixed so that a table is reproduced digit for digit by a rerun.
    """
    return cluster_bootstrap(differences, n_resamples=n_resamples, confidence=confidence, seed=seed).ci


def effect_size(differences: np.ndarray) -> float:
    """Paired Cohen's d_z of utterance-level differences: mean(diff) / std(diff, ddof=1), 0 when
    the differences do not vary. Its sign is that of `diff` (for WER a negative d_z is the
    improvement). Utterance-level: it ignores speaker clusters, so it says how large the mean
    difference is against the utterance-to-utterance spread, not how sure it is."""
    d = np.asarray(differences, dtype=float)
    if len(d) < 2 or np.all(d == d[0]):  # no spread (np.std of equal values can be 1e-17, not 0)
        return 0.0
    return float(d.mean() / np.std(d, ddof=1))


def minimum_detectable_difference(se: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true mean difference that a one-sided test at `alpha` detects with `power`,
    when the mean difference is estimated with standard error `se`:

        MDE = (z_{1-alpha} + z_{power}) * se        (z_q = scipy.stats.norm.ppf(q))

    e.g. (1.645 + 0.842) * se for alpha 0.05 and 80 % power. A magnitude in the metric's units
    (for WER, the size of a decrease); NaN when `se` is."""
    return float((norm.ppf(1 - alpha) + norm.ppf(power)) * se)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values of one family of comparisons (statsmodels' step-down method)."""
    if not p_values:
        return []
    return [float(p) for p in multipletests(list(p_values), method="holm")[1]]


@dataclass(frozen=True)
class PairedTest:
    """One system against one baseline on one metric. `diff` = value - baseline_value (for WER a
    negative diff is the improvement); `ci` is the bootstrap interval of `diff` over utterances,
    `cluster_ci` the one over `clusters` speaker clusters (and `replicates` seed or fold/seed
    labels, when there are several), with standard error `cluster_se`; `unclustered` utterances had no speaker
    and were clusters of their own. `effect_size` is the utterance-level paired Cohen's d_z (sign
    of `diff`); `mde` the smallest true difference the one-sided test at the `alpha` given to
    `paired_test` detects with 80 % power, from `cluster_se`. `p` is one-sided in the metric's
    direction; `p_holm` is filled in by `with_holm` across a family of tests."""

    metric: str
    n: int
    value: float
    baseline_value: float
    diff: float
    ci: tuple[float, float]
    p: float
    cluster_ci: tuple[float, float]
    cluster_se: float
    clusters: int
    replicates: int
    effect_size: float
    mde: float
    unclustered: int = 0
    p_holm: float | None = None


def paired_test(
    scores: UtteranceScores,
    baseline: UtteranceScores,
    name: str = "system",
    baseline_name: str = "baseline",
    n_resamples: int = 2000,
    seed: int = 0,
    *,
    speakers: Mapping[str, str] | None = None,
    replicates: Mapping[str, str] | None = None,
    alpha: float = 0.05,
) -> PairedTest:
    """Is `scores` better than `baseline`? `name`s label the runs in errors.

    `speakers` maps a key of the scores (`PredictionRecord.key`: the utterance, and its seed in a
    run with seeds) to its speaker: the clusters of the cluster bootstrap (a key it lacks is a
    cluster of its own, counted in `unclustered`; None: every utterance is). `replicates` maps a
    key to its replicate label, crossed with the speakers: its seed, and its fold where speakers
    are tested in several folds (`EvaluatedRun.replicates`); several labels are resampled too
    (`cluster_bootstrap`). `alpha` is the test's level for the minimum detectable difference.
    """
    if scores.metric != baseline.metric:
        raise ValueError(f"cannot pair {scores.metric} scores with {baseline.metric} scores")
    values, base = paired_values(scores, baseline, name, baseline_name)
    higher = metric_spec(scores.metric).higher_is_better
    differences = values - base
    utterances = cluster_bootstrap(differences, n_resamples=n_resamples, seed=seed)
    unclustered = 0
    if speakers is None and replicates is None:
        clustered = utterances  # the same resampling: the same draws
    else:
        labels: list[Hashable] | None = None
        if speakers is not None:
            labels = [speakers.get(utt, ("utterance", utt)) for utt in scores.ids]  # never a str
            unclustered = sum(utt not in speakers for utt in scores.ids)
        crossed = None if replicates is None else [replicates.get(utt) for utt in scores.ids]
        clustered = cluster_bootstrap(differences, labels, crossed, n_resamples=n_resamples, seed=seed)
    return PairedTest(
        metric=scores.metric,
        n=len(values),
        value=float(values.mean()),
        baseline_value=float(base.mean()),
        diff=float(differences.mean()),
        ci=utterances.ci,
        p=paired_t_test(values, base, higher),
        cluster_ci=clustered.ci,
        cluster_se=clustered.se,
        clusters=clustered.clusters,
        replicates=clustered.replicates,
        effect_size=effect_size(differences),
        mde=minimum_detectable_difference(clustered.se, alpha),
        unclustered=unclustered,
    )


def with_holm(tests: Sequence[PairedTest]) -> list[PairedTest]:
    """The tests with `p_holm` set, treating all of them as one family (one table)."""
    return [
        dataclasses.replace(test, p_holm=p) for test, p in zip(tests, holm([t.p for t in tests]), strict=True)
    ]


def seed_interval(
    parts: Sequence[tuple[str | None, int, float]], confidence: float = 0.95
) -> tuple[float, float]:
    """The interval of a run's mean metric over its trainings, each a (fold, seed, value).

    Trainings of one fold share its test set and speakers, so they are not independent: the
    clusters are the folds, each the mean over its seeds, and the interval is Student's t over the
    F fold means (mean ± t(F-1) · sd / √F). With one fold the seeds are the units (t over K
    values). It is about training: how much the mean moves with the seed and the held-out fold,
    for this corpus, not how it would move on another test set (that is `compare`'s bootstrap).
    """
    folds: dict[str | None, list[float]] = {}
    for fold, _, value in parts:
        folds.setdefault(fold, []).append(value)
    units = [float(np.mean(v)) for v in folds.values()] if len(folds) > 1 else [v for _, _, v in parts]
    mean = float(np.mean(units))
    if len(units) < 2:
        return mean, mean
    quantile = t_distribution.ppf((1 + confidence) / 2, len(units) - 1)
    half = float(quantile * np.std(units, ddof=1) / np.sqrt(len(units)))
    return mean - half, mean + half
