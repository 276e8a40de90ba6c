"""`python -m benchmark study NAME`: an Optuna study whose every trial is a `benchmark run`.

The spec (`studies/NAME.yaml`, `benchmark.config.StudySpec`) names system, corpus, search space,
sampler, pruner, trial count and a validation objective. Steps: (1) the Optuna study is named
`NAME-<digest of the resolved spec>`, so the same command continues it and a changed one starts
another; (2) the MLflow experiment, the study and its MLflow run are created once, the run's id
kept as a study user attribute so that workers on any machine attach their trials to it; (3)
`--workers N` workers take trials until the count is reached: a trial is `run --validation` with
no test evaluation, pruned on its per-epoch validation loss, and a dead worker's trial is failed
and queued again (`benchmark.study.storage`); (4) the best trial (or every row) is refit on the
whole training part and scored once on the test part. Details: docs/studies.md.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from mlflow import MlflowClient
from optuna.trial import FrozenTrial, Trial, TrialState

from benchmark.config import SYSTEM_PARAM, StudySpec, SystemConfig, dotted_override, merge_configs, validate
from benchmark.errors import BenchmarkError
from benchmark.nn.backbones import get_backbone
from benchmark.registry import load_study
from benchmark.study.storage import (
    StudyStorage,
    TrialHeartbeat,
    default_storage,
    fail_stale_trials,
    parse_storage,
    retried_numbers,
    retry_callback,
)
from benchmark.tracking import tags as tag
from benchmark.tracking.lifecycle import RUNNING, end_stale_run, tracking_write
from benchmark.tracking.lookup import refit_runs
from benchmark.tracking.store import MlflowConfig, load_mlflow_config, tracking_setup
from benchmark.tracking.tags import digest
from benchmark.workflows.run import RunRequest, run_experiment

# Optuna study user attributes: what every worker reads back from the study.
SPEC_ATTR, RUN_ATTR, TRACKING_ATTR, QUEUED_ATTR = "spec", "mlflow_run_id", "tracking_uri", "fixed_queued"
TRIAL_RUN_ATTR = "mlflow_run_id"  # per trial: the id of its MLflow run
REFIT_KINDS = ("study-best", "study-refit")
# How often a coordinator looks at its workers (seconds), and how many it may start in all.
POLL_S = 2.0


@dataclass(frozen=True)
class StudyRequest:
    """Everything `benchmark study` was asked for (see `cli.py` for the flags)."""

    name: str
    trials: int | None = None
    workers: int = 1
    storage: str | None = None
    dataset: str | None = None
    backbone: str | None = None
    epochs: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    resume: bool = False  # a re-run trial continues from its checkpoints (`run --resume`)
    refit: bool = True
    worker: bool = False  # only take trials of an existing study (another machine's, or ours)
    progress: bool = True


def resolve_spec(request: StudyRequest) -> StudySpec:
    """The registry's spec with the command line's changes, validated again."""
    spec = load_study(request.name)
    changes: dict[str, Any] = {}
    for key in ("dataset", "backbone", "epochs", "trials"):
        if (value := getattr(request, key)) is not None:
            changes[key] = value
    if request.overrides:
        changes["overrides"] = merge_configs(spec.overrides, request.overrides)
    if spec.sampler.kind == "queue" and "trials" in changes:
        raise BenchmarkError(f"study '{spec.name}' runs its {len(spec.fixed)} fixed trials; drop --trials")
    resolved = validate(StudySpec, {**spec.model_dump(), **changes}, f"study '{spec.name}' with {changes}")
    if get_backbone(resolved.backbone).random_weights:  # its trials would score nothing to compare
        raise BenchmarkError(
            f"study '{spec.name}': backbone '{resolved.backbone}' has random weights and scores nothing",
            hint="a study compares trials by their scores: choose a backbone with pretrained weights",
        )
    return resolved


def study_name(spec: StudySpec) -> str:
    """`NAME-<digest>`: everything but the trial count identifies a study (module docstring)."""
    identity = spec.model_dump(mode="json", exclude={"trials", "title", "description", "paper"})
    return f"{spec.name}-{digest(identity, length=10)}"


def make_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    if spec.sampler.kind == "tpe":
        return optuna.samplers.TPESampler(
            seed=spec.sampler.seed, n_startup_trials=spec.sampler.startup_trials
        )
    return optuna.samplers.RandomSampler(seed=spec.sampler.seed)  # `queue`: only queued trials run


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    if spec.pruner.kind == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=spec.pruner.startup_trials, n_warmup_steps=spec.pruner.warmup_steps
        )
    return optuna.pruners.NopPruner()


@dataclass(frozen=True)
class OpenStudy:
    """A study as a worker sees it: the spec, the Optuna study, its storage and its MLflow run."""

    spec: StudySpec
    study: optuna.Study
    storage: StudyStorage
    run_id: str
    mlflow: MlflowConfig


def open_study(request: StudyRequest) -> OpenStudy:
    """Set up tracking and load (or, unless a worker, create) the study; see the module docstring."""
    spec = resolve_spec(request)
    config = load_mlflow_config()
    tracking_setup(config)
    storage = parse_storage(request.storage) if request.storage else default_storage(config)
    if request.workers > 1 and not storage.multi_process:
        raise BenchmarkError(
            f"--storage {storage.display()} is safe for one worker process only",
            hint="use the default journal file, or a PostgreSQL server, for --workers > 1",
        )
    backend = storage.open(int(config.runs.heartbeat_s), int(config.runs.stale_after_s), spec.max_retries)
    name = study_name(spec)
    if request.worker:
        try:
            study = optuna.load_study(study_name=name, storage=backend, sampler=make_sampler(spec),
                                      pruner=make_pruner(spec))  # fmt: skip
        except KeyError as err:
            raise BenchmarkError(
                f"no study {name} ({spec.name} with these options) in {storage.display()}",
                hint="start it first with the same options and without --worker or --report",
            ) from err
    else:
        study = optuna.create_study(
            study_name=name,
            storage=backend,
            sampler=make_sampler(spec),
            pruner=make_pruner(spec),
            direction=spec.objective.direction,
            load_if_exists=True,
        )
    attrs = study.user_attrs
    if attrs.get(TRACKING_ATTR, config.tracking_uri) != config.tracking_uri:
        raise BenchmarkError(
            f"study {name} logs its runs to {attrs[TRACKING_ATTR]}, this process to {config.tracking_uri}",
            hint="point MLFLOW_TRACKING_URI (or mlflow.yaml) at the study's tracking server",
        )
    if RUN_ATTR not in attrs:
        if request.worker:
            raise BenchmarkError(
                f"study {name} has no MLflow run yet", hint="start it without --worker first"
            )
        return OpenStudy(spec, study, storage, "", config)
    return OpenStudy(spec, study, storage, attrs[RUN_ATTR], config)


def study_tags(opened: OpenStudy) -> dict[str, str]:
    spec = opened.spec
    return {
        tag.KIND: "study", tag.STUDY: spec.name, "optuna_study": opened.study.study_name,
        "objective": spec.objective.metric, "direction": spec.objective.direction,
        "optuna_storage": opened.storage.display(), "dataset": spec.dataset, "backbone": spec.backbone,
        "trials": str(spec.n_trials),
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------
# One trial
# ---------------------------------------------------------------------------------------------


def suggest(trial: Trial, spec: StudySpec) -> dict[str, Any]:
    """The trial's parameters: queued values (fixed trials, retries) or the sampler's choice."""
    params: dict[str, Any] = {}
    for name, space in spec.params.items():
        if space.type == "categorical":
            params[name] = trial.suggest_categorical(name, space.choices)
        elif space.type == "int":
            params[name] = trial.suggest_int(name, int(space.low), int(space.high), log=space.log)
        else:
            params[name] = trial.suggest_float(name, space.low, space.high, log=space.log)
    return params


def run_request(spec: StudySpec, params: dict[str, Any], **fields: Any) -> RunRequest:
    """The `benchmark run` of a set of parameters: `system` picks the variant, `beta` is `--beta`,
    any other parameter a `--set` of its dotted field, over the spec's own overrides."""
    overrides = dict(spec.overrides)
    for name, value in params.items():
        if name not in (SYSTEM_PARAM, "beta"):
            overrides = merge_configs(overrides, dotted_override(name, value))
    return RunRequest(
        system=str(params.get(SYSTEM_PARAM, spec.system)),
        beta=params.get("beta"),
        dataset=spec.dataset,
        backbone=spec.backbone,
        fold=spec.fold,
        epochs=spec.epochs,
        overrides=overrides,
        **fields,
    )


class TrialObserver:
    """Links a trial to its MLflow run and reports the validation loss of each epoch of the system's
    last stage, pruning on it.

    Only the last stage counts: an earlier stage trains other tasks on its own validation loss
    (stage 1 of the alternating schedule: ASR alone, with zero descriptor tokens), which says
    nothing of an emotion objective and jumps at the stage boundary; pruning on it stopped trials
    of the paper's own beta after three epochs of ASR. Steps are the last stage's epochs, so the
    pruner's `warmup_steps` count those. Optuna's pruners compare intermediate values in the
    study's direction, so a metric of the other direction (`val.ce`, lower is better, in a study
    that maximises UA) is reported negated. A trial of several trainings (`training.seeds`, or
    folds) runs every stage again in each: their last stages' epochs are reported one after
    another, so step k of the second training follows the first's last step.
    """

    def __init__(self, trial: Trial, spec: StudySpec) -> None:
        self.trial, self.spec = trial, spec
        self.run_id: str | None = None
        self.epoch = 0
        self.earlier_epochs = 0  # epochs of the stages before the last, not reported
        self.last_epochs = 0  # epochs of the last stage (0: an SSL baseline, whose every epoch counts)
        self.last_stage = ""
        self.sign = 1.0 if spec.pruner.direction == spec.objective.direction else -1.0

    def started(self, run_id: str, system: SystemConfig) -> None:
        self.run_id = run_id
        self.trial.set_user_attr(TRIAL_RUN_ATTR, run_id)
        if system.stages:  # an LLM system; an SSL baseline's heads train in one run
            self.earlier_epochs = sum(stage.epochs for stage in system.stages[:-1])
            self.last_epochs = system.stages[-1].epochs
            self.last_stage = f" of stage '{system.stages[-1].name}'"

    def step(self) -> int | None:
        """The pruner's step of the epoch just validated; None for an epoch of an earlier stage."""
        if not self.last_epochs:
            return self.epoch
        training, within = divmod(self.epoch - 1, self.earlier_epochs + self.last_epochs)
        if within < self.earlier_epochs:
            return None
        return training * self.last_epochs + within - self.earlier_epochs + 1

    def validated(self, metrics: dict[str, float]) -> None:
        metric = self.spec.pruner.metric
        if metric not in metrics:
            return
        self.epoch += 1
        step = self.step()
        if step is None:
            return
        self.trial.report(self.sign * metrics[metric], step)
        if self.trial.should_prune():
            why = f"pruned after epoch {step}{self.last_stage}: {metric} = {metrics[metric]:.4f}"
            raise optuna.TrialPruned(why)


def _tag(run_id: str | None, tags: dict[str, str]) -> None:
    if run_id:
        client = MlflowClient()
        for key, value in tags.items():
            tracking_write(client.set_tag, run_id, key, value)


def run_trial(opened: OpenStudy, trial: Trial, resume: bool, progress: bool) -> None:
    """Run one trial to its end and tell Optuna how it ended (module docstring, step 3)."""
    spec, study = opened.spec, opened.study
    beat = TrialHeartbeat(study._storage, opened.storage, trial._trial_id, opened.mlflow.runs.heartbeat_s)
    observer = TrialObserver(trial, spec)
    try:
        retry_of = study._storage.get_trial(trial._trial_id).system_attrs.get("failed_trial")
        params = suggest(trial, spec)
        shown = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
        print(f"trial {trial.number} of study {spec.name}: {shown}", file=sys.stderr)
        tags = {
            tag.KIND: "trial", tag.STUDY: spec.name, tag.TRIAL: str(trial.number),
            "optuna_study": study.study_name, "mlflow.parentRunId": opened.run_id,
        }  # fmt: skip
        if retry_of is not None:
            tags["retry_of"] = str(retry_of)
        request = run_request(
            spec, params, validation=True, test=False, tags=tags, name=f"trial {trial.number}: {shown}",
            observer=observer, resume=resume and retry_of is not None, progress=progress,
        )  # fmt: skip
        summary = run_experiment(request)
        if spec.objective.metric not in summary.mean:
            raise BenchmarkError(
                f"trial {trial.number}: the run logged no {spec.objective.metric}",
                hint="the objective must be a val.* metric the system produces (e.g. val.ser.ua)",
            )
        value = summary.mean[spec.objective.metric]
    except optuna.TrialPruned as pruned:
        study.tell(trial, state=TrialState.PRUNED)
        _tag(observer.run_id, {"trial_state": "PRUNED", "pruned": str(pruned)})
        return
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: FAIL, and queued again for the next worker
        study.tell(trial, state=TrialState.FAIL)
        _tag(observer.run_id, {"trial_state": "FAIL"})
        retry_callback(spec.max_retries)(study, study._storage.get_trial(trial._trial_id))
        raise
    except Exception:
        study.tell(trial, state=TrialState.FAIL)
        _tag(observer.run_id, {"trial_state": "FAIL"})
        raise
    finally:
        beat.stop()
    study.tell(trial, value)
    _tag(observer.run_id, {"trial_state": "COMPLETE"})


# ---------------------------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------------------------


def counted(trials: Sequence[FrozenTrial]) -> int:
    """The trials that count towards the study's total: all but the failed attempts run again."""
    retried = retried_numbers(list(trials))
    return sum(1 for t in trials if not (t.state == TrialState.FAIL and t.number in retried))


def is_complete(opened: OpenStudy) -> bool:
    trials = opened.study.get_trials(deepcopy=False)
    if any(t.state in (TrialState.WAITING, TrialState.RUNNING) for t in trials):
        return False
    return opened.spec.sampler.kind == "queue" or counted(trials) >= opened.spec.n_trials


def sweep_stale(opened: OpenStudy) -> list[FrozenTrial]:
    """Fail (and queue again) the trials whose worker is gone, and end their MLflow runs FAILED."""
    failed = fail_stale_trials(
        opened.study, opened.storage, opened.mlflow.runs.stale_after_s, opened.spec.max_retries
    )
    client = MlflowClient()
    for trial in failed:
        print(f"trial {trial.number}: its worker is gone; failed and queued again", file=sys.stderr)
        run_id = trial.user_attrs.get(TRIAL_RUN_ATTR)
        if not run_id:
            continue
        children = client.search_runs(
            [client.get_run(run_id).info.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{run_id}' and attributes.status = '{RUNNING}'",
        )
        for run in [client.get_run(run_id), *children]:
            if run.info.status == RUNNING:
                end_stale_run(client, run, "its study worker is gone", tags={"trial_state": "FAIL"})
    return failed


def next_trial(opened: OpenStudy) -> Trial | None:
    """A queued trial, else a new one while the study is short of its count; None when it is done."""
    study = opened.study
    with opened.storage.claim(study._storage):
        trials = study.get_trials(deepcopy=False)
        waiting = any(t.state == TrialState.WAITING for t in trials)
        if not waiting and (opened.spec.sampler.kind == "queue" or counted(trials) >= opened.spec.n_trials):
            return None
        return study.ask()


def work(opened: OpenStudy, resume: bool = False, progress: bool = True) -> int:
    """Take trials until the study has its count; returns how many this worker ran."""
    done = 0
    while True:
        sweep_stale(opened)
        trial = next_trial(opened)
        if trial is None:
            return done
        try:
            run_trial(opened, trial, resume, progress)
        except BenchmarkError:
            raise  # a mistake in the setup fails every trial alike: stop here
        except KeyboardInterrupt:
            raise
        except Exception as err:  # this trial's own failure (FAIL in Optuna and MLflow); go on
            print(f"trial {trial.number} failed: {type(err).__name__}: {err}", file=sys.stderr)
        done += 1


# ---------------------------------------------------------------------------------------------
# The study: set up, search, refit
# ---------------------------------------------------------------------------------------------


def refit(opened: OpenStudy, progress: bool) -> dict[int, str]:
    """Train the chosen trials' parameters on the full training part and score the test part once;
    nothing when no trial completed (all pruned or failed)."""
    spec, study = opened.spec, opened.study
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return {}
    best = study.best_trial
    chosen = complete if spec.refit == "every" else [best]
    done = refit_runs(opened.run_id)
    seen: list[dict[str, Any]] = []
    for trial in sorted(chosen, key=lambda t: t.number):
        if trial.params in seen:  # a retried point: refit once
            continue
        seen.append(trial.params)
        if trial.number in done:
            continue
        kind = "study-best" if trial.number == best.number else "study-refit"
        tags = {
            tag.KIND: kind, tag.STUDY: spec.name, "optuna_study": study.study_name,
            tag.STUDY_RUN: opened.run_id, tag.REFIT_OF: str(trial.number),
            f"trial.{spec.objective.metric}": f"{trial.value:.6g}",
        }  # fmt: skip
        summary = run_experiment(
            run_request(
                spec,
                trial.params,
                tags=tags,
                name=f"{spec.name} refit of trial {trial.number}",
                progress=progress,
            )
        )
        done[trial.number] = summary.run_id
    if spec.refit == "best":
        _tag(opened.run_id, {"best_trial": str(best.number), "best_run": done[best.number]})
    return done
