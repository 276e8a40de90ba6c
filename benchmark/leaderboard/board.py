"""`python -m benchmark leaderboard`: the paper's Tables 1-3, its published rows beside ours.

A table has the paper's *published* rows (`published/paper_results.yaml`, schema in
`benchmark.leaderboard.published`) and *measured* rows, never mixed: one per row of the paper's own
systems, recomputed from the pooled prediction records of one run per row and dataset as the means
of `benchmark.eval.stats` per-utterance scores, so they equal what `compare` computes. The rows of
a table differ in their system config only, so one table is printed per run setup (the `setup`
tag of `benchmark.tracking.tags`), and `benchmark.tracking.lookup` picks the run of each cell.
Significance markers are the paper's paired one-sided t-tests against the row its caption names,
within one table; `benchmark.leaderboard.render` prints the board. Which run fills a cell and how
each table's markers are read: docs/evaluation.md.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from mlflow.entities import Run

from benchmark.errors import BenchmarkError
from benchmark.eval.metrics import UtteranceScores
from benchmark.eval.stats import (
    EXPLAIN_METRICS,
    SED_METRICS,
    MetricUnavailable,
    PairedTest,
    metric_spec,
    paired_test,
    seed_interval,
    with_holm,
)
from benchmark.leaderboard.published import (
    CELL,
    MISSING,
    PUBLISHED,
    PublishedTable,
    TableName,
    load_published,
)
from benchmark.leaderboard.render import Board, Cell, Section
from benchmark.registry import load_dataset_card, load_system
from benchmark.tracking import tags as tag
from benchmark.tracking.evaluated import EvaluatedRun, load_evaluated
from benchmark.tracking.lookup import (
    ProtocolChoice,
    choose_protocol,
    describe_run_setup,
    find_runs,
    is_legacy,
    is_registry,
    newest_first,
    pick_latest,
    refuse_unpaired,
    resolve_run,
    setup_of,
)
from benchmark.tracking.store import load_mlflow_config, tracking_setup

ALPHA = 0.05
SHORT = {
    "sed.bleu4": "B@4", "sed.meteor": "M", "sed.rouge_l": "R", "sed.cider": "C", "sed.spice": "S",
    "ser.ua": "UA%", "asr.wer": "WER%",
    "explain.deletion": "Del.pp", "explain.plausibility": "Plaus.%", "explain.agreement": "Agr.%",
}  # fmt: skip
SETUP_HEADERS = ("β", "Training Strategy", "Trans.", "Des.", "Emo.")


@dataclass(frozen=True)
class Marking:
    """Which metrics a table marks, and whether its baseline is the better side (Table 3)."""

    metrics: tuple[str, ...]
    baseline_better: bool = False


MARKING: dict[str, Marking] = {
    "sed": Marking(SED_METRICS),
    "ser": Marking(("ser.ua",)),
    "ablation": Marking(("ser.ua",), baseline_better=True),
}


# ---------------------------------------------------------------------------------------------
# Rows and columns, and the run of each cell
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeasuredRow:
    """A row of the paper's own systems, measured: the registry system at the row's β."""

    id: str
    system: str
    beta: float


Column = tuple[str, str]  # (dataset, metric)
RunKey = tuple[str, str]  # (row id, dataset)


def _columns(table: PublishedTable, datasets: Sequence[str], explain: bool = False) -> list[Column]:
    """The paper's columns, or every metric of the table for each of `datasets`; with `explain`,
    the explanation-quality metrics of each dataset after them (ours: the paper has none)."""
    for dataset in datasets:
        load_dataset_card(dataset)  # an unknown name fails here, listing the known ones
    if not datasets:
        columns = table.dataset_metrics()
    else:
        metrics = list(dict.fromkeys(metric for _, metric in table.dataset_metrics()))
        columns = [(dataset, metric) for dataset in datasets for metric in metrics]
    shown = dict.fromkeys(dataset for dataset, _ in columns)
    return columns + [(dataset, metric) for dataset in shown for metric in EXPLAIN_METRICS if explain]


def _header(column: Column) -> str:
    dataset, metric = column
    return f"{dataset.upper()} {SHORT[metric]} {'↑' if metric_spec(metric).higher_is_better else '↓'}"


def _measured_rows(table: PublishedTable) -> list[MeasuredRow]:
    return [
        MeasuredRow(row.id, row.ours, row.beta if row.beta is not None else load_system(row.ours).beta)
        for group in table.groups
        for row in group.rows
        if row.ours
    ]


@dataclass(frozen=True)
class TableRuns:
    """The runs of one table: per corpus a run of its setup (`setups`), the run of each cell, and
    notes on the runs left out of their cells."""

    heading: str
    setups: dict[str, Run]
    cells: dict[RunKey, Run]
    notes: list[str]


def _row_of(rows: Sequence[MeasuredRow], run: Run) -> MeasuredRow | None:
    tags = run.data.tags
    beta = float(tags.get(tag.BETA, "nan"))
    return next((r for r in rows if r.system == tags.get(tag.SYSTEM) and math.isclose(r.beta, beta)), None)


def _table_key(run: Run) -> tuple[str, ...]:
    """What the setups of one table's corpora share (the fields that are not the corpus's own)."""
    tags = run.data.tags
    if is_legacy(run):
        return ("legacy", tags.get(tag.BACKBONE, "?"))
    return ("setup", *(tags.get(name, "") for name in ("train_with", "validation", "backbone")))


def _named_run(run_id: str, rows: Sequence[MeasuredRow], datasets: Sequence[str]) -> Run:
    """A `--runs` run, which must be of a row of the table and one of its datasets."""
    run = resolve_run(run_id)
    tags = run.data.tags
    if _row_of(rows, run) is None or tags.get(tag.DATASET) not in datasets:
        keys = ", ".join(f"{r.id}: {r.system} β={r.beta:g}" for r in rows)
        raise BenchmarkError(
            f"run {run_id} ({tags.get(tag.SYSTEM)} β={tags.get(tag.BETA)} on {tags.get(tag.DATASET)}) "
            "is not a row of this table",
            hint=f"rows: {keys}; datasets: {', '.join(datasets)} (choose them with --dataset)",
        )
    return run


def select_tables(
    rows: Sequence[MeasuredRow],
    datasets: Sequence[str],
    run_ids: Sequence[str] = (),
    backbone: str | None = None,
    protocol: str | None = None,
) -> list[TableRuns]:
    """The tables of one paper table, one per setup (see the module docstring), newest first."""
    candidates = [
        run
        for dataset in datasets
        for run in find_runs(dataset=dataset)
        if _row_of(rows, run) is not None
        and (backbone is None or run.data.tags.get(tag.BACKBONE) == backbone)
    ]
    named = [_named_run(run_id, rows, datasets) for run_id in run_ids]
    choice = None
    if protocol:
        choice = choose_protocol(protocol, [*candidates, *named])
        candidates = [run for run in candidates if setup_of(run) == choice.setup]
        for run in named:
            refuse_unpaired(run, choice.example)
    pool = sorted({run.info.run_id: run for run in [*candidates, *named]}.values(), key=newest_first)
    groups: dict[tuple[str, ...], dict[str, dict[str, Run]]] = {}  # key -> dataset -> setup -> a run
    for run in pool:
        by_dataset = groups.setdefault(_table_key(run), {}).setdefault(run.data.tags[tag.DATASET], {})
        by_dataset.setdefault(setup_of(run), run)
    named_ids = [run.info.run_id for run in named]
    tables = []
    for by_dataset in groups.values():
        per_dataset = [list(by_dataset[dataset].values()) for dataset in datasets if dataset in by_dataset]
        for setups in itertools.product(*per_dataset):  # one setup per corpus; usually one table
            examples = {run.data.tags[tag.DATASET]: run for run in setups}
            tables.append(_table_runs(rows, examples, pool, named_ids, choice))
    if not tables:
        return [TableRuns("", {}, {}, [])]  # the runs note says that no run was found
    return tables


def _table_runs(
    rows: Sequence[MeasuredRow],
    setups: dict[str, Run],
    pool: Sequence[Run],
    named_ids: Sequence[str],
    choice: ProtocolChoice | None,
) -> TableRuns:
    """Fill the cells of one table from `pool` (newest first): a `--runs` run, else `pick_latest`."""
    cells: dict[RunKey, Run] = {}
    notes: list[str] = []
    displaced: list[str] = []
    for row in rows:
        for dataset, example in setups.items():
            here = [
                run
                for run in pool
                if run.data.tags.get(tag.DATASET) == dataset
                and setup_of(run) == setup_of(example)
                and _row_of([row], run) is not None
            ]
            mine = [named_ids.index(run.info.run_id) for run in here if run.info.run_id in named_ids]
            if mine:  # the last of the --runs given for this cell
                run = next(r for r in here if r.info.run_id == named_ids[max(mine)])
            else:
                run = pick_latest(here, choice)
            custom = [other for other in here if not is_registry(other)]
            if run is not None:
                cells[row.id, dataset] = run
                if newer := [other for other in custom if newest_first(other) < newest_first(run)]:
                    displaced.append(f"row {row.id} on {dataset} (--protocol {_protocol(newer[0])})")
            elif custom:
                latest = custom[0].info.run_id
                notes.append(
                    f"row {row.id} on {dataset}: {MISSING} as it has no registry-recipe run, only "
                    f"{len(custom)} custom-recipe run(s) (--epochs or --set); show the latest, run "
                    f"{latest}, with --protocol {_protocol(custom[0])} or --runs {latest}"
                )
    if displaced:
        notes.append(
            "newer custom-recipe runs not shown, as a quick run never replaces the registry run of its "
            "cell: " + "; ".join(displaced)
        )
    if choice is not None and choice.protocol is not None:
        notes.append(f"--protocol {choice.protocol}: that protocol's runs fill their cells, custom or not")
    heading = "; ".join(describe_run_setup(example) for example in setups.values())
    return TableRuns(heading, setups, cells, notes)


def _protocol(run: Run) -> str:
    return run.data.tags.get(tag.PROTOCOL, "?")


def _evaluated(cells: dict[RunKey, Run]) -> dict[RunKey, EvaluatedRun]:
    unique = {run.info.run_id: run for run in cells.values()}  # a run is downloaded once
    evaluated = {run_id: load_evaluated(run) for run_id, run in unique.items()}
    return {key: evaluated[run.info.run_id] for key, run in cells.items()}


# ---------------------------------------------------------------------------------------------
# Measured cells and significance
# ---------------------------------------------------------------------------------------------


def _scores(run: EvaluatedRun | None, metric: str, notes: list[str]) -> UtteranceScores | None:
    """A run's per-utterance scores; None without a run, an output the metric scores, or a scorer
    (the last is said once in `notes`)."""
    if run is None or not run.predicts(metric):
        return None
    try:
        return run.scores(metric)
    except MetricUnavailable as err:
        if (note := f"{metric}: {err.message}") not in notes:
            notes.append(note)
        return None


@dataclass(frozen=True)
class MarkerTest:
    row: str
    column: Column
    marker: str
    test: PairedTest


def _significance(
    table: PublishedTable,
    marking: Marking,
    rows: Sequence[MeasuredRow],
    columns: Sequence[Column],
    runs: dict[RunKey, EvaluatedRun],
    notes: list[str],
) -> list[MarkerTest]:
    """Every measured row against each baseline row of the caption, Holm-corrected as one family."""
    tests: list[MarkerTest] = []
    for marker, base_id in table.markers.items():
        for row in rows:
            for dataset, metric in columns:
                if row.id == base_id or metric not in marking.metrics:
                    continue
                mine = _scores(runs.get((row.id, dataset)), metric, notes)
                base = _scores(runs.get((base_id, dataset)), metric, notes)
                if mine is None or base is None:
                    continue
                mine_name = f"row {row.id} (run {runs[row.id, dataset].run_id})"
                base_name = f"row {base_id} (run {runs[base_id, dataset].run_id})"
                try:
                    if marking.baseline_better:
                        test = paired_test(base, mine, base_name, mine_name)
                    else:
                        test = paired_test(mine, base, mine_name, base_name)
                except BenchmarkError as err:
                    notes.append(f"no test of row {row.id} against row {base_id} on {dataset}: {err.message}")
                    continue
                tests.append(MarkerTest(row.id, (dataset, metric), marker, test))
    corrected = with_holm([t.test for t in tests])
    return [MarkerTest(t.row, t.column, t.marker, c) for t, c in zip(tests, corrected, strict=True)]


def _marker_note(table: PublishedTable, marking: Marking, tests: Sequence[MarkerTest]) -> str:
    if marking.baseline_better:
        legend = "; ".join(f"{m} = row {b} is better than the marked row" for m, b in table.markers.items())
    else:
        legend = "; ".join(f"{m} = better than row {b}" for m, b in table.markers.items())
    if not tests:
        return f"markers ({legend}): no test ran, for want of measured runs of the rows and their baselines"
    marked = [t for t in tests if t.test.p < ALPHA]
    kept = sum(t.test.p_holm < ALPHA for t in marked)
    return (
        f"markers on measured rows ({legend}, on {', '.join(marking.metrics)}): paired one-sided t-test on "
        f"per-utterance scores, p < {ALPHA:g} as in the paper; {kept} of {len(marked)} markers remain "
        f"after Holm's correction across the table's {len(tests)} tests. Published markers are the paper's."
    )


def _beta(beta: float | None) -> str:
    return MISSING if beta is None else f"{beta:g}"


def _measured_cells(
    row: MeasuredRow,
    columns: Sequence[Column],
    runs: dict[RunKey, EvaluatedRun],
    marks: dict[tuple[str, Column], str],
    notes: list[str],
    setup: bool,
) -> list[Cell]:
    cells = [Cell(row.id), Cell(row.system), Cell("measured")]
    if setup:
        config = load_system(row.system)
        targets = ("transcript", "descriptor", "emotion")
        cells += [Cell(_beta(row.beta)), Cell(config.schedule)]
        cells += [Cell("✓" if target in config.targets else "✗") for target in targets]
    for column in columns:
        scores = _scores(runs.get((row.id, column[0])), column[1], notes)
        cells.append(Cell(_value(scores), marks.get((row.id, column), "")) if scores else Cell(MISSING))
    return cells


OVERLAP_MARK = "†"  # a cell whose run trained on some of its test clips (`run --allow-overlap`)


def _overlap_marks(
    rows: Sequence[MeasuredRow],
    columns: Sequence[Column],
    runs: dict[RunKey, EvaluatedRun],
    marks: dict[tuple[str, Column], str],
) -> list[str]:
    """Mark every cell of a run tagged `overlap` (it trained with test clips in its training
    mixture, `run --allow-overlap`) with `OVERLAP_MARK`; one note per such run."""
    notes = []
    for row in rows:
        for dataset in dict.fromkeys(dataset for dataset, _ in columns):
            run = runs.get((row.id, dataset))
            count = run.run.data.tags.get(tag.OVERLAP) if run is not None else None
            if not count:
                continue
            for column in columns:
                if column[0] == dataset:
                    marks[row.id, column] = marks.get((row.id, column), "") + OVERLAP_MARK
            notes.append(
                f"{OVERLAP_MARK} row {row.id} on {dataset} (run {run.run_id}): trained with {count} test "
                "clip(s) in its training mixture (--allow-overlap; the run's audit.tsv lists them)"
            )
    return notes


def _value(scores: UtteranceScores) -> str:
    """A measured cell: the percentage and, where the run trained several seeds, ± the half-width
    of its 95 % interval over folds × seeds (`seed_interval`, clustered by fold)."""
    text = f"{100 * scores.value:.1f}"
    if any(seed is not None for _, seed, _ in scores.parts):
        low, high = seed_interval(scores.parts)
        text += f" ± {100 * (high - low) / 2:.1f}"
    return text


def _printed(text: str) -> Cell:
    match = CELL.fullmatch(text)
    return Cell(match["value"], match["marks"]) if match and match["value"] else Cell(MISSING)


def _published_sections(table: PublishedTable, columns: Sequence[Column], setup: bool) -> list[Section]:
    """The paper's groups of rows; rows with no number in the shown columns are left out."""
    sections = []
    for group in table.groups:
        rows = []
        for row in group.rows:
            printed = dict(zip(table.columns, row.cells, strict=True))
            values = [_printed(printed.get(f"{dataset}/{metric}", MISSING)) for dataset, metric in columns]
            if all(cell.text == MISSING for cell in values):
                continue
            system = " ".join(part for part in (row.system, row.ref) if part) or MISSING
            lead = [Cell(row.id), Cell(system), Cell("published")]
            if setup:
                lead += [Cell(_beta(row.beta)), *(Cell(item) for item in row.setup)]
            rows.append(lead + values)
        if rows:
            title = "Published in the paper" + (f": {group.title}" if group.title else "")
            sections.append(Section(title, rows))
    return sections


def _runs_note(runs: dict[RunKey, EvaluatedRun]) -> str:
    if not runs:
        return "measured: no finished run found for any row (train them with `python -m benchmark run`)"
    listed = "; ".join(
        f"row {row} on {dataset}: run {run.run_id} (backbone {run.run.data.tags.get(tag.BACKBONE, '?')}"
        f"{'' if is_registry(run.run) else ', custom recipe'})"
        for (row, dataset), run in runs.items()
    )
    seeded = any(int(run.run.data.params.get("training.seeds", "1")) > 1 for run in runs.values())
    seeds = (
        "; ± = the 95 % interval of the mean over folds × seeds, a t interval over the fold means "
        "(over the seeds with one fold), where a run trained several seeds"
        if seeded
        else ""
    )
    return (
        "measured: percentages recomputed from the pooled prediction records (the mean over folds, and "
        f"seeds, where a run has several) of {listed}{seeds}"
    )


def build_board(
    name: TableName,
    datasets: Sequence[str] = (),
    run_ids: Sequence[str] = (),
    backbone: str | None = None,
    protocol: str | None = None,
    selection: TableRuns | None = None,
    explain: bool = False,
) -> Board:
    """One of the paper's tables with published and measured rows (see the module docstring), for
    the runs of `selection` (one table of `select_tables`). Without one, the runs must all be of
    one setup (`build_boards` builds a table per setup)."""
    table = load_published().tables[name]
    marking = MARKING[name]
    columns = _columns(table, datasets, explain)
    rows = _measured_rows(table)
    if selection is None:
        tracking_setup(load_mlflow_config())
        tables = select_tables(rows, _shown(columns), run_ids, backbone, protocol)
        if len(tables) > 1:
            raise BenchmarkError(
                f"the runs of Table {table.number} are of {len(tables)} setups: "
                + "; ".join(t.heading for t in tables),
                hint="build_boards (the `leaderboard` command) prints one table per setup; "
                "--protocol DIGEST chooses one",
            )
        selection = tables[0]
    runs = _evaluated(selection.cells)
    notes: list[str] = []
    tests = _significance(table, marking, rows, columns, runs, notes)
    marks: dict[tuple[str, Column], str] = {}
    for t in tests:
        if t.test.p < ALPHA:
            marks[t.row, t.column] = marks.get((t.row, t.column), "") + t.marker
    notes += _overlap_marks(rows, columns, runs, marks)
    setup = name == "ablation"
    measured = [_measured_cells(row, columns, runs, marks, notes, setup) for row in rows]
    published = _published_sections(table, columns, setup)
    if published:
        published_note = (
            f"published: transcribed from Table {table.number} of the paper ({PUBLISHED}), never measured "
            f"here; {MISSING} = no result published, or the system has no such output"
        )
    else:
        published_note = f"published: the paper reports no results on {', '.join(datasets)}"
    title = f"Table {table.number}: {table.caption.split('. ')[0]}"
    return Board(
        title=title + (f" (layout of the paper, on {', '.join(datasets)})" if datasets else ""),
        headers=["ID", "System", "source", *(SETUP_HEADERS if setup else ()), *map(_header, columns)],
        sections=[*published, Section("Measured by this suite", measured)],
        notes=[
            published_note,
            _runs_note(runs),
            _marker_note(table, marking, tests),
            *selection.notes,
            *notes,
        ],
        setup=selection.heading,
    )


def build_boards(
    name: TableName,
    datasets: Sequence[str] = (),
    run_ids: Sequence[str] = (),
    backbone: str | None = None,
    protocol: str | None = None,
    explain: bool = False,
) -> list[Board]:
    """`python -m benchmark leaderboard`: the table `name` once per setup of its runs, newest first;
    `explain` adds the explanation-quality columns."""
    table = load_published().tables[name]
    columns = _columns(table, datasets)
    tracking_setup(load_mlflow_config())
    tables = select_tables(_measured_rows(table), _shown(columns), run_ids, backbone, protocol)
    return [build_board(name, datasets, run_ids, backbone, protocol, t, explain) for t in tables]


def _shown(columns: Sequence[Column]) -> list[str]:
    return list(dict.fromkeys(dataset for dataset, _ in columns))
