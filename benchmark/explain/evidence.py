"""Saliency-linked acoustic cues: what the voice does inside the salient windows, against experts.

Following Nasr et al. ("Beyond saliency", 2025), the eGeMAPSv02 low-level descriptors inside a
saliency map's top-k windows are standardised against the speaker's baseline and their direction
is compared with the expert table (`expert_cues.py`). It knows nothing of models: its inputs are
audio (or its `frame_cues`), windows, the speaker's baseline and an emotion label.
A frame is in a window when its start lies in [start, end). Loudness pools all frames; F0, jitter,
shimmer, HNR and spectral slope pool voiced frames only. Speaking rate and F0 variability need a
whole phrase, so they are measured over the whole utterance (`scope: "utterance"`). The baseline
is the speaker's utterances (the corpus below `MIN_SPEAKER_UTTERANCES`). Verdicts use
`benchmark.data.cues.level` (`LEVEL_THRESHOLD`): `agrees`, `disagrees`, `neutral`, `unmeasured`,
or None where the table expects nothing. docs/design.md has the rules in full.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from benchmark.data.cues import (
    LEVEL_THRESHOLD,
    MIN_SPEAKER_UTTERANCES,
    Level,
    frame_cues,
    level,
    utterance_cues,
)
from benchmark.data.manifest import Utterance
from benchmark.errors import BenchmarkError
from benchmark.explain.expert_cues import (
    CUE_KEYS,
    F0,
    F0_VARIABILITY,
    HNR,
    JITTER,
    LOUDNESS,
    SHIMMER,
    SPEAKING_RATE,
    SPECTRAL_SLOPE,
    Direction,
    ExpertTable,
    load_expert_table,
)
from benchmark.explain.faithfulness import descriptor_claims

Window = tuple[float, float]  # (start, end) in seconds of the original audio
Verdict = Literal["agrees", "disagrees", "neutral", "unmeasured"]
Scope = Literal["window", "utterance"]

FRAME_CUES = tuple(cue for cue in CUE_KEYS if cue != SPEAKING_RATE)  # measured from LLD frames
UTTERANCE_CUES = (F0_VARIABILITY, SPEAKING_RATE)  # judged over the whole utterance (module docstring)
_VOICED_ONLY = {F0, F0_VARIABILITY, SPECTRAL_SLOPE, JITTER, SHIMMER, HNR}
_DIRECTION_OF_LEVEL = {"high": "up", "low": "down", "normal": None}
# Descriptor dimension -> the cue that checks it inside the windows (gender is not a window cue).
DESCRIPTOR_EVIDENCE_CUES = {"pitch": F0, "energy": LOUDNESS, "speed": SPEAKING_RATE}


@dataclass(frozen=True)
class CueStats:
    """One cue over a set of frames: `value` is the mean of the LLD (for F0 variability, the std
    of voiced F0), `spread` the std of the LLD over the frames (None for F0 variability), `frames`
    how many frames were pooled. `value` is None when there were too few frames."""

    value: float | None
    spread: float | None
    frames: int


def window_mask(times: Sequence[float] | np.ndarray, windows: Sequence[Window]) -> np.ndarray:
    """Which frames lie in any window: a frame belongs when its start time is in [start, end).

    Raises `BenchmarkError` for a window that is not a finite (start, end) with start < end.
    """
    times = np.asarray(times, dtype=np.float64)
    mask = np.zeros(len(times), dtype=bool)
    for start, end in windows:
        if not (math.isfinite(start) and math.isfinite(end) and start < end):
            raise BenchmarkError(f"window ({start}, {end}) is not a time span with start < end")
        mask |= (times >= start) & (times < end)
    return mask


def region_stats(frames: pd.DataFrame, mask: np.ndarray) -> dict[str, CueStats]:
    """Every frame cue (`FRAME_CUES`) over the frames selected by `mask` (see the module's rules)."""
    voiced = frames[F0].to_numpy(dtype=np.float64) > 0
    out = {}
    for cue in FRAME_CUES:
        column = F0 if cue == F0_VARIABILITY else cue
        use = mask & voiced if cue in _VOICED_ONLY else mask
        values = frames[column].to_numpy(dtype=np.float64)[use]
        if cue == F0_VARIABILITY:
            out[cue] = CueStats(float(values.std()) if len(values) >= 2 else None, None, len(values))
        elif len(values):
            out[cue] = CueStats(float(values.mean()), float(values.std()), len(values))
        else:
            out[cue] = CueStats(None, None, 0)
    return out


def _frames(audio: Path | str | pd.DataFrame) -> pd.DataFrame:
    return audio if isinstance(audio, pd.DataFrame) else frame_cues(audio)


def utterance_profile(
    audio: Path | str | pd.DataFrame, speaking_rate: float | None
) -> dict[str, float | None]:
    """The whole-utterance value of every cue: what one utterance contributes to its speaker's
    baseline (the frame cues over all its frames, by the same rules as a window)."""
    frames = _frames(audio)
    stats = region_stats(frames, np.ones(len(frames), dtype=bool))
    return {cue: stats[cue].value for cue in FRAME_CUES} | {SPEAKING_RATE: speaking_rate}


@dataclass(frozen=True)
class Baseline:
    """A speaker's normal range of each cue: mean and population std over its utterances.

    `utterances[cue]` is how many values the statistics were taken over; `pooled[cue]` is True
    where the speaker had fewer than `MIN_SPEAKER_UTTERANCES` of them and the corpus's statistics
    stand in. `source` says in words what the baseline was measured on (shown with every
    explanation, since a verdict means little without knowing its reference).
    """

    speaker: str
    mean: dict[str, float | None]
    std: dict[str, float]
    utterances: dict[str, int]
    pooled: dict[str, bool]
    source: str = ""

    def z(self, cue: str, value: float | None) -> float | None:
        """The z-score of a value of `cue`; 0 when the baseline has no spread, None when either
        side is missing."""
        mean = self.mean.get(cue)
        if value is None or mean is None or math.isnan(value):
            return None
        std = self.std[cue]
        return float((value - mean) / std) if std > 0 else 0.0


def _mean_std(values: list[float]) -> tuple[float | None, float]:
    return (float(np.mean(values)), float(np.std(values))) if values else (None, 0.0)


def speaker_baselines(
    profiles: Sequence[Mapping[str, float | None]], speakers: Sequence[str]
) -> dict[str, Baseline]:
    """One `Baseline` per speaker from whole-utterance profiles (`utterance_profile`), with the
    fallback to all utterances of `speaker_zscores`. Pass a whole split: a speaker's few
    utterances in a small subset would make a poor baseline."""
    if len(profiles) != len(speakers):
        raise BenchmarkError(f"{len(profiles)} utterance profiles but {len(speakers)} speakers")

    def present(rows: Sequence[Mapping[str, float | None]], cue: str) -> list[float]:
        return [v for r in rows if (v := r.get(cue)) is not None and not math.isnan(v)]

    overall = {cue: _mean_std(present(profiles, cue)) for cue in CUE_KEYS}
    out = {}
    for speaker in sorted(set(speakers)):
        mine = [p for p, s in zip(profiles, speakers, strict=True) if s == speaker]
        mean, std, counts, pooled = {}, {}, {}, {}
        for cue in CUE_KEYS:
            values = present(mine, cue)
            pooled[cue] = len(values) < MIN_SPEAKER_UTTERANCES
            mean[cue], std[cue] = overall[cue] if pooled[cue] else _mean_std(values)
            counts[cue] = len(present(profiles, cue)) if pooled[cue] else len(values)
        out[speaker] = Baseline(speaker, mean, std, counts, pooled)
    return out


def stretch_baseline(audio: Path | str | pd.DataFrame, stretch_s: float = 0.5) -> Baseline:
    """A recording as its own reference (an unknown speaker): its consecutive stretches of
    `stretch_s` seconds stand for the speaker's utterances, so a window's cue is z-scored against
    how the cue varies across the recording. About as long as the top windows pooled (5 x 0.15 s),
    a stretch varies on the same scale. Whole-utterance cues (F0 variability, speaking rate) have
    no reference inside one recording: they are left out, and so come out `unmeasured`."""
    frames = _frames(audio)
    times = frames.index.to_numpy(dtype=np.float64)
    count = max(1, math.ceil((times[-1] + 1e-9) / stretch_s)) if len(times) else 1
    profiles = []
    for i in range(count):
        stats = region_stats(frames, (times >= i * stretch_s) & (times < (i + 1) * stretch_s))
        profiles.append({cue: stats[cue].value for cue in FRAME_CUES if cue not in UTTERANCE_CUES})
    return speaker_baselines(profiles, ["recording"] * count)["recording"]


def judge(z: float | None, direction: Direction, threshold: float = LEVEL_THRESHOLD) -> Verdict:
    """The verdict of a z-score against an expected direction (rules in the module docstring)."""
    moved = level(z, threshold)
    if moved is None:
        return "unmeasured"
    if direction == "baseline":
        return "agrees" if moved == "normal" else "disagrees"
    if moved == "normal":
        return "neutral"
    return "agrees" if _DIRECTION_OF_LEVEL[moved] == direction else "disagrees"


@dataclass(frozen=True)
class CueEvidence:
    """One cue of one utterance: inside vs outside the windows, z against the speaker, verdict.

    For `scope == "utterance"` (speaking rate, F0 variability) `inside` is the utterance's value
    and the outside fields are None. `expected`, `verdict` and `citation` are empty when the table has no
    expectation for this cue and emotion.
    """

    cue: str
    scope: Scope
    inside: float | None
    inside_spread: float | None
    inside_frames: int
    outside: float | None
    outside_spread: float | None
    outside_frames: int
    z: float | None  # of `inside` against the speaker's baseline
    level: Level | None
    expected: Direction | None
    weak: bool
    verdict: Verdict | None
    citation: tuple[str, ...] = ()


@dataclass(frozen=True)
class UtteranceEvidence:
    """The cue evidence of one utterance's window set, keyed by cue (`CUE_KEYS` order)."""

    id: str
    emotion: str | None  # the label the windows explain
    reference: str | None  # its row in the expert table; None: the label has no row
    windows: tuple[Window, ...]
    threshold: float
    cues: dict[str, CueEvidence]

    def established(self) -> list[CueEvidence]:
        """Cues with a verdict that is not weak and was measured: those plausibility counts."""
        return [c for c in self.cues.values() if c.verdict not in (None, "unmeasured") and not c.weak]

    @property
    def agrees_with_experts(self) -> bool | None:
        """Whether a strict majority of the measured established cues agree with the table (None
        without any, e.g. for a label with no row): one utterance-level yes/no for summaries."""
        counted = self.established()
        if not counted:
            return None
        return sum(c.verdict == "agrees" for c in counted) > len(counted) / 2

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"agrees_with_experts": self.agrees_with_experts}


def cue_evidence(
    audio: Path | str | pd.DataFrame,
    windows: Sequence[Window],
    emotion: str | None,
    baseline: Baseline,
    *,
    speaking_rate: float | None = None,
    table: ExpertTable | None = None,
    threshold: float = LEVEL_THRESHOLD,
    utterance_id: str = "",
) -> UtteranceEvidence:
    """The evidence of one utterance: its frames (an audio path, measured and cached by
    `frame_cues`, or that frame table), its salient `windows`, the `emotion` they explain, the
    speaker's `baseline` (`speaker_baselines`) and the utterance's speaking rate, if known."""
    table = table or load_expert_table()
    frames = _frames(audio)
    inside = window_mask(frames.index.to_numpy(), windows)
    stats_in, stats_out = region_stats(frames, inside), region_stats(frames, ~inside)
    expectations = table.expectations(emotion) or {}
    cues = {}
    whole = region_stats(frames, np.ones(len(frames), dtype=bool))[F0_VARIABILITY]
    for cue in CUE_KEYS:
        if cue == SPEAKING_RATE:
            value, spread, count = speaking_rate, None, 0
            out = CueStats(None, None, 0)
        elif cue == F0_VARIABILITY:
            value, spread, count = whole.value, None, whole.frames
            out = CueStats(None, None, 0)
        else:
            value, spread, count = stats_in[cue].value, stats_in[cue].spread, stats_in[cue].frames
            out = stats_out[cue]
        z = baseline.z(cue, value)
        expected = expectations.get(cue)
        cues[cue] = CueEvidence(
            cue=cue,
            scope="utterance" if cue in UTTERANCE_CUES else "window",
            inside=value,
            inside_spread=spread,
            inside_frames=count,
            outside=out.value,
            outside_spread=out.spread,
            outside_frames=out.frames,
            z=z,
            level=level(z, threshold),
            expected=expected.direction if expected else None,
            weak=expected.weak if expected else False,
            verdict=judge(z, expected.direction, threshold) if expected else None,
            citation=expected.citation if expected else (),
        )
    windows = tuple((float(s), float(e)) for s, e in windows)
    return UtteranceEvidence(utterance_id, emotion, table.emotion(emotion), windows, threshold, cues)


def corpus_evidence(
    rows: Sequence[Utterance],
    windows: Mapping[str, Sequence[Window]],
    emotions: Mapping[str, str | None] | None = None,
    *,
    table: ExpertTable | None = None,
    threshold: float = LEVEL_THRESHOLD,
) -> list[UtteranceEvidence]:
    """`cue_evidence` for every row with windows (by id), in the order of `rows`.

    `rows` are all utterances of the evaluated split: every one of them, with or without windows,
    enters its speaker's baseline. `emotions` maps id -> the label the windows explain (e.g. the
    predicted emotion); by default each row's reference emotion.
    """
    if missing := sorted(set(windows) - {r.id for r in rows}):
        raise BenchmarkError(f"windows for utterances not in the split, e.g. {missing[:3]}")
    table = table or load_expert_table()
    rates = [utterance_cues(r.audio, r.transcript).speaking_rate for r in rows]
    frames = {r.id: frame_cues(r.audio) for r in rows}
    profiles = [utterance_profile(frames[r.id], rate) for r, rate in zip(rows, rates, strict=True)]
    baselines = speaker_baselines(profiles, [r.speaker for r in rows])
    return [
        cue_evidence(
            frames[r.id],
            windows[r.id],
            emotions.get(r.id) if emotions is not None else r.emotion,
            baselines[r.speaker],
            speaking_rate=rate,
            table=table,
            threshold=threshold,
            utterance_id=r.id,
        )
        for r, rate in zip(rows, rates, strict=True)
        if r.id in windows
    ]


@dataclass
class VerdictCounts:
    """Verdicts of (window set, cue) pairs. `weak` pairs (any verdict) and `unmeasured`
    established ones are counted here but left out of `share`."""

    agrees: int = 0
    disagrees: int = 0
    neutral: int = 0
    unmeasured: int = 0
    weak: int = 0

    @property
    def counted(self) -> int:
        return self.agrees + self.disagrees + self.neutral

    @property
    def share(self) -> float | None:
        """Agreeing pairs over measured established pairs; None without any."""
        return self.agrees / self.counted if self.counted else None

    def add(self, cue: CueEvidence) -> None:
        if cue.weak:
            self.weak += 1
        else:
            setattr(self, cue.verdict, getattr(self, cue.verdict) + 1)

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"share": self.share}


@dataclass
class Plausibility:
    """Cue plausibility of a set of window sets (one system's): the share of (window set,
    established cue) pairs whose cue moved in the expert direction, overall, per table emotion and
    per cue. `unreferenced` counts, per label, the window sets whose label has no row in the
    table (no verdicts, so in no share)."""

    overall: VerdictCounts = field(default_factory=VerdictCounts)
    per_emotion: dict[str, VerdictCounts] = field(default_factory=dict)
    per_cue: dict[str, VerdictCounts] = field(default_factory=dict)
    unreferenced: dict[str, int] = field(default_factory=dict)
    window_sets: int = 0

    @property
    def share(self) -> float | None:
        return self.overall.share

    def to_json(self) -> dict[str, Any]:
        return {
            "share": self.share,
            "window_sets": self.window_sets,
            "overall": self.overall.to_json(),
            "per_emotion": {k: v.to_json() for k, v in self.per_emotion.items()},
            "per_cue": {k: v.to_json() for k, v in self.per_cue.items()},
            "unreferenced": dict(self.unreferenced),
        }


def cue_plausibility(evidence: Sequence[UtteranceEvidence]) -> Plausibility:
    """Aggregate verdicts; call it once per system for the per-system figure."""
    result = Plausibility(window_sets=len(evidence))
    for item in evidence:
        if item.reference is None:
            label = item.emotion if item.emotion is not None else "(none)"
            result.unreferenced[label] = result.unreferenced.get(label, 0) + 1
            continue
        for cue in item.cues.values():
            if cue.verdict is None:
                continue
            result.overall.add(cue)
            result.per_emotion.setdefault(item.reference, VerdictCounts()).add(cue)
            result.per_cue.setdefault(cue.cue, VerdictCounts()).add(cue)
    return result


@dataclass(frozen=True)
class ClaimCheck:
    """One descriptor claim checked against the cue inside the salient windows."""

    attribute: str  # pitch / energy / speed
    claimed: str  # low / normal / high
    measured: Level | None  # level of the cue's z inside the windows; None: unmeasured
    cue: str
    scope: Scope
    value: float | None
    z: float | None
    verdict: Literal["agrees", "disagrees", "unmeasured"]


@dataclass(frozen=True)
class DescriptorEvidence:
    """The checkable claims of one descriptor against its utterance's window evidence."""

    id: str
    claims: tuple[ClaimCheck, ...]

    @property
    def share(self) -> float | None:
        """Agreeing over measured claims; None when the descriptor makes no checkable claim."""
        measured = [c for c in self.claims if c.verdict != "unmeasured"]
        return sum(c.verdict == "agrees" for c in measured) / len(measured) if measured else None

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"share": self.share}


def descriptor_evidence(descriptor: str | None, evidence: UtteranceEvidence) -> DescriptorEvidence:
    """Check a descriptor's pitch / energy / speed claims (parsed by descriptor faithfulness's
    extractor) against the level of the cue INSIDE the salient windows, z-scored against the
    speaker: does the text describe what the model attended to? Speed is checked at utterance
    level (its cue has no per-window value); gender claims are not about a window and are skipped.
    """
    checks = []
    for attribute, claimed in descriptor_claims(descriptor).items():
        if attribute not in DESCRIPTOR_EVIDENCE_CUES:
            continue
        cue = evidence.cues[DESCRIPTOR_EVIDENCE_CUES[attribute]]
        verdict = "unmeasured" if cue.level is None else "agrees" if cue.level == claimed else "disagrees"
        checks.append(
            ClaimCheck(attribute, claimed, cue.level, cue.cue, cue.scope, cue.inside, cue.z, verdict)
        )
    return DescriptorEvidence(evidence.id, tuple(checks))


@dataclass(frozen=True)
class DescriptorAgreement:
    """Descriptor-evidence agreement of a set of descriptors: claims pooled (as faithfulness)."""

    per_utterance: tuple[DescriptorEvidence, ...]

    def _checks(self) -> list[ClaimCheck]:
        return [c for d in self.per_utterance for c in d.claims if c.verdict != "unmeasured"]

    @property
    def claims(self) -> dict[str, int]:
        return {a: sum(c.attribute == a for c in self._checks()) for a in DESCRIPTOR_EVIDENCE_CUES}

    @property
    def agreeing(self) -> dict[str, int]:
        checks = self._checks()
        return {
            a: sum(c.attribute == a and c.verdict == "agrees" for c in checks)
            for a in DESCRIPTOR_EVIDENCE_CUES
        }

    @property
    def unmeasured(self) -> int:
        return sum(c.verdict == "unmeasured" for d in self.per_utterance for c in d.claims)

    @property
    def share(self) -> float | None:
        """Agreeing over measured claims, pooled; None without any claim."""
        total = sum(self.claims.values())
        return sum(self.agreeing.values()) / total if total else None

    def to_json(self) -> dict[str, Any]:
        return {
            "share": self.share,
            "claims": self.claims,
            "agreeing": self.agreeing,
            "unmeasured": self.unmeasured,
            "per_utterance": [d.to_json() for d in self.per_utterance],
        }


def descriptor_evidence_agreement(
    descriptors: Sequence[str | None], evidence: Sequence[UtteranceEvidence]
) -> DescriptorAgreement:
    """`descriptor_evidence` of each (descriptor, evidence) pair, and the pooled share."""
    if len(descriptors) != len(evidence):
        raise BenchmarkError(f"{len(descriptors)} descriptors but {len(evidence)} window evidences")
    return DescriptorAgreement(
        tuple(descriptor_evidence(d, e) for d, e in zip(descriptors, evidence, strict=True))
    )
