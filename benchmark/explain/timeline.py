"""One timeline: seconds of the original audio, onto which every frame of every model maps.

Saliency windows, encoder frames, adapter tokens and eGeMAPS frames have different hops, so
linking them needs one clock: the original waveform at 16 kHz (`load_audio`, never trimmed).
Every frame is placed at its START time, the first sample its analysis window sees:
- encoder frame i starts at sample i * hop (hop = the product of the conv strides, 320 for the
  SSL front ends) and spans `receptive_field` samples, both read from the encoder's config;
- adapter token j starts where frame j * k does (`benchmark.nn.adapter.stack_frames`);
- eGeMAPS frame i: every `HOP_SECONDS` from 0, indexed by start in `benchmark.data.cues.frame_cues`.
A frame that straddles an onset already reacts to it; start times for every kind of frame keep
`frames_in_window` one rule.
"""

from __future__ import annotations

import math
from typing import Protocol, overload

import numpy as np
import torch

from benchmark.data.audio import SAMPLE_RATE, receptive_field
from benchmark.data.cues import HOP_SECONDS
from benchmark.nn.encoder import SpeechEncoder


class Span(Protocol):
    """Anything with a start and an end in seconds of the original audio (e.g. a saliency `Window`)."""

    @property
    def start(self) -> float: ...

    @property
    def end(self) -> float: ...


def encoder_hop_samples(encoder: SpeechEncoder) -> int:
    """Samples between the starts of consecutive encoder frames: the product of the conv strides."""
    return math.prod(encoder.model.config.conv_stride)


def encoder_field_samples(encoder: SpeechEncoder) -> int:
    """Samples one encoder frame sees: the receptive field of the conv front end."""
    config = encoder.model.config
    return receptive_field(tuple(config.conv_kernel), tuple(config.conv_stride))


@overload
def encoder_frame_start(encoder: SpeechEncoder, frame: int) -> float: ...
@overload
def encoder_frame_start(encoder: SpeechEncoder, frame: np.ndarray) -> np.ndarray: ...
def encoder_frame_start(encoder: SpeechEncoder, frame: int | np.ndarray) -> float | np.ndarray:
    """Start in seconds of encoder frame `frame` (an index or an array of indices)."""
    return frame * encoder_hop_samples(encoder) / SAMPLE_RATE


@overload
def adapter_token_start(encoder: SpeechEncoder, token: int, stack: int) -> float: ...
@overload
def adapter_token_start(encoder: SpeechEncoder, token: np.ndarray, stack: int) -> np.ndarray: ...
def adapter_token_start(encoder: SpeechEncoder, token: int | np.ndarray, stack: int) -> float | np.ndarray:
    """Start in seconds of adapter token `token`, which stacks encoder frames token*stack onwards."""
    return encoder_frame_start(encoder, token * stack)


@overload
def lld_frame_start(frame: int) -> float: ...
@overload
def lld_frame_start(frame: np.ndarray) -> np.ndarray: ...
def lld_frame_start(frame: int | np.ndarray) -> float | np.ndarray:
    """Start in seconds of eGeMAPS LLD frame `frame` (the index `frame_cues` gives already)."""
    return frame * HOP_SECONDS


def encoder_frame_times(encoder: SpeechEncoder, num_samples: int) -> np.ndarray:
    """Start times of every frame the encoder makes of `num_samples` samples (its own frame count)."""
    count = int(encoder.frame_lengths(torch.tensor([num_samples]))[0])
    return encoder_frame_start(encoder, np.arange(count))


def adapter_token_times(encoder: SpeechEncoder, num_samples: int, stack: int) -> np.ndarray:
    """Start times of every adapter token of `num_samples` samples (the tail token may be partial)."""
    count = int(encoder.frame_lengths(torch.tensor([num_samples]))[0])
    return adapter_token_start(encoder, np.arange(math.ceil(count / stack)), stack)


def frames_in_window(frame_times: np.ndarray, window: Span) -> np.ndarray:
    """Boolean mask of the frames that belong to `window`: those whose START lies in [start, end).

    Half-open, so windows that touch share no frame and every frame belongs to at most one of a set
    of non-overlapping windows.
    """
    times = np.asarray(frame_times, dtype=np.float64)
    return (times >= window.start) & (times < window.end)
