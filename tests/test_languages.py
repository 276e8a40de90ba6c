"""The reference language, from the manifest row to the logged record and the scores of a run.

EMOSEC mixes Mandarin and English captions: each utterance is scored in its reference's language,
and a hypothesis in the other language is counted in `sed.language_mismatch` (and scored as an
empty caption), never split into characters.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from benchmark.data.manifest import Utterance
from benchmark.data.records import PredictionRecord, read_records, write_records
from benchmark.errors import BenchmarkError
from benchmark.eval.captioning import caption_scores
from benchmark.eval.predict import RECORD_FIELDS, score_records
from benchmark.eval.stats import MetricUnavailable
from benchmark.registry import load_dataset_card
from benchmark.workflows.compare import EvaluatedRun

# id, reference caption, hypothesis, the manifest row's language (None: a manifest written before)
ROWS = [
    ("emosec_a", "说话人语气平静，语速正常", "语气平静，语速正常", "zh"),
    ("emosec_b", "The speaker sounds calm and relaxed.", "The speaker sounds calm.", "en"),
    ("emosec_c", "声音响亮，情绪激动", "An angry shout.", "zh"),  # an English caption of Mandarin
    ("emosec_d", "A happy tone, bright and lively.", "A happy tone.", "en"),
    ("emosec_e", "语调低沉，显得伤心", "语调低沉", None),
]
SYSTEM = SimpleNamespace(targets=["descriptor"])


def utterance(uid: str, caption: str, language: str | None) -> Utterance:
    return Utterance(
        id=uid, audio=f"/a/{uid}.wav", duration=1.0, transcript=None, emotion=None, descriptor=caption,
        speaker="unknown", gender=None, group="tx_emotion", dataset="emosec", language=language,
    )  # fmt: skip


def prediction(uid: str, caption: str, hyp: str) -> dict[str, str | None]:
    """A record as `predict` returns it: `language` still None."""
    values = dict.fromkeys(RECORD_FIELDS) | {"id": uid, "ref_descriptor": caption, "hyp_descriptor": hyp}
    return values | {"raw_output": f"[ser_sed] Descriptor: {hyp}"}


@pytest.fixture(scope="module")
def scored() -> tuple[list[dict[str, str | None]], dict[str, float]]:
    records = [prediction(uid, ref, hyp) for uid, ref, hyp, _ in ROWS]
    rows = [utterance(uid, ref, lang) for uid, ref, _, lang in ROWS]
    return records, score_records(records, load_dataset_card("emosec"), SYSTEM, rows)


def test_score_records_fills_the_reference_language_of_the_logged_records(scored):
    records, _ = scored
    # the rows' languages; a row without one has the card's (zh)
    assert [r["language"] for r in records] == ["zh", "en", "zh", "en", "zh"]
    logged = [PredictionRecord(**r) for r in records]  # as experiment.py and zero_shot.py log them
    assert [r.language for r in logged] == ["zh", "en", "zh", "en", "zh"]


def test_mixed_corpus_metrics_per_language_and_mismatch_counted(scored):
    _, scores = scored
    assert scores["sed.language_mismatch"] == pytest.approx(1 / 5)
    assert scores["sed.zh.language_mismatch"] == pytest.approx(1 / 3)
    assert scores["sed.en.language_mismatch"] == 0.0
    metrics = ("bleu4", "rouge_l", "cider", "meteor")
    assert {f"sed.{lang}.{m}" for lang in ("en", "zh") for m in metrics} <= set(scores)
    # each language alone, the mismatched English caption of Mandarin scored as an empty one
    zh = caption_scores([ROWS[0][1], ROWS[2][1], ROWS[4][1]], [ROWS[0][2], None, ROWS[4][2]], "zh")
    en = caption_scores([ROWS[1][1], ROWS[3][1]], [ROWS[1][2], ROWS[3][2]], "en")
    for m in metrics:
        assert scores[f"sed.zh.{m}"] == pytest.approx(zh.corpus[f"sed.{m}"], rel=1e-9), m
        assert scores[f"sed.en.{m}"] == pytest.approx(en.corpus[f"sed.{m}"], rel=1e-9), m
        assert scores[f"sed.{m}"] == pytest.approx(
            (3 * zh.corpus[f"sed.{m}"] + 2 * en.corpus[f"sed.{m}"]) / 5
        )


def test_records_keep_their_language_through_the_records_file(scored, tmp_path):
    records, _ = scored
    path = tmp_path / "pooled.jsonl"
    write_records(path, [PredictionRecord(**r) for r in records])
    assert [r.language for r in read_records(path)] == ["zh", "en", "zh", "en", "zh"]
    old = {k: v for k, v in records[0].items() if k != "language"}  # a record written before
    path.write_text(json.dumps(old) + "\n", encoding="utf-8")
    assert read_records(path)[0].language is None


def fake_run(dataset: str) -> SimpleNamespace:
    return SimpleNamespace(
        info=SimpleNamespace(run_id="f" * 32),
        data=SimpleNamespace(
            tags={"dataset": dataset, "system": "full"}, params={"targets": '["descriptor"]'}
        ),
    )


def test_evaluated_run_scores_each_language(scored):
    records, scores = scored
    run = EvaluatedRun(fake_run("emosec"), [PredictionRecord(**r) for r in records])
    assert run.languages == ["en", "zh"]
    zh = run.scores("sed.zh.rouge_l")
    assert zh.ids == ("emosec_a", "emosec_c", "emosec_e") and zh.value == pytest.approx(
        scores["sed.zh.rouge_l"]
    )
    assert zh.values[1] == 0.0  # the mismatched English caption
    mismatch = run.scores("sed.language_mismatch")
    assert mismatch.values.tolist() == [0.0, 0.0, 1.0, 0.0, 0.0]
    assert run.scores("sed.bleu4").value == pytest.approx(scores["sed.bleu4"])


def test_old_records_are_scored_in_the_corpus_language():
    records = [
        PredictionRecord(**(prediction(uid, ref, hyp) | {"language": None}))
        for uid, ref, hyp, lang in ROWS
        if lang != "en"
    ]
    run = EvaluatedRun(fake_run("emosec"), records)
    assert run.languages == ["zh"]
    assert run.scores("sed.language_mismatch").values.tolist() == [0.0, 1.0, 0.0]
    with pytest.raises(MetricUnavailable, match=r"all in 'zh'; use sed\.cider"):
        run.scores("sed.zh.cider")
    with pytest.raises(BenchmarkError, match="unknown metric"):
        run.scores("sed.fr.cider")
