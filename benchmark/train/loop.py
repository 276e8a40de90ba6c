"""The training loop: every stage of a system's schedule, written out step by step.

For each stage (paper 3.5 and 4.4): unfreeze only the module groups it names; a fresh AdamW and
warm-up + constant/cosine schedule, as in the paper's two separate fine-tuning runs; then epochs
of task-interleaved batches with gradient accumulation, clipping, bf16 autocast on CUDA, one log
call per optimizer step and one checkpoint per epoch. Every task of every stage must find
training rows before anything trains (`check_stage_rows`). Batches are collated by `DataLoader`
workers ahead of the step; with the online feature source the frozen `encoder` turns their
waveforms into hidden states inside the step. With `validation` examples each epoch ends with
their teacher-forced loss (`val.ce`, `val.loss`), split across ranks, the signal a study prunes
on. It runs the plain engine or DeepSpeed (`benchmark.train.engine`); `log(metrics, step)` is
called on rank 0 only. `prepare_stage` and `train_step` are shared with `measurements/gpu_check.py`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from benchmark.config import StageConfig, TrainingSettings
from benchmark.data.examples import Example
from benchmark.data.features import FrameEncoder
from benchmark.nn.system import SpeechEmotionCaptioner, SystemOutput
from benchmark.ranks import all_gathered, shard
from benchmark.train.checkpoint import load_checkpoint, save_checkpoint
from benchmark.train.data import Batch, batch_loader, check_stage_rows, collate, epoch_plan
from benchmark.train.engine import (
    DeepSpeedEngine,
    PlainEngine,
    build_engine,
    init_distributed,
    training_device,
)
from benchmark.train.rng import seed_everything, set_rng_state
from benchmark.train.schedule import build_scheduler

LogFn = Callable[[dict[str, float], int], None]


class _Window:
    """Sums over the micro-batches of one optimizer step, turned into logged metrics."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.count = self.utterances = self.tokens = 0
        self.sums = {"train.loss": 0.0, "train.ce": 0.0, "train.kl.content": 0.0, "train.kl.descriptor": 0.0}

    def add(self, out: SystemOutput, utterances: int) -> None:
        self.count += 1
        self.utterances += utterances
        self.tokens += out.num_tokens
        for key, value in zip(self.sums, (out.loss, out.ce, out.kl_content, out.kl_descriptor), strict=True):
            self.sums[key] += float(value.detach())

    def metrics(self, lr: float) -> dict[str, float]:
        seconds = max(time.perf_counter() - self.start, 1e-9)
        metrics = {key: value / self.count for key, value in self.sums.items()}
        metrics["train.lr"] = lr
        metrics["train.utterances_per_s"] = self.utterances / seconds
        metrics["train.tokens_per_s"] = self.tokens / seconds
        if torch.cuda.is_available():
            metrics["train.gpu_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        return metrics


def prepare_stage(
    model: SpeechEmotionCaptioner,
    stage: StageConfig,
    settings: TrainingSettings,
    engine: str,
    device: torch.device,
    total_steps: int,
) -> PlainEngine | DeepSpeedEngine:
    """Freeze all but the stage's module groups, then AdamW over those, the stage's schedule over
    `total_steps` optimizer steps and the engine around them: a fresh optimizer per stage."""
    trainable = model.set_trainable(list(stage.train))
    optimizer = torch.optim.AdamW(trainable, lr=stage.lr, weight_decay=settings.weight_decay)
    scheduler = build_scheduler(optimizer, stage, total_steps)
    return build_engine(engine, model, optimizer, scheduler, settings, device)


def train_step(
    runner: PlainEngine | DeepSpeedEngine,
    batch: Batch,
    zero_descriptor: bool,
    boundary: bool,
    encoder: FrameEncoder | None = None,
) -> tuple[SystemOutput, float]:
    """One micro-batch on the batch's device: the frozen encoder on waveform inputs (online source),
    forward (bf16 autocast on CUDA), backward, and at an accumulation boundary the optimizer step.
    Returns the output and the learning rate applied."""
    hidden, mask = batch.inputs.encoded(encoder)
    with torch.autocast(hidden.device.type, dtype=torch.bfloat16, enabled=hidden.device.type == "cuda"):
        out = runner(hidden, mask, batch.targets, zero_descriptor)
    runner.backward(out.loss, boundary)
    lr = runner.lr()  # the rate this step applies, before the scheduler moves on
    runner.step(boundary)
    return out, lr


def train(
    model: SpeechEmotionCaptioner,
    examples: Sequence[Example],
    *,
    engine: str = "plain",
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    log: LogFn | None = None,
    progress: bool = True,
    validation: Sequence[Example] = (),
    encoder: FrameEncoder | None = None,
    workers: int = 0,
) -> list[dict[str, float]]:
    """Train `model` through all stages of `model.config`; return one metrics dict per optimizer step.

    Each returned dict holds `step` (global over stages) and the logged metrics. `resume=True`
    continues after the last checkpoint in `checkpoint_dir` (if any) with the same optimizer,
    scheduler, RNG and batch order, so the remaining steps match an uninterrupted run. Seeds come
    from `model.config.training.seed`; seed torch yourself before building the model. The model
    is left in eval mode. `encoder` (on the training device) encodes waveform inputs; `workers`
    is the number of loader processes.
    """
    system, settings = model.config, model.config.training
    check_stage_rows(system.stages, examples)
    rank, local_rank, world_size = init_distributed(engine)
    device = training_device(local_rank)
    seed_everything(settings.seed)
    start_stage, start_epoch, global_step, checkpoint = 0, 0, 0, None
    if resume and checkpoint_dir is not None:
        checkpoint = load_checkpoint(checkpoint_dir, model)
    if checkpoint is not None:
        start_stage, start_epoch = checkpoint["stage"], checkpoint["epoch"] + 1
        global_step = checkpoint["global_step"]
        set_rng_state(checkpoint["rng"])

    history: list[dict[str, float]] = []
    epochs_before = 0  # epochs of earlier stages: makes every stage's batch order different
    for stage_index, stage in enumerate(system.stages):
        first_epoch = start_epoch if stage_index == start_stage else 0
        if stage_index < start_stage or first_epoch >= stage.epochs:
            epochs_before += stage.epochs
            continue

        def plan(epoch: int, stage=stage, offset=epochs_before) -> list:
            return epoch_plan(
                examples, stage.tasks, settings.batch_size, settings.seed, offset + epoch, rank, world_size
            )

        steps_per_epoch = math.ceil(len(plan(0)) / settings.grad_accum)
        runner = prepare_stage(model, stage, settings, engine, device, steps_per_epoch * stage.epochs)
        if checkpoint is not None and stage_index == checkpoint["stage"]:
            runner.load_state(checkpoint_dir, checkpoint["engine"])
        model.train()

        for epoch in range(first_epoch, stage.epochs):
            batches = plan(epoch)
            bar = tqdm(
                total=steps_per_epoch,
                desc=f"{stage.name} epoch {epoch + 1}/{stage.epochs}",
                disable=not progress or rank != 0,
            )
            window = _Window()
            for i, batch in enumerate(batch_loader(examples, batches, workers, device)):
                boundary = (i + 1) % settings.grad_accum == 0 or i + 1 == len(batches)
                out, lr = train_step(runner, batch.to(device), stage.zero_descriptor, boundary, encoder)
                window.add(out, len(batch.ids))
                if not boundary:
                    continue
                global_step += 1
                metrics = window.metrics(lr)
                history.append({"step": global_step, **metrics})
                if log is not None and rank == 0:
                    log(metrics, global_step)
                bar.set_postfix(
                    loss=f"{metrics['train.loss']:.3f}",
                    kl_c=f"{metrics['train.kl.content']:.2f}",
                    kl_d=f"{metrics['train.kl.descriptor']:.2f}",
                    utt_s=f"{metrics['train.utterances_per_s']:.1f}",
                )
                bar.update()
                window = _Window()
            bar.close()
            if validation:
                metrics = validation_loss(runner, validation, stage, settings.batch_size, device, encoder)
                history.append({"step": global_step, **metrics})
                if log is not None and rank == 0:
                    log(metrics, global_step)
                model.train()
            if checkpoint_dir is not None:
                save_checkpoint(checkpoint_dir, model, runner, stage_index, epoch, global_step, rank)
        epochs_before += stage.epochs
    model.eval()
    return history


@torch.no_grad()
def validation_loss(
    runner: Callable,
    examples: Sequence[Example],
    stage: StageConfig,
    batch_size: int,
    device: torch.device,
    encoder: FrameEncoder | None = None,
) -> dict[str, float]:
    """Teacher-forced loss of `examples` on every task of the stage (z = mu: eval mode), weighted
    by response tokens. The batches are split across ranks (`benchmark.ranks.shard`) and the sums
    added up, so every rank returns the same numbers."""
    runner.module.eval()
    plan = [b for task in stage.tasks for b in epoch_plan(examples, [task], batch_size, seed=0, epoch=0)]
    sums = [0.0, 0.0, 0.0]  # response tokens, their cross-entropy, their loss
    for index, (task, indices) in shard(plan):
        batch = collate([examples[j] for j in indices], task).to(device)
        hidden, mask = batch.inputs.encoded(encoder)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = runner(hidden, mask, batch.targets, stage.zero_descriptor)
        if index is not None:  # a repeated batch keeps the ranks in step; its result is dropped
            sums = [sums[0] + out.num_tokens, sums[1] + float(out.ce) * out.num_tokens,
                    sums[2] + float(out.loss) * out.num_tokens]  # fmt: skip
    tokens, ce_sum, loss_sum = (sum(values) for values in zip(*all_gathered(sums), strict=True))
    if tokens == 0:
        return {}
    return {"val.ce": ce_sum / tokens, "val.loss": loss_sum / tokens}
