"""The SSL baselines (Table 2 Sys. 1-3): heads, CTC decoding, training (frozen or with the encoder's
top layers fine-tuned), and `benchmark run`."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from benchmark.data.batching import pad_waveforms
from benchmark.data.examples import Example
from benchmark.nn.ctc import BLANK, VOCAB
from benchmark.nn.encoder import build_encoder
from benchmark.nn.ssl_baseline import SSLBaseline
from benchmark.registry import load_system
from benchmark.tracking.artifacts import load_run_records
from benchmark.train.ssl import (
    build_ssl_baseline,
    encoder_lr_scale,
    predict_ssl,
    pretrained_top_layers,
    train_ssl,
)
from benchmark.workflows.run import RunRequest, run_experiment

LABELS = ["angry", "happy", "neutral", "sad"]


def batch(lengths: list[int], layers: int = 3, dim: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    hidden = torch.randn(layers, len(lengths), max(lengths), dim)
    mask = torch.arange(max(lengths)) < torch.tensor(lengths)[:, None]
    return hidden * mask[None, :, :, None], mask


def test_shapes_and_predictions():
    model = SSLBaseline(num_layers=3, input_dim=16, labels=LABELS, hidden_dim=8).eval()
    hidden, mask = batch([20, 12])
    emotion_logits, ctc_logits = model(hidden, mask)
    assert emotion_logits.shape == (2, len(LABELS)) and ctc_logits.shape == (2, 20, len(VOCAB))
    emotions, transcripts = model.predict(hidden, mask)
    assert len(emotions) == 2 and set(emotions) <= set(LABELS)
    assert len(transcripts) == 2 and all(isinstance(t, str) for t in transcripts)


def test_padding_does_not_change_the_prediction():
    model = SSLBaseline(num_layers=3, input_dim=16, labels=LABELS, hidden_dim=8).eval()
    hidden, mask = batch([20, 12])
    alone = model(hidden[:, 1:, :12], mask[1:, :12])
    padded = model(hidden[:, 1:], mask[1:])
    assert torch.allclose(alone[0], padded[0], atol=1e-6)


def test_greedy_ctc_decoding_of_hand_made_logits():
    path = ["h", "h", BLANK, "i", "|", "|", "y", "o", "o", BLANK, "o", "u", BLANK]
    ids = [VOCAB.index(c) for c in path]
    logits = torch.nn.functional.one_hot(torch.tensor(ids), len(VOCAB)).float()
    hidden = torch.zeros(1, 1, len(ids), 4)
    model = SSLBaseline(num_layers=1, input_dim=4, labels=LABELS, hidden_dim=4)
    model.ctc_head.forward = lambda _: logits[None]  # the head's output is what gets decoded
    _, transcripts = model.predict(hidden, torch.ones(1, len(ids), dtype=torch.bool))
    assert transcripts == ["hi yoou"]
    _, transcripts = model.predict(hidden, torch.tensor([[True] * 4 + [False] * (len(ids) - 4)]))
    assert transcripts == ["hi"]


def test_the_loss_decreases_on_a_tiny_batch():
    torch.manual_seed(0)
    model = SSLBaseline(num_layers=3, input_dim=16, labels=LABELS, hidden_dim=16)
    hidden, mask = batch([30, 24, 18])
    emotions, transcripts = ["angry", None, "sad"], ["a cat", "hi", None]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        out = model.loss(hidden, mask, emotions, transcripts)
        assert out.loss.item() == pytest.approx(out.ce.item() + out.ctc.item())
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.5 * losses[0]
    none = model.loss(hidden, mask, [None] * 3, [None] * 3)
    assert float(none.loss) == 0.0


def _tiny_examples(encoder, count: int = 6) -> list[Example]:
    """`count` random utterances of 0.4-1 s as the cache serves them, with labels and transcripts."""
    rng = np.random.default_rng(0)
    waves = [(0.1 * rng.standard_normal(6400 + 1920 * i)).astype(np.float32) for i in range(count)]
    out = encoder(*pad_waveforms(waves))
    frames = out.frame_mask.sum(dim=1).tolist()
    return [
        Example(f"u{i}", out.hidden_states[:, i, :n].clone(), transcript="hi there", emotion=LABELS[i % 4])
        for i, n in enumerate(frames)
    ]


def _ssl_system(finetune_layers, epochs: int = 2):
    overrides = {"ssl": {"epochs": epochs, "hidden_dim": 16, "finetune_layers": finetune_layers, "lr": 1e-2}}
    return load_system("ssl-wavlm", {**overrides, "training": {"batch_size": 2}})


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}


@pytest.mark.parametrize("finetune_layers", [1, "all"])
def test_finetuning_trains_the_copied_top_layers_only(finetune_layers) -> None:
    """WavLM, so that the relative position bias from the frozen layer 0 is in play for k=1."""
    encoder = build_encoder("tiny", "wavlm")
    examples = _tiny_examples(encoder)
    system = _ssl_system(finetune_layers)
    frozen = _weights(encoder)
    template = pretrained_top_layers(system, encoder)
    pretrained = _weights(template)
    torch.manual_seed(0)
    model = build_ssl_baseline(system, encoder.num_layers, encoder.hidden_size, LABELS, top_layers=template)
    history = train_ssl(model, examples, system, progress=False)
    assert len(history) == 6 and all("train.encoder_lr" in h for h in history)
    assert max(h["train.encoder_lr"] for h in history) == pytest.approx(system.ssl.encoder_lr)
    assert history[-1]["train.encoder_lr"] < system.ssl.encoder_lr  # decaying after the warm-up
    assert all(torch.equal(frozen[n], t) for n, t in encoder.state_dict().items())  # the encoder
    assert all(torch.equal(pretrained[n], t) for n, t in template.state_dict().items())  # copied per fold
    trained = model.top_layers.state_dict()
    changed = {n for n, t in trained.items() if not torch.equal(pretrained[n], t)}
    layer_weights = {n for n in trained if n.startswith("layers.") and n.endswith(".weight")}
    assert layer_weights <= changed
    assert not any(n.startswith("position_bias.") for n in changed)  # layer 0's, frozen with it
    records = predict_ssl(model, examples, fold="1", progress=False)
    assert [r["id"] for r in records] == [ex.id for ex in examples]
    assert all(r["hyp_emotion"] in LABELS and isinstance(r["hyp_transcript"], str) for r in records)


def test_finetune_layers_0_trains_the_heads_on_the_cached_states() -> None:
    encoder = build_encoder("tiny", "wavlm")
    examples = _tiny_examples(encoder)
    system = _ssl_system(0)
    frozen = _weights(encoder)
    assert pretrained_top_layers(system, encoder) is None
    torch.manual_seed(0)
    model = build_ssl_baseline(system, encoder.num_layers, encoder.hidden_size, LABELS)
    assert model.top_layers is None
    names = {n for n, _ in model.named_parameters()}
    history = train_ssl(model, examples, system, progress=False)
    assert not any("train.encoder_lr" in h for h in history)
    assert {n for n, _ in model.named_parameters()} == names
    assert all(torch.equal(frozen[n], t) for n, t in encoder.state_dict().items())
    cached = [ex.features.clone() for ex in examples]
    predict_ssl(model, examples, fold="1", progress=False)
    assert all(torch.equal(ex.features, c) for ex, c in zip(examples, cached, strict=True))


def test_the_top_layers_must_match_finetune_layers() -> None:
    encoder = build_encoder("tiny", "wavlm")
    one = pretrained_top_layers(_ssl_system(1), encoder)
    with pytest.raises(ValueError, match="needs 1 top layers, got 0"):
        build_ssl_baseline(_ssl_system(1), encoder.num_layers, encoder.hidden_size, LABELS)
    with pytest.raises(ValueError, match="needs 2 top layers, got 1"):
        build_ssl_baseline(
            _ssl_system("all"), encoder.num_layers, encoder.hidden_size, LABELS, top_layers=one
        )
    with pytest.raises(ValueError, match="needs 0 top layers, got 1"):
        build_ssl_baseline(_ssl_system(0), encoder.num_layers, encoder.hidden_size, LABELS, top_layers=one)


def test_encoder_lr_warms_up_then_decays() -> None:
    scales = [encoder_lr_scale(step, 100) for step in range(100)]
    assert scales[0] == pytest.approx(0.1) and scales[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(scales[9:])) and 0 < scales[-1] < 0.01
    assert encoder_lr_scale(0, 3) == 1.0  # a one-step warm-up: the peak at once


@pytest.mark.slow
def test_run_trains_and_scores_an_ssl_baseline(workdir: Path):
    request = RunRequest(system="ssl-wavlm", backbone="tiny", fold="1", epochs=1, progress=False)
    summary = run_experiment(request)
    assert summary.system.kind == "ssl" and summary.system.ssl.epochs == 1
    client = MlflowClient()
    parent = client.get_run(summary.run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["system"] == "ssl-wavlm"
    assert {"ser.ua", "ser.wa", "ser.macro_f1", "asr.wer"} <= set(parent.data.metrics)
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{summary.run_id}'"
    )
    assert len(children) == 1 and children[0].info.status == "FINISHED"
    child = children[0].info.run_id
    for key in ("train.loss", "train.ce", "train.ctc", "train.lr"):
        assert len(client.get_metric_history(child, key)) >= 1
    records = load_run_records(child, "fold-1")
    assert len(records) == 8 and all(r.fold == "1" for r in records)
    assert all(r.hyp_emotion in LABELS and isinstance(r.hyp_transcript, str) for r in records)
    assert all(r.raw_output is None and r.hyp_descriptor is None for r in records)
