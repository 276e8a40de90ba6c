"""Training and prediction of the SSL baselines (`kind: ssl`, `benchmark.nn.ssl_baseline`).

One explicit loop: AdamW at the constant rate `ssl.lr` over every parameter of the heads,
length-bucketed batches of cached encoder outputs (a new order per epoch, fixed by the seed),
clipping at `training.max_grad_norm`, one `log(metrics, step)` call per step. There is no
DeepSpeed engine and no checkpointing here, unlike `benchmark.train.loop`: the trainable part is
a few hundred thousand parameters over frozen, cached features, so one device holds it and a
whole run takes minutes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from benchmark.config import SystemConfig
from benchmark.data.batching import LengthBucketSampler
from benchmark.nn.ssl_baseline import SSLBaseline
from benchmark.train.checkpoint import seed_everything
from benchmark.train.data import TrainExample, pad_features
from benchmark.train.engine import training_device
from benchmark.train.loop import LogFn


def build_ssl_baseline(
    system: SystemConfig, num_layers: int, encoder_dim: int, labels: Sequence[str]
) -> SSLBaseline:
    """The baseline's heads for an encoder with `num_layers` hidden states (L+1) of `encoder_dim`."""
    return SSLBaseline(num_layers, encoder_dim, labels, hidden_dim=system.ssl.hidden_dim)


def train_ssl(
    model: SSLBaseline,
    examples: Sequence[TrainExample],
    system: SystemConfig,
    log: LogFn | None = None,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train `model` for `system.ssl.epochs`; return one metrics dict (with `step`) per step.

    Batch size, seed, weight decay and clipping come from `system.training`. Seed torch yourself
    before building the model. The model is left in eval mode on the training device.
    """
    settings, training = system.ssl, system.training
    seed_everything(training.seed)
    device = training_device(0)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=training.weight_decay)
    sampler = LengthBucketSampler([ex.num_frames for ex in examples], training.batch_size, seed=training.seed)
    history: list[dict[str, float]] = []
    for epoch in range(settings.epochs):
        sampler.set_epoch(epoch)
        bar = tqdm(sampler, desc=f"ssl epoch {epoch + 1}/{settings.epochs}", disable=not progress)
        for indices in bar:
            chosen = [examples[i] for i in indices]
            hidden, mask = pad_features([ex.load() for ex in chosen])
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                out = model.loss(
                    hidden.to(device),
                    mask.to(device),
                    [ex.emotion for ex in chosen],
                    [ex.transcript for ex in chosen],
                )
            optimizer.zero_grad()
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), training.max_grad_norm)
            optimizer.step()
            metrics = {
                "train.loss": float(out.loss.detach()),
                "train.ce": float(out.ce.detach()),
                "train.ctc": float(out.ctc.detach()),
                "train.lr": settings.lr,
            }
            history.append({"step": len(history) + 1, **metrics})
            if log is not None:
                log(metrics, len(history))
            bar.set_postfix(ce=f"{metrics['train.ce']:.3f}", ctc=f"{metrics['train.ctc']:.3f}")
    model.eval()
    return history


@torch.no_grad()
def predict_ssl(
    model: SSLBaseline,
    examples: Sequence[TrainExample],
    fold: str | None,
    batch_size: int = 8,
    progress: bool = True,
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
        hidden, mask = pad_features([ex.load() for ex in chosen])
        emotions, transcripts = model.predict(hidden.to(device), mask.to(device))
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
