"""measurements/gpu_check.py end to end on CPU with the tiny backbone, as the GPU machine runs it:
from the clone, with mlflow, optuna and deepspeed unimportable (stand-in packages that raise)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "measurements" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_step_flops_counts_the_llm_work_by_hand():
    gpu_check = load_script()
    config = SimpleNamespace(
        hidden_size=8, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
        intermediate_size=16, vocab_size=100,
    )  # fmt: skip
    # per layer: q, o 8x8; k, v 8x4; gate, up, down 8x16 -> 64 + 64 + 32 + 32 + 384 = 576 weights
    forward = 2 * 576 * 2 * 10 + 4 * 8 * (10 * 11 / 2) * 2 + 2 * 8 * 100 * 3
    assert gpu_check.step_flops(config, 1, 10, 3, full_regime=False) == 2 * forward
    assert gpu_check.step_flops(config, 4, 10, 3, full_regime=True) == 4 * 3 * forward
    assert gpu_check.peak_tflops("NVIDIA H200", None) == 989.0
    assert gpu_check.peak_tflops("NVIDIA H100 PCIe", None) == 756.0
    assert gpu_check.peak_tflops("Some GPU", None) is None and gpu_check.peak_tflops("Some GPU", 50.0) == 50.0


@pytest.mark.slow
def test_tiny_gpu_check_runs_end_to_end_without_mlflow_optuna_or_deepspeed(tmp_path: Path):
    blocked = tmp_path / "blocked"
    for name in ("mlflow", "optuna", "deepspeed"):
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text(f"raise ImportError('{name} is not installed here')\n")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(blocked), "OMP_NUM_THREADS": "1"}  # the script finds the clone
    command = [
        sys.executable, str(SCRIPT), "--tiny", "--no-compile", "--steps", "2", "--warmup", "1",
        "--engines", "plain", "zero2", "--variants", "as they come", "speed switches", "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ZeRO rows skipped" in proc.stdout and "pip download deepspeed" in proc.stdout

    result = json.loads((out / "gpu_check.json").read_text(encoding="utf-8"))
    rows = {(row["engine"], row["variant"]): row for row in result["training"]}
    assert list(rows) == [
        ("plain", "as they come"), ("plain", "speed switches"),
        ("zero2", "as they come"), ("zero2", "speed switches"),
    ]  # fmt: skip
    plain, fast = rows["plain", "as they come"], rows["plain", "speed switches"]
    for row in (plain, fast):
        assert row["tokens_per_s"] > row["response_tokens_per_s"] > 0 and row["utterances_per_s"] > 0
        assert row["peak_gib"] > 0 and row["tflops"] > 0 and row["mfu"] is None  # no peak known for a CPU
        assert abs(row["seq_len"] - 160) <= 1 and row["batch"] == 2
    assert fast["switches"] == {
        "loss_logits_only": True, "lora_dtype": "bfloat16", "lora_dropout": 0.0,
        "compile_layers": False, "gradient_checkpointing": False,
    }  # fmt: skip
    assert plain["switches"]["lora_dropout"] == 0.05 and not plain["switches"]["loss_logits_only"]
    # LoRA's B is zero at the first step: the switches leave the first loss as it was.
    assert fast["first_loss"] == pytest.approx(plain["first_loss"], abs=1e-4)
    assert all(rows["zero2", v]["status"].startswith("skipped") for v in ("as they come", "speed switches"))
    encoder = [(row["dtype"], row["batch"]) for row in result["encoder"]]
    assert encoder == [("float32", 8), ("float32", 16), ("bfloat16", 8), ("bfloat16", 16)]
    assert all(row["clips_per_s"] > 0 for row in result["encoder"])

    markdown = (out / "gpu_check.md").read_text(encoding="utf-8")
    assert "| plain | speed switches |" in markdown and "| zero2 | as they come | skipped" in markdown
    assert "| bfloat16 | 16 |" in markdown and "pip download deepspeed" in markdown
