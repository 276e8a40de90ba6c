"""Per-utterance scores, paired tests, bootstrap intervals and Holm's correction."""

from __future__ import annotations

from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.stats import norm, ttest_rel
from statsmodels.stats.multitest import multipletests

from benchmark.data.records import PredictionRecord
from benchmark.errors import BenchmarkError
from benchmark.eval.captioning import caption_scores
from benchmark.eval.metrics import UtteranceScores, asr_scores, ser_scores
from benchmark.eval.stats import (
    METRICS,
    MetricUnavailable,
    bootstrap_ci,
    caption_utterance_scores,
    cluster_bootstrap,
    effect_size,
    holm,
    metric_spec,
    minimum_detectable_difference,
    paired_t_test,
    paired_test,
    per_utterance_scores,
    with_holm,
)


def record(utt: str, ref: str | None = None, hyp: str | None = None, **fields) -> PredictionRecord:
    values = dict.fromkeys(PredictionRecord.model_fields) | {
        "id": utt,
        "ref_emotion": ref,
        "hyp_emotion": hyp,
    }
    return PredictionRecord(**(values | fields))


# 4 angry, 2 happy, 4 sad references; one None and one off-label answer (as in test_metrics).
REFS = ["angry"] * 4 + ["happy"] * 2 + ["sad"] * 4
HYPS = ["angry", "angry", "sad", None, "happy", "bored", "sad", "sad", "sad", "happy"]
RECORDS = [record(f"u{i}", ref, hyp) for i, (ref, hyp) in enumerate(zip(REFS, HYPS, strict=True))]


def test_ua_scores_average_to_ua_by_hand():
    scores = per_utterance_scores("ser.ua", RECORDS)
    # UA = (2/4 + 1/2 + 3/4) / 3 = 7/12; a correct angry answer weighs 10 / (3 * 4)
    assert scores.mean == pytest.approx(float(Fraction(7, 12)))
    assert scores.values[0] == pytest.approx(10 / 12) and scores.values[2] == 0
    assert scores.mean == pytest.approx(ser_scores(REFS, HYPS, ["angry", "happy", "sad"]).corpus["ser.ua"])
    assert per_utterance_scores("ser.wa", RECORDS).mean == pytest.approx(0.6)


def test_scores_over_folds_average_to_the_fold_mean():
    records = [
        *(
            record(f"a{i}", ref, hyp, fold="1")
            for i, (ref, hyp) in enumerate([("sad", "sad"), ("happy", "sad")])
        ),
        *(record(f"b{i}", "sad", hyp, fold="2") for i, hyp in enumerate(["sad", "sad", "happy", "happy"])),
    ]
    # fold 1: UA (1 + 0) / 2 = 1/2; fold 2 (sad only): UA 2/4; pooled UA would be (3/5 + 0) / 2
    assert per_utterance_scores("ser.ua", records).mean == pytest.approx(0.5)
    # WA: fold 1 1/2, fold 2 2/4 -> 1/2
    assert per_utterance_scores("ser.wa", records).mean == pytest.approx(0.5)


def test_wer_scores_average_to_corpus_wer_by_hand():
    refs = ["the cat sat", "hello there", "", "a b c d"]
    hyps = ["the cat sat down", None, "noise", "a x c"]
    records = [
        record(f"u{i}", ref_transcript=ref, hyp_transcript=hyp)
        for i, (ref, hyp) in enumerate(zip(refs, hyps, strict=True))
    ]
    scores = per_utterance_scores("asr.wer", records)
    # edits 1 (insertion), 2 (deletions), 2 (substitution, deletion) over 3 + 2 + 4 words; the empty reference
    # has no words to be wrong about and is left out, as in asr_scores
    assert scores.ids == ("u0", "u1", "u3")
    assert scores.mean == pytest.approx(5 / 9)
    assert scores.mean == pytest.approx(asr_scores(refs, hyps).corpus["asr.wer"])


def test_t_test_is_scipys_one_sided_paired_test():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.6, 0.2, 50), rng.normal(0.5, 0.2, 50)
    assert paired_t_test(a, b, higher_is_better=True) == ttest_rel(a, b, alternative="greater").pvalue
    assert paired_t_test(a, b, higher_is_better=False) == ttest_rel(a, b, alternative="less").pvalue
    assert paired_t_test(a, a.copy(), higher_is_better=True) == 1.0  # scipy: NaN


def test_holm_is_statsmodels_holm():
    p = [0.01, 0.04, 0.03, 0.2, 0.005]
    assert holm(p) == pytest.approx(list(multipletests(p, method="holm")[1]))
    assert holm([]) == []


def test_paired_test_pairs_by_id_and_uses_the_metric_direction():
    rng = np.random.default_rng(2)
    ids = tuple(f"u{i}" for i in range(30))
    errors_a, errors_b = rng.poisson(1.0, 30).astype(float), rng.poisson(2.0, 30).astype(float)
    a = UtteranceScores("asr.wer", ids, errors_a)
    b = UtteranceScores("asr.wer", ids[::-1], errors_b[::-1])  # another order: pairing is by id
    test = paired_test(a, b, n_resamples=500)
    assert test.p == ttest_rel(errors_a, errors_b, alternative="less").pvalue  # fewer errors is better
    assert test.diff == pytest.approx(errors_a.mean() - errors_b.mean())
    assert test.ci[0] <= test.diff <= test.ci[1]
    assert paired_test(a, b, n_resamples=500) == test  # the bootstrap seed is fixed
    (corrected,) = with_holm([test])
    assert corrected.p_holm == pytest.approx(test.p)


def test_bootstrap_interval_narrows_with_more_utterances():
    rng = np.random.default_rng(3)
    small, large = rng.normal(0.1, 1, 20), rng.normal(0.1, 1, 2000)
    width = [np.subtract(*bootstrap_ci(d, 1000)[::-1]) for d in (small, large)]
    assert width[1] < width[0] / 3


def loop_cluster_bootstrap(differences, clusters, replicates, n_resamples, seed):
    """`cluster_bootstrap` written out as documented, one resample at a time: draw the clusters and
    the replicate labels (floor(k u), from the two children of the seed), list the observations of
    each drawn cluster with each drawn label, and take their mean."""
    cluster_rng, label_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    names, labels = list(dict.fromkeys(clusters)), list(dict.fromkeys(replicates))
    means = []
    for _ in range(n_resamples):
        chosen = [names[int(len(names) * u)] for u in cluster_rng.random(len(names))]
        picked = [labels[int(len(labels) * u)] for u in label_rng.random(len(labels))]
        resample = [
            d
            for name in chosen
            for label in picked
            for d, c, r in zip(differences, clusters, replicates, strict=True)
            if (c, r) == (name, label)
        ]
        if resample:
            means.append(sum(resample) / len(resample))
    return means


def test_cluster_bootstrap_is_the_documented_resampling_written_as_a_loop():
    differences = [0.5, -1.0, 0.25, 2.0, 0.0, 1.5, -0.5, 1.0, 3.0]
    speakers = ["a", "b", "a", "c", "b", "c", "d", "a", "d"]
    folds = ["1", "1", "1", "2", "1", "2", "2", "1", "2"]  # speakers nested in folds, as in CV
    result = cluster_bootstrap(np.array(differences), speakers, folds, n_resamples=300, seed=7)
    means = loop_cluster_bootstrap(differences, speakers, folds, 300, 7)
    # a resample with no observation (no drawn speaker in a drawn fold) is left out: 8 here
    assert len(means) == 292
    assert result.ci == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])), rel=1e-12)
    assert result.se == pytest.approx(np.std(means, ddof=1), rel=1e-12)
    assert (result.clusters, result.replicates) == (4, 2)
    # one replicate label is no replicate resampling: the speakers alone
    alone = loop_cluster_bootstrap(differences, speakers, ["1"] * 9, 300, 7)
    assert cluster_bootstrap(np.array(differences), speakers, ["1"] * 9, n_resamples=300, seed=7).ci == (
        pytest.approx(tuple(np.quantile(alone, [0.025, 0.975])), rel=1e-12)
    )


def test_utterance_bootstrap_is_the_cluster_bootstrap_with_one_utterance_per_cluster():
    d = np.random.default_rng(4).normal(0.1, 1, 1000)
    plain = cluster_bootstrap(d, n_resamples=4000)
    assert plain.ci == cluster_bootstrap(d, [f"u{i}" for i in range(1000)], n_resamples=4000).ci
    assert bootstrap_ci(d, 4000) == plain.ci
    # the bootstrap standard error of a mean of independent values is std / sqrt(n)
    assert plain.se == pytest.approx(d.std(ddof=1) / np.sqrt(1000), rel=0.05)
    assert (plain.clusters, plain.replicates) == (1000, 1)
    nothing = cluster_bootstrap(d, ["one speaker"] * 1000)
    assert np.isnan(nothing.se) and np.isnan(nothing.ci[0]) and nothing.clusters == 1


def simulated(
    seed: int, speaker_sd: float, fold_sd: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(differences, speaker, fold) of 40 speakers x 25 utterances, each utterance in one of 5 folds:
    a speaker offset (sd `speaker_sd`), a fold offset (sd `fold_sd`) and utterance noise (sd 0.3)."""
    rng = np.random.default_rng(seed)
    speaker, fold = np.repeat(np.arange(40), 25), rng.integers(0, 5, 1000)
    offsets = rng.normal(0, speaker_sd, 40)[speaker] + rng.normal(0, fold_sd, 5)[fold]
    return 0.05 + offsets + rng.normal(0, 0.3, 1000), speaker, fold


def width(result) -> float:
    return result.ci[1] - result.ci[0]


def test_a_planted_speaker_effect_widens_the_cluster_interval():
    d, speaker, _ = simulated(0, speaker_sd=0.3)
    utterances, speakers = cluster_bootstrap(d), cluster_bootstrap(d, speaker)
    assert width(speakers) > 2.5 * width(utterances)  # 3.6x here; the design effect is about 3.7
    # ... and its standard error is that of the mean of 40 speaker means
    speaker_means = [d[speaker == k].mean() for k in range(40)]
    assert speakers.se == pytest.approx(np.std(speaker_means, ddof=1) / np.sqrt(40), rel=0.15)


def test_without_clustering_the_intervals_are_equal_in_expectation():
    ratios = []
    for seed in range(50):
        d, speaker, _ = simulated(seed, speaker_sd=0.0)
        ratios.append(
            width(cluster_bootstrap(d, speaker, n_resamples=1000, seed=seed))
            / width(cluster_bootstrap(d, n_resamples=1000, seed=seed))
        )
    # 0.98 here (sd of one ratio 0.12, so of the mean 0.017; other seeds give 0.98 to 1.00)
    assert 0.9 < np.mean(ratios) < 1.1


def test_a_planted_fold_effect_widens_the_interval_when_folds_are_resampled():
    d, speaker, fold = simulated(1, speaker_sd=0.1, fold_sd=0.3)
    speakers, crossed = cluster_bootstrap(d, speaker), cluster_bootstrap(d, speaker, fold)
    assert crossed.replicates == 5 and speakers.replicates == 1
    assert width(crossed) > 2 * width(speakers)  # 6x here


def test_effect_size_and_minimum_detectable_difference():
    d = np.random.default_rng(5).normal(-0.2, 0.5, 200)
    assert effect_size(d) == pytest.approx(d.mean() / np.std(d, ddof=1))
    assert effect_size(np.full(10, 0.3)) == 0.0
    assert minimum_detectable_difference(0.01, 0.05) == pytest.approx((norm.ppf(0.95) + norm.ppf(0.8)) * 0.01)
    assert minimum_detectable_difference(0.01, 0.05) == pytest.approx(0.0248, abs=1e-4)
    assert minimum_detectable_difference(0.01, 0.01, power=0.9) == pytest.approx(
        (norm.ppf(0.99) + norm.ppf(0.9)) * 0.01
    )


def test_paired_test_clusters_by_speaker_and_resamples_folds():
    d, speaker, fold = simulated(2, speaker_sd=0.3)
    ids = tuple(f"u{i}" for i in range(1000))
    a, b = UtteranceScores("ser.ua", ids, 0.5 + d), UtteranceScores("ser.ua", ids, np.full(1000, 0.5))
    speakers = {utt: f"s{k}" for utt, k in zip(ids[:990], speaker[:990], strict=True)}  # 10 have none
    folds = {utt: str(f) for utt, f in zip(ids, fold, strict=True)}
    plain = paired_test(a, b, n_resamples=500)
    assert plain.cluster_ci == plain.ci and plain.clusters == 1000 and plain.replicates == 1
    test = paired_test(a, b, n_resamples=500, speakers=speakers, alpha=0.01)
    assert (test.clusters, test.replicates, test.unclustered) == (40 + 10, 1, 10)
    assert (test.ci, test.p, test.diff) == (plain.ci, plain.p, plain.diff)  # the t-test is unchanged
    assert width(SimpleNamespace(ci=test.cluster_ci)) > 2 * width(SimpleNamespace(ci=test.ci))
    assert test.effect_size == pytest.approx(d.mean() / np.std(d, ddof=1))
    assert test.mde == pytest.approx((norm.ppf(0.99) + norm.ppf(0.8)) * test.cluster_se)
    crossed = paired_test(a, b, n_resamples=500, speakers=speakers, replicates=folds)
    assert crossed.replicates == 5 and crossed.ci == test.ci
    assert paired_test(a, b, n_resamples=500, speakers=speakers, replicates=folds) == crossed  # seeded


def test_different_utterance_sets_are_refused_with_both_names():
    a = per_utterance_scores("ser.ua", RECORDS)
    b = per_utterance_scores("ser.ua", [*RECORDS[:-2], record("x1", "sad", "sad")])
    with pytest.raises(BenchmarkError) as info:
        paired_test(a, b, "run A", "run B")
    message = info.value.message
    assert "run A" in message and "run B" in message
    assert "2 utterance id(s) only in run A, 1 only in run B" in message and "x1" in message


def test_captioning_scores_are_passed_in():
    records = [record(f"u{i}", ref_descriptor="a calm voice") for i in range(3)]
    scores = per_utterance_scores("sed.cider", records, precomputed=[0.5, 1.0, 0.0])
    assert scores.ids == ("u0", "u1", "u2") and scores.mean == pytest.approx(0.5)
    with pytest.raises(MetricUnavailable, match=r"no per-utterance scorer for sed\.cider"):
        per_utterance_scores("sed.cider", records)
    with pytest.raises(BenchmarkError, match=r"unknown metric 'ser\.uar'"):
        per_utterance_scores("ser.uar", records)


def test_captioning_scores_come_from_one_captioning_call():
    refs = ["a calm voice at a normal pace", "a loud angry voice", "a low and sad voice"]
    hyps = ["a calm voice", None, "a low sad voice"]
    records = [
        record(f"u{i}", ref_descriptor=ref, hyp_descriptor=hyp)
        for i, (ref, hyp) in enumerate(zip(refs, hyps, strict=True))
    ] + [record("no-reference", hyp_descriptor="a voice")]
    direct = caption_scores(refs, hyps)
    scores = caption_utterance_scores(records, "en")
    assert set(scores) == set(direct.per_utterance)
    for name, utterance_scores in scores.items():
        assert utterance_scores.ids == ("u0", "u1", "u2")
        assert utterance_scores.values.tolist() == pytest.approx(direct.per_utterance[name])
        assert utterance_scores.value == pytest.approx(direct.corpus[name])  # tables show corpus scores
    assert scores["sed.cider"].mean == pytest.approx(direct.corpus["sed.cider"])


def test_captioning_scores_per_reference_language():
    # records without a language (written before the field existed) are in the corpus language
    rows = [
        ("z0", "语气平静，语速正常", "语气平静", None),
        ("e0", "a calm voice at a normal pace", "a calm voice", "en"),
        ("z1", "声音响亮，情绪激动", "A loud and excited voice.", "zh"),  # English for Mandarin: mismatch
        ("e1", "a low and sad voice", "a low sad voice", "en"),
    ]
    records = [
        record(utt, ref_descriptor=ref, hyp_descriptor=hyp, language=lang) for utt, ref, hyp, lang in rows
    ]
    scores = caption_utterance_scores(records, "zh")
    direct = caption_scores([r[1] for r in rows], [r[2] for r in rows], ["zh", "en", "zh", "en"])
    assert scores["sed.language_mismatch"].values.tolist() == [0.0, 0.0, 1.0, 0.0]
    assert scores["sed.language_mismatch"].value == pytest.approx(0.25)
    assert scores["sed.zh.language_mismatch"].ids == ("z0", "z1")
    for name in ("sed.bleu4", "sed.rouge_l", "sed.cider"):
        assert scores[name].values.tolist() == pytest.approx(direct.per_utterance[name])
        assert scores[name].value == pytest.approx(direct.corpus[name])
        for lang, ids, members in (("zh", ("z0", "z1"), [0, 2]), ("en", ("e0", "e1"), [1, 3])):
            mine = scores[f"sed.{lang}.{name.removeprefix('sed.')}"]
            assert mine.ids == ids
            assert mine.values.tolist() == pytest.approx([direct.per_utterance[name][i] for i in members])
            assert mine.value == pytest.approx(direct.corpus[f"sed.{lang}.{name.removeprefix('sed.')}"])
    # ... and each language's scores are those of scoring its utterances alone
    alone = caption_scores([rows[1][1], rows[3][1]], [rows[1][2], rows[3][2]], "en")
    assert scores["sed.en.cider"].values.tolist() == pytest.approx(alone.per_utterance["sed.cider"])
    assert metric_spec("sed.language_mismatch").higher_is_better is False
    assert metric_spec("sed.zh.cider").higher_is_better is True


# A two-fold run with every task: (id, fold, language, emotion ref/hyp, transcript ref/hyp,
# descriptor ref/hyp). Hypotheses make no checkable voice claim, so no audio is measured.
RUN = [
    ("a0", "1", "en", "sad", "sad", "the cat sat", "the cat sat on", "A sad, tearful voice.", "A sad voice."),
    ("a1", "1", "zh", "happy", "sad", "hello there", None, "语气欢快，声音明亮", "语气欢快"),
    ("a2", "1", "en", "angry", "angry", "[laughter]", "ha", "An angry voice.", "An angry voice."),
    ("a3", "1", "zh", "neutral", None, "good morning", "good morning", "语气平静", "A calm voice."),
    ("b0", "2", "en", "sad", "happy", "a b c d", "a x c", "A sad, tired voice.", "A tired voice."),
    ("b1", "2", "zh", "sad", "sad", "it is what it is", "it is", "声音低沉，显得伤心", "显得伤心"),
    ("b2", "2", "en", "happy", "happy", "see you", "see you", "A bright happy voice.", None),
    ("b3", "2", "zh", "angry", "bored", "no", "no", "声音响亮，情绪激动", "情绪激动"),
    ("b4", "2", "en", "neutral", "neutral", "fine thanks", "fine", "A neutral voice.", "Neutral."),
]  # fmt: skip


def test_logged_metrics_are_the_values_compare_and_leaderboard_aggregate():
    """`run` logs each fold's `score_records` and, on the parent, their fold mean; `compare` and
    `leaderboard` score the pooled records. Both go through one scoring path, so they agree to the
    last bit on every metric a table shows or a test compares, per-language captioning included."""
    from benchmark.data.manifest import Utterance
    from benchmark.eval.predict import RECORD_FIELDS, score_records
    from benchmark.registry import load_dataset_card

    card = load_dataset_card("demo")
    system = SimpleNamespace(targets=["emotion", "transcript", "descriptor"])
    folds: dict[str, tuple[list[dict], list[Utterance]]] = {"1": ([], []), "2": ([], [])}
    for utt, fold, lang, ref_e, hyp_e, ref_t, hyp_t, ref_d, hyp_d in RUN:
        values = {"ref_emotion": ref_e, "hyp_emotion": hyp_e, "ref_transcript": ref_t}
        values |= {"hyp_transcript": hyp_t, "ref_descriptor": ref_d, "hyp_descriptor": hyp_d}
        folds[fold][0].append(dict.fromkeys(RECORD_FIELDS) | values | {"id": utt, "fold": fold})
        row = {"id": utt, "audio": f"/a/{utt}.wav", "duration": 1.0, "transcript": ref_t, "emotion": ref_e}
        row |= {"descriptor": ref_d, "speaker": "s", "gender": None, "group": fold, "dataset": "demo"}
        folds[fold][1].append(Utterance(**row, language=lang))
    logged = [score_records(records, card, system, rows) for records, rows in folds.values()]
    # the parent run's metrics, as benchmark.workflows.run.run_experiment logs them
    names = sorted({name for scores in logged for name in scores})
    parent = {n: float(np.mean([s[n] for s in logged if n in s])) for n in names}
    pooled = [PredictionRecord(**r) for records, _ in folds.values() for r in records]

    captions = caption_utterance_scores(pooled, card.language)
    prediction_metrics = [name for name in METRICS if not name.startswith(("sed", "explain"))]
    tested = {name: per_utterance_scores(name, pooled, card.labels) for name in prediction_metrics}
    with pytest.raises(MetricUnavailable, match="explanation records"):
        per_utterance_scores("explain.deletion", pooled, card.labels)
    aggregated = {name: scores.value for name, scores in {**tested, **captions}.items()}
    assert {"sed.en.cider", "sed.zh.bleu4", "sed.zh.language_mismatch"} <= set(aggregated)
    assert aggregated == {name: parent[name] for name in aggregated}  # exactly, not approximately
    # ... and the test values average to the same fold means (for the metrics that are means)
    for name in ("ser.ua", "ser.wa", "asr.wer", "sed.rouge_l", "sed.cider", "sed.language_mismatch"):
        scores = {**tested, **captions}[name]
        assert scores.mean == pytest.approx(parent[name], rel=1e-12), name
    # fold 1: UA (1 + 0 + 1 + 0) / 4; fold 2: (1/2 + 1 + 0 + 1) / 4 (sad 1 of 2; "bored" is invalid)
    assert parent["ser.ua"] == pytest.approx((2 / 4 + 2.5 / 4) / 2)
    # the [laughter] reference is skipped in both: fold 1 has 1 + 2 + 0 edits over 3 + 2 + 2 words
    assert "a2" not in tested["asr.wer"].ids and logged[0]["asr.skipped"] == 1.0
    assert logged[0]["asr.wer"] == pytest.approx(3 / 7)
