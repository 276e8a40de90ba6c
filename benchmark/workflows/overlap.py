"""The check of training-test overlap of `run` and `evaluate` (`benchmark.data.audit`;
docs/protocol.md, "Training-test overlap"): for `run`, each fold's training mixture against its
test and validation rows; for `evaluate`, the source fold's training mixture, rebuilt from the
source run's tags, against the zero-shot corpus's test rows.

A fold whose test audio is in its training mixture is refused before anything trains or is
scored, unless `--allow-overlap`, which tags the run `overlap=N` (the leaderboard marks its
cells). A shared transcript or speaker is reported, in the run's `audit.tsv` and a note, but never
stops a run: IEMOCAP's scripted sessions share their sentences. The fingerprints are cached per
file, so the check costs a fraction of a second after the first run.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from mlflow.entities import Run

from benchmark.config import DatasetCard
from benchmark.data.audit import (
    KINDS,
    Finding,
    Pairing,
    audit_pairings,
    fold_pairing,
    merged,
    placed,
    write_audit,
)
from benchmark.data.manifest import Utterance
from benchmark.data.prepare import is_prepared
from benchmark.data.splits import Mixture, training_mixture
from benchmark.errors import BenchmarkError
from benchmark.ranks import broadcast, is_lead
from benchmark.registry import load_dataset_card
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


def zero_shot_pairing(
    source: Run, source_fold: str, card: DatasetCard, rows: list[Utterance]
) -> Pairing | str:
    """What fold `source_fold` of run `source` trained on (its corpus's training part for that fold,
    with or without validation, plus its `train_with` corpora) against `rows`, the test rows of
    `card`; or, when that mixture cannot be rebuilt here, a line saying why."""
    tags = source.data.tags
    train_with = tags.get(tag.TRAIN_WITH, "none")
    names = [tags.get(tag.DATASET, "")] + ([] if train_with == "none" else train_with.split(","))
    try:
        cards = [load_dataset_card(name) for name in names]
    except BenchmarkError as error:
        return f"audit: not checked: run {source.info.run_id}'s corpora are not all known here ({error})"
    unprepared = [other.name for other in cards if not is_prepared(other)]
    if unprepared:
        missing = ", ".join(unprepared)
        return f"audit: not checked: {missing}, the source run's training data, not prepared here"
    mixture = training_mixture(cards[0], cards[1:], source_fold, tags.get(tag.VALIDATION) == "on")
    (fold,) = mixture.folds
    training = fold_pairing(mixture.card, fold, mixture.extra, mixture.cards).training
    return Pairing(f"{card.name} zero-shot", training, placed(card, rows, card.protocol.test))


def tested_ids(mixture: Mixture) -> dict[str, set[str]]:
    """Per fold (the name its findings carry), the ids of its test rows."""
    return {fold.name: {row.id for row in fold.test} for fold in mixture.folds}


def overlaps_in_test(tested: Mapping[str, set[str]], findings: list[Finding]) -> dict[str, list[Finding]]:
    """Per pairing with any, its audio findings whose evaluated side is in its test part (`tested`)."""
    per_pairing: dict[str, list[Finding]] = {}
    for finding in findings:
        if finding.is_audio and finding.test_id in tested.get(finding.pairing, ()):
            per_pairing.setdefault(finding.pairing, []).append(finding)
    return per_pairing


def overlap_count(tested: Mapping[str, set[str]], findings: list[Finding]) -> int:
    """The test clips whose audio is in their pairing's training mixture."""
    per_pairing = overlaps_in_test(tested, findings)
    return len({(f.test_corpus, f.test_id) for found in per_pairing.values() for f in found})


def refuse_overlap(
    tested: Mapping[str, set[str]], findings: list[Finding], allow: bool, where: str = ""
) -> None:
    """Stop, before anything trains or is scored, at the first pairing whose test audio is in its
    training mixture; the line starts with `where`, by default the pairing's fold."""
    per_pairing = overlaps_in_test(tested, findings)
    if allow or not per_pairing:
        return
    pairing, pairs = next(iter(per_pairing.items()))
    first, more, where = pairs[0], len(per_pairing) - 1, where or f"fold {pairing}"
    raise BenchmarkError(
        f"{where}: test utterance {first.test_id} ({first.test_corpus}) has the audio of training "
        f"utterance {first.train_id} ({first.train_corpus}) ({first.kind}); {len(pairs)} such pair(s)"
        + (f", and {more} more fold(s) with some" if more else "")
        + "; see `python -m benchmark data audit`",
        hint="drop the copies from one side and prepare again, or pass --allow-overlap to go on anyway "
        f"(the run is then tagged {tag.OVERLAP}=N and its leaderboard cells are marked)",
    )


def overlap_tags(tested: Mapping[str, set[str]], findings: list[Finding]) -> dict[str, str]:
    """`overlap=N` when test clips were in the training mixture (`--allow-overlap`); nothing otherwise."""
    count = overlap_count(tested, findings)
    return {tag.OVERLAP: str(count)} if count else {}


def log_overlap(findings: list[Finding]) -> None:
    """The run's findings, each once, as `audit.tsv`, and their count per kind as `audit.<kind>`."""
    unique = merged({"": findings})
    counts = Counter(finding.kind for finding in unique)
    log_metrics({f"audit.{kind}": counts[kind] for kind in KINDS})
    with tempfile.TemporaryDirectory(prefix="audit-") as tmp:
        write_audit(Path(tmp) / "audit.tsv", unique)
        log_artifact(Path(tmp) / "audit.tsv")


def overlap_notes(tested: Mapping[str, set[str]], findings: list[Finding]) -> list[str]:
    """One line on what the audit found, when it found anything."""
    unique = merged({"": findings})
    in_test = {f.test_id for per in overlaps_in_test(tested, findings).values() for f in per}
    counts = {
        "test clip(s) had their audio in the training mixture (--allow-overlap)": len(in_test),
        "validation clip(s) had their audio in training": len(
            {f.test_id for f in unique if f.is_audio} - in_test
        ),
        "evaluated utterance(s) share a transcript with training ones": len(
            {(f.test_corpus, f.test_id) for f in unique if f.kind == "transcript"}
        ),
        "speaker(s) are on both sides": len({f.shared for f in unique if f.kind == "speaker"}),
    }
    parts = [f"{count} {what}" for what, count in counts.items() if count]
    return ["audit: " + "; ".join(parts) + " (listed in the run's audit.tsv)"] if parts else []
