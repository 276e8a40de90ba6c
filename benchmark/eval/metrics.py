"""SER, ASR and SED metrics (paper section 4.3) of prediction records: the one scoring path.

Keys are the MLflow metric names (docs/architecture.md); values are fractions, not percent.
One function per task computes, from one per-utterance representation, both the corpus metric
that `run` logs and the per-utterance scores (`UtteranceScores`) that a paired test compares;
`compare` and `leaderboard` call the same functions on logged records (`fold_scores`), so a table
cell is the logged number. SER: a None or off-label hypothesis counts as wrong and in
`ser.invalid_rate`, never dropped. ASR: both sides are normalised (`normalize_transcript`) and
corpus WER is the summed edits over the summed reference words. SED: the corpus value and the
sentence scores come from one `caption_scores` call, so they cannot disagree about what was scored.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import jiwer
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from benchmark.config import LANGUAGES, Language
from benchmark.eval.captioning import caption_scores, language_metric

if TYPE_CHECKING:  # records are only read here
    from benchmark.data.records import PredictionRecord as Record

INVALID = "invalid"


@dataclass(frozen=True, eq=False)
class UtteranceScores:
    """One run's per-utterance scores of one metric, and the metric they are the scores of.

    `values` are what a paired test compares, one per utterance of `ids`. `corpus` is the metric
    exactly as `run` logs it, computed by the same scoring call from the same utterances; where the
    metric is an aggregate of per-utterance scores (UA, WA, WER, ROUGE-L, CIDEr, SPICE, the
    language-mismatch share) it is the mean of `values` up to rounding, and for BLEU-4 and METEOR
    (corpus statistics) it is not. None: scores passed in by hand, whose mean is the metric.
    """

    metric: str
    ids: tuple[str, ...]
    values: np.ndarray
    corpus: float | None = None
    # (fold, seed, value) of each training the scores pool (`fold_scores`); empty: one, unnamed.
    parts: tuple[tuple[str | None, int | None, float], ...] = ()

    @property
    def mean(self) -> float:
        return float(self.values.mean())

    @property
    def value(self) -> float:
        """The metric as `run` logs it and tables report it."""
        return self.mean if self.corpus is None else self.corpus


@dataclass(frozen=True)
class Scores:
    """The metrics of one scoring call. `corpus` has every number `run` logs for it; `utterances`
    has the per-utterance scores of each metric that a paired test can compare, with
    `utterances[m].value == corpus[m]`. Both empty when no record had a reference to score."""

    corpus: dict[str, float]
    utterances: dict[str, UtteranceScores]


def _ids(ids: Sequence[str] | None, count: int) -> tuple[str, ...]:
    names = tuple(str(i) for i in range(count)) if ids is None else tuple(ids)
    if len(names) != count:
        raise ValueError(f"{len(names)} utterance ids for {count} utterances")
    return names


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


def ser_scores(
    refs: Sequence[str], hyps: Sequence[str | None], labels: Sequence[str], ids: Sequence[str] | None = None
) -> Scores:
    """`ser.ua`, `ser.wa`, `ser.macro_f1` and `ser.invalid_rate` as fractions, all from the
    confusion matrix, and the per-utterance scores of UA and WA (`ids`: the utterances' ids,
    default their positions).

    UA is the mean recall over the classes present in `refs` (a fold may lack a class; a class
    with no references has no recall). Macro-F1 averages the F1 of the same classes; a class that
    is never predicted has precision 0. Invalid hypotheses are wrong for every class and count
    as a prediction of none. Utterance i's UA score is correct_i * N / (C * n_c(i)), with C
    the classes present and n_c(i) the references of its class, so that the scores average to UA;
    its WA score is correct_i. Macro-F1 is no mean of per-utterance scores and has none.
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
    corpus = {
        "ser.ua": float(recall.mean()),
        "ser.wa": float(hits.sum() / total),
        "ser.macro_f1": float(f1.mean()),
        "ser.invalid_rate": float(matrix[:, -1].sum() / total),
    }
    names = _ids(ids, len(refs))
    correct = np.array(ser_correct(refs, hyps, labels), dtype=float)
    index = {label: i for i, label in enumerate(labels)}
    class_sizes = support[[index[ref] for ref in refs]]
    values = {"ser.ua": correct * len(refs) / (int(present.sum()) * class_sizes), "ser.wa": correct}
    return Scores(
        corpus, {name: UtteranceScores(name, names, value, corpus[name]) for name, value in values.items()}
    )


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


def asr_scores(
    refs: Sequence[str | None], hyps: Sequence[str | None], ids: Sequence[str] | None = None
) -> Scores:
    """`asr.wer` (corpus level, a fraction; can exceed 1 with many insertions), the number of
    utterances skipped for an empty reference (`asr.skipped`), so a skip is never silent, and the
    per-utterance WER scores e_i * N / sum(w) of the N scored utterances, which average to the
    corpus WER (`ids`: the utterances' ids, default their positions)."""
    counts = asr_errors(refs, hyps)
    names = _ids(ids, len(refs))
    wer = counts.wer
    values = np.array(counts.errors, dtype=float) * len(counts.index) / sum(counts.words)
    scores = UtteranceScores("asr.wer", tuple(names[i] for i in counts.index), values, wer)
    return Scores({"asr.wer": wer, "asr.skipped": float(counts.skipped)}, {"asr.wer": scores})


# ---------------------------------------------------------------------------------------------
# Prediction records: which utterances each task scores, and runs of several folds
# ---------------------------------------------------------------------------------------------


def emotion_scores(records: Sequence[Record], labels: Sequence[str] | None = None) -> Scores:
    """`ser_scores` of the records with a reference emotion.

    `labels` are the corpus's, in its dataset card's order, which `run` scores with (the order in
    which UA sums its class recalls); None takes the references' labels, sorted, which gives the
    same UA up to its last bit and the same WA.
    """
    rows = [r for r in records if r.ref_emotion is not None]
    if not rows:
        return Scores({}, {})
    refs = [r.ref_emotion for r in rows]
    chosen = sorted(set(refs)) if labels is None else labels
    return ser_scores(refs, [r.hyp_emotion for r in rows], chosen, [r.key for r in rows])


def transcript_scores(records: Sequence[Record]) -> Scores:
    """`asr_scores` of the records with a reference transcript (a missing hypothesis is all
    deletions)."""
    rows = [r for r in records if r.ref_transcript]
    if not rows:
        return Scores({}, {})
    refs, hyps = [r.ref_transcript for r in rows], [r.hyp_transcript for r in rows]
    return asr_scores(refs, hyps, [r.key for r in rows])


def reference_languages(records: Sequence[Record], language: Language) -> list[Language]:
    """Each record's reference language; `language` (the corpus's) where a record has none."""
    return [r.language or language for r in records]


def descriptor_scores(records: Sequence[Record], language: Language) -> Scores:
    """The captioning metrics of the records with a reference descriptor, from one
    `caption_scores` call (its Java scorers start once), each record scored in its reference's
    language (`language`, the corpus's, where it has none).

    `sed.<metric>` and `sed.language_mismatch` cover all those records and, when their references
    have several languages, `sed.<lang>.<metric>` each language's (`benchmark.eval.captioning`
    says how); every corpus value has the sentence scores of the same call. A metric that cannot
    run (SPICE without its jars) is absent; `available_caption_metrics` says why.
    """
    rows = [r for r in records if r.ref_descriptor]
    if not rows:
        return Scores({}, {})
    languages = reference_languages(rows, language)
    result = caption_scores([r.ref_descriptor for r in rows], [r.hyp_descriptor for r in rows], languages)
    ids = tuple(r.key for r in rows)
    scores = {
        name: UtteranceScores(name, ids, np.asarray(values, dtype=float), corpus=result.corpus[name])
        for name, values in result.per_utterance.items()
    }
    present = [lang for lang in LANGUAGES if lang in languages]
    overall = list(scores.items())
    if len(present) > 1:
        for lang in present:
            members = [i for i, found in enumerate(languages) if found == lang]
            for name, utterance in overall:
                key = language_metric(name, lang)
                scores[key] = UtteranceScores(
                    key, tuple(ids[i] for i in members), utterance.values[members], corpus=result.corpus[key]
                )
    return Scores(result.corpus, scores)


def fold_scores(
    records: Sequence[Record], score: Callable[[Sequence[Record]], Scores]
) -> dict[str, UtteranceScores]:
    """The per-utterance scores of a run of one or several folds, as `run` reports it.

    A run of several folds (IEMOCAP leave-one-session-out) logs each fold's metrics and, on the
    parent run, their mean over the folds that have the metric, in fold order. Here `score` (one
    of the functions above) scores each fold's records; a metric's `corpus` is the mean of its
    fold values in the same order, so it is the parent's number to the last bit, and each fold's
    scores are scaled by N / (F * N_f) (N utterances in the F folds with the metric, N_f in this
    one), so that their mean over all utterances is that fold mean too. With one fold (or records
    without a fold) these are `score`'s own, scaled by 1. A run with seeds (`run --seeds K`)
    trained each fold K times: each (fold, seed) is such a part, the mean is over all of them as
    the parent logs it, and the scores are keyed by `record.key` (the id and its seed).
    """
    folds: dict[tuple[str | None, int | None], list[Record]] = defaultdict(list)
    for record in records:  # a run with seeds: each (fold, seed) is one training, scored alone
        folds[record.fold, record.seed].append(record)
    scored = [score(members).utterances for members in folds.values()]
    result: dict[str, UtteranceScores] = {}
    for name in dict.fromkeys(name for fold in scored for name in fold):
        keys = [key for key, fold in zip(folds, scored, strict=True) if name in fold]
        parts = [fold[name] for fold in scored if name in fold]
        total = sum(len(part.ids) for part in parts)
        result[name] = UtteranceScores(
            name,
            tuple(utt for part in parts for utt in part.ids),
            np.concatenate([part.values * total / (len(parts) * len(part.ids)) for part in parts]),
            corpus=float(np.mean([part.value for part in parts])),
            parts=tuple((fold, seed, part.value) for (fold, seed), part in zip(keys, parts, strict=True)),
        )
    return result
