"""A run's inputs: the frozen encoder on the training device and the loaders of a feature source.

`run` and `evaluate` feed the trainable parts the same way. With `cache` the encoder fills the
feature cache once (each rank its share of the misses, on its own device) and the step reads the
files; with `online` the encoder stays on the device, in bf16 on a GPU, and runs inside the step
on the waveforms the loaders decode. Either way nothing of the corpus is held in memory.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from benchmark.data.features import FEATURE_SOURCES, FeatureCache, FeatureLoader, audio_inputs
from benchmark.data.manifest import Utterance
from benchmark.errors import BenchmarkError
from benchmark.nn.encoder import SpeechEncoder
from benchmark.ranks import all_gathered, shard, world
from benchmark.train.engine import training_device


def feature_loaders(
    source: str, encoder: SpeechEncoder, rows: Sequence[Utterance], progress: bool = True
) -> tuple[dict[str, FeatureLoader], SpeechEncoder | None]:
    """Each row's loader (by id) from `source`, and the encoder the step needs (online only)."""
    if source not in FEATURE_SOURCES:
        raise BenchmarkError(f"unknown feature source {source!r}", hint=f"use {' or '.join(FEATURE_SOURCES)}")
    encoder.to(training_device(int(os.environ.get("LOCAL_RANK", "0"))))
    if torch.cuda.is_available():
        encoder.to(torch.bfloat16)
    ids = [row.id for row in rows]
    if source == "online":
        return dict(zip(ids, audio_inputs(rows, encoder), strict=True)), encoder
    cache = FeatureCache(None, encoder, progress=progress)
    if world()[1] > 1:
        cache.loaders([row for index, row in shard(rows) if index is not None])  # this rank's share
        all_gathered(None)  # every share is written before any rank reads the whole
    return dict(zip(ids, cache.loaders(rows), strict=True)), None
