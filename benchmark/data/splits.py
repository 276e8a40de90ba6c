"""Train/validation/test partitions of a corpus by its card's protocol (paper section 4.1).

- `leave_one_group_out`: fold k tests on group `folds[k]` and trains on every other group
  (IEMOCAP sessions; the demo corpus's speaker groups), so test speakers are never trained on.
- `official_splits`: one "fold" named after the test split, trained on the train split (MELD).

With validation on, the card's `protocol.validation` carves a validation set out of the training
part (or names a split of its own), so that recipes and studies choose on it and the test part is
touched once, at the end. Training corpora of `protocol.train_with` (SpeechCraft) then join each
fold's training part (`training_mixture`), their emotion labels renamed to the target corpus's;
a run's folds and those rows are one `Mixture`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from benchmark.config import DatasetCard
from benchmark.data.corpus import load_corpus
from benchmark.data.manifest import Utterance
from benchmark.errors import BenchmarkError


@dataclass(frozen=True)
class Fold:
    name: str
    train: list[Utterance]
    test: list[Utterance]
    validation: list[Utterance] = field(default_factory=list)


def fold_names(card: DatasetCard, which: str | None = None) -> list[str]:
    """The names of the folds to run (`which=None`: the card's `default_fold`); fails, before any
    data is read, on a corpus or fold that cannot be trained and tested on."""
    protocol = card.protocol
    which = which or protocol.default_fold
    if protocol.kind == "leave_one_group_out":
        names = list(protocol.folds)
    elif protocol.kind == "official_splits":
        names = [protocol.test]
    else:
        raise BenchmarkError(
            f"'{card.name}' is a {protocol.kind.replace('_', '-')} corpus: nothing to train and test on",
            hint="train on a corpus with folds or official splits (demo, iemocap, meld)",
        )
    if which == "all":
        return names
    if which not in names:
        raise BenchmarkError(f"unknown fold '{which}' of {card.name}", hint=f"folds: all, {', '.join(names)}")
    return [which]


def check_validation(card: DatasetCard) -> None:
    """Fail before any data is read when validation is asked of a card that declares none."""
    if card.protocol.validation is None:
        raise BenchmarkError(
            f"{card.name} declares no validation set (datasets/{card.name}.yaml protocol.validation)",
            hint="add `validation: {groups: 1}`, `{speakers: 1}` or `{split: NAME}` to the card's protocol",
        )


def _held_out_groups(card: DatasetCard, test_group: str, count: int) -> list[str]:
    """The `count` groups after `test_group` in `folds` order, cyclically."""
    groups = card.protocol.folds
    start = groups.index(test_group)
    return [groups[(start + step) % len(groups)] for step in range(1, count + 1)]


def _validation_speakers(
    card: DatasetCard, rows: list[Utterance], test: list[Utterance], name: str
) -> set[str]:
    """`validation.speakers` speakers of the group after the test group that never speak in test."""
    count = card.protocol.validation.speakers
    group = _held_out_groups(card, name, 1)[0]
    in_test = {row.speaker for row in test}
    candidates = sorted({row.speaker for row in rows if row.group == group} - in_test)
    if len(candidates) < count:
        raise BenchmarkError(
            f"{card.name} fold '{name}': validation needs {count} speaker(s) of group '{group}' "
            f"absent from the test group, found {len(candidates)}",
            hint=f"lower protocol.validation.speakers in datasets/{card.name}.yaml",
        )
    return set(candidates[:count])


def _split_fold(card: DatasetCard, splits: dict[str, list[Utterance]], name: str, validation: bool) -> Fold:
    protocol = card.protocol
    spec = protocol.validation if validation else None
    if protocol.kind == "official_splits":
        held_out = splits.get(spec.split, []) if spec else []
        return Fold(name, splits.get(protocol.train, []), splits.get(protocol.test, []), held_out)
    rows = [row for split in card.splits for row in splits.get(split, [])]
    test = [r for r in rows if r.group == name]
    rest = [r for r in rows if r.group != name]
    if spec is None:
        return Fold(name, rest, test)
    if spec.split is not None:
        named = {row.id for row in splits.get(spec.split, [])}
        held = [r for r in rest if r.id in named]
    elif spec.groups:
        groups = set(_held_out_groups(card, name, spec.groups))
        held = [r for r in rest if r.group in groups]
    else:
        speakers = _validation_speakers(card, rows, test, name)
        held = [r for r in rest if r.speaker in speakers]
    held_ids = {r.id for r in held}
    return Fold(name, [r for r in rest if r.id not in held_ids], test, held)


def folds(
    card: DatasetCard,
    splits: dict[str, list[Utterance]],
    which: str | None = None,
    validation: bool = False,
) -> list[Fold]:
    """The folds to run: all of them, the one named `which` (a group or the test split), or, with
    `which=None`, the card's `default_fold`; with `validation`, each holds its validation rows."""
    if validation:
        check_validation(card)
    built = []
    for name in fold_names(card, which):
        fold = _split_fold(card, splits, name, validation)
        if not fold.train or not fold.test or (validation and not fold.validation):
            counts = f"{len(fold.train)} train, {len(fold.test)} test"
            counts += f", {len(fold.validation)} validation" if validation else ""
            raise BenchmarkError(
                f"{card.name} fold '{fold.name}': {counts} rows",
                hint=f"re-run `python -m benchmark data prepare {card.name}`: a group or split is missing",
            )
        built.append(fold)
    return built


def shared_speakers(first: list[Utterance], second: list[Utterance]) -> set[str]:
    """Speakers present in both sets of rows."""
    return {row.speaker for row in first} & {row.speaker for row in second}


def training_part(card: DatasetCard, splits: dict[str, list[Utterance]]) -> list[Utterance]:
    """Every row a corpus of `train_with` contributes: its train split, or all of a cross-validated
    corpus (whose test groups belong to its own protocol, not to the target corpus's)."""
    protocol = card.protocol
    if protocol.kind == "zero_shot":
        raise BenchmarkError(
            f"'{card.name}' is a zero-shot corpus and never trained on",
            hint="train with a corpus that has a training split (e.g. speechcraft)",
        )
    if protocol.kind == "leave_one_group_out":
        return [row for split in card.splits for row in splits.get(split, [])]
    return list(splits.get(protocol.train, []))


@dataclass(frozen=True)
class Relabelled:
    """A training corpus's rows with the target corpus's emotion labels, and what was renamed."""

    rows: list[Utterance]
    outside: Counter[str]  # source labels with no target label: the rows train no emotion


def relabel(rows: list[Utterance], source: DatasetCard, target: DatasetCard) -> Relabelled:
    """Rename `source` emotions to `target` labels through the target card's `label_maps`.

    A label the map does not list keeps its name if the target has it (SpeechCraft's four IEMOCAP
    classes); any other label becomes null, so the row still trains ASR and SED but no emotion,
    and is counted in `outside`.
    """
    mapping = target.protocol.label_maps.get(source.name, {})
    card_file = f"datasets/{target.name}.yaml protocol.label_maps.{source.name}"
    if unknown := sorted(set(mapping) - set(source.labels)):
        raise BenchmarkError(f"{card_file}: {unknown} are not labels of {source.name}")
    if bad := sorted({v for v in mapping.values() if v is not None} - set(target.labels)):
        raise BenchmarkError(f"{card_file}: {bad} are not labels of {target.name}")
    outside: Counter[str] = Counter()
    renamed = []
    for row in rows:
        label = row.emotion
        if label is not None:
            label = mapping.get(label, label if label in target.labels else None)
            if label is None:
                outside[row.emotion] += 1
        renamed.append(row.model_copy(update={"emotion": label}))
    return Relabelled(renamed, outside)


@dataclass(frozen=True)
class Mixture:
    """The target corpus's folds and the rows every fold trains with from the `train_with` corpora."""

    card: DatasetCard
    folds: list[Fold]
    extra: list[Utterance]
    outside_labels: dict[str, int]  # per train_with corpus: rows whose emotion the target lacks
    cards: dict[str, DatasetCard]  # every corpus of the run, target first

    def training_rows(self, fold: Fold) -> list[Utterance]:
        return [*fold.train, *self.extra]

    def all_rows(self) -> dict[str, Utterance]:
        """Every row of the run by id; two corpora that share an id would mix their features."""
        rows: dict[str, Utterance] = {}
        for row in [*self.extra, *(r for f in self.folds for r in [*f.train, *f.validation, *f.test])]:
            if (seen := rows.setdefault(row.id, row)).dataset != row.dataset:
                raise BenchmarkError(f"utterance id '{row.id}' is in both {seen.dataset} and {row.dataset}")
        return rows


def training_mixture(
    card: DatasetCard, others: list[DatasetCard], fold: str | None, validation: bool
) -> Mixture:
    """The folds `fold` of `card` ("all" for every one) and the training parts of `others` (its
    `train_with` corpora), relabelled to `card`'s emotions: what `run` trains, and what `evaluate`
    rebuilds to audit a run's training mixture against another corpus."""
    chosen = folds(card, load_corpus(card), fold, validation)
    extra: list[Utterance] = []
    outside: dict[str, int] = {}
    for other in others:
        relabelled = relabel(training_part(other, load_corpus(other)), other, card)
        extra += relabelled.rows
        outside[other.name] = sum(relabelled.outside.values())
    return Mixture(card, chosen, extra, outside, {c.name: c for c in [card, *others]})
