"""`run`'s check of training-test overlap: each fold's training mixture against its test and
validation rows (`benchmark.data.audit`; docs/protocol.md, "Training-test overlap").

A fold whose test audio is in its training mixture is refused before anything trains, unless
`--allow-overlap`, which tags the run `overlap=N` (the leaderboard marks its cells). A shared
transcript or speaker is reported, in the run's `audit.tsv` and a note, but never stops a run:
IEMOCAP's scripted sessions share their sentences. The fingerprints are cached per file, so the
check costs a fraction of a second after the first run.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

from benchmark.data.audit import KINDS, Finding, audit_pairings, fold_pairing, merged, write_audit
from benchmark.data.splits import Mixture
from benchmark.errors import BenchmarkError
from benchmark.ranks import broadcast, is_lead
from benchmark.tracking import tags as tag
from benchmark.tracking.log import log_artifact, log_metrics


def audit_mixture(mixture: Mixture, progress: bool = False) -> list[Finding]:
    """Every fold's findings (`Finding.pairing` names the fold). Rank 0 fingerprints the audio
    (cached per file) and every rank gets its findings, so that all of them stop alike."""
    found = None
    if is_lead():
        pairings = [fold_pairing(mixture.card, f, mixture.extra, mixture.cards) for f in mixture.folds]
        per_fold = audit_pairings(pairings, progress)
        found = [finding for fold in mixture.folds for finding in per_fold[fold.name]]
    return broadcast(found)


def overlaps_in_test(mixture: Mixture, findings: list[Finding]) -> dict[str, list[Finding]]:
    """Per fold with any, its audio findings whose evaluated side is in its test part."""
    tested = {fold.name: {row.id for row in fold.test} for fold in mixture.folds}
    per_fold: dict[str, list[Finding]] = {}
    for finding in findings:
        if finding.is_audio and finding.test_id in tested.get(finding.pairing, ()):
            per_fold.setdefault(finding.pairing, []).append(finding)
    return per_fold


def overlap_count(mixture: Mixture, findings: list[Finding]) -> int:
    """The test clips whose audio is in their fold's training mixture."""
    per_fold = overlaps_in_test(mixture, findings)
    return len({(f.test_corpus, f.test_id) for found in per_fold.values() for f in found})


def refuse_overlap(mixture: Mixture, findings: list[Finding], allow: bool) -> None:
    """Stop, before anything trains, at the first fold whose test audio is in its training mixture."""
    per_fold = overlaps_in_test(mixture, findings)
    if allow or not per_fold:
        return
    fold, pairs = next(iter(per_fold.items()))
    first, more = pairs[0], len(per_fold) - 1
    raise BenchmarkError(
        f"fold {fold}: test utterance {first.test_id} ({first.test_corpus}) has the audio of training "
        f"utterance {first.train_id} ({first.train_corpus}) ({first.kind}); {len(pairs)} such pair(s)"
        + (f", and {more} more fold(s) with some" if more else "")
        + "; see `python -m benchmark data audit`",
        hint="drop the copies from one side and prepare again, or pass --allow-overlap to train anyway "
        f"(the run is then tagged {tag.OVERLAP}=N and its leaderboard cells are marked)",
    )


def overlap_tags(mixture: Mixture, findings: list[Finding]) -> dict[str, str]:
    """`overlap=N` when test clips were trained on (`--allow-overlap`); nothing otherwise."""
    count = overlap_count(mixture, findings)
    return {tag.OVERLAP: str(count)} if count else {}


def log_overlap(findings: list[Finding]) -> None:
    """The run's findings, each once, as `audit.tsv`, and their count per kind as `audit.<kind>`."""
    unique = merged({"": findings})
    counts = Counter(finding.kind for finding in unique)
    log_metrics({f"audit.{kind}": counts[kind] for kind in KINDS})
    with tempfile.TemporaryDirectory(prefix="audit-") as tmp:
        write_audit(Path(tmp) / "audit.tsv", unique)
        log_artifact(Path(tmp) / "audit.tsv")


def overlap_notes(mixture: Mixture, findings: list[Finding]) -> list[str]:
    """One line on what the audit found, when it found anything."""
    unique = merged({"": findings})
    tested = {f.test_id for per in overlaps_in_test(mixture, findings).values() for f in per}
    counts = {
        "test clip(s) had their audio in the training mixture (--allow-overlap)": len(tested),
        "validation clip(s) had their audio in training": len(
            {f.test_id for f in unique if f.is_audio} - tested
        ),
        "evaluated utterance(s) share a transcript with training ones": len(
            {(f.test_corpus, f.test_id) for f in unique if f.kind == "transcript"}
        ),
        "speaker(s) are on both sides": len({f.shared for f in unique if f.kind == "speaker"}),
    }
    parts = [f"{count} {what}" for what, count in counts.items() if count]
    return ["audit: " + "; ".join(parts) + " (listed in the run's audit.tsv)"] if parts else []
