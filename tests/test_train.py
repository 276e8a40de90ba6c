from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from benchmark.config import (
    AdapterConfig,
    BottleneckConfig,
    DecoderSettings,
    StageConfig,
    SystemConfig,
    TrainingSettings,
)
from benchmark.data.examples import Example, target_for
from benchmark.errors import BenchmarkError
from benchmark.nn.decoder import IGNORE_INDEX
from benchmark.nn.system import SpeechEmotionCaptioner, build_system
from benchmark.train.data import collate, epoch_plan
from benchmark.train.loop import train
from benchmark.train.schedule import build_scheduler

LAYERS, DIM = 3, 12
WORDS = ["yes", "no", "maybe", "hello", "again", "never"]
EMOTIONS = ["angry", "happy", "sad", "neutral"]


def alternating(epochs: tuple[int, int] = (1, 1), batch_size: int = 2, grad_accum: int = 1) -> SystemConfig:
    """The paper's alternating schedule (section 4.4) on a tiny system."""
    stages = [
        StageConfig(
            name="content",
            train=["content", "llm"],
            tasks=["asr"],
            zero_descriptor=True,
            epochs=epochs[0],
            lr=2e-4,
            scheduler="constant",
            warmup_ratio=0.03,
        ),
        StageConfig(
            name="descriptor",
            train=["descriptor", "llm"],
            tasks=["ser_sed", "asr"],
            epochs=epochs[1],
            lr=2e-5,
            scheduler="cosine",
        ),
    ]
    return SystemConfig(
        name="tiny-alternating",
        title="tiny",
        targets=["transcript", "descriptor", "emotion"],
        schedule="alternating",
        stages=stages,
        bottleneck=BottleneckConfig(hidden_dim=16, latent_dim=8),
        adapter=AdapterConfig(stack=2, hidden_dim=32),
        decoder=DecoderSettings(regime="lora"),
        training=TrainingSettings(batch_size=batch_size, grad_accum=grad_accum, seed=3),
    )


def make(system: SystemConfig, seed: int = 0) -> SpeechEmotionCaptioner:
    torch.manual_seed(seed)
    return build_system(system, LAYERS, DIM, "tiny")


def examples(count: int = 6, seed: int = 0) -> list[Example]:
    """Random encoder outputs; every third utterance has no descriptor (an emotion-only ser_sed response)."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for i in range(count):
        frames = 3 + i % 5
        features = torch.randn(LAYERS, frames, DIM, generator=generator)
        transcript = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(2))
        descriptor = None if i % 3 == 2 else f"a {'high' if i % 2 else 'low'} pitched voice"
        out.append(Example(f"u{i}", features, transcript, descriptor, EMOTIONS[i % 4]))
    return out


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_targets_and_task_interleaving():
    data = examples(6)
    assert target_for(data[0], "asr") == f"Transcript: {data[0].transcript}"
    assert target_for(data[0], "ser") == "Emotion: angry"
    assert target_for(data[0], "ser_sed") == f"Descriptor: {data[0].descriptor}\nEmotion: angry"
    assert target_for(data[2], "ser_sed") == f"Emotion: {data[2].emotion}"  # no descriptor: left out
    assert target_for(data[2], "full") == f"Transcript: {data[2].transcript}\nEmotion: {data[2].emotion}"
    assert target_for(data[0], "full").splitlines()[0].startswith("Transcript:")
    no_emotion = Example("x", data[0].features, "a transcript", "a descriptor", None)
    assert target_for(no_emotion, "ser_sed") is None and target_for(no_emotion, "asr") is not None

    plan = epoch_plan(data[:5], ["ser_sed", "asr"], batch_size=2, seed=0, epoch=0)
    assert [task for task, _ in plan] == ["ser_sed", "asr", "ser_sed", "asr", "ser_sed", "asr"]
    plan = epoch_plan(data, ["ser", "asr"], batch_size=4, seed=0, epoch=0)
    assert [task for task, _ in plan] == ["ser", "asr", "ser", "asr"]
    plan = epoch_plan(data, ["ser_sed", "asr"], batch_size=2, seed=0, epoch=0)
    for task, expected in [("asr", set(range(6))), ("ser_sed", set(range(6)))]:
        visited = [i for t, batch in plan if t == task for i in batch]
        assert sorted(visited) == sorted(expected)  # every eligible utterance once per task
    assert epoch_plan(data, ["ser_sed", "asr"], 2, 0, 1) != plan  # a new order each epoch
    assert epoch_plan(data, ["ser_sed", "asr"], 2, 0, 1) == epoch_plan(data, ["ser_sed", "asr"], 2, 0, 1)

    task, indices = plan[0]
    batch = collate([data[i] for i in indices], task)
    assert batch.targets == [target_for(data[i], task) for i in indices]
    lengths = [data[i].num_frames for i in indices]
    assert batch.inputs.values.shape == (LAYERS, 2, max(lengths), DIM)
    assert batch.inputs.mask.sum(1).tolist() == lengths
    assert batch.inputs.values[:, ~batch.inputs.mask].abs().sum() == 0


def test_each_stage_updates_exactly_its_module_groups():
    system = alternating()
    model = make(system)
    hidden = collate(examples(2), "asr")

    # Stage 1: descriptor tokens are zero, so the descriptor branch gets no gradient and no KL.
    model.set_trainable(["content", "llm"])
    model.train()
    out = model(hidden.inputs.values, hidden.inputs.mask, hidden.targets, zero_descriptor=True)
    assert out.kl_descriptor == 0 and torch.allclose(out.loss, out.ce + system.beta * out.kl_content)
    out.loss.backward()
    assert all(p.grad is None for p in model.descriptor.parameters())
    assert all(p.grad is not None for p in model.content.parameters())
    assert all(p.grad is None for n, p in model.decoder.named_parameters() if "lora_" not in n)

    # Through the loop: stage 1 moves content + LoRA; stage 2 moves descriptor + LoRA, not content.
    data = examples(6)
    before = params(model)
    stage1 = make(system.model_copy(update={"stages": system.stages[:1]}))
    train(stage1, data, progress=False)
    after1 = params(stage1)
    changed = {n for n in before if not torch.equal(before[n], after1[n])}
    assert changed and all(n.startswith("content.") or "lora_" in n for n in changed)
    assert any(n.startswith("content.") for n in changed)

    model = make(system)
    start = params(model)
    train(model, data, progress=False)
    end = params(model)
    moved = {n for n in start if not torch.equal(start[n], end[n])}
    assert {n.split(".")[0] for n in moved} == {"content", "descriptor", "decoder"}
    assert all("lora_" in n for n in moved if n.startswith("decoder."))
    assert {n for n in moved if n.startswith("content.")} == {n for n in changed if n.startswith("content.")}
    # The content branch ends exactly where stage 1 left it: stage 2 froze it.
    for name in (n for n in end if n.startswith("content.")):
        assert torch.equal(end[name], after1[name]), name


def test_loss_is_the_cross_entropy_of_response_tokens_only():
    model = make(alternating()).eval()
    batch = collate(examples(2), "full")
    out = model(batch.inputs.values, batch.inputs.mask, batch.targets)
    content, content_mask, descriptor, descriptor_mask, _, _ = model.embed(
        batch.inputs.values, batch.inputs.mask
    )
    dec = model.decoder(content, content_mask, descriptor, descriptor_mask, batch.targets)
    labels = dec.batch.labels
    tokenizer = model.decoder.tokenizer
    responses = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in batch.targets]
    assert (
        (labels != IGNORE_INDEX).sum(1).tolist() == responses == [out.num_tokens - responses[1], responses[1]]
    )
    logits, shifted = dec.logits[:, :-1], labels[:, 1:]
    keep = shifted != IGNORE_INDEX
    assert torch.allclose(out.ce, F.cross_entropy(logits[keep], shifted[keep]), atol=1e-6)


def test_lr_schedules_warm_up_then_hold_or_decay():
    def lrs(stage: StageConfig, total: int) -> list[float]:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=stage.lr)
        scheduler = build_scheduler(optimizer, stage, total)
        values = []
        for _ in range(total + 1):
            values.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        return values

    constant = StageConfig(
        name="a", train=["llm"], tasks=["asr"], lr=2e-4, scheduler="constant", warmup_ratio=0.03
    )
    values = lrs(constant, 100)  # warm-up ceil(0.03 * 100) = 3 steps
    assert values[:4] == pytest.approx([0.0, 2e-4 / 3, 4e-4 / 3, 2e-4])
    assert values[50] == values[100] == pytest.approx(2e-4)
    cosine = StageConfig(
        name="b", train=["llm"], tasks=["asr"], lr=2e-5, scheduler="cosine", warmup_ratio=0.2
    )
    values = lrs(cosine, 10)  # warm-up 2 steps, then half a cosine over 8
    assert values[1] == pytest.approx(1e-5) and values[2] == pytest.approx(2e-5)
    assert values[6] == pytest.approx(1e-5) and values[4] == pytest.approx(1e-5 * (1 + math.cos(math.pi / 4)))
    assert values[10] == pytest.approx(0.0, abs=1e-12)


class Crash(Exception):
    pass


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path):
    system, data = alternating(epochs=(1, 2), grad_accum=2), examples(6)
    logged: list[tuple[int, float]] = []
    straight = make(system)
    history = train(
        straight, data, log=lambda m, step: logged.append((step, m["train.loss"])), progress=False
    )
    assert [step for step, _ in logged] == [h["step"] for h in history] == list(range(1, len(history) + 1))
    assert history[0]["train.lr"] == 0.0 and history[1]["train.lr"] == pytest.approx(2e-4)  # stage 1 warm-up

    stage1_steps = math.ceil(3 / 2)  # 3 asr batches, accumulated in pairs
    stage2_epoch_steps = math.ceil(5 / 2)  # 2 ser_sed + 3 asr batches
    crash_at = stage1_steps + stage2_epoch_steps + 1  # in the second epoch of stage 2

    def crash(metrics: dict[str, float], step: int) -> None:
        if step == crash_at:
            raise Crash

    with pytest.raises(Crash):
        train(make(system), data, checkpoint_dir=tmp_path, log=crash, progress=False)

    fresh = make(system)  # a new process: the frozen LLM rebuilt, trained weights scrambled
    with torch.no_grad():
        for p in fresh.content.parameters():
            p.add_(1.0)
    resumed = train(fresh, data, checkpoint_dir=tmp_path, resume=True, progress=False)
    assert [h["step"] for h in resumed] == [h["step"] for h in history[crash_at - 1 :]]
    for a, b in zip(resumed, history[crash_at - 1 :], strict=True):
        assert a["train.loss"] == pytest.approx(b["train.loss"], abs=1e-6)
        assert a["train.lr"] == pytest.approx(b["train.lr"], abs=1e-12)
    expected = params(straight)
    for name, value in params(fresh).items():
        assert torch.allclose(value, expected[name], atol=1e-6), name


def test_a_task_without_rows_fails_before_anything_trains(tmp_path):
    """Rows with transcripts only: stage 1 (asr) could train, but stage 2's ser_sed has no row."""
    data = [Example(e.id, e.features, e.transcript, None, None, dataset="asr-only") for e in examples(4)]
    logged = []
    model = make(alternating())
    before = params(model)
    with pytest.raises(BenchmarkError) as caught:
        train(
            model, data, checkpoint_dir=tmp_path / "ckpt", log=lambda m, s: logged.append(m), progress=False
        )
    assert caught.value.message == (
        "stage 'descriptor': task 'ser_sed' has no training rows: it needs emotion "
        "(descriptor optional), and no row of asr-only has it"
    )
    assert not logged and not (tmp_path / "ckpt").exists()
    assert all(torch.equal(before[name], value) for name, value in params(model).items())
