"""The character vocabulary of the CTC heads: the demo backbone's own (the recipe that trains it,
`benchmark.train.demo_backbone`) and the SSL baselines' ASR head share it, so their WERs are
scored on the same symbols."""

from __future__ import annotations

import re

import torch

# Blank (also the padding id), the word delimiter, apostrophe and letters.
BLANK, DELIMITER = "<pad>", "|"
VOCAB = (BLANK, DELIMITER, "'", *"abcdefghijklmnopqrstuvwxyz")


def encode_text(text: str) -> list[int]:
    """Characters -> CTC label ids: lower case, words joined by the delimiter, other symbols dropped."""
    words = re.sub(r"[^a-z' ]", " ", text.lower()).split()
    return [VOCAB.index(c) for c in DELIMITER.join(words)]


def greedy_decode(logits: torch.Tensor, length: int) -> str:
    """Best path of one utterance's (F, vocab) logits: collapse repeats, drop blanks."""
    best = torch.unique_consecutive(logits[:length].argmax(dim=-1)).tolist()
    text = "".join(VOCAB[i] for i in best if i != VOCAB.index(BLANK))
    return " ".join(text.replace(DELIMITER, " ").split())
