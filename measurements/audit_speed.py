"""Seconds `data audit` takes per 1,000 utterances on the demo corpus, cold and warm, and what the
overlap check adds to the main command (`run --system full --beta 1e-4`: demo corpus, fold 1).

Cold: an empty fingerprint cache (a fresh temporary folder each repeat), so every clip is decoded,
hashed and its envelope computed; the wavs themselves are in the OS page cache after the first
read, as they are for `run` after `data demo`. Warm: the same cache again, the case of every run
after the first. The run check is what `plan_run` adds (`audit_mixture`, `refuse_overlap`) plus
what the parent run logs (`log_overlap`: audit.tsv and four metrics, into a throwaway MLflow
store). The demo corpus is synthesised first if it is not cached yet.

    python measurements/audit_speed.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import mlflow

from benchmark.data.audit import audit_corpora
from benchmark.data.demo import build_demo_corpus
from benchmark.data.splits import Mixture, training_mixture
from benchmark.registry import load_dataset_card
from benchmark.workflows.overlap import audit_mixture, log_overlap, refuse_overlap, tested_ids


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def run_check(mixture: Mixture) -> None:
    """What `plan_run` adds: the mixture audited, a fold with test audio in training refused."""
    refuse_overlap(tested_ids(mixture), audit_mixture(mixture), False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timings per case; the median is printed")
    args = parser.parse_args()
    build_demo_corpus()  # the cached demo corpus (420 utterances), made if absent
    card = load_dataset_card("demo")
    mixture = training_mixture(card, [], "1", False)  # what `run --system full --beta 1e-4` audits
    run_rows = sum(len(mixture.training_rows(f)) + len(f.test) + len(f.validation) for f in mixture.folds)
    home = os.environ.get("BENCHMARK_HOME")
    cold: dict[str, list[float]] = {"audit": [], "run": []}
    warm: dict[str, list[float]] = {"audit": [], "run": []}
    with tempfile.TemporaryDirectory(prefix="audit-speed-") as tmp:
        for repeat in range(args.repeats):
            cache = Path(tmp) / f"cache-{repeat}"
            cold["audit"].append(timed(lambda c=cache: audit_corpora([card], progress=False, cache=c)))
            warm["audit"].append(timed(lambda c=cache: audit_corpora([card], progress=False, cache=c)))
        report = audit_corpora([card], progress=False, cache=Path(tmp) / "cache-0")
        try:  # `run` caches under $BENCHMARK_HOME/audit: a fresh home per cold repeat (rows are read)
            for repeat in range(args.repeats):
                os.environ["BENCHMARK_HOME"] = str(Path(tmp) / f"home-{repeat}")
                for times in (cold, warm):
                    times["run"].append(timed(lambda: run_check(mixture)))
        finally:
            if home is None:
                os.environ.pop("BENCHMARK_HOME", None)
            else:
                os.environ["BENCHMARK_HOME"] = home
        mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
        found = audit_mixture(mixture)
        logging = []
        for _ in range(args.repeats):
            with mlflow.start_run():
                logging.append(timed(lambda: log_overlap(found)))

    utterances = report.utterances
    print(f"demo corpus: {utterances} utterances, {len(report.findings)} finding(s)")
    print("| case | seconds | seconds per 1,000 utterances |")
    print("|---|---|---|")
    for name, times in (("cold cache", cold), ("warm cache", warm)):
        seconds = statistics.median(times["audit"])
        print(f"| `data audit demo`, {name} | {seconds:.3f} | {1000 * seconds / utterances:.3f} |")
    for name, times in (("cold cache", cold), ("warm cache", warm)):
        seconds = statistics.median(times["run"])
        per = 1000 * seconds / run_rows
        print(f"| `run` check, fold 1 ({run_rows} rows), {name} | {seconds:.3f} | {per:.3f} |")
    print(f"| `run` logging audit.tsv and audit.* metrics | {statistics.median(logging):.3f} | - |")
    print(f"(median of {args.repeats} repeats each; {os.cpu_count()} CPU cores)")


if __name__ == "__main__":
    main()
