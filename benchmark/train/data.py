"""Per-task training batches and the batch plan of one epoch.

A stage names several tasks; every task gets its own length-bucketed batches over the utterances
that have the task's fields (`benchmark.data.tasks`: the descriptor is optional, so IEMOCAP and
MELD rows train the emotion without it), and the tasks' batches are interleaved round-robin
(asr, ser_sed, asr, ...), so an epoch visits every eligible utterance once per task. A task that
finds no row at all is an error before training (`check_stage_rows`), never a silently shorter
stage.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from benchmark.config import StageConfig, Task
from benchmark.data.batching import LengthBucketSampler
from benchmark.data.examples import Example, Inputs, stack_inputs, target_for
from benchmark.data.tasks import OPTIONAL_FIELDS, TASK_FIELDS
from benchmark.errors import BenchmarkError


@dataclass
class Batch:
    ids: list[str]
    task: Task
    inputs: Inputs  # hidden states, or waveforms for the online encoder (`benchmark.data.examples`)
    targets: list[str]

    def to(self, device: torch.device) -> Batch:
        return Batch(self.ids, self.task, self.inputs.to(device), self.targets)

    def pin_memory(self) -> Batch:
        return Batch(self.ids, self.task, self.inputs.pin_memory(), self.targets)


class PlannedBatches(Dataset):
    """An epoch's planned batches (`epoch_plan`) as a map-style dataset of collated batches, so a
    `DataLoader` with worker processes reads the cache files or decodes the audio ahead of the step."""

    def __init__(self, examples: Sequence[Example], plan: Sequence[tuple[Task, list[int]]]) -> None:
        self.examples, self.plan = examples, plan

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, index: int) -> Batch:
        task, indices = self.plan[index]
        return collate([self.examples[j] for j in indices], task)


def batch_loader(
    examples: Sequence[Example], plan: Sequence[tuple[Task, list[int]]], workers: int, device: torch.device
) -> DataLoader:
    """The batches of `plan` in order, collated by `workers` processes (0: in this one), pinned on CUDA.
    Its own generator draws the workers' seeds: from torch's global one, each epoch's draw would
    shift the noise the model samples, and a run's results with it."""
    return DataLoader(
        PlannedBatches(examples, plan),
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator(),
    )


def task_counts(examples: Sequence[Example], task: Task) -> dict[str, int]:
    """Examples per epoch of `task`, per corpus (every corpus of `examples`, zeros included)."""
    counts = dict.fromkeys(sorted({example.dataset for example in examples}), 0)
    for example in examples:
        if target_for(example, task) is not None:
            counts[example.dataset] += 1
    return counts


def check_stage_rows(stages: Sequence[StageConfig], examples: Sequence[Example]) -> None:
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


def collate(examples: Sequence[Example], task: Task) -> Batch:
    """A batch of one task: the padded inputs (`stack_inputs`) and the task's target responses."""
    targets = [target_for(example, task) for example in examples]
    if any(t is None for t in targets):
        raise ValueError(f"a {task} batch holds utterances without the task's fields")
    return Batch([e.id for e in examples], task, stack_inputs(examples), targets)


def epoch_plan(
    examples: Sequence[Example],
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
