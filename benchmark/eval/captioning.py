"""SED captioning metrics (paper Table 1): BLEU-4, METEOR, ROUGE-L, CIDEr and SPICE.

Scores come from `pycocoevalcap`, so they are computed as caption papers compute theirs; keys are
the MLflow metric names of docs/architecture.md (`sed.bleu4`, ...). Every metric gives a corpus
score and one score per utterance, in input order, for the paired tests. English references use
the PTB tokenizer, Mandarin ones are split into characters (`segment_characters`).
A missing hypothesis, or one in another language than its reference (`sed.language_mismatch`),
is scored as an empty caption, never dropped. With several languages each gets its own scores
(`sed.<lang>.<metric>`) and `sed.<metric>` is their utterance-weighted mean. The Java scorers
start once per call; SPICE without its CoreNLP jars is reported in `CaptionScores.unavailable`,
never as 0. pycocoevalcap is imported lazily so `doctor` can report it missing (docs/design.md).
"""

from __future__ import annotations

import importlib.util
import math
import shutil
import subprocess
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmark.config import LANGUAGES, Language
from benchmark.data.languages import detect_language
from benchmark.errors import BenchmarkError

# The share of hypotheses in another language than their reference (module docstring).
LANGUAGE_MISMATCH = "sed.language_mismatch"
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

    `per_utterance[m][i]` is utterance i's score in input order, for every computed metric and
    `sed.language_mismatch` (1.0 for a mismatched hypothesis, else 0.0). `corpus` has the same
    keys and, when `languages` holds several languages, the per-language keys
    `sed.<lang>.<metric>` (`language_metric`); their utterance scores are those of
    `per_utterance[m]` at the positions of that language. `languages[i]` is the reference language
    utterance i was scored in. `unavailable` maps each metric that was not computed to
    "reason; fix". `seconds` is the wall-clock cost of `tokenize` and of each computed metric
    (a Java scorer's start included), to see where evaluation time goes.
    """

    corpus: dict[str, float]
    per_utterance: dict[str, list[float]]
    unavailable: dict[str, str]
    seconds: dict[str, float]
    languages: tuple[Language, ...] = ()


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


def language_metric(metric: str, language: Language) -> str:
    """The per-language name of a captioning metric: `sed.cider`, "zh" -> `sed.zh.cider`."""
    return f"sed.{language}.{metric.removeprefix('sed.')}"


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


# One scorer call scores every language group of a `caption_scores` call: group k is
# (gts, res) of the utterances of one reference language, and gets its own (corpus, per-utterance)
# result, computed over that group alone.
Group = tuple[Gts, Res]
Result = tuple[float, list[float]]


def _bleu4(groups: Sequence[Group]) -> list[Result]:
    from pycocoevalcap.bleu.bleu import Bleu

    results = []
    for gts, res in groups:
        score, scores = Bleu(4).compute_score(gts, res, verbose=0)
        results.append((float(score[3]), [float(s) for s in scores[3]]))
    return results


def _meteor(groups: Sequence[Group]) -> list[Result]:
    """METEOR through pycocoevalcap's Java scorer, one process for every group (each group is
    one `EVAL` of its own segments, so its corpus score aggregates only them).

    An exception (Ctrl-C, SIGTERM) in the middle of `compute_score` leaves the scorer's lock held,
    and its `__del__` then waits for that lock for ever, so the process would hang as it exits:
    the lock is released and the Java process ended on the way out.
    """
    from pycocoevalcap.meteor.meteor import Meteor

    meteor = Meteor()
    results = []
    try:
        for gts, res in groups:
            score, scores = meteor.compute_score(gts, res)
            results.append((float(score), [float(s) for s in scores]))
    except BaseException:
        if meteor.lock.locked():
            meteor.lock.release()
        meteor.meteor_p.kill()
        raise
    return results


def _in_process(scorer: str) -> Callable[[Sequence[Group]], list[Result]]:
    """A pure-Python pycocoevalcap scorer (`module.Class`), one fresh instance per language group."""

    def score_groups(groups: Sequence[Group]) -> list[Result]:
        module, name = scorer.rsplit(".", 1)
        cls = getattr(importlib.import_module(f"pycocoevalcap.{module}"), name)
        results = []
        for gts, res in groups:
            score, scores = cls().compute_score(gts, res)
            results.append((float(score), [float(s) for s in scores]))
        return results

    return score_groups


def _spice(groups: Sequence[Group]) -> list[Result]:
    """SPICE F-scores. An empty hypothesis has no semantic tuples, so its precision is 0/0 and the
    jar writes NaN; it is scored 0 (it matches nothing) rather than turning the mean into NaN.

    An utterance's SPICE depends on its own captions only and the corpus score is the mean, so
    every group goes through one run of the jar (renumbered) and is split afterwards.
    """
    from pycocoevalcap.spice.spice import Spice

    gts_all: Gts = {}
    res_all: Res = {}
    for gts, res in groups:
        offset = len(gts_all)
        gts_all |= {offset + k: gts[k] for k in range(len(gts))}
        res_all |= {offset + k: res[k] for k in range(len(res))}
    _, items = Spice().compute_score(gts_all, res_all)
    scores = [0.0 if math.isnan(f := item["All"]["f"]) else float(f) for item in items]
    results = []
    start = 0
    for gts, _ in groups:
        mine = scores[start : start + len(gts)]
        results.append((sum(mine) / len(mine), mine))
        start += len(gts)
    return results


_SCORERS = {
    "sed.bleu4": _bleu4,
    "sed.meteor": _meteor,
    "sed.rouge_l": _in_process("rouge.rouge.Rouge"),
    "sed.cider": _in_process("cider.cider.Cider"),
    "sed.spice": _spice,
}


def _reference_languages(language: Language | Sequence[Language], count: int) -> list[Language]:
    languages = [language] * count if isinstance(language, str) else list(language)
    if len(languages) != count:
        raise BenchmarkError(f"{len(languages)} reference languages for {count} reference captions")
    for name in dict.fromkeys(languages):
        _check_language(name)
    return languages


def _availability(languages: Sequence[Language]) -> dict[str, str | None]:
    """`available_caption_metrics` of every language present: a metric runs only if it runs for all
    of them, since `sed.<metric>` covers every utterance."""
    status: dict[str, str | None] = dict.fromkeys(CAPTION_METRICS)
    for language in languages:
        for metric, reason in available_caption_metrics(language).items():
            if reason is not None and status[metric] is None:
                where = "" if len(languages) == 1 else f" (needed for the '{language}' captions)"
                status[metric] = reason + where
    return status


def mismatched(hyps: Sequence[str | None], languages: Sequence[Language]) -> list[bool]:
    """Whether each hypothesis is written in another language than its reference (`detect_language`;
    a missing or script-less hypothesis is no mismatch)."""
    return [
        (found := detect_language(hyp)) is not None and found != language
        for hyp, language in zip(hyps, languages, strict=True)
    ]


def caption_scores(
    refs: Sequence[str | Sequence[str]],
    hyps: Sequence[str | None],
    language: Language | Sequence[Language] = "en",
) -> CaptionScores:
    """Score generated descriptors `hyps` against `refs` (one caption or a list per utterance).

    `language` is the language of every reference, or a sequence with one per utterance; the
    module docstring says how several languages and mismatched hypotheses are scored.

    Pass a whole test set in one call: CIDEr weights n-grams by their document frequency over the
    call's references (of the same language), so its scores (corpus and per utterance) depend on
    what is scored together.
    """
    references = _references(refs)
    if len(references) != len(hyps):
        raise BenchmarkError(f"{len(references)} reference captions but {len(hyps)} hypotheses")
    if not references:
        raise BenchmarkError("no captions to score")
    languages = _reference_languages(language, len(references))
    present = [name for name in LANGUAGES if name in languages]
    status = _availability(present)
    if all(reason is not None for reason in status.values()):
        raise BenchmarkError(f"no captioning metric can run here: {status['sed.bleu4']}")

    wrong = mismatched(hyps, languages)
    scored = ["" if bad or hyp is None else hyp for hyp, bad in zip(hyps, wrong, strict=True)]
    members = {name: [i for i, lang in enumerate(languages) if lang == name] for name in present}
    start = time.perf_counter()
    groups: list[Group] = []
    for name in present:
        flat = [*(r for i in members[name] for r in references[i]), *(scored[i] for i in members[name])]
        tokens = iter(tokenize_captions(flat, name))
        gts = {k: [next(tokens) for _ in references[i]] for k, i in enumerate(members[name])}
        groups.append((gts, {k: [next(tokens)] for k in range(len(members[name]))}))
    seconds = {"tokenize": time.perf_counter() - start}

    corpus: dict[str, float] = {}
    per_utterance: dict[str, list[float]] = {}
    unavailable = {metric: reason for metric, reason in status.items() if reason is not None}
    computed: dict[str, list[Result]] = {}
    for metric, scorer in _SCORERS.items():
        if metric in unavailable:
            continue
        start = time.perf_counter()
        try:
            computed[metric] = scorer(groups)
            seconds[metric] = time.perf_counter() - start
        except subprocess.CalledProcessError as err:  # the SPICE jar; its own error went to stderr
            unavailable[metric] = (
                f"{CAPTION_METRICS[metric]} exited with status {err.returncode} (its Java error is printed "
                "above; SPICE 1.0 was built for Java 8 and is reported to fail on Java 17+); "
                "run with Java 8 or 11 on PATH"
            )
    shares = [float(bad) for bad in wrong]
    computed[LANGUAGE_MISMATCH] = [
        (sum(mine) / len(mine), mine) for mine in ([shares[i] for i in members[name]] for name in present)
    ]
    for metric, results in computed.items():
        values = [0.0] * len(references)
        for name, (_, items) in zip(present, results, strict=True):
            for i, value in zip(members[name], items, strict=True):
                values[i] = value
        per_utterance[metric] = values
        if len(present) == 1:
            corpus[metric] = results[0][0]
            continue
        total = 0.0
        for name, (score, _) in zip(present, results, strict=True):
            corpus[language_metric(metric, name)] = score
            total += len(members[name]) * score
        corpus[metric] = total / len(references)
    return CaptionScores(corpus, per_utterance, unavailable, seconds, tuple(languages))
