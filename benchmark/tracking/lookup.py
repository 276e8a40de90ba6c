"""Finding runs: the search of the store, and the one resolver of run ids and system names.

`compare`, `evaluate` and `leaderboard` name runs the same way, so they resolve them here:

- an MLflow run id is taken as given (`finished_run`): it must have FINISHED, and `compare` and
  `leaderboard` take top-level runs only (a fold run's parent holds the pooled records), while
  `evaluate` also takes the fold run that holds a model (`fold_runs`).
- a system name stands for the latest FINISHED top-level run of that system with the registry's
  recipe (`pick_latest`): a quick run (`recipe=custom`: `run --epochs` or `--set`) never stands
  in for a system's real run unless asked for by its run id or protocol.
- `--protocol DIGEST` (`choose_protocol`) takes a `setup` or `protocol` tag value, or a unique
  prefix of one (`benchmark.tracking.tags`). A setup restricts every name to that setup; a
  protocol restricts them to its setup and lets the runs of that protocol (custom ones included)
  stand for their system.
- runs are paired within one setup only (`refuse_unpaired` names the fields in which two runs
  differ); runs logged before setups were tagged pair only with such runs of the same dataset and
  backbone (`setup_of`).

Searches run in the experiment of the command's `store.tracking_setup`, called once per command
before the first search (it also sweeps stale runs, once per process and experiment).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from benchmark.errors import BenchmarkError
from benchmark.tracking.lifecycle import FAILED, FINISHED, KILLED
from benchmark.tracking.store import current_experiment
from benchmark.tracking.tags import describe_setup, differing_fields

RUN_ID = re.compile(r"[0-9a-f]{32}")
LEGACY = "legacy"
# Tag of runs whose backbone stands in random weights for pretrained ones (`--backbone paper-shape`):
# they measured speed and memory, so no table, comparison or evaluation ever takes them as results.
RANDOM_WEIGHTS_TAG = "random_weights"


def _experiment_id() -> str:
    experiment = current_experiment()
    if experiment is None:
        raise RuntimeError("call tracking_setup(config) before searching runs")
    return experiment.experiment_id


# ---------------------------------------------------------------------------------------------
# Searching the store
# ---------------------------------------------------------------------------------------------


def find_runs(
    system: str | None = None, dataset: str | None = None, status: str | None = FINISHED
) -> list[Run]:
    """Every top-level run of a system (of `system`, on `dataset`, with `status`), newest first.

    No run is dropped for a newer one of the same system and β: a newer quick run (or one of
    another setup) must not hide the real run of a cell; `pick_latest` chooses among them.
    `status=None` includes unfinished and failed runs. Comparison runs carry no `system` tag and
    runs with random weights (`RANDOM_WEIGHTS_TAG`) no results: neither is ever listed.
    """
    clauses = [f"tags.system = '{system}'"] if system else []
    clauses += [f"tags.dataset = '{dataset}'"] if dataset else []
    clauses += [f"attributes.status = '{status}'"] if status else []
    clauses.append("tags.`mlflow.parentRunId` IS NULL")
    clauses.append(f"tags.{RANDOM_WEIGHTS_TAG} IS NULL")
    experiment_id, client = _experiment_id(), MlflowClient()
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


def interrupted_run(tag: str, value: str) -> Run | None:
    """The newest top-level run with tag `tag` = `value` that ended FAILED or KILLED, or None.

    What `--resume` continues, so that the new run can link to it (tag `resumed_from`).
    """
    runs = MlflowClient().search_runs(
        [_experiment_id()],
        filter_string=f"tags.`{tag}` = '{value}' and tags.`mlflow.parentRunId` IS NULL",
        order_by=["attributes.start_time DESC"],
    )
    return next((run for run in runs if run.info.status in (FAILED, KILLED)), None)


def finished_run(run_id: str, top_level: bool = True) -> Run:
    """The FINISHED run `run_id`; with `top_level`, a fold run is refused, naming its parent."""
    try:
        run = MlflowClient().get_run(run_id)
    except MlflowException as err:
        raise BenchmarkError(
            f"no MLflow run with id {run_id} ({str(err).splitlines()[0]})",
            hint="find run ids with `python -m benchmark ui`",
        ) from err
    if top_level and (parent := run.data.tags.get("mlflow.parentRunId")):
        raise BenchmarkError(f"run {run_id} is a fold run; pass its parent run {parent}")
    if run.info.status != FINISHED:
        raise BenchmarkError(
            f"run {run_id} is {run.info.status}, not FINISHED",
            hint="only a finished run has complete results; pass a FINISHED run",
        )
    if run.data.tags.get(RANDOM_WEIGHTS_TAG) == "true":
        raise BenchmarkError(
            f"run {run_id} has random weights (backbone {run.data.tags.get('backbone')}): it measured "
            "training speed and memory, and has no results or model",
            hint="pass a run of the demo, tiny or paper backbone",
        )
    return run


def fold_runs(run: Run) -> dict[str, Run]:
    """The runs holding trained weights, by fold: the run itself if it is a fold run, else its children."""
    if "fold" in run.data.tags:
        return {run.data.tags["fold"]: run}
    children = MlflowClient().search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    return {child.data.tags["fold"]: child for child in children if "fold" in child.data.tags}


# ---------------------------------------------------------------------------------------------
# Setups and recipes
# ---------------------------------------------------------------------------------------------


def newest_first(run: Run) -> tuple[int, str]:
    """Sort key, newest first (the run id breaks ties of one millisecond)."""
    return (-(run.info.start_time or 0), run.info.run_id)


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


# ---------------------------------------------------------------------------------------------
# The run a name stands for
# ---------------------------------------------------------------------------------------------


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
    runs = [run for run in find_runs(system, dataset) if _matches(run, backbone, beta, setup)]
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
    """The finished top-level run a RUN_OR_SYSTEM argument names (see the module docstring)."""
    if RUN_ID.fullmatch(ref):
        return finished_run(ref)
    run = latest_run(ref, dataset, backbone, setup=setup, choice=choice)
    if run is None:
        raise _no_run(ref, dataset, backbone, setup or (choice.setup if choice else None))
    return run


def _no_run(system: str, dataset: str | None, backbone: str | None, setup: str | None) -> BenchmarkError:
    """Why a system name stands for no run: none at all, none of the setup, or only custom ones."""
    where = f" on '{dataset}'" if dataset else ""
    runs = [run for run in find_runs(system, dataset) if _matches(run, backbone)]
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
    """The baseline run of a comparison (`compare`'s docstring) and a note when its system has
    runs of other setups."""
    run = resolve_run(ref, dataset, backbone, choice=choice)
    if choice is not None:
        refuse_unpaired(run, choice.example)  # an explicit run id of another setup
        return run, []
    if RUN_ID.fullmatch(ref):
        return run, []
    others = {
        setup_of(other)
        for other in find_runs(ref, run.data.tags.get("dataset"))
        if _matches(other, backbone) and is_registry(other)
    } - {setup_of(run)}
    if not others:
        return run, []
    return run, [
        f"baseline {ref}: run {run.info.run_id}, its latest registry-recipe run, of the setup "
        f"{describe_run_setup(run)}; it also has runs of the setup(s) {', '.join(sorted(others))} "
        "(--protocol DIGEST chooses one)"
    ]
