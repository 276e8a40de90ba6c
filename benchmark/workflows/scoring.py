"""Scoring a split and logging it: what `run` does for each fold and `evaluate` for a corpus.

The metrics are eval's scores of the prediction records plus, where descriptors are scored,
explain's descriptor faithfulness (`sed.faithfulness`); the records and a confusion matrix go to
the active MLflow run, from which every later table and test is recomputed.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmark.config import DatasetCard, SystemConfig
from benchmark.data.manifest import Utterance
from benchmark.data.records import PredictionRecord
from benchmark.eval.metrics import confusion_matrix, plot_confusion_matrix
from benchmark.eval.predict import score_records, scored_fields
from benchmark.explain.faithfulness import faithfulness_scores
from benchmark.tracking.log import log_figure, log_predictions


def split_scores(
    records: list[dict], card: DatasetCard, system: SystemConfig, utterances: list[Utterance]
) -> dict[str, float]:
    """The metrics of one split's prediction records (fractions, by MLflow metric name)."""
    scores = score_records(records, card, system, utterances)
    if "descriptor" in scored_fields(card, system):
        scores |= faithfulness_scores(records, utterances)
    return scores


def log_split(records: list[dict], labels: list[str], split: str, figure: str) -> None:
    """Log a split's records as `predictions/<split>.jsonl` and their confusion matrix as `figure`."""
    log_predictions([PredictionRecord(**r) for r in records], split)
    rows = [r for r in records if r["ref_emotion"] is not None]
    if not rows:
        return
    matrix = confusion_matrix([r["ref_emotion"] for r in rows], [r["hyp_emotion"] for r in rows], labels)
    with tempfile.TemporaryDirectory() as tmp:
        log_figure(plot_confusion_matrix(matrix, labels, Path(tmp) / figure), figure)
