from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from benchmark.data.languages import detect_language
from benchmark.errors import BenchmarkError
from benchmark.eval.captioning import (
    CORENLP_JARS,
    LANGUAGE_MISMATCH,
    CaptionScores,
    caption_scores,
    language_metric,
    segment_characters,
    tokenize_captions,
)

REFS = [
    "A female speaker with a high pitch and a loud voice speaks quickly, sounding angry.",
    [
        "The male speaker talks slowly with a low pitch and a quiet voice; the tone is sad.",
        "A man speaks slowly and quietly, sounding sad.",
    ],
    "Speaking at a normal pace with a normal pitch, the female speaker sounds neutral.",
    "A male speaker with a high pitch speaks quickly, sounding happy.",
    "The woman's voice is soft and slow.",
]
HYPS = [
    "A female speaker with a high pitch and a loud voice speaks quickly, sounding angry.",
    "A man speaks slowly with a low pitch, sounding sad.",
    None,  # no descriptor: scored as an empty caption
    "The male speaker talks quickly with a high pitch; the tone is happy.",
    "A woman speaks softly and slowly.",
]
PACKAGE = Path(next(iter(importlib.util.find_spec("pycocoevalcap").submodule_search_locations)))
SPICE_LIB = PACKAGE / "spice" / "lib"
SPICE_JARS_PRESENT = all((SPICE_LIB / jar).is_file() for jar in CORENLP_JARS)


def direct_scores(gts: dict, res: dict, meteor: Meteor | None) -> dict[str, tuple[float, list[float]]]:
    """pycocoevalcap's scorers called as its own COCO evaluation calls them."""
    bleu, bleu_items = Bleu(4).compute_score(gts, res, verbose=0)
    scores = {
        "sed.bleu4": (bleu[3], bleu_items[3]),
        "sed.rouge_l": Rouge().compute_score(gts, res),
        "sed.cider": Cider().compute_score(gts, res),
    }
    if meteor is not None:
        scores["sed.meteor"] = meteor.compute_score(gts, res)
    return {metric: (float(score), [float(s) for s in items]) for metric, (score, items) in scores.items()}


@pytest.fixture(scope="module")
def scored() -> tuple[CaptionScores, dict, list[str]]:
    """One English `caption_scores` call, the Java programs it started, and pycocoevalcap's scorers
    called directly on the PTB-tokenised pairs. METEOR's loading takes seconds, so the direct call
    reuses the METEOR process of `caption_scores`, kept alive by holding its scorer."""
    launches: list[str] = []
    meteors: list[Meteor] = []
    popen, meteor_init = subprocess.Popen, Meteor.__init__

    def counting_popen(cmd, *args, **kwargs):
        if cmd[0] == "java":
            launches.append(next(part for part in cmd if part.endswith(".jar")))
        return popen(cmd, *args, **kwargs)

    def kept_meteor_init(self: Meteor) -> None:
        meteor_init(self)
        meteors.append(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess, "Popen", counting_popen)
        patch.setattr(Meteor, "__init__", kept_meteor_init)
        result = caption_scores(REFS, HYPS)
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize(
        {i: [{"caption": r} for r in ([ref] if isinstance(ref, str) else ref)] for i, ref in enumerate(REFS)}
    )
    res = tokenizer.tokenize({i: [{"caption": hyp or ""}] for i, hyp in enumerate(HYPS)})
    (meteor,) = meteors
    return result, direct_scores(gts, res, meteor), launches


def test_scores_equal_pycocoevalcap_on_the_same_tokens(scored):
    result, direct, _ = scored
    spice = {"sed.spice"} if SPICE_JARS_PRESENT else set()
    assert set(result.corpus) == set(direct) | spice | {LANGUAGE_MISMATCH}
    assert result.corpus[LANGUAGE_MISMATCH] == 0.0 and result.languages == ("en",) * len(REFS)
    for metric, (corpus, items) in direct.items():
        assert result.corpus[metric] == pytest.approx(corpus, rel=1e-12), metric
        assert result.per_utterance[metric] == pytest.approx(items, rel=1e-12), metric
    assert result.per_utterance["sed.rouge_l"][0] == pytest.approx(1.0)  # the identical pair


def test_missing_hypothesis_is_scored_as_empty_not_dropped(scored):
    result, _, _ = scored
    for metric, items in result.per_utterance.items():
        assert len(items) == len(HYPS), metric
        assert items[2] == pytest.approx(0.0, abs=1e-9), metric


def test_each_java_program_starts_once_per_call(scored):
    _, _, launches = scored
    assert "meteor-1.5.jar" in launches and "stanford-corenlp-3.4.1.jar" in launches  # METEOR, PTB tokenizer
    assert len(launches) == len(set(launches)), launches


@pytest.mark.skipif(SPICE_JARS_PRESENT, reason="the Stanford CoreNLP jars are installed here")
def test_spice_is_reported_unavailable_with_reason_and_fix(scored):
    result, _, _ = scored
    assert "sed.spice" not in result.corpus and "sed.spice" not in result.per_utterance
    reason = result.unavailable["sed.spice"]
    assert "stanford-corenlp-3.6.0.jar" in reason and str(SPICE_LIB) in reason and "; copy" in reason


def test_captions_with_line_breaks_stay_on_their_utterance():
    # The PTB tokenizer also breaks lines at \r and \u2028, which would shift later captions.
    assert tokenize_captions(["First one.", "x\u2028y\rz", "third"]) == ["first one", "x y z", "third"]


def test_mandarin_is_segmented_into_characters():
    assert segment_characters("一位女性，语速很快！ 音量ＨＩ") == "一 位 女 性 语 速 很 快 音 量 h i"
    assert tokenize_captions(["说话 很慢。"], language="zh") == ["说 话 很 慢"]


def test_mandarin_scores_without_java(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no java: the Python metrics still run on characters
    refs, hyps = ["一位女性，语速很快。", "男性说话很慢"], ["一位女性语速很慢", None]
    result = caption_scores(refs, hyps, language="zh")
    gts = {i: [segment_characters(r)] for i, r in enumerate(refs)}
    res = {i: [segment_characters(h or "")] for i, h in enumerate(hyps)}
    for metric, (corpus, items) in direct_scores(gts, res, meteor=None).items():
        assert result.corpus[metric] == pytest.approx(corpus, rel=1e-12)
        assert result.per_utterance[metric] == pytest.approx(items, rel=1e-12)
    assert set(result.unavailable) == {"sed.meteor", "sed.spice"}
    assert all("Java not found" in reason for reason in result.unavailable.values())


def test_english_without_java_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BenchmarkError, match="Java not found"):
        caption_scores(["a loud voice"], ["a quiet voice"])


def test_bad_inputs_are_clear_errors():
    with pytest.raises(BenchmarkError, match="2 reference captions but 1 hypotheses"):
        caption_scores(["a", "b"], ["a"])
    with pytest.raises(BenchmarkError, match="reference caption 1 is empty"):
        caption_scores(["a", " "], ["a", "b"])
    with pytest.raises(BenchmarkError, match="reference caption 0 is empty"):
        caption_scores([[]], ["a"])
    with pytest.raises(BenchmarkError, match="unknown caption language"):
        caption_scores(["a"], ["a"], language="fr")


# ---------------------------------------------------------------------------------------------
# Languages: each utterance scored in its reference's language, mismatches counted
# ---------------------------------------------------------------------------------------------


def test_language_is_detected_by_script():
    assert detect_language("说话人语气低沉，语速缓慢") == "zh"
    assert detect_language("A man speaks slowly and quietly.") == "en"
    assert detect_language("语气很平静，OK") == "zh"  # 5 ideographs, 2 Latin letters
    assert detect_language("The speaker 王芳 sounds calm") == "en"
    assert detect_language("ＨＥＬＬＯ") == "en"  # full-width Latin letters are Latin
    assert detect_language("……123!") is None and detect_language("") is None and detect_language(None) is None
    assert detect_language("ok好的") is None  # as many of each: undecided


# A Mandarin reference that shares Latin letters with an English hypothesis: scored as characters,
# the English sentence would match "h a p p y" and earn a non-zero BLEU-4.
ZH_REFS = ["她的语气很 happy，语速正常", "男性说话很慢，显得伤心", "语气平静，音量适中"]
ZH_HYPS = ["She sounds happy and speaks at a normal pace", "男性说话很慢，显得难过", None]


def test_english_hypothesis_of_a_mandarin_reference_is_a_mismatch_not_characters():
    gts = {i: [segment_characters(r)] for i, r in enumerate(ZH_REFS)}
    old = {i: [segment_characters(h or "")] for i, h in enumerate(ZH_HYPS)}  # the old character scoring
    old_scores = direct_scores(gts, old, meteor=None)
    assert old_scores["sed.bleu4"][1][0] > 0 and old_scores["sed.rouge_l"][1][0] > 0

    result = caption_scores(ZH_REFS, ZH_HYPS, language="zh")
    assert result.per_utterance[LANGUAGE_MISMATCH] == [1.0, 0.0, 0.0]
    assert result.corpus[LANGUAGE_MISMATCH] == pytest.approx(1 / 3)
    for metric in ("sed.bleu4", "sed.rouge_l", "sed.cider", "sed.meteor"):
        assert result.per_utterance[metric][0] == 0.0, metric
    # scored exactly as an empty (missing) caption, and that is counted, not dropped
    silent = caption_scores(ZH_REFS, [None, *ZH_HYPS[1:]], language="zh")
    assert silent.corpus[LANGUAGE_MISMATCH] == 0.0
    for metric, items in silent.per_utterance.items():
        if metric != LANGUAGE_MISMATCH:
            assert result.per_utterance[metric] == pytest.approx(items, rel=1e-12), metric
            assert result.corpus[metric] == pytest.approx(silent.corpus[metric], rel=1e-12), metric
    new = {i: [segment_characters(h or "")] for i, h in enumerate([None, *ZH_HYPS[1:]])}
    assert result.corpus["sed.bleu4"] == pytest.approx(
        direct_scores(gts, new, None)["sed.bleu4"][0], rel=1e-12
    )
    assert result.corpus["sed.bleu4"] < old_scores["sed.bleu4"][0]


def test_mandarin_hypothesis_of_an_english_reference_is_a_mismatch():
    result = caption_scores(["A calm voice.", "A loud voice."], ["平静的声音", "a loud voice"])
    assert result.per_utterance[LANGUAGE_MISMATCH] == [1.0, 0.0]
    assert result.per_utterance["sed.rouge_l"][0] == 0.0 and result.per_utterance["sed.rouge_l"][1] == 1.0


# EMOSEC-like: Mandarin and English captions in one test set, in mixed order.
MIXED_REFS = [
    "说话人语气低沉，语速缓慢，显得伤心",
    "A woman speaks quickly in a loud, angry voice.",
    ["语气平静，语速正常", "声音平稳，情绪平静"],
    "A man speaks slowly with a low pitch, sounding sad.",
    "声音响亮，情绪激动",
    "The female speaker sounds happy and talks fast.",
]
MIXED_HYPS = [
    "说话人语气低沉，显得难过",
    "A woman speaks loudly and angrily.",
    "The speaker sounds calm.",  # English for a Mandarin reference: a mismatch
    None,
    "声音很响亮，情绪激动",
    "A happy woman talks quickly.",
]
MIXED_LANGUAGES = ["zh", "en", "zh", "en", "zh", "en"]


@pytest.fixture(scope="module")
def mixed() -> tuple[CaptionScores, list[str]]:
    launches: list[str] = []
    popen = subprocess.Popen

    def counting_popen(cmd, *args, **kwargs):
        if cmd[0] == "java":
            launches.append(next(part for part in cmd if part.endswith(".jar")))
        return popen(cmd, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess, "Popen", counting_popen)
        result = caption_scores(MIXED_REFS, MIXED_HYPS, MIXED_LANGUAGES)
    return result, launches


def test_mixed_corpus_scores_each_language_on_its_own_utterances(mixed):
    result, _ = mixed
    groups = {"en": [1, 3, 5], "zh": [0, 2, 4]}
    refs = [[r] if isinstance(r, str) else r for r in MIXED_REFS]
    tokenizer = PTBTokenizer()
    meteor = Meteor()
    direct = {
        "en": direct_scores(
            tokenizer.tokenize({k: [{"caption": r} for r in refs[i]] for k, i in enumerate(groups["en"])}),
            tokenizer.tokenize({k: [{"caption": MIXED_HYPS[i] or ""}] for k, i in enumerate(groups["en"])}),
            meteor,
        ),
        "zh": direct_scores(  # the English hypothesis of utterance 2 is scored as an empty caption
            {k: [segment_characters(r) for r in refs[i]] for k, i in enumerate(groups["zh"])},
            {
                k: [segment_characters("" if i == 2 else MIXED_HYPS[i] or "")]
                for k, i in enumerate(groups["zh"])
            },
            meteor,
        ),
    }
    assert result.languages == tuple(MIXED_LANGUAGES)
    for language, members in groups.items():
        for metric, (corpus, items) in direct[language].items():
            assert result.corpus[language_metric(metric, language)] == pytest.approx(corpus, rel=1e-9), metric
            mine = [result.per_utterance[metric][i] for i in members]
            assert mine == pytest.approx(items, rel=1e-9), (language, metric)
    for metric in direct["en"]:  # the whole set: the utterance-weighted mean of the languages (3 + 3)
        expected = (direct["en"][metric][0] + direct["zh"][metric][0]) / 2
        assert result.corpus[metric] == pytest.approx(expected, rel=1e-9), metric
    assert result.per_utterance[LANGUAGE_MISMATCH] == [0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    assert result.corpus[LANGUAGE_MISMATCH] == pytest.approx(1 / 6)
    assert result.corpus["sed.zh.language_mismatch"] == pytest.approx(1 / 3)
    assert result.corpus["sed.en.language_mismatch"] == 0.0
    # the averaging metrics: the whole-set score is the mean of the utterance scores, as with one language
    for metric in ("sed.rouge_l", "sed.cider"):
        assert result.corpus[metric] == pytest.approx(sum(result.per_utterance[metric]) / 6, rel=1e-12)


def test_mixed_corpus_starts_each_java_program_once(mixed):
    _, launches = mixed
    assert "meteor-1.5.jar" in launches and "stanford-corenlp-3.4.1.jar" in launches
    assert len(launches) == len(set(launches)), launches


def test_one_language_has_no_per_language_keys():
    result = caption_scores(["语气平静"], ["语气平静"], language=["zh"])
    assert not any(key.startswith(("sed.zh.", "sed.en.")) for key in result.corpus)


def test_reference_languages_are_checked():
    with pytest.raises(BenchmarkError, match="1 reference languages for 2 reference captions"):
        caption_scores(["a", "b"], ["a", "b"], language=["en"])
    with pytest.raises(BenchmarkError, match="unknown caption language 'de'"):
        caption_scores(["a", "b"], ["a", "b"], language=["en", "de"])
