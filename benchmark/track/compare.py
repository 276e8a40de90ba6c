"""`python -m benchmark compare`: paired one-sided tests of runs against a baseline, logged to MLflow.

A paired test is only meaningful between runs that saw the same utterances the same way, so every
comparison stays within one corpus setup (the `setup` tag of `benchmark.track.protocol`: dataset,
train_with, validation, backbone, folds). The system config may differ between the runs compared;
the setup may not. Which runs are compared:

- the baseline, named by system, is the latest FINISHED top-level *registry-recipe* run of that
  system on the dataset (`--dataset`, else the one dataset it has runs on), whatever its setup:
  the newest real run is what a user means by "the baseline", and its setup then fixes the setup
  of the whole comparison. When the system also has runs of other setups, a note says so, and
  `--protocol DIGEST` chooses the setup instead (see below).
- each RUN_OR_SYSTEM named by system is the latest finished registry-recipe run of that system in
  the baseline's setup. With none, every system's latest such run in that setup is compared (one
  per system and β).
- a quick run (`recipe=custom`: `run --epochs` or `--set`) never stands in for a system's real
  run; it is compared when named by run id, or with `--protocol` set to its protocol digest.
- `--protocol DIGEST` takes a `setup` or `protocol` tag value, or a unique prefix of one. A setup
  restricts every name to that setup; a protocol restricts them to its setup and lets the runs of
  that protocol (custom ones included) stand for their system.
- an MLflow run id is always taken as given (a finished top-level run), but two runs of
  different setups are refused, with the fields in which they differ (`differing_fields`). Runs
  logged before setups were tagged pair only with such runs of the same dataset and backbone.

Every number is recomputed from the runs' pooled prediction records (`predictions/pooled.jsonl`),
never read from logged metrics, with the per-utterance scores of `benchmark.eval.stats` (a metric
over several folds is their mean, as `run` logs it).

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
from benchmark.eval.captioning import LANGUAGE_MISMATCH, LANGUAGES, Language, available_caption_metrics
from benchmark.eval.metrics import UtteranceScores, reference_languages
from benchmark.eval.stats import (
    CAPTION_SCORE_NAMES,
    SED_METRICS,
    MetricUnavailable,
    PairedTest,
    caption_utterance_scores,
    metric_spec,
    paired_test,
    per_utterance_scores,
    with_holm,
)
from benchmark.registry import load_dataset_card
from benchmark.track.protocol import describe_setup, differing_fields
from benchmark.track.records import PredictionRecord, load_run_records
from benchmark.track.tracking import (
    FINISHED,
    load_mlflow_config,
    log_metrics,
    log_text,
    run_context,
    tracking_setup,
)

RUN_ID = re.compile(r"[0-9a-f]{32}")
LEGACY = "legacy"
DEFAULT_METRICS = ("ser.ua", "asr.wer")


@dataclass(frozen=True)
class EvaluatedRun:
    """A top-level `benchmark run` run with its pooled prediction records."""

    run: Run
    records: list[PredictionRecord]
    _scores: dict[str, UtteranceScores] = field(default_factory=dict, repr=False, compare=False)
    # Captioning scores that cannot be had for this run, with the reason (asked once).
    _unavailable: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

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
        """Per-utterance scores, computed once per metric (a leaderboard reuses them per baseline).

        Captioning scores (`sed.*`, `sed.language_mismatch`, `sed.<lang>.*`) come from one
        scoring pass over all the run's descriptors, each in its reference's language.
        """
        if metric in self._unavailable:
            raise MetricUnavailable(self._unavailable[metric])
        if metric in CAPTION_SCORE_NAMES and metric not in self._scores:
            # asked before scoring: an unavailable metric must not re-run the other scorers
            if reason := self._caption_unavailable(metric):
                self._unavailable[metric] = reason
                raise MetricUnavailable(reason)
            self._scores.update(caption_utterance_scores(self.records, self.language))
            for name in CAPTION_SCORE_NAMES:
                if name not in self._scores:  # not applicable here, or its scorer failed (e.g. SPICE)
                    self._unavailable[name] = self._caption_unavailable(name) or (
                        f"{name} could not be computed for run {self.run_id} (see the scorer's error above)"
                    )
            if metric in self._unavailable:
                raise MetricUnavailable(self._unavailable[metric])
        if metric not in self._scores:
            self._scores[metric] = per_utterance_scores(metric, self.records, self.labels)
        return self._scores[metric]

    def _caption_unavailable(self, metric: str) -> str | None:
        """Why the captioning score `metric` cannot be had for this run, judged without scoring
        (a per-language name on a run with one language, a scorer missing here); None if it can."""
        languages = self.languages
        if metric not in (*SED_METRICS, LANGUAGE_MISMATCH):  # a per-language name, sed.<lang>.<metric>
            _, language, name = metric.split(".", 2)
            if len(languages) < 2:
                which = f"all in '{languages[0]}'" if languages else "none (no reference descriptor)"
                return (
                    f"{metric} cannot be computed for run {self.run_id}: per-language scores exist only "
                    f"when the references have several languages, and its are {which}; use sed.{name}"
                )
            if language not in languages:
                return f"{metric} cannot be computed for run {self.run_id}: no reference is in '{language}'"
            metric, languages = f"sed.{name}", [language]
        for language in languages if metric in SED_METRICS else ():
            if reason := available_caption_metrics(language)[metric]:
                return f"{metric} cannot be computed here: {reason}"
        return None

    @property
    def language(self) -> Language:
        """The language of the run's corpus: that of records written without a `language`."""
        return load_dataset_card(self.run.data.tags.get("dataset", "demo")).language

    @property
    def labels(self) -> list[str]:
        """The emotion labels of the run's corpus, in its card's order: the order `run` scored UA in."""
        return list(load_dataset_card(self.run.data.tags.get("dataset", "demo")).labels)

    @property
    def languages(self) -> list[Language]:
        """The reference languages of the records with a reference descriptor, in `LANGUAGES` order."""
        found = set(reference_languages([r for r in self.records if r.ref_descriptor], self.language))
        return [language for language in LANGUAGES if language in found]


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


# ---------------------------------------------------------------------------------------------
# Which runs: one setup, the registry recipe unless asked otherwise (see the module docstring)
# ---------------------------------------------------------------------------------------------


def setup_of(run: Run) -> str:
    """The run's `setup` tag; a run logged before setups were tagged gets `legacy:<dataset>:<backbone>`,
    so such runs pair only with each other, and never across corpora or backbones."""
    tags = run.data.tags
    return tags.get("setup") or f"{LEGACY}:{tags.get('dataset', '?')}:{tags.get('backbone', '?')}"


def is_legacy(run: Run) -> bool:
    return "setup" not in run.data.tags


def is_registry(run: Run) -> bool:
    """Whether the run used the registry's system config (a legacy run, untagged, counts as one)."""
    return run.data.tags.get("recipe") != "custom"


def describe_run_setup(run: Run) -> str:
    """The run's setup in words (`protocol.describe_setup`), for headings and refusals."""
    tags = run.data.tags
    if is_legacy(run):
        return (
            f"dataset {tags.get('dataset', '?')}, backbone {tags.get('backbone', '?')} "
            "(no setup tag: logged before setups were recorded)"
        )
    return describe_setup(tags)


def _short(run: Run) -> str:
    return f"{run.info.run_id[:8]}…"


def finished_runs(system: str | None = None, dataset: str | None = None) -> list[Run]:
    """Every FINISHED top-level run of a system (of `system`, on `dataset`), newest first.

    Unlike `tracking.find_runs`, no run is dropped for a newer one of the same system and β: a
    newer quick run (or one of another setup) must not hide the real run of a cell.
    """
    experiment_id = tracking_setup(load_mlflow_config())
    clauses = [f"tags.system = '{system}'"] if system else []
    clauses += [f"tags.dataset = '{dataset}'"] if dataset else []
    clauses += [f"attributes.status = '{FINISHED}'", "tags.`mlflow.parentRunId` IS NULL"]
    client = MlflowClient()
    runs: list[Run] = []
    page_token = None
    while True:  # mlflow returns no token with the last page
        page = client.search_runs(
            [experiment_id],
            filter_string=" and ".join(clauses),
            order_by=["attributes.start_time DESC"],
            page_token=page_token,
        )
        runs += [run for run in page if "system" in run.data.tags]  # not comparison runs
        page_token = page.token
        if not page_token:
            return sorted(runs, key=newest_first)


def newest_first(run: Run) -> tuple[int, str]:
    """Sort key, newest first (the run id breaks ties of one millisecond)."""
    return (-(run.info.start_time or 0), run.info.run_id)


@dataclass(frozen=True)
class ProtocolChoice:
    """What `--protocol DIGEST` named: a setup, or a protocol (then `protocol` is set and `setup` is
    its setup). `example` is a run of that setup, to describe it and to name differing fields."""

    setup: str
    protocol: str | None
    example: Run = field(repr=False, compare=False)

    def prefers(self, run: Run) -> bool:
        return self.protocol is not None and run.data.tags.get("protocol") == self.protocol


def choose_protocol(digest: str, runs: Sequence[Run]) -> ProtocolChoice:
    """The setup or protocol of `runs` whose digest is `digest` or starts with it (unique)."""
    wanted = digest.strip().lower()
    found: dict[str, tuple[str, Run]] = {}  # tag value -> (tag, a run carrying it)
    for run in runs:
        for tag in ("setup", "protocol"):
            value = run.data.tags.get(tag, "")
            if wanted and value.startswith(wanted):
                found.setdefault(value, (tag, run))
    if not found:
        known = list(dict.fromkeys(describe_run_setup(run) for run in runs if not is_legacy(run)))
        raise BenchmarkError(
            f"no finished run has a setup or protocol digest starting with '{digest}'",
            hint=("setups: " + "; ".join(known[:5])) if known else "no run carries a setup tag yet",
        )
    if len(found) > 1:
        listed = ", ".join(f"{tag} {value}" for value, (tag, _) in sorted(found.items()))
        raise BenchmarkError(f"'{digest}' is the start of several digests: {listed}", hint="give more of it")
    ((value, (tag, run)),) = found.items()
    return ProtocolChoice(setup_of(run), value if tag == "protocol" else None, run)


def refuse_unpaired(run: Run, other: Run) -> None:
    """Raise unless the two runs share a setup, naming the fields in which they differ."""
    if setup_of(run) == setup_of(other):
        return
    fields = differing_fields(run.data.tags, other.data.tags)
    fields = fields or [f"setup ({setup_of(run)} vs {setup_of(other)})"]
    untagged = [f"run {_short(r)} was logged without setup tags" for r in (run, other) if is_legacy(r)]
    raise BenchmarkError(
        f"runs {_short(run)} and {_short(other)} differ in {', '.join(fields)}"
        + (f" ({'; '.join(untagged)})" if untagged else ""),
        hint="a paired test needs runs of one setup (`--protocol DIGEST` chooses a setup, by digest)",
    )


def _matches(run: Run, backbone: str | None, beta: float | None = None, setup: str | None = None) -> bool:
    tags = run.data.tags
    return (
        (backbone is None or tags.get("backbone") == backbone)
        and (beta is None or math.isclose(float(tags.get("beta", "nan")), beta))
        and (setup is None or setup_of(run) == setup)
    )


def pick_latest(runs: Sequence[Run], choice: ProtocolChoice | None = None) -> Run | None:
    """The newest run of the chosen protocol if any, else the newest registry-recipe run, or None."""
    preferred = [run for run in runs if choice is not None and choice.prefers(run)]
    eligible = preferred or [run for run in runs if is_registry(run)]
    return min(eligible, key=newest_first, default=None)


def latest_run(
    system: str,
    dataset: str | None = None,
    backbone: str | None = None,
    beta: float | None = None,
    setup: str | None = None,
    choice: ProtocolChoice | None = None,
) -> Run | None:
    """The run a system name stands for (`pick_latest`) among its finished top-level runs matching
    the filters (`setup`, else the choice's setup, else any), or None.

    Without a dataset, runs on several datasets are ambiguous (they cannot be paired) and refused.
    """
    setup = setup or (choice.setup if choice else None)
    runs = [run for run in finished_runs(system, dataset) if _matches(run, backbone, beta, setup)]
    datasets = sorted({run.data.tags.get("dataset", "?") for run in runs})
    if dataset is None and len(datasets) > 1:
        raise BenchmarkError(
            f"system '{system}' has runs on several datasets ({', '.join(datasets)})",
            hint="choose one with --dataset",
        )
    return pick_latest(runs, choice)


def resolve_run(
    ref: str,
    dataset: str | None = None,
    backbone: str | None = None,
    setup: str | None = None,
    choice: ProtocolChoice | None = None,
) -> Run:
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
    run = latest_run(ref, dataset, backbone, setup=setup, choice=choice)
    if run is None:
        raise _no_run(ref, dataset, backbone, setup or (choice.setup if choice else None))
    return run


def _no_run(system: str, dataset: str | None, backbone: str | None, setup: str | None) -> BenchmarkError:
    """Why a system name stands for no run: none at all, none of the setup, or only custom ones."""
    where = f" on '{dataset}'" if dataset else ""
    runs = [run for run in finished_runs(system, dataset) if _matches(run, backbone)]
    if not runs:
        return BenchmarkError(
            f"no finished run of system '{system}'{where}",
            hint=f"train one with `python -m benchmark run --system {system}`, or pass an MLflow run id",
        )
    in_setup = [run for run in runs if setup is None or setup_of(run) == setup]
    if not in_setup:
        others = "; ".join(dict.fromkeys(describe_run_setup(run) for run in runs))
        return BenchmarkError(
            f"no finished run of system '{system}'{where} in the setup {setup}",
            hint=f"its runs are of other setups ({others}); a paired test needs one setup",
        )
    custom = in_setup[0]  # all of them are custom: none was picked
    protocol = custom.data.tags.get("protocol", "?")
    return BenchmarkError(
        f"system '{system}' has only custom-recipe runs{where}"
        + (f" in the setup {setup}" if setup else "")
        + f" (the latest: run {custom.info.run_id}, protocol {protocol})",
        hint=f"a quick run stands for a system only when asked for: pass --protocol {protocol} or its run id",
    )


def latest_per_system(
    runs: Sequence[Run], setup: str, backbone: str | None = None, choice: ProtocolChoice | None = None
) -> tuple[list[Run], list[str]]:
    """Every system's (and β's) run in `setup` (`pick_latest`), and a note for each system that has
    only custom-recipe runs there."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        if _matches(run, backbone, setup=setup):
            groups.setdefault((run.data.tags["system"], run.data.tags.get("beta", "")), []).append(run)
    picked, notes = [], []
    for (system, beta), group in groups.items():
        if (run := pick_latest(group, choice)) is not None:
            picked.append(run)
        else:
            protocol = min(group, key=newest_first).data.tags.get("protocol", "?")
            notes.append(
                f"{system} (β={beta}) has only custom-recipe runs in this setup: not compared "
                f"(--protocol {protocol} includes its latest)"
            )
    return picked, notes


def resolve_baseline(
    ref: str, dataset: str | None, backbone: str | None, choice: ProtocolChoice | None
) -> tuple[Run, list[str]]:
    """The baseline run (see the module docstring) and a note when its system has other setups."""
    run = resolve_run(ref, dataset, backbone, choice=choice)
    if choice is not None:
        refuse_unpaired(run, choice.example)  # an explicit run id of another setup
        return run, []
    if RUN_ID.fullmatch(ref):
        return run, []
    others = {
        setup_of(other)
        for other in finished_runs(ref, run.data.tags.get("dataset"))
        if _matches(other, backbone) and is_registry(other)
    } - {setup_of(run)}
    if not others:
        return run, []
    return run, [
        f"baseline {ref}: run {run.info.run_id}, its latest registry-recipe run, of the setup "
        f"{describe_run_setup(run)}; it also has runs of the setup(s) {', '.join(sorted(others))} "
        "(--protocol DIGEST chooses one)"
    ]


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
    choice = choose_protocol(protocol, finished_runs(dataset=dataset)) if protocol else None
    base_run, notes = resolve_baseline(baseline, dataset, backbone, choice)
    setup = setup_of(base_run)
    dataset = dataset or base_run.data.tags.get("dataset")
    if refs:
        resolved = [resolve_run(ref, dataset, backbone, setup=setup, choice=choice) for ref in refs]
        for run in resolved:
            refuse_unpaired(run, base_run)  # only a run id can be of another setup
    else:  # every system's latest run in the baseline's setup
        resolved, hidden = latest_per_system(finished_runs(dataset=dataset), setup, backbone, choice)
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
    comparisons, skipped = compare_runs(runs, base, metrics, n_resamples, seed)
    if not comparisons:
        raise BenchmarkError("no metric applies to both sides: " + "; ".join(skipped))
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
