"""`python -m benchmark run`: train and evaluate one system on a corpus's folds, tracked in MLflow.

One parent run per call (the tags of `benchmark.tracking.tags.run_tags`; params the resolved
system), one nested run per fold with its curves, records, metrics, confusion matrix and trained
model; the parent holds the mean and std over folds and the pooled records. With `--seeds K` a fold's
run holds a run per seed instead, and the parent adds each mean's interval (`seed_interval`). Each
fold trains on the target corpus's training part plus that of every `train_with` corpus (the
paper's protocol, section 4.1) and logs what it trained on; a fold whose test audio is in that
mixture is refused first (`workflows.overlap`). Inputs stream batch by batch from a feature
source: `cache` (the frozen encoder's outputs, computed once per utterance) or `online` (the
encoder runs in the step).
Under `torchrun` or the `deepspeed` launcher it is still one run: rank 0 alone writes to MLflow and
picks the checkpoint folder, every rank trains its shard and predicts its share (`benchmark.ranks`).
`--resume` continues the newest interrupted run of the same `config_digest`. A backbone with random
weights logs training speed and memory only. Any exception marks the runs FAILED (a stop: KILLED).
Details: docs/training.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from mlflow.entities import Run

from benchmark.config import DatasetCard, SystemConfig, benchmark_home, override_system
from benchmark.data.audit import Finding
from benchmark.data.examples import Example, examples_of
from benchmark.data.features import FeatureLoader
from benchmark.data.manifest import Utterance
from benchmark.data.prepare import is_prepared, manifest_digest, prepared_dir
from benchmark.data.splits import (
    Fold,
    Mixture,
    check_validation,
    fold_names,
    training_mixture,
    training_part,
)
from benchmark.errors import BenchmarkError
from benchmark.eval.predict import predict
from benchmark.eval.stats import seed_interval
from benchmark.nn.backbones import Backbone, get_backbone
from benchmark.ranks import all_gathered, broadcast, is_lead, world
from benchmark.registry import load_dataset_card, load_system
from benchmark.tracking import tags as tag
from benchmark.tracking.log import (
    DatasetContext,
    log_artifact,
    log_dataset,
    log_environment,
    log_metrics,
    log_params,
)
from benchmark.tracking.lookup import interrupted_run
from benchmark.tracking.runs import run_context
from benchmark.tracking.store import load_mlflow_config, tracking_setup
from benchmark.tracking.tags import RunSetup, digest, run_tags
from benchmark.workflows.overlap import (
    audit_mixture,
    log_overlap,
    overlap_notes,
    overlap_tags,
    refuse_overlap,
    tested_ids,
)
from benchmark.workflows.scoring import log_split, split_scores

if TYPE_CHECKING:
    from benchmark.nn.encoder import SpeechEncoder, TopLayers
    from benchmark.train.trained import TrainedModel


class RunObserver(Protocol):
    """Follows a run as it goes (a study's trial): told the parent run's id and the resolved system
    when it opens, and the validation metrics of every epoch (`val.ce`, `val.loss`, in the order of
    the system's stages and epochs), on which it may stop the run by raising (a pruned trial)."""

    def started(self, run_id: str, system: SystemConfig) -> None: ...

    def validated(self, metrics: dict[str, float]) -> None: ...


@dataclass
class RunRequest:
    """Everything `benchmark run` was asked for; `overrides` are the `--set` ones (`resolve_system`).

    `test=False` (a study's trial) trains and scores the validation set only: the test part is
    neither predicted nor logged. `tags` are added to the parent run's (a trial's `study`,
    `trial`, `kind` and `mlflow.parentRunId`), and `name` replaces its name.
    """

    system: str
    beta: float | None = None
    dataset: str = "demo"
    backbone: str = "demo"
    fold: str | None = None  # None: the dataset card's default_fold
    train_with: tuple[str, ...] | None = None  # None: the card's protocol.train_with; () for none
    validation: bool = False  # hold out the card's validation set and score it
    epochs: int | None = None
    seeds: int | None = None  # trainings per fold (`--seeds K`); None: the system's training.seeds
    engine: str = "plain"
    resume: bool = False
    features: str | None = None  # the feature source, "cache" or "online"; None: the backbone's
    loader_workers: int | None = None  # batch-loading processes; None: 4 on a GPU, 0 on a CPU
    overrides: dict[str, Any] = field(default_factory=dict)
    progress: bool = True
    test: bool = True
    tags: dict[str, str] = field(default_factory=dict)
    name: str | None = None
    observer: RunObserver | None = None
    allow_overlap: bool = False  # train a fold whose test audio is in its training mixture (tagged)


@dataclass
class RunSummary:
    """Per fold its metrics (with seeds: their mean over the seeds, and `fold_std` their std); the
    mean and std over every training; with seeds, each mean's interval (`seed_interval`)."""

    run_id: str
    system: SystemConfig
    fold_metrics: dict[str, dict[str, float]]
    mean: dict[str, float]
    std: dict[str, float]
    fold_std: dict[str, dict[str, float]] = field(default_factory=dict)
    interval: dict[str, tuple[float, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what the CLI says under the results (the audit's)


def resolve_system(request: RunRequest, backbone: Backbone) -> SystemConfig:
    """The system a run trains: its YAML with overrides deep-merged on top, the later winning:

        system YAML (its `inherits:` chain) < backbone profile < --beta < --set < --epochs, --seeds

    The backbone's profile: `demo` and `tiny` train every LLM weight and `demo` trains every stage
    for a multiple of the YAML's epochs. `--set` merges mappings key by key and replaces lists
    whole (`--set 'stages=[...]'` trains exactly the stages given); `--epochs` sets the epochs of
    every stage and of the SSL heads. `--set` and `--epochs` make the run's `recipe` `custom`.
    """
    system = load_system(request.system)
    system = override_system(system, backbone.overrides(system))
    if request.beta is not None:
        system = override_system(system, {"beta": request.beta})
    system = override_system(system, request.overrides)
    if request.epochs is not None:  # e.g. a quick smoke run with --epochs 1
        stages = [{**stage.model_dump(), "epochs": request.epochs} for stage in system.stages]
        system = override_system(system, {"stages": stages, "ssl": {"epochs": request.epochs}})
    if request.seeds is not None:
        system = override_system(system, {"training": {"seeds": request.seeds}})
    return system


def training_corpora(request: RunRequest, card: DatasetCard) -> list[DatasetCard]:
    """The cards of the corpora that train with `card`, checked (like `card`) before any data is read."""
    if card.reader != "demo" and not is_prepared(card):
        raise BenchmarkError(
            f"{card.name} is not prepared",
            hint=f"run `python -m benchmark data prepare {card.name} --root PATH` (see `data list`)",
        )
    names = card.protocol.train_with if request.train_with is None else list(request.train_with)
    cards = []
    for name in dict.fromkeys(names):
        if name == card.name:
            raise BenchmarkError(
                f"--train-with {name}: the target corpus already trains on its own training part"
            )
        other = load_dataset_card(name)
        training_part(other, {})  # a zero-shot corpus is refused here
        if other.reader != "demo" and not is_prepared(other):
            source = "--train-with" if request.train_with is not None else f"datasets/{card.name}.yaml"
            raise BenchmarkError(
                f"{name} is not prepared; {source} trains {card.name} with it",
                hint=f"run `python -m benchmark data prepare {name} --root PATH`, or pass --train-with none",
            )
        cards.append(other)
    return cards


def config_digest(system: SystemConfig, request: RunRequest, train_with: list[str], features: str) -> str:
    """A digest of everything that changes training, so --resume finds its checkpoints and run."""
    return digest(
        [
            system.model_dump(mode="json"), request.dataset, request.backbone, request.engine,
            sorted(train_with), request.validation, features,
        ]
    )  # fmt: skip


def checkpoint_root(digest: str, system: SystemConfig, resumed: Run | None) -> Path:
    """Where a run keeps its checkpoints: the interrupted run's folder when it resumes one (runs of
    before per-run folders used the configuration's folder itself), else a folder of its own. With
    several processes rank 0 chooses and the others are told (a folder every node reaches)."""
    configuration = benchmark_home() / "checkpoints" / f"{system.name}-{digest}"
    if resumed is not None:
        return Path(resumed.data.tags.get(tag.CHECKPOINTS, configuration))
    return configuration / uuid.uuid4().hex[:12]


def resumable_run(digest: str, world_size: int) -> Run | None:
    """The newest interrupted run of the same `config_digest`, checked to have run with as many
    processes: the batches each rank saw and DeepSpeed's sharded state depend on the world size."""
    resumed = interrupted_run(tag.CONFIG_DIGEST, digest)
    if resumed is not None and int(resumed.data.tags.get(tag.WORLD_SIZE, "1")) != world_size:
        raise BenchmarkError(
            f"run {resumed.info.run_id} trained with {resumed.data.tags.get(tag.WORLD_SIZE, '1')} processes, "
            f"this one has {world_size}",
            hint="resume it with the same number of processes, or start afresh without --resume",
        )
    return resumed


def log_fold_data(mixture: Mixture, fold: Fold, system: SystemConfig, test: bool = True) -> None:
    """What the fold trained and was scored on, as params and MLflow dataset inputs (the test part
    only when it is scored)."""
    from benchmark.train.data import task_counts

    card, training = mixture.card, mixture.training_rows(fold)
    params: dict[str, int] = {}
    for name in mixture.cards:
        params[f"data.{name}.train_utterances"] = sum(row.dataset == name for row in training)
    for name, count in mixture.outside_labels.items():
        params[f"data.{name}.emotion_outside_labels"] = count
    params[f"data.{card.name}.validation_utterances"] = len(fold.validation)
    params[f"data.{card.name}.test_utterances"] = len(fold.test)
    examples = examples_of(training, {row.id: torch.zeros(1, 1, 1) for row in training})
    if system.kind == "ssl":
        stage_tasks = [("ssl", task) for task in ("ser", "asr")]
    else:
        stage_tasks = [(stage.name, task) for stage in system.stages for task in stage.tasks]
    for stage, task in stage_tasks:
        for name, count in task_counts(examples, task).items():
            params[f"train.{stage}.{task}.{name}"] = count
    log_params(params)
    parts: list[tuple[list[Utterance], str, DatasetContext]] = [
        ([row for row in training if row.dataset == name], name, "training") for name in mixture.cards
    ]
    parts += [(fold.validation, card.name, "validation")]
    parts += [(fold.test, card.name, "test")] if test else []
    for rows, name, context in parts:
        if rows:
            source = mixture.cards[name]
            log_dataset(rows, name, context, prepared_dir(name), manifest_digest(source))


@dataclass(frozen=True)
class RunPlan:
    """What every fold of one `run` shares: the resolved system, the data and its inputs."""

    system: SystemConfig
    request: RunRequest
    backbone: Backbone
    mixture: Mixture
    features: dict[str, FeatureLoader]  # by row id: cache-file or audio loaders of the feature source
    encoder_shape: tuple[int, int]
    digest: str  # config_digest: --resume
    source: str  # the feature source, "cache" or "online"
    encoder: SpeechEncoder | None = None  # on the training device, for the online source
    top_layers: TopLayers | None = None  # pretrained encoder layers a `kind: ssl` system fine-tunes
    checkpoints: Path | None = None  # the run's checkpoint folder (`checkpoint_root`)
    overlap: list[Finding] = field(default_factory=list)  # `audit_mixture`: every fold's findings

    def examples(self, rows: list[Utterance]) -> list[Example]:
        return examples_of(rows, self.features)

    @property
    def loader_workers(self) -> int:
        workers = self.request.loader_workers
        return workers if workers is not None else (4 if torch.cuda.is_available() else 0)


@dataclass(frozen=True)
class FoldResult:
    records: list[dict]  # on rank 0; empty on the others
    scores: dict[str, float]
    validation: dict[str, float]  # `val.<metric>`; empty without --validation


def training_log(request: RunRequest) -> Callable[[dict[str, float], int], None]:
    """Where the training loop's metrics go: MLflow, and the validation ones to the observer too."""
    observer = request.observer
    if observer is None:
        return log_metrics

    def log(metrics: dict[str, float], step: int) -> None:
        log_metrics(metrics, step)
        if any(name.startswith("val.") for name in metrics):
            observer.validated(metrics)

    return log


def require_gpu(backbone: Backbone) -> None:
    """A backbone with random weights is paper-size (8B parameters) and for measuring GPU speed and
    memory only: without a GPU, one line saying where to measure instead."""
    if backbone.random_weights and not torch.cuda.is_available():
        raise BenchmarkError(
            f"--backbone {backbone.name} has random weights and paper-size models (8B parameters): it is "
            "for measuring GPU speed and memory, and this machine has no GPU",
            hint="on a GPU: python measurements/gpu_check.py --out DIR (on CPU, --tiny runs it small)",
        )


def build_device(backbone: Backbone) -> contextlib.AbstractContextManager:
    """Where an LLM system is built: random stand-in weights on the GPU this process trains on
    (initialising 8B parameters takes minutes on a CPU), loaded or tiny ones on the CPU."""
    if not backbone.random_weights:
        return contextlib.nullcontext()
    from benchmark.train.engine import training_device

    return torch.device(training_device(int(os.environ.get("LOCAL_RANK", "0"))))


def run_fold(plan: RunPlan, fold: Fold) -> FoldResult:
    """Train from scratch on the fold's training rows (mixture included), then predict and score
    its test rows (unless `request.test` is off), and its validation rows first when it has them.

    `kind: ssl` systems train the SSL baseline's heads and, with `ssl.finetune_layers`, the
    encoder's top layers (`benchmark.train.ssl`), without checkpoints;
    `kind: llm` systems train every stage of their schedule (`benchmark.train.loop`). With random
    weights the fold stops after training: nothing is predicted, scored or logged but the curves.
    Every rank runs it; rank 0 alone logs, and gets the records and scores.
    """
    system, request, card, encoder = plan.system, plan.request, plan.mixture.card, plan.encoder
    training = plan.examples(plan.mixture.training_rows(fold))
    if system.kind == "ssl":
        from benchmark.train.ssl import build_ssl_baseline, predict_ssl, train_ssl

        torch.manual_seed(system.training.seed)
        model = build_ssl_baseline(system, *plan.encoder_shape, card.labels, top_layers=plan.top_layers)
        validation = plan.examples(fold.validation)
        log = training_log(request)
        train_ssl(model, training, system, log, request.progress, validation, encoder)

        def predict_rows(rows: list[Utterance]) -> list[dict]:
            examples = plan.examples(rows)
            return predict_ssl(model, examples, fold.name, progress=request.progress, encoder=encoder)

    else:
        from benchmark.nn.system import build_system
        from benchmark.train.loop import train

        checkpoints = plan.checkpoints / f"fold-{fold.name}" if plan.checkpoints else None
        torch.manual_seed(system.training.seed)
        with build_device(plan.backbone):
            model = build_system(system, *plan.encoder_shape, backbone=plan.backbone.name)
        train(
            model,
            training,
            engine=request.engine,
            checkpoint_dir=checkpoints,
            resume=request.resume,
            log=training_log(request),
            progress=request.progress,
            validation=plan.examples(fold.validation),
            encoder=encoder,
            workers=plan.loader_workers,
        )
        synced = request.engine == "zero3" and world()[1] > 1

        def predict_rows(rows: list[Utterance]) -> list[dict]:
            examples, progress = plan.examples(rows), request.progress
            return predict(
                model, examples, card.labels, fold.name, progress=progress, encoder=encoder, synced=synced
            )

    if plan.backbone.random_weights:
        return FoldResult([], {}, {})
    log_trained_model(model, system, plan.backbone.name, plan.encoder_shape, request.engine)
    validation: dict[str, float] = {}
    if fold.validation and (records := predict_rows(fold.validation)):
        scores = split_scores(records, card, system, fold.validation)
        validation = {f"val.{name}": value for name, value in scores.items()}
    if not request.test:
        return FoldResult([], {}, validation)
    records = predict_rows(fold.test)
    scores = split_scores(records, card, system, fold.test) if is_lead() else {}
    return FoldResult(records, scores, validation)


def log_trained_model(
    model: TrainedModel, system: SystemConfig, backbone: str, encoder_shape: tuple[int, int], engine: str
) -> None:
    """Log the trained weights as `model/system.pt` of the active (fold) run, for `benchmark
    evaluate` and `benchmark explain` (`benchmark.train.trained`). Every rank calls it: under ZeRO-3
    the weights are gathered from all of them, and rank 0 writes them."""
    from benchmark.train.engine import full_weights
    from benchmark.train.trained import ARTIFACT, export_trained_model

    with full_weights(model, engine), tempfile.TemporaryDirectory(prefix="system-") as tmp:
        if is_lead():
            path = export_trained_model(model, system, Path(tmp) / ARTIFACT.name, backbone, encoder_shape)
            log_artifact(path, str(ARTIFACT.parent))


def join_processes(request: RunRequest, system: SystemConfig) -> None:
    """Join the launcher's process group (`torchrun`, `deepspeed`), if there is one.

    Several processes train one LLM system under DeepSpeed ZeRO-2/3: the plain engine and the SSL
    baselines refuse, in one line, rather than train the same thing once per process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return
    if system.kind == "ssl" or request.engine == "plain":
        what = "an SSL baseline" if system.kind == "ssl" else "the plain engine"
        raise BenchmarkError(
            f"{what} trains in one process, and this one was launched as one of {world_size}",
            hint="launch one process, or train an LLM system with --deepspeed zero2 or zero3",
        )
    from benchmark.train.engine import init_distributed

    init_distributed(request.engine)


def check_same_data(mixture: Mixture) -> None:
    """Stop in one line when the ranks read different data (a node with another prepare of a
    corpus): each rank's manifest digests and row ids, digested, must be rank 0's."""
    manifests = {name: manifest_digest(card) for name, card in mixture.cards.items()}
    digests = all_gathered(digest([manifests, sorted(mixture.all_rows())]))
    if other := next((rank for rank, value in enumerate(digests) if value != digests[0]), None):
        raise BenchmarkError(
            f"rank {other} reads other data than rank 0 (manifest digest {digests[other]} vs {digests[0]})",
            hint="every node needs the same prepared corpora: prepare them once on shared storage",
        )


def device_summary() -> str:
    """The devices of every rank, e.g. "2 x cpu on 1 node" or "16 x NVIDIA H100 80GB HBM3 on 2 nodes"."""
    import socket

    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    seen = all_gathered((socket.gethostname(), name))
    counts = Counter(device for _, device in seen)
    nodes = len({host for host, _ in seen})
    devices = ", ".join(f"{count} x {device}" for device, count in counts.items())
    return f"{devices} on {nodes} node{'s' if nodes > 1 else ''}"


def plan_run(request: RunRequest) -> tuple[RunPlan, RunSetup]:
    """Everything checked, the data read and its inputs ready, before any run is opened."""
    from benchmark.train.features import feature_loaders
    from benchmark.train.ssl import pretrained_top_layers
    from benchmark.train.trained import frozen_encoder

    backbone = get_backbone(request.backbone)
    require_gpu(backbone)
    system = resolve_system(request, backbone)
    card = load_dataset_card(request.dataset)
    run_folds = fold_names(card, request.fold)  # a bad corpus or fold name fails before any data is read
    if request.validation:
        check_validation(card)
    others = training_corpora(request, card)
    join_processes(request, system)
    request = dataclasses.replace(request, progress=request.progress and is_lead())  # one set of bars
    if is_lead():
        tracking_setup(load_mlflow_config())  # marks stale runs; a bad store fails before any work
    mixture = training_mixture(card, others, request.fold, request.validation)
    check_same_data(mixture)
    overlap = audit_mixture(mixture, request.progress)  # fingerprints cached: cheap after the first run
    refuse_overlap(tested_ids(mixture), overlap, request.allow_overlap)

    encoder = frozen_encoder(backbone.name, system.encoder_family)
    encoder_shape = (encoder.num_layers, encoder.hidden_size)
    top_layers = pretrained_top_layers(system, encoder)  # None unless an SSL baseline fine-tunes
    source = request.features or backbone.features
    rows = list(mixture.all_rows().values())
    features, online = feature_loaders(source, encoder, rows, request.progress)
    del encoder  # with the cache, training needs only its outputs (and top_layers' copies)

    train_with = [other.name for other in others]
    config = config_digest(system, request, train_with, source)
    plan = RunPlan(
        system, request, backbone, mixture, features, encoder_shape, config, source, online, top_layers,
        overlap=overlap,
    )  # fmt: skip
    setup = RunSetup(
        dataset=card.name,
        train_with=tuple(train_with),
        validation=request.validation,
        backbone=backbone.name,
        folds=tuple(run_folds),
        engine=request.engine,
        recipe="custom" if request.epochs is not None or request.overrides else "registry",
    )
    return plan, setup


def lead_run(name: str, **kwargs: Any) -> contextlib.AbstractContextManager:
    """`run_context` on rank 0; nothing on the other ranks, which never write to MLflow."""
    return run_context(name, **kwargs) if is_lead() else contextlib.nullcontext()


def run_experiment(request: RunRequest) -> RunSummary:
    """Train and evaluate `request.system` on the requested folds; see the module docstring."""
    plan, setup = plan_run(request)
    system, mixture, card, labels = (
        plan.system,
        plan.mixture,
        plan.mixture.card,
        list(plan.mixture.card.labels),
    )
    lead, world_size = is_lead(), world()[1]
    tags = run_tags(system, setup, **{tag.ENGINE: request.engine, tag.CONFIG_DIGEST: plan.digest})
    tags |= {tag.FEATURES: plan.source, tag.WORLD_SIZE: str(world_size), tag.DEVICES: device_summary()}
    if plan.backbone.random_weights:
        tags[tag.RANDOM_WEIGHTS] = "true"
    test = request.test and not plan.backbone.random_weights  # random weights: nothing is scored
    resumed = resumable_run(plan.digest, world_size) if request.resume and lead else None
    checkpoints = broadcast(checkpoint_root(plan.digest, system, resumed) if lead else None)
    plan = dataclasses.replace(plan, checkpoints=checkpoints)
    fold_metrics: dict[str, dict[str, float]] = {}
    fold_std: dict[str, dict[str, float]] = {}
    parent_tags = {**tags, tag.CHECKPOINTS: str(checkpoints)}
    parent_tags |= {tag.RESUMED_FROM: resumed.info.run_id} if resumed else {}
    parent_tags |= overlap_tags(tested_ids(plan.mixture), plan.overlap)
    name = request.name or f"{system.name} on {card.name}"
    with lead_run(name, tags={**parent_tags, **request.tags}, params=system) as parent:
        run_id = broadcast(parent.info.run_id if lead else None)
        if request.observer is not None:
            request.observer.started(run_id, system)
        if lead:
            from benchmark.train.trained import weights_params

            log_environment()
            log_params(weights_params(plan.backbone.name, system))  # the checkpoints read, digested
            log_overlap(plan.overlap)
        pooled: list[dict] = []
        trainings: list[Training] = []
        seeds = system.training.seed_values()
        for fold in mixture.folds:
            mine = train_fold(plan, fold, seeds, tags, test, labels)
            fold_metrics[fold.name], fold_std[fold.name] = mean_and_std([t.metrics for t in mine])
            trainings += mine
            pooled += [record for t in mine for record in t.records]
        mean, std = mean_and_std([t.metrics for t in trainings])
        interval = seed_intervals(trainings) if len(seeds) > 1 else {}
        if lead:
            log_pooled(plan, mean, std, interval, pooled, test, trainings)
    if lead:
        shutil.rmtree(checkpoints, ignore_errors=True)
    summary = RunSummary(
        run_id, system, fold_metrics, mean, std, fold_std if len(seeds) > 1 else {}, interval
    )
    summary.notes += overlap_notes(tested_ids(plan.mixture), plan.overlap)
    return summary


def log_pooled(
    plan: RunPlan,
    mean: dict[str, float],
    std: dict[str, float],
    interval: dict[str, tuple[float, float]],
    pooled: list[dict],
    test: bool,
    trainings: list[Training],
) -> None:
    """The parent run's metrics: the mean and std over every training (fold, and seed with
    `--seeds`), with seeds the interval of each mean (`seed_interval`), and when tested the pooled
    records (with seeds, the pooled scores are each seed's over all folds, averaged)."""
    card, labels, folds = plan.mixture.card, list(plan.mixture.card.labels), plan.mixture.folds
    log_metrics(mean)
    log_metrics({f"{n}.std": v for n, v in std.items()})
    log_metrics({f"{n}.ci_low": low for n, (low, _) in interval.items()})
    log_metrics({f"{n}.ci_high": high for n, (_, high) in interval.items()})
    seeds = sorted({t.seed for t in trainings})
    if test and len(folds) > 1:  # with one fold the pooled scores are the fold's
        tested = [row for fold in folds for row in fold.test]
        per_seed = [
            split_scores([r for r in pooled if r.get("seed", seed) == seed], card, plan.system, tested)
            for seed in seeds
        ]
        log_metrics({f"pooled.{n}": v for n, v in mean_and_std(per_seed)[0].items()})
    if test:  # not in a study's trial: nothing of the test part
        log_split(pooled, labels, "pooled", "confusion_matrix_pooled.png")


@dataclass(frozen=True)
class Training:
    """One training of one fold (one seed of it with `--seeds`): its metrics and test records."""

    fold: str
    seed: int
    metrics: dict[str, float]
    records: list[dict]


def train_fold(
    plan: RunPlan, fold: Fold, seeds: list[int], tags: dict[str, str], test: bool, labels: list[str]
) -> list[Training]:
    """A fold's run: it trains the fold itself (one seed, as before seeds existed), or holds a run
    per seed (tagged `seed` and `seed_index`) and logs their mean and `.std` over the seeds."""
    fold_tags = {**tags, tag.FOLD: fold.name}
    if len(seeds) == 1:
        with lead_run(f"fold {fold.name}", tags={**fold_tags, tag.SEED: str(seeds[0])}):
            return [train_logged(seeded(plan, seeds[0], None), fold, test, labels)]
    trainings = []
    with lead_run(f"fold {fold.name}", tags={**fold_tags, tag.SEEDS: str(len(seeds))}):
        for index, seed in enumerate(seeds):
            seed_tags = {**fold_tags, tag.SEED: str(seed), tag.SEED_INDEX: str(index)}
            with lead_run(f"fold {fold.name} seed {seed}", tags=seed_tags):
                trainings.append(train_logged(seeded(plan, seed, index), fold, test, labels))
        if is_lead():
            mean, std = mean_and_std([t.metrics for t in trainings])
            log_metrics({**mean, **{f"{n}.std": v for n, v in std.items()}})
    return trainings


def seeded(plan: RunPlan, seed: int, index: int | None) -> RunPlan:
    """The plan of one training: the system with `seed` and, for the `index`-th of several seeds,
    a checkpoint folder of its own (None: the fold's only training)."""
    system = override_system(plan.system, {"training": {"seed": seed}})
    checkpoints = plan.checkpoints
    if index is not None and checkpoints is not None:
        checkpoints = checkpoints / f"seed-{seed}"
    return dataclasses.replace(plan, system=system, checkpoints=checkpoints)


def train_logged(plan: RunPlan, fold: Fold, test: bool, labels: list[str]) -> Training:
    """Train and score one fold in the active (fold or seed) run, and log what it trained on, its
    metrics and its test records (which name their seed where the fold trains several)."""
    lead = is_lead()
    if lead:
        log_fold_data(plan.mixture, fold, plan.system, test)
    result = run_fold(plan, fold)
    seed = plan.system.training.seed
    records = result.records
    if plan.system.training.seeds > 1:
        records = [{**record, "seed": seed} for record in records]
    if lead:
        log_metrics({**result.scores, **result.validation})
        if test:
            log_split(records, labels, f"fold-{fold.name}", "confusion_matrix.png")
    return Training(fold.name, seed, {**result.scores, **result.validation}, records)


def seed_intervals(trainings: list[Training]) -> dict[str, tuple[float, float]]:
    """Each metric's 95 % interval over the trainings, clustered by fold (`seed_interval`)."""
    names = sorted({name for t in trainings for name in t.metrics})
    return {
        name: seed_interval([(t.fold, t.seed, t.metrics[name]) for t in trainings if name in t.metrics])
        for name in names
    }


def mean_and_std(metrics: list[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Each metric's mean and (population) std over the trainings that have it."""
    names = sorted({name for scores in metrics for name in scores})
    mean = {n: float(np.mean([s[n] for s in metrics if n in s])) for n in names}
    std = {n: float(np.std([s[n] for s in metrics if n in s])) for n in names}
    return mean, std
