"""What the CLI prints (rich tables and lines), kept apart so that the modules only return data."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from benchmark.config import DatasetCard, SystemConfig
from benchmark.data.prepare import PrepareReport, SplitSummary, is_prepared
from benchmark.environment import Check
from benchmark.errors import BenchmarkError
from benchmark.explain.expert_cues import CUE_NAMES

if TYPE_CHECKING:
    from benchmark.data.audit import AuditReport
    from benchmark.study.coordinator import StudySummary
    from benchmark.tracking.store import MlflowConfig
    from benchmark.workflows.compare import CompareReport
    from benchmark.workflows.evaluate import EvaluationSummary
    from benchmark.workflows.explain import Explained, RunExplanations
    from benchmark.workflows.predict import FilePrediction
    from benchmark.workflows.ui import ReadyUI

# Piped output (CI logs, `| less`) gets a wide fixed width instead of rich's 80 columns, so tables
# with paths stay readable.
console = Console(width=None if sys.stdout.isatty() else 160)
error_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def summary_table(title: str, labels: Sequence[str], rows: Sequence[SplitSummary]) -> Table:
    """Utterances, hours and per-label counts per split and group, with a total row."""
    extra = sorted({label for row in rows for label in row.labels} - set(labels))
    columns = [*labels, *extra]
    table = Table(title=title)
    for header in ("split", "group", "utterances", "hours", *columns):
        table.add_column(header, justify="left" if header in ("split", "group") else "right")
    for row in rows:
        table.add_row(
            row.split,
            row.group,
            str(row.utterances),
            f"{row.hours:.3f}",
            *(str(row.labels[c]) for c in columns),
        )
    table.add_section()
    table.add_row(
        "total",
        "",
        str(sum(r.utterances for r in rows)),
        f"{sum(r.hours for r in rows):.3f}",
        *(str(sum(r.labels[c] for r in rows)) for c in columns),
    )
    return table


def datasets_table(cards: Mapping[str, DatasetCard], files: Mapping[str, Path]) -> Table:
    """One row per dataset card: what it holds, its protocol, and whether its manifests exist."""
    table = Table(title="datasets")
    for header in ("name", "title", "tasks", "labels", "protocol", "prepared", "card"):
        table.add_column(header)
    for name, card in cards.items():
        table.add_row(
            name, card.title, ",".join(card.tasks), str(len(card.labels) or "-"), card.protocol.kind,
            "yes" if is_prepared(card) else "no", str(files[name]),
        )  # fmt: skip
    return table


def print_prepare_report(report: PrepareReport) -> None:
    """The new manifests per split, the labels dropped on purpose and the first rows skipped."""
    card = report.card
    title = f"{card.title}: manifests in {report.out_dir}"
    console.print(summary_table(title, card.labels, report.summaries))
    if report.dropped:
        dropped = ", ".join(f"{label}={count}" for label, count in sorted(report.dropped.items()))
        console.print(f"dropped on purpose (labels outside the task): {dropped}")
    if report.issues:
        console.print(
            f"[yellow]skipped {len(report.issues)} bad row(s)[/]; listed in {report.out_dir / 'issues.tsv'}"
        )
        for issue in report.issues[:5]:
            console.print(f"  {issue}")


AUDIT_EXAMPLES = 3  # findings shown per kind under the counts


def print_audit(report: AuditReport, out: Path) -> None:
    """`data audit`: findings per kind and corpus pair, the first few of each kind, the TSV written."""
    from benchmark.data.audit import KINDS

    where = f"{', '.join(report.corpora)} ({report.utterances} utterances)"
    if not report.findings:
        console.print(f"no training-test overlap among {where}; wrote {out} (header only)", soft_wrap=True)
        return
    counts = Table(title=f"training-test overlap among {where}")
    for header in ("kind", "training corpus", "evaluated corpus", "findings"):
        counts.add_column(header, justify="right" if header == "findings" else "left")
    for (kind, train, test), count in sorted(report.counts().items(), key=lambda i: KINDS.index(i[0][0])):
        counts.add_row(kind, train, test, str(count))
    console.print(counts)
    examples = Table(title=f"first findings of each kind (all {len(report.findings)} in {out})")
    for header in ("kind", "training utterance", "evaluated utterance", "detail"):
        examples.add_column(header)
    for kind in KINDS:
        for f in [f for f in report.findings if f.kind == kind][:AUDIT_EXAMPLES]:
            examples.add_row(
                kind,
                escape(f"{f.train_corpus} {f.train_part} {f.train_id}"),
                escape(f"{f.test_corpus} {f.test_part} {f.test_id}"),
                escape(f.detail),
            )
    console.print(examples)
    console.print(f"wrote {out}: {len(report.findings)} finding(s)", soft_wrap=True)


def checks_table(checks: Sequence[Check]) -> Table:
    marks = {True: "[green]ok[/]", False: "[red]missing[/]", None: "[dim]-[/]"}
    table = Table(title="benchmark doctor")
    for header in ("section", "item", "status", "detail"):
        table.add_column(header)
    section = None
    for check in checks:
        if section is not None and check.section != section:
            table.add_section()
        table.add_row(
            check.section if check.section != section else "", check.name, marks[check.ok], check.detail
        )
        section = check.section
    return table


def systems_table(systems: Mapping[str, SystemConfig], files: Mapping[str, Path]) -> Table:
    """One row per system, in the order given: its paper rows, what it predicts and how it trains.

    Targets read T(ranscript) D(escriptor) E(motion), '-' where absent; stages are the task
    mixtures of each stage, separated by '|'; beta is shown only where an IB bottleneck exists.
    """
    table = Table(title="systems (models/)")
    for header in ("name", "T1", "T2", "T3", "kind", "targets", "branches", "schedule", "stages", "beta"):
        table.add_column(header, no_wrap=True)
    table.add_column("yaml")
    for name, config in systems.items():
        targets = "".join(
            letter if target in config.targets else "-"
            for letter, target in zip("TDE", ("transcript", "descriptor", "emotion"), strict=True)
        )
        if config.kind == "ssl":
            branches = "ssl"
        elif config.disentangle:
            branches = "content+descriptor"
        else:
            branches = "single"
        has_bottleneck = config.kind == "llm" and config.disentangle
        table.add_row(
            name,
            config.paper.table1 or "",
            config.paper.table2 or "",
            config.paper.table3 or "",
            config.kind,
            targets,
            branches,
            config.schedule,
            " | ".join("+".join(stage.tasks) for stage in config.stages) or "-",
            f"{config.beta:g}" if has_bottleneck else "-",
            str(files[name]),
        )
    return table


def metrics_table(title: str, columns: Mapping[str, Mapping[str, float | str]]) -> Table:
    """One row per metric, one column per fold or run; numbers are formatted by `_metric`
    (SER, ASR and SED scores as percentages), strings are shown as they are."""
    names = sorted({name for scores in columns.values() for name in scores})
    table = Table(title=title)
    table.add_column("metric")
    for column in columns:
        table.add_column(column, justify="right")
    for name in names:
        cells = [scores.get(name, "-") for scores in columns.values()]
        table.add_row(name, *(cell if isinstance(cell, str) else _metric(name, cell) for cell in cells))
    return table


def results_table(summary) -> Table:
    """Metrics per fold, plus their mean ± standard deviation when there are several folds. With
    seeds a fold's cell is its mean ± std over the seeds, and the interval of the mean follows."""
    columns: dict[str, Mapping[str, float | str]] = dict(summary.fold_metrics)
    if summary.fold_std:
        columns = {
            fold: {n: f"{_metric(n, v)} ± {_metric(n, summary.fold_std[fold][n])}" for n, v in values.items()}
            for fold, values in summary.fold_metrics.items()
        }
    if len(columns) > 1 or summary.fold_std:
        columns["mean ± std"] = {
            n: f"{_metric(n, summary.mean[n])} ± {_metric(n, summary.std[n])}" for n in summary.mean
        }
    if summary.interval:
        columns["95% interval"] = {
            n: f"[{_metric(n, low)}, {_metric(n, high)}]" for n, (low, high) in summary.interval.items()
        }
    return metrics_table(f"{summary.system.name} (beta {summary.system.beta:g})", columns)


def evaluation_table(summary: EvaluationSummary, dataset: str) -> Table:
    """The metrics of a zero-shot evaluation, titled by the run and fold whose model was scored."""
    title = f"run {summary.source_run} (fold {summary.source_fold}) on {dataset}"
    return metrics_table(title, summary.metrics)


def print_run_link(run_id: str, kind: str = "") -> None:
    """Where the MLflow run just logged can be browsed."""
    kind = f" (kind={kind})" if kind else ""
    console.print(f"MLflow run {run_id}{kind}; browse it with `python -m benchmark ui`")


def _param(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def print_study(summary: StudySummary) -> None:
    """The trials table of a study, its best trial, its refit runs, and how to browse it."""
    from benchmark.study.report import dashboard_command, trial_rows

    spec, metric = summary.spec, summary.spec.objective.metric
    table = Table(
        title=f"study {spec.name} ({summary.study.study_name}): {metric}, {spec.objective.direction}"
    )
    for column in ("trial", "state", *spec.params, metric, "seconds", "MLflow run"):
        table.add_column(column, justify="right" if column in ("trial", metric, "seconds") else "left")
    for row in trial_rows(summary.study):
        state = row.state + (f" (retry of {row.retry_of})" if row.retry_of is not None else "")
        table.add_row(
            str(row.number), state, *(_param(row.params.get(name, "")) for name in spec.params),
            _metric(metric, row.value) if row.value is not None else "–",
            f"{row.seconds:.0f}" if row.seconds is not None else "–", row.run_id,
        )  # fmt: skip
    console.print(table)
    from optuna.trial import TrialState

    completed = summary.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if completed:
        best = summary.study.best_trial
        shown = ", ".join(f"{name}={_param(value)}" for name, value in best.params.items())
        console.print(
            f"best trial {best.number}: {shown}; {metric} {_metric(metric, best.value)}", markup=False
        )
    if not summary.complete:
        console.print(f"the study is short of its {spec.n_trials} trials: run the same command to continue")
    elif not completed:
        console.print("no trial completed (all pruned or failed): nothing to refit", markup=False)
    elif not summary.refits:
        console.print("no refit yet: the same command without --no-refit trains and tests it", markup=False)
    for number, run_id in sorted(summary.refits.items()):
        console.print(f"refit of trial {number} on the test part: MLflow run {run_id}", markup=False)
    journal = summary.storage.journal_path if summary.storage.is_journal else None
    console.print(f"dashboard: {dashboard_command(summary.storage.display(), journal)}", markup=False)


def print_compare_notes(report: CompareReport) -> None:
    """What `compare` skipped or wants read with its table, and the run it logged."""
    for note in report.skipped:
        console.print(f"skipped: {note}", markup=False)
    for note in report.notes:
        console.print(f"note: {note}", markup=False, soft_wrap=True)
    print_run_link(report.logged_run_id, "comparison")


def print_ui_ready(config: MlflowConfig, ui: ReadyUI) -> None:
    """Where the MLflow UI serves the configured store, once it answers; served beyond this
    machine, the warning that it has no login (one line, on standard error)."""
    if ui.warning:
        error_console.print(f"warning: {ui.warning}", markup=False, highlight=False, soft_wrap=True)
    others = [f"  from other machines: {', '.join(ui.remote_urls)}"] if ui.remote_urls else []
    for line in (
        f"MLflow UI of {config.tracking_uri}: {ui.url}",
        *others,
        f"  runs of experiment '{config.experiment}': {ui.runs_url}",
        f"  server output: {ui.log}",
        "Ctrl-C stops it.",
    ):
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def print_error(err: BenchmarkError) -> None:
    """A user mistake as one line and its hint; soft_wrap keeps each one line however long, as a
    log or a test reads it."""
    error_console.print(f"[bold red]error:[/] {escape(err.message)}", highlight=False, soft_wrap=True)
    if err.hint:
        error_console.print(f"  hint: {err.hint}", highlight=False, markup=False, soft_wrap=True)


def print_stopped(why: str, killed_runs: Sequence[str]) -> None:
    """Why the command stopped early, and the MLflow runs that were marked KILLED."""
    killed = f"; MLflow run(s) marked KILLED: {', '.join(killed_runs)}" if killed_runs else ""
    error_console.print(f"{why}{killed}", highlight=False, markup=False, soft_wrap=True)


def _metric(name: str, value: float) -> str:
    """Fractions as percentages (the paper's tables); counts such as `asr.skipped` as they are."""
    return f"{value:g}" if name.endswith("skipped") else f"{100 * value:.1f}"


def _number(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def print_predictions(predictions: Sequence[FilePrediction]) -> None:
    """`predict RUN_ID PATH...`: one row per file, the most likely labels where there are scores."""
    if not predictions:
        return
    first = predictions[0]
    table = Table(title=f"predictions of run {first.run} (fold {first.fold})")
    for column in ("file", "s", "emotion", "p", "transcript", "descriptor"):
        table.add_column(column, justify="right" if column in ("s", "p") else "left", overflow="fold")
    for prediction in predictions:
        p = (prediction.probabilities or {}).get(prediction.emotion or "")
        table.add_row(
            prediction.file, f"{prediction.duration:.1f}", prediction.emotion or "– (no label named)",
            _number(p, 3), prediction.transcript or "–", prediction.descriptor or "–",
        )  # fmt: skip
    console.print(table)


def print_failures(failures: Sequence[str], predicted: int) -> None:
    """One line per input that could not be predicted, on standard error, and the count."""
    for line in failures:
        error_console.print(f"[bold red]failed:[/] {escape(line)}", highlight=False, soft_wrap=True)
    if failures:
        error_console.print(f"{len(failures)} failed, {predicted} predicted", highlight=False, soft_wrap=True)


def print_explanation(explained: Explained, run_id: str) -> None:
    """`explain RUN_ID UTT_ID|PATH`: the utterance or file and its prediction, each descriptor claim
    against the cue inside the salient windows, the windows with their cues, and the cue verdicts."""
    explanation = explained.explanation
    row, record = explanation.row, explanation.record
    if explained.prediction is None:
        console.print(f"utterance {row.id} (speaker {row.speaker}, fold {explanation.fold})", markup=False)
        console.print(f"  transcript: {row.transcript}  ->  {record.hyp_transcript or '–'}", markup=False)
    else:
        console.print(f"file {row.audio} ({row.duration:.1f} s, fold {explanation.fold})", markup=False)
        console.print(f"  transcript: {record.hyp_transcript or '–'}", markup=False)
    console.print(f"  descriptor: {record.hyp_descriptor or '–'}", markup=False)
    console.print(f"  emotion:    {record.hyp_emotion} (reference {row.emotion or '–'})", markup=False)
    if explained.prediction is not None and explained.prediction.probabilities:
        ranked = sorted(explained.prediction.probabilities.items(), key=lambda item: -item[1])
        console.print("  p(label):   " + ", ".join(f"{k} {v:.3f}" for k, v in ranked), markup=False)
    console.print(f"  baseline:   {explanation.baseline.source}", markup=False)

    claims = Table(title="descriptor claims against the cues inside the salient windows")
    for column in ("claim", "level said", "level measured", "cue", "value", "z", "verdict"):
        claims.add_column(column)
    for claim in explanation.claims.claims:
        claims.add_row(
            claim.attribute, claim.claimed, claim.measured or "–", claim.cue, _number(claim.value),
            _number(claim.z), claim.verdict,
        )  # fmt: skip
    console.print(claims if explanation.claims.claims else "the descriptor makes no checkable claim")

    saliency = explanation.saliency
    windows = Table(title=f"top {len(explanation.windows)} windows by {saliency.method} of {saliency.target}")
    cues = list(explanation.window_cues[0]) if explanation.window_cues else []  # frame cues only
    for column in ("start s", "end s", "saliency", *cues):
        windows.add_column(column, justify="right")
    for window, values in zip(explanation.windows, explanation.window_cues, strict=True):
        windows.add_row(
            f"{window.start:.2f}", f"{window.end:.2f}", f"{window.saliency:.3g}",
            *(_number(values.get(cue)) for cue in cues),
        )  # fmt: skip
    console.print(windows)

    verdicts = Table(
        title=f"cues inside vs outside the windows, against the expert table ({record.hyp_emotion})"
    )
    for column in ("cue", "inside", "outside", "z vs speaker", "expected", "verdict"):
        verdicts.add_column(column)
    for cue in explanation.evidence.cues.values():
        expected = "–" if cue.expected is None else cue.expected + (" (weak)" if cue.weak else "")
        verdicts.add_row(
            CUE_NAMES.get(cue.cue, cue.cue), _number(cue.inside), _number(cue.outside), _number(cue.z),
            expected, cue.verdict or "–",
        )  # fmt: skip
    console.print(verdicts)
    deletion = explanation.deletion
    console.print(
        f"p({record.hyp_emotion}) {deletion.original:.3f}; with the windows occluded {deletion.top:.3f}, "
        f"with as many random windows occluded {deletion.random:.3f}",
        markup=False,
    )
    if explained.figure:
        console.print(f"figure logged to run {run_id}: {explained.figure}", markup=False)
    if explained.page:
        console.print(f"page logged to run {run_id}: {explained.page}", markup=False)


def print_run_explanations(result: RunExplanations, html_dir: Path | None = None) -> None:
    """`explain RUN_ID --all`: the quality metrics logged to the run, and cue plausibility by emotion."""
    table = Table(title=f"explanation quality of run {result.run_id} ({len(result.records)} utterances)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in result.metrics.items():
        table.add_row(name, f"{value:.4g}")
    console.print(table)
    by_emotion = Table(title="cue plausibility by predicted emotion (established cues)")
    for column in ("emotion", "agrees", "disagrees", "neutral", "share"):
        by_emotion.add_column(column, justify="left" if column == "emotion" else "right")
    for emotion, counts in result.summary["plausibility"]["per_emotion"].items():
        share = counts["share"]
        by_emotion.add_row(
            emotion, str(counts["agrees"]), str(counts["disagrees"]), str(counts["neutral"]),
            "–" if share is None else f"{share:.1%}",
        )  # fmt: skip
    console.print(by_emotion)
    console.print(f"logged to run {result.run_id} under explanations/ (utterances.jsonl, summary.json, "
                  "cues_by_emotion.png)", markup=False)  # fmt: skip
    if html_dir is not None:
        console.print(f"pages: {html_dir / 'index.html'} (logged under explanations/html)", markup=False)
