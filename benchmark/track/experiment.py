"""`python -m benchmark run`: train and evaluate one system on a corpus's folds, tracked in MLflow.

One parent MLflow run per call (tags system, dataset, backbone, beta, schedule, git_sha; params
the fully resolved system config), one nested run per fold with its training curves, prediction
records, metrics and confusion matrix; the parent holds the mean and standard deviation over
folds and the pooled predictions. Any exception marks the runs FAILED (Ctrl-C: KILLED).

The frozen encoder's hidden states are computed once per utterance and cached on disk
(`benchmark.data.features`), so every fold, stage and system after the first pays only for the
trainable parts. Training checkpoints live under `$BENCHMARK_HOME/checkpoints/<config digest>/`,
so `--resume` continues an interrupted run of the same configuration: the digest is also the run's
`config_digest` tag, and the new run links to the interrupted one with the tag `resumed_from`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from benchmark.config import DatasetCard, SystemConfig, benchmark_home, merge_configs
from benchmark.data.manifest import Utterance
from benchmark.data.prepare import is_prepared, load_split
from benchmark.data.splits import Fold, fold_names, folds
from benchmark.eval.metrics import confusion_matrix, plot_confusion_matrix
from benchmark.eval.predict import predict, score_records
from benchmark.nn.backbones import Backbone, get_backbone
from benchmark.registry import load_dataset_card, load_system
from benchmark.track.records import PredictionRecord
from benchmark.track.tracking import (
    interrupted_run,
    load_mlflow_config,
    log_artifact,
    log_environment,
    log_figure,
    log_metrics,
    log_predictions,
    run_context,
    tracking_setup,
)

if TYPE_CHECKING:
    from benchmark.nn.system import SpeechEmotionCaptioner
    from benchmark.train.data import TrainExample

SYSTEM_ARTIFACT = Path("model/system.pt")  # in each fold run of an LLM system


@dataclass
class RunRequest:
    """Everything `benchmark run` was asked for; `overrides` are merged into the system YAML."""

    system: str
    beta: float | None = None
    dataset: str = "demo"
    backbone: str = "demo"
    fold: str | None = None  # None: the dataset card's default_fold
    epochs: int | None = None
    engine: str = "plain"
    resume: bool = False
    cache_features: bool = True
    overrides: dict[str, Any] = field(default_factory=dict)
    progress: bool = True


@dataclass
class RunSummary:
    run_id: str
    system: SystemConfig
    fold_metrics: dict[str, dict[str, float]]
    mean: dict[str, float]
    std: dict[str, float]


def resolve_system(request: RunRequest, backbone: Backbone) -> SystemConfig:
    """The system YAML with `--beta`, the backbone's decoder regime, learning rate and epochs
    (`benchmark.nn.backbones`), user overrides and `--epochs` applied, in that order."""
    overrides: dict[str, Any] = {}
    if backbone.decoder_regime is not None:
        overrides["decoder"] = {"regime": backbone.decoder_regime}
    if request.beta is not None:
        overrides["beta"] = request.beta
    system = load_system(request.system, merge_configs(overrides, request.overrides))
    if backbone.stage_lr is not None or backbone.epoch_scale != 1:
        stages = [
            stage.model_copy(
                update={"lr": backbone.stage_lr or stage.lr, "epochs": stage.epochs * backbone.epoch_scale}
            )
            for stage in system.stages
        ]
        system = system.model_copy(update={"stages": stages})
    if request.epochs is not None:  # every stage (or the SSL heads), e.g. a quick smoke run with --epochs 1
        stages = [stage.model_copy(update={"epochs": request.epochs}) for stage in system.stages]
        ssl = system.ssl.model_copy(update={"epochs": request.epochs})
        system = system.model_copy(update={"stages": stages, "ssl": ssl})
    return system


def load_corpus(dataset: str) -> dict[str, list[Utterance]]:
    """The manifests of every split; the demo corpus is synthesised (once) when absent."""
    card = load_dataset_card(dataset)
    if card.reader == "demo" and not is_prepared(card):
        from benchmark.data.demo import build_demo_corpus

        build_demo_corpus()
    return {split: load_split(card, split) for split in card.splits}


def config_digest(system: SystemConfig, request: RunRequest) -> str:
    """A digest of everything that changes training, so --resume finds its checkpoints and run."""
    key = json.dumps(
        [system.model_dump(mode="json"), request.dataset, request.backbone, request.engine], sort_keys=True
    )
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def checkpoint_folder(system: SystemConfig, request: RunRequest, fold: str) -> Path:
    digest = config_digest(system, request)
    return benchmark_home() / "checkpoints" / f"{system.name}-{digest}" / f"fold-{fold}"


def examples_of(rows: list[Utterance], features: dict[str, torch.Tensor]) -> list[TrainExample]:
    """Manifest rows with their cached encoder outputs, as the training loop and `predict` take them."""
    from benchmark.train.data import TrainExample

    return [
        TrainExample(
            r.id, features[r.id], transcript=r.transcript, descriptor=r.descriptor, emotion=r.emotion
        )
        for r in rows
    ]


def log_confusion(records: list[dict], labels: list[str], name: str) -> None:
    rows = [r for r in records if r["ref_emotion"] is not None]
    if not rows:
        return
    matrix = confusion_matrix([r["ref_emotion"] for r in rows], [r["hyp_emotion"] for r in rows], labels)
    with tempfile.TemporaryDirectory() as tmp:
        log_figure(plot_confusion_matrix(matrix, labels, Path(tmp) / name), name)


def run_fold(
    system: SystemConfig,
    request: RunRequest,
    backbone: Backbone,
    fold: Fold,
    features: dict[str, torch.Tensor],
    encoder_shape: tuple[int, int],
    card: DatasetCard,
) -> tuple[list[dict], dict[str, float]]:
    """Train from scratch on the fold's training rows, then predict and score its test rows.

    `kind: ssl` systems train the SSL baseline's heads (`benchmark.train.ssl`), without checkpoints;
    `kind: llm` systems train every stage of their schedule (`benchmark.train.loop`).
    """
    if system.kind == "ssl":
        return _run_ssl_fold(system, request, fold, features, encoder_shape, card)
    from benchmark.nn.system import build_system
    from benchmark.train.loop import train

    checkpoints = checkpoint_folder(system, request, fold.name)
    if not request.resume and checkpoints.exists():
        shutil.rmtree(checkpoints)
    torch.manual_seed(system.training.seed)
    model = build_system(system, *encoder_shape, backbone=backbone.decoder)
    train(
        model,
        examples_of(fold.train, features),
        engine=request.engine,
        checkpoint_dir=checkpoints,
        resume=request.resume,
        log=log_metrics,
        progress=request.progress,
    )
    log_trained_system(model, backbone.name, encoder_shape)
    records = predict(
        model, examples_of(fold.test, features), card.labels, fold.name, progress=request.progress
    )
    return records, score_records(records, card, system, fold.test)


def log_trained_system(model: SpeechEmotionCaptioner, backbone: str, encoder_shape: tuple[int, int]) -> None:
    """Log the trained weights as `model/system.pt` of the active (fold) run, for `benchmark evaluate`."""
    from benchmark.train.checkpoint import export_trained_system

    with tempfile.TemporaryDirectory(prefix="system-") as tmp:
        path = export_trained_system(
            model,
            Path(tmp) / SYSTEM_ARTIFACT.name,
            system=model.config.model_dump(mode="json"),
            backbone=backbone,
            encoder_shape=list(encoder_shape),
        )
        log_artifact(path, str(SYSTEM_ARTIFACT.parent))


def _run_ssl_fold(
    system: SystemConfig,
    request: RunRequest,
    fold: Fold,
    features: dict[str, torch.Tensor],
    encoder_shape: tuple[int, int],
    card: DatasetCard,
) -> tuple[list[dict], dict[str, float]]:
    from benchmark.train.ssl import build_ssl_baseline, predict_ssl, train_ssl

    torch.manual_seed(system.training.seed)
    model = build_ssl_baseline(system, *encoder_shape, card.labels)
    train_ssl(model, examples_of(fold.train, features), system, log=log_metrics, progress=request.progress)
    records = predict_ssl(model, examples_of(fold.test, features), fold.name, progress=request.progress)
    return records, score_records(records, card, system, fold.test)


def run_experiment(request: RunRequest) -> RunSummary:
    """Train and evaluate `request.system` on the requested folds; see the module docstring."""
    from benchmark.data.features import FeatureCache
    from benchmark.nn.encoder import build_encoder

    backbone = get_backbone(request.backbone)
    system = resolve_system(request, backbone)
    card = load_dataset_card(request.dataset)
    fold_names(card, request.fold)  # a bad corpus or fold name fails before any data is read
    tracking_setup(load_mlflow_config())  # marks stale runs; a bad store fails before any work
    chosen = folds(card, load_corpus(request.dataset), request.fold)
    labels = list(card.labels)

    encoder = build_encoder(backbone.encoder, system.encoder_family)
    rows = {r.id: r for fold in chosen for r in [*fold.train, *fold.test]}
    cache = FeatureCache(None, encoder, enabled=request.cache_features, progress=request.progress)
    features = dict(zip(rows, cache.get(list(rows.values())), strict=True))
    encoder_shape = (encoder.num_layers, encoder.hidden_size)
    del encoder  # frozen and cached: training needs only its outputs

    tags = {
        "system": system.name, "dataset": card.name, "backbone": backbone.name,
        "beta": system.beta, "schedule": system.schedule, "engine": request.engine,
        "config_digest": config_digest(system, request),
    }  # fmt: skip
    resumed = interrupted_run("config_digest", tags["config_digest"]) if request.resume else None
    fold_metrics: dict[str, dict[str, float]] = {}
    parent_tags = {**tags, "resumed_from": resumed.info.run_id} if resumed else tags
    with run_context(f"{system.name} on {card.name}", tags=parent_tags, params=system) as parent:
        log_environment()
        pooled: list[dict] = []
        for fold in chosen:
            with run_context(f"fold {fold.name}", tags={**tags, "fold": fold.name}):
                records, scores = run_fold(system, request, backbone, fold, features, encoder_shape, card)
                log_metrics(scores)
                log_predictions([PredictionRecord(**r) for r in records], f"fold-{fold.name}")
                log_confusion(records, labels, "confusion_matrix.png")
            fold_metrics[fold.name] = scores
            pooled += records
        names = sorted({name for scores in fold_metrics.values() for name in scores})
        mean = {n: float(np.mean([s[n] for s in fold_metrics.values() if n in s])) for n in names}
        std = {n: float(np.std([s[n] for s in fold_metrics.values() if n in s])) for n in names}
        log_metrics(mean)
        log_metrics({f"{n}.std": v for n, v in std.items()})
        if len(chosen) > 1:  # with one fold the pooled scores are the fold's
            tested = [row for fold in chosen for row in fold.test]
            log_metrics({f"pooled.{n}": v for n, v in score_records(pooled, card, system, tested).items()})
        log_predictions([PredictionRecord(**r) for r in pooled], "pooled")
        log_confusion(pooled, labels, "confusion_matrix_pooled.png")
    return RunSummary(parent.info.run_id, system, fold_metrics, mean, std)
