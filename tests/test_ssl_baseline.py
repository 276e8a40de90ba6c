"""The SSL baselines (Table 2 Sys. 1-3): heads, CTC decoding, training, and `benchmark run`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from benchmark.nn.demo_backbone import BLANK, VOCAB
from benchmark.nn.ssl_baseline import SSLBaseline
from benchmark.track.experiment import RunRequest, run_experiment
from benchmark.track.records import load_run_records

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
