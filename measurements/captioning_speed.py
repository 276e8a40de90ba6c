"""How long the SED captioning metrics take on 1,000 English descriptors, metric by metric.

References are demo-corpus descriptors (`benchmark.data.demo.describe`) with random cue levels,
gender and emotion. Each hypothesis keeps every field of its reference with probability 0.7 and
draws it anew otherwise, in a random template: a model right about most of the voice that words
it its own way. 2% give no descriptor. The Java start-ups (PTB tokenizer, METEOR) are included,
as in an evaluation.

    python measurements/captioning_speed.py [--pairs 1000] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import time

from benchmark.data.demo import EMOTIONS, TEMPLATES, describe
from benchmark.eval.captioning import CAPTION_METRICS, caption_scores

LEVELS = ("low", "normal", "high")
GENDERS = ("female", "male")
KEEP = 0.7  # chance that a hypothesis field equals the reference's
NO_DESCRIPTOR = 0.02  # share of hypotheses that are None


def fields(rng: random.Random) -> dict[str, str]:
    return {
        "gender": rng.choice(GENDERS),
        "emotion": rng.choice(EMOTIONS),
        **{dimension: rng.choice(LEVELS) for dimension in ("pitch", "energy", "speed")},
    }


def write(values: dict[str, str], template: int) -> str:
    levels = {dimension: values[dimension] for dimension in ("pitch", "energy", "speed")}
    return describe(values["gender"], levels, values["emotion"], template)


def synthesise(pairs: int, seed: int) -> tuple[list[str], list[str | None]]:
    """(references, hypotheses) as described in the module docstring."""
    rng = random.Random(seed)
    refs: list[str] = []
    hyps: list[str | None] = []
    for _ in range(pairs):
        ref = fields(rng)
        guess = fields(rng)
        hyp = {key: value if rng.random() < KEEP else guess[key] for key, value in ref.items()}
        refs.append(write(ref, rng.randrange(len(TEMPLATES))))
        hyps.append(None if rng.random() < NO_DESCRIPTOR else write(hyp, rng.randrange(len(TEMPLATES))))
    return refs, hyps


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    refs, hyps = synthesise(args.pairs, args.seed)
    start = time.perf_counter()
    result = caption_scores(refs, hyps)
    total = time.perf_counter() - start
    print(f"{args.pairs} descriptor pairs")
    print("| step | seconds | corpus score |")
    print("|---|---|---|")
    print(f"| PTB tokenizer | {result.seconds['tokenize']:.2f} | |")
    for metric, name in CAPTION_METRICS.items():
        if metric in result.corpus:
            print(f"| {name} | {result.seconds[metric]:.2f} | {result.corpus[metric]:.4f} |")
    print(f"| total | {total:.2f} | |")
    for metric, reason in result.unavailable.items():
        print(f"{CAPTION_METRICS[metric]} not computed: {reason}")


if __name__ == "__main__":
    main()
