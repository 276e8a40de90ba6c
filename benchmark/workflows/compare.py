"""`python -m benchmark compare`: paired one-sided tests of runs against a baseline, logged to MLflow.

A paired test is only meaningful between runs that saw the same utterances the same way, so every
comparison stays within one run setup (the `setup` tag of `benchmark.tracking.tags`); the system
config may differ, the setup may not. The baseline and the runs are resolved by
`benchmark.tracking.lookup`: the baseline's latest registry-recipe run fixes the setup, and two run
ids of different setups are refused. Every number is recomputed from the runs' pooled prediction
records with the per-utterance scores of `benchmark.eval.stats`; all (run, metric) comparisons of
one call are one family for Holm's correction; each comparison also has a bootstrap interval over
utterances and one over speakers (and seeds, when there are several), with the effect size and the
minimum detectable difference. The result is logged as a top-level run tagged
`kind=comparison`, without a `system` tag so that `lookup.find_runs` never takes it for a trained
system. Which runs are chosen, and what is logged: docs/evaluation.md.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
from rich.table import Table

from benchmark.errors import BenchmarkError
from benchmark.eval.stats import (
    PairedTest,
    metric_spec,
    paired_test,
    with_holm,
)
from benchmark.tracking import tags as tag
from benchmark.tracking.evaluated import EvaluatedRun, load_evaluated
from benchmark.tracking.log import log_metrics, log_text, markdown_table
from benchmark.tracking.lookup import (
    choose_protocol,
    describe_run_setup,
    find_runs,
    latest_per_system,
    refuse_unpaired,
    resolve_baseline,
    resolve_run,
    setup_of,
)
from benchmark.tracking.runs import run_context
from benchmark.tracking.store import load_mlflow_config, tracking_setup

DEFAULT_METRICS = ("ser.ua", "asr.wer")


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
    notes: list[str] = field(default_factory=list)  # how runs were chosen, where that needs saying


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
    alpha: float = 0.05,
) -> tuple[list[Comparison], list[str]]:
    """Every (run, metric) comparison against `baseline`, Holm-corrected together, and the
    skipped pairs (a metric one side does not predict) as sentences.

    The cluster bootstrap resamples the baseline's speakers (the runs share its utterances) and,
    crossed with them, its seeds (and folds, where a speaker is tested in several:
    `EvaluatedRun.replicates`); `alpha` sets the minimum detectable difference."""
    *labels, baseline_label = run_labels([*runs, baseline])
    speakers, replicates = baseline.speakers, baseline.replicates
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
                speakers=speakers,
                replicates=replicates,
                alpha=alpha,
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
    protocol: str | None = None,
) -> CompareReport:
    """`python -m benchmark compare`: resolve, load, test, log (see the module docstring).

    `protocol` is `--protocol DIGEST`: a setup or protocol digest, or a unique prefix of one.
    """
    if not 0 < alpha < 1:
        raise BenchmarkError(
            f"alpha must be strictly between 0 and 1, got {alpha:g}",
            hint="a significance level, e.g. --alpha 0.05",
        )
    for metric in metrics:
        metric_spec(metric)  # an unknown metric fails before any download
    tracking_setup(load_mlflow_config())
    choice = choose_protocol(protocol, find_runs(dataset=dataset)) if protocol else None
    base_run, notes = resolve_baseline(baseline, dataset, backbone, choice)
    setup = setup_of(base_run)
    dataset = dataset or base_run.data.tags.get(tag.DATASET)
    if refs:
        resolved = [resolve_run(ref, dataset, backbone, setup=setup, choice=choice) for ref in refs]
        for run in resolved:
            refuse_unpaired(run, base_run)  # only a run id can be of another setup
    else:  # every system's latest run in the baseline's setup
        resolved, hidden = latest_per_system(find_runs(dataset=dataset), setup, backbone, choice)
        notes += hidden
    chosen = {run.info.run_id: run for run in resolved}
    chosen.pop(base_run.info.run_id, None)
    if not chosen:
        raise BenchmarkError(
            f"nothing to compare with the baseline on '{dataset}' in its setup "
            f"({describe_run_setup(base_run)})",
            hint="; ".join(notes) or "name runs or systems",
        )
    base = load_evaluated(base_run)
    runs = [load_evaluated(run) for run in chosen.values()]
    comparisons, skipped = compare_runs(runs, base, metrics, n_resamples, seed, alpha)
    if not comparisons:
        raise BenchmarkError("no metric applies to both sides: " + "; ".join(skipped))
    if note := speaker_note(base):
        notes.append(note)
    settings = {
        "dataset": dataset,
        "setup": setup,
        "protocol": choice.protocol if choice else None,
        "metrics": list(metrics),
        "alpha": alpha,
        "n_resamples": n_resamples,
        "seed": seed,
    }
    logged = log_comparison(comparisons, alpha, base, runs, settings)
    return CompareReport(comparisons, skipped, alpha, logged, notes)


def speaker_note(baseline: EvaluatedRun) -> str | None:
    """What the speaker bootstrap could not cluster: the baseline's utterances with no speaker in
    its corpus's manifests here (each is then a cluster of its own); None when every one has one."""
    speakers = baseline.speakers
    missing = [record.id for record in baseline.records if record.key not in speakers]
    if not missing:
        return None
    dataset = baseline.run.data.tags.get(tag.DATASET, "demo")
    where = f"in the '{dataset}' manifests"
    if not speakers:
        where = f"here: the '{dataset}' manifests are not prepared"
    return (
        f"{len(missing)} of {len(baseline.records)} utterances have no speaker {where} (e.g. "
        f"{', '.join(missing[:3])}); each is a cluster of its own in the speaker bootstrap, whose "
        "interval is then too narrow if they share speakers"
    )


# ---------------------------------------------------------------------------------------------
# Tables and logging
# ---------------------------------------------------------------------------------------------

# The effect size (d_z) is left to the CSV and the logged metrics, to keep the table readable.
COLUMNS = (
    "metric", "system", "run", "value", "baseline", "diff", "95% CI", "speaker CI", "MDE", "p", "Holm p",
    "significant",
)  # fmt: skip


def _points(value: float) -> str:
    """Fractions as percentages (points for differences), as in the paper's tables; NaN as "–"."""
    return "–" if math.isnan(value) else f"{100 * value:.2f}"


def _interval(ci: tuple[float, float]) -> str:
    return "–" if math.isnan(ci[0]) else f"[{_points(ci[0])}, {_points(ci[1])}]"


def _finite(value: float) -> float | None:
    """A number to log, None (not logged) for NaN: an interval over fewer than 2 speakers."""
    return None if math.isnan(value) else value


def _span(values: set[int]) -> str:
    return f"{min(values)}" if len(values) == 1 else f"{min(values)}-{max(values)}"


def resampled(comparisons: Sequence[Comparison]) -> str:
    """What the cluster bootstrap resampled, for the table's title."""
    tests = [c.test for c in comparisons]
    what = "speakers"
    if any(t.unclustered for t in tests):
        what = "clusters (speakers; utterances with no speaker alone)"
    text = f"speaker-cluster bootstrap over {_span({t.clusters for t in tests})} {what}"
    if any(t.replicates > 1 for t in tests):
        text += f", crossed with {_span({t.replicates for t in tests})} seeds (or folds × seeds)"
    return text


def table_rows(comparisons: Sequence[Comparison], alpha: float) -> list[list[str]]:
    """The comparison table as text cells (COLUMNS), for the terminal and the markdown artifact."""
    rows = []
    for c in comparisons:
        t = c.test
        rows.append(
            [
                t.metric, c.system, c.run_id[:8], _points(t.value), _points(t.baseline_value),
                f"{100 * t.diff:+.2f}", _interval(t.ci), _interval(t.cluster_ci), _points(t.mde),
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
                "ci_high": c.test.ci[1], "cluster_ci_low": c.test.cluster_ci[0],
                "cluster_ci_high": c.test.cluster_ci[1], "cluster_se": c.test.cluster_se,
                "clusters": c.test.clusters, "replicates": c.test.replicates,
                "unclustered": c.test.unclustered, "effect_size": c.test.effect_size, "mde": c.test.mde,
                "p": c.test.p, "p_holm": c.test.p_holm, "significant": c.test.p_holm < alpha,
            }
            for c in comparisons
        ]
    )  # fmt: skip


def comparison_title(comparisons: Sequence[Comparison], alpha: float) -> str:
    """The table's title: the baseline, the test, and what each interval resampled."""
    baseline = comparisons[0]
    return (
        f"against {baseline.baseline} (run {baseline.baseline_run_id[:8]}): paired one-sided t-test, "
        f"Holm across {len(comparisons)} comparisons, alpha {alpha:g}; 95% CI: utterance bootstrap; "
        f"speaker CI: {resampled(comparisons)}; MDE: the smallest difference detected with 80% power"
    )


def comparison_table(report: CompareReport) -> Table:
    table = Table(title=comparison_title(report.comparisons, report.alpha))
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
                 "ci_high": t.ci[1], "cluster_ci_low": _finite(t.cluster_ci[0]),
                 "cluster_ci_high": _finite(t.cluster_ci[1]), "cluster_se": _finite(t.cluster_se),
                 "effect_size": t.effect_size, "mde": _finite(t.mde), "clusters": t.clusters,
                 "replicates": t.replicates, "p": t.p, "p_holm": t.p_holm}  # fmt: skip
        metrics |= {f"compare.{c.system}.{t.metric}.{name}": value for name, value in stats.items()}
    with run_context(f"compare vs {baseline_label}", tags=tags, params=params) as run:
        log_metrics(metrics)
        log_text(comparisons_frame(comparisons, alpha).to_csv(index=False), "comparison.csv")
        title = comparison_title(comparisons, alpha)
        log_text(f"{title}\n\n{markdown_table(COLUMNS, table_rows(comparisons, alpha))}\n", "comparison.md")
    return run.info.run_id
