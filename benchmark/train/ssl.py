"""Training and prediction of the SSL baselines (`kind: ssl`, `benchmark.nn.ssl_baseline`).

One explicit loop: AdamW with two parameter groups, the heads at the constant `ssl.lr` and, when
`ssl.finetune_layers` is not 0, the encoder's top layers (`TopLayers`) at a peak of
`ssl.encoder_lr` with a linear warm-up (`ENCODER_WARMUP`) and a cosine decay (`encoder_lr_scale`),
so pretrained layers take small, slowly starting steps while the new heads settle. Batches are
length-bucketed cached encoder outputs (a seeded order per epoch), clipped at
`training.max_grad_norm`, with one `log(metrics, step)` per step. There is no DeepSpeed and no
checkpointing: the trainable part fits one device even with every encoder layer fine-tuned.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch.optim.lr_scheduler import LambdaLR
from tqdm.auto import tqdm

from benchmark.config import SystemConfig
from benchmark.data.batching import LengthBucketSampler
from benchmark.data.examples import Example, stack_inputs
from benchmark.data.features import FrameEncoder
from benchmark.nn.encoder import SpeechEncoder, TopLayers, resolve_finetune_layers
from benchmark.nn.ssl_baseline import SSLBaseline, SSLOutput
from benchmark.train.engine import training_device
from benchmark.train.loop import LogFn
from benchmark.train.rng import seed_everything
from benchmark.train.schedule import warmup_steps

ENCODER_WARMUP = 0.1  # fraction of the steps over which the encoder layers' rate rises to its peak


def pretrained_top_layers(system: SystemConfig, encoder: SpeechEncoder) -> TopLayers | None:
    """The encoder layers `system.ssl.finetune_layers` fine-tunes, as pretrained; None when it is 0.

    Take them before the encoder is dropped: `build_ssl_baseline` copies them for every fold, so
    each fold starts from the pretrained weights.
    """
    if system.kind != "ssl" or system.ssl.finetune_layers == 0:
        return None
    return TopLayers(encoder, system.ssl.finetune_layers)


def build_ssl_baseline(
    system: SystemConfig,
    num_layers: int,
    encoder_dim: int,
    labels: Sequence[str],
    top_layers: TopLayers | None = None,
) -> SSLBaseline:
    """The baseline for an encoder with `num_layers` hidden states (L+1) of `encoder_dim`.

    `top_layers` (`pretrained_top_layers`) is needed exactly when `ssl.finetune_layers` is not 0;
    the model gets a copy of it.
    """
    k = resolve_finetune_layers(system.ssl.finetune_layers, num_layers - 1)
    given = 0 if top_layers is None else top_layers.num_hidden_states - 1 - top_layers.start
    if given != k:
        raise ValueError(
            f"ssl.finetune_layers={system.ssl.finetune_layers} needs {k} top layers, got {given}"
        )
    return SSLBaseline(
        num_layers,
        encoder_dim,
        labels,
        hidden_dim=system.ssl.hidden_dim,
        top_layers=copy.deepcopy(top_layers),
    )


def encoder_lr_scale(step: int, total_steps: int) -> float:
    """The encoder layers' rate at optimizer step `step` (from 0) as a fraction of the peak:
    linear warm-up over `ENCODER_WARMUP` of the steps (the first step already moves), then
    cosine decay towards zero."""
    warmup = warmup_steps(ENCODER_WARMUP, total_steps)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def train_ssl(
    model: SSLBaseline,
    examples: Sequence[Example],
    system: SystemConfig,
    log: LogFn | None = None,
    progress: bool = True,
    validation: Sequence[Example] = (),
    encoder: FrameEncoder | None = None,
) -> list[dict[str, float]]:
    """Train `model` for `system.ssl.epochs`; return one metrics dict (with `step`) per step.

    Batch size, seed, weight decay and clipping come from `system.training`. Seed torch yourself
    before building the model. The model is left in eval mode on the training device. With top
    layers the metrics also hold `train.encoder_lr`, the encoder layers' rate of the step. With
    `validation` examples each epoch ends with their loss (`val.loss`, `val.ce`, `val.ctc`: the
    mean over utterances), logged at the epoch's last step, as the LLM loop does. `encoder` encodes
    waveform inputs (the online feature source).
    """
    settings, training = system.ssl, system.training
    seed_everything(training.seed)
    device = training_device(0)
    model.to(device).train()
    encoder_params = (
        [] if model.top_layers is None else [p for p in model.top_layers.parameters() if p.requires_grad]
    )
    in_encoder = {id(p) for p in encoder_params}
    head_params = [p for p in model.parameters() if p.requires_grad and id(p) not in in_encoder]
    groups = [{"params": head_params, "lr": settings.lr}]
    if encoder_params:
        groups.append({"params": encoder_params, "lr": settings.encoder_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=training.weight_decay)
    sampler = LengthBucketSampler([ex.num_frames for ex in examples], training.batch_size, seed=training.seed)
    total_steps = settings.epochs * len(sampler)
    scales = [lambda _: 1.0, lambda step: encoder_lr_scale(step, total_steps)][: len(groups)]
    scheduler = LambdaLR(optimizer, scales)
    trainable = head_params + encoder_params
    history: list[dict[str, float]] = []
    step = 0
    for epoch in range(settings.epochs):
        sampler.set_epoch(epoch)
        bar = tqdm(sampler, desc=f"ssl epoch {epoch + 1}/{settings.epochs}", disable=not progress)
        for indices in bar:
            out = batch_loss(model, [examples[i] for i in indices], device, encoder)
            optimizer.zero_grad()
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, training.max_grad_norm)
            encoder_lr = optimizer.param_groups[-1]["lr"] if encoder_params else None
            optimizer.step()
            scheduler.step()
            metrics = {
                "train.loss": float(out.loss.detach()),
                "train.ce": float(out.ce.detach()),
                "train.ctc": float(out.ctc.detach()),
                "train.lr": settings.lr,
            }
            if encoder_lr is not None:
                metrics["train.encoder_lr"] = encoder_lr
            step += 1
            history.append({"step": step, **metrics})
            if log is not None:
                log(metrics, step)
            bar.set_postfix(ce=f"{metrics['train.ce']:.3f}", ctc=f"{metrics['train.ctc']:.3f}")
        if validation:
            metrics = validation_loss(model, validation, training.batch_size, device, encoder)
            history.append({"step": step, **metrics})
            if log is not None:
                log(metrics, step)
            model.train()
    model.eval()
    return history


def batch_loss(
    model: SSLBaseline, chosen: Sequence[Example], device: torch.device, encoder: FrameEncoder | None = None
) -> SSLOutput:
    """The heads' losses on one batch of examples (bf16 autocast on CUDA)."""
    hidden, mask = stack_inputs(chosen).to(device).encoded(encoder)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        return model.loss(
            hidden,
            mask,
            [ex.emotion for ex in chosen],
            [ex.transcript for ex in chosen],
        )


@torch.no_grad()
def validation_loss(
    model: SSLBaseline,
    examples: Sequence[Example],
    batch_size: int,
    device: torch.device,
    encoder: FrameEncoder | None = None,
) -> dict[str, float]:
    """The heads' losses on `examples` in eval mode, each batch weighted by its utterances."""
    model.eval()
    sums = {"val.loss": 0.0, "val.ce": 0.0, "val.ctc": 0.0}
    for start in range(0, len(examples), batch_size):
        chosen = list(examples[start : start + batch_size])
        out = batch_loss(model, chosen, device, encoder)
        for key, value in zip(sums, (out.loss, out.ce, out.ctc), strict=True):
            sums[key] += float(value) * len(chosen)
    return {key: value / len(examples) for key, value in sums.items()}


@torch.no_grad()
def predict_ssl(
    model: SSLBaseline,
    examples: Sequence[Example],
    fold: str | None,
    batch_size: int = 8,
    progress: bool = True,
    encoder: FrameEncoder | None = None,
) -> list[dict[str, str | None]]:
    """Prediction records (`benchmark.eval.predict.RECORD_FIELDS`) for `examples`, in their order.

    The baseline writes no text of its own and no descriptor, so `raw_output` and
    `hyp_descriptor` are None.
    """
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(examples)), key=lambda i: examples[i].num_frames or 0)
    hyps: dict[str, tuple[str, str]] = {}
    for start in tqdm(range(0, len(order), batch_size), desc="predicting", disable=not progress):
        chosen = [examples[i] for i in order[start : start + batch_size]]
        hidden, mask = stack_inputs(chosen).to(device).encoded(encoder)
        emotions, transcripts = model.predict(hidden, mask)
        for ex, emotion, transcript in zip(chosen, emotions, transcripts, strict=True):
            hyps[ex.id] = (emotion, transcript)
    return [
        {
            "id": ex.id,
            "ref_emotion": ex.emotion,
            "hyp_emotion": hyps[ex.id][0],
            "ref_transcript": ex.transcript,
            "hyp_transcript": hyps[ex.id][1],
            "ref_descriptor": ex.descriptor,
            "hyp_descriptor": None,
            "raw_output": None,
            "fold": fold,
        }
        for ex in examples
    ]
