"""`benchmark explain RUN_ID UTT_ID`: a logged prediction explained from the run's own model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from benchmark.cli import main
from benchmark.data.audio import load_audio
from benchmark.data.records import PredictionRecord
from benchmark.tracking.artifacts import load_run_explanations, load_run_records
from benchmark.workflows import explain as explanations
from benchmark.workflows.run import RunRequest, run_experiment

LLD_KEYS = {"Loudness_sma3", "F0semitoneFrom27.5Hz_sma3nz"}


def first_test_record(run_id: str) -> PredictionRecord:
    client = MlflowClient()
    fold_run = client.search_runs(
        [client.get_run(run_id).info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'"
    )[0]
    return load_run_records(fold_run.info.run_id, "fold-1")[0]


def explain_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    capsys.readouterr()  # what training printed before
    assert main(["explain", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_explain_an_ssl_baseline_prediction(workdir: Path, capsys: pytest.CaptureFixture[str]):
    run = run_experiment(RunRequest(system="ssl-hubert", backbone="tiny", fold="1", epochs=1, progress=False))
    record = first_test_record(run.run_id)
    out = explain_json(capsys, run.run_id, record.id, "--k", "3")

    assert out["utterance"]["id"] == record.id and out["fold"] == "1"
    assert out["prediction"]["emotion"] == record.hyp_emotion
    assert out["saliency"]["target"] == f"logit({record.hyp_emotion})"
    duration = len(load_audio(out["audio"])) / 16000
    windows = out["windows"]
    assert 1 <= len(windows) <= 3
    assert all(0 <= w["start"] < w["end"] <= duration + 1e-9 for w in windows)
    assert [w["saliency"] for w in windows] == sorted((w["saliency"] for w in windows), reverse=True)
    assert all(set(w["cues"]) >= LLD_KEYS for w in windows) and set(out["outside"]) >= LLD_KEYS
    assert out["figure"] in {a.path for a in MlflowClient().list_artifacts(run.run_id, "explanations")}

    assert main(["explain", run.run_id, record.id, "--no-figure", "--method", "input_x_gradient"]) == 0
    text = capsys.readouterr().out
    assert record.id in text and "top" in text and "input_x_gradient" in text

    assert main(["explain", run.run_id, "no-such-utterance"]) == 2
    err = capsys.readouterr().err
    assert "is in no test split of run" in err and "Traceback" not in err


@pytest.mark.slow
def test_explain_an_llm_prediction_and_refuse_one_without_a_label(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    run = run_experiment(RunRequest(system="full", backbone="tiny", fold="1", epochs=1, progress=False))
    find = explanations.find_prediction

    def unlabelled(*args):
        fold, fold_run, record = find(*args)
        return fold, fold_run, record.model_copy(update={"hyp_emotion": None})

    record = first_test_record(run.run_id)
    monkeypatch.setattr(explanations, "find_prediction", unlabelled)
    assert main(["explain", run.run_id, record.id, "--no-figure"]) == 2
    assert "names no emotion label" in capsys.readouterr().err

    def labelled(*args):  # an untrained tiny LLM rarely writes a label: give the record one
        fold, fold_run, record = find(*args)
        said = {"hyp_emotion": "sad", "hyp_descriptor": "She speaks slowly and quietly."}
        return fold, fold_run, record.model_copy(update=said)

    monkeypatch.setattr(explanations, "find_prediction", labelled)
    out = explain_json(capsys, run.run_id, record.id, "--no-figure", "--k", "2")
    assert out["saliency"]["target"] == "log p(sad)" and len(out["windows"]) <= 2
    claims = {c["attribute"]: c for c in out["claims"]["claims"]}
    assert claims["speed"]["claimed"] == "low" and claims["energy"]["claimed"] == "low"
    assert {c["verdict"] for c in claims.values()} <= {"agrees", "disagrees", "unmeasured"}
    assert out["evidence"]["emotion"] == "sad" and out["evidence"]["reference"] == "sadness"


@pytest.mark.slow
def test_explain_all_logs_the_quality_metrics_that_the_leaderboard_shows(
    workdir: Path, capsys: pytest.CaptureFixture[str]
):
    run = run_experiment(RunRequest(system="ssl-hubert", backbone="tiny", fold="1", epochs=1, progress=False))
    other = run_experiment(
        RunRequest(system="ssl-wavlm", backbone="tiny", fold="1", epochs=1, progress=False)
    )
    capsys.readouterr()
    assert main(["explain", run.run_id, "--all", "--limit", "4", "--k", "2", "--html", "pages"]) == 0
    assert "explain.deletion" in capsys.readouterr().out
    logged = MlflowClient().get_run(run.run_id).data.metrics
    assert logged["explain.utterances"] + logged["explain.skipped"] == 4
    assert {"explain.deletion", "explain.plausibility"} <= set(logged) and "explain.agreement" not in logged
    artifacts = {a.path for a in MlflowClient().list_artifacts(run.run_id, "explanations")}
    assert {
        f"explanations/{n}" for n in ("utterances.jsonl", "summary.json", "cues_by_emotion.png")
    } <= artifacts
    records = load_run_explanations(run.run_id)
    assert len(records) == logged["explain.utterances"] and all(len(r.windows) <= 2 for r in records)
    index = Path("pages/index.html").read_text()  # a page per explained utterance, linked
    pages = sorted(p.name for p in Path("pages").glob("*.html") if p.name != "index.html")
    assert len(pages) == len(records) and all(f'href="{name}"' in index for name in pages)
    html = {a.path for a in MlflowClient().list_artifacts(run.run_id, "explanations/html")}
    assert html == {f"explanations/html/{name}" for name in [*pages, "index.html"]}

    ids = ["--runs", run.run_id, other.run_id]
    assert main(["leaderboard", "--table", "ser", "--dataset", "demo", "--explain", *ids]) == 0
    board = capsys.readouterr().out
    header = next(line for line in board.splitlines() if "Plaus.%" in line)
    assert "DEMO Del.pp" in header and "DEMO Agr.%" in header
    row = next(line for line in board.splitlines() if "ssl-hubert" in line and "measured" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    deletion = cells[[c.strip() for c in header.strip("|").split("|")].index("DEMO Del.pp ↑")]
    assert deletion == f"{100 * logged['explain.deletion']:.1f}"  # the cell is the logged metric
    assert "has no explanation records" in board  # ssl-wavlm was not explained: said, not hidden

    assert main(["explain", run.run_id]) == 2
    assert "or --all of the run's test utterances" in capsys.readouterr().err
