"""Training throughput and peak memory of the `full` system, per engine (plain, ZeRO-2, ZeRO-3).

Runs the suite's own training loop (`benchmark.train.loop.train`) on synthetic encoder outputs of
a chosen shape, one engine per subprocess so that each peak memory is its own, and prints a table
of utterances/s, response tokens/s and peak memory (GPU: torch's peak allocation; CPU: the
process's maximum resident set size).

    python measurements/train_throughput.py                      # tiny shapes, CPU, all engines
    python measurements/train_throughput.py --engines plain --utterances 128 --frames 250
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch


def measure(engine: str, utterances: int, frames: int, batch_size: int, threads: int) -> dict:
    from benchmark.data.examples import Example
    from benchmark.nn.system import build_system
    from benchmark.registry import load_system
    from benchmark.train.loop import train

    torch.set_num_threads(threads)
    stage = {"name": "bench", "train": ["content", "descriptor", "llm"], "tasks": ["full"], "epochs": 2,
             "lr": 1e-4, "scheduler": "constant", "warmup_ratio": 0.0}  # fmt: skip
    system = load_system(
        "full", {"decoder": {"regime": "full"}, "training": {"batch_size": batch_size}, "stages": [stage]}
    )
    layers, dim = 5, 64  # the tiny HuBERT's hidden states: 4 layers + embeddings, width 64
    torch.manual_seed(0)
    examples = [
        Example(
            f"u{i}",
            torch.randn(layers, frames, dim),
            transcript="the driver cleaned the blue van at nine o'clock",
            descriptor="A female speaker with a high pitch and a loud voice speaks quickly, sounding angry.",
            emotion="angry",
        )
        for i in range(utterances)
    ]
    model = build_system(system, layers, dim, backbone="tiny")
    start = time.perf_counter()
    history = train(model, examples, engine=engine, progress=False)
    elapsed = time.perf_counter() - start
    second_epoch = history[len(history) // 2 :]  # the first epoch includes warm-up (allocations, compilation)
    if torch.cuda.is_available():
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "engine": engine,
        "utterances_per_s": sum(h["train.utterances_per_s"] for h in second_epoch) / len(second_epoch),
        "tokens_per_s": sum(h["train.tokens_per_s"] for h in second_epoch) / len(second_epoch),
        "peak_mb": peak_mb,
        "seconds": elapsed,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU x{threads}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engines", nargs="+", default=["plain", "zero2", "zero3"])
    parser.add_argument("--utterances", type=int, default=64)
    parser.add_argument(
        "--frames", type=int, default=125, help="encoder frames per utterance (50 per second)"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--only", help=argparse.SUPPRESS)  # internal: measure one engine in this process
    args = parser.parse_args()
    if args.only:
        print(json.dumps(measure(args.only, args.utterances, args.frames, args.batch_size, args.threads)))
        return
    rows = []
    for engine in args.engines:
        sizes = ["--utterances", args.utterances, "--frames", args.frames, "--batch-size", args.batch_size]
        command = [
            sys.executable,
            __file__,
            "--only",
            engine,
            *map(str, sizes),
            "--threads",
            str(args.threads),
        ]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print("| engine | device | utterances/s | tokens/s | peak memory (MB) | wall (s) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['engine']} | {row['device']} | {row['utterances_per_s']:.1f} "
            f"| {row['tokens_per_s']:.0f} | {row['peak_mb']:.0f} | {row['seconds']:.1f} |"
        )


if __name__ == "__main__":
    main()
