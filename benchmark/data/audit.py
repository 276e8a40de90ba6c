"""`data audit`: utterances a protocol trains on that are also, in some form, in what it tests on.

A *pairing* is what one protocol trains on and what it then scores: a fold's training mixture
(the target corpus's training part plus every `train_with` corpus's) against its test part and,
where the card declares one, its validation set. `protocol_pairings` lists every pairing of a
set of prepared corpora:

- a corpus with folds or official splits: each fold as `run` builds it (`benchmark.data.splits`),
  once against its test part and once, with validation on, against its validation set;
- a zero-shot corpus (EMOSEC): its test split against the training part of every other audited
  corpus that can be trained on, because `evaluate` scores it after any run (the paper's: IEMOCAP
  or MELD with SpeechCraft), so each of those corpora's clips may have been trained on;
- a training-only corpus (SpeechCraft) is never scored, so it only ever stands on the training side.

`run` audits its own folds the same way (`fold_pairing`). Within a pairing an evaluated row and a
training row are a *finding* of one of four kinds:

- `audio-exact`: the sha256 of the decoded samples (`load_audio`: mono float32 at 16 kHz) is the
  same, so a copy under another name or in another lossless container (wav, flac) is found.
- `audio-near`: the same clip re-encoded, e.g. at another sample rate, which soxr does not bring
  back bit for bit. Candidates are clips whose durations differ by at most `NEAR_SECONDS`; each
  has an *envelope*, the log-energy (dB) of 10 ms frames of the clip resampled to 8 kHz (so that
  what a narrower-band copy lost above 4 kHz does not count), floored `FLOOR_DB` below its
  loudest frame; two clips are near duplicates when their envelopes, over their common length,
  correlate at `NEAR_CORRELATION` or more (Pearson, so a change of gain is still a copy). An
  envelope is only compared when it is informative: at least `MIN_NEAR_FRAMES` frames (0.3 s)
  whose 10th-90th percentile spread is at least `MIN_SPREAD_DB` (not a steady tone or silence,
  which any other steady clip of the same length would match). On the demo corpus a round trip
  through 44.1, 22.05, 11.025 or 8 kHz correlates above 0.9999, distinct clips of equal length
  at most 0.69. Lossy codecs (mp3) land near 0.98 and are not reliably found.
- `transcript`: the same normalised transcript (`normalise_transcript`: case folded,
  punctuation dropped, whitespace collapsed; empty ones skipped). One finding per evaluated
  utterance and training part, naming the first training utterance and how many share it.
- `speaker`: the same speaker id on both sides (placeholders such as `unknown` skipped). One
  finding per speaker, evaluated part and training part, naming the first utterance of each side.

A finding names both utterances by corpus, part and id. The *part* of an utterance is its group
for a cross-validated corpus (IEMOCAP's session, the demo corpus's speaker group, which is also
the fold that tests it) and its split otherwise (MELD's train/dev/test, SpeechCraft's train).

Fingerprints (sha256, length, envelope) are cached per file under `benchmark_home()/audit/`,
keyed by the file's absolute path, size and modification time and `AUDIT_VERSION`, so a second
audit reads no audio.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import soxr
from tqdm import tqdm

from benchmark.config import DatasetCard, benchmark_home
from benchmark.data.audio import SAMPLE_RATE, AudioError, load_audio
from benchmark.data.builds import atomic_file
from benchmark.data.manifest import Utterance
from benchmark.data.prepare import is_prepared, load_split
from benchmark.data.splits import Fold, fold_names, folds, training_part
from benchmark.errors import BenchmarkError

AUDIT_VERSION = 1  # bump when a fingerprint's definition changes: older cache entries are ignored
KINDS = ("audio-exact", "audio-near", "transcript", "speaker")
AUDIO_KINDS = ("audio-exact", "audio-near")
COLUMNS = ("kind", "train_corpus", "train_part", "train_id", "test_corpus", "test_part", "test_id", "detail")

NEAR_SECONDS = 0.02  # candidates for a near duplicate: durations at most this far apart
NEAR_CORRELATION = 0.99  # envelopes correlating at least this much are the same clip
ENVELOPE_RATE = 8000  # the envelope's band: what a telephone-rate copy still has
ENVELOPE_HOP = ENVELOPE_RATE // 100  # 10 ms frames
FLOOR_DB = 60.0  # frames quieter than the loudest by more than this are floored there
MIN_NEAR_FRAMES = 30  # 0.3 s: shorter clips are compared exactly only
MIN_SPREAD_DB = 6.0  # 10th-90th percentile spread below this: a steady signal, compared exactly only
# Speaker ids that say "no speaker known" rather than name one (EMOSEC without utt2spk: `unknown`).
PLACEHOLDER_SPEAKERS = frozenset({"", "unknown", "unk", "none", "null", "n/a", "na", "-", "?", "anonymous"})
WORKERS = 4  # threads decoding cache misses (decoding and hashing run outside the GIL)
_SPACES = re.compile(r"\s+")
_PUNCTUATION = re.compile(r"[^\w\s]|_")  # what is neither a letter, a digit nor white space


# ---------------------------------------------------------------------------------------------
# Fingerprints
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fingerprint:
    """What the audit knows of one audio file: the sha256 of its decoded 16 kHz samples, their
    count, and its 8 kHz-band log-energy envelope (dB per 10 ms frame)."""

    sha256: str
    samples: int
    envelope: np.ndarray

    @property
    def seconds(self) -> float:
        return self.samples / SAMPLE_RATE

    @cached_property
    def informative(self) -> bool:
        """Long and varied enough to be compared by envelope (see the module docstring)."""
        if len(self.envelope) < MIN_NEAR_FRAMES:
            return False
        low, high = np.percentile(self.envelope, [10, 90])
        return float(high - low) >= MIN_SPREAD_DB


def envelope(wave: np.ndarray) -> np.ndarray:
    """Log-energy in dB of the 10 ms frames of a 16 kHz waveform band-limited to 4 kHz, floored
    `FLOOR_DB` below its loudest frame."""
    low = soxr.resample(wave, SAMPLE_RATE, ENVELOPE_RATE, quality="HQ")
    frames = len(low) // ENVELOPE_HOP
    if frames == 0:
        return np.zeros(0, np.float32)
    energy = np.square(low[: frames * ENVELOPE_HOP].astype(np.float64)).reshape(frames, -1).mean(axis=1)
    level = 10.0 * np.log10(energy + 1e-12)
    return np.maximum(level, level.max() - FLOOR_DB).astype(np.float32)


def measure(path: Path | str) -> Fingerprint:
    """The fingerprint of one audio file, decoded as `run` decodes it (no cache)."""
    wave = load_audio(path)
    digest = hashlib.sha256(np.ascontiguousarray(wave, dtype="<f4").tobytes()).hexdigest()
    return Fingerprint(digest, len(wave), envelope(wave))


def _cache_path(path: Path, cache: Path | None) -> Path:
    try:
        status = path.stat()
    except OSError as err:
        raise AudioError(f"{path}: cannot read audio file ({err.strerror})") from err
    key = f"audit-v{AUDIT_VERSION}\n{os.path.abspath(path)}\n{status.st_size}\n{status.st_mtime_ns}"
    digest = hashlib.sha256(key.encode()).hexdigest()
    return (cache or benchmark_home() / "audit") / digest[:2] / f"{digest}.bin"


# A cache entry: the sha256 in hex (64 ASCII bytes), the sample count (little-endian int64) and the
# envelope (little-endian float32), raw: reading one is one file read, ten times faster than an npz.
_HEAD = 64 + 8


def _load_cached(entry: Path) -> Fingerprint | None:
    try:
        data = entry.read_bytes()
    except OSError:
        return None  # absent: measure
    if len(data) < _HEAD or (len(data) - _HEAD) % 4:
        return None  # damaged: measure again
    samples = int.from_bytes(data[64:_HEAD], "little")
    return Fingerprint(data[:64].decode("ascii"), samples, np.frombuffer(data, "<f4", offset=_HEAD))


def _measured(path: Path, entry: Path) -> Fingerprint:
    found = measure(path)
    with atomic_file(entry, "wb", durable=False) as handle:
        handle.write(found.sha256.encode("ascii") + found.samples.to_bytes(8, "little"))
        handle.write(found.envelope.astype("<f4").tobytes())
    return found


def fingerprints(
    paths: Iterable[Path | str], progress: bool = False, cache: Path | None = None, workers: int = WORKERS
) -> dict[str, Fingerprint]:
    """The fingerprint of each file, by its path as given: cached ones read, the others measured
    on `workers` threads (with a progress bar) and cached. `cache` defaults to
    `benchmark_home()/audit`. An unusable file raises its `AudioError`."""
    unique = list(dict.fromkeys(str(p) for p in paths))
    entries = {path: _cache_path(Path(path), cache) for path in unique}
    found: dict[str, Fingerprint] = {}
    missing = []
    for path in unique:
        hit = _load_cached(entries[path])
        if hit is None:
            missing.append(path)
        else:
            found[path] = hit
    if missing:
        threads = max(1, min(workers, os.cpu_count() or 1))
        with ThreadPoolExecutor(max_workers=threads) as pool:
            measured = pool.map(lambda p: _measured(Path(p), entries[p]), missing)
            bar = tqdm(measured, total=len(missing), desc="fingerprinting audio", disable=not progress)
            found.update(zip(missing, bar, strict=True))
    return {path: found[path] for path in unique}


# ---------------------------------------------------------------------------------------------
# Pairings: what a protocol trains on, and what it then scores
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Placed:
    """A manifest row and where it lies: its corpus and part (group or split)."""

    corpus: str
    part: str
    row: Utterance

    @property
    def key(self) -> tuple[str, str]:
        return self.corpus, self.row.id


@dataclass(frozen=True)
class Pairing:
    """The rows one protocol trains on and the rows it then tests or validates on."""

    name: str  # e.g. "1" (a fold of `run`), "iemocap fold Session1", "emosec zero-shot"
    training: list[Placed]
    evaluated: list[Placed]


def placed(card: DatasetCard, rows: Iterable[Utterance], split: str | None) -> list[Placed]:
    """Rows of `card` with their part: the group of a cross-validated corpus, else `split`."""
    by_group = card.protocol.kind == "leave_one_group_out"
    return [Placed(card.name, row.group if by_group or split is None else split, row) for row in rows]


def _training_split(card: DatasetCard) -> str | None:
    return None if card.protocol.kind == "leave_one_group_out" else card.protocol.train


def fold_pairing(
    card: DatasetCard,
    fold: Fold,
    extra: Sequence[Utterance] = (),
    cards: Mapping[str, DatasetCard] | None = None,
    name: str | None = None,
) -> Pairing:
    """One fold of `card` as `run` trains it: its training rows plus `extra` (the `train_with`
    corpora's rows, whose cards are in `cards` by name) against its test and validation rows."""
    cards = cards or {}
    protocol = card.protocol
    validation = protocol.validation.split if protocol.validation else None
    training = placed(card, fold.train, _training_split(card))
    for row in extra:
        source = cards.get(row.dataset)
        training += (
            placed(source, [row], _training_split(source)) if source else [Placed(row.dataset, "train", row)]
        )
    evaluated = placed(card, fold.test, protocol.test) + placed(card, fold.validation, validation)
    return Pairing(name or fold.name, training, evaluated)


def protocol_pairings(
    cards: Sequence[DatasetCard], splits: Mapping[str, Mapping[str, list[Utterance]]]
) -> list[Pairing]:
    """Every pairing among `cards` (their manifests in `splits`, by corpus); see the module docstring.

    A `train_with` corpus outside `cards` is left out, as is a fold that cannot be built (a group
    or split without rows: `run` refuses it anyway)."""
    audited = {card.name: card for card in cards}
    trainable = [card for card in cards if card.protocol.kind != "zero_shot"]
    parts = {card.name: training_part(card, splits[card.name]) for card in trainable}
    pairings = []
    for card in cards:
        kind = card.protocol.kind
        if kind in ("leave_one_group_out", "official_splits"):
            others = [audited[name] for name in dict.fromkeys(card.protocol.train_with) if name in audited]
            extra = [row for other in others for row in parts[other.name]]
            with_validation = [False, True] if card.protocol.validation else [False]
            for validation in with_validation:  # test parts first: a finding keeps its first pairing
                for name in fold_names(card, "all"):
                    try:
                        (fold,) = folds(card, splits[card.name], name, validation)
                    except BenchmarkError:
                        continue
                    if validation:  # its test part is that of the fold without validation
                        fold = Fold(fold.name, fold.train, [], fold.validation)
                    label = f"{card.name} fold {name}" + (" validation" if validation else "")
                    pairings.append(fold_pairing(card, fold, extra, audited, label))
        elif kind == "zero_shot":
            training = [
                item
                for other in trainable
                for item in placed(other, parts[other.name], _training_split(other))
            ]
            test = placed(card, splits[card.name].get(card.protocol.test, []), card.protocol.test)
            pairings.append(Pairing(f"{card.name} zero-shot", training, test))
    return pairings


# ---------------------------------------------------------------------------------------------
# Findings
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """A training utterance and an evaluated one that share audio, a transcript or a speaker."""

    kind: str
    train_corpus: str
    train_part: str
    train_id: str
    test_corpus: str
    test_part: str
    test_id: str
    detail: str = ""
    pairing: str = ""  # the pairing it was found in (a fold's name for `run`)
    shared: str = ""  # the speaker of a `speaker` finding

    @property
    def is_audio(self) -> bool:
        return self.kind in AUDIO_KINDS

    def fields(self) -> tuple[str, ...]:
        """The TSV columns (`COLUMNS`), in order."""
        values = (self.kind, self.train_corpus, self.train_part, self.train_id, self.test_corpus,
                  self.test_part, self.test_id, self.detail)  # fmt: skip
        return tuple(" ".join(str(value).split()) for value in values)  # no tab or newline in a cell

    def identity(self) -> tuple[str, ...]:
        """What makes two findings of different pairings the same one."""
        if self.kind == "speaker":
            return (
                self.kind,
                self.shared,
                self.train_corpus,
                self.train_part,
                self.test_corpus,
                self.test_part,
            )
        if self.kind == "transcript":
            return self.kind, self.train_corpus, self.train_part, self.test_corpus, self.test_id
        return self.kind, self.train_corpus, self.train_id, self.test_corpus, self.test_id


def normalise_transcript(text: str | None) -> str:
    """Case folded, punctuation (and symbols) dropped, whitespace collapsed; "" for None or
    nothing left. Mandarin keeps its characters and loses its full-width punctuation."""
    if not text:
        return ""
    return _SPACES.sub(" ", _PUNCTUATION.sub(" ", text.casefold())).strip()


def _speaker(row: Utterance) -> str | None:
    speaker = row.speaker.strip()
    return None if speaker.casefold() in PLACEHOLDER_SPEAKERS else speaker


def _finding(kind: str, train: Placed, test: Placed, detail: str, pairing: str, shared: str = "") -> Finding:
    where = (train.corpus, train.part, train.row.id, test.corpus, test.part, test.row.id)
    return Finding(kind, *where, detail, pairing, shared)


def _zscored(rows: np.ndarray) -> np.ndarray:
    centred = rows - rows.mean(axis=-1, keepdims=True)
    scale = np.sqrt(np.mean(centred**2, axis=-1, keepdims=True))
    return centred / np.where(scale > 0, scale, 1.0)


def _near(
    pairing: Pairing,
    training: list[Placed],
    prints: Mapping[str, Fingerprint],
) -> list[Finding]:
    """`audio-near` findings: informative clips of close duration whose envelopes correlate."""
    usable = [item for item in training if prints[item.row.audio].informative]
    if not usable:
        return []
    seconds = np.array([prints[item.row.audio].seconds for item in usable])
    order = np.argsort(seconds, kind="stable")
    ordered = seconds[order]
    found = []
    for test in pairing.evaluated:
        mine = prints[test.row.audio]
        if not mine.informative:
            continue
        lo = np.searchsorted(ordered, mine.seconds - NEAR_SECONDS - 1e-9, side="left")
        hi = np.searchsorted(ordered, mine.seconds + NEAR_SECONDS + 1e-9, side="right")
        candidates = [usable[i] for i in order[lo:hi]]
        candidates = [c for c in candidates if prints[c.row.audio].sha256 != mine.sha256]
        if not candidates:
            continue
        length = min(len(mine.envelope), *(len(prints[c.row.audio].envelope) for c in candidates))
        theirs = _zscored(
            np.stack([prints[c.row.audio].envelope[:length] for c in candidates]).astype(np.float64)
        )
        correlation = theirs @ _zscored(mine.envelope[:length].astype(np.float64)) / length
        for candidate, value in zip(candidates, correlation, strict=True):
            if value >= NEAR_CORRELATION:
                found.append(_finding("audio-near", candidate, test, f"envelope r={value:.5f}", pairing.name))
    return found


def pairing_findings(pairing: Pairing, prints: Mapping[str, Fingerprint]) -> list[Finding]:
    """Every finding of one pairing (`prints`: the fingerprint of every audio path in it)."""
    evaluated = {item.key for item in pairing.evaluated}
    training = [item for item in pairing.training if item.key not in evaluated]  # never a row with itself
    found: list[Finding] = []

    by_hash: dict[str, list[Placed]] = {}
    for item in training:
        by_hash.setdefault(prints[item.row.audio].sha256, []).append(item)
    for test in pairing.evaluated:
        for train in by_hash.get(prints[test.row.audio].sha256, []):
            found.append(_finding("audio-exact", train, test, "same decoded samples", pairing.name))
    found += _near(pairing, training, prints)

    by_text: dict[str, dict[tuple[str, str], list[Placed]]] = {}
    for item in training:
        if text := normalise_transcript(item.row.transcript):
            by_text.setdefault(text, {}).setdefault((item.corpus, item.part), []).append(item)
    for test in pairing.evaluated:
        for rows in by_text.get(normalise_transcript(test.row.transcript), {}).values():
            detail = f'"{normalise_transcript(test.row.transcript)}" ({len(rows)} training utterance(s))'
            found.append(_finding("transcript", rows[0], test, detail, pairing.name))

    by_speaker: dict[str, dict[tuple[str, str], list[Placed]]] = {}
    for item in training:
        if speaker := _speaker(item.row):
            by_speaker.setdefault(speaker, {}).setdefault((item.corpus, item.part), []).append(item)
    tested: dict[tuple[str, str, str], list[Placed]] = {}
    for test in pairing.evaluated:
        if (speaker := _speaker(test.row)) in by_speaker:
            tested.setdefault((speaker, test.corpus, test.part), []).append(test)
    for (speaker, _, _), tests in tested.items():
        for rows in by_speaker[speaker].values():
            detail = f"{speaker}: {len(rows)} training and {len(tests)} evaluated utterance(s)"
            found.append(_finding("speaker", rows[0], tests[0], detail, pairing.name, speaker))
    return found


def audit_pairings(
    pairings: Sequence[Pairing], progress: bool = False, cache: Path | None = None
) -> dict[str, list[Finding]]:
    """The findings of each pairing, by its name (audio fingerprinted first, `fingerprints`)."""
    paths = [item.row.audio for pairing in pairings for item in [*pairing.training, *pairing.evaluated]]
    prints = fingerprints(paths, progress, cache)
    return {pairing.name: pairing_findings(pairing, prints) for pairing in pairings}


@dataclass(frozen=True)
class AuditReport:
    """What `data audit` found among `corpora` (`utterances` rows in all), each finding once."""

    corpora: list[str]
    utterances: int
    findings: list[Finding]

    def counts(self) -> Counter[tuple[str, str, str]]:
        """Findings per (kind, training corpus, evaluated corpus)."""
        return Counter((f.kind, f.train_corpus, f.test_corpus) for f in self.findings)


def merged(per_pairing: Mapping[str, list[Finding]]) -> list[Finding]:
    """The findings of several pairings, each once (the first pairing that found it keeps it),
    ordered by kind (`KINDS`), then evaluated and training utterance."""
    unique: dict[tuple[str, ...], Finding] = {}
    for findings in per_pairing.values():
        for finding in findings:
            unique.setdefault(finding.identity(), finding)
    rank = {kind: i for i, kind in enumerate(KINDS)}
    return sorted(
        unique.values(),
        key=lambda f: (
            rank[f.kind],
            f.test_corpus,
            f.test_part,
            f.test_id,
            f.train_corpus,
            f.train_part,
            f.train_id,
        ),
    )


def audit_corpora(
    cards: Sequence[DatasetCard], progress: bool = True, cache: Path | None = None
) -> AuditReport:
    """`data audit`: every pairing among the prepared corpora of `cards` (`protocol_pairings`)."""
    unprepared = [card.name for card in cards if not is_prepared(card)]
    if unprepared:
        raise BenchmarkError(
            f"not prepared: {', '.join(unprepared)}",
            hint="run `python -m benchmark data prepare NAME --root PATH` (or `data demo`) first",
        )
    if not cards:
        raise BenchmarkError(
            "no prepared corpus to audit",
            hint="run `python -m benchmark data demo` or `python -m benchmark data prepare NAME --root PATH`",
        )
    splits = {card.name: {split: load_split(card, split) for split in card.splits} for card in cards}
    utterances = sum(len(rows) for corpus in splits.values() for rows in corpus.values())
    findings = merged(audit_pairings(protocol_pairings(cards, splits), progress, cache))
    return AuditReport([card.name for card in cards], utterances, findings)


def write_audit(path: Path, findings: Iterable[Finding]) -> int:
    """Write one row per finding (`COLUMNS`, tab-separated, with a header); returns the rows written."""
    count = 0
    with atomic_file(path) as handle:
        handle.write("\t".join(COLUMNS) + "\n")
        for finding in findings:
            handle.write("\t".join(finding.fields()) + "\n")
            count += 1
    return count


def read_audit(path: Path) -> list[dict[str, str]]:
    """The rows of an `audit.tsv`, as column -> value."""
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]
