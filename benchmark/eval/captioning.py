"""SED captioning metrics (paper Table 1): BLEU-4, METEOR, ROUGE-L, CIDEr and SPICE.

The numbers come from `pycocoevalcap`, the standard COCO caption evaluation code, so that they are
computed the way caption papers compute theirs. Keys are the MLflow metric names of ARCHITECTURE
section 3 (`sed.bleu4`, ...). Besides the corpus score, every metric gives one score per utterance,
in input order, for the paired significance tests.

A hypothesis that is None (the model gave no descriptor) is scored as an empty caption, never
dropped: dropping it would flatter a model that falls silent when unsure.

Tokenisation: English captions go through pycocoevalcap's PTB tokenizer (lower case, punctuation
removed), as in COCO evaluation. Mandarin captions (EMOSEC) are segmented into characters instead
(`segment_characters`); see there why. On Mandarin, METEOR's English stemmer, synonyms and
paraphrases find nothing, so it reduces to exact character matches with its fragmentation penalty,
and SPICE parses with an English model: both are still reported, but they mean
less than on English.

The PTB tokenizer, METEOR and SPICE are Java programs. Each is started once per `caption_scores`
call (all captions of a call go through one process), because a start costs seconds. SPICE also
needs Stanford CoreNLP 3.6.0 jars that pycocoevalcap downloads on first use; this suite never
downloads anything, so without them SPICE is reported in `CaptionScores.unavailable` with the
reason and the fix, never as 0. The PTB tokenizer and SPICE write their temporary files inside
pycocoevalcap's own folder, so that folder must be writable (it is in a virtual environment).

pycocoevalcap's modules are imported inside the functions that use them, so that `doctor` can
report a missing pycocoevalcap instead of failing to import this module.
"""

from __future__ import annotations

import importlib.util
import math
import shutil
import subprocess
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from benchmark.errors import BenchmarkError

Language = Literal["en", "zh"]
LANGUAGES = ("en", "zh")

# MLflow key -> the name papers print.
CAPTION_METRICS = {
    "sed.bleu4": "BLEU-4", "sed.meteor": "METEOR", "sed.rouge_l": "ROUGE-L", "sed.cider": "CIDEr",
    "sed.spice": "SPICE",
}  # fmt: skip
# What pycocoevalcap's spice/get_stanford_models.py would download into spice/lib/.
CORENLP_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
NO_JAVA = (
    "Java not found on PATH (the PTB tokenizer for English, METEOR and SPICE are Java programs); "
    "install a Java runtime, e.g. `apt-get install default-jre-headless`"
)

Gts = dict[int, list[str]]  # utterance index -> its tokenised reference captions
Res = dict[int, list[str]]  # utterance index -> [its tokenised hypothesis]


@dataclass(frozen=True)
class CaptionScores:
    """Corpus and per-utterance scores of the metrics that could run, and why the others could not.

    `corpus` and `per_utterance` share their keys (MLflow metric names); `per_utterance[m][i]` is
    utterance i's score in input order. `unavailable` maps each metric that was not computed to
    "reason; fix". `seconds` is the wall-clock cost of `tokenize` and of each computed metric
    (a Java scorer's start included), to see where evaluation time goes.
    """

    corpus: dict[str, float]
    per_utterance: dict[str, list[float]]
    unavailable: dict[str, str]
    seconds: dict[str, float]


def _package_dir() -> Path | None:
    """pycocoevalcap's folder; it is a namespace package (no `__init__.py`, no `__file__`)."""
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def available_caption_metrics(language: Language = "en") -> dict[str, str | None]:
    """Every SED metric -> None if it can run here for `language`, else "reason; fix".

    Only looks at files and PATH: starts no Java program and never triggers pycocoevalcap's
    download of the SPICE jars. English captions need Java for every metric (the PTB tokenizer).
    """
    _check_language(language)
    package = _package_dir()
    if package is None:
        return dict.fromkeys(CAPTION_METRICS, "pycocoevalcap is not installed; pip install pycocoevalcap")
    status: dict[str, str | None] = dict.fromkeys(CAPTION_METRICS)
    if shutil.which("java") is None:
        java_metrics = CAPTION_METRICS if language == "en" else ("sed.meteor", "sed.spice")
        return status | dict.fromkeys(java_metrics, NO_JAVA)
    lib = package / "spice" / "lib"
    if missing := [jar for jar in CORENLP_JARS if not (lib / jar).is_file()]:
        status["sed.spice"] = (
            f"Stanford CoreNLP 3.6.0 jars missing in {lib} ({', '.join(missing)}; pycocoevalcap would "
            "download them on first use, which this offline suite never does); copy both jars there "
            "from stanford-corenlp-full-2015-12-09.zip (nlp.stanford.edu/software)"
        )
    return status


def _check_language(language: str) -> None:
    if language not in LANGUAGES:
        raise BenchmarkError(f"unknown caption language '{language}'", hint=f"choose one of {LANGUAGES}")


def segment_characters(text: str) -> str:
    """A Mandarin caption as space-separated characters, without whitespace and punctuation.

    Chinese is written without spaces, so the PTB tokenizer (which splits at spaces and
    punctuation) would leave whole clauses as single "words" and make every n-gram metric
    all-or-nothing. A word segmenter (jieba and the like) would make the scores depend on its
    dictionary and version; characters are unambiguous and are the unit Chinese caption
    evaluations commonly score. NFKC first, so full-width forms count as their ASCII twins, and
    lower case as the PTB path does.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(ch for ch in text if unicodedata.category(ch)[0] not in "PZC")


def tokenize_captions(texts: Sequence[str], language: Language = "en") -> list[str]:
    """The tokenised form of each caption, in order: PTB tokenizer (one Java process for all of
    them) for English, `segment_characters` for Mandarin."""
    _check_language(language)
    if language == "zh":
        return [segment_characters(text) for text in texts]
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    # The tokenizer reads one caption per line and also breaks lines at \r, \u2028, \x0c..., which
    # would shift every later caption onto the wrong utterance: make each caption one line first.
    captions = {i: [{"caption": " ".join(text.splitlines())}] for i, text in enumerate(texts)}
    tokenized = PTBTokenizer().tokenize(captions)
    if len(tokenized) != len(texts):
        raise BenchmarkError(
            f"the PTB tokenizer returned {len(tokenized)} of {len(texts)} captions",
            hint="run `python -m benchmark doctor` to check Java and pycocoevalcap",
        )
    return [tokenized[i][0] for i in range(len(texts))]


def _references(refs: Sequence[str | Sequence[str]]) -> list[list[str]]:
    """Each utterance's references as a list; an empty one is an error, since a score against
    nothing is undefined (leave utterances without a reference descriptor out instead)."""
    out = []
    for i, ref in enumerate(refs):
        group = [ref] if isinstance(ref, str) else list(ref)
        if not group or not all(isinstance(r, str) and r.strip() for r in group):
            raise BenchmarkError(
                f"reference caption {i} is empty",
                hint="score only utterances that have a reference descriptor",
            )
        out.append(group)
    return out


def _bleu4(gts: Gts, res: Res) -> tuple[float, list[float]]:
    from pycocoevalcap.bleu.bleu import Bleu

    score, scores = Bleu(4).compute_score(gts, res, verbose=0)
    return float(score[3]), [float(s) for s in scores[3]]


def _meteor(gts: Gts, res: Res) -> tuple[float, list[float]]:
    """METEOR through pycocoevalcap's Java scorer.

    An exception (Ctrl-C, SIGTERM) in the middle of `compute_score` leaves the scorer's lock held,
    and its `__del__` then waits for that lock for ever, so the process would hang as it exits:
    the lock is released and the Java process ended on the way out.
    """
    from pycocoevalcap.meteor.meteor import Meteor

    meteor = Meteor()
    try:
        score, scores = meteor.compute_score(gts, res)
    except BaseException:
        if meteor.lock.locked():
            meteor.lock.release()
        meteor.meteor_p.kill()
        raise
    return float(score), [float(s) for s in scores]


def _rouge_l(gts: Gts, res: Res) -> tuple[float, list[float]]:
    from pycocoevalcap.rouge.rouge import Rouge

    score, scores = Rouge().compute_score(gts, res)
    return float(score), [float(s) for s in scores]


def _cider(gts: Gts, res: Res) -> tuple[float, list[float]]:
    from pycocoevalcap.cider.cider import Cider

    score, scores = Cider().compute_score(gts, res)
    return float(score), [float(s) for s in scores]


def _spice(gts: Gts, res: Res) -> tuple[float, list[float]]:
    """SPICE F-scores. An empty hypothesis has no semantic tuples, so its precision is 0/0 and the
    jar writes NaN; it is scored 0 (it matches nothing) rather than turning the mean into NaN."""
    from pycocoevalcap.spice.spice import Spice

    _, items = Spice().compute_score(gts, res)
    scores = [0.0 if math.isnan(f := item["All"]["f"]) else float(f) for item in items]
    return sum(scores) / len(scores), scores


_SCORERS = {
    "sed.bleu4": _bleu4,
    "sed.meteor": _meteor,
    "sed.rouge_l": _rouge_l,
    "sed.cider": _cider,
    "sed.spice": _spice,
}


def caption_scores(
    refs: Sequence[str | Sequence[str]], hyps: Sequence[str | None], language: Language = "en"
) -> CaptionScores:
    """Score generated descriptors `hyps` against `refs` (one caption or a list per utterance).

    Pass a whole test set in one call: CIDEr weights n-grams by their document frequency over the
    call's references, so its scores (corpus and per utterance) depend on what is scored together.
    """
    references = _references(refs)
    if len(references) != len(hyps):
        raise BenchmarkError(f"{len(references)} reference captions but {len(hyps)} hypotheses")
    if not references:
        raise BenchmarkError("no captions to score")
    status = available_caption_metrics(language)
    if all(reason is not None for reason in status.values()):
        raise BenchmarkError(f"no captioning metric can run here: {status['sed.bleu4']}")

    start = time.perf_counter()
    flat = [*(r for group in references for r in group), *(h or "" for h in hyps)]
    tokens = iter(tokenize_captions(flat, language))
    seconds = {"tokenize": time.perf_counter() - start}
    gts = {i: [next(tokens) for _ in group] for i, group in enumerate(references)}
    res = {i: [next(tokens)] for i in range(len(hyps))}

    corpus: dict[str, float] = {}
    per_utterance: dict[str, list[float]] = {}
    unavailable = {metric: reason for metric, reason in status.items() if reason is not None}
    for metric, scorer in _SCORERS.items():
        if metric in unavailable:
            continue
        start = time.perf_counter()
        try:
            corpus[metric], per_utterance[metric] = scorer(gts, res)
            seconds[metric] = time.perf_counter() - start
        except subprocess.CalledProcessError as err:  # the SPICE jar; its own error went to stderr
            unavailable[metric] = (
                f"{CAPTION_METRICS[metric]} exited with status {err.returncode} (its Java error is printed "
                "above; SPICE 1.0 was built for Java 8 and is reported to fail on Java 17+); "
                "run with Java 8 or 11 on PATH"
            )
    return CaptionScores(corpus, per_utterance, unavailable, seconds)
