"""The explanation of one emotion decision: saliency, its top windows, their cues, the claims, deletion.

Given a trained model, its frozen encoder, an utterance, the prediction record logged for it and
the speaker's cue baseline, `explain_decision` explains the decision the record holds (not a new
generation, so the explanation is of the answer that was scored) two ways:
- with evidence: the time saliency of the predicted emotion, its top-k windows and the eGeMAPS
  cues inside them against the rest, the speaker's baseline and the expert directions; and the
  deletion test (occluding those windows against random ones);
- in words: each pitch / energy / speed claim of the generated descriptor against the cues.
Finding the run, loading and logging are the `explain` workflow's (`benchmark.workflows.explain`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from benchmark.data.audio import load_audio
from benchmark.data.cues import frame_cues, utterance_cues
from benchmark.data.manifest import Utterance
from benchmark.data.records import PredictionRecord
from benchmark.errors import BenchmarkError
from benchmark.explain.deletion import Deletion, deletion_test
from benchmark.explain.evidence import (
    Baseline,
    DescriptorEvidence,
    UtteranceEvidence,
    cue_evidence,
    descriptor_evidence,
    region_stats,
    window_mask,
)
from benchmark.explain.saliency import (
    CaptionerEmotion,
    SaliencyMap,
    SSLEmotion,
    Window,
    gradient_saliency,
    occlusion_saliency,
    top_windows,
)
from benchmark.nn.encoder import SpeechEncoder
from benchmark.nn.ssl_baseline import SSLBaseline
from benchmark.train.trained import TrainedModel

Method = Literal["occlusion", "input_x_gradient", "integrated_gradients"]


@dataclass(frozen=True)
class ExplainSettings:
    """How a decision is explained (the options both forms of `explain` share)."""

    method: Method = "occlusion"
    k: int = 5
    window_s: float = 0.15
    baseline: Literal["silence", "mean"] = "silence"  # what occlusion (and deletion) puts in a window


@dataclass(frozen=True)
class Explanation:
    fold: str
    row: Utterance
    record: PredictionRecord
    saliency: SaliencyMap
    windows: list[Window]
    window_cues: list[dict[str, float | None]]  # per window, LLD column -> mean (F0: voiced only)
    evidence: UtteranceEvidence
    claims: DescriptorEvidence
    deletion: Deletion
    baseline: Baseline  # the speaker baseline the z-scores are against (`Baseline.source` says which)

    def to_json(self) -> dict[str, Any]:
        """The `--json` object (the keys the README documents)."""
        outside = {name: c.outside for name, c in self.evidence.cues.items() if c.scope == "window"}
        return {
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
            "baseline": {"source": self.baseline.source, "utterances": self.baseline.utterances},
            "evidence": self.evidence.to_json(),
            "claims": self.claims.to_json(),
            "deletion": {
                "p_original": self.deletion.original, "p_top_occluded": self.deletion.top,
                "p_random_occluded": self.deletion.random, "random_windows": self.deletion.random_windows,
            },
        }  # fmt: skip


def speaking_rate(row: Utterance) -> float | None:
    """The utterance's speaking rate (words per second of voiced time), from its transcript."""
    return utterance_cues(row.audio, row.transcript).speaking_rate


def require_decision(record: PredictionRecord) -> str:
    """The emotion the record's answer names; an answer that names none has no decision to explain."""
    if record.hyp_emotion is None:
        raise BenchmarkError(
            f"utterance {record.id}: the run's answer names no emotion label ({record.raw_output!r})",
            hint="an unparseable answer has no decision to explain; pick another utterance",
        )
    return record.hyp_emotion


def explain_decision(
    model: TrainedModel,
    encoder: SpeechEncoder,
    row: Utterance,
    record: PredictionRecord,
    settings: ExplainSettings,
    baseline: Baseline,
    fold: str = "",
    transcript: str | None = None,
) -> Explanation:
    """Explain the decision `record` holds for `row`, made by `model` on `encoder`'s features.

    `baseline` is the speaker's cue baseline (`evidence.speaker_baselines`); `fold` only labels
    the result. The speaking rate counts the words of `transcript`, by default the row's (a
    recording with no reference transcript passes the system's own). A record whose answer
    names no emotion is refused (`require_decision`).
    """
    emotion = require_decision(record)
    if isinstance(model, SSLBaseline):
        decision = SSLEmotion(model, encoder, emotion)
    else:
        decision = CaptionerEmotion(model, encoder, emotion, record.hyp_descriptor)
    wave = load_audio(row.audio)
    if settings.method == "occlusion":
        saliency = occlusion_saliency(decision, wave, window_s=settings.window_s, baseline=settings.baseline)
    else:
        saliency = gradient_saliency(decision, wave, method=settings.method)
    windows = top_windows(saliency, k=settings.k, window_s=settings.window_s)
    spans = [(w.start, w.end) for w in windows]
    frames = frame_cues(row.audio)
    rate = utterance_cues(row.audio, transcript or row.transcript).speaking_rate
    evidence = cue_evidence(frames, spans, emotion, baseline, speaking_rate=rate, utterance_id=row.id)
    window_cues = [
        {cue: stats.value for cue, stats in region_stats(frames, window_mask(frames.index, [span])).items()}
        for span in spans
    ]
    claims = descriptor_evidence(record.hyp_descriptor, evidence)
    deletion = deletion_test(decision, wave, spans, row.id, settings.baseline)
    return Explanation(
        fold, row, record, saliency, windows, window_cues, evidence, claims, deletion, baseline
    )
