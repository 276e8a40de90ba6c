"""`python -m benchmark study NAME`: the coordinator of a study, and `study NAME --report`.

It opens the study and its MLflow run (once), queues the spec's fixed trials, runs the trials here
or in local worker processes, refits the chosen trials on the whole training part, and logs the
plots; a `--worker` only takes trials. The steps are `benchmark.study.search`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna

from benchmark.config import StudySpec
from benchmark.study.report import log_study_plots
from benchmark.study.search import (
    QUEUED_ATTR,
    RUN_ATTR,
    SPEC_ATTR,
    TRACKING_ATTR,
    OpenStudy,
    StudyRequest,
    is_complete,
    open_study,
    refit,
    study_tags,
    sweep_stale,
    work,
)
from benchmark.study.storage import StudyStorage
from benchmark.study.workers import run_workers
from benchmark.tracking.lookup import refit_runs
from benchmark.tracking.runs import held_run


@dataclass(frozen=True)
class StudySummary:
    spec: StudySpec
    study: optuna.Study
    storage: StudyStorage
    run_id: str
    refits: dict[int, str]  # trial number -> refit run id
    complete: bool


def queue_fixed(opened: OpenStudy) -> None:
    """Queue the spec's fixed trials once per study, in their order (under the claim lock)."""
    study = opened.study
    with opened.storage.claim(study._storage):
        if study.user_attrs.get(QUEUED_ATTR):
            return
        for row in opened.spec.fixed:
            study.enqueue_trial(dict(row))
        study.set_user_attr(QUEUED_ATTR, True)


def report_study(request: StudyRequest) -> StudySummary:
    """`--report`: the study as it stands (no trial run), its plots logged again to its run."""
    opened = open_study(StudyRequest(**{**request.__dict__, "worker": True}))
    log_study_plots(opened.study, opened.spec, opened.run_id)
    refits = refit_runs(opened.run_id)
    return StudySummary(opened.spec, opened.study, opened.storage, opened.run_id, refits, is_complete(opened))


def run_study(request: StudyRequest) -> StudySummary | None:
    """The whole `study` command (module docstring); a `--worker` returns None after its trials."""
    if request.worker:
        opened = open_study(request)
        # Workers seeded alike would draw the same points: the spec's seed makes one worker's study
        # reproducible, and N workers take their trials in no fixed order anyway.
        opened.study.sampler.reseed_rng()
        work(opened, request.resume, request.progress)
        return None
    opened = open_study(request)
    spec = opened.spec
    with held_run(f"study {spec.name}", study_tags(opened), run_id=opened.run_id or None) as run_id:
        if not opened.run_id:
            opened.study.set_user_attr(RUN_ATTR, run_id)
            opened.study.set_user_attr(TRACKING_ATTR, opened.mlflow.tracking_uri)
            opened.study.set_user_attr(SPEC_ATTR, spec.model_dump(mode="json"))
            opened = OpenStudy(spec, opened.study, opened.storage, run_id, opened.mlflow)
        queue_fixed(opened)
        sweep_stale(opened)  # trials left RUNNING by a worker that died before this command
        if request.workers == 1:
            work(opened, request.resume, request.progress)
        else:
            run_workers(opened, request)
        complete = is_complete(opened)
        refits = refit(opened, request.progress) if complete and request.refit else refit_runs(run_id)
        log_study_plots(opened.study, spec, run_id)
    return StudySummary(spec, opened.study, opened.storage, run_id, refits, complete)
