"""Does the demo corpus's prosody follow the expert-referenced directions it was designed from?

Builds (or reuses) the demo evaluation corpus, measures every utterance's cues over the whole
utterance and judges them against `benchmark/explain/expert_cues.yaml` with the reference emotion,
exactly as `explain` judges salient windows (z-scores against the speaker's own utterances,
threshold 0.5 std). Prints, per emotion, the share of utterances whose established cues agree by
strict majority and each cue's share of `agrees`, and each cue's mean z-score.

    python measurements/demo_prosody.py [--size N] [--seed S]
"""

from __future__ import annotations

import argparse

import numpy as np
from rich.table import Table

from benchmark.console import console
from benchmark.data.demo import DEFAULT_SIZE, EMOTIONS, build_demo_corpus
from benchmark.data.manifest import read_manifest
from benchmark.explain.evidence import corpus_evidence, cue_plausibility
from benchmark.explain.expert_cues import (
    CUE_KEYS,
    F0,
    F0_VARIABILITY,
    LOUDNESS,
    SPEAKING_RATE,
    SPECTRAL_SLOPE,
    load_expert_table,
)

# The established cues (the table's weak voice-quality cues are left out), with column names.
SHORT = {
    F0: "F0",
    F0_VARIABILITY: "F0 std",
    LOUDNESS: "loudness",
    SPECTRAL_SLOPE: "slope 500-1500",
    SPEAKING_RATE: "rate",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = read_manifest(build_demo_corpus(size=args.size, seed=args.seed))
    evidence = corpus_evidence(rows, {r.id: [(0.0, r.duration + 1.0)] for r in rows})
    table = load_expert_table()
    cues = [cue for cue in CUE_KEYS if cue in SHORT]
    out = Table(title=f"demo corpus (size {args.size}, seed {args.seed}): reference-emotion verdicts")
    for column in ("emotion", "utterances", "agree by majority", *(SHORT[c] for c in cues)):
        out.add_column(column, justify="left" if column == "emotion" else "right")
    agreeing = 0
    for emotion in EMOTIONS:
        mine = [e for e in evidence if e.emotion == emotion]
        majority = sum(bool(e.agrees_with_experts) for e in mine)
        agreeing += majority
        per_cue = cue_plausibility(mine).per_cue
        cells = []
        for cue in cues:
            mean_z = np.mean([e.cues[cue].z for e in mine if e.cues[cue].z is not None])
            share = per_cue[cue].share if cue in per_cue else None
            expected = table.expectations(emotion).get(cue)
            arrow = {"up": "↑", "down": "↓", "baseline": "="}[expected.direction] if expected else "·"
            verdicts = f"{arrow} {share:.0%} " if share is not None else "· "
            cells.append(f"{verdicts}(z {mean_z:+.2f})")
        out.add_row(emotion, str(len(mine)), f"{majority / len(mine):.1%}", *cells)
    out.add_row("all", str(len(evidence)), f"{agreeing / len(evidence):.1%}", *[""] * len(cues))
    console.print(out)
    console.print("Cells: expected direction, share of utterances whose cue agrees, mean z-score.")


if __name__ == "__main__":
    main()
