"""A corpus's manifests, every split, as `run` and `explain` read them."""

from __future__ import annotations

from benchmark.config import DatasetCard
from benchmark.data.manifest import Utterance
from benchmark.data.prepare import is_prepared, load_split


def load_corpus(card: DatasetCard) -> dict[str, list[Utterance]]:
    """The manifests of every split of `card`; the demo corpus is synthesised (once) when absent."""
    if card.reader == "demo" and not is_prepared(card):
        from benchmark.data.demo import build_demo_corpus  # eSpeak and openSMILE: only when synthesising

        build_demo_corpus()
    return {split: load_split(card, split) for split in card.splits}
