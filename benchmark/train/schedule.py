"""Learning-rate schedules of a stage (paper 4.4): constant or cosine, both after a linear warm-up.

The paper's stage 1 uses a constant 2e-4 after 3% warm-up, stage 2 a cosine decay from a peak of
2e-5 with the same warm-up; transformers' schedules are the ones its recipes used.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR
from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

from benchmark.config import StageConfig


def warmup_steps(warmup_ratio: float, total_steps: int) -> int:
    """Warm-up length in optimizer steps: the ratio of the stage's steps, rounded up."""
    return math.ceil(warmup_ratio * total_steps)


def build_scheduler(optimizer: Optimizer, stage: StageConfig, total_steps: int) -> LambdaLR:
    """The stage's schedule over `total_steps` optimizer steps; the optimizer's lr is the peak."""
    warmup = warmup_steps(stage.warmup_ratio, total_steps)
    if stage.scheduler == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup)
    return get_cosine_schedule_with_warmup(optimizer, warmup, total_steps)
