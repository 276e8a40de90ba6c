"""`run --seeds K`: each fold trained K times, seed runs under their fold's run, and the parent's
mean, std and interval over folds × seeds (clustered by fold); K = 1 is a run as before seeds."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from mlflow import MlflowClient
from scipy import stats

from benchmark.cli import main
from benchmark.data.records import PredictionRecord
from benchmark.eval.stats import seed_interval
from benchmark.tracking import tags as tag
from benchmark.tracking.artifacts import load_run_records
from benchmark.tracking.evaluated import EvaluatedRun, load_evaluated
from benchmark.tracking.lookup import fold_runs
from benchmark.workflows.run import RunRequest, run_experiment


def test_seed_interval_is_a_t_interval_over_fold_means():
    parts = [("1", 0, 0.5), ("1", 1, 0.7), ("2", 0, 0.4), ("2", 1, 0.4), ("3", 0, 0.9), ("3", 1, 0.5)]
    means = np.array([0.6, 0.4, 0.7])
    half = stats.t.ppf(0.975, 2) * means.std(ddof=1) / np.sqrt(3)
    assert seed_interval(parts) == pytest.approx((means.mean() - half, means.mean() + half))
    one_fold = [("1", s, v) for s, v in enumerate([0.5, 0.6, 0.8, 0.7])]  # the seeds are the units
    values = np.array([0.5, 0.6, 0.8, 0.7])
    half = stats.t.ppf(0.975, 3) * values.std(ddof=1) / 2
    assert seed_interval(one_fold) == pytest.approx((values.mean() - half, values.mean() + half))
    assert seed_interval([("1", 0, 0.3)]) == (0.3, 0.3)


def children(run_id: str) -> list:
    client = MlflowClient()
    experiment = client.get_run(run_id).info.experiment_id
    return client.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{run_id}'")


@pytest.mark.slow
def test_each_fold_trains_k_times_and_the_parent_averages_them(
    workdir: Path, capsys: pytest.CaptureFixture[str]
):
    summary = run_experiment(
        RunRequest(system="ssl-hubert", backbone="tiny", fold="all", epochs=1, seeds=2, progress=False)
    )
    parent = MlflowClient().get_run(summary.run_id)
    folds = children(summary.run_id)
    assert sorted(run.data.tags[tag.FOLD] for run in folds) == ["1", "2", "3", "4", "5"]
    trainings = []
    for fold_run in folds:
        assert fold_run.data.tags[tag.SEEDS] == "2"
        seeds = sorted(children(fold_run.info.run_id), key=lambda run: run.data.tags[tag.SEED_INDEX])
        assert [(r.data.tags[tag.SEED], r.data.tags[tag.SEED_INDEX]) for r in seeds] == [
            ("0", "0"),
            ("1", "1"),
        ]
        ua = [run.data.metrics["ser.ua"] for run in seeds]
        assert fold_run.data.metrics["ser.ua"] == pytest.approx(np.mean(ua))
        assert fold_run.data.metrics["ser.ua.std"] == pytest.approx(np.std(ua))
        for run in seeds:  # every training has its own records, which name their seed
            fold = fold_run.data.tags[tag.FOLD]
            records = load_run_records(run.info.run_id, f"fold-{fold}")
            assert {r.seed for r in records} == {int(run.data.tags[tag.SEED])}
            trainings.append((fold, int(run.data.tags[tag.SEED]), run.data.metrics["ser.ua"]))
    assert len(trainings) == 10
    values = [value for _, _, value in trainings]
    assert parent.data.metrics["ser.ua"] == pytest.approx(np.mean(values))
    assert parent.data.metrics["ser.ua.std"] == pytest.approx(np.std(values))
    low, high = seed_interval(trainings)
    assert (parent.data.metrics["ser.ua.ci_low"], parent.data.metrics["ser.ua.ci_high"]) == pytest.approx(
        (low, high)
    )
    assert summary.interval["ser.ua"] == pytest.approx((low, high))

    # The pooled records hold every training; recomputed, their UA is the parent's mean.
    evaluated = load_evaluated(parent)
    assert len(evaluated.records) == 2 * 40
    assert evaluated.scores("ser.ua").value == pytest.approx(parent.data.metrics["ser.ua"])
    # Tools that need one model per fold take its first seed's (the system's own seed).
    assert {run.data.tags[tag.SEED_INDEX] for run in fold_runs(parent).values()} == {"0"}
    capsys.readouterr()
    assert main(["leaderboard", "--table", "ser", "--dataset", "demo", "--runs", summary.run_id]) == 0
    board = capsys.readouterr().out
    row = next(line for line in board.splitlines() if "ssl-hubert" in line and "measured" in line)
    half = 100 * (high - low) / 2
    assert f"{100 * parent.data.metrics['ser.ua']:.1f} ± {half:.1f}" in row
    assert "folds × seeds" in board


@pytest.mark.slow
def test_one_seed_is_a_run_as_before(workdir: Path):
    summary = run_experiment(RunRequest(system="ssl-hubert", backbone="tiny", epochs=1, progress=False))
    (fold_run,) = children(summary.run_id)
    assert fold_run.data.tags[tag.SEED] == "0" and tag.SEEDS not in fold_run.data.tags
    assert children(fold_run.info.run_id) == [] and summary.interval == {} and summary.fold_std == {}
    assert not any(name.endswith(".ci_low") for name in MlflowClient().get_run(summary.run_id).data.metrics)
    assert all(r.seed is None for r in load_run_records(fold_run.info.run_id, "fold-1"))


def record(utterance: str, fold: str, seed: int | None) -> PredictionRecord:
    return PredictionRecord(
        id=utterance, ref_emotion="sad", hyp_emotion="sad", ref_transcript=None, hyp_transcript=None,
        ref_descriptor=None, hyp_descriptor=None, raw_output=None, fold=fold, seed=seed,
    )  # fmt: skip


def test_compare_crosses_seeds_with_speakers_and_folds_only_where_speakers_span_them():
    records = [record(u, f, s) for u, f in (("a1", "1"), ("a2", "1"), ("b1", "2")) for s in (0, 1)]
    evaluated = EvaluatedRun(SimpleNamespace(data=SimpleNamespace(tags={})), records)
    evaluated.__dict__["speakers"] = {r.key: r.id[0] for r in records}  # speakers a (fold 1), b (fold 2)
    assert [r.key for r in records][:2] == ["a1@seed0", "a1@seed1"]
    assert evaluated.replicates == {r.key: f"/{r.seed}" for r in records}  # nested: seeds only
    crossed = [*records, record("a3", "2", 0)]  # speaker a is now tested in fold 2 too
    evaluated = EvaluatedRun(SimpleNamespace(data=SimpleNamespace(tags={})), crossed)
    evaluated.__dict__["speakers"] = {r.key: r.id[0] for r in crossed}
    assert evaluated.replicates["a3@seed0"] == "2/0" and evaluated.replicates["a1@seed1"] == "1/1"
