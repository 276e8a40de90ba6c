"""Pictures of explanations: one utterance's, and one system's cue verdicts by emotion.

One utterance: four rows on one time axis, seconds of the original audio (nothing trimmed): the
waveform, the F0 track (semitones above 27.5 Hz, voiced frames only: unvoiced frames are gaps, not
zeros), the loudness track, and the saliency curve, shaded. The salient windows are marked on every row, so a
reader can see at a glance whether they fall on speech, on a pitch peak or on a loud stretch.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed or assumed

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from benchmark.data.audio import SAMPLE_RATE
from benchmark.explain.quality import ExplanationRecord

F0_COLUMN = "F0semitoneFrom27.5Hz_sma3nz"
LOUDNESS_COLUMN = "Loudness_sma3"


def explanation_figure(
    wave: np.ndarray,
    frames: pd.DataFrame,
    saliency_times: np.ndarray,
    saliency: np.ndarray,
    windows: Sequence[tuple[float, float]],
    title: str,
) -> plt.Figure:
    """The figure of one utterance: `wave` at 16 kHz, its eGeMAPS frames (`frame_cues`), the
    saliency map (`saliency_times` are bin starts in seconds) and the salient `windows`."""
    duration = len(wave) / SAMPLE_RATE
    figure, axes = plt.subplots(4, 1, figsize=(10, 7), sharex=True, constrained_layout=True)
    axes[0].plot(np.arange(len(wave)) / SAMPLE_RATE, wave, linewidth=0.4, color="0.3")
    axes[0].set_ylabel("waveform")
    f0 = frames[F0_COLUMN].to_numpy(dtype=float)
    axes[1].plot(frames.index, np.where(f0 > 0, f0, np.nan), color="tab:blue")
    axes[1].set_ylabel("F0 (st)")
    axes[2].plot(frames.index, frames[LOUDNESS_COLUMN], color="tab:green")
    axes[2].set_ylabel("loudness")
    axes[3].fill_between(saliency_times, saliency, step="post", color="tab:red", alpha=0.5)
    axes[3].set_ylabel("saliency")
    axes[3].set_xlabel("time (s of the original audio)")
    for axis in axes:
        for start, end in windows:
            axis.axvspan(start, end, color="gold", alpha=0.3, linewidth=0)
    axes[3].set_xlim(0, duration)
    axes[0].set_title(title)
    return figure


def cue_agreement_figure(records: Sequence[ExplanationRecord], title: str) -> plt.Figure:
    """A heatmap of one system's explanations: per predicted emotion (rows) and established cue
    (columns), the share of salient window sets whose cue moved the expert way, with the count."""
    emotions = sorted({r.emotion for r in records if r.verdicts})
    cues = sorted({cue for r in records for cue in r.verdicts})
    share = np.full((len(emotions), len(cues)), np.nan)
    counts = np.zeros_like(share, dtype=int)
    for i, emotion in enumerate(emotions):
        for j, cue in enumerate(cues):
            verdicts = [r.verdicts[cue] for r in records if r.emotion == emotion and cue in r.verdicts]
            counts[i, j] = len(verdicts)
            if verdicts:
                share[i, j] = sum(v == "agrees" for v in verdicts) / len(verdicts)
    figure, axis = plt.subplots(figsize=(1.6 * max(len(cues), 2) + 2, 0.6 * max(len(emotions), 1) + 1.8),
                                constrained_layout=True)  # fmt: skip
    image = axis.imshow(share, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
    axis.set_xticks(
        range(len(cues)), [cue.replace("_sma3", "").replace("nz", "") for cue in cues], rotation=30
    )
    axis.set_yticks(range(len(emotions)), emotions)
    for i in range(len(emotions)):
        for j in range(len(cues)):
            text = "–" if np.isnan(share[i, j]) else f"{share[i, j]:.0%}\nn={counts[i, j]}"
            axis.text(j, i, text, ha="center", va="center", fontsize=8)
    figure.colorbar(image, ax=axis, label="share agreeing with the expert direction")
    axis.set_title(title)
    return figure
