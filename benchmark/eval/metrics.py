"""SER and ASR metrics (paper section 4.3), computed from prediction records.

Keys are the MLflow metric names of ARCHITECTURE section 3 and values are fractions, not percent.
Besides the corpus-level numbers, each metric exposes its per-utterance scores (SER correctness,
ASR edit counts) so that the paired significance tests compare two systems utterance by utterance.

SER: a hypothesis that is None or not one of the labels (an unparseable answer) counts as wrong
and is counted in `ser.invalid_rate`; it is never dropped, which would flatter a model that
answers off-format exactly when it is unsure.

ASR: both sides go through `normalize_transcript`, then jiwer aligns them; corpus WER is the sum of
the edits over the sum of the reference words (not a mean of per-utterance WERs).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jiwer
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

INVALID = "invalid"

# ---------------------------------------------------------------------------------------------
# SER
# ---------------------------------------------------------------------------------------------


def _check_ser_inputs(refs: Sequence[str], hyps: Sequence[str | None], labels: Sequence[str]) -> None:
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if not refs:
        raise ValueError("no utterances to score")
    if unknown := sorted(set(refs) - set(labels)):
        raise ValueError(f"reference emotions not in the label set {list(labels)}: {unknown}")


def ser_correct(refs: Sequence[str], hyps: Sequence[str | None], labels: Sequence[str]) -> list[bool]:
    """Per-utterance correctness (an invalid hypothesis is wrong), for paired tests."""
    _check_ser_inputs(refs, hyps, labels)
    return [ref == hyp for ref, hyp in zip(refs, hyps, strict=True)]


def confusion_matrix(refs: Sequence[str], hyps: Sequence[str | None], labels: Sequence[str]) -> np.ndarray:
    """Counts with one row per reference label and one column per predicted label, in the order
    of `labels`, plus a last column for invalid hypotheses (None or outside `labels`)."""
    _check_ser_inputs(refs, hyps, labels)
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels) + 1), dtype=np.int64)
    for ref, hyp in zip(refs, hyps, strict=True):
        matrix[index[ref], index.get(hyp, len(labels))] += 1
    return matrix


def ser_scores(refs: Sequence[str], hyps: Sequence[str | None], labels: Sequence[str]) -> dict[str, float]:
    """`ser.ua`, `ser.wa`, `ser.macro_f1` and `ser.invalid_rate` as fractions.

    UA is the mean recall over the classes present in `refs` (a fold may lack a class; a class
    with no references has no recall). Macro-F1 averages the F1 of the same classes; a class that
    is never predicted has precision 0. Invalid hypotheses are wrong for every class and count
    as a prediction of none.
    """
    matrix = confusion_matrix(refs, hyps, labels)
    square = matrix[:, : len(labels)]
    support = matrix.sum(axis=1)
    predicted = square.sum(axis=0)
    hits = np.diag(square)
    present = support > 0
    recall = hits[present] / support[present]
    precision = np.divide(
        hits[present], predicted[present], out=np.zeros(present.sum()), where=predicted[present] > 0
    )
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    total = matrix.sum()
    return {
        "ser.ua": float(recall.mean()),
        "ser.wa": float(hits.sum() / total),
        "ser.macro_f1": float(f1.mean()),
        "ser.invalid_rate": float(matrix[:, -1].sum() / total),
    }


def plot_confusion_matrix(matrix: np.ndarray, labels: Sequence[str], path: Path) -> Path:
    """Write a PNG heat map of `matrix` (as from `confusion_matrix`), coloured by the row-normalised
    rate (recall per reference class, so classes of different sizes compare) with raw counts
    written in each cell. An extra last column is labelled 'invalid'.

    Uses the Agg canvas directly, not pyplot, so no global backend is set and nothing is shown.
    """
    matrix = np.asarray(matrix)
    columns = [*labels, INVALID] if matrix.shape[1] == len(labels) + 1 else list(labels)
    rows = matrix.sum(axis=1, keepdims=True)
    rates = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    figure = Figure(figsize=(1.2 + 0.8 * len(columns), 1.0 + 0.8 * len(labels)))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, label="fraction of the reference class")
    axes.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("reference")
    for (row, column), count in np.ndenumerate(matrix):
        colour = "white" if rates[row, column] > 0.5 else "black"
        axes.text(column, row, str(count), ha="center", va="center", color=colour)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=120)
    return path


# ---------------------------------------------------------------------------------------------
# ASR
# ---------------------------------------------------------------------------------------------

_TAG = re.compile(r"\[[^\]]*\]|<[^>]*>")
_NOT_WORD = re.compile(r"[^\w\s']|_")
_LOOSE_APOSTROPHE = re.compile(r"(?<!\w)'|'(?!\w)")


def normalize_transcript(text: str | None) -> str:
    """The one text normalisation applied to references and hypotheses before WER.

    NFKC, lower case, curly apostrophes made straight; bracketed non-speech tags such as IEMOCAP's
    `[LAUGHTER]` or `<noise>` removed; every other punctuation mark becomes a space (so
    "well-known" is two words) except an apostrophe inside a word ("don't", "o'clock"); whitespace
    collapsed. Numbers are left as written: "20" and "twenty" differ, as in the paper's plain
    WER, because no number normaliser exists for every corpus language. None gives "".
    """
    text = unicodedata.normalize("NFKC", text or "").lower().replace("\u2019", "'").replace("\u2018", "'")
    text = _TAG.sub(" ", text)
    text = _NOT_WORD.sub(" ", text)
    text = _LOOSE_APOSTROPHE.sub(" ", text)
    return " ".join(text.split())


@dataclass(frozen=True)
class AsrErrors:
    """Per-utterance edit counts after normalisation.

    `index` are the positions of the scored utterances in the input; an utterance whose reference
    is empty after normalisation has no words to be wrong about (its WER is undefined) and is
    skipped, counted in `skipped`. `errors[i]` = substitutions + deletions + insertions and
    `words[i]` = reference words of utterance `index[i]`.
    """

    index: list[int]
    errors: list[int]
    words: list[int]
    substitutions: int
    deletions: int
    insertions: int
    skipped: int

    @property
    def wer(self) -> float:
        return sum(self.errors) / sum(self.words)


def asr_errors(refs: Sequence[str | None], hyps: Sequence[str | None]) -> AsrErrors:
    """Align each normalised pair with jiwer; an empty or None hypothesis is all deletions."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    pairs = [
        (i, normalize_transcript(ref), normalize_transcript(hyp))
        for i, (ref, hyp) in enumerate(zip(refs, hyps, strict=True))
    ]
    scored = [(i, ref, hyp) for i, ref, hyp in pairs if ref]
    if not scored:
        raise ValueError("no utterance has a non-empty reference transcript")
    output = jiwer.process_words([ref for _, ref, _ in scored], [hyp for _, _, hyp in scored])
    errors = []
    for chunks in output.alignments:
        edits = 0
        for chunk in chunks:
            if chunk.type in ("substitute", "delete"):
                edits += chunk.ref_end_idx - chunk.ref_start_idx
            elif chunk.type == "insert":
                edits += chunk.hyp_end_idx - chunk.hyp_start_idx
        errors.append(edits)
    return AsrErrors(
        index=[i for i, _, _ in scored],
        errors=errors,
        words=[len(ref.split()) for _, ref, _ in scored],
        substitutions=output.substitutions,
        deletions=output.deletions,
        insertions=output.insertions,
        skipped=len(pairs) - len(scored),
    )


def asr_scores(refs: Sequence[str | None], hyps: Sequence[str | None]) -> dict[str, float]:
    """`asr.wer` (corpus level, a fraction; can exceed 1 with many insertions) and the number of
    utterances skipped for an empty reference (`asr.skipped`), so a skip is never silent."""
    counts = asr_errors(refs, hyps)
    return {"asr.wer": counts.wer, "asr.skipped": float(counts.skipped)}
