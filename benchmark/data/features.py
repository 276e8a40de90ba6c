"""The two feature sources: frozen-encoder features cached on disk, or the audio for the online encoder.

The encoder never trains (paper section 3.1), so its hidden states are the same in every epoch,
fold, stage and system: computing them once turns most encoder time into file reads. An entry is
keyed by the encoder's `key` (backbone, family, a hash of config and weights; it names the folder)
and the sha256 of the audio file's bytes, so an edited file is never served stale features.

Entries are float16 files `<root>/<encoder_key>/<hash[:2]>/<hash>-v<FEATURES_VERSION>.pt`, one
(L+1, F, D) tensor of real frames only, written atomically. Encoders that are not padding
invariant run one utterance at a time (`SpeechEncoder.padding_invariant`). At paper scale the
cache is too large to be worth it (6.8 TB for SpeechCraft): the `online` source hands each
utterance's waveform to the step instead (`AudioInput`), where the encoder runs on the GPU.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from tqdm import tqdm

from benchmark.config import benchmark_home
from benchmark.data.audio import SAMPLE_RATE, load_audio
from benchmark.data.batching import LengthBucketSampler, pad_waveforms
from benchmark.data.builds import atomic_file
from benchmark.data.manifest import Utterance
from benchmark.signals import signals_held

FEATURES_VERSION = 1  # bump when the way features are computed from an encoder changes
FEATURE_SOURCES = ("cache", "online")


class EncodedBatch(Protocol):
    hidden_states: torch.Tensor  # (L+1, B, F, D)
    frame_mask: torch.Tensor  # (B, F), True on real frames


class FrameEncoder(Protocol):
    """What the cache needs of an encoder (`benchmark.nn.encoder.SpeechEncoder` is one): a key that
    changes whenever its outputs would, whether padding leaves a batch's outputs unchanged, and a
    batch call on (B, T) waveforms with their sample mask. The data layer thus caches any encoder
    without importing the torch modules."""

    @property
    def key(self) -> str: ...

    @property
    def padding_invariant(self) -> bool: ...

    def __call__(self, waves: torch.Tensor, mask: torch.Tensor) -> EncodedBatch: ...

    def frame_lengths(self, sample_lengths: torch.Tensor) -> torch.Tensor: ...


class FeatureLoader(Protocol):
    """One utterance's input of a feature source, loaded when its batch needs it; `num_frames` plans
    batches without loading."""

    num_frames: int

    def __call__(self) -> torch.Tensor: ...


@dataclass(frozen=True)
class CachedFeatures:
    """The loader of one utterance's cached features: read from disk each time it is called, so a
    batch holds only its own utterances' hidden states; `num_frames` plans batches without a read."""

    path: Path
    num_frames: int

    def __call__(self) -> torch.Tensor:
        return _read(self.path)


@dataclass(frozen=True)
class AudioInput:
    """The loader of one utterance's 16 kHz mono waveform (S,), for the `online` feature source;
    `num_frames` is the encoder's frame count for the manifest's duration."""

    path: Path
    num_frames: int

    def __call__(self) -> torch.Tensor:
        return torch.from_numpy(load_audio(self.path))


def audio_inputs(utterances: Sequence[Utterance], encoder: FrameEncoder) -> list[AudioInput]:
    """Each utterance's waveform loader, in order; nothing is decoded until a batch needs it."""
    samples = torch.tensor([round(u.duration * SAMPLE_RATE) for u in utterances], dtype=torch.long)
    frames = encoder.frame_lengths(samples).tolist() if utterances else []
    return [AudioInput(Path(u.audio), int(n)) for u, n in zip(utterances, frames, strict=True)]


def _read(path: Path) -> torch.Tensor:
    return torch.load(path, weights_only=True).float()


def _frames(path: Path) -> int:
    """The frame count of a cache file, from its header: memory-mapped, the values are not read."""
    return torch.load(path, weights_only=True, mmap=True).shape[1]


def audio_hash(path: Path | str) -> str:
    """sha256 of an audio file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class FeatureCache:
    """Hidden states of a frozen encoder per utterance, from disk when present, else computed.

    `root` defaults to `benchmark_home()/features`; `encoder_key` to `encoder.key`. `get` returns
    float32 tensors (L+1, F, D) of real frames. With `enabled=False` nothing is read
    or written. `batch_size` and `max_batch_seconds` bound the batches misses are computed in.
    """

    def __init__(
        self,
        root: Path | None,
        encoder: FrameEncoder,
        encoder_key: str | None = None,
        enabled: bool = True,
        batch_size: int = 8,
        max_batch_seconds: float = 120.0,
        progress: bool = True,
    ) -> None:
        self.encoder = encoder
        self.key = encoder_key or encoder.key
        self.folder = (root or benchmark_home() / "features") / self.key
        self.enabled = enabled
        self.batch_size = batch_size if encoder.padding_invariant else 1
        self.max_batch_seconds = max_batch_seconds
        self.progress = progress

    def path(self, utterance: Utterance) -> Path:
        digest = audio_hash(utterance.audio)
        return self.folder / digest[:2] / f"{digest}-v{FEATURES_VERSION}.pt"

    def get(self, utterances: Sequence[Utterance]) -> list[torch.Tensor]:
        """Features of each utterance, in order, in memory; misses are computed in length-bucketed
        batches (and written, when enabled)."""
        paths = [self.path(u) for u in utterances] if self.enabled else [None] * len(utterances)
        features: list[torch.Tensor | None] = [
            _read(path) if path is not None and path.is_file() else None for path in paths
        ]
        missing = [i for i, feature in enumerate(features) if feature is None]
        for i, feature in self._computed(utterances, missing, paths):
            features[i] = feature
        return features  # type: ignore[return-value]

    def loaders(self, utterances: Sequence[Utterance]) -> list[CachedFeatures]:
        """Each utterance's features as a loader of its cache file, in order: misses are computed and
        written first, and nothing stays in memory, so a corpus of any size fits (`Example.load`)."""
        if not self.enabled:
            raise ValueError("a disabled feature cache has no files to load from")
        paths = [self.path(u) for u in utterances]
        frames: list[int | None] = [_frames(path) if path.is_file() else None for path in paths]
        missing = [i for i, count in enumerate(frames) if count is None]
        for i, feature in self._computed(utterances, missing, paths):
            frames[i] = feature.shape[1]
        return [CachedFeatures(path, count) for path, count in zip(paths, frames, strict=True)]  # type: ignore[arg-type]

    def _computed(
        self, utterances: Sequence[Utterance], missing: list[int], paths: Sequence[Path | None]
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """(index, float32 features) of the `missing` utterances, each written to its path if any,
        as the stored float16 values, so a hit and a miss give the same numbers."""
        if not missing:
            return
        sampler = LengthBucketSampler(
            [utterances[i].duration for i in missing],
            batch_size=self.batch_size,
            shuffle=False,
            max_total=self.max_batch_seconds,
        )
        with tqdm(total=len(missing), desc=f"encoding ({self.key})", disable=not self.progress) as bar:
            for batch in sampler:
                indices = [missing[j] for j in batch]
                for i, feature in zip(indices, self._encode([utterances[i] for i in indices]), strict=True):
                    if (path := paths[i]) is not None:
                        feature = feature.half()
                        # A stop inside torch.save would fail its zip writer: hold it until written.
                        with signals_held(), atomic_file(path, "wb", durable=False) as handle:
                            torch.save(feature, handle)
                    yield i, feature.float()
                bar.update(len(batch))

    def _encode(self, utterances: Sequence[Utterance]) -> list[torch.Tensor]:
        waves, mask = pad_waveforms([load_audio(u.audio) for u in utterances])
        out = self.encoder(waves, mask)
        lengths = out.frame_mask.sum(dim=1).tolist()
        return [out.hidden_states[:, row, :n].cpu().clone() for row, n in enumerate(lengths)]
