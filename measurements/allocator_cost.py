"""What holding glibc's mmap threshold costs the CPU training step (`benchmark.allocator`).

Held, every batch-sized block is a fresh mmap, paid in page faults (system time); by default
glibc reuses its heap, which fragments as shapes change (`measurements/scale.py` shows the memory
side). Each case trains the tiny `full` system for `--steps` steps on batches of 4 to 8 random
utterances, in a fresh process, and reports CPU time (user and system), wall time and peak RSS.

    python measurements/allocator_cost.py [--steps 30] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def measure(held: bool, steps: int) -> dict:
    """One case, in this process: `steps` training steps, with the threshold held or not."""
    import torch

    from benchmark.allocator import hold_mmap_threshold
    from benchmark.data.examples import Example
    from benchmark.nn.system import build_system
    from benchmark.registry import load_system
    from benchmark.train.data import collate
    from benchmark.train.loop import prepare_stage, train_step

    if held:
        hold_mmap_threshold()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    system = load_system("full", {"training": {"batch_size": 8}})
    layers, width = 13, 256
    model = build_system(system, layers, width, "tiny")
    examples = [
        Example(f"u{i}", torch.randn(layers, 100 + 7 * i, width), "hello there", "a calm voice", "happy")
        for i in range(8)
    ]
    runner = prepare_stage(model, system.stages[-1], system.training, "plain", torch.device("cpu"), steps + 3)
    model.train()
    for _ in range(3):  # warm-up
        train_step(runner, collate(examples, "full"), False, True)
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for step in range(steps):
        train_step(runner, collate(examples[: 4 + step % 5], "full"), False, True)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {"case": "held" if held else "default", "user_s": after.ru_utime - before.ru_utime,
            "system_s": after.ru_stime - before.ru_stime, "wall_s": time.perf_counter() - start,
            "peak_mib": after.ru_maxrss / 1024}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=["held", "default"], help=argparse.SUPPRESS)  # one case, here
    args = parser.parse_args()
    if args.only:
        print(json.dumps(measure(args.only == "held", args.steps)))
        return
    print("| case | user s | system s | wall s | peak MiB |\n|---|---|---|---|---|")
    for _ in range(args.repeats):
        for case in ("default", "held"):
            command = [sys.executable, __file__, "--steps", str(args.steps), "--only", case]
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            print(f"| {row['case']} | {row['user_s']:.2f} | {row['system_s']:.2f} | {row['wall_s']:.2f} "
                  f"| {row['peak_mib']:.0f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
