"""Seconds per file of `predict` and `explain FILE` with a trained run, as a user's files see them.

The files are a run's own test utterances, copied under new names (what `predict` sees is a path,
nothing of the corpus) with a gain drawn anew on every call, so that no cache of encoder outputs or
acoustic cues (both keyed by content) holds them: each is a recording the suite has never seen.
`predict` is timed over all of them in one call (the model is rebuilt once; the time to rebuild
it is its own row), `explain` file by file with the default settings (occlusion, 5 windows of
0.15 s, the recording as its own baseline, no figure or page logged).

    python measurements/file_speed.py RUN_ID [--files 20] [--explain 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from mlflow import MlflowClient

from benchmark.data.corpus import load_corpus
from benchmark.explain.explanation import ExplainSettings
from benchmark.registry import load_dataset_card
from benchmark.tracking import tags as tag
from benchmark.tracking.artifacts import load_run_records
from benchmark.tracking.lookup import fold_runs
from benchmark.tracking.store import load_mlflow_config, tracking_setup
from benchmark.workflows.explain import explain_file
from benchmark.workflows.predict import TrainedSystem


def test_files(run_id: str, count: int, folder: Path) -> tuple[str, list[Path]]:
    """(fold, paths): the first `count` test utterances of the run's first fold, copied to `folder`."""
    run = MlflowClient().get_run(run_id)
    fold, fold_run = sorted(fold_runs(run).items())[0]
    rows = {
        r.id: r
        for split in load_corpus(load_dataset_card(run.data.tags[tag.DATASET])).values()
        for r in split
    }
    paths, rng = [], np.random.default_rng()  # unseeded: new content on every call
    for i, record in enumerate(load_run_records(fold_run.info.run_id, f"fold-{fold}")[:count]):
        paths.append(folder / f"recording-{i:03d}.wav")
        wave, rate = sf.read(rows[record.id].audio, dtype="float32")
        sf.write(paths[-1], wave * rng.uniform(0.5, 0.9), rate)
    return fold, paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_id")
    parser.add_argument("--files", type=int, default=20, help="files predicted in one call")
    parser.add_argument("--explain", type=int, default=3, help="files explained one by one")
    args = parser.parse_args()
    tracking_setup(load_mlflow_config())
    with tempfile.TemporaryDirectory(prefix="file-speed-") as tmp:
        fold, paths = test_files(args.run_id, max(args.files, args.explain), Path(tmp))
        start = time.perf_counter()
        system = TrainedSystem(args.run_id, fold)
        load = time.perf_counter() - start
        start = time.perf_counter()
        rows = [system.recording(path) for path in paths[: args.files]]
        with torch.no_grad():
            system.predict(rows, progress=False)
        predict = (time.perf_counter() - start) / len(rows)
        seconds = sum(row.duration for row in rows) / len(rows)
        start = time.perf_counter()
        for path in paths[: args.explain]:
            explain_file(args.run_id, path, ExplainSettings(), fold, log_figure=False)
        explain = (time.perf_counter() - start) / args.explain
    threads = torch.get_num_threads()
    print(f"run {args.run_id} (fold {fold}), files of {seconds:.1f} s on average, {threads} threads")
    print("| step | seconds |")
    print("|---|---|")
    print(f"| rebuild the trained model (once per call) | {load:.1f} |")
    print(f"| predict, per file ({len(rows)} files in one call) | {predict:.2f} |")
    print(f"| explain, per file (model rebuilt each time; {args.explain} files) | {explain:.1f} |")


if __name__ == "__main__":
    main()
