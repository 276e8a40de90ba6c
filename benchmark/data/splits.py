"""Train/test partitions of a corpus by its card's protocol (paper section 4.1).

- `leave_one_group_out`: fold k tests on group `folds[k]` and trains on every other group
  (IEMOCAP sessions; the demo corpus's speaker groups), so test speakers are never trained on.
- `official_splits`: one "fold" named after the test split, trained on the train split (MELD).
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmark.config import DatasetCard
from benchmark.data.manifest import Utterance
from benchmark.errors import BenchmarkError


@dataclass(frozen=True)
class Fold:
    name: str
    train: list[Utterance]
    test: list[Utterance]


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


def folds(card: DatasetCard, splits: dict[str, list[Utterance]], which: str | None = None) -> list[Fold]:
    """The folds to run: all of them, the one named `which` (a group or the test split), or, with
    `which=None`, the card's `default_fold`."""
    protocol = card.protocol
    built = []
    for name in fold_names(card, which):
        if protocol.kind == "leave_one_group_out":
            rows = [row for split in card.splits for row in splits.get(split, [])]
            fold = Fold(name, [r for r in rows if r.group != name], [r for r in rows if r.group == name])
        else:
            fold = Fold(name, splits.get(protocol.train, []), splits.get(protocol.test, []))
        if not fold.train or not fold.test:
            raise BenchmarkError(
                f"{card.name} fold '{fold.name}': {len(fold.train)} train, {len(fold.test)} test rows",
                hint=f"re-run `python -m benchmark data prepare {card.name}`: a group or split is missing",
            )
        built.append(fold)
    return built
