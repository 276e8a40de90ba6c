"""A finished top-level run with its pooled prediction records, scored per utterance on demand.

`compare` and `leaderboard` both test runs utterance by utterance; the scores of one run are
computed once per metric and reused (a leaderboard tests each cell against several baselines).
`compare` also resamples the utterances' speakers (and folds), read once per run from the corpus.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property

from mlflow.entities import Run

from benchmark.config import LANGUAGES, Language
from benchmark.data.corpus import load_corpus
from benchmark.data.prepare import is_prepared
from benchmark.data.records import PredictionRecord
from benchmark.errors import BenchmarkError
from benchmark.eval.captioning import LANGUAGE_MISMATCH, available_caption_metrics
from benchmark.eval.metrics import UtteranceScores, reference_languages
from benchmark.eval.stats import (
    CAPTION_SCORE_NAMES,
    EXPLAIN_METRICS,
    SED_METRICS,
    MetricUnavailable,
    caption_utterance_scores,
    metric_spec,
    per_utterance_scores,
)
from benchmark.explain.quality import explanation_scores
from benchmark.registry import load_dataset_card
from benchmark.tracking import tags as tag
from benchmark.tracking.artifacts import load_run_explanations, load_run_records


@dataclass(frozen=True)
class EvaluatedRun:
    """A top-level `benchmark run` run with its pooled prediction records."""

    run: Run
    records: list[PredictionRecord]
    _scores: dict[str, UtteranceScores] = field(default_factory=dict, repr=False, compare=False)
    # Captioning scores that cannot be had for this run, with the reason (asked once).
    _unavailable: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    @property
    def system(self) -> str:
        return self.run.data.tags.get(tag.SYSTEM, "?")

    def predicts(self, metric: str) -> bool:
        """Whether the run's system has the output `metric` scores (its logged `targets`)."""
        targets = self.run.data.params.get("targets")
        if targets is None:
            raise BenchmarkError(f"run {self.run_id} has no 'targets' param: not a `benchmark run` run")
        return metric_spec(metric).target in json.loads(targets)

    def scores(self, metric: str) -> UtteranceScores:
        """Per-utterance scores, computed once per metric (a leaderboard reuses them per baseline).

        Captioning scores (`sed.*`, `sed.language_mismatch`, `sed.<lang>.*`) come from one
        scoring pass over all the run's descriptors, each in its reference's language.
        """
        if metric in self._unavailable:
            raise MetricUnavailable(self._unavailable[metric])
        if metric in EXPLAIN_METRICS and metric not in self._scores:
            self._explanation_scores(metric)
        if metric in CAPTION_SCORE_NAMES and metric not in self._scores:
            # asked before scoring: an unavailable metric must not re-run the other scorers
            if reason := self._caption_unavailable(metric):
                self._unavailable[metric] = reason
                raise MetricUnavailable(reason)
            self._scores.update(caption_utterance_scores(self.records, self.language))
            for name in CAPTION_SCORE_NAMES:
                if name not in self._scores:  # not applicable here, or its scorer failed (e.g. SPICE)
                    self._unavailable[name] = self._caption_unavailable(name) or (
                        f"{name} could not be computed for run {self.run_id} (see the scorer's error above)"
                    )
            if metric in self._unavailable:
                raise MetricUnavailable(self._unavailable[metric])
        if metric not in self._scores:
            self._scores[metric] = per_utterance_scores(metric, self.records, self.labels)
        return self._scores[metric]

    def _explanation_scores(self, metric: str) -> None:
        """Explanation quality from the run's explanation records (`explain RUN_ID --all`)."""
        try:
            records = load_run_explanations(self.run_id)
        except BenchmarkError:
            why = f"run {self.run_id} has no explanation records (`benchmark explain {self.run_id} --all`)"
            reasons = dict.fromkeys(EXPLAIN_METRICS, why)
            self._unavailable.update(reasons)
            raise MetricUnavailable(reasons[metric]) from None
        self._scores.update(explanation_scores(records))
        for name in EXPLAIN_METRICS:
            if name not in self._scores:
                self._unavailable[name] = f"run {self.run_id}'s answers make no claim to check"
        if metric in self._unavailable:
            raise MetricUnavailable(self._unavailable[metric])

    def _caption_unavailable(self, metric: str) -> str | None:
        """Why the captioning score `metric` cannot be had for this run, judged without scoring
        (a per-language name on a run with one language, a scorer missing here); None if it can."""
        languages = self.languages
        if metric not in (*SED_METRICS, LANGUAGE_MISMATCH):  # a per-language name, sed.<lang>.<metric>
            _, language, name = metric.split(".", 2)
            if len(languages) < 2:
                which = f"all in '{languages[0]}'" if languages else "none (no reference descriptor)"
                return (
                    f"{metric} cannot be computed for run {self.run_id}: per-language scores exist only "
                    f"when the references have several languages, and its are {which}; use sed.{name}"
                )
            if language not in languages:
                return f"{metric} cannot be computed for run {self.run_id}: no reference is in '{language}'"
            metric, languages = f"sed.{name}", [language]
        for language in languages if metric in SED_METRICS else ():
            if reason := available_caption_metrics(language)[metric]:
                return f"{metric} cannot be computed here: {reason}"
        return None

    @property
    def language(self) -> Language:
        """The language of the run's corpus: that of records written without a `language`."""
        return load_dataset_card(self.run.data.tags.get(tag.DATASET, "demo")).language

    @property
    def labels(self) -> list[str]:
        """The emotion labels of the run's corpus, in its card's order: the order `run` scored UA in."""
        return list(load_dataset_card(self.run.data.tags.get(tag.DATASET, "demo")).labels)

    @cached_property
    def speakers(self) -> dict[str, str]:
        """Record key (`PredictionRecord.key`: the utterance, and its seed in a run with seeds) ->
        speaker, for the records whose utterance its corpus's manifests list (read once): the
        clusters of `compare`'s speaker bootstrap. Empty when the manifests are not prepared here
        (the demo corpus is not synthesised for this); a record that is missing is left to the
        caller, which makes it a cluster of its own and says so."""
        card = load_dataset_card(self.run.data.tags.get(tag.DATASET, "demo"))
        if not is_prepared(card):
            return {}
        ids = {record.id for record in self.records}
        rows = [row for split in load_corpus(card).values() for row in split if row.id in ids]
        speaker = {row.id: row.speaker for row in rows}
        return {record.key: speaker[record.id] for record in self.records if record.id in speaker}

    @property
    def replicates(self) -> dict[str, str]:
        """Record key -> its replicate label for `compare`'s bootstrap, crossed with the speakers:
        the seed in a run with seeds, and the fold too where a speaker is tested in several folds.
        In the suite's protocols every speaker is tested in one fold (speaker-independent folds):
        resampling the speakers then resamples each fold's utterances already, and resampling the
        folds on top would count the same variation twice (docs/evaluation.md)."""
        speakers = self.speakers
        folds_of: dict[str, set[str]] = {}
        for record in self.records:
            folds_of.setdefault(speakers.get(record.key, record.key), set()).add(str(record.fold))
        crossed = any(len(folds) > 1 for folds in folds_of.values())
        return {
            record.key: f"{record.fold if crossed else ''}/{'' if record.seed is None else record.seed}"
            for record in self.records
        }

    @property
    def languages(self) -> list[Language]:
        """The reference languages of the records with a reference descriptor, in `LANGUAGES` order."""
        found = set(reference_languages([r for r in self.records if r.ref_descriptor], self.language))
        return [language for language in LANGUAGES if language in found]


def load_evaluated(run: Run) -> EvaluatedRun:
    return EvaluatedRun(run, load_run_records(run.info.run_id, "pooled"))
