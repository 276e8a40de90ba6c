"""The processes of one run: who leads, and how work is split across them and gathered back.

A run launched by `torchrun` or the `deepspeed` launcher is one run with several processes
(ranks). Rank 0 leads: it alone talks to MLflow and chooses the checkpoint folder. Prediction and
validation are split by batch: rank r takes batches r, r + world, ...; every rank runs the same
number of batches (the short ones repeat a batch and drop its result), because under ZeRO-3 each
forward pass gathers parameters from every rank. Results are gathered on rank 0 in plan order, so
the records are those a world of one gives. Without a process group every helper is the identity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypeVar

import torch.distributed as dist

T = TypeVar("T")


def world() -> tuple[int, int]:
    """(rank, world size) of the process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_lead() -> bool:
    return world()[0] == 0


def shard(items: Sequence[T]) -> list[tuple[int | None, T]]:
    """This rank's share of `items` as (index, item): every world-th from its rank on, padded to the
    same length on every rank with (None, items[0]), whose result the caller drops."""
    rank, size = world()
    mine: list[tuple[int | None, T]] = [(i, items[i]) for i in range(rank, len(items), size)]
    if items:
        mine += [(None, items[0])] * (math.ceil(len(items) / size) - len(mine))
    return mine


def gather(results: dict[int, Any], count: int) -> list[Any] | None:
    """On rank 0, the results of every rank's shard (`shard` index -> result) as one list in index
    order, each of the `count` indices once; None on the other ranks."""
    rank, size = world()
    if size == 1:
        return [results[i] for i in range(count)]
    parts: list[dict[int, Any] | None] = [None] * size if rank == 0 else []
    dist.gather_object(results, parts if rank == 0 else None, dst=0)
    if rank != 0:
        return None
    merged = {index: value for part in parts for index, value in (part or {}).items()}
    return [merged[i] for i in range(count)]


def broadcast(value: T) -> T:
    """Rank 0's `value`, on every rank."""
    if world()[1] == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gathered(value: T) -> list[T]:
    """Every rank's `value`, in rank order, on every rank."""
    size = world()[1]
    if size == 1:
        return [value]
    values: list[Any] = [None] * size
    dist.all_gather_object(values, value)
    return values
