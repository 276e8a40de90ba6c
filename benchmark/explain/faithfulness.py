"""Descriptor faithfulness (`sed.faithfulness`, ours; docs/architecture.md).

Captioning metrics reward wording shared with a reference, not truth about the voice. Here the
pitch, energy, speed and gender claims parsed from a descriptor are checked against the
utterance's measured cues, and the metric is the share of claims that agree. Both sides use one
vocabulary: `low` / `normal` / `high` from `benchmark.data.cues.level` (speaker z-scores, the
demo corpus's rule) and the manifest's `female` / `male`. The extractor maps phrasings onto it
("loudly" -> energy `high`, "a deep voice" -> pitch `low`, ...) and is conservative, since a
wrong parse is charged to the model: negated, two-level and ambiguous phrases ("a low voice")
make no claim. It reads English only.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from benchmark.data.cues import UtteranceCues, batch_cues, descriptor_levels
from benchmark.data.manifest import Utterance
from benchmark.errors import BenchmarkError

ATTRIBUTES = ("pitch", "energy", "speed", "gender")

# Words that give a level to whichever attribute noun they stand next to ("high pitch", "the
# volume is moderate").
_LEVEL_WORDS = {
    "high": "high", "higher": "high", "raised": "high", "elevated": "high",
    "low": "low", "lower": "low",
    "normal": "normal", "medium": "normal", "moderate": "normal", "moderately": "normal",
    "average": "normal", "regular": "normal", "mid": "normal", "middle": "normal",
}  # fmt: skip
_NOUNS = {
    "pitch": ("pitch", "pitched", "f0"),
    "energy": ("volume", "energy", "loudness", "intensity"),
    "speed": ("pace", "paced", "speed", "rate", "tempo"),
}
# Words that carry both the attribute and the level on their own ("loudly", "slow").
_OWN_WORDS = {
    "energy": {
        "loud": "high", "loudly": "high", "louder": "high",
        "quiet": "low", "quietly": "low", "quieter": "low", "soft": "low", "softly": "low",
        "softer": "low", "faint": "low", "whisper": "low", "whispers": "low", "whispering": "low",
    },
    "speed": {
        "fast": "high", "faster": "high", "quick": "high", "quickly": "high", "rapid": "high",
        "rapidly": "high", "hurried": "high", "hurriedly": "high", "brisk": "high", "briskly": "high",
        "slow": "low", "slowly": "low", "slower": "low", "leisurely": "low", "sluggish": "low",
    },
    "pitch": {"shrill": "high"},
}  # fmt: skip
_GENDER_WORDS = {
    "female": "female", "woman": "female", "women": "female", "girl": "female", "lady": "female",
    "she": "female", "her": "female", "hers": "female", "herself": "female",
    "male": "male", "man": "male", "men": "male", "boy": "male", "gentleman": "male", "guy": "male",
    "he": "male", "him": "male", "his": "male", "himself": "male",
}  # fmt: skip
_NEGATORS = {"not", "no", "never", "neither", "nor", "without", "hardly", "barely"}
_FILLERS = ("speaking", "speech", "talking", "vocal", "voice", "overall")  # "normal speaking rate"
_COPULAS = ("is", "was", "are", "were", "remains", "stays", "sounds", "seems", "appears", "becomes", "being")
_ADVERBS = (
    "quite", "very", "rather", "relatively", "fairly", "slightly", "somewhat", "extremely", "pretty",
    "a bit", "a little", "generally", "mostly", "too", "really", "particularly",
)  # fmt: skip


def _alternation(words: Sequence[str]) -> str:
    """A regex alternation of `words`, longest first so that "a little" wins over "a"."""
    return "|".join(sorted(map(re.escape, words), key=len, reverse=True))


def _patterns() -> list[tuple[str, re.Pattern[str], dict[str, str]]]:
    """(attribute, pattern, word -> level) for every phrasing; group `level` holds the level word.

    Noun phrasings: "high pitch", "normal speaking rate" (a filler word between), "pitch is
    high", "the volume is rather low", "speed: fast". Own words: "loudly", "slow". And "a deep
    voice" for a low pitch.
    """
    level, fillers = _alternation(list(_LEVEL_WORDS)), _alternation(_FILLERS)
    link = rf"(?: (?:{_alternation(_COPULAS)})|:)?"
    adverbs = rf"(?:(?:{_alternation(_ADVERBS)}) )*"
    patterns = []
    for attribute, nouns in _NOUNS.items():
        noun = _alternation(nouns)
        patterns.append(
            (attribute, re.compile(rf"\b(?P<level>{level}) (?:(?:{fillers}) )?(?:{noun})\b"), _LEVEL_WORDS)
        )
        patterns.append(
            (attribute, re.compile(rf"\b(?:{noun}){link} {adverbs}(?P<level>{level})\b"), _LEVEL_WORDS)
        )
    for attribute, words in _OWN_WORDS.items():
        patterns.append((attribute, re.compile(rf"\b(?P<level>{_alternation(list(words))})\b"), words))
    deep = {"deep": "low", "deeper": "low"}
    patterns.append(("pitch", re.compile(r"\b(?P<level>deep|deeper) (?:voice|tone|pitch)\b"), deep))
    return patterns


_PATTERNS = _patterns()
_NEITHER_NOR = re.compile(r"\bneither (?:too )?(?P<first>[a-z]+) nor (?:too )?(?P<second>[a-z]+)\b")
_WORD = re.compile(r"[a-z0-9']+")
_CLAUSE_END = re.compile(r"[,;.:!?]")


def _normalise(text: str) -> str:
    """Lower case, hyphens as spaces ("low-pitched" = "low pitched"), single spaces; punctuation
    is kept so that negation does not reach across a clause boundary."""
    text = unicodedata.normalize("NFKC", text).lower().replace("\u2019", "'")
    return " ".join(re.sub(r"[-_\u2010-\u2015]", " ", text).split())


def _negated(text: str, start: int) -> bool:
    """Whether one of the two words before `start`, in the same clause, negates it ("not very
    loud", "isn't fast"); two, not more, so that "who is not angry speaks loudly" stays a claim."""
    clause = _CLAUSE_END.split(text[:start])[-1]
    return any(word in _NEGATORS or word.endswith("n't") for word in _WORD.findall(clause)[-2:])


def _own_word_claim(word: str) -> tuple[str, str] | None:
    """(attribute, level) of a word that says both, such as "fast" or "quiet"."""
    for attribute, words in _OWN_WORDS.items():
        if word in words:
            return attribute, words[word]
    return None


def _level_claims(text: str) -> list[tuple[str, str]]:
    """Every non-negated (attribute, level) phrase of a normalised text, repeats included."""
    claims = [
        (attribute, words[m["level"]])
        for attribute, pattern, words in _PATTERNS
        for m in pattern.finditer(text)
        if not _negated(text, m.start())
    ]
    # "neither fast nor slow": both words are negated above; together they say "normal".
    for m in _NEITHER_NOR.finditer(text):
        first, second = _own_word_claim(m["first"]), _own_word_claim(m["second"])
        if first and second and first[0] == second[0] and first[1] != second[1]:
            claims.append((first[0], "normal"))
    return claims


def descriptor_claims(text: str | None) -> dict[str, str]:
    """The checkable claims of a descriptor: attribute (`pitch`, `energy`, `speed`, `gender`) ->
    level (`low` / `normal` / `high`, or `female` / `male`). An attribute the text does not
    mention, or gives two different levels, is absent. None or "" gives {}.
    """
    if not text:
        return {}
    text = _normalise(text)
    gender = [("gender", _GENDER_WORDS[word]) for word in _WORD.findall(text) if word in _GENDER_WORDS]
    found: dict[str, set[str]] = {}
    for attribute, value in [*_level_claims(text), *gender]:
        found.setdefault(attribute, set()).add(value)
    return {
        attribute: found[attribute].pop() for attribute in ATTRIBUTES if len(found.get(attribute, ())) == 1
    }


def measured_levels_from_cues(
    cues: Sequence[UtteranceCues], speakers: Sequence[str], genders: Sequence[str | None]
) -> list[dict[str, str]]:
    """What can be checked per utterance: the level of each descriptor cue's speaker z-score and
    the gender. A cue that could not be measured (no transcript for the speaking rate, no voiced
    frame) or an unknown gender is absent, so a claim about it is not checked rather than guessed.

    The z-scores are taken over the utterances passed, per speaker, so pass a whole evaluated
    split: a speaker's few utterances in a small subset would make a poor baseline. A corpus
    without speaker ids (one 'unknown' speaker) is thereby normalised over all its utterances.
    """
    if not len(cues) == len(speakers) == len(genders):
        raise BenchmarkError(f"{len(cues)} cue sets, {len(speakers)} speakers and {len(genders)} genders")
    return [
        levels | ({"gender": gender} if gender else {})
        for levels, gender in zip(descriptor_levels(cues, speakers), genders, strict=True)
    ]


def measured_levels(
    rows: Sequence[Utterance], workers: int = 1, progress: bool = False
) -> list[dict[str, str]]:
    """`measured_levels_from_cues` for manifest rows, measuring the cues of their audio (cached by
    content hash, so a second evaluation of the same split reads them from disk)."""
    cues = batch_cues(
        [r.audio for r in rows], [r.transcript for r in rows], workers=workers, progress=progress
    )
    return measured_levels_from_cues(cues, [r.speaker for r in rows], [r.gender for r in rows])


@dataclass(frozen=True)
class FaithfulnessResult:
    """Per-utterance shares and claim counts per attribute.

    `per_utterance[i]` is the share of utterance i's checkable claims that agree, None when its
    descriptor makes none (no descriptor, no claim, or only claims about unmeasured cues).
    """

    per_utterance: list[float | None]
    claims: dict[str, int]  # attribute -> checkable claims made
    agreeing: dict[str, int]  # attribute -> of those, how many agree with the measurement

    @property
    def share(self) -> float | None:
        """Agreeing claims over all claims (None without any claim). Claims are pooled rather than
        per-utterance shares averaged, so that a four-claim descriptor weighs four times a
        one-claim one."""
        total = sum(self.claims.values())
        return sum(self.agreeing.values()) / total if total else None


def faithfulness(
    hyp_descriptors: Sequence[str | None], measured: Sequence[dict[str, str]]
) -> FaithfulnessResult:
    """Check each descriptor's claims against its utterance's `measured` levels (as from
    `measured_levels`); the corpus metric `sed.faithfulness` is `.share`."""
    if len(hyp_descriptors) != len(measured):
        raise BenchmarkError(f"{len(hyp_descriptors)} descriptors but {len(measured)} measurements")
    claims, agreeing = dict.fromkeys(ATTRIBUTES, 0), dict.fromkeys(ATTRIBUTES, 0)
    per_utterance: list[float | None] = []
    for text, truth in zip(hyp_descriptors, measured, strict=True):
        agrees = {
            attribute: value == truth[attribute]
            for attribute, value in descriptor_claims(text).items()
            if attribute in truth
        }
        for attribute, agree in agrees.items():
            claims[attribute] += 1
            agreeing[attribute] += agree
        per_utterance.append(sum(agrees.values()) / len(agrees) if agrees else None)
    return FaithfulnessResult(per_utterance, claims, agreeing)


def faithfulness_scores(
    records: Sequence[Mapping[str, str | None]], utterances: Sequence[Utterance]
) -> dict[str, float]:
    """`sed.faithfulness` of the records that have a reference descriptor, as a metrics dict (empty
    when no descriptor makes a checkable claim: measuring the cues of a new corpus takes a while,
    so it is skipped then). `utterances` are the records' manifest rows."""
    rows = [r for r in records if r["ref_descriptor"]]
    hyps = [r["hyp_descriptor"] for r in rows]
    if not any(descriptor_claims(hyp) for hyp in hyps):
        return {}
    by_id = {u.id: u for u in utterances}
    if missing := [r["id"] for r in rows if r["id"] not in by_id]:
        raise ValueError(f"records without a manifest row, e.g. {missing[:3]}")
    result = faithfulness(hyps, measured_levels([by_id[str(r["id"])] for r in rows]))
    return {} if result.share is None else {"sed.faithfulness": result.share}
