"""Finding runs: the search of the store, and the one resolver of run ids and system names.

`compare`, `evaluate` and `leaderboard` name runs the same way, so they resolve them here: a run id
is taken as given (`finished_run`: FINISHED and top-level, or for `evaluate` the fold run that holds
a model, `fold_runs`); a system name stands for the latest FINISHED top-level registry-recipe run of
that system (`pick_latest`), a quick `recipe=custom` run only when named by id or protocol;
`--protocol DIGEST` picks a setup or a protocol by digest or unique prefix (`choose_protocol`); runs
pair within one setup only (`refuse_unpaired`, `setup_of`). Searches run in the experiment of the
command's `store.tracking_setup`, called once per command before the first search. The rules as a
user meets them: docs/evaluation.md.
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
from benchmark.tracking import tags as tag
from benchmark.tracking.lifecycle import FAILED, FINISHED, KILLED
from benchmark.tracking.store import current_experiment
from benchmark.tracking.tags import describe_setup, differing_fields

RUN_ID = re.compile(r"[0-9a-f]{32}")
LEGACY = "legacy"


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
    runs with random weights (`tag.RANDOM_WEIGHTS`) no results: neither is ever listed.
    """
    clauses = [f"tags.system = '{system}'"] if system else []
    clauses += [f"tags.dataset = '{dataset}'"] if dataset else []
    clauses += [f"attributes.status = '{status}'"] if status else []
    clauses.append("tags.`mlflow.parentRunId` IS NULL")
    clauses.append(f"tags.{tag.RANDOM_WEIGHTS} IS NULL")
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
    if run.data.tags.get(tag.RANDOM_WEIGHTS) == "true":
        raise BenchmarkError(
            f"run {run_id} has random weights (backbone {run.data.tags.get(tag.BACKBONE)}): it measured "
            "training speed and memory, and has no results or model",
            hint="pass a run of the demo, tiny or paper backbone",
        )
    return run


def _children(run: Run) -> list[Run]:
    return MlflowClient().search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )


def first_seed(fold_run: Run) -> Run:
    """The run holding a fold's trained weights and test records: the fold run itself, or with
    `--seeds K` (K > 1) its seed run of the system's own seed (index 0), which every tool that
    needs one model per fold (evaluate, predict, explain) uses."""
    if int(fold_run.data.tags.get(tag.SEEDS, "1")) == 1 or tag.SEED_INDEX in fold_run.data.tags:
        return fold_run
    seeds = {child.data.tags.get(tag.SEED_INDEX): child for child in _children(fold_run)}
    if "0" not in seeds:
        raise BenchmarkError(f"fold run {fold_run.info.run_id} has no seed run of index 0 (unfinished?)")
    return seeds["0"]


def fold_runs(run: Run) -> dict[str, Run]:
    """The runs holding trained weights, by fold: the run itself if it is a fold (or seed) run,
    else its children; with seeds, each fold's first (`first_seed`)."""
    if "fold" in run.data.tags:
        return {run.data.tags[tag.FOLD]: first_seed(run)}
    folds = [child for child in _children(run) if "fold" in child.data.tags]
    return {child.data.tags[tag.FOLD]: first_seed(child) for child in folds}


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
    return tags.get(tag.SETUP) or f"{LEGACY}:{tags.get(tag.DATASET, '?')}:{tags.get(tag.BACKBONE, '?')}"


def is_legacy(run: Run) -> bool:
    return "setup" not in run.data.tags


def is_registry(run: Run) -> bool:
    """Whether the run used the registry's system config (a legacy run, untagged, counts as one)."""
    return run.data.tags.get(tag.RECIPE) != "custom"


def describe_run_setup(run: Run) -> str:
    """The run's setup in words (`tags.describe_setup`), for headings and refusals."""
    tags = run.data.tags
    if is_legacy(run):
        return (
            f"dataset {tags.get(tag.DATASET, '?')}, backbone {tags.get(tag.BACKBONE, '?')} "
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
        return self.protocol is not None and run.data.tags.get(tag.PROTOCOL) == self.protocol


def choose_protocol(digest: str, runs: Sequence[Run]) -> ProtocolChoice:
    """The setup or protocol of `runs` whose digest is `digest` or starts with it (unique)."""
    wanted = digest.strip().lower()
    found: dict[str, tuple[str, Run]] = {}  # tag value -> (tag, a run carrying it)
    for run in runs:
        for name in (tag.SETUP, tag.PROTOCOL):
            value = run.data.tags.get(name, "")
            if wanted and value.startswith(wanted):
                found.setdefault(value, (name, run))
    if not found:
        known = list(dict.fromkeys(describe_run_setup(run) for run in runs if not is_legacy(run)))
        raise BenchmarkError(
            f"no finished run has a setup or protocol digest starting with '{digest}'",
            hint=("setups: " + "; ".join(known[:5])) if known else "no run carries a setup tag yet",
        )
    if len(found) > 1:
        listed = ", ".join(f"{name} {value}" for value, (name, _) in sorted(found.items()))
        raise BenchmarkError(f"'{digest}' is the start of several digests: {listed}", hint="give more of it")
    ((value, (name, run)),) = found.items()
    return ProtocolChoice(setup_of(run), value if name == tag.PROTOCOL else None, run)


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
        (backbone is None or tags.get(tag.BACKBONE) == backbone)
        and (beta is None or math.isclose(float(tags.get(tag.BETA, "nan")), beta))
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
    datasets = sorted({run.data.tags.get(tag.DATASET, "?") for run in runs})
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
    protocol = custom.data.tags.get(tag.PROTOCOL, "?")
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
            groups.setdefault((run.data.tags[tag.SYSTEM], run.data.tags.get(tag.BETA, "")), []).append(run)
    picked, notes = [], []
    for (system, beta), group in groups.items():
        if (run := pick_latest(group, choice)) is not None:
            picked.append(run)
        else:
            protocol = min(group, key=newest_first).data.tags.get(tag.PROTOCOL, "?")
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
        for other in find_runs(ref, run.data.tags.get(tag.DATASET))
        if _matches(other, backbone) and is_registry(other)
    } - {setup_of(run)}
    if not others:
        return run, []
    return run, [
        f"baseline {ref}: run {run.info.run_id}, its latest registry-recipe run, of the setup "
        f"{describe_run_setup(run)}; it also has runs of the setup(s) {', '.join(sorted(others))} "
        "(--protocol DIGEST chooses one)"
    ]


def refit_runs(run_id: str) -> dict[int, str]:
    """The FINISHED refit runs of a study run, by the trial they refit."""
    client = MlflowClient()
    experiment_id = client.get_run(run_id).info.experiment_id
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.{tag.STUDY_RUN} = '{run_id}' and attributes.status = '{FINISHED}'",
    )
    return {
        int(run.data.tags[tag.REFIT_OF]): run.info.run_id for run in runs if tag.REFIT_OF in run.data.tags
    }


@dataclass(frozen=True)
class StudyRuns:
    """The refit runs of the newest run of a study, for `leaderboard --study`."""

    study_run: str
    dataset: str
    setup: str
    run_ids: list[str]


def study_runs(name: str) -> StudyRuns:
    """The newest study run named `name` in the store (of `tracking_setup`) and its refit runs."""
    client = MlflowClient()
    experiment = current_experiment()
    if experiment is None:
        raise RuntimeError("call tracking_setup(config) before study_runs")
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.{tag.KIND} = 'study' and tags.{tag.STUDY} = '{name}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise BenchmarkError(
            f"no run of study '{name}' in this store", hint=f"run `python -m benchmark study {name}`"
        )
    run = runs[0]
    refits = refit_runs(run.info.run_id)
    if not refits:
        raise BenchmarkError(
            f"study '{name}' (run {run.info.run_id}) has no refit runs yet",
            hint="a study refits once its trials are done; run the same `study` command again to finish it",
        )
    ids = [refits[number] for number in sorted(refits)]
    setup = client.get_run(ids[0]).data.tags.get(tag.SETUP, "")
    return StudyRuns(run.info.run_id, run.data.tags.get(tag.DATASET, ""), setup, ids)
