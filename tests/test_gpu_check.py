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


def test_two_process_rows_need_two_gpus_or_tiny_on_cpu():
    gpu_check = load_script()
    assert gpu_check.two_process_skip(2, tiny=False, gpus=1) == "skipped: needs 2 GPUs, found 1"
    assert gpu_check.two_process_skip(2, tiny=False, gpus=0) == "skipped: needs 2 GPUs, found 0"
    assert gpu_check.two_process_skip(2, tiny=True, gpus=1) == "skipped: needs 2 GPUs, found 1"
    assert gpu_check.two_process_skip(2, tiny=True, gpus=0) is None  # DeepSpeed's CPU accelerator, gloo
    assert gpu_check.two_process_skip(2, tiny=False, gpus=8) is None


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
    rows = {(r["engine"], r["variant"], r["features"], r["processes"]): r for r in result["training"]}
    assert list(rows) == [
        ("plain", "as they come", "handed in", 1), ("plain", "speed switches", "handed in", 1),
        ("plain", "speed switches", "online", 1),  # right after the row it is compared with
        ("zero2", "as they come", "handed in", 1), ("zero2", "speed switches", "handed in", 1),
        ("zero2", "speed switches", "handed in", 2), ("zero3", "speed switches", "handed in", 2),
    ]  # fmt: skip
    plain, fast = (rows["plain", v, "handed in", 1] for v in ("as they come", "speed switches"))
    online = rows["plain", "speed switches", "online", 1]
    for row in (plain, fast, online):
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
    # The online row trains the same shapes on waveforms: the encoder makes the same frames.
    assert online["switches"] == fast["switches"] and online["frames"] == fast["frames"] > 0
    assert online["first_loss"] == pytest.approx(fast["first_loss"], rel=0.05)
    assert online["encoder_dtype"] == "float32" and fast["encoder_dtype"] is None  # bf16 on a GPU
    assert online["encoder_s_per_batch"] > 0 and 0 < online["encoder_alone_share"] < 1
    share = (online["step_s"] - fast["step_s"]) / online["step_s"]
    assert online["handed_in_step_s"] == fast["step_s"] and online["encoder_share"] == pytest.approx(share)
    assert -1 < share < 1 and online["meets_target"] == (share <= 0.10)
    skipped = [row["status"] for row in result["training"] if row["engine"] != "plain"]
    assert skipped == ["skipped: no deepspeed"] * 4
    encoder = [(row["dtype"], row["batch"]) for row in result["encoder"]]
    assert encoder == [("float32", 8), ("float32", 16), ("bfloat16", 8), ("bfloat16", 16)]
    assert all(row["clips_per_s"] > 0 for row in result["encoder"])

    markdown = (out / "gpu_check.md").read_text(encoding="utf-8")
    assert "| plain | speed switches |" in markdown and "| zero2 | as they come | skipped" in markdown
    assert "| bfloat16 | 16 |" in markdown and "pip download deepspeed" in markdown
    assert "| plain | speed switches, online encoder |" in markdown
    assert "| zero2, 2 processes | speed switches | skipped: no deepspeed |" in markdown
    verdict = "meets" if online["meets_target"] else "misses"
    assert f"- Online encoder (plain, speed switches): {100 * share:.1f} % of the step" in markdown
    assert f"{verdict} the 10 % target." in markdown


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="needs deepspeed")
def test_the_two_process_row_runs_zero2_over_gloo_on_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The row a 2-GPU machine runs, launched by `torch.distributed.run`, on DeepSpeed's CPU accelerator."""
    blocked = tmp_path / "blocked"
    for name in ("mlflow", "optuna"):
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text(f"raise ImportError('{name} is not installed here')\n")
    monkeypatch.setenv("PYTHONPATH", str(blocked))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    gpu_check = load_script()
    args = SimpleNamespace(steps=1, warmup=1, batch_size=2, seq_len=160, clip_seconds=1.0, out=tmp_path,
                           peak_tflops=None, tiny=True, no_compile=True, row_timeout=300)  # fmt: skip
    row = gpu_check._child(args, "zero2", "speed switches", processes=2)
    assert "status" not in row, row
    assert row["processes"] == 2 and row["device"].startswith("2 x CPU")
    assert row["switches"]["lora_dtype"] == "float32"  # DeepSpeed's own precision: the check leaves it out
    assert row["tokens_per_s"] == pytest.approx(2 * 2 * row["seq_len"] / row["step_s"])  # summed over ranks
    assert len(row["peak_gib_per_rank"]) == 2 and min(row["peak_gib_per_rank"]) > 0
    assert row["peak_gib"] == max(row["peak_gib_per_rank"]) and row["first_loss"] > 0

    row = {**row, "features": "handed in"}
    markdown = gpu_check.markdown({"device": "CPU", "backbone": "tiny", "batch_size": 2, "training": [row],
                                   "encoder": [], "notes": []})  # fmt: skip
    assert "| zero2, 2 processes | speed switches |" in markdown and "peak GiB per rank" in markdown
    per_gpu = row["tokens_per_s"] / 2
    assert f"- ZeRO-2 (2 processes, per GPU): {per_gpu:,.0f} tokens/s: misses the target" in markdown
