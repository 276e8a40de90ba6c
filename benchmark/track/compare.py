"""`python -m benchmark compare`: paired one-sided tests of runs against a baseline, logged to MLflow.

Each RUN_OR_SYSTEM is an MLflow run id or a system name; a name means the latest FINISHED top-level
run of that system on the dataset (`--dataset`, else the baseline run's dataset). With none, every
system's latest finished runs on that dataset are compared (one per backbone and β). Every number is
recomputed from the runs' pooled prediction records (`predictions/pooled.jsonl`), never read from
logged metrics, with the per-utterance scores of `benchmark.eval.stats` (a metric over several
folds is their mean, as `run` logs it).

All (run, metric) comparisons of one call form one family for Holm's correction, and
`significant` means Holm p < alpha. A metric that a run's system does not predict (WER of a system
with no transcript target, read from the run's `targets` param) is skipped and said so.

The comparison is logged as a top-level MLflow run tagged `kind=comparison` with the compared run
ids as tags and params, metrics `compare.<system>.<metric>.<stat>` and the table as
`comparison.csv` and `comparison.md`. It has no `system` tag, so `find_runs(system=...)` never
mistakes it for a trained system.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from rich.table import Table

from benchmark.errors import BenchmarkError
from benchmark.eval.captioning import Language, available_caption_metrics
from benchmark.eval.stats import (
    SED_METRICS,
    MetricUnavailable,
    PairedTest,
    UtteranceScores,
    caption_utterance_scores,
    metric_spec,
    paired_test,
    per_utterance_scores,
    with_holm,
)
from benchmark.registry import load_dataset_card
from benchmark.track.records import PredictionRecord, load_run_records
from benchmark.track.tracking import (
    FINISHED,
    find_runs,
    load_mlflow_config,
    log_metrics,
    log_text,
    run_context,
    tracking_setup,
)

RUN_ID = re.compile(r"[0-9a-f]{32}")
DEFAULT_METRICS = ("ser.ua", "asr.wer")


@dataclass(frozen=True)
class EvaluatedRun:
    """A top-level `benchmark run` run with its pooled prediction records."""

    run: Run
    records: list[PredictionRecord]
    _scores: dict[str, UtteranceScores] = field(default_factory=dict, repr=False, compare=False)

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    @property
    def system(self) -> str:
        return self.run.data.tags.get("system", "?")

    def predicts(self, metric: str) -> bool:
        """Whether the run's system has the output `metric` scores (its logged `targets`)."""
        targets = self.run.data.params.get("targets")
        if targets is None:
            raise BenchmarkError(f"run {self.run_id} has no 'targets' param: not a `benchmark run` run")
        return metric_spec(metric).target in json.loads(targets)

    def scores(self, metric: str) -> UtteranceScores:
        """Per-utterance scores, computed once per metric (a leaderboard reuses them per baseline)."""
        if metric in SED_METRICS and metric not in self._scores:
            # asked before scoring: an unavailable metric must not re-run the other scorers
            if reason := available_caption_metrics(self.language)[metric]:
                raise MetricUnavailable(f"{metric} cannot be computed here: {reason}")
            self._scores.update(caption_utterance_scores(self.records, self.language))
        if metric not in self._scores:
            self._scores[metric] = per_utterance_scores(metric, self.records)
        return self._scores[metric]

    @property
    def language(self) -> Language:
        """The language of the run's corpus, which decides how captions are tokenised."""
        return load_dataset_card(self.run.data.tags.get("dataset", "demo")).language


@dataclass(frozen=True)
class Comparison:
    """One run against the baseline on one metric; `system` labels the run in tables and metrics."""

    system: str
    run_id: str
    baseline: str
    baseline_run_id: str
    test: PairedTest


@dataclass(frozen=True)
class CompareReport:
    comparisons: list[Comparison]
    skipped: list[str]
    alpha: float
    logged_run_id: str


def _matches(run: Run, backbone: str | None, beta: float | None = None) -> bool:
    tags = run.data.tags
    return (backbone is None or tags.get("backbone") == backbone) and (
        beta is None or math.isclose(float(tags.get("beta", "nan")), beta)
    )


def latest_run(
    system: str, dataset: str | None = None, backbone: str | None = None, beta: float | None = None
) -> Run | None:
    """The newest FINISHED top-level run of `system` matching the filters, or None.

    Without a dataset, runs on several datasets are ambiguous (they cannot be paired) and refused.
    """
    runs = [run for run in find_runs(system=system, dataset=dataset) if _matches(run, backbone, beta)]
    datasets = sorted({run.data.tags.get("dataset", "?") for run in runs})
    if dataset is None and len(datasets) > 1:
        raise BenchmarkError(
            f"system '{system}' has runs on several datasets ({', '.join(datasets)})",
            hint="choose one with --dataset",
        )
    return max(runs, key=lambda run: run.info.start_time, default=None)


def resolve_run(ref: str, dataset: str | None = None, backbone: str | None = None) -> Run:
    """The run a RUN_OR_SYSTEM argument names (see the module docstring)."""
    if RUN_ID.fullmatch(ref):
        try:
            run = MlflowClient().get_run(ref)
        except MlflowException as err:
            raise BenchmarkError(f"no MLflow run with id {ref} ({str(err).splitlines()[0]})") from err
        if parent := run.data.tags.get("mlflow.parentRunId"):
            raise BenchmarkError(f"run {ref} is a fold run; pass its parent run {parent}")
        if run.info.status != FINISHED:
            raise BenchmarkError(f"run {ref} is {run.info.status}: only finished runs are compared")
        return run
    run = latest_run(ref, dataset, backbone)
    if run is None:
        where = f" on '{dataset}'" if dataset else ""
        raise BenchmarkError(
            f"no finished run of system '{ref}'{where}",
            hint=f"train one with `python -m benchmark run --system {ref}`, or pass an MLflow run id",
        )
    return run


def load_evaluated(run: Run) -> EvaluatedRun:
    return EvaluatedRun(run, load_run_records(run.info.run_id, "pooled"))


def run_labels(runs: Sequence[EvaluatedRun]) -> list[str]:
    """System names, with the run id's start added where two runs share a system (e.g. two betas)."""
    counts = Counter(run.system for run in runs)
    return [run.system if counts[run.system] == 1 else f"{run.system}-{run.run_id[:8]}" for run in runs]


def compare_runs(
    runs: Sequence[EvaluatedRun],
    baseline: EvaluatedRun,
    metrics: Sequence[str],
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[list[Comparison], list[str]]:
    """Every (run, metric) comparison against `baseline`, Holm-corrected together, and the
    skipped pairs (a metric one side does not predict) as sentences."""
    *labels, baseline_label = run_labels([*runs, baseline])
    comparisons: list[Comparison] = []
    skipped: list[str] = []
    for metric in metrics:
        target = metric_spec(metric).target
        for run, label in zip(runs, labels, strict=True):
            lacking = [
                name for side, name in ((run, label), (baseline, baseline_label)) if not side.predicts(metric)
            ]
            if lacking:
                skipped.append(f"{metric} of {label}: {' and '.join(lacking)} predict(s) no {target}")
                continue
            test = paired_test(
                run.scores(metric),
                baseline.scores(metric),
                f"run {run.run_id} ({label})",
                f"baseline run {baseline.run_id} ({baseline_label})",
                n_resamples,
                seed,
            )
            comparisons.append(Comparison(label, run.run_id, baseline_label, baseline.run_id, test))
    corrected = with_holm([c.test for c in comparisons])
    return [dataclasses.replace(c, test=t) for c, t in zip(comparisons, corrected, strict=True)], skipped


def run_compare(
    refs: Sequence[str],
    baseline: str,
    metrics: Sequence[str] = DEFAULT_METRICS,
    dataset: str | None = None,
    backbone: str | None = None,
    alpha: float = 0.05,
    n_resamples: int = 2000,
    seed: int = 0,
) -> CompareReport:
    """`python -m benchmark compare`: resolve, load, test, log (see the module docstring)."""
    if not 0 < alpha < 1:
        raise BenchmarkError(
            f"alpha must be strictly between 0 and 1, got {alpha:g}",
            hint="a significance level, e.g. --alpha 0.05",
        )
    for metric in metrics:
        metric_spec(metric)  # an unknown metric fails before any download
    tracking_setup(load_mlflow_config())
    base = load_evaluated(resolve_run(baseline, dataset, backbone))
    dataset = dataset or base.run.data.tags.get("dataset")
    if refs:
        chosen = {run.info.run_id: run for run in (resolve_run(ref, dataset, backbone) for ref in refs)}
    else:  # every system's latest finished run on the dataset
        chosen = {run.info.run_id: run for run in find_runs(dataset=dataset) if _matches(run, backbone)}
    chosen.pop(base.run_id, None)
    if not chosen:
        raise BenchmarkError(
            f"nothing to compare with the baseline on '{dataset}'", hint="name runs or systems"
        )
    runs = [load_evaluated(run) for run in chosen.values()]
    comparisons, skipped = compare_runs(runs, base, metrics, n_resamples, seed)
    if not comparisons:
        raise BenchmarkError("no metric applies to both sides: " + "; ".join(skipped))
    settings = {
        "dataset": dataset,
        "metrics": list(metrics),
        "alpha": alpha,
        "n_resamples": n_resamples,
        "seed": seed,
    }
    logged = log_comparison(comparisons, alpha, base, runs, settings)
    return CompareReport(comparisons, skipped, alpha, logged)


# ---------------------------------------------------------------------------------------------
# Tables and logging
# ---------------------------------------------------------------------------------------------

COLUMNS = ("metric", "system", "run", "value", "baseline", "diff", "95% CI", "p", "Holm p", "significant")


def _points(value: float) -> str:
    """Fractions as percentages (points for differences), as in the paper's tables."""
    return f"{100 * value:.2f}"


def table_rows(comparisons: Sequence[Comparison], alpha: float) -> list[list[str]]:
    """The comparison table as text cells (COLUMNS), for the terminal and the markdown artifact."""
    rows = []
    for c in comparisons:
        t = c.test
        rows.append(
            [
                t.metric, c.system, c.run_id[:8], _points(t.value), _points(t.baseline_value),
                f"{100 * t.diff:+.2f}", f"[{_points(t.ci[0])}, {_points(t.ci[1])}]",
                f"{t.p:.3g}", f"{t.p_holm:.3g}", "yes" if t.p_holm < alpha else "no",
            ]
        )  # fmt: skip
    return rows


def comparisons_frame(comparisons: Sequence[Comparison], alpha: float) -> pd.DataFrame:
    """The comparisons as raw numbers (fractions), one row each: the CSV artifact."""
    return pd.DataFrame(
        [
            {
                "metric": c.test.metric, "system": c.system, "run_id": c.run_id, "baseline": c.baseline,
                "baseline_run_id": c.baseline_run_id, "n": c.test.n, "value": c.test.value,
                "baseline_value": c.test.baseline_value, "diff": c.test.diff, "ci_low": c.test.ci[0],
                "ci_high": c.test.ci[1], "p": c.test.p, "p_holm": c.test.p_holm,
                "significant": c.test.p_holm < alpha,
            }
            for c in comparisons
        ]
    )  # fmt: skip


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-style pipe table (pandas' to_markdown needs tabulate, which the suite does not ship)."""
    lines = [headers, ["---"] * len(headers), *rows]
    return "\n".join(
        "| " + " | ".join(str(cell).replace("|", r"\|") for cell in line) + " |" for line in lines
    )


def comparison_table(report: CompareReport) -> Table:
    baseline = report.comparisons[0]
    title = (
        f"against {baseline.baseline} (run {baseline.baseline_run_id[:8]}): paired one-sided t-test, "
        f"Holm across {len(report.comparisons)} comparisons, alpha {report.alpha:g}"
    )
    table = Table(title=title)
    for header in COLUMNS:
        table.add_column(header, justify="left" if header in ("metric", "system", "run") else "right")
    for row in table_rows(report.comparisons, report.alpha):
        table.add_row(*row)
    return table


def log_comparison(
    comparisons: Sequence[Comparison],
    alpha: float,
    baseline: EvaluatedRun,
    runs: Sequence[EvaluatedRun],
    settings: dict,
) -> str:
    """Log the comparison as its own MLflow run (see the module docstring); returns its id."""
    *labels, baseline_label = run_labels([*runs, baseline])
    tags = {
        "kind": "comparison",
        "baseline_run_id": baseline.run_id,
        "compared_run_ids": ",".join(run.run_id for run in runs),
    }
    params = {
        **settings,
        "baseline": {"system": baseline_label, "run_id": baseline.run_id},
        "runs": {label: run.run_id for label, run in zip(labels, runs, strict=True)},
    }
    metrics = {}
    for c in comparisons:
        t = c.test
        stats = {"value": t.value, "baseline": t.baseline_value, "diff": t.diff, "ci_low": t.ci[0],
                 "ci_high": t.ci[1], "p": t.p, "p_holm": t.p_holm}  # fmt: skip
        metrics |= {f"compare.{c.system}.{t.metric}.{name}": value for name, value in stats.items()}
    with run_context(f"compare vs {baseline_label}", tags=tags, params=params) as run:
        log_metrics(metrics)
        log_text(comparisons_frame(comparisons, alpha).to_csv(index=False), "comparison.csv")
        log_text(markdown_table(COLUMNS, table_rows(comparisons, alpha)) + "\n", "comparison.md")
    return run.info.run_id
