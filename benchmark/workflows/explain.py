"""`python -m benchmark explain RUN_ID UTT_ID` and `explain RUN_ID --all`: logged decisions explained.

An utterance is looked up among the test predictions of the run's folds (each fold's model was
trained without it), that fold's model is rebuilt and the decision it logged is explained by
`benchmark.explain.explanation.explain_decision`; this module only finds, loads and logs. One
utterance's picture is logged to the run under `explanations/`. `--all` explains every test
utterance whose answer names a label, logs their records (`explanations/utterances.jsonl`), a
summary and a cue-by-emotion plot, and adds the `explain.*` quality metrics to the run.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from mlflow import MlflowClient
from mlflow.entities import Run
from tqdm import tqdm

from benchmark.data.audio import load_audio
from benchmark.data.corpus import load_corpus
from benchmark.data.cues import frame_cues
from benchmark.data.manifest import Utterance
from benchmark.data.records import PredictionRecord
from benchmark.errors import BenchmarkError
from benchmark.explain.deletion import summarise_deletions
from benchmark.explain.evidence import Baseline, cue_plausibility, speaker_baselines, utterance_profile
from benchmark.explain.explanation import (
    ExplainSettings,
    Explanation,
    explain_decision,
    require_decision,
    speaking_rate,
)
from benchmark.explain.figure import cue_agreement_figure, explanation_figure
from benchmark.explain.quality import ExplanationRecord, explanation_scores, write_explanations
from benchmark.registry import load_dataset_card
from benchmark.tracking import tags as tag
from benchmark.tracking.artifacts import load_run_records
from benchmark.tracking.lifecycle import tracking_write
from benchmark.tracking.lookup import finished_run, fold_runs
from benchmark.tracking.models import fold_model
from benchmark.tracking.store import load_mlflow_config, tracking_setup

FIGURES = "explanations"  # artifact folder of the run


def find_prediction(run: Run, utterance: str) -> tuple[str, Run, PredictionRecord]:
    """The fold whose test split holds `utterance`, its fold run, and the record it logged."""
    folds = fold_runs(run)
    for fold, fold_run in sorted(folds.items()):
        for record in load_run_records(fold_run.info.run_id, f"fold-{fold}"):
            if record.id == utterance:
                return fold, fold_run, record
    raise BenchmarkError(
        f"utterance {utterance} is in no test split of run {run.info.run_id} (folds {sorted(folds)})",
        hint="explain a test utterance of the run: see its predictions/fold-K.jsonl artifacts",
    )


class RunExplainer:
    """Explains the logged decisions of one run: its corpus rows, its fold models (rebuilt once per
    fold) and its speakers' baselines (measured once per speaker)."""

    def __init__(self, run: Run, settings: ExplainSettings) -> None:
        self.run, self.settings = run, settings
        dataset = run.data.tags.get(tag.DATASET)
        if dataset is None:
            raise BenchmarkError(f"run {run.info.run_id} has no dataset tag: not a `benchmark run` run")
        corpus = load_corpus(load_dataset_card(dataset))
        self.rows = {row.id: row for split in corpus.values() for row in split}
        self.dataset = dataset
        self._models: dict[str, tuple[Any, Any]] = {}
        self._baselines: dict[str, Baseline] = {}

    def model(self, fold: str) -> tuple[Any, Any]:
        """(model, encoder) of `fold`; the previous fold's are dropped (one model in memory)."""
        if fold not in self._models:
            from benchmark.train.trained import ARTIFACT, load_trained_model

            _, _, saved = fold_model(self.run.info.run_id, fold)
            source = f"{ARTIFACT} of run {self.run.info.run_id}, fold {fold}"
            self._models = {fold: load_trained_model(saved, source)}
        return self._models[fold]

    def baseline(self, speaker: str) -> Baseline:
        """The speaker's cue baseline over all of its utterances in the corpus."""
        if speaker not in self._baselines:
            mine = [row for row in self.rows.values() if row.speaker == speaker]
            profiles = [utterance_profile(r.audio, speaking_rate(r)) for r in mine]
            self._baselines[speaker] = speaker_baselines(profiles, [speaker] * len(mine))[speaker]
        return self._baselines[speaker]

    def row(self, utterance: str) -> Utterance:
        if utterance not in self.rows:
            raise BenchmarkError(f"utterance {utterance} is not in the {self.dataset} manifests any more")
        return self.rows[utterance]

    def explain(self, fold: str, record: PredictionRecord) -> Explanation:
        """Explain the decision `record` logged for its utterance with the model of `fold`."""
        require_decision(record)  # before the model is loaded
        model, encoder = self.model(fold)
        row = self.row(record.id)
        return explain_decision(model, encoder, row, record, self.settings, self.baseline(row.speaker), fold)


def _log_file(run_id: str, path: Path) -> str:
    tracking_write(MlflowClient().log_artifact, run_id, str(path), FIGURES)
    return f"{FIGURES}/{path.name}"


def explain_utterance(
    run_id: str, utterance: str, settings: ExplainSettings, log_figure: bool = True
) -> tuple[Explanation, str | None]:
    """Explain one logged prediction (module docstring); the artifact path of its figure, if logged."""
    tracking_setup(load_mlflow_config())
    run = finished_run(run_id, top_level=False)
    fold, _, record = find_prediction(run, utterance)
    explainer = RunExplainer(run, settings)
    explanation = explainer.explain(fold, record)
    if not log_figure:
        return explanation, None
    saliency, row = explanation.saliency, explanation.row
    title = f"{row.id}: predicted {record.hyp_emotion} ({saliency.method}, {saliency.target})"
    spans = [(w.start, w.end) for w in explanation.windows]
    picture = explanation_figure(
        load_audio(row.audio), frame_cues(row.audio), saliency.times, saliency.values, spans, title
    )
    with tempfile.TemporaryDirectory(prefix="explain-") as tmp:
        path = Path(tmp) / f"{row.id}-{saliency.method}.png"
        picture.savefig(path, dpi=110)
        plt.close(picture)
        return explanation, _log_file(run_id, path)


@dataclass(frozen=True)
class RunExplanations:
    run_id: str
    records: list[ExplanationRecord]
    metrics: dict[str, float]
    summary: dict[str, Any]  # summary.json: metrics, deletion test, plausibility by emotion, skipped


def explain_run(
    run_id: str, settings: ExplainSettings, limit: int | None = None, progress: bool = True
) -> RunExplanations:
    """`explain RUN_ID --all`: every test utterance of every fold (the first `limit` of them)."""
    tracking_setup(load_mlflow_config())
    run = finished_run(run_id)
    explainer = RunExplainer(run, settings)
    todo = [
        (fold, record)
        for fold, fold_run in sorted(fold_runs(run).items())
        for record in load_run_records(fold_run.info.run_id, f"fold-{fold}")
    ][:limit]
    records, evidence, deletions, skipped = [], [], [], []
    for fold, record in tqdm(todo, desc="explaining", disable=not progress):
        if record.hyp_emotion is None:
            skipped.append(record.id)  # no label, no decision: counted, never hidden
            continue
        explanation = explainer.explain(fold, record)
        evidence.append(explanation.evidence)
        deletions.append(explanation.deletion)
        records.append(
            ExplanationRecord.of(
                fold, settings.method, explanation.row.emotion, explanation.evidence, explanation.claims,
                explanation.deletion,
            )
        )  # fmt: skip
    if not records:
        raise BenchmarkError(
            f"run {run_id}: none of its {len(todo)} test answers names an emotion label; nothing to explain"
        )
    metrics = {name: scores.value for name, scores in explanation_scores(records).items()}
    test = summarise_deletions(deletions)
    metrics |= {"explain.utterances": len(records), "explain.skipped": len(skipped)}
    metrics |= {"explain.deletion.top": test.top_drop, "explain.deletion.random": test.random_drop}
    if test.p_value is not None:
        metrics["explain.deletion.p"] = test.p_value
    summary = {
        "settings": settings.__dict__,
        "metrics": metrics,
        "plausibility": cue_plausibility(evidence).to_json(),
        "skipped": {"no emotion label": skipped},
    }
    client = MlflowClient()
    for name, value in metrics.items():
        tracking_write(client.log_metric, run_id, name, value)
    with tempfile.TemporaryDirectory(prefix="explain-") as tmp:
        write_explanations(Path(tmp) / "utterances.jsonl", records)
        (Path(tmp) / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
        figure = cue_agreement_figure(
            records, f"cue verdicts by predicted emotion: {run.data.tags.get(tag.SYSTEM)}"
        )
        figure.savefig(Path(tmp) / "cues_by_emotion.png", dpi=110)
        plt.close(figure)
        for name in ("utterances.jsonl", "summary.json", "cues_by_emotion.png"):
            _log_file(run_id, Path(tmp) / name)
    return RunExplanations(run_id, records, metrics, summary)
