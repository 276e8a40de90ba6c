"""`--backbone paper` on checkpoints in the paper's release formats, end to end.

Small stand-ins in the layouts a user gets from the hub (`tests/release_checkpoints.py`), under
`BENCHMARK_WEIGHTS_DIR`: the tokenizer, the prompt, the digest of the weights read, and a whole run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from release_checkpoints import HUBERT, LLAMA, write_hubert, write_llama

from benchmark.cli import main
from benchmark.nn import hub
from benchmark.nn.backbones import get_backbone
from benchmark.nn.decoder import SYSTEM_PROMPT, prompt_ids
from benchmark.nn.tokenizer import EOT, PAD, load_tokenizer


@pytest.fixture
def release_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """The two checkpoint folders under a fresh BENCHMARK_WEIGHTS_DIR (and an empty hub cache)."""
    weights = tmp_path / "weights"
    monkeypatch.setenv("BENCHMARK_WEIGHTS_DIR", str(weights))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    encoder = write_hubert(weights / HUBERT.split("/")[1])
    llm = write_llama(weights / LLAMA.split("/")[1])
    shards = sorted(llm.glob("model-*.safetensors"))
    assert len(shards) >= 2 and (llm / "model.safetensors.index.json").is_file()
    return encoder, llm


def test_the_paper_tokenizer_is_the_checkpoints_own_with_a_pad_token(release_weights):
    tokenizer = load_tokenizer(get_backbone("paper"))
    assert tokenizer.pad_token == PAD and tokenizer.pad_token_id != tokenizer.convert_tokens_to_ids(EOT)
    pieces = prompt_ids(tokenizer)
    prompt = tokenizer.decode(pieces.before_content + pieces.between + pieces.after_descriptor)
    assert prompt.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n")
    dates = "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
    assert f"{dates}{SYSTEM_PROMPT}<|eot_id|>" in prompt


def test_the_weights_digest_follows_the_bytes_not_the_path(
    release_weights, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    encoder, llm = release_weights
    monkeypatch.setattr(hub, "WHOLE_FILE_BYTES", 1024)  # shards take the big-file path: header, samples
    first = hub.weights_digest([encoder, llm])
    moved = shutil.copytree(llm, tmp_path / "elsewhere" / llm.name)
    (moved / "README.md").write_text("not read by from_pretrained")
    assert hub.weights_digest([encoder, moved]) == first and len(first) == 16
    shard = sorted(moved.glob("model-*.safetensors"))[-1]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF  # one weight's last byte
    shard.write_bytes(bytes(data))
    assert hub.weights_digest([encoder, moved]) != first
    assert hub.weights_digest([llm, encoder]) != first  # which folder is which counts


@pytest.mark.slow
def test_run_on_release_format_checkpoints(workdir: Path, release_weights):
    encoder, llm = release_weights
    assert main(["run", "--system", "full", "--backbone", "paper", "--epochs", "1"]) == 0
    client = MlflowClient()
    runs = client.search_runs(
        [client.get_experiment_by_name("explainable-ser").experiment_id], "tags.backbone = 'paper'"
    )
    (parent,) = [run for run in runs if "fold" not in run.data.tags]
    (child,) = [run for run in runs if "fold" in run.data.tags]
    assert parent.info.status == child.info.status == "FINISHED"
    assert "predictions" in {a.path for a in client.list_artifacts(child.info.run_id)}
    assert "predictions" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    params = parent.data.params
    assert params["decoder.regime"] == "lora"
    assert params["backbone.encoder_checkpoint"] == str(encoder)
    assert params["backbone.llm_checkpoint"] == str(llm)
    assert params["backbone.weights_digest"] == hub.weights_digest([encoder, llm])
