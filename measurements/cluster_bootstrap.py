"""Utterance vs speaker-cluster bootstrap intervals of `compare` (`benchmark.eval.stats`), simulated.

Each dataset has `--speakers` speakers x `--utterances` utterances, each utterance in one of
`--folds` folds; its paired difference is 0.05 + a speaker offset (sd `--speaker-sd`) + a fold
offset (sd `--fold-sd`) + utterance noise (sd 0.3). Prints, per case, the mean width of the
utterance interval, of the speaker interval and of the speaker x fold interval over `--datasets`
datasets, the speaker/utterance width ratio, the MDE at alpha 0.05 and the time of one bootstrap.

    python measurements/cluster_bootstrap.py [--datasets 20] [--resamples 2000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmark.eval.stats import cluster_bootstrap, minimum_detectable_difference


def simulate(rng: np.random.Generator, args: argparse.Namespace, speaker_sd: float, fold_sd: float):
    speaker = np.repeat(np.arange(args.speakers), args.utterances)
    fold = rng.integers(0, args.folds, len(speaker))
    offsets = rng.normal(0, speaker_sd, args.speakers)[speaker] + rng.normal(0, fold_sd, args.folds)[fold]
    return 0.05 + offsets + rng.normal(0, 0.3, len(speaker)), speaker, fold


def width(result) -> float:
    return result.ci[1] - result.ci[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=20)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--speakers", type=int, default=40)
    parser.add_argument("--utterances", type=int, default=25)
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()
    print("speaker sd | fold sd | utterance width | speaker width | speaker x fold width | ratio | MDE | ms")
    for speaker_sd, fold_sd in ((0.0, 0.0), (0.1, 0.0), (0.3, 0.0), (0.1, 0.3)):
        widths, mdes, seconds = [], [], []
        for seed in range(args.datasets):
            d, speaker, fold = simulate(np.random.default_rng(seed), args, speaker_sd, fold_sd)
            start = time.perf_counter()
            results = [
                cluster_bootstrap(d, n_resamples=args.resamples, seed=seed),
                cluster_bootstrap(d, speaker, n_resamples=args.resamples, seed=seed),
                cluster_bootstrap(d, speaker, fold, n_resamples=args.resamples, seed=seed),
            ]
            seconds.append((time.perf_counter() - start) / 3)
            widths.append([width(r) for r in results])
            mdes.append(minimum_detectable_difference(results[2].se))
        w = np.mean(widths, axis=0)
        print(
            f"{speaker_sd:10.1f} | {fold_sd:7.1f} | {w[0]:15.4f} | {w[1]:13.4f} | {w[2]:20.4f} | "
            f"{w[1] / w[0]:5.2f} | {np.mean(mdes):.4f} | {1000 * np.mean(seconds):.1f}"
        )


if __name__ == "__main__":
    main()
