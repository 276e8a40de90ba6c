"""Training examples, per-task targets, and the batch plan of one epoch.

The loop trains on encoder OUTPUTS: each example holds (or lazily loads) the frozen encoder's
L+1 hidden states of one utterance, so a feature cache or an on-the-fly encoder both fit.

A stage names several tasks; every task gets its own length-bucketed batches over the utterances
that have the task's fields, and the tasks' batches are interleaved round-robin (asr, ser_sed,
asr, ...), so an epoch visits every eligible utterance once per task.

The descriptor is the one optional field. IEMOCAP and MELD have transcripts and emotions but no
descriptors, and the paper trains SER on them next to SpeechCraft (section 4.1): a row without a
descriptor still teaches the emotion, its `ser_sed` (or `full`) response simply leaves the
`Descriptor:` line out. The alternative, descriptors written from measured cues, would teach the
LLM the suite's own cue vocabulary as if it were SpeechCraft's annotation. A task that finds no
row at all is an error before training (`check_stage_rows`), never a silently shorter stage.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from benchmark.config import StageConfig, Task
from benchmark.data.batching import LengthBucketSampler
from benchmark.errors import BenchmarkError
from benchmark.eval.parsing import format_response

# The fields each task asks the LLM to write, in the order format_response writes them.
TASK_FIELDS: dict[str, tuple[str, ...]] = {
    "asr": ("transcript",),
    "ser": ("emotion",),
    "ser_sed": ("descriptor", "emotion"),
    "full": ("transcript", "descriptor", "emotion"),
}
# Left out of the response when an utterance lacks it (see the module docstring).
OPTIONAL_FIELDS = frozenset({"descriptor"})


@dataclass
class TrainExample:
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


@dataclass
class Batch:
    ids: list[str]
    task: Task
    hidden_states: torch.Tensor  # (L+1, B, F, D), zero-padded
    frame_mask: torch.Tensor  # (B, F), True on real frames
    targets: list[str]

    def to(self, device: torch.device) -> Batch:
        return Batch(
            self.ids, self.task, self.hidden_states.to(device), self.frame_mask.to(device), self.targets
        )


def target_for(example: TrainExample, task: Task) -> str | None:
    """The response `task` trains on, or None when the utterance lacks a required field."""
    values = {name: getattr(example, name) for name in TASK_FIELDS[task]}
    if any(value is None for name, value in values.items() if name not in OPTIONAL_FIELDS):
        return None
    return format_response(values.get("transcript"), values.get("descriptor"), values.get("emotion"))


def task_counts(examples: Sequence[TrainExample], task: Task) -> dict[str, int]:
    """Examples per epoch of `task`, per corpus (every corpus of `examples`, zeros included)."""
    counts = dict.fromkeys(sorted({example.dataset for example in examples}), 0)
    for example in examples:
        if target_for(example, task) is not None:
            counts[example.dataset] += 1
    return counts


def check_stage_rows(stages: Sequence[StageConfig], examples: Sequence[TrainExample]) -> None:
    """Fail before training when a task of a stage has no training row (one line: stage, task,
    the fields it needs, the corpora looked in)."""
    corpora = ", ".join(sorted({example.dataset or "(unnamed)" for example in examples})) or "(no rows)"
    for stage in stages:
        for task in stage.tasks:
            if stage.epochs and not any(task_counts(examples, task).values()):
                needed = " and ".join(name for name in TASK_FIELDS[task] if name not in OPTIONAL_FIELDS)
                optional = [name for name in TASK_FIELDS[task] if name in OPTIONAL_FIELDS]
                raise BenchmarkError(
                    f"stage '{stage.name}': task '{task}' has no training rows: it needs {needed}"
                    f"{f' ({optional[0]} optional)' if optional else ''}, and no row of {corpora} has it",
                    hint="add a corpus with these fields (--train-with) or choose a system without the task",
                )


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


def collate(examples: Sequence[TrainExample], task: Task) -> Batch:
    """A batch of one task: padded hidden states, frame mask and the task's target responses."""
    hidden, mask = pad_features([example.load() for example in examples])
    targets = [target_for(example, task) for example in examples]
    if any(t is None for t in targets):
        raise ValueError(f"a {task} batch holds utterances without the task's fields")
    return Batch([e.id for e in examples], task, hidden, mask, targets)


def epoch_plan(
    examples: Sequence[TrainExample],
    tasks: Sequence[Task],
    batch_size: int,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
) -> list[tuple[Task, list[int]]]:
    """The (task, example indices) batches of one epoch, tasks interleaved round-robin.

    Each task's order depends only on (seed, task position, epoch), so a resumed run replays the
    same batches. With several ranks each takes every world_size-th batch of an equal-length plan.
    """
    per_task = []
    for position, task in enumerate(tasks):
        eligible = [i for i, example in enumerate(examples) if target_for(example, task) is not None]
        sampler = LengthBucketSampler(
            [examples[i].num_frames for i in eligible], batch_size, seed=seed * 1000 + position
        )
        sampler.set_epoch(epoch)
        per_task.append([(task, [eligible[j] for j in batch]) for batch in sampler])
    plan = [b for group in itertools.zip_longest(*per_task) for b in group if b is not None]
    if world_size > 1:
        plan = plan[: len(plan) // world_size * world_size][rank::world_size]
    return plan
