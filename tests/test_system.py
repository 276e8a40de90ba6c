from __future__ import annotations

import math

import pytest
import torch

from benchmark.config import (
    AdapterConfig,
    BottleneckConfig,
    DecoderSettings,
    StageConfig,
    SystemConfig,
    TinyLLMSettings,
)
from benchmark.data.tasks import response_prefix
from benchmark.nn.decoder import response_token_cross_entropy
from benchmark.nn.system import SpeechEmotionCaptioner, build_system

LAYERS, DIM, STACK = 3, 12, 2
TARGETS = ["Transcript: hello there\nDescriptor: a calm voice\nEmotion: neutral", "Emotion: angry"]


def tiny_system(
    disentangle: bool = True, beta: float = 1e-4, regime: str = "lora", loss_reduction: str = "token_mean"
) -> SystemConfig:
    stage = StageConfig(name="joint", train=["content", "llm"], tasks=["full"], lr=1e-3, scheduler="constant")
    return SystemConfig(
        name="tiny",
        title="tiny",
        disentangle=disentangle,
        beta=beta,
        targets=["transcript", "descriptor", "emotion"],
        schedule="joint",
        stages=[stage],
        bottleneck=BottleneckConfig(hidden_dim=16, latent_dim=8, loss_reduction=loss_reduction),
        adapter=AdapterConfig(stack=STACK, hidden_dim=32),
        decoder=DecoderSettings(regime=regime),
    )


def make(seed: int = 0, **kwargs) -> SpeechEmotionCaptioner:
    torch.manual_seed(seed)
    return build_system(tiny_system(**kwargs), LAYERS, DIM, "tiny")


def encoder_outputs(lengths: list[int], seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    frames = max(lengths)
    hidden = torch.randn(LAYERS, len(lengths), frames, DIM, generator=generator)
    mask = torch.arange(frames)[None, :] < torch.tensor(lengths)[:, None]
    return hidden, mask


def test_shapes_through_the_whole_system():
    model = make().train()
    hidden, mask = encoder_outputs([7, 4])
    content, content_mask, descriptor, descriptor_mask, kl_c, kl_d = model.embed(hidden, mask)
    assert content.shape == descriptor.shape == (2, math.ceil(7 / STACK), model.decoder.hidden_size)
    assert content_mask.sum(1).tolist() == descriptor_mask.sum(1).tolist() == [4, 2]
    assert kl_c > 0 and kl_d > 0
    out = model(hidden, mask, TARGETS)
    assert torch.isfinite(out.loss) and out.ce > 0
    tokenizer = model.decoder.tokenizer
    assert out.num_tokens == sum(
        len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in TARGETS
    )
    out.loss.backward()
    assert all(p.grad is not None for p in model.content.parameters())
    assert all(p.grad is not None for p in model.descriptor.parameters())


def test_zero_descriptor_skips_the_descriptor_branch():
    model = make().eval()
    hidden, mask = encoder_outputs([6, 5])
    out = model(hidden, mask, TARGETS, zero_descriptor=True)
    assert out.kl_descriptor == 0 and out.kl_content > 0
    assert torch.allclose(out.loss, out.ce + model.beta * out.kl_content)
    out.loss.backward()
    assert all(p.grad is None for p in model.descriptor.parameters())


def test_no_fd_has_one_branch_no_kl_and_an_empty_descriptor_slot():
    model = make(disentangle=False)
    assert model.descriptor is None and model.module_groups()["descriptor"] == []
    assert not any(isinstance(m, torch.nn.Linear) and m.out_features == 8 for m in model.content.modules())
    hidden, mask = encoder_outputs([6, 3])
    content, content_mask, descriptor, descriptor_mask, kl_c, kl_d = model.embed(hidden, mask)
    assert descriptor.shape == (2, 0, model.decoder.hidden_size) and descriptor_mask.shape == (2, 0)
    batch = model.decoder.splice(content, content_mask, descriptor, descriptor_mask)
    prompt = model.decoder.prompt
    prompt_length = len(prompt.before_content) + len(prompt.between) + len(prompt.after_descriptor)
    assert batch.attention_mask.sum(1).tolist() == [prompt_length + 3, prompt_length + 2]
    out = model(hidden, mask, TARGETS)
    assert kl_c == kl_d == 0 and torch.equal(out.loss, out.ce)


def test_module_groups_by_regime():
    lora = make(regime="lora")
    groups = lora.module_groups()
    names = {id(p): n for n, p in lora.named_parameters()}
    assert groups["llm"] and all("lora_" in names[id(p)] for p in groups["llm"])
    full = make(regime="full")
    assert len(full.module_groups()["llm"]) == len(list(full.decoder.lm.parameters()))
    trainable = full.set_trainable(["descriptor"])
    assert {id(p) for p in trainable} == {id(p) for p in full.descriptor.parameters()}
    assert all(not p.requires_grad for p in full.decoder.parameters())
    full.train()
    assert full.descriptor.training and not full.content.training  # a frozen VAE passes its mean


@pytest.mark.parametrize("task", ["asr", "ser", "ser_sed", "full"])
def test_generate_starts_with_the_task_field(task):
    model = make(seed=2).eval()
    hidden, mask = encoder_outputs([6, 3], seed=3)
    texts = model.generate(hidden, mask, response_prefix(task), max_new_tokens=5)
    assert len(texts) == 2 and all(text.startswith(response_prefix(task)) for text in texts)


def test_generate_prefix_continues_like_a_forced_response():
    """Greedy decoding after a forced prefix equals the argmax continuation of prompt + prefix."""
    model = make(seed=4, regime="full").eval()
    hidden, mask = encoder_outputs([5], seed=5)
    text = model.generate(hidden, mask, "Emotion:", max_new_tokens=1)[0]
    content, content_mask, descriptor, descriptor_mask, _, _ = model.embed(hidden, mask)
    out = model.decoder(content, content_mask, descriptor, descriptor_mask, ["Emotion:"])
    prefix_end = int(out.batch.attention_mask.sum()) - 2  # last prefix position (before <|eot_id|>)
    expected = model.decoder.tokenizer.decode(
        [out.logits[0, prefix_end].argmax().item()], skip_special_tokens=True
    )
    assert text == "Emotion:" + expected


def test_beta_scales_only_the_kl_term():
    hidden, mask = encoder_outputs([6, 4])
    outs = {beta: make(beta=beta).eval()(hidden, mask, TARGETS) for beta in (1e-4, 1.0)}
    small, big = outs[1e-4], outs[1.0]
    assert torch.allclose(small.ce, big.ce) and torch.allclose(small.kl_content, big.kl_content)
    for beta, out in outs.items():
        assert torch.allclose(out.loss, out.ce + beta * (out.kl_content + out.kl_descriptor))
    assert big.loss - small.loss > 0.9 * (big.kl_content + big.kl_descriptor)


def response_lengths(model: SpeechEmotionCaptioner, targets: list[str]) -> list[int]:
    """Response tokens of each target, <|eot_id|> included."""
    tokenizer = model.decoder.tokenizer
    return [len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in targets]


def test_response_token_cross_entropy_matches_the_decoders_loss():
    model = make().eval()
    hidden, mask = encoder_outputs([7, 4])
    content, content_mask, descriptor, descriptor_mask, _, _ = model.embed(hidden, mask)
    out = model.decoder(content, content_mask, descriptor, descriptor_mask, TARGETS)
    sums, counts = response_token_cross_entropy(out.logits, out.batch.labels)
    assert counts.tolist() == response_lengths(model, TARGETS)
    assert int(counts.sum()) == out.num_response_tokens
    assert sums.sum().item() / out.num_response_tokens == pytest.approx(out.loss.item(), rel=1e-5)


# Padding in both directions: 7 and 4 real frames, and targets of different token counts.
LENGTHS = [7, 4]


def test_token_mean_loss_is_ce_plus_beta_kl_bit_for_bit():
    model = make(beta=0.5).eval()
    hidden, mask = encoder_outputs(LENGTHS)
    out = model(hidden, mask, TARGETS)
    assert torch.equal(out.loss, out.ce + 0.5 * (out.kl_content.float() + out.kl_descriptor.float()))


@pytest.mark.parametrize("zero_descriptor", [False, True])
def test_paper_loss_sums_tokens_and_frames_per_example(zero_descriptor):
    """Mean over examples of (sum of token CEs + beta * KL summed over real frames and dims)."""
    beta = 0.5
    model = make(beta=beta, loss_reduction="paper").eval()
    hidden, mask = encoder_outputs(LENGTHS)
    out = model(hidden, mask, TARGETS, zero_descriptor=zero_descriptor)
    # The logged terms stay per token and per frame, as under token_mean (same weights).
    reference = make(beta=beta).eval()(hidden, mask, TARGETS, zero_descriptor=zero_descriptor)
    assert torch.equal(out.ce, reference.ce) and torch.equal(out.kl_content, reference.kl_content)
    assert torch.equal(out.kl_descriptor, reference.kl_descriptor)
    assert (out.kl_descriptor == 0) == zero_descriptor
    # A mean of per-example sums is the batch total over the real items, divided by the examples.
    tokens, frames = sum(response_lengths(model, TARGETS)), sum(LENGTHS)
    expected = (out.ce * tokens + beta * (out.kl_content + out.kl_descriptor) * frames) / 2
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert out.loss.item() != pytest.approx(reference.loss.item(), rel=0.1)
    # Each example alone (no padding at all) gives its own sums; the batch loss is their mean.
    alone = []
    for b, (length, target) in enumerate(zip(LENGTHS, TARGETS, strict=True)):
        single = model(hidden[:, b : b + 1, :length], mask[b : b + 1, :length], [target], zero_descriptor)
        alone.append(single.loss.item())
    assert out.loss.item() == pytest.approx(sum(alone) / 2, rel=1e-4)


def test_paper_loss_is_the_same_with_logits_at_the_loss_positions_only():
    """`decoder.loss_logits_only` hands the system (N, vocab) logits; the per-example sums match."""
    hidden, mask = encoder_outputs(LENGTHS)
    plain = make(loss_reduction="paper").eval()(hidden, mask, TARGETS)
    config = tiny_system(loss_reduction="paper")
    config = config.model_copy(
        update={"decoder": config.decoder.model_copy(update={"loss_logits_only": True})}
    )
    torch.manual_seed(0)
    fast = build_system(config, LAYERS, DIM, "tiny").eval()(hidden, mask, TARGETS)
    assert fast.loss.item() == pytest.approx(plain.loss.item(), rel=1e-5)
    assert fast.ce.item() == pytest.approx(plain.ce.item(), rel=1e-5)


def test_paper_loss_without_disentangle_is_the_summed_ce_per_example():
    model = make(disentangle=False, loss_reduction="paper").eval()
    hidden, mask = encoder_outputs(LENGTHS)
    out = model(hidden, mask, TARGETS)
    assert out.kl_content == out.kl_descriptor == 0
    tokens = sum(response_lengths(model, TARGETS))
    assert out.loss.item() == pytest.approx(out.ce.item() * tokens / 2, rel=1e-5)


def test_paper_loss_trains_both_branches():
    model = make(loss_reduction="paper").train()
    hidden, mask = encoder_outputs(LENGTHS)
    out = model(hidden, mask, TARGETS)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None for p in model.content.parameters())
    assert all(p.grad is not None for p in model.descriptor.parameters())


def test_tiny_llm_sizes_come_from_the_config():
    system = tiny_system(regime="full")
    sized = system.model_copy(
        update={
            "decoder": system.decoder.model_copy(
                update={"tiny": TinyLLMSettings(hidden_size=48, num_layers=1)}
            )
        }
    )
    model = build_system(sized, num_layers=3, encoder_dim=16, backbone="tiny")
    assert model.decoder.hidden_size == 48
    assert model.decoder.lm.config.num_hidden_layers == 1
