"""DeepSpeed ZeRO-2/3 on CPU take the same training step as the plain loop.

DeepSpeed keeps process-wide state (the process group, its accelerator, patched modules), so each
ZeRO stage runs in a fresh Python process: this file is also the script that process runs.
Tolerances: 1e-5 on the first step's loss (same forward pass, before any update) and 1e-4 on the
loss after the step (ZeRO's flat fp32 partitions sum and clip gradients in another order).
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys

import pytest

FIRST_STEP_TOL, AFTER_STEP_TOL = 1e-5, 1e-4


def run_stage(engine: str) -> dict[str, float]:
    """Train one step with the plain engine and with `engine`; the losses of both."""
    import torch

    from benchmark.config import AdapterConfig, BottleneckConfig, StageConfig, SystemConfig, TrainingSettings
    from benchmark.data.examples import Example
    from benchmark.nn.system import build_system
    from benchmark.train.data import collate
    from benchmark.train.loop import train

    torch.set_num_threads(1)
    stage = StageConfig(
        name="joint",
        train=["content", "descriptor", "llm"],
        tasks=["full"],
        epochs=1,
        lr=1e-3,
        scheduler="constant",
        warmup_ratio=0.0,
    )
    system = SystemConfig(
        name="tiny",
        title="tiny",
        targets=["transcript", "descriptor", "emotion"],
        schedule="joint",
        stages=[stage],
        bottleneck=BottleneckConfig(hidden_dim=16, latent_dim=8),
        adapter=AdapterConfig(stack=2, hidden_dim=32),
        training=TrainingSettings(batch_size=2, max_grad_norm=0.5, seed=1),
    )
    generator = torch.Generator().manual_seed(0)
    data = [
        Example(f"u{i}", torch.randn(3, 4 + i, 12, generator=generator), "hello there", "a calm voice", "sad")
        for i in range(2)
    ]
    batch = collate(data, "full")
    result = {}
    for name in ("plain", engine):
        torch.manual_seed(0)
        model = build_system(system, 3, 12, "tiny")
        history = train(model, data, engine=name, progress=False)
        assert len(history) == 1
        with torch.no_grad():
            after = model(batch.inputs.values, batch.inputs.mask, batch.targets).loss.item()
        result[name] = {"first": history[0]["train.loss"], "after": after}
    return result


@pytest.mark.parametrize("engine", ["zero2", "zero3"])
def test_deepspeed_step_matches_the_plain_loop(engine):
    if importlib.util.find_spec("deepspeed") is None:
        pytest.skip("deepspeed is not installed")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(
        os.environ,
        DS_ACCELERATOR="cpu",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK="0",
        LOCAL_RANK="0",
        WORLD_SIZE="1",
        OMP_NUM_THREADS="1",
    )
    proc = subprocess.run(
        [sys.executable, __file__, engine], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    if proc.returncode == 3:
        pytest.skip(f"deepspeed cannot be imported: {proc.stdout.strip()}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    plain, zero = result["plain"], result[engine]
    assert zero["first"] == pytest.approx(plain["first"], abs=FIRST_STEP_TOL)
    assert zero["after"] == pytest.approx(plain["after"], abs=AFTER_STEP_TOL)
    assert abs(plain["after"] - plain["first"]) > 100 * AFTER_STEP_TOL  # the step did change the model


if __name__ == "__main__":
    try:
        import deepspeed  # noqa: F401
    except Exception as err:  # any import failure (missing ops, broken build) is a reason to skip
        print(f"{type(err).__name__}: {err}")
        sys.exit(3)
    print(json.dumps(run_stage(sys.argv[1])))
