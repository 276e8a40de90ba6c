from __future__ import annotations

import time

import pytest
import torch
from torch.nn import functional as F

from benchmark.config import DecoderSettings, validate
from benchmark.errors import BenchmarkError
from benchmark.nn.decoder import (
    IGNORE_INDEX,
    SYSTEM_PROMPT,
    SpeechLLMDecoder,
    build_decoder,
)
from benchmark.nn.tokenizer import build_tiny_tokenizer

TARGET = "Transcript: hello world\nEmotion: angry"


def make_decoder(regime: str = "full", seed: int = 0) -> SpeechLLMDecoder:
    torch.manual_seed(seed)
    return build_decoder(DecoderSettings(regime=regime), backbone="tiny").eval()


def speech(batch: int, frames: int, lengths: list[int], seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    emb = torch.randn(batch, frames, 64, generator=generator)
    mask = torch.arange(frames)[None, :] < torch.tensor(lengths)[:, None]
    return emb, mask


def row_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of each row over its labelled positions."""
    shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
    ce = F.cross_entropy(shift_logits.transpose(1, 2), shift_labels, reduction="none")  # 0 where ignored
    return ce.sum(dim=1) / (shift_labels != IGNORE_INDEX).sum(dim=1)


def test_tokenizer_round_trips_and_carries_the_llama3_chat_template():
    start = time.perf_counter()
    tokenizer = build_tiny_tokenizer()
    assert time.perf_counter() - start < 2.0
    assert tokenizer.get_vocab() == build_tiny_tokenizer().get_vocab()  # deterministic
    for text in [TARGET, "Descriptor: a female speaker, low pitch.", "¿Qué tal? 你好 😀  two  spaces\t", ""]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text
    assert len(tokenizer("Emotion: angry", add_special_tokens=False)["input_ids"]) <= 4  # merges learnt
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "hi"}]
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert rendered == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
        f"{SYSTEM_PROMPT}<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    # transformers 5 returns a BatchEncoding by default; the special tokens stay single tokens.
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True)["input_ids"]
    assert ids[:2] == tokenizer.convert_tokens_to_ids(["<|begin_of_text|>", "<|start_header_id|>"])
    assert tokenizer.decode(ids) == rendered


def test_config_rejects_unknown_choices():
    with pytest.raises(BenchmarkError, match="backbone"):
        build_decoder(DecoderSettings(), backbone="huge")
    with pytest.raises(BenchmarkError, match="regime"):
        validate(DecoderSettings, {"regime": "adapters"}, "decoder")


def test_splicing_puts_speech_at_the_placeholders_and_loss_on_the_response():
    decoder = make_decoder()
    tokenizer, prompt = decoder.tokenizer, decoder.prompt
    content, content_mask = speech(2, 6, [4, 6], seed=1)
    descriptor, descriptor_mask = speech(2, 3, [3, 2], seed=2)
    targets = [TARGET, "Emotion: sad"]
    out = decoder(content.double(), content_mask, descriptor, descriptor_mask, targets)
    batch = out.batch
    embed = decoder.lm.get_input_embeddings()
    assert batch.inputs_embeds.dtype == embed.weight.dtype  # float64 speech was cast

    eos = decoder.eos_token_id
    responses = [[*tokenizer(t, add_special_tokens=False)["input_ids"], eos] for t in targets]
    assert out.num_response_tokens == sum(len(r) for r in responses)
    lengths = []
    for b in range(2):
        n_con, n_des = int(content_mask[b].sum()), int(descriptor_mask[b].sum())
        c0 = len(prompt.before_content)
        d0 = c0 + n_con + len(prompt.between)
        r0 = d0 + n_des + len(prompt.after_descriptor)
        lengths.append(r0 + len(responses[b]))
        rows = batch.inputs_embeds[b]
        assert torch.allclose(rows[c0 : c0 + n_con], content[b, :n_con].float())
        assert torch.allclose(rows[d0 : d0 + n_des], descriptor[b, :n_des])
        assert torch.allclose(rows[:c0], embed(torch.tensor(prompt.before_content)))
        assert torch.allclose(rows[c0 + n_con : d0], embed(torch.tensor(prompt.between)))
        assert batch.labels[b, :r0].eq(IGNORE_INDEX).all()
        assert batch.labels[b, r0 : lengths[b]].tolist() == responses[b]
        assert batch.labels[b, lengths[b] :].eq(IGNORE_INDEX).all()
        assert batch.attention_mask[b].tolist() == [1] * lengths[b] + [0] * (max(lengths) - lengths[b])
    assert out.logits.shape == (2, max(lengths), len(tokenizer))

    # The loss is the plain cross-entropy of the response tokens, computed from the logits by hand.
    logits, labels = out.logits[:, :-1].reshape(-1, out.logits.shape[-1]), batch.labels[:, 1:].reshape(-1)
    keep = labels != IGNORE_INDEX
    assert torch.allclose(out.loss, F.cross_entropy(logits[keep], labels[keep]), atol=1e-6)

    # Speech changes what the LM sees, never what it is trained to predict.
    changed = decoder(content + 1.0, content_mask, descriptor, descriptor_mask, targets)
    assert not torch.allclose(changed.logits, out.logits)
    assert torch.equal(changed.batch.labels, batch.labels)


def test_missing_descriptor_means_zeros_as_long_as_the_content():
    decoder = make_decoder()
    content, mask = speech(2, 5, [5, 3])
    zeros = decoder(content, mask, None, None, [TARGET, TARGET])
    explicit = decoder(content, mask, torch.zeros_like(content), mask, [TARGET, TARGET])
    assert torch.equal(zeros.batch.inputs_embeds, explicit.batch.inputs_embeds)
    assert torch.allclose(zeros.loss, explicit.loss)


def test_padding_does_not_change_an_utterance():
    decoder = make_decoder()
    content, mask = speech(2, 7, [3, 7])
    short_target, long_target = "Emotion: sad", TARGET + " and a much longer tail"
    alone = decoder(content[:1, :3], mask[:1, :3], None, None, [short_target])
    batched = decoder(content, mask, None, None, [short_target, long_target])
    assert batched.logits.shape[1] > alone.logits.shape[1]
    alone_loss = row_losses(alone.logits, alone.batch.labels)[0]
    assert abs(alone_loss - row_losses(batched.logits, batched.batch.labels)[0]) < 1e-5
    assert abs(alone_loss - alone.loss) < 1e-5
    together = decoder.generate(content, mask, max_new_tokens=12)
    assert decoder.generate(content[:1, :3], mask[:1, :3], max_new_tokens=12) == together[:1]


def test_lora_trains_only_the_adapters():
    decoder = make_decoder("lora")
    trainable = {name for name, p in decoder.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    assert {n.split(".")[-4] for n in trainable if "lora_A" in n} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    decoder.train()
    content, mask = speech(1, 4, [4])
    decoder(content, mask, None, None, [TARGET]).loss.backward()
    for name, param in decoder.named_parameters():
        if "lora_B" in name:  # lora_A's gradient is zero at init, because lora_B starts at zero
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        elif "lora_" not in name:
            assert param.grad is None, name


def test_full_regime_trains_every_llm_weight():
    decoder = make_decoder("full")
    params = dict(decoder.named_parameters())
    assert all(p.requires_grad for p in params.values())
    content, mask = speech(1, 4, [4], seed=3)
    decoder(content, mask, None, None, [TARGET]).loss.backward()
    for name in ["lm.model.embed_tokens.weight", "lm.model.layers.0.mlp.up_proj.weight", "lm.lm_head.weight"]:
        assert params[name].grad is not None and params[name].grad.abs().sum() > 0, name


def test_cached_greedy_decoding_equals_a_full_recompute():
    decoder = make_decoder(seed=4)
    content, mask = speech(2, 6, [2, 6], seed=5)
    steps = 8
    cached = decoder.generate(content, mask, max_new_tokens=steps)

    batch = decoder.splice(content, mask, padding_side="left")
    embeds, attention_mask = batch.inputs_embeds, batch.attention_mask
    tokens = []
    with torch.no_grad():
        for _ in range(steps):
            positions = (attention_mask.cumsum(-1) - 1).clamp_min(0)
            out = decoder.lm(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=positions)
            next_ids = out.logits[:, -1].argmax(-1)
            tokens.append(next_ids)
            embeds = torch.cat([embeds, decoder.lm.get_input_embeddings()(next_ids[:, None])], dim=1)
            attention_mask = torch.cat([attention_mask, torch.ones(2, 1, dtype=attention_mask.dtype)], dim=1)
    expected = []
    for row in torch.stack(tokens, dim=1).tolist():
        stops = [i for i, t in enumerate(row) if t in decoder.stop_token_ids]
        expected.append(decoder.tokenizer.decode(row[: stops[0]] if stops else row, skip_special_tokens=True))
    assert cached == expected


def test_a_tiny_decoder_overfits_one_example():
    decoder = make_decoder(seed=0).train()
    content, mask = speech(1, 5, [5], seed=6)
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=5e-3)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 5))
    for _ in range(40):
        optimizer.zero_grad()
        loss = decoder(content, mask, None, None, [TARGET]).loss
        loss.backward()
        optimizer.step()
        schedule.step()
    assert loss.item() < 0.1
    assert decoder.eval().generate(content, mask, max_new_tokens=30) == [TARGET]


# The speed switches of DecoderSettings against the plain path, on a LoRA decoder whose adapters
# already contribute (B != 0, as after some training; at B = 0 a broken adapter path could hide).
# Both sides run without LoRA dropout, whose random masks would differ; the dropout switch is
# checked on its own below. Tolerances, on the loss and on the relative norm of the gradient
# difference: exact recomputation (checkpointing) 1e-6 / 1e-5; the output layer at the loss
# positions only, the same float32 sums in another order, 1e-5 / 1e-4; compiled layers, fused
# float32 kernels, 1e-4 / 1e-3; bf16 LoRA weights, rounded to 8 bits of mantissa, 1e-2 / 5e-2.
SWITCHES = [
    pytest.param({"gradient_checkpointing": True}, 1e-6, 1e-5, id="checkpointing"),
    pytest.param({"loss_logits_only": True}, 1e-5, 1e-4, id="logits-at-loss"),
    pytest.param({"lora_dtype": "bfloat16"}, 1e-2, 5e-2, id="bf16-lora"),
    pytest.param({"compile_layers": True}, 1e-4, 1e-3, id="compile", marks=pytest.mark.slow),
]


def trained_lora_decoder(**switches) -> SpeechLLMDecoder:
    torch.manual_seed(0)
    decoder = build_decoder(DecoderSettings(regime="lora", lora_dropout=0.0, **switches), backbone="tiny")
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in decoder.named_parameters():
            if "lora_B" in name:
                param.copy_(0.1 * torch.randn(param.shape, generator=generator))
    return decoder.train()


def loss_and_gradient(decoder: SpeechLLMDecoder) -> tuple[float, torch.Tensor]:
    content, mask = speech(2, 6, [4, 6], seed=7)
    out = decoder(content, mask, None, None, [TARGET, "Emotion: sad"])
    out.loss.backward()
    gradient = [p.grad.float().flatten() for p in decoder.parameters() if p.requires_grad]
    return out.loss.item(), torch.cat(gradient)


@pytest.mark.parametrize(("switches", "loss_tol", "gradient_tol"), SWITCHES)
def test_speed_switches_keep_the_loss_and_its_gradient(switches, loss_tol, gradient_tol):
    plain_loss, plain_gradient = loss_and_gradient(trained_lora_decoder())
    loss, gradient = loss_and_gradient(trained_lora_decoder(**switches))
    assert loss == pytest.approx(plain_loss, abs=loss_tol)
    assert (gradient - plain_gradient).norm() <= gradient_tol * plain_gradient.norm()
    assert plain_gradient.norm() > 0


def test_bf16_lora_weights_are_bf16_and_the_llm_stays_as_it_was():
    decoder = trained_lora_decoder(lora_dtype="bfloat16")
    dtypes = {name: p.dtype for name, p in decoder.named_parameters()}
    assert {d for n, d in dtypes.items() if "lora_" in n} == {torch.bfloat16}
    assert {d for n, d in dtypes.items() if "lora_" not in n} == {torch.float32}


def test_logits_at_the_loss_positions_only():
    """The output layer runs on the response positions alone: one row of logits per target token."""
    decoder = trained_lora_decoder(loss_logits_only=True)
    content, mask = speech(2, 6, [4, 6], seed=7)
    out = decoder(content, mask, None, None, [TARGET, "Emotion: sad"])
    assert out.logits.shape == (out.num_response_tokens, len(decoder.tokenizer))


def test_no_lora_dropout_keeps_the_first_loss_and_runs_no_dropout():
    """At the first training step LoRA's B is zero, so dropout on the adapters' input cannot change
    the loss (tolerance 1e-6); without dropout, peft puts no dropout module on the path at all."""
    content, mask = speech(2, 6, [4, 6], seed=7)
    losses = {}
    for p in (0.05, 0.0):
        torch.manual_seed(0)
        decoder = build_decoder(DecoderSettings(regime="lora", lora_dropout=p), backbone="tiny").train()
        losses[p] = decoder(content, mask, None, None, [TARGET, "Emotion: sad"]).loss.item()
        dropouts = [m for name, m in decoder.named_modules() if name.endswith("lora_dropout.default")]
        assert dropouts and all(isinstance(m, torch.nn.Identity) == (p == 0.0) for m in dropouts)
    assert losses[0.0] == pytest.approx(losses[0.05], abs=1e-6)
