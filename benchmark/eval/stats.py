"""Paired significance tests between two systems, utterance by utterance (paper 4.5, ARCHITECTURE 6).

The paper marks a system as significantly better than a baseline with a paired one-sided t-test
(p = 0.05) on per-utterance scores. A t-test compares *means*, so it tests the reported metric only
if the per-utterance scores average to exactly that metric. UA and corpus WER are not plain means,
so each utterance's score is weighted (N utterances, C classes present in the references, n_c
references of class c, e_i edits and w_i reference words of utterance i):

- `ser.ua`:  s_i = correct_i * N / (C * n_c(i))   (mean = mean per-class recall = UA)
- `ser.wa`:  s_i = correct_i                      (mean = WA)
- `asr.wer`: s_i = e_i * N / sum(w)               (mean = corpus WER; lower is better)

Runs with several folds (IEMOCAP leave-one-session-out) report the mean over folds (ARCHITECTURE
6), so the weights are taken within each fold and scaled by N / (F * N_f): the mean over all
utterances is then the fold mean of the metric, the number `run` logs as `ser.ua`. With one fold or
an official test split this is the formula above.

Captioning metrics (`sed.*`) are scored together, in one call of the captioning module per run
(`caption_utterance_scores`: the Java scorers start once). Their per-utterance scores are sentence
scores, whose mean for BLEU-4 and METEOR is not the corpus score: the test then compares mean
sentence scores, while tables show the corpus score (`UtteranceScores.value`). Each utterance is
scored in its reference's language (`PredictionRecord.language`, null meaning the corpus
language); a run whose references have several languages also gets `sed.<lang>.<metric>` over the
utterances of each language, and `sed.language_mismatch` (per utterance 1 for a hypothesis in
another language than its reference, else 0; lower is better) is tested like the other metrics.

On top of the paper's test: a paired bootstrap confidence interval of the mean difference, and
Holm's correction across the comparisons of one table (`holm`).
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from scipy.stats import ttest_rel
from statsmodels.stats.multitest import multipletests

from benchmark.errors import BenchmarkError
from benchmark.eval.captioning import LANGUAGE_MISMATCH, LANGUAGES, Language, caption_scores, language_metric
from benchmark.eval.metrics import asr_errors, normalize_transcript, ser_correct

if TYPE_CHECKING:  # records are only read here; the model lives with the tracking code
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


@dataclass(frozen=True, eq=False)
class UtteranceScores:
    """One run's per-utterance scores of one metric; their mean is the metric (module docstring)."""

    metric: str
    ids: tuple[str, ...]
    values: np.ndarray
    corpus: float | None = None  # the corpus score where it is not the mean (BLEU-4, METEOR)

    @property
    def mean(self) -> float:
        return float(self.values.mean())

    @property
    def value(self) -> float:
        """The metric as tables report it."""
        return self.mean if self.corpus is None else self.corpus


Extractor = Callable[[Sequence["Record"]], UtteranceScores]


@dataclass(frozen=True)
class MetricSpec:
    """How to score one metric: its direction, the record field it needs, its extractor (None: the
    scores must be passed in, as for captioning metrics until an extractor is registered)."""

    higher_is_better: bool
    target: Target
    extract: Extractor | None = None


def _wa(rows: Sequence[Record]) -> np.ndarray:
    refs = [r.ref_emotion for r in rows]
    return np.array(ser_correct(refs, [r.hyp_emotion for r in rows], sorted(set(refs))), dtype=float)


def _ua(rows: Sequence[Record]) -> np.ndarray:
    counts = Counter(r.ref_emotion for r in rows)
    class_sizes = np.array([counts[r.ref_emotion] for r in rows])
    return _wa(rows) * len(rows) / (len(counts) * class_sizes)


def _wer(rows: Sequence[Record]) -> np.ndarray:
    counts = asr_errors([r.ref_transcript for r in rows], [r.hyp_transcript for r in rows])
    return np.array(counts.errors, dtype=float) * len(rows) / sum(counts.words)


def _fold_mean(
    scored: Callable[[Record], bool], local: Callable[[Sequence[Record]], np.ndarray], metric: str
) -> Extractor:
    """An extractor whose scores average to the fold mean of the metric.

    `scored` picks the utterances the metric counts (a reference exists); `local` returns, for
    the utterances of one fold, scores whose mean is that fold's metric.
    """

    def extract(records: Sequence[Record]) -> UtteranceScores:
        rows = [r for r in records if scored(r)]
        if not rows:
            raise MetricUnavailable(f"no utterance has a reference for {metric}")
        folds: dict[str | None, list[Record]] = defaultdict(list)
        for row in rows:
            folds[row.fold].append(row)
        ids: list[str] = []
        values: list[np.ndarray] = []
        for members in folds.values():
            ids += [r.id for r in members]
            values.append(local(members) * len(rows) / (len(folds) * len(members)))
        return UtteranceScores(metric, tuple(ids), np.concatenate(values))

    return extract


def _has_emotion(record: Record) -> bool:
    return record.ref_emotion is not None


def _has_transcript(record: Record) -> bool:
    """A reference empty after normalisation has no words to be wrong about: `asr_errors` skips it."""
    return bool(normalize_transcript(record.ref_transcript))


# Metric name -> how to score it; captioning metrics come from `caption_utterance_scores` (a lower
# language-mismatch share is better).
METRICS: dict[str, MetricSpec] = {
    "ser.ua": MetricSpec(True, "emotion", _fold_mean(_has_emotion, _ua, "ser.ua")),
    "ser.wa": MetricSpec(True, "emotion", _fold_mean(_has_emotion, _wa, "ser.wa")),
    "asr.wer": MetricSpec(False, "transcript", _fold_mean(_has_transcript, _wer, "asr.wer")),
    **{name: MetricSpec(not name.endswith("mismatch"), "descriptor") for name in CAPTION_SCORE_NAMES},
}


def reference_languages(records: Sequence[Record], language: Language) -> list[Language]:
    """Each record's reference language; `language` (the corpus's) where a record has none."""
    return [r.language or language for r in records]


def caption_utterance_scores(records: Sequence[Record], language: Language) -> dict[str, UtteranceScores]:
    """Every captioning metric that can run here, for the records with a reference descriptor.

    `language` is the corpus language, which records written without a `language` were scored in.
    The result has `sed.<metric>` and `sed.language_mismatch` over all those records and, when
    their references have several languages, `sed.<lang>.<metric>` over each language's records
    (`benchmark.eval.captioning` says how). A metric that cannot run (SPICE without its jars) is
    absent; `available_caption_metrics` says why. Single-fold scores: captioning is evaluated on
    one test set (EMOSEC, zero-shot).
    """
    rows = [r for r in records if r.ref_descriptor]
    if not rows:
        raise MetricUnavailable("no utterance has a reference descriptor for the sed.* metrics")
    languages = reference_languages(rows, language)
    result = caption_scores([r.ref_descriptor for r in rows], [r.hyp_descriptor for r in rows], languages)
    ids = tuple(r.id for r in rows)
    scores = {
        name: UtteranceScores(name, ids, np.asarray(values, dtype=float), corpus=result.corpus[name])
        for name, values in result.per_utterance.items()
    }
    present = [lang for lang in LANGUAGES if lang in languages]
    overall = list(scores.items())
    if len(present) > 1:
        for lang in present:
            members = [i for i, found in enumerate(languages) if found == lang]
            for name, utterance in overall:
                key = language_metric(name, lang)
                scores[key] = UtteranceScores(
                    key, tuple(ids[i] for i in members), utterance.values[members], corpus=result.corpus[key]
                )
    return scores


def metric_spec(metric: str) -> MetricSpec:
    if metric not in METRICS:
        raise BenchmarkError(f"unknown metric '{metric}'", hint=f"known metrics: {', '.join(METRICS)}")
    return METRICS[metric]


def per_utterance_scores(
    metric: str, records: Sequence[Record], precomputed: Sequence[float] | None = None
) -> UtteranceScores:
    """Per-utterance scores of `metric` for one run's records.

    `precomputed[i]` is the score of `records[i]` (e.g. sentence CIDEr from the captioning module);
    without it the metric's registered extractor computes the scores from the records.
    """
    spec = metric_spec(metric)
    if precomputed is not None:
        if len(precomputed) != len(records):
            raise ValueError(f"{len(precomputed)} precomputed {metric} scores for {len(records)} records")
        return UtteranceScores(metric, tuple(r.id for r in records), np.asarray(precomputed, dtype=float))
    if spec.extract is None:
        raise MetricUnavailable(
            f"no per-utterance scorer for {metric} is registered",
            hint="register one in benchmark.eval.stats.METRICS, or pass the scores as `precomputed`",
        )
    return spec.extract(records)


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
