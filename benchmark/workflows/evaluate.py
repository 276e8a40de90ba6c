"""`python -m benchmark evaluate RUN_ID --dataset D`: a trained run, scored on another corpus.

The paper's zero-shot protocol (Table 1: captioning on EMOSEC, never trained on): a fold's logged
model (`model/system.pt`) is rebuilt, the frozen encoder encodes the new corpus's test split, and
the predictions are scored with the metrics of the tasks that corpus has. Nothing is trained.
First the source fold's training mixture is rebuilt and audited against the test rows
(`workflows.overlap`): test audio that was trained on stops the evaluation unless
`--allow-overlap`, which tags the run `overlap=N`; the findings are logged as `audit.tsv`.
The result is a run of its own (`kind=evaluation`, `source_run`, `source_fold`) with the system's
tags on the new dataset, so tables and comparisons find it like any run of that system there. Its
setup is the source run's setup and fold, so a table never mixes models trained differently; a
source run of several folds needs `--fold`, since one utterance gets one prediction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from benchmark.config import SystemConfig
from benchmark.data.audit import audit_pairings
from benchmark.data.examples import examples_of
from benchmark.data.prepare import is_prepared, load_split
from benchmark.errors import BenchmarkError
from benchmark.eval.predict import predict
from benchmark.nn.backbones import get_backbone
from benchmark.registry import load_dataset_card
from benchmark.tracking import tags as tag
from benchmark.tracking.log import log_environment, log_metrics
from benchmark.tracking.models import fold_model
from benchmark.tracking.runs import run_context
from benchmark.tracking.store import load_mlflow_config, tracking_setup
from benchmark.tracking.tags import RunSetup, run_tags
from benchmark.workflows.overlap import (
    log_overlap,
    overlap_notes,
    overlap_tags,
    refuse_overlap,
    zero_shot_pairing,
)
from benchmark.workflows.scoring import log_split, split_scores


@dataclass
class EvaluationSummary:
    run_id: str
    source_run: str
    source_fold: str
    metrics: dict[str, float]
    notes: list[str] = field(default_factory=list)  # what the CLI says under the metrics (the audit's)


def evaluate_run(
    run_id: str, dataset: str, fold: str | None = None, progress: bool = True, allow_overlap: bool = False
) -> EvaluationSummary:
    """Score the model of `run_id` (fold `fold`) on the test split of `dataset`; see the module docstring."""
    from benchmark.train.features import feature_loaders
    from benchmark.train.trained import ARTIFACT, load_trained_model

    card = load_dataset_card(dataset)
    if card.protocol.test is None:
        raise BenchmarkError(
            f"'{card.name}' has no test split to evaluate on ({card.protocol.kind.replace('_', '-')})",
            hint=f"cross-validated corpora are scored by `python -m benchmark run --dataset {card.name}`",
        )
    if not is_prepared(card):
        raise BenchmarkError(
            f"{card.name} is not prepared",
            hint=f"run `python -m benchmark data prepare {card.name} --root ...`",
        )
    tracking_setup(load_mlflow_config())
    source, source_fold, saved = fold_model(run_id, fold)
    if saved.get("kind") == "ssl":
        raise BenchmarkError(
            f"run {run_id} is an SSL baseline: its classifier knows only its training corpus's labels",
            hint="zero-shot evaluation is for LLM systems, whose responses any corpus's labels can parse",
        )
    system = SystemConfig.model_validate(saved["system"])
    backbone = get_backbone(saved["backbone"])
    rows = load_split(card, card.protocol.test)
    pairing = zero_shot_pairing(source, source_fold, card, rows)
    findings, tested, notes = [], {}, []
    if isinstance(pairing, str):  # the source run's corpora are not here: said, not guessed
        notes.append(pairing)
    else:
        findings = audit_pairings([pairing], progress)[pairing.name]
        tested = {pairing.name: {row.id for row in rows}}
        where = f"{card.name}, zero-shot from fold {source_fold} of run {source.info.run_id}"
        refuse_overlap(tested, findings, allow_overlap, where)
        notes += overlap_notes(tested, findings)

    model, encoder = load_trained_model(saved, f"{ARTIFACT} of run {run_id}, fold {source_fold}")
    feature_source = source.data.tags.get(tag.FEATURES, backbone.features)  # as the run trained
    features, online = feature_loaders(feature_source, encoder, rows, progress)  # read batch by batch
    model.to(encoder.model.device)

    source_tags = source.data.tags
    train_with = source_tags.get(tag.TRAIN_WITH, "none")
    setup = RunSetup(
        dataset=card.name,
        train_with=() if train_with == "none" else tuple(train_with.split(",")),
        validation=source_tags.get(tag.VALIDATION) == "on",
        backbone=backbone.name,
        folds=(source_fold,),
        engine=source_tags.get(tag.ENGINE, "plain"),
        recipe="registry" if source_tags.get(tag.RECIPE) == "registry" else "custom",
        source_setup=source_tags.get(tag.SETUP, "untagged"),
    )
    tags = run_tags(
        system, setup, **{
            tag.KIND: "evaluation", tag.SOURCE_RUN: source.info.run_id,
            tag.SOURCE_DATASET: source_tags.get(tag.DATASET, ""), tag.SOURCE_FOLD: source_fold,
            **overlap_tags(tested, findings),
        }
    )  # fmt: skip
    with run_context(f"{system.name} on {card.name} (zero-shot)", tags=tags, params=system) as run:
        log_environment()
        if tested:  # audited (otherwise a note says why not)
            log_overlap(findings)
        examples = examples_of(rows, features)
        records = predict(model, examples, list(card.labels), None, progress=progress, encoder=online)
        scores = split_scores(records, card, system, rows)
        log_metrics(scores)
        log_split(records, list(card.labels), "pooled", "confusion_matrix.png")
    return EvaluationSummary(run.info.run_id, source.info.run_id, source_fold, scores, notes)
