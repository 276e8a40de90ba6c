"""`python -m benchmark predict RUN_ID PATH...`: a trained system on any recording.

A fold's logged model (`model/system.pt`) is rebuilt once (`TrainedSystem`); each file is decoded
as the corpora are (`load_audio`: any format libsndfile or FFmpeg reads, channels averaged,
resampled to 16 kHz), checked, and becomes a manifest-like row, so the rows go through the run's
own feature source and prediction (`eval.predict.predict`, `train.ssl.predict_ssl`): a test
utterance given by path gets the answer its run logged. Each label's probability comes from
`eval.label_scores`. A file that cannot be used (not audio, empty, silent, too short, too long)
is one line in `failures` and the others are still predicted. Long files are refused, not cut:
one answer per file keeps the record and the explanation of a file one thing. The bound is the
smaller of the backbone's `max_seconds` (the encoder's) and what the LLM's context holds beside
the prompt and the answer; the refusal says how to cut the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from benchmark.config import SystemConfig
from benchmark.data.audio import AUDIO_SUFFIXES, SAMPLE_RATE, AudioError, load_audio, require_sound
from benchmark.data.examples import Example, examples_of, stack_inputs
from benchmark.data.manifest import Utterance
from benchmark.errors import BenchmarkError
from benchmark.eval.label_scores import label_probabilities
from benchmark.explain.timeline import encoder_hop_samples
from benchmark.nn.backbones import get_backbone
from benchmark.registry import load_dataset_card
from benchmark.tracking import tags as tag
from benchmark.tracking.models import fold_model
from benchmark.tracking.store import load_mlflow_config, tracking_setup

FILES = "files"  # the `dataset` and `group` of a row made from a user's file


class FilePrediction(BaseModel):
    """What a trained system says about one file (the `--json` line and `--out` row)."""

    file: str
    duration: float  # seconds
    emotion: str | None
    transcript: str | None
    descriptor: str | None
    probabilities: dict[str, float] | None  # each label's, summing to 1 (`eval.label_scores`)
    raw_output: str | None  # the generations, as the run's prediction records hold them
    run: str
    fold: str


def audio_files(paths: Sequence[Path | str]) -> tuple[list[Path], list[str]]:
    """The audio files named or found in folders (recursively, by `AUDIO_SUFFIXES`, sorted), in
    the order given; a missing path or a folder without audio is a failure line instead."""
    files, failures = [], []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                failures.append(f"{path}: folder holds no audio file ({', '.join(sorted(AUDIO_SUFFIXES))})")
            files.extend(found)
        elif path.is_file():
            files.append(path)  # named explicitly: decoding decides whether it is audio
        else:
            failures.append(f"{path}: no such file or folder")
    return list(dict.fromkeys(files)), failures  # a file named twice is predicted once


class TrainedSystem:
    """One fold's trained model of a run, its encoder, labels and feature source, ready for files."""

    def __init__(self, run_id: str, fold: str | None = None) -> None:
        from benchmark.train.trained import ARTIFACT, load_trained_model

        tracking_setup(load_mlflow_config())
        source, self.fold, saved = fold_model(run_id, fold)
        self.run_id = run_id
        self.system = SystemConfig.model_validate(saved["system"])
        self.backbone = get_backbone(saved["backbone"])
        self.model, self.encoder = load_trained_model(saved, f"{ARTIFACT} of run {run_id}, fold {self.fold}")
        self.is_ssl = saved.get("kind") == "ssl"
        dataset = source.data.tags.get(tag.DATASET)
        if self.is_ssl:
            self.labels = list(self.model.labels)
        elif dataset is None:
            raise BenchmarkError(f"run {run_id} has no dataset tag: not a `benchmark run` run")
        else:
            self.labels = list(load_dataset_card(dataset).labels)
        self.features = source.data.tags.get(tag.FEATURES, self.backbone.features)
        self.max_seconds, self.bound = self._longest()

    def _longest(self) -> tuple[float, str]:
        """(seconds, why): the longest file this system takes in one pass (module docstring)."""
        encoder = self.backbone.max_seconds
        if self.is_ssl:
            return encoder, f"the encoder's limit, backbone {self.backbone.name}"
        llm = self.model.max_speech_frames() * encoder_hop_samples(self.encoder) / SAMPLE_RATE
        if llm < encoder:
            return llm, f"what the LLM's context holds beside the prompt and answer (encoder: {encoder:g} s)"
        return encoder, f"the encoder's limit, backbone {self.backbone.name} (LLM context: {llm:.0f} s)"

    def recording(self, path: Path) -> Utterance:
        """`path` as a row to predict, once decoded and checked; `AudioError` (one line) otherwise."""
        wave = load_audio(path)
        require_sound(wave, path)
        duration = len(wave) / SAMPLE_RATE
        if duration > self.max_seconds:
            raise AudioError(
                f"{path}: {duration:.1f} s is longer than the {self.max_seconds:.0f} s this system takes "
                f"({self.bound}); cut it into utterances of at most {self.max_seconds:.0f} s, e.g. at "
                "pauses, and predict the pieces"
            )
        return Utterance(
            id=str(path), audio=str(path), duration=duration, transcript=None, emotion=None, descriptor=None,
            speaker="unknown", gender=None, group=FILES, dataset=FILES,
        )  # fmt: skip

    def predict(self, rows: Sequence[Utterance], progress: bool = True) -> list[FilePrediction]:
        """The run's own prediction of `rows` (the path of `run`'s test split), with probabilities."""
        from benchmark.eval.predict import predict
        from benchmark.train.features import feature_loaders
        from benchmark.train.ssl import predict_ssl

        features, online = feature_loaders(self.features, self.encoder, rows, progress)
        self.model.to(self.encoder.model.device)
        examples = examples_of(rows, features)
        if self.is_ssl:
            records = predict_ssl(self.model, examples, self.fold, progress=progress, encoder=online)
        else:
            records = predict(self.model, examples, self.labels, self.fold, progress=progress, encoder=online)
        probabilities = self.probabilities(examples, records, online)
        return [
            FilePrediction(
                file=row.audio, duration=row.duration, emotion=record["hyp_emotion"],
                transcript=record["hyp_transcript"], descriptor=record["hyp_descriptor"],
                probabilities=p, raw_output=record["raw_output"], run=self.run_id, fold=self.fold,
            )
            for row, record, p in zip(rows, records, probabilities, strict=True)
        ]  # fmt: skip

    def probabilities(
        self, examples: Sequence[Example], records: Sequence[dict[str, Any]], encoder: Any, batch: int = 8
    ) -> list[dict[str, float] | None]:
        """Each example's label probabilities; None for a system with no emotion target."""
        if not self.is_ssl and "emotion" not in self.system.targets:
            return [None] * len(examples)
        device = next(self.model.parameters()).device
        out: list[dict[str, float] | None] = []
        for start in range(0, len(examples), batch):
            chosen = examples[start : start + batch]
            hidden, mask = stack_inputs(chosen).to(device).encoded(encoder)
            descriptors = [r["hyp_descriptor"] for r in records[start : start + batch]]
            out.extend(label_probabilities(self.model, hidden, mask, self.labels, descriptors))
        return out


def predict_files(
    run_id: str, paths: Sequence[Path | str], fold: str | None = None, progress: bool = True
) -> tuple[list[FilePrediction], list[str]]:
    """(predictions, failure lines) of every audio file among `paths`, in the order found."""
    files, failures = audio_files(paths)
    system = TrainedSystem(run_id, fold)
    rows = []
    for path in files:
        try:
            rows.append(system.recording(path))
        except AudioError as err:
            failures.append(err.message)
    with torch.no_grad():
        predictions = system.predict(rows, progress) if rows else []
    return predictions, failures
