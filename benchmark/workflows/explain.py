"""`python -m benchmark explain RUN_ID UTT_ID|PATH` and `explain RUN_ID --all`: decisions explained.

An utterance is looked up among the test predictions of the run's folds (each fold's model was
trained without it), that fold's model is rebuilt and the decision it logged is explained by
`benchmark.explain.explanation.explain_decision`; this module only finds, loads and logs. A
recording of one's own (PATH) is predicted as `predict` does (`workflows.predict`) and explained
the same way, its unknown speaker's baseline being the recording itself or a folder of theirs.
One decision's picture (PNG) and, with `--html`, its page are logged to the run under
`explanations/`. `--all` explains every test utterance whose answer names a label, logs their
records (`explanations/utterances.jsonl`), a summary and a cue-by-emotion plot, adds the
`explain.*` quality metrics to the run, and with `--html DIR` writes a page each and an index.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from mlflow import MlflowClient
from mlflow.entities import Run
from tqdm import tqdm

from benchmark.data.audio import AudioError, load_audio
from benchmark.data.corpus import load_corpus
from benchmark.data.cues import MIN_SPEAKER_UTTERANCES, frame_cues
from benchmark.data.manifest import Utterance
from benchmark.data.records import PredictionRecord
from benchmark.errors import BenchmarkError
from benchmark.explain.deletion import summarise_deletions
from benchmark.explain.evidence import (
    Baseline,
    cue_plausibility,
    speaker_baselines,
    stretch_baseline,
    utterance_profile,
)
from benchmark.explain.explanation import (
    ExplainSettings,
    Explanation,
    explain_decision,
    require_decision,
    speaking_rate,
)
from benchmark.explain.figure import cue_agreement_figure, explanation_figure
from benchmark.explain.page import explanation_page, index_page, write_page
from benchmark.explain.quality import ExplanationRecord, explanation_scores, write_explanations
from benchmark.registry import load_dataset_card
from benchmark.tracking import tags as tag
from benchmark.tracking.artifacts import load_run_records
from benchmark.tracking.lifecycle import tracking_write
from benchmark.tracking.lookup import finished_run, fold_runs
from benchmark.tracking.models import fold_model
from benchmark.tracking.store import load_mlflow_config, tracking_setup
from benchmark.workflows.predict import FilePrediction, TrainedSystem, audio_files

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
            baseline = speaker_baselines(profiles, [speaker] * len(mine))[speaker]
            source = f"speaker {speaker}: {len(mine)} utterances of the {self.dataset} corpus"
            self._baselines[speaker] = replace(baseline, source=source)
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


@dataclass(frozen=True)
class Explained:
    """One decision explained, and the artifact paths of its PNG and HTML page in the run."""

    explanation: Explanation
    figure: str | None
    page: str | None
    prediction: FilePrediction | None = None  # a recording's: with the label probabilities


def publish(
    run_id: str,
    explanation: Explanation,
    log_figure: bool,
    html: Path | None,
    prediction: FilePrediction | None = None,
) -> Explained:
    """Log the explanation's PNG (`log_figure`) and write its page to `html` and the run (if given)."""
    figure = log_explanation_figure(run_id, explanation) if log_figure else None
    page = None
    if html is not None:
        probabilities = prediction.probabilities if prediction else None
        title = f"{Path(explanation.row.id).name}: {explanation.record.hyp_emotion}"
        page_html = explanation_page(explanation, title=title, run_id=run_id, probabilities=probabilities)
        write_page(html, page_html)
        page = _log_file(run_id, html)
    return Explained(explanation, figure, page, prediction)


def explain_utterance(
    run_id: str, utterance: str, settings: ExplainSettings, log_figure: bool = True, html: Path | None = None
) -> Explained:
    """Explain one logged prediction (module docstring), logging its figure and page as asked."""
    tracking_setup(load_mlflow_config())
    run = finished_run(run_id, top_level=False)
    fold, _, record = find_prediction(run, utterance)
    explainer = RunExplainer(run, settings)
    return publish(run_id, explainer.explain(fold, record), log_figure, html)


def log_explanation_figure(run_id: str, explanation: Explanation) -> str:
    """Log the PNG of one explanation (`explanation_figure`) to the run; its artifact path."""
    saliency, row, record = explanation.saliency, explanation.row, explanation.record
    title = f"{Path(row.id).name}: predicted {record.hyp_emotion} ({saliency.method}, {saliency.target})"
    spans = [(w.start, w.end) for w in explanation.windows]
    picture = explanation_figure(
        load_audio(row.audio), frame_cues(row.audio), saliency.times, saliency.values, spans, title
    )
    with tempfile.TemporaryDirectory(prefix="explain-") as tmp:
        path = Path(tmp) / f"{Path(row.id).name}-{saliency.method}.png"
        picture.savefig(path, dpi=110)
        plt.close(picture)
        return _log_file(run_id, path)


def folder_baseline(folder: Path) -> Baseline:
    """The cue baseline of an unknown speaker from a folder of their other recordings (each a whole
    utterance; with no transcripts, speaking rate has no reference and comes out `unmeasured`)."""
    files, failures = audio_files([folder])
    if failures or len(files) < MIN_SPEAKER_UTTERANCES:
        raise BenchmarkError(
            f"{folder}: {len(files)} recordings; a speaker baseline needs {MIN_SPEAKER_UTTERANCES} or more",
            hint="pass a folder of other recordings of the same speaker, or leave --baseline out",
        )
    profiles = [utterance_profile(path, None) for path in tqdm(files, desc="baseline", leave=False)]
    baseline = speaker_baselines(profiles, ["speaker"] * len(files))["speaker"]
    return replace(baseline, source=f"the speaker's recordings in {folder}: {len(files)} files")


def explain_file(
    run_id: str,
    path: Path,
    settings: ExplainSettings,
    fold: str | None = None,
    baseline_folder: Path | None = None,
    html: Path | None = None,
    log_figure: bool = True,
) -> Explained:
    """Explain the system's decision on a recording of one's own: predicted as `predict` does,
    explained as a test utterance is, against `baseline_folder` or the recording itself."""
    system = TrainedSystem(run_id, fold)
    try:
        row = system.recording(path)
    except AudioError as err:
        raise BenchmarkError(err.message) from err
    (prediction,) = system.predict([row], progress=False)
    record = PredictionRecord(
        id=row.id, ref_emotion=None, hyp_emotion=prediction.emotion, ref_transcript=None,
        hyp_transcript=prediction.transcript, ref_descriptor=None, hyp_descriptor=prediction.descriptor,
        raw_output=prediction.raw_output, fold=system.fold,
    )  # fmt: skip
    require_decision(record)
    if baseline_folder is None:
        baseline = stretch_baseline(row.audio)
        stretches = max(baseline.utterances.values())
        baseline = replace(baseline, source=f"the recording itself: its {stretches} stretches of 0.5 s")
    else:
        baseline = folder_baseline(baseline_folder)
    explanation = explain_decision(
        system.model, system.encoder, row, record, settings, baseline, system.fold, prediction.transcript
    )
    return publish(run_id, explanation, log_figure, html, prediction)


@dataclass(frozen=True)
class RunExplanations:
    run_id: str
    records: list[ExplanationRecord]
    metrics: dict[str, float]
    summary: dict[str, Any]  # summary.json: metrics, deletion test, plausibility by emotion, skipped


def explain_run(
    run_id: str,
    settings: ExplainSettings,
    limit: int | None = None,
    progress: bool = True,
    html_dir: Path | None = None,
) -> RunExplanations:
    """`explain RUN_ID --all`: every test utterance of every fold (the first `limit` of them); with
    `html_dir`, a page per utterance and an `index.html` there, also logged under `explanations/html`."""
    tracking_setup(load_mlflow_config())
    run = finished_run(run_id)
    explainer = RunExplainer(run, settings)
    todo = [
        (fold, record)
        for fold, fold_run in sorted(fold_runs(run).items())
        for record in load_run_records(fold_run.info.run_id, f"fold-{fold}")
    ][:limit]
    records, evidence, deletions, skipped, pages = [], [], [], [], []
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
        if html_dir is not None:
            name = re.sub(r"[^\w.-]", "_", record.id) + ".html"
            title = f"{record.id}: {record.hyp_emotion} (reference {explanation.row.emotion})"
            write_page(html_dir / name, explanation_page(explanation, title=title, run_id=run_id))
            pages.append((explanation, name))
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
    if html_dir is not None:
        title = f"explanations of run {run_id}: {run.data.tags.get(tag.SYSTEM)} on {explainer.dataset}"
        write_page(html_dir / "index.html", index_page(pages, title))
        tracking_write(client.log_artifacts, run_id, str(html_dir), f"{FIGURES}/html")
    return RunExplanations(run_id, records, metrics, summary)
