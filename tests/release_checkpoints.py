"""Small checkpoints in the paper's release formats, written with `save_pretrained`.

The layouts a user gets from the hub, under a `BENCHMARK_WEIGHTS_DIR`: HuBERT-large's
(`HubertForCTC`, stable layer norm, a layer-norm front end, its `preprocessor_config.json`) and
Llama-3.1-8B-Instruct's (sharded bf16 safetensors with an index; a tokenizer with Llama 3.1's own
chat template in `tokenizer_config.json` and no pad token). Only the sizes are small: the configs
are the shipped copies of the real ones. `tests/test_release_checkpoints.py` runs `--backbone
paper` on them, and `measurements/scale.py` on a wider HuBERT.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import HubertConfig, HubertForCTC, LlamaConfig, LlamaForCausalLM, Wav2Vec2FeatureExtractor

from benchmark.nn import hub
from benchmark.nn.tokenizer import END_OF_TEXT, EOT, build_tiny_tokenizer

HUBERT, LLAMA = "facebook/hubert-large-ls960-ft", "meta-llama/Llama-3.1-8B-Instruct"
CHAT_TEMPLATE = Path(__file__).parent / "data" / "llama-3.1-8b-instruct-chat-template.jinja"
SMALL_HUBERT = {
    "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
    "conv_dim": [16] * 7, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2,
}  # fmt: skip
SMALL_LLAMA = {
    "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2,
}  # fmt: skip


def write_hubert(folder: Path, **sizes: int) -> Path:
    """hubert-large-ls960-ft's layout: a `HubertForCTC` and its feature extractor's config."""
    config = HubertConfig.from_dict({**hub.shipped_config(HUBERT), **SMALL_HUBERT, **sizes})
    assert config.feat_extract_norm == "layer" and config.do_stable_layer_norm
    torch.manual_seed(0)
    HubertForCTC(config).save_pretrained(folder)
    extractor = Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=True
    )
    extractor.save_pretrained(folder)
    return folder


def write_llama(folder: Path, **sizes: int) -> Path:
    """Llama-3.1-8B-Instruct's layout: bf16 safetensors in shards with an index, and a tokenizer
    whose `tokenizer_config.json` holds Llama 3.1's chat template and names no pad token."""
    tokenizer = build_tiny_tokenizer()  # byte-level BPE with Llama 3's special tokens
    tokenizer.pad_token = None
    tokenizer.save_pretrained(folder)
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    settings.pop("backend", None)  # written by transformers 5; the release predates it
    settings |= {"chat_template": CHAT_TEMPLATE.read_text(), "tokenizer_class": "PreTrainedTokenizerFast"}
    (folder / "tokenizer_config.json").write_text(json.dumps(settings, indent=2))
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    ids = tokenizer.convert_tokens_to_ids
    config = LlamaConfig.from_dict(
        {
            **hub.shipped_config(LLAMA), **SMALL_LLAMA, **sizes, "vocab_size": len(tokenizer),
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": [ids(END_OF_TEXT), ids(EOT)],
        }
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(folder, max_shard_size="100KB")
    return folder


def write_release_weights(weights: Path, hubert: dict[str, int] | None = None) -> Path:
    """Both checkpoints under `weights` (a `BENCHMARK_WEIGHTS_DIR`), the HuBERT with `hubert` sizes."""
    write_hubert(weights / HUBERT.split("/")[1], **(hubert or {}))
    write_llama(weights / LLAMA.split("/")[1])
    return weights
