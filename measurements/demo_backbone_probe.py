"""Does the demo backbone carry emotion and content? A quick probe against a random tiny HuBERT.

Emotion: utterance features (mean and standard deviation over frames of each hidden layer, and of
all layers together) -> standardised logistic regression, trained on speaker groups 1-4 of the demo
evaluation corpus and tested on group 5 (unweighted accuracy = mean per-class recall). Log-mel
statistics go through the same probe as a reference. Content: greedy CTC word error rate of the
demo backbone's own head on the group-5 transcripts, sentences it has never heard.

    python measurements/demo_backbone_probe.py [--manifest PATH/all.jsonl]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from transformers import HubertModel
from transformers.audio_utils import mel_filter_bank

from benchmark.data.audio import load_audio
from benchmark.data.demo import build_demo_corpus
from benchmark.data.features import FeatureCache
from benchmark.data.manifest import Utterance, read_manifest
from benchmark.nn.encoder import SpeechEncoder, build_encoder
from benchmark.train.demo_backbone import ctc_wer, demo_config, ensure_demo_backbone


def pooled(features: list[torch.Tensor]) -> np.ndarray:
    """(N, L+1, 2D): mean and standard deviation over frames of every layer."""
    return np.stack([torch.cat([f.mean(dim=1), f.std(dim=1)], dim=-1).numpy() for f in features])


def log_mel_stats(utterances: list[Utterance]) -> np.ndarray:
    """(N, 1, 160): mean and standard deviation of 80 log-mel bands (25 ms window, 10 ms hop)."""
    filters = torch.tensor(
        mel_filter_bank(
            num_frequency_bins=201, num_mel_filters=80, min_frequency=0.0, max_frequency=8000.0,
            sampling_rate=16000,
        ),
        dtype=torch.float32,
    )  # fmt: skip
    rows = []
    for u in utterances:
        wave = torch.from_numpy(load_audio(u.audio))
        power = torch.stft(wave, 400, 160, window=torch.hann_window(400), return_complex=True).abs() ** 2
        logmel = torch.log(filters.T @ power + 1e-6)
        rows.append(torch.cat([logmel.mean(dim=1), logmel.std(dim=1)])[None].numpy())
    return np.stack(rows)


def probe_ua(x: np.ndarray, y: np.ndarray, train: np.ndarray) -> float:
    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    classifier.fit(x[train], y[train])
    return float(balanced_accuracy_score(y[~train], classifier.predict(x[~train])))


def report(name: str, stats: np.ndarray, y: np.ndarray, train: np.ndarray) -> None:
    per_layer = [probe_ua(stats[:, layer], y, train) for layer in range(stats.shape[1])]
    every = probe_ua(stats.reshape(len(stats), -1), y, train)
    layers = " ".join(f"{ua:.2f}" for ua in per_layer)
    print(f"{name:>20}: UA all layers {every:.3f} | per layer {layers}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, help="demo eval corpus (default: build it, size 420)")
    args = parser.parse_args()
    rows = read_manifest(args.manifest or build_demo_corpus(size=420, pool="eval"))
    y = np.array([r.emotion for r in rows])
    train = np.array([r.group != "5" for r in rows])

    folder = ensure_demo_backbone()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        random = SpeechEncoder(HubertModel(demo_config()), "random", "hubert")
    encoders = {
        "random (demo arch)": random,
        "tiny (random)": build_encoder("tiny"),
        "demo": build_encoder("demo", weights=folder),
    }
    report("log-mel", log_mel_stats(rows), y, train)
    for name, encoder in encoders.items():
        report(name, pooled(FeatureCache(None, encoder, enabled=False).get(rows)), y, train)
    test = [r for r, is_train in zip(rows, train, strict=True) if not is_train]
    wer, hyps = ctc_wer(folder, test)
    print(f"demo backbone CTC greedy WER on group 5 ({len(test)} utterances): {wer:.3f}")
    for r, h in list(zip(test, hyps, strict=True))[:3]:
        print(f"  ref: {r.transcript}\n  hyp: {h}")


if __name__ == "__main__":
    main()
