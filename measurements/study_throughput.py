"""Study throughput: trials per hour with one worker and with several, and what a trial costs
beyond its own training and prediction.

Runs `python -m benchmark study NAME --no-refit` twice in the current folder (its mlflow.yaml and
mlruns/ are used as usual): first with one worker up to `--first` trials, then the same study
continued with `--workers N` up to `--total` trials. Each phase's wall time and the trials it
finished give its trials per hour. Then, per finished trial:

- Optuna's duration of the trial (`datetime_complete - datetime_start`);
- the duration of its fold runs in MLflow (training, validation, prediction and their logging);
- their difference, the *overhead*: asking Optuna for the trial, opening and ending the trial's
  MLflow run, logging the resolved config and environment, reporting intermediate values,
  building the data mixture and the model. It is what a study adds to `run --validation`.

Finally it prints the trials by their first parameter (for `beta`: the beta curve) and runs
`study NAME --report`, which logs the plots to the study run.

    python measurements/study_throughput.py beta --first 4 --total 8 --workers 2 [--backbone demo]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from mlflow import MlflowClient
from optuna.trial import TrialState

from benchmark.console import console
from benchmark.errors import BenchmarkError
from benchmark.study.search import TRIAL_RUN_ATTR, StudyRequest, open_study


def study_command(args: argparse.Namespace, trials: int, workers: int, *extra: str) -> list[str]:
    command = [sys.executable, "-m", "benchmark", "study", args.name, "--trials", str(trials)]
    command += ["--workers", str(workers), "--no-refit", "--no-progress", *extra]
    return command + (["--backbone", args.backbone] if args.backbone else [])


def finished(args: argparse.Namespace) -> dict[int, TrialState]:
    request = StudyRequest(args.name, backbone=args.backbone, worker=True)
    try:
        study = open_study(request).study
    except BenchmarkError:  # the study does not exist yet
        return {}
    return {t.number: t.state for t in study.get_trials(deepcopy=False) if t.state.is_finished()}


def run_phase(args: argparse.Namespace, trials: int, workers: int) -> tuple[float, dict[int, TrialState]]:
    before = finished(args)
    started = time.monotonic()
    subprocess.run(study_command(args, trials, workers), check=True)
    seconds = time.monotonic() - started
    new = {n: s for n, s in finished(args).items() if n not in before}
    return seconds, new


def fold_seconds(client: MlflowClient, run_id: str) -> float:
    run = client.get_run(run_id)
    folds = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'"
    )
    return sum((f.info.end_time - f.info.start_time) / 1000 for f in folds if f.info.end_time)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="study name (studies/NAME.yaml)")
    parser.add_argument("--first", type=int, default=4, help="trials of the one-worker phase")
    parser.add_argument("--total", type=int, default=8, help="trials after the second phase")
    parser.add_argument("--workers", type=int, default=2, help="workers of the second phase")
    parser.add_argument("--backbone", help="the spec's backbone unless given")
    args = parser.parse_args()

    phases = [("1 worker", *run_phase(args, args.first, 1))]
    phases.append((f"{args.workers} workers", *run_phase(args, args.total, args.workers)))

    console.print("| phase | trials | complete | pruned | failed | wall s | trials/h |")
    console.print("|---|---|---|---|---|---|---|")
    for label, seconds, trials in phases:
        states = list(trials.values())
        count = {s: states.count(s) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
        console.print(
            f"| {label} | {len(trials)} | {count[TrialState.COMPLETE]} | {count[TrialState.PRUNED]} | "
            f"{count[TrialState.FAIL]} | {seconds:.0f} | {len(trials) / seconds * 3600:.1f} |"
        )

    study = open_study(StudyRequest(args.name, backbone=args.backbone, worker=True)).study
    client = MlflowClient()
    overheads = []
    console.print("\n| trial | state | params | objective | trial s | fold runs s | overhead s |")
    console.print("|---|---|---|---|---|---|---|")
    trials = [t for t in study.get_trials() if t.state.is_finished() and t.duration is not None]
    for trial in sorted(trials, key=lambda t: [str(v) for v in t.params.values()]):
        total = trial.duration.total_seconds()
        run_id = trial.user_attrs.get(TRIAL_RUN_ATTR)
        folds = fold_seconds(client, run_id) if run_id else float("nan")
        if trial.state == TrialState.COMPLETE:
            overheads.append(total - folds)
        params = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items()
        )
        value = f"{trial.value:.3f}" if trial.state == TrialState.COMPLETE else "-"
        console.print(
            f"| {trial.number} | {trial.state.name} | {params} | {value} | {total:.0f} | {folds:.0f} | "
            f"{total - folds:.1f} |"
        )
    if overheads:
        spread = statistics.pstdev(overheads)
        console.print(f"\noverhead per complete trial: {statistics.mean(overheads):.1f} ± {spread:.1f} s")
    report = [sys.executable, "-m", "benchmark", "study", args.name, "--report"]
    subprocess.run(report + (["--backbone", args.backbone] if args.backbone else []), check=True)


if __name__ == "__main__":
    main()
