"""`python -m benchmark run`: train and evaluate one system on a corpus's folds, tracked in MLflow.

One parent run per call (the tags of `benchmark.tracking.tags.run_tags`; params the resolved
system), one nested run per fold with its curves, records, metrics, confusion matrix and trained
model; the parent holds the mean and std over folds and the pooled records. Each fold trains on the
target corpus's training part plus that of every `train_with` corpus (the paper's protocol, section
4.1) and logs what it trained on. The frozen encoder's outputs are cached once per utterance, so
later folds and systems pay only for the trainable parts. Checkpoints live in a folder per run;
`--resume` continues the newest interrupted run of the same `config_digest`. A backbone with random
weights logs training speed and memory only. Any exception marks the runs FAILED (Ctrl-C: KILLED).
Details: docs/training.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from mlflow.entities import Run

from benchmark.config import DatasetCard, SystemConfig, benchmark_home, override_system
from benchmark.data.corpus import load_corpus
from benchmark.data.examples import Example, examples_of
from benchmark.data.features import CachedFeatures, FeatureCache
from benchmark.data.manifest import Utterance
from benchmark.data.prepare import is_prepared, manifest_digest, prepared_dir
from benchmark.data.splits import Fold, check_validation, fold_names, folds, relabel, training_part
from benchmark.errors import BenchmarkError
from benchmark.eval.predict import predict
from benchmark.nn.backbones import Backbone, get_backbone
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
from benchmark.workflows.scoring import log_split, split_scores

if TYPE_CHECKING:
    from benchmark.nn.encoder import TopLayers
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
    engine: str = "plain"
    resume: bool = False
    cache_features: bool = True
    overrides: dict[str, Any] = field(default_factory=dict)
    progress: bool = True
    test: bool = True
    tags: dict[str, str] = field(default_factory=dict)
    name: str | None = None
    observer: RunObserver | None = None


@dataclass
class RunSummary:
    run_id: str
    system: SystemConfig
    fold_metrics: dict[str, dict[str, float]]
    mean: dict[str, float]
    std: dict[str, float]


def resolve_system(request: RunRequest, backbone: Backbone) -> SystemConfig:
    """The system a run trains: its YAML with overrides deep-merged on top, the later winning:

        system YAML (its `inherits:` chain) < backbone profile < --beta < --set < --epochs

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


def config_digest(system: SystemConfig, request: RunRequest, train_with: list[str]) -> str:
    """A digest of everything that changes training, so --resume finds its checkpoints and run."""
    return digest(
        [
            system.model_dump(mode="json"), request.dataset, request.backbone, request.engine,
            sorted(train_with), request.validation,
        ]
    )  # fmt: skip


def checkpoint_root(digest: str, system: SystemConfig, resumed: Run | None) -> Path:
    """Where a run keeps its checkpoints: the interrupted run's folder when it resumes one (runs of
    before per-run folders used the configuration's folder itself), else a folder of its own."""
    configuration = benchmark_home() / "checkpoints" / f"{system.name}-{digest}"
    if resumed is not None:
        return Path(resumed.data.tags.get(tag.CHECKPOINTS, configuration))
    return configuration / uuid.uuid4().hex[:12]


@dataclass(frozen=True)
class Mixture:
    """The target corpus's folds and the rows every fold trains with from the `train_with` corpora."""

    card: DatasetCard
    folds: list[Fold]
    extra: list[Utterance]
    outside_labels: dict[str, int]  # per train_with corpus: rows whose emotion the target lacks
    cards: dict[str, DatasetCard]  # every corpus of the run, target first

    def training_rows(self, fold: Fold) -> list[Utterance]:
        return [*fold.train, *self.extra]

    def all_rows(self) -> dict[str, Utterance]:
        """Every row of the run by id; two corpora that share an id would mix their features."""
        rows: dict[str, Utterance] = {}
        for row in [*self.extra, *(r for f in self.folds for r in [*f.train, *f.validation, *f.test])]:
            if (seen := rows.setdefault(row.id, row)).dataset != row.dataset:
                raise BenchmarkError(f"utterance id '{row.id}' is in both {seen.dataset} and {row.dataset}")
        return rows


def build_mixture(request: RunRequest, card: DatasetCard, others: list[DatasetCard]) -> Mixture:
    chosen = folds(card, load_corpus(card), request.fold, request.validation)
    extra: list[Utterance] = []
    outside: dict[str, int] = {}
    for other in others:
        relabelled = relabel(training_part(other, load_corpus(other)), other, card)
        extra += relabelled.rows
        outside[other.name] = sum(relabelled.outside.values())
    return Mixture(card, chosen, extra, outside, {c.name: c for c in [card, *others]})


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
    """What every fold of one `run` shares: the resolved system, the data and its encoder outputs."""

    system: SystemConfig
    request: RunRequest
    backbone: Backbone
    mixture: Mixture
    features: dict[str, torch.Tensor | CachedFeatures]
    encoder_shape: tuple[int, int]
    digest: str  # config_digest: --resume
    top_layers: TopLayers | None = None  # pretrained encoder layers a `kind: ssl` system fine-tunes
    checkpoints: Path | None = None  # the run's checkpoint folder (`checkpoint_root`)

    def examples(self, rows: list[Utterance]) -> list[Example]:
        return examples_of(rows, self.features)


@dataclass(frozen=True)
class FoldResult:
    records: list[dict]
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
    """
    system, request, card = plan.system, plan.request, plan.mixture.card
    training = plan.examples(plan.mixture.training_rows(fold))
    if system.kind == "ssl":
        from benchmark.train.ssl import build_ssl_baseline, predict_ssl, train_ssl

        torch.manual_seed(system.training.seed)
        model = build_ssl_baseline(system, *plan.encoder_shape, card.labels, top_layers=plan.top_layers)
        validation = plan.examples(fold.validation)
        log = training_log(request)
        train_ssl(model, training, system, log=log, progress=request.progress, validation=validation)

        def predict_rows(rows: list[Utterance]) -> list[dict]:
            return predict_ssl(model, plan.examples(rows), fold.name, progress=request.progress)

    else:
        from benchmark.nn.system import build_system
        from benchmark.train.loop import train

        checkpoints = plan.checkpoints / f"fold-{fold.name}" if plan.checkpoints else None
        torch.manual_seed(system.training.seed)
        with build_device(plan.backbone):
            model = build_system(system, *plan.encoder_shape, backbone=plan.backbone.decoder)
        train(
            model,
            training,
            engine=request.engine,
            checkpoint_dir=checkpoints,
            resume=request.resume,
            log=training_log(request),
            progress=request.progress,
            validation=plan.examples(fold.validation),
        )

        def predict_rows(rows: list[Utterance]) -> list[dict]:
            return predict(model, plan.examples(rows), card.labels, fold.name, progress=request.progress)

    if plan.backbone.random_weights:
        return FoldResult([], {}, {})
    log_trained_model(model, system, plan.backbone.name, plan.encoder_shape)
    validation: dict[str, float] = {}
    if fold.validation:
        scores = split_scores(predict_rows(fold.validation), card, system, fold.validation)
        validation = {f"val.{name}": value for name, value in scores.items()}
    if not request.test:
        return FoldResult([], {}, validation)
    records = predict_rows(fold.test)
    return FoldResult(records, split_scores(records, card, system, fold.test), validation)


def log_trained_model(
    model: TrainedModel, system: SystemConfig, backbone: str, encoder_shape: tuple[int, int]
) -> None:
    """Log the trained weights as `model/system.pt` of the active (fold) run, for `benchmark
    evaluate` and `benchmark explain` (`benchmark.train.trained`)."""
    from benchmark.train.trained import ARTIFACT, export_trained_model

    with tempfile.TemporaryDirectory(prefix="system-") as tmp:
        path = export_trained_model(model, system, Path(tmp) / ARTIFACT.name, backbone, encoder_shape)
        log_artifact(path, str(ARTIFACT.parent))


def plan_run(request: RunRequest) -> tuple[RunPlan, RunSetup]:
    """Everything checked, the data read and encoded, before any run is opened."""
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
    tracking_setup(load_mlflow_config())  # marks stale runs; a bad store fails before any work
    mixture = build_mixture(request, card, others)

    encoder = frozen_encoder(backbone.encoder, system.encoder_family)
    rows = mixture.all_rows()
    cache = FeatureCache(None, encoder, enabled=request.cache_features, progress=request.progress)
    # Cached features are read from disk batch by batch; without the cache they stay in memory.
    read = cache.loaders if request.cache_features else cache.get
    features = dict(zip(rows, read(list(rows.values())), strict=True))
    encoder_shape = (encoder.num_layers, encoder.hidden_size)
    top_layers = pretrained_top_layers(system, encoder)  # None unless an SSL baseline fine-tunes
    del encoder  # frozen and cached: training needs only its outputs (and top_layers' copies)

    train_with = [other.name for other in others]
    config = config_digest(system, request, train_with)
    plan = RunPlan(system, request, backbone, mixture, features, encoder_shape, config, top_layers)
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


def run_experiment(request: RunRequest) -> RunSummary:
    """Train and evaluate `request.system` on the requested folds; see the module docstring."""
    plan, setup = plan_run(request)
    system, mixture, card, labels = (
        plan.system,
        plan.mixture,
        plan.mixture.card,
        list(plan.mixture.card.labels),
    )
    tags = run_tags(system, setup, **{tag.ENGINE: request.engine, tag.CONFIG_DIGEST: plan.digest})
    if plan.backbone.random_weights:
        tags[tag.RANDOM_WEIGHTS] = "true"
    test = request.test and not plan.backbone.random_weights  # random weights: nothing is scored
    resumed = interrupted_run(tag.CONFIG_DIGEST, plan.digest) if request.resume else None
    checkpoints = checkpoint_root(plan.digest, system, resumed)
    plan = dataclasses.replace(plan, checkpoints=checkpoints)
    fold_metrics: dict[str, dict[str, float]] = {}
    parent_tags = {**tags, tag.CHECKPOINTS: str(checkpoints)}
    parent_tags |= {tag.RESUMED_FROM: resumed.info.run_id} if resumed else {}
    name = request.name or f"{system.name} on {card.name}"
    with run_context(name, tags={**parent_tags, **request.tags}, params=system) as parent:
        if request.observer is not None:
            request.observer.started(parent.info.run_id, system)
        log_environment()
        pooled: list[dict] = []
        for fold in mixture.folds:
            with run_context(f"fold {fold.name}", tags={**tags, tag.FOLD: fold.name}):
                log_fold_data(mixture, fold, system, test)
                result = run_fold(plan, fold)
                log_metrics({**result.scores, **result.validation})
                if test:
                    log_split(result.records, labels, f"fold-{fold.name}", "confusion_matrix.png")
            fold_metrics[fold.name] = {**result.scores, **result.validation}
            pooled += result.records
        names = sorted({name for scores in fold_metrics.values() for name in scores})
        mean = {n: float(np.mean([s[n] for s in fold_metrics.values() if n in s])) for n in names}
        std = {n: float(np.std([s[n] for s in fold_metrics.values() if n in s])) for n in names}
        log_metrics(mean)
        log_metrics({f"{n}.std": v for n, v in std.items()})
        if test and len(mixture.folds) > 1:  # with one fold the pooled scores are the fold's
            tested = [row for fold in mixture.folds for row in fold.test]
            log_metrics({f"pooled.{n}": v for n, v in split_scores(pooled, card, system, tested).items()})
        if test:  # not in a study's trial: nothing of the test part
            log_split(pooled, labels, "pooled", "confusion_matrix_pooled.png")
    shutil.rmtree(checkpoints, ignore_errors=True)
    return RunSummary(parent.info.run_id, system, fold_metrics, mean, std)
