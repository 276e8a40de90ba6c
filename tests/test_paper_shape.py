"""`--backbone paper-shape`: the paper's exact architectures with random weights, nothing downloaded.

On CPU the models are built on the `meta` device, which counts parameters without allocating
them. The expected counts are computed here from the numbers of the shipped configs, layer by
layer, independently of the builders.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmark.cli import main
from benchmark.config import DecoderSettings
from benchmark.nn.backbones import get_backbone
from benchmark.nn.decoder import SYSTEM_PROMPT, build_decoder
from benchmark.nn.encoder import build_encoder
from benchmark.nn.tokenizer import build_llama3_sized_tokenizer, build_tiny_tokenizer

CONFIGS = Path(__file__).resolve().parent.parent / "benchmark" / "nn"


def shipped(name: str) -> dict:
    return json.loads((CONFIGS / name).read_text(encoding="utf-8"))


def test_the_shipped_configs_are_the_papers_checkpoints():
    llama = shipped("llama-3.1-8b-instruct.json")
    sizes = (
        "num_hidden_layers",
        "hidden_size",
        "intermediate_size",
        "num_attention_heads",
        "num_key_value_heads",
    )
    assert [llama[key] for key in sizes] == [32, 4096, 14336, 32, 8] and llama["vocab_size"] == 128256
    assert llama["rope_theta"] == 500000.0 and llama["rope_scaling"]["rope_type"] == "llama3"
    assert llama["max_position_embeddings"] == 131072 and llama["rms_norm_eps"] == 1e-5
    assert llama["tie_word_embeddings"] is False
    assert llama["bos_token_id"] == 128000 and llama["eos_token_id"] == [128001, 128008, 128009]
    hubert = shipped("hubert-large-ls960-ft.json")
    sizes = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size")
    assert [hubert[key] for key in sizes] == [24, 1024, 16, 4096] and hubert["conv_dim"] == [512] * 7
    assert hubert["feat_extract_norm"] == "layer" and hubert["do_stable_layer_norm"] is True


def llama_parameters(config: dict) -> int:
    """Embedding, output layer (untied), and per layer: q, k, v, o, gate/up/down, two RMS norms."""
    hidden, vocab, layers = config["hidden_size"], config["vocab_size"], config["num_hidden_layers"]
    kv = config["num_key_value_heads"] * hidden // config["num_attention_heads"]
    attention = 2 * hidden * hidden + 2 * hidden * kv
    mlp = 3 * hidden * config["intermediate_size"]
    return 2 * vocab * hidden + layers * (attention + mlp + 2 * hidden) + hidden


def lora_parameters(config: dict, r: int) -> int:
    """A (r x in) and B (out x r) on q, k, v and o of every layer."""
    hidden = config["hidden_size"]
    kv = config["num_key_value_heads"] * hidden // config["num_attention_heads"]
    per_layer = sum(r * (fan_in + fan_out) for fan_in, fan_out in [(hidden, hidden), (hidden, kv)] * 2)
    return config["num_hidden_layers"] * per_layer


def hubert_parameters(config: dict) -> int:
    """Conv front end (conv + bias + layer norm per layer), feature projection with its layer norm,
    grouped positional convolution (weight norm: direction and one magnitude per kernel position,
    plus bias), the encoder's layer norm, and per layer: q, k, v, out (with biases), two layer norms,
    the feed-forward. The frozen encoder has no masked-spec embedding (`mask_time_prob=0`)."""
    channels = [1, *config["conv_dim"]]
    conv = sum(
        channels[i] * channels[i + 1] * kernel + channels[i + 1] + 2 * channels[i + 1]
        for i, kernel in enumerate(config["conv_kernel"])
    )
    hidden, inner = config["hidden_size"], config["intermediate_size"]
    projection = 2 * channels[-1] + channels[-1] * hidden + hidden
    kernel, groups = config["num_conv_pos_embeddings"], config["num_conv_pos_embedding_groups"]
    positional = hidden * (hidden // groups) * kernel + kernel + hidden
    layer = 4 * (hidden * hidden + hidden) + 2 * 2 * hidden + 2 * hidden * inner + inner + hidden
    return conv + projection + positional + 2 * hidden + config["num_hidden_layers"] * layer


def test_parameter_counts_match_the_configs():
    llama, hubert = shipped("llama-3.1-8b-instruct.json"), shipped("hubert-large-ls960-ft.json")
    with torch.device("meta"):
        decoder = build_decoder(DecoderSettings(regime="lora", lora_r=8), backbone="paper-shape")
        encoder = build_encoder("paper-shape", "hubert")
    params = dict(decoder.lm.named_parameters())
    base = sum(p.numel() for name, p in params.items() if "lora_" not in name)
    trainable = sum(p.numel() for p in params.values() if p.requires_grad)
    assert base == llama_parameters(llama) == 8_030_261_248
    assert trainable == lora_parameters(llama, r=8) == 6_815_744
    assert all("lora_" in name for name, p in params.items() if p.requires_grad)
    assert sum(p.numel() for p in encoder.parameters()) == hubert_parameters(hubert) == 315_437_696
    assert encoder.num_layers == 25 and encoder.hidden_size == 1024 and encoder.padding_invariant
    lm = decoder.lm.get_base_model()
    assert lm.config.rope_parameters["rope_type"] == "llama3" and lm.config.rope_parameters["factor"] == 8.0
    assert lm.dtype == torch.bfloat16 and not lm.config.tie_word_embeddings
    assert lm.get_input_embeddings().num_embeddings == len(decoder.tokenizer) == 128256


def test_llama3_sized_tokenizer_has_the_real_special_ids():
    tokenizer = build_llama3_sized_tokenizer()
    assert len(tokenizer) == 128256
    ids = {
        "<|begin_of_text|>": 128000, "<|end_of_text|>": 128001, "<|reserved_special_token_0|>": 128002,
        "<|finetune_right_pad_id|>": 128004, "<|start_header_id|>": 128006, "<|end_header_id|>": 128007,
        "<|eom_id|>": 128008, "<|eot_id|>": 128009, "<|python_tag|>": 128010,
        "<|reserved_special_token_3|>": 128011, "<|reserved_special_token_247|>": 128255,
    }  # fmt: skip
    assert {token: tokenizer.convert_tokens_to_ids(token) for token in ids} == ids
    assert [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id] == [
        128000,
        128009,
        128004,
    ]
    text = "Transcript: hello world\nEmotion: angry ¿Qué tal? 你好 😀"
    encoded = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(encoded) == text and max(encoded) < 128000  # ordinary ids only
    assert len(encoded) < len(text.encode())  # merges learnt
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "hi"}]
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    tiny = build_tiny_tokenizer()
    assert rendered == tiny.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)["input_ids"]
    assert prompt[:2] == [128000, 128006] and prompt.count(128009) == 2  # <|eot_id|> after each turn


def test_paper_shape_is_marked_random(capsys: pytest.CaptureFixture[str]):
    assert get_backbone("paper-shape").random_weights and not get_backbone("paper").random_weights
    if torch.cuda.is_available():
        pytest.skip("the refusal is for machines without a GPU")
    assert main(["run", "--system", "full", "--backbone", "paper-shape"]) == 2
    err = capsys.readouterr().err
    assert "random weights" in err and "no GPU" in err and "measurements/gpu_check.py" in err
