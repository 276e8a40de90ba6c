"""`python -m benchmark explain RUN_ID UTT_ID`: one prediction of a trained run, explained.

The utterance is looked up among the test predictions of the run's folds (each fold's model was
trained without it), that fold's model is rebuilt (`model/system.pt`, `benchmark.train.trained`)
and the decision it logged is explained two ways:

- *with evidence*: the time saliency of the predicted emotion (`benchmark.explain.saliency`), its
  top-k windows and the eGeMAPS cues inside them against the rest of the utterance, the speaker's
  baseline (every utterance of that speaker in the corpus) and the expert-referenced directions
  (`benchmark.explain.evidence`);
- *in words*: each pitch / energy / speed claim of the generated descriptor against the cue
  measured inside the salient windows.

The decision explained is the one the run logged (its prediction record), not a new generation,
so the explanation is of the number that was scored. A picture of it (`benchmark.explain.figure`)
is logged to the run under `explanations/`.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import matplotlib.pyplot as plt
from mlflow import MlflowClient
from mlflow.entities import Run

from benchmark.config import SystemConfig
from benchmark.data.audio import load_audio
from benchmark.data.cues import frame_cues, utterance_cues
from benchmark.data.manifest import Utterance
from benchmark.data.records import PredictionRecord
from benchmark.errors import BenchmarkError
from benchmark.explain.evidence import (
    DescriptorEvidence,
    UtteranceEvidence,
    cue_evidence,
    descriptor_evidence,
    region_stats,
    speaker_baselines,
    utterance_profile,
    window_mask,
)
from benchmark.explain.figure import explanation_figure
from benchmark.explain.saliency import (
    CaptionerEmotion,
    Decision,
    SaliencyMap,
    SSLEmotion,
    Window,
    gradient_saliency,
    occlusion_saliency,
    top_windows,
)
from benchmark.registry import load_dataset_card
from benchmark.track.experiment import load_corpus
from benchmark.track.lookup import finished_run, fold_runs
from benchmark.track.models import fold_model
from benchmark.track.records import load_run_records
from benchmark.track.store import load_mlflow_config, tracking_setup

Method = Literal["occlusion", "input_x_gradient", "integrated_gradients"]
FIGURES = "explanations"  # artifact folder of the run


@dataclass(frozen=True)
class ExplainRequest:
    run_id: str
    utterance: str
    method: Method = "occlusion"
    k: int = 5
    window_s: float = 0.15
    baseline: Literal["silence", "mean"] = "silence"  # occlusion's
    log_figure: bool = True


@dataclass(frozen=True)
class Explanation:
    run_id: str
    fold: str
    row: Utterance
    record: PredictionRecord
    saliency: SaliencyMap
    windows: list[Window]
    window_cues: list[dict[str, float | None]]  # per window, LLD column -> mean (F0: voiced only)
    evidence: UtteranceEvidence
    claims: DescriptorEvidence
    figure: str | None  # the artifact path of the logged picture

    def to_json(self) -> dict[str, Any]:
        """The `--json` object (the keys the README documents)."""
        outside = {name: c.outside for name, c in self.evidence.cues.items() if c.scope == "window"}
        return {
            "run_id": self.run_id,
            "fold": self.fold,
            "utterance": {
                "id": self.row.id, "speaker": self.row.speaker, "transcript": self.row.transcript,
                "emotion": self.row.emotion, "descriptor": self.row.descriptor,
            },
            "audio": str(self.row.audio),
            "prediction": {
                "emotion": self.record.hyp_emotion, "descriptor": self.record.hyp_descriptor,
                "transcript": self.record.hyp_transcript,
            },
            "saliency": {
                "method": self.saliency.method, "target": self.saliency.target,
                "baseline": self.saliency.baseline, "hop": self.saliency.hop,
            },
            "windows": [
                {"start": w.start, "end": w.end, "saliency": w.saliency, "cues": cues}
                for w, cues in zip(self.windows, self.window_cues, strict=True)
            ],
            "outside": outside,
            "evidence": self.evidence.to_json(),
            "claims": self.claims.to_json(),
            "figure": self.figure,
        }  # fmt: skip


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


def decision_of(model: Any, encoder: Any, record: PredictionRecord) -> Decision:
    """The logged decision as a saliency target: the predicted label, after its own descriptor."""
    from benchmark.nn.ssl_baseline import SSLBaseline

    if record.hyp_emotion is None:
        raise BenchmarkError(
            f"utterance {record.id}: the run's answer names no emotion label ({record.raw_output!r})",
            hint="an unparseable answer has no decision to explain; pick another utterance",
        )
    if isinstance(model, SSLBaseline):
        return SSLEmotion(model, encoder, record.hyp_emotion)
    return CaptionerEmotion(model, encoder, record.hyp_emotion, record.hyp_descriptor)


def speaker_rows(rows: list[Utterance], speaker: str) -> list[Utterance]:
    return [row for row in rows if row.speaker == speaker]


def explain_utterance(request: ExplainRequest) -> Explanation:
    """Explain one logged prediction (module docstring)."""
    from benchmark.nn.backbones import get_backbone
    from benchmark.nn.encoder import build_encoder
    from benchmark.train.demo_backbone import encoder_weights
    from benchmark.train.trained import ARTIFACT, rebuild_trained_model

    tracking_setup(load_mlflow_config())
    run = finished_run(request.run_id, top_level=False)
    fold, fold_run, record = find_prediction(run, request.utterance)
    _, _, saved = fold_model(request.run_id, fold)
    backbone = get_backbone(saved["backbone"])
    family = SystemConfig.model_validate(saved["system"]).encoder_family
    encoder = build_encoder(backbone.encoder, family, encoder_weights(backbone.encoder)).eval()
    model = rebuild_trained_model(saved, encoder, f"{ARTIFACT} of run {request.run_id}, fold {fold}")

    dataset = fold_run.data.tags.get("dataset") or run.data.tags["dataset"]
    load_dataset_card(dataset)
    rows = [row for split in load_corpus(dataset).values() for row in split]
    by_id = {row.id: row for row in rows}
    if request.utterance not in by_id:
        raise BenchmarkError(f"utterance {request.utterance} is not in the {dataset} manifests any more")
    row = by_id[request.utterance]

    wave = load_audio(row.audio)
    decision = decision_of(model, encoder, record)
    if request.method == "occlusion":
        saliency = occlusion_saliency(decision, wave, window_s=request.window_s, baseline=request.baseline)
    else:
        saliency = gradient_saliency(decision, wave, method=request.method)
    windows = top_windows(saliency, k=request.k, window_s=request.window_s)

    mine = speaker_rows(rows, row.speaker)
    rates = {r.id: utterance_cues(r.audio, r.transcript).speaking_rate for r in mine}
    profiles = [utterance_profile(r.audio, rates[r.id]) for r in mine]
    baseline = speaker_baselines(profiles, [r.speaker for r in mine])[row.speaker]
    spans = [(w.start, w.end) for w in windows]
    evidence = cue_evidence(
        row.audio, spans, record.hyp_emotion, baseline, speaking_rate=rates[row.id], utterance_id=row.id
    )
    frames = frame_cues(row.audio)
    window_cues = [
        {cue: stats.value for cue, stats in region_stats(frames, window_mask(frames.index, [span])).items()}
        for span in spans
    ]
    claims = descriptor_evidence(record.hyp_descriptor, evidence)
    figure = None
    if request.log_figure:
        title = f"{row.id}: predicted {record.hyp_emotion} ({saliency.method}, {saliency.target})"
        picture = explanation_figure(wave, frames, saliency.times, saliency.values, spans, title)
        with tempfile.TemporaryDirectory(prefix="explain-") as tmp:
            path = Path(tmp) / f"{row.id}-{saliency.method}.png"
            picture.savefig(path, dpi=110)
            plt.close(picture)
            MlflowClient().log_artifact(request.run_id, str(path), FIGURES)
        figure = f"{FIGURES}/{path.name}"
    return Explanation(
        request.run_id, fold, row, record, saliency, windows, window_cues, evidence, claims, figure
    )
