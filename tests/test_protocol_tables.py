"""One protocol per table: which runs `leaderboard` and `compare` take, on fabricated runs.

Each run is written straight into a fresh MLflow store with the tags `run` gives it
(`benchmark.tracking.tags`), a `targets` param and pooled prediction records whose UA is chosen
(`correct` of the 40 utterances right, evenly over the four labels: UA = correct / 40), so a cell's
number says which run filled it. Start times are set by hand: "latest" is exact, not a race.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from benchmark.cli import main
from benchmark.config import SystemConfig
from benchmark.data.records import PredictionRecord, write_records
from benchmark.leaderboard.board import build_board, build_boards
from benchmark.leaderboard.render import render
from benchmark.registry import load_system
from benchmark.tracking.lifecycle import FINISHED
from benchmark.tracking.store import load_mlflow_config, tracking_setup
from benchmark.tracking.tags import RunSetup, describe_setup

LABELS = ["neutral", "happy", "angry", "sad"]  # datasets/demo.yaml
UTTERANCES = 40


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One MLflow store (mlruns/) for the module: creating one takes seconds."""
    return tmp_path_factory.mktemp("protocol-tables")


@pytest.fixture
def store(folder: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """An experiment of its own for each test, in the module's store; returns its id."""
    monkeypatch.chdir(folder)
    monkeypatch.setenv("BENCHMARK_MLFLOW_EXPERIMENT", re.sub(r"\W", "-", request.node.name))
    yield tracking_setup(load_mlflow_config())
    mlflow.end_run()


def quick(config: SystemConfig) -> SystemConfig:
    """The config `run --epochs 1` resolves to (a custom recipe: another protocol digest)."""
    stages = [stage.model_copy(update={"epochs": 1}) for stage in config.stages]
    return config.model_copy(update={"stages": stages, "ssl": config.ssl.model_copy(update={"epochs": 1})})


def fabricate(
    experiment: str,
    system: str,
    correct: int,
    start: int,
    *,
    recipe: str = "registry",
    backbone: str = "tiny",
    train_with: tuple[str, ...] = (),
    folds: tuple[str, ...] = ("1",),
    legacy: bool = False,
) -> str:
    """A FINISHED top-level run of `system` on demo with UA = correct / 40; returns its id."""
    config = load_system(system)
    if recipe == "custom":
        config = quick(config)
    tags = {"system": system, "dataset": "demo", "backbone": backbone, "beta": str(config.beta)}
    if not legacy:
        protocol = RunSetup("demo", train_with, False, backbone, folds, "plain", recipe)  # type: ignore[arg-type]
        tags |= protocol.tags(config)
    client = MlflowClient()
    run_id = client.create_run(experiment, start_time=start, tags=tags, run_name=system).info.run_id
    client.log_param(run_id, "targets", json.dumps(["emotion"]))
    records = [
        PredictionRecord(
            id=f"u{i:02d}", ref_emotion=LABELS[i % 4], hyp_emotion=LABELS[i % 4] if i < correct else
            LABELS[(i + 1) % 4], ref_transcript=None, hyp_transcript=None, ref_descriptor=None,
            hyp_descriptor=None, raw_output=None, fold="1",
        )
        for i in range(UTTERANCES)
    ]  # fmt: skip
    path = Path(f"pooled-{run_id}") / "pooled.jsonl"
    path.parent.mkdir()
    write_records(path, records)
    client.log_artifact(run_id, str(path), "predictions")
    client.set_terminated(run_id, FINISHED, end_time=start + 1)
    return run_id


def ua(correct: int) -> str:
    return f"{100 * correct / UTTERANCES:.1f}"


def cell(board, row: str) -> str:
    """The UA cell of a measured row (markers stripped)."""
    (found,) = [r for r in board.sections[-1].rows if r[0].text == row]
    return found[3].text


def tags_of(run_id: str) -> dict[str, str]:
    return MlflowClient().get_run(run_id).data.tags


# ---------------------------------------------------------------------------------------------
# leaderboard
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "other", [{"train_with": ("speechcraft",)}, {"backbone": "demo"}], ids=["train_with", "backbone"]
)
def test_two_setups_build_two_tables_each_from_its_own_setup(
    store: str, other: dict, capsys: pytest.CaptureFixture[str]
):
    first = {
        s: fabricate(store, s, c, 1000 + i) for i, (s, c) in enumerate((("ssl-hubert", 24), ("no-fd", 8)))
    }
    second = {
        s: fabricate(store, s, c, 2000 + i, **other)
        for i, (s, c) in enumerate((("ssl-hubert", 32), ("no-fd", 16)))
    }
    boards = build_boards("ser", ["demo"])
    assert len(boards) == 2
    newer, older = boards  # the table of the newest runs first
    assert newer.setup == describe_setup(tags_of(second["no-fd"]))
    assert older.setup == describe_setup(tags_of(first["no-fd"]))
    assert (cell(newer, "1"), cell(newer, "4")) == (ua(32), ua(16))
    assert (cell(older, "1"), cell(older, "4")) == (ua(24), ua(8))
    # each table's runs, and its significance tests, are its own setup's only
    for board, runs, foreign in ((newer, second, first), (older, first, second)):
        assert all(run_id in board.notes[1] for run_id in runs.values())
        assert not any(run_id in board.notes[1] for run_id in foreign.values())
        assert "across the table's 1 tests" in board.notes[2]  # row 1 against row 4 ("*")

    assert main(["leaderboard", "--table", "ser", "--dataset", "demo"]) == 0
    out = capsys.readouterr().out
    assert out.count("**Table 2:") == 2
    assert f"Setup: {newer.setup}" in out and f"Setup: {older.setup}" in out
    assert out.index(newer.setup) < out.index(older.setup)
    rows = list(csv.DictReader(io.StringIO(render(boards, "csv"))))
    assert {row["setup"] for row in rows} == {newer.setup, older.setup}
    assert {row["DEMO UA% ↑"] for row in rows if row["ID"] == "4"} == {ua(16), ua(8)}
    for fmt in ("latex", "html"):
        text = render(boards, fmt)
        digests = (tags_of(runs["no-fd"])["setup"] for runs in (first, second))
        assert all("Setup: dataset demo" in text and f"(setup {d})" in text for d in digests), fmt
    # one board of a single setup, as build_board builds it, is refused when there are two
    with pytest.raises(Exception, match="of 2 setups"):
        build_board("ser", ["demo"])
    assert main(["leaderboard", "--table", "ser", "--dataset", "demo", "--backbone", "tiny"]) == 0
    assert capsys.readouterr().out.count("**Table 2:") == (1 if "backbone" in other else 2)


def test_a_quick_run_does_not_displace_the_registry_run_unless_asked(
    store: str, capsys: pytest.CaptureFixture[str]
):
    base = fabricate(store, "no-fd", 8, 1000)
    fabricate(store, "ssl-hubert", 24, 1001)
    quick_run = fabricate(store, "ssl-hubert", 36, 5000, recipe="custom")  # newer, `--epochs 1`
    (board,) = build_boards("ser", ["demo"])
    assert (cell(board, "1"), cell(board, "4")) == (ua(24), ua(8))
    protocol = tags_of(quick_run)["protocol"]
    assert any(f"row 1 on demo (--protocol {protocol})" in note for note in board.notes)

    # asked for: by its protocol digest (a prefix is enough), or by run id
    for asked in (["--protocol", protocol[:6]], ["--runs", quick_run]):
        assert main(["leaderboard", "--table", "ser", "--dataset", "demo", *asked]) == 0
        out = capsys.readouterr().out
        assert out.count("**Table 2:") == 1
        assert re.search(rf"^\| 1 \| ssl-hubert \| measured \| {ua(36)}\**", out, re.M), asked
        assert re.search(rf"^\| 4 \| no-fd \| measured \| {ua(8)} ", out, re.M), asked  # the registry run
        assert f"run {quick_run} (backbone tiny, custom recipe)" in out
    # a setup digest restricts the board to that setup, registry runs only
    (board,) = build_boards("ser", ["demo"], protocol=tags_of(base)["setup"])
    assert cell(board, "1") == ua(24)


def test_a_cell_with_only_custom_runs_stays_empty_and_says_how_to_show_them(store: str):
    fabricate(store, "no-fd", 8, 1000)
    quick_run = fabricate(store, "ssl-hubert", 36, 2000, recipe="custom")
    (board,) = build_boards("ser", ["demo"])
    assert cell(board, "1") == "–"
    protocol = tags_of(quick_run)["protocol"]
    (note,) = [note for note in board.notes if note.startswith("row 1 on demo: –")]
    assert f"--protocol {protocol}" in note and quick_run in note
    (shown,) = build_boards("ser", ["demo"], protocol=protocol)
    assert (cell(shown, "1"), cell(shown, "4")) == (ua(36), ua(8))


def test_legacy_runs_without_a_setup_tag_show_in_a_table_of_their_own(store: str):
    legacy = fabricate(store, "no-fd", 12, 1000, legacy=True)
    tagged = fabricate(store, "no-fd", 20, 2000)
    boards = build_boards("ser", ["demo"])
    assert [cell(board, "4") for board in boards] == [ua(20), ua(12)]
    assert boards[0].setup == describe_setup(tags_of(tagged))
    assert "no setup tag" in boards[1].setup and "backbone tiny" in boards[1].setup
    assert legacy in boards[1].notes[1]


def test_protocol_refusals(store: str, capsys: pytest.CaptureFixture[str]):
    fabricate(store, "no-fd", 8, 1000)
    other = fabricate(store, "no-fd", 8, 2000, train_with=("speechcraft",))
    assert main(["leaderboard", "--table", "ser", "--dataset", "demo", "--protocol", "zzzz"]) == 2
    assert "no finished run has a setup or protocol digest starting with 'zzzz'" in capsys.readouterr().err
    setup = tags_of(other)["setup"]
    first = next(run for run in MlflowClient().search_runs([store]) if run.info.run_id != other)
    args = ["leaderboard", "--table", "ser", "--dataset", "demo", "--protocol", setup, "--runs"]
    assert main([*args, first.info.run_id]) == 2
    assert "differ in train_with (none vs speechcraft)" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# compare
# ---------------------------------------------------------------------------------------------


def compared(store: str, capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    """(baseline run id, compared run ids) of the comparison just logged."""
    capsys.readouterr()
    (latest, *_) = MlflowClient().search_runs(
        [store],
        "tags.kind = 'comparison'",
        order_by=["attributes.start_time DESC"],
    )
    return latest.data.tags["baseline_run_id"], latest.data.tags["compared_run_ids"]


ARGS = ["--metric", "ser.ua", "--bootstrap", "20"]


def test_compare_names_resolve_in_the_setup_of_the_baseline(store: str, capsys: pytest.CaptureFixture[str]):
    old_base = fabricate(store, "no-fd", 8, 1000, folds=("1", "2"))
    old_ssl = fabricate(store, "ssl-hubert", 24, 1001, folds=("1", "2"))
    new_base = fabricate(store, "no-fd", 12, 2000)
    new_ssl = fabricate(store, "ssl-hubert", 28, 2001)
    fabricate(store, "ssl-hubert", 36, 3000, recipe="custom")  # newest, but a quick run

    assert main(["compare", "ssl-hubert", "--baseline", "no-fd", *ARGS]) == 0
    out = capsys.readouterr().out
    assert "it also has runs of the setup(s) " + tags_of(old_base)["setup"] in out.replace("\n", "")
    assert compared(store, capsys) == (new_base, new_ssl)
    assert main(["compare", "--baseline", "no-fd", *ARGS]) == 0  # every system of that setup
    assert compared(store, capsys) == (new_base, new_ssl)
    assert (
        main(
            ["compare", "ssl-hubert", "--baseline", "no-fd", "--protocol", tags_of(old_base)["setup"], *ARGS]
        )
        == 0
    )
    assert compared(store, capsys) == (old_base, old_ssl)
    quick_protocol = next(
        run.data.tags["protocol"] for run in MlflowClient().search_runs([store], "tags.recipe = 'custom'")
    )
    assert main(["compare", "ssl-hubert", "--baseline", "no-fd", "--protocol", quick_protocol, *ARGS]) == 0
    _, quick_id = compared(store, capsys)
    assert tags_of(quick_id)["recipe"] == "custom"
    # explicit run ids are taken as given, but never paired across setups
    assert main(["compare", old_ssl, "--baseline", new_base, *ARGS]) == 2
    err = capsys.readouterr().err
    assert f"runs {old_ssl[:8]}… and {new_base[:8]}… differ in folds (1,2 vs 1)" in err
    assert main(["compare", "ssl-hubert", "--baseline", old_base, *ARGS]) == 0  # the name follows
    assert compared(store, capsys) == (old_base, old_ssl)


def test_compare_refusals_name_the_differing_fields(store: str, capsys: pytest.CaptureFixture[str]):
    base = fabricate(store, "no-fd", 8, 1000)
    other = fabricate(store, "ssl-hubert", 24, 1001, train_with=("speechcraft",), folds=("1", "2"))
    legacy = fabricate(store, "ssl-hubert", 24, 1002, legacy=True)
    fabricate(store, "full", 20, 1003, recipe="custom")

    assert main(["compare", other, "--baseline", base, *ARGS]) == 2
    err = capsys.readouterr().err
    assert (
        f"runs {other[:8]}… and {base[:8]}… differ in train_with (speechcraft vs none), folds (1,2 vs 1)"
        in err
    )
    assert main(["compare", legacy, "--baseline", base, *ARGS]) == 2
    err = capsys.readouterr().err
    assert "differ in train_with (? vs none)" in err and "logged without setup tags" in err
    # a system with runs of other setups only, and one with quick runs only
    assert main(["compare", "ssl-hubert", "--baseline", base, *ARGS]) == 2
    assert "no finished run of system 'ssl-hubert' on 'demo' in the setup " in capsys.readouterr().err
    assert main(["compare", "full", "--baseline", base, *ARGS]) == 2
    err = capsys.readouterr().err
    assert "system 'full' has only custom-recipe runs on 'demo'" in err and "--protocol" in err
    # legacy runs pair with legacy runs: a legacy baseline named by system finds the legacy ssl run
    fabricate(store, "no-fd", 8, 900, legacy=True)
    legacy_base = next(
        run.info.run_id
        for run in MlflowClient().search_runs([store], "tags.system = 'no-fd'")
        if "setup" not in run.data.tags
    )
    assert main(["compare", "ssl-hubert", "--baseline", legacy_base, *ARGS]) == 0
    assert compared(store, capsys) == (legacy_base, legacy)
