"""Acoustic cues: openSMILE's eGeMAPSv02 set per utterance and per frame, plus speaking rate.

eGeMAPS (Eyben et al. 2016) is the field's standard minimal set for affect and the one the
expert-referenced emotion directions are phrased in, so the explanations speak the literature's
language. Speaking rate is ours: transcript words per second of *voiced* time, so leading or
trailing silence does not change it.

Measurements are cached under `benchmark_home()/cues/`, keyed by a hash of the audio file's bytes
and `CUE_VERSION` (bump it when a definition changes). `speaker_zscores` standardises each cue
within speaker, `level` turns a z-score into `low` / `normal` / `high`, and `descriptor_levels`
chains the two, so the demo corpus and descriptor faithfulness apply one rule (docs/design.md).
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

import numpy as np
import opensmile
import pandas as pd
from tqdm import tqdm

from benchmark.config import benchmark_home
from benchmark.data.audio import SAMPLE_RATE, AudioError, load_audio
from benchmark.data.builds import atomic_file

CUE_VERSION = 1  # bump when a cue's definition changes, so that stale cache entries are ignored
HOP_SECONDS = 0.01  # eGeMAPS low-level descriptors come every 10 ms
LEVEL_THRESHOLD = 0.5  # |z| above this many speaker standard deviations is `low` / `high`
MIN_SPEAKER_UTTERANCES = 3  # fewer than this: z-score with the global mean and std instead

Level = Literal["low", "normal", "high"]

# Descriptor dimension -> the cue that measures it; descriptor faithfulness checks claims with these.
DESCRIPTOR_CUES = {"pitch": "f0_mean", "energy": "loudness", "speed": "speaking_rate"}

_F0_LLD = "F0semitoneFrom27.5Hz_sma3nz"
# UtteranceCues field -> eGeMAPSv02 functional.
_FUNCTIONALS = {
    "f0_mean": "F0semitoneFrom27.5Hz_sma3nz_amean",
    "f0_range": "F0semitoneFrom27.5Hz_sma3nz_pctlrange0-2",
    "loudness": "loudness_sma3_amean",
    "jitter": "jitterLocal_sma3nz_amean",
    "shimmer": "shimmerLocaldB_sma3nz_amean",
    "hnr": "HNRdBACF_sma3nz_amean",
    "spectral_slope": "slopeV0-500_sma3nz_amean",
}
_VOICED_ONLY = ("f0_mean", "f0_range", "jitter", "shimmer", "hnr", "spectral_slope")
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


@dataclass(frozen=True)
class UtteranceCues:
    """The acoustic cues of one utterance (eGeMAPSv02 functionals unless said otherwise).

    Cues measured on voiced frames only are NaN for an utterance with no voiced frame.
    """

    f0_mean: float  # semitones above 27.5 Hz, mean over voiced frames (12 st = one octave)
    f0_range: float  # semitones, 20th to 80th percentile of the voiced F0
    loudness: float  # perceived loudness from the auditory spectrum (sone-like units), mean over frames
    jitter: float  # local jitter: period-to-period F0 variation, as a fraction of the period
    shimmer: float  # local shimmer: period-to-period amplitude variation, dB
    hnr: float  # harmonics-to-noise ratio, dB (higher = less breathy or rough)
    spectral_slope: float  # slope of the log-power spectrum over 0-500 Hz, dB per Hz, voiced frames
    duration: float  # seconds of audio
    voiced_time: float  # seconds with a detected F0 (voiced frames x 10 ms)
    speaking_rate: float | None  # words of the transcript per second of voiced time; None without one

    def get(self, name: str) -> float | None:
        """A cue by field name, None when it is missing (no transcript, no voiced frame)."""
        value = getattr(self, name)
        return None if value is None or math.isnan(value) else float(value)


CUE_NAMES = tuple(f.name for f in fields(UtteranceCues))

_extractors = threading.local()


def _smile(level: opensmile.FeatureLevel) -> opensmile.Smile:
    """One extractor per feature level, reused: building one parses the config.

    They are per thread, not per process: one extractor is not safe to share between threads, and
    separate ones run in parallel (openSMILE releases the GIL), which `batch_cues` relies on.
    """
    smiles = _extractors.__dict__.setdefault("smiles", {})
    if level not in smiles:
        smiles[level] = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=level)
    return smiles[level]


def _cache_key(path: Path) -> str:
    try:
        content = path.read_bytes()
    except OSError as err:
        raise AudioError(f"{path}: cannot read audio file ({err.strerror})") from err
    return hashlib.sha256(f"cues-v{CUE_VERSION}\n".encode() + content).hexdigest()


def _cache_path(key: str) -> Path:
    return benchmark_home() / "cues" / key[:2] / f"{key}.npz"


def _measure(wave: np.ndarray) -> dict[str, np.ndarray]:
    """Run openSMILE on a 16 kHz waveform: functionals, frame LLDs and voiced time."""
    functionals = _smile(opensmile.FeatureLevel.Functionals).process_signal(wave, SAMPLE_RATE).iloc[0]
    lld = _smile(opensmile.FeatureLevel.LowLevelDescriptors).process_signal(wave, SAMPLE_RATE)
    voiced_time = float((lld[_F0_LLD] > 0).sum()) * HOP_SECONDS
    values = {name: float(functionals[column]) for name, column in _FUNCTIONALS.items()}
    if voiced_time == 0:
        values.update(dict.fromkeys(_VOICED_ONLY, math.nan))
    values["duration"] = len(wave) / SAMPLE_RATE
    values["voiced_time"] = voiced_time
    return {
        "names": np.array(list(values)),
        "values": np.array(list(values.values()), dtype=np.float64),
        "lld": lld.to_numpy(dtype=np.float32),
        "lld_names": np.array([str(c) for c in lld.columns]),
        "times": lld.index.get_level_values("start").total_seconds().to_numpy(),
    }


def _load_cached(cache: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(cache, allow_pickle=False) as data:
            return {name: data[name] for name in ("names", "values", "lld", "lld_names", "times")}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None  # absent or damaged (e.g. an interrupted write elsewhere): measure again


def _save_cached(cache: Path, measurement: dict[str, np.ndarray]) -> None:
    with atomic_file(cache, "wb", durable=False) as handle:
        np.savez(handle, **measurement)


def _measurement(path: Path | str) -> dict[str, np.ndarray]:
    """The cached measurement of an audio file, measuring (and caching) it on a miss."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found")
    cache = _cache_path(_cache_key(path))
    measurement = _load_cached(cache)
    if measurement is None:
        measurement = _measure(load_audio(path))
        _save_cached(cache, measurement)
    return measurement


def count_words(transcript: str) -> int:
    """Words of a transcript: runs of letters or digits, apostrophes inside words allowed."""
    return len(_WORD.findall(transcript))


def utterance_cues(path: Path | str, transcript: str | None = None) -> UtteranceCues:
    """The cues of one audio file (cached); speaking rate needs the transcript.

    Raises `AudioError` naming the file when it is missing, unreadable or corrupt.
    """
    measurement = _measurement(path)
    values = dict(zip(measurement["names"].tolist(), measurement["values"].tolist(), strict=True))
    words = count_words(transcript) if transcript else 0
    voiced = values["voiced_time"]
    rate = words / voiced if words and voiced > 0 else None
    return UtteranceCues(**values, speaking_rate=rate)


def batch_cues(
    paths: Sequence[Path | str],
    transcripts: Sequence[str | None] | None = None,
    workers: int = 1,
    progress: bool = False,
) -> list[UtteranceCues]:
    """`utterance_cues` of many files, measuring cache misses on `workers` threads.

    Threads rather than processes: openSMILE runs outside the GIL, so two threads make nearly
    two cores' worth of progress without the start-up cost and pitfalls of a process pool.
    """
    transcripts = transcripts if transcripts is not None else [None] * len(paths)
    if len(transcripts) != len(paths):
        raise ValueError(f"{len(paths)} audio files but {len(transcripts)} transcripts")
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(utterance_cues, paths, transcripts)
        return list(tqdm(results, total=len(paths), desc="acoustic cues", disable=not progress))


def frame_cues(path: Path | str) -> pd.DataFrame:
    """The eGeMAPSv02 low-level descriptors of one audio file (cached), one row per 10 ms frame.

    The index, `time`, is each frame's start in seconds (F0 and its kin use 60 ms windows, the
    spectral descriptors 20 ms); the columns are openSMILE's LLD names, e.g. `Loudness_sma3` and
    `F0semitoneFrom27.5Hz_sma3nz` (0 in unvoiced frames).
    """
    measurement = _measurement(path)
    index = pd.Index(measurement["times"], name="time")
    return pd.DataFrame(measurement["lld"], index=index, columns=measurement["lld_names"].tolist())


def speaker_zscores(cues: Sequence[UtteranceCues], speakers: Sequence[str]) -> list[dict[str, float | None]]:
    """Z-score every cue within speaker: one dict (cue name -> z) per utterance, in input order.

    A speaker with fewer than `MIN_SPEAKER_UTTERANCES` values of a cue is standardised with the
    mean and standard deviation over all utterances instead, because a mean of one or two
    utterances is mostly the utterances themselves. A zero standard deviation gives z = 0 (nothing
    to tell apart). Missing values (None, NaN) stay None. Standard deviations are population ones.
    """
    if len(cues) != len(speakers):
        raise ValueError(f"{len(cues)} cue sets but {len(speakers)} speakers")
    speaker_array = np.asarray(speakers)
    out: list[dict[str, float | None]] = [{} for _ in cues]
    for name in CUE_NAMES:
        values = np.array([np.nan if (v := c.get(name)) is None else v for c in cues], dtype=np.float64)
        present = ~np.isnan(values)
        global_stats = _mean_std(values[present])
        for speaker in np.unique(speaker_array):
            mine = speaker_array == speaker
            own = values[mine & present]
            mean, std = _mean_std(own) if len(own) >= MIN_SPEAKER_UTTERANCES else global_stats
            for i in np.flatnonzero(mine):
                out[i][name] = (float((values[i] - mean) / std) if std > 0 else 0.0) if present[i] else None
    return out


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    if len(values) == 0:
        return math.nan, 0.0
    return float(values.mean()), float(values.std())


def level(z: float | None, threshold: float = LEVEL_THRESHOLD) -> Level | None:
    """`low` below -threshold, `high` above +threshold, else `normal`; None for a missing z."""
    if z is None or math.isnan(z):
        return None
    if z > threshold:
        return "high"
    if z < -threshold:
        return "low"
    return "normal"


def descriptor_levels(cues: Sequence[UtteranceCues], speakers: Sequence[str]) -> list[dict[str, Level]]:
    """Per utterance, the level word of each descriptor dimension (`DESCRIPTOR_CUES`): its cue's
    speaker z-score through `level`. A dimension whose cue could not be measured (no voiced frame,
    no transcript for the speaking rate) is absent, so that each caller decides what it means."""
    return [
        {dim: value for dim, cue in DESCRIPTOR_CUES.items() if (value := level(z[cue])) is not None}
        for z in speaker_zscores(cues, speakers)
    ]
