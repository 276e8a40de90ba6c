"""Peak host memory and seconds per epoch of `run` for corpora of N, 2N and 4N utterances.

Memory must stay flat as the corpus grows, with either feature source: batches stream their
inputs (the cache's files, or the audio for the online encoder) instead of holding every
utterance's hidden states. The encoder is big enough that its features would dominate memory
if they were held: a HuBERT of `--width` x `--layers` (default 768 x 12, 13 x 768 values per 20 ms
frame, 2 MB per second of audio in float32) with a small Llama, both written in the release
formats (`tests/release_checkpoints.py`) and run as `--backbone paper`. Each point is a
fresh process (`run --system full --fold 1 --epochs 1`) on a demo corpus of its own size,
synthesised by another process first, so its peak resident memory (`ru_maxrss`) is the run's
own; the feature cache starts empty.

    python measurements/scale.py [--sizes 105 210 420] [--sources cache online]

It prints a markdown table (and writes it to `--out`): utterances, source, peak MiB, the ratio
to the smallest corpus, training seconds per epoch and the run's total seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the suite, and the release-format writers


def measure(size: int, source: str) -> dict:
    """One point, in this process: one `run` on the demo corpus of `size`, its peak memory and times."""
    from benchmark.cli import main
    from benchmark.train import loop

    trained: list[float] = []
    train = loop.train

    def timed(*args, **kwargs):  # the training loop alone, without encoding or prediction
        start = time.perf_counter()
        history = train(*args, **kwargs)
        trained.append(time.perf_counter() - start)
        return history

    loop.train = timed
    start = time.perf_counter()
    argv = ["run", "--system", "full", "--backbone", "paper", "--fold", "1", "--epochs", "1"]
    code = main([*argv, "--features", source])
    total = time.perf_counter() - start
    epochs = 2  # `full` has two stages, each of one epoch here
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"utterances": size, "source": source, "exit": code, "peak_mib": peak_mib,
            "train_s_per_epoch": sum(trained) / epochs, "total_s": total}  # fmt: skip


def point(size: int, source: str, weights: Path, home: Path) -> dict:
    """`measure` in a fresh process with its own BENCHMARK_HOME and mlruns."""
    env = {**os.environ, "BENCHMARK_HOME": str(home), "BENCHMARK_WEIGHTS_DIR": str(weights)}
    env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    home.mkdir(parents=True)
    corpus = [sys.executable, "-m", "benchmark", "data", "demo", "--size", str(size)]
    subprocess.run(corpus, cwd=home, env=env, capture_output=True, check=True)
    command = [sys.executable, __file__, "--only", str(size), source]
    proc = subprocess.run(command, cwd=home, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{size} utterances, {source}: failed\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    lines = ["| utterances | features | peak MiB | × smallest | train s/epoch | run s |"]
    lines.append("|---|---|---|---|---|---|")
    for row in rows:
        base = next(r for r in rows if r["source"] == row["source"])["peak_mib"]
        lines.append(
            f"| {row['utterances']} | {row['source']} | {row['peak_mib']:,.0f} "
            f"| {row['peak_mib'] / base:.2f} | {row['train_s_per_epoch']:.1f} | {row['total_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", type=int, default=[105, 210, 420])
    parser.add_argument("--sources", nargs="+", default=["cache", "online"], choices=["cache", "online"])
    parser.add_argument("--width", type=int, default=768, help="the HuBERT's hidden size")
    parser.add_argument("--layers", type=int, default=12, help="the HuBERT's transformer layers")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    parser.add_argument("--only", nargs=2, help=argparse.SUPPRESS)  # internal: one point, here
    args = parser.parse_args()
    if args.only:
        print(json.dumps(measure(int(args.only[0]), args.only[1])))
        return

    from release_checkpoints import write_release_weights

    rows = []
    with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        weights = write_release_weights(Path(tmp) / "weights", hubert={"hidden_size": args.width,
                                        "num_hidden_layers": args.layers})  # fmt: skip
        for source in args.sources:
            for size in args.sizes:
                rows.append(point(size, source, weights, Path(tmp) / f"home-{source}-{size}"))
                print(json.dumps(rows[-1]), flush=True)
    print(table(rows))
    if args.out:
        args.out.write_text(table(rows), encoding="utf-8")


if __name__ == "__main__":
    main()
