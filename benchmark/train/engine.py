"""One training step, two back ends: plain PyTorch, or DeepSpeed ZeRO-2/3.

The loop talks to an engine in DeepSpeed's vocabulary (call the model, `backward`, `step`), so the
same loop runs either. The plain engine is the reference: AdamW over the trainable parameters,
loss divided by the accumulation steps, clipping and a scheduler step at each boundary.
`DeepSpeedEngine` hands the same optimizer and scheduler to `deepspeed.initialize` (ZeRO-2 shards
optimizer state and gradients, ZeRO-3 the parameters too). The loop marks boundaries itself, so an
epoch's last short window still ends in a step. Distributed set-up follows the `deepspeed`
launcher's environment; a single process gets a world of one on a free local port, and without a
GPU `DS_ACCELERATOR=cpu` is set and bf16 is off.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from benchmark.config import TrainingSettings
from benchmark.errors import BenchmarkError

ENGINES = ("plain", "zero2", "zero3")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def init_distributed(engine: str) -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from the launcher's environment; joins the process group if needed.

    The plain engine is single-process (use DeepSpeed for several GPUs); DeepSpeed always needs a
    process group, so a lone process gets a world of one.
    """
    if engine not in ENGINES:
        raise BenchmarkError(f"unknown engine {engine!r}", hint=f"use one of {', '.join(ENGINES)}")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if engine == "plain":
        if world_size > 1:
            raise BenchmarkError(
                "the plain engine runs in one process", hint="launch several with --deepspeed zero2 or zero3"
            )
        return 0, int(os.environ.get("LOCAL_RANK", "0")), 1
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    for name, value in [
        ("RANK", "0"),
        ("LOCAL_RANK", "0"),
        ("WORLD_SIZE", "1"),
        ("MASTER_ADDR", "127.0.0.1"),
    ]:
        os.environ.setdefault(name, value)
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    try:
        import deepspeed
    except ImportError as err:
        raise BenchmarkError(f"DeepSpeed cannot be imported ({err})", hint="use --engine plain") from err
    if not torch.distributed.is_initialized():
        deepspeed.init_distributed()
    return int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])


def training_device(local_rank: int) -> torch.device:
    return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")


def deepspeed_config(engine: str, settings: TrainingSettings) -> dict[str, Any]:
    """The shipped zero2.json / zero3.json with every "auto" filled from the settings and device."""
    text = resources.files("benchmark.train").joinpath(f"{engine}.json").read_text(encoding="utf-8")
    config = json.loads(text)
    filled = {
        "train_micro_batch_size_per_gpu": settings.batch_size,
        "gradient_accumulation_steps": settings.grad_accum,
        "gradient_clipping": settings.max_grad_norm,
    }
    for key, value in filled.items():
        if config.get(key) == "auto":
            config[key] = value
    if config["bf16"]["enabled"] == "auto":
        config["bf16"]["enabled"] = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return config


class PlainEngine:
    """The reference step: autograd, clipping, AdamW and the scheduler, in one process."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: Optimizer,
        scheduler: LRScheduler,
        settings: TrainingSettings,
        device: torch.device,
    ) -> None:
        self.module = model.to(device)
        self.optimizer, self.scheduler = optimizer, scheduler
        self.grad_accum, self.max_grad_norm = settings.grad_accum, settings.max_grad_norm
        self.params = [p for group in optimizer.param_groups for p in group["params"]]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    def backward(self, loss: torch.Tensor, boundary: bool) -> None:
        (loss / self.grad_accum).backward()

    def step(self, boundary: bool) -> None:
        if not boundary:
            return
        if self.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def gathered(self, params: list[nn.Parameter]) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def save_state(self, folder: Path, tag: str) -> dict[str, Any]:
        """Optimizer and scheduler state, stored inside the loop's checkpoint file."""
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state(self, folder: Path, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def stale_states(self, folder: Path, keep: str) -> Iterator[Path]:
        return iter(())


class DeepSpeedEngine:
    """`deepspeed.initialize` around the same model, optimizer and scheduler (ZeRO stage 2 or 3)."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: Optimizer,
        scheduler: LRScheduler,
        settings: TrainingSettings,
        engine: str,
    ) -> None:
        import deepspeed

        self.zero_stage = int(engine[-1])
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model,
            optimizer=optimizer,
            lr_scheduler=scheduler,
            config=deepspeed_config(engine, settings),
        )
        self.module = self.engine.module

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.engine(*args, **kwargs)

    def backward(self, loss: torch.Tensor, boundary: bool) -> None:
        # ZeRO reduces gradients inside backward at a boundary, so it must know before backward.
        self.engine.set_gradient_accumulation_boundary(boundary)
        self.engine.backward(loss)  # divides by gradient_accumulation_steps like the plain engine

    def step(self, boundary: bool) -> None:
        self.engine.step()  # clips, steps optimizer and scheduler only at the boundary set above

    def lr(self) -> float:
        return self.engine.get_lr()[0]

    def gathered(self, params: list[nn.Parameter]) -> contextlib.AbstractContextManager:
        """Full tensors of ZeRO-3's partitioned parameters, for saving them."""
        if self.zero_stage < 3:
            return contextlib.nullcontext()
        import deepspeed

        return deepspeed.zero.GatheredParameters(params)

    def save_state(self, folder: Path, tag: str) -> dict[str, Any]:
        """DeepSpeed writes its (sharded) optimizer and scheduler state under folder/tag, every rank."""
        self.engine.save_checkpoint(str(folder), tag=tag, exclude_frozen_parameters=True)
        return {"deepspeed_tag": tag}

    def load_state(self, folder: Path, state: dict[str, Any]) -> None:
        self.engine.load_checkpoint(
            str(folder), tag=state["deepspeed_tag"], load_module_strict=False, load_lr_scheduler_states=True
        )

    def stale_states(self, folder: Path, keep: str) -> Iterator[Path]:
        return (path for path in folder.glob("ds-*") if path.is_dir() and path.name != keep)


def full_weights(model: nn.Module, engine: str) -> contextlib.AbstractContextManager:
    """The full tensors of the model's module groups (`module_groups`) while the block runs, for
    saving them after training: ZeRO-3 keeps only each rank's partition, so every rank must enter
    (it is collective); the other engines hold full tensors already."""
    if engine != "zero3":
        return contextlib.nullcontext()
    import deepspeed

    groups = model.module_groups().values()  # type: ignore[operator]
    return deepspeed.zero.GatheredParameters([p for params in groups for p in params])


def build_engine(
    engine: str,
    model: nn.Module,
    optimizer: Optimizer,
    scheduler: LRScheduler,
    settings: TrainingSettings,
    device: torch.device,
) -> PlainEngine | DeepSpeedEngine:
    if engine == "plain":
        return PlainEngine(model, optimizer, scheduler, settings, device)
    return DeepSpeedEngine(model, optimizer, scheduler, settings, engine)
