"""Which language a text is written in, by script: the one rule the corpus readers (EMOSEC's mixed
captions) and the captioning metrics (a hypothesis in another language than its reference) share."""

from __future__ import annotations

import unicodedata

from benchmark.config import Language


def _is_ideograph(ch: str) -> bool:
    return unicodedata.name(ch, "").startswith(("CJK UNIFIED IDEOGRAPH", "CJK COMPATIBILITY IDEOGRAPH"))


def _is_latin(ch: str) -> bool:
    return ch.isalpha() and unicodedata.name(ch, "").startswith("LATIN")


def detect_language(text: str | None) -> Language | None:
    """The language a caption is written in, by script: "zh" if it has more Han ideographs than
    Latin letters, "en" if it has more Latin letters, None if neither (no letters of either
    script, or as many of each).

    After NFKC, so full-width letters count as Latin. Each ideograph counts one and each Latin
    letter one, so a Mandarin caption with a short English word in it ("语气很平静，OK") stays
    Mandarin, while an English sentence with a Chinese name in it stays English. Other scripts
    (digits, punctuation, kana) are not counted. No vocabulary or model is involved, so the
    result never depends on a library version; the corpus readers use the same rule.
    """
    if not text:
        return None
    text = unicodedata.normalize("NFKC", text)
    han = sum(map(_is_ideograph, text))
    latin = sum(map(_is_latin, text))
    if han > latin:
        return "zh"
    if latin > han:
        return "en"
    return None
