"""Examples: manifest rows paired with their encoder outputs, as training and prediction take them.

Both the training loop and `predict` work on encoder OUTPUTS: each example holds (or lazily
loads) the frozen encoder's L+1 hidden states of one utterance, so a feature cache or an
on-the-fly encoder both fit. `target_for` gives the response an example trains on for a task
(`benchmark.data.tasks`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from benchmark.config import Task
from benchmark.data.features import CachedFeatures
from benchmark.data.manifest import Utterance
from benchmark.data.tasks import FIELDS, task_response


@dataclass
class Example:
    """One utterance: encoder hidden states (L+1, F, D), or a callable returning them, and labels.

    `num_frames` is needed only with a loader, so that batches can be planned without loading;
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
        if isinstance(self.features, torch.Tensor):
            self.num_frames = self.features.shape[1]
        elif self.num_frames is None:
            raise ValueError(f"example {self.id!r}: a feature loader needs num_frames")

    def load(self) -> torch.Tensor:
        return self.features if isinstance(self.features, torch.Tensor) else self.features()


def examples_of(
    rows: Sequence[Utterance], features: Mapping[str, torch.Tensor | CachedFeatures]
) -> list[Example]:
    """Manifest rows with their encoder outputs (`features`, by row id: tensors, or cache loaders)."""
    return [
        Example(
            r.id,
            features[r.id],
            transcript=r.transcript,
            descriptor=r.descriptor,
            emotion=r.emotion,
            num_frames=None if isinstance(features[r.id], torch.Tensor) else features[r.id].num_frames,
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
