"""Explanation quality per system: one record per explained utterance, and the three metrics.

`benchmark explain RUN_ID --all` logs one `ExplanationRecord` per test utterance
(`explanations/utterances.jsonl`); `explanation_scores` computes every number from them:
- `explain.deletion`: the mean excess drop when the top-k windows rather than k random ones are
  occluded (`benchmark.explain.deletion`);
- `explain.plausibility`: the share of (window set, established cue) pairs that moved in the
  expert direction (`benchmark.explain.evidence.cue_plausibility`);
- `explain.agreement`: the share of descriptor pitch / energy / speed claims that agree with the
  level inside the salient windows (none for systems without descriptors).
Shares are pooled over utterances; each utterance's own share is its paired score.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from benchmark.data.jsonl import read_jsonl, write_jsonl
from benchmark.eval.metrics import UtteranceScores
from benchmark.explain.deletion import Deletion
from benchmark.explain.evidence import DescriptorEvidence, UtteranceEvidence


class ExplanationRecord(BaseModel):
    """The explanation of one utterance's logged decision, as much as the metrics need."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    fold: str | None
    emotion: str  # the predicted label that was explained
    reference_emotion: str | None
    method: str
    windows: list[tuple[float, float]]
    p_original: float
    p_top: float  # with the salient windows occluded
    p_random: float  # with as many random windows of the same length occluded
    verdicts: dict[str, str]  # established cue -> agrees / disagrees / neutral (measured ones only)
    claims_measured: int
    claims_agreeing: int

    @classmethod
    def of(
        cls,
        fold: str | None,
        method: str,
        reference_emotion: str | None,
        evidence: UtteranceEvidence,
        claims: DescriptorEvidence,
        deletion: Deletion,
    ) -> ExplanationRecord:
        measured = [c for c in claims.claims if c.verdict != "unmeasured"]
        return cls(
            id=evidence.id,
            fold=fold,
            emotion=evidence.emotion or "",
            reference_emotion=reference_emotion,
            method=method,
            windows=list(evidence.windows),
            p_original=deletion.original,
            p_top=deletion.top,
            p_random=deletion.random,
            verdicts={cue.cue: cue.verdict for cue in evidence.established() if cue.verdict},
            claims_measured=len(measured),
            claims_agreeing=sum(c.verdict == "agrees" for c in measured),
        )

    @property
    def excess_drop(self) -> float:
        return self.p_random - self.p_top


def write_explanations(path: Path, records: Iterable[ExplanationRecord]) -> int:
    return write_jsonl(path, records)


def read_explanations(path: Path) -> list[ExplanationRecord]:
    """Read and validate an explanation records file; a bad line raises naming file and line."""
    return [record for _, record in read_jsonl(path, ExplanationRecord)]


def _pooled_share(
    metric: str, records: Sequence[ExplanationRecord], agreeing: list[int], counted: list[int]
) -> UtteranceScores | None:
    kept = [(r.id, a, n) for r, a, n in zip(records, agreeing, counted, strict=True) if n]
    if not kept:
        return None
    ids, agree, count = zip(*kept, strict=True)
    values = np.array(agree, dtype=float) / np.array(count, dtype=float)
    return UtteranceScores(metric, tuple(ids), values, corpus=sum(agree) / sum(count))


def explanation_scores(records: Sequence[ExplanationRecord]) -> dict[str, UtteranceScores]:
    """The metrics of the module docstring with their per-utterance scores; a metric with no
    utterance to score (no descriptor claims) is absent."""
    if not records:
        return {}
    scores = {
        "explain.deletion": UtteranceScores(
            "explain.deletion", tuple(r.id for r in records), np.array([r.excess_drop for r in records])
        )
    }
    agrees = [sum(v == "agrees" for v in r.verdicts.values()) for r in records]
    plausibility = _pooled_share("explain.plausibility", records, agrees, [len(r.verdicts) for r in records])
    agreement = _pooled_share(
        "explain.agreement",
        records,
        [r.claims_agreeing for r in records],
        [r.claims_measured for r in records],
    )
    for name, found in (("explain.plausibility", plausibility), ("explain.agreement", agreement)):
        if found is not None:
            scores[name] = found
    return scores
