"""`data prepare NAME`: run a corpus reader and write its manifests and a report.

The reader collects bad rows as issues; here they are either fatal (`strict=True`: nothing is
written and the error lists them) or skipped and written to `issues.tsv` beside the manifests.

A prepared folder holds one manifest per split, `issues.tsv` and `prepare.json`, and is replaced as
one folder (`benchmark.data.builds.atomic_folder`): a failure or a crash leaves the previous
prepare whole, never a mix of old and new splits. Audio a reader derives from the release (MELD's
decoded clips) lives in the sibling folder `<folder>-audio/`, which is never swapped, so the
manifests' audio paths stay valid and the decoding is reused. A folder that holds something other
than an earlier prepare (no `prepare.json`) is refused, not replaced.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.config import DatasetCard, benchmark_home
from benchmark.data.builds import atomic_file, atomic_folder, check_replaceable, write_json
from benchmark.data.manifest import RowIssue, Utterance, read_manifest, write_manifest
from benchmark.data.readers import ReadResult, get_reader
from benchmark.errors import BenchmarkError

MAX_LISTED_ISSUES = 10
PREPARE_INFO = "prepare.json"  # the mark of a prepared folder
DEMO_REBUILD_HINT = "run `python -m benchmark data demo --rebuild`"


def prepared_dir(name: str) -> Path:
    """Default folder of a corpus's manifests."""
    return benchmark_home() / "datasets" / name


def manifest_path(card: DatasetCard, split: str, out_dir: Path | None = None) -> Path:
    return (out_dir or prepared_dir(card.name)) / f"{split}.jsonl"


def is_prepared(card: DatasetCard, out_dir: Path | None = None) -> bool:
    return all(manifest_path(card, split, out_dir).is_file() for split in card.splits)


def audio_dir(out_dir: Path) -> Path:
    """Where a reader keeps audio it derives (MELD's decoded clips): beside the manifest folder,
    not in it, because the manifest folder is replaced as a whole on every prepare."""
    return out_dir.with_name(f"{out_dir.name}-audio")


def rebuild_hint(card: DatasetCard) -> str:
    """How to write a card's manifests again, given with any error about their content."""
    if card.reader == "demo":
        return DEMO_REBUILD_HINT
    return f"run `python -m benchmark data prepare {card.name} --root PATH` again"


def manifest_digest(card: DatasetCard, out_dir: Path | None = None) -> str:
    """A digest of the bytes of a prepared corpus's manifests: which prepare a run read."""
    digest = hashlib.sha256()
    for split in card.splits:
        digest.update(manifest_path(card, split, out_dir).read_bytes())
    return digest.hexdigest()[:16]


def load_split(card: DatasetCard, split: str, out_dir: Path | None = None) -> list[Utterance]:
    return read_manifest(manifest_path(card, split, out_dir), rebuild_hint=rebuild_hint(card))


@dataclass
class SplitSummary:
    split: str
    group: str
    utterances: int
    hours: float
    labels: Counter[str] = field(default_factory=Counter)


@dataclass
class PrepareReport:
    card: DatasetCard
    out_dir: Path
    summaries: list[SplitSummary]
    issues: list[RowIssue]
    dropped: Counter[str]


def summarise(card: DatasetCard, splits: dict[str, list[Utterance]]) -> list[SplitSummary]:
    """Utterances, hours and per-label counts per split and group (a row per group)."""
    rows = []
    for split in card.splits:
        by_group: dict[str, list[Utterance]] = {}
        for utt in splits.get(split, []):
            by_group.setdefault(utt.group, []).append(utt)
        for group in sorted(by_group):
            utts = by_group[group]
            rows.append(
                SplitSummary(
                    split=split,
                    group=group,
                    utterances=len(utts),
                    hours=sum(u.duration for u in utts) / 3600.0,
                    labels=Counter(u.emotion or "(none)" for u in utts),
                )
            )
    return rows


def write_issues(path: Path, issues: list[RowIssue]) -> None:
    """The skipped rows, one per line: source, line, reason (tab-separated, atomic write)."""
    with atomic_file(path) as handle:
        handle.write("source\tline\treason\n")
        for issue in issues:
            handle.write(f"{issue.source}\t{issue.line or ''}\t{issue.reason}\n")


def strict_error(card: DatasetCard, issues: list[RowIssue]) -> BenchmarkError:
    """The error of `--strict`: how many rows are bad, and the first `MAX_LISTED_ISSUES` of them."""
    listed = "\n  ".join(str(i) for i in issues[:MAX_LISTED_ISSUES])
    more = len(issues) - MAX_LISTED_ISSUES
    tail = f"\n  ... and {more} more" if more > 0 else ""
    return BenchmarkError(
        f"{card.name}: {len(issues)} bad row(s) with --strict, nothing written:\n  {listed}{tail}",
        hint="fix the rows, or drop --strict to skip them (they are then listed in issues.tsv)",
    )


def check_result(card: DatasetCard, result: ReadResult) -> None:
    """Reject a reader result that would make an unusable manifest."""
    for split in result.splits:
        if split not in card.splits:
            raise BenchmarkError(f"reader '{card.reader}' returned split '{split}' unknown to the card")
    seen: set[str] = set()
    for rows in result.splits.values():
        for row in rows:
            if row.id in seen:
                raise BenchmarkError(f"{card.name}: utterance id '{row.id}' appears twice")
            seen.add(row.id)
    if not seen:
        first = "; ".join(str(i) for i in result.issues[:3])
        raise BenchmarkError(
            f"{card.name}: no usable utterance found" + (f" ({first})" if first else ""),
            hint=f"expected layout:\n{card.layout}",
        )


def prepare_corpus(
    card: DatasetCard, root: Path, out_dir: Path | None = None, strict: bool = False
) -> PrepareReport:
    """Read a raw corpus at `root` and write one manifest per split under `out_dir` (see the module
    docstring). The folder is checked and its replacement started before the reader runs, so an
    unusable `out_dir` fails before the slow part."""
    out_dir = (out_dir or prepared_dir(card.name)).expanduser().resolve()
    if not root.is_dir():
        raise BenchmarkError(f"{root}: corpus folder not found", hint=f"expected layout:\n{card.layout}")
    check_replaceable(out_dir, PREPARE_INFO, "a prepared corpus")
    with atomic_folder(out_dir) as tmp:
        result = get_reader(card.reader)(root, card, audio_dir(out_dir))
        if strict and result.issues:
            raise strict_error(card, result.issues)
        check_result(card, result)
        for split in card.splits:
            write_manifest(manifest_path(card, split, tmp), result.splits.get(split, []))
        write_issues(tmp / "issues.tsv", result.issues)
        summary = {"dataset": card.name, "root": str(root), "dropped_labels": dict(result.dropped)}
        write_json(tmp / PREPARE_INFO, summary)
    return PrepareReport(card, out_dir, summarise(card, result.splits), result.issues, result.dropped)
