"""Epoch checkpoints that a run can resume from as if it had never stopped.

`last.pt` is the commit point, written atomically (`benchmark.data.builds.atomic_file`); a Ctrl-C
or SIGTERM during the write is held until it is whole (`benchmark.signals.signals_held`). It holds
- the weights of every module group (content, descriptor, llm), not just the stage's: a resumed
  stage 2 needs the content branch that stage 1 trained;
- the optimizer and scheduler state (DeepSpeed's sharded state goes to a folder
  `ds-s{stage}-e{epoch}` that the file names);
- the RNG states, the stage, the finished epoch and the global step, so the next epoch draws
  the same noise and sees the same batches.
The frozen base LLM is not saved: it is rebuilt from its own checkpoint.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from benchmark.data.builds import atomic_file
from benchmark.errors import BenchmarkError
from benchmark.nn.system import SpeechEmotionCaptioner
from benchmark.signals import signals_held
from benchmark.train.engine import DeepSpeedEngine, PlainEngine
from benchmark.train.rng import rng_state

CHECKPOINT = "last.pt"


def _group_parameters(model: SpeechEmotionCaptioner) -> dict[str, torch.nn.Parameter]:
    wanted = {id(p) for params in model.module_groups().values() for p in params}
    return {name: p for name, p in model.named_parameters() if id(p) in wanted}


def save_checkpoint(
    folder: Path,
    model: SpeechEmotionCaptioner,
    engine: PlainEngine | DeepSpeedEngine,
    stage: int,
    epoch: int,
    global_step: int,
    rank: int = 0,
) -> None:
    """Write the state after `epoch` of `stage` (collective under DeepSpeed: every rank calls it)."""
    with signals_held():  # a stop waits until the checkpoint is whole
        folder.mkdir(parents=True, exist_ok=True)
        tag = f"ds-s{stage}-e{epoch}"
        engine_state = engine.save_state(folder, tag)
        params = _group_parameters(model)
        with engine.gathered(list(params.values())):
            groups = group_weights(model)
        if rank != 0:
            return
        state = {
            "stages": [s.name for s in model.config.stages],
            "stage": stage,
            "epoch": epoch,
            "global_step": global_step,
            "groups": groups,
            "engine": engine_state,
            "rng": rng_state(),
        }
        with atomic_file(folder / CHECKPOINT, "wb") as handle:
            torch.save(state, handle)
        for stale in engine.stale_states(folder, keep=tag):
            shutil.rmtree(stale)


def group_weights(model: SpeechEmotionCaptioner) -> dict[str, torch.Tensor]:
    """CPU copies of the weights of every module group (what a checkpoint and a trained model keep)."""
    return {name: p.detach().to("cpu", copy=True) for name, p in _group_parameters(model).items()}


def load_checkpoint(folder: Path, model: SpeechEmotionCaptioner) -> dict[str, Any] | None:
    """Load the group weights of the last checkpoint into `model`; return its state, or None if absent.

    Call it before the engine is built (ZeRO-3 partitions the parameters on `initialize`).
    """
    path = folder / CHECKPOINT
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)  # our own file: numpy RNG state
    stages = [s.name for s in model.config.stages]
    if state["stages"] != stages:
        raise BenchmarkError(
            f"{path} was written by a schedule with stages {state['stages']}, this one has {stages}",
            hint="resume with the same system, or start a new run in an empty folder",
        )
    load_group_weights(model, state["groups"], path)
    return state


def load_group_weights(
    model: SpeechEmotionCaptioner, groups: dict[str, torch.Tensor], source: Path | str
) -> None:
    """Copy saved module-group weights into `model`; `source` names where they came from in errors."""
    params = _group_parameters(model)
    if missing := set(params) - set(groups):
        raise BenchmarkError(
            f"{source} lacks weights {sorted(missing)[:3]}",
            hint="the file was written by another system or decoder regime; start a new run",
        )
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(groups[name])
