"""`compare` and `leaderboard` end to end: two systems trained on one demo fold, tracked in MLflow.

Training is the slow part, so one module-scoped pair of runs serves every test; each test works in
that pair's folder (its mlruns/) and checks the numbers against the logged prediction records.
The pair is trained with `--epochs 1`, which `run` tags as a custom recipe; the fixture tags the
two runs as registry-recipe runs of one setup, the runs a table cell is filled with by default
(which runs are chosen is tested on fabricated runs in test_protocol_tables.py).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow import MlflowClient
from mlflow_server import search_runs, serving
from scipy.stats import norm, ttest_rel

from benchmark.cli import main
from benchmark.data.corpus import load_corpus
from benchmark.data.records import PredictionRecord
from benchmark.eval.metrics import asr_scores, ser_scores
from benchmark.leaderboard.board import build_board
from benchmark.leaderboard.published import load_published
from benchmark.leaderboard.render import render
from benchmark.registry import load_dataset_card, load_system, system_configs
from benchmark.tracking.artifacts import load_run_records
from benchmark.tracking.store import load_mlflow_config
from benchmark.tracking.tags import RunSetup

LABELS = ["neutral", "happy", "angry", "sad"]  # datasets/demo.yaml
SYSTEMS = ("ssl-hubert", "no-fd")  # Table 2 rows 1 and 4; no-fd is the baseline of the "*" marker


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """(folder holding mlruns/, system -> run id) of one 1-epoch tiny-backbone run per system."""
    from benchmark.data.demo import build_demo_corpus
    from benchmark.workflows.run import RunRequest, run_experiment

    folder = tmp_path_factory.mktemp("compare")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("BENCHMARK_HOME", str(folder / "home"))
        patch.setenv("HF_HUB_OFFLINE", "1")
        build_demo_corpus(size=40, seed=0, progress=False)
        runs = {
            system: run_experiment(
                RunRequest(system=system, backbone="tiny", fold="1", epochs=1, progress=False)
            ).run_id
            for system in SYSTEMS
        }
        protocol = RunSetup("demo", (), False, "tiny", ("1",), "plain", "registry")
        for system, run_id in runs.items():
            for key, value in protocol.tags(load_system(system)).items():
                MlflowClient().set_tag(run_id, key, value)
    torch.set_num_threads(threads)
    yield folder, runs
    mlflow.end_run()


@pytest.fixture
def runs(trained: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(trained[0])
    return trained[1]


def recomputed(run_id: str) -> dict[str, float]:
    """UA and WER straight from the logged records, through the metrics module (not stats)."""
    records = load_run_records(run_id, "pooled")
    emotions = [r.ref_emotion for r in records], [r.hyp_emotion for r in records]
    transcripts = [r.ref_transcript for r in records], [r.hyp_transcript for r in records]
    return {
        "ser.ua": ser_scores(*emotions, LABELS).corpus["ser.ua"],
        "asr.wer": asr_scores(*transcripts).corpus["asr.wer"],
    }


def correct(records: list[PredictionRecord]) -> dict[str, float]:
    return {r.id: float(r.ref_emotion == r.hyp_emotion) for r in records}


def ua_p_value(run_id: str, baseline_id: str) -> float:
    """The paired one-sided t-test on UA scores computed here from scratch: correct_i * N / (C n_c)."""
    mine, base = load_run_records(run_id, "pooled"), load_run_records(baseline_id, "pooled")
    counts = {label: sum(r.ref_emotion == label for r in base) for label in LABELS}
    weight = {r.id: len(base) / (sum(c > 0 for c in counts.values()) * counts[r.ref_emotion]) for r in base}
    a, b = correct(mine), correct(base)
    ids = sorted(a)
    return ttest_rel(
        [a[i] * weight[i] for i in ids], [b[i] * weight[i] for i in ids], alternative="greater"
    ).pvalue


@pytest.mark.slow
def test_compare_logs_a_comparison_run_with_recomputed_numbers(
    runs: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    trained: tuple[Path, dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("BENCHMARK_HOME", str(trained[0] / "home"))  # the demo manifest: the speakers
    assert main(["compare", "ssl-hubert", "--baseline", "no-fd", "--bootstrap", "200"]) == 0
    out = capsys.readouterr().out
    assert "ssl-hubert" in out and "kind=comparison" in out
    assert "no speaker" not in out  # every utterance's speaker is in the manifest

    client = MlflowClient()
    experiment = mlflow.get_experiment_by_name("explainable-ser").experiment_id
    (comparison,) = client.search_runs([experiment], filter_string="tags.kind = 'comparison'")
    assert comparison.info.status == "FINISHED"
    assert comparison.data.tags["baseline_run_id"] == runs["no-fd"]
    assert comparison.data.tags["compared_run_ids"] == runs["ssl-hubert"]
    assert comparison.data.params["runs.ssl-hubert"] == runs["ssl-hubert"]
    metrics = comparison.data.metrics
    for metric in ("ser.ua", "asr.wer"):
        for key, run_id in (("value", runs["ssl-hubert"]), ("baseline", runs["no-fd"])):
            assert metrics[f"compare.ssl-hubert.{metric}.{key}"] == pytest.approx(recomputed(run_id)[metric])
        # the same number `run` logged (one fold: the fold mean is the pooled metric)
        logged = client.get_run(runs["ssl-hubert"]).data.metrics[metric]
        assert metrics[f"compare.ssl-hubert.{metric}.value"] == pytest.approx(logged)
    assert metrics["compare.ssl-hubert.ser.ua.p"] == pytest.approx(
        ua_p_value(runs["ssl-hubert"], runs["no-fd"])
    )
    assert {a.path for a in client.list_artifacts(comparison.info.run_id)} >= {
        "comparison.csv",
        "comparison.md",
    }
    # the speaker-cluster bootstrap: fold 1 of the demo corpus holds one group, a female/male pair
    (manifest,) = load_corpus(load_dataset_card("demo")).values()
    speaker = {row.id: row.speaker for row in manifest}
    speakers = {speaker[r.id] for r in load_run_records(runs["no-fd"], "pooled")}
    assert len(speakers) == 2
    ua = "compare.ssl-hubert.ser.ua"
    assert (metrics[f"{ua}.clusters"], metrics[f"{ua}.replicates"]) == (len(speakers), 1)
    assert metrics[f"{ua}.cluster_ci_low"] <= metrics[f"{ua}.diff"] <= metrics[f"{ua}.cluster_ci_high"]
    z = norm.ppf(0.95) + norm.ppf(0.8)
    assert metrics[f"{ua}.mde"] == pytest.approx(z * metrics[f"{ua}.cluster_se"])
    assert metrics[f"{ua}.effect_size"] * metrics[f"{ua}.diff"] >= 0  # d_z has the sign of diff
    artifacts = Path(mlflow.artifacts.download_artifacts(run_id=comparison.info.run_id))
    with (artifacts / "comparison.csv").open(encoding="utf-8") as file:
        table = {row["metric"]: row for row in csv.DictReader(file)}
    for name in ("cluster_ci_low", "cluster_ci_high", "cluster_se", "effect_size", "mde"):
        assert float(table["ser.ua"][name]) == pytest.approx(metrics[f"{ua}.{name}"]), name
    assert int(table["asr.wer"]["clusters"]) == len(speakers) and table["asr.wer"]["unclustered"] == "0"
    assert "| 95% CI | speaker CI | MDE | p |" in (artifacts / "comparison.md").read_text(encoding="utf-8")
    # no RUN_OR_SYSTEM: every other system's latest run on the baseline's dataset
    assert main(["compare", "--baseline", runs["no-fd"], "--metric", "ser.ua", "--bootstrap", "200"]) == 0
    latest = client.search_runs(
        [experiment], "tags.kind = 'comparison'", order_by=["attributes.start_time DESC"]
    )
    assert latest[0].data.tags["compared_run_ids"] == runs["ssl-hubert"]
    assert latest[0].data.metrics["compare.ssl-hubert.ser.ua.p"] == metrics["compare.ssl-hubert.ser.ua.p"]


@pytest.mark.slow
def test_leaderboard_rows_are_recomputed_from_the_records(
    runs: dict[str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
):
    assert main(["leaderboard", "--table", "ser", "--format", "md", "--dataset", "demo"]) == 0
    out = capsys.readouterr().out
    assert "| DEMO UA% ↑ | DEMO WER% ↓ |" in out
    assert "Published in the paper" not in out  # the paper has no demo numbers
    assert "Setup: dataset demo, train_with none, validation off, backbone tiny, folds 1 (setup " in out
    for row, system in (("1", "ssl-hubert"), ("4", "no-fd")):
        numbers = recomputed(runs[system])
        cells = re.search(rf"^\| {row} \| {system} \| measured \| ([^|]+) \| ([^|]+) \|$", out, re.M)
        assert cells, out
        ua, wer = (cell.strip() for cell in cells.groups())
        assert ua.rstrip("*") == f"{100 * numbers['ser.ua']:.1f}"
        assert wer == f"{100 * numbers['asr.wer']:.1f}"
    # row 1 carries "*" exactly when its UA beats row 4's (no-fd) at p < 0.05
    p = ua_p_value(runs["ssl-hubert"], runs["no-fd"])
    assert ("*" in re.search(r"^\| 1 \| ssl-hubert \| measured \| ([^|]+)", out, re.M)[1]) == (p < 0.05)
    assert "| 7 | full | measured | – | – |" in out

    target = tmp_path / "table2.csv"
    assert (
        main(["leaderboard", "--table", "ser", "--format", "csv", "--dataset", "demo", "--out", str(target)])
        == 0
    )
    rows = {
        row["ID"]: row for row in csv.DictReader(target.open(encoding="utf-8")) if row["source"] == "measured"
    }
    assert rows["4"]["DEMO WER% ↓"] == f"{100 * recomputed(runs['no-fd'])['asr.wer']:.1f}"


@pytest.mark.slow
def test_chosen_runs_and_refusals(runs: dict[str, str], capsys: pytest.CaptureFixture[str]):
    board = build_board("ser", ["demo"], [runs["no-fd"]])
    assert [cell.text for cell in board.sections[-1].rows[3][:3]] == ["4", "no-fd", "measured"]
    assert f"row 4 on demo: run {runs['no-fd']}" in board.notes[1]
    assert main(["compare", "full", "--baseline", "no-fd"]) == 2
    assert "no finished run of system 'full' on 'demo'" in capsys.readouterr().err
    assert main(["leaderboard", "--table", "sed", "--runs", runs["ssl-hubert"]]) == 2
    assert "is not a row of this table" in capsys.readouterr().err


@pytest.mark.slow
def test_every_format_renders_the_published_rows(runs: dict[str, str]):
    board = build_board("ser")
    for fmt, needle in (("md", "| P4 | Whisper+LLaMA [21] | published | 77.2 | 14.57 |"),
                        ("csv", "P4,Whisper+LLaMA [21],published,77.2,14.57,–,–"),
                        ("latex", r"7 & HuBERT+FD+LLM-SER+SED+ASR & published & 77.6$^{\ddagger\circ}$"),
                        ("html", "<td>77.6<sup>‡∘</sup></td>")):  # fmt: skip
        assert needle in render(board, fmt), fmt


def test_published_rows_match_the_registry():
    """Each registry system that names a paper row is that row's `ours`, at the printed β."""
    tables = load_published().tables
    rows = {
        (name, row.id): row for name, table in tables.items() for group in table.groups for row in group.rows
    }
    configs = system_configs()
    for system, config in configs.items():
        for name, row_id in (
            ("sed", config.paper.table1),
            ("ser", config.paper.table2),
            ("ablation", config.paper.table3),
        ):
            if row_id is not None:
                row = rows[name, row_id]
                assert row.ours == system
                assert row.beta is None or row.beta == config.beta
    assert [rows["ablation", str(i)].ours for i in range(5, 9)] == ["full"] * 4


@pytest.mark.slow
def test_runs_and_comparison_runs_are_served_by_the_mlflow_ui(runs: dict[str, str], tmp_path: Path):
    assert (
        main(["compare", "ssl-hubert", "--baseline", "no-fd", "--metric", "ser.ua", "--bootstrap", "50"]) == 0
    )
    experiment = mlflow.get_experiment_by_name("explainable-ser").experiment_id
    with serving(load_mlflow_config(), tmp_path / "server.log") as base:
        systems = search_runs(base, experiment, "tags.system != ''")
        comparisons = search_runs(base, experiment, "tags.kind = 'comparison'")
    assert {r["info"]["run_id"] for r in systems} >= set(runs.values())
    tags = {tag["key"]: tag["value"] for tag in comparisons[0]["data"]["tags"]}
    assert (tags["baseline_run_id"], tags["compared_run_ids"]) == (runs["no-fd"], runs["ssl-hubert"])
    assert {m["key"] for m in comparisons[0]["data"]["metrics"]} >= {"compare.ssl-hubert.ser.ua.p"}


@pytest.mark.slow
def test_descriptor_table_scores_the_logged_descriptors(
    runs: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    from benchmark.tracking import evaluated

    calls = []
    scorer = evaluated.caption_utterance_scores
    monkeypatch.setattr(evaluated, "caption_utterance_scores", lambda *a: calls.append(a) or scorer(*a))
    assert main(["leaderboard", "--table", "sed", "--format", "md", "--dataset", "demo"]) == 0
    out = capsys.readouterr().out
    cells = re.search(r"^\| 1 \| no-fd \| measured \|(.*)\|$", out, re.M)[1].split("|")
    logged = MlflowClient().get_run(runs["no-fd"]).data.metrics  # one fold: fold = pooled
    metrics = ("sed.bleu4", "sed.meteor", "sed.rouge_l", "sed.cider")
    assert [cell.strip().rstrip("‡") for cell in cells[:4]] == [f"{100 * logged[m]:.1f}" for m in metrics]
    if "sed.spice" not in logged:
        assert cells[4].strip() == "–" and "sed.spice cannot be computed here" in out
    assert len(calls) == 1  # every captioning metric of the run from one scoring pass
