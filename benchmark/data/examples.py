"""Examples: manifest rows paired with what the model's input is made from, loaded when needed.

An example holds (or lazily loads) one utterance's input from a feature source:
- `cache`: the frozen encoder's L+1 hidden states (L+1, F, D), read from the feature cache;
- `online`: its 16 kHz waveform (S,), which the frozen encoder turns into hidden states inside the
  step, on the training device.
`stack_inputs` pads a batch of either kind into `Inputs`, and `Inputs.encoded` gives the hidden
states the trainable parts take, whichever the source. `target_for` gives the response an example
trains on for a task (`benchmark.data.tasks`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from benchmark.config import Task
from benchmark.data.batching import pad_waveforms
from benchmark.data.features import FeatureLoader, FrameEncoder
from benchmark.data.manifest import Utterance
from benchmark.data.tasks import FIELDS, task_response


@dataclass
class Example:
    """One utterance: its input (hidden states (L+1, F, D) or a waveform (S,)), or a callable
    returning it, and its labels.

    `num_frames` is needed with a loader or a waveform, so that batches are planned without loading;
    `dataset` names the corpus, for the per-corpus counts of a training mixture.
    """

    id: str
    features: torch.Tensor | Callable[[], torch.Tensor]
    transcript: str | None = None
    descriptor: str | None = None
    emotion: str | None = None
    num_frames: int | None = None
    dataset: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.features, torch.Tensor) and self.features.dim() == 3:
            self.num_frames = self.features.shape[1]
        elif self.num_frames is None:
            raise ValueError(f"example {self.id!r}: a waveform or a feature loader needs num_frames")

    def load(self) -> torch.Tensor:
        return self.features if isinstance(self.features, torch.Tensor) else self.features()


def examples_of(
    rows: Sequence[Utterance], features: Mapping[str, torch.Tensor | FeatureLoader]
) -> list[Example]:
    """Manifest rows with their inputs (`features`, by row id: tensors, or loaders of a feature source)."""
    return [
        Example(
            r.id,
            features[r.id],
            transcript=r.transcript,
            descriptor=r.descriptor,
            emotion=r.emotion,
            num_frames=getattr(features[r.id], "num_frames", None),
            dataset=r.dataset,
        )
        for r in rows
    ]


def target_for(example: Example, task: Task) -> str | None:
    """The response `task` trains on, or None when the utterance lacks a required field."""
    return task_response(task, {name: getattr(example, name) for name in FIELDS})


def pad_features(features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad per-utterance hidden states (L+1, F, D) along frames into (L+1, B, F, D) plus a (B, F) mask."""
    layers, _, dim = features[0].shape
    longest = max(f.shape[1] for f in features)
    hidden = features[0].new_zeros(layers, len(features), longest, dim)
    mask = torch.zeros(len(features), longest, dtype=torch.bool)
    for row, f in enumerate(features):
        hidden[:, row, : f.shape[1]] = f
        mask[row, : f.shape[1]] = True
    return hidden, mask


@dataclass
class Inputs:
    """A padded batch before the trainable parts: hidden states (L+1, B, F, D) with a (B, F) frame
    mask (source `cache`), or waveforms (B, S) with a (B, S) sample mask (source `online`)."""

    values: torch.Tensor
    mask: torch.Tensor

    @property
    def is_audio(self) -> bool:
        return self.values.dim() == 2

    def to(self, device: torch.device) -> Inputs:
        return Inputs(self.values.to(device, non_blocking=True), self.mask.to(device, non_blocking=True))

    def pin_memory(self) -> Inputs:
        """Page-locked copies, so the copy to the GPU overlaps the step (`DataLoader(pin_memory=True)`)."""
        return Inputs(self.values.pin_memory(), self.mask.pin_memory())

    def encoded(self, encoder: FrameEncoder | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(hidden states (L+1, B, F, D) float32, frame mask (B, F)) on the inputs' device: waveforms
        go through the frozen `encoder` (no grad, in its own dtype), hidden states pass as they are."""
        if not self.is_audio:
            return self.values, self.mask
        if encoder is None:
            raise ValueError("waveform inputs need the frozen encoder (the online feature source)")
        out = encoder(self.values, self.mask)
        return out.hidden_states.float(), out.frame_mask


def stack_inputs(examples: Sequence[Example]) -> Inputs:
    """The padded inputs of a batch of examples, all of one feature source."""
    loaded = [example.load() for example in examples]
    if loaded[0].dim() == 1:
        return Inputs(*pad_waveforms(loaded))
    return Inputs(*pad_features(loaded))
