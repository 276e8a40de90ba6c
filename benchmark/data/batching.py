"""Batching of variable-length audio: padding masks and a length-bucketed batch sampler.

Utterances range from under a second to tens of seconds; batching them at random wastes most of
each batch on padding. The sampler groups utterances of similar length (sorting within large
random pools, as fairseq and ESPnet do), so padding is small while batch order stays random.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler


def pad_waveforms(waves: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack 1-D waveforms into a zero-padded (B, T) float tensor and a (B, T) bool mask.

    The mask is True on real samples, False on padding: the convention of transformers'
    `attention_mask` for HuBERT-style encoders.
    """
    if not waves:
        raise ValueError("pad_waveforms needs at least one waveform")
    longest = max(len(w) for w in waves)
    batch = torch.zeros(len(waves), longest, dtype=torch.float32)
    mask = torch.zeros(len(waves), longest, dtype=torch.bool)
    for row, wave in enumerate(waves):
        batch[row, : len(wave)] = torch.as_tensor(wave, dtype=torch.float32)
        mask[row, : len(wave)] = True
    return batch, mask


class LengthBucketSampler(Sampler[list[int]]):
    """Yields batches of indices whose lengths are close, in a random order per epoch.

    Each epoch the indices are shuffled, cut into pools of `pool_batches` batches, each pool is
    sorted by length and cut into batches, and the batches of all pools are shuffled. With
    `max_total` set, a batch is also closed before its padded size (longest x count) exceeds it,
    which bounds memory for long utterances. Call `set_epoch` for a new order each epoch; the order
    depends only on (seed, epoch), so a resumed run sees the same batches.
    """

    def __init__(
        self,
        lengths: Sequence[float],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        pool_batches: int = 50,
        max_total: float | None = None,
        drop_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.pool_batches = pool_batches
        self.max_total = max_total
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths)) if self.shuffle else np.arange(len(self.lengths))
        pool_size = self.batch_size * self.pool_batches
        batches: list[list[int]] = []
        for start in range(0, len(order), pool_size):
            pool = sorted(order[start : start + pool_size].tolist(), key=lambda i: self.lengths[i])
            batches.extend(self._cut(pool))
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def _cut(self, sorted_indices: list[int]) -> Iterator[list[int]]:
        batch: list[int] = []
        for index in sorted_indices:
            longest = max([self.lengths[i] for i in batch] + [self.lengths[index]])
            too_big = self.max_total is not None and batch and longest * (len(batch) + 1) > self.max_total
            if len(batch) == self.batch_size or too_big:
                yield batch
                batch = []
            batch.append(index)
        if batch:
            yield batch

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        if self.max_total is None and not self.drop_last:
            return math.ceil(len(self.lengths) / self.batch_size)
        return len(self._batches())
