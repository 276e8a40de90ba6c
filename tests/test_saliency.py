"""Time saliency of the emotion decision (benchmark.explain.saliency) and the one timeline
(benchmark.explain.timeline): hand-built scorers whose answer is known, tiny real models, and a
synthetic signal with events at known times."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch

from benchmark.config import AdapterConfig, BottleneckConfig, DecoderSettings, StageConfig, SystemConfig
from benchmark.data.audio import SAMPLE_RATE
from benchmark.data.cues import HOP_SECONDS, frame_cues
from benchmark.data.tasks import format_response
from benchmark.errors import BenchmarkError
from benchmark.eval.label_scores import label_response
from benchmark.explain.saliency import (
    CaptionerEmotion,
    EncoderDecision,
    SaliencyMap,
    SSLEmotion,
    Window,
    gradient_saliency,
    occlusion_saliency,
    top_windows,
)
from benchmark.explain.timeline import (
    adapter_token_start,
    adapter_token_times,
    encoder_field_samples,
    encoder_frame_start,
    encoder_frame_times,
    encoder_hop_samples,
    frames_in_window,
    lld_frame_start,
)
from benchmark.nn.adapter import stack_frames
from benchmark.nn.decoder import IGNORE_INDEX, response_token_cross_entropy
from benchmark.nn.encoder import SpeechEncoder, build_encoder, prepare_waveforms
from benchmark.nn.ssl_baseline import SSLBaseline
from benchmark.nn.system import SpeechEmotionCaptioner, build_system

LABELS = ["angry", "happy", "neutral", "sad"]
STACK = 5
DURATION = 2.0


@pytest.fixture(scope="module")
def encoder() -> SpeechEncoder:
    return build_encoder("tiny", "hubert")


def tiny_system_config(targets: list[str]) -> SystemConfig:
    tasks = ["full"] if "descriptor" in targets else ["ser"]
    stage = StageConfig(name="joint", train=["content", "llm"], tasks=tasks, lr=1e-3, scheduler="constant")
    return SystemConfig(
        name="tiny",
        title="tiny",
        disentangle=True,
        beta=1e-4,
        targets=targets,
        schedule="joint",
        stages=[stage],
        bottleneck=BottleneckConfig(hidden_dim=16, latent_dim=8),
        adapter=AdapterConfig(stack=STACK, hidden_dim=32),
        decoder=DecoderSettings(regime="lora"),
    )


def tiny_captioner(encoder: SpeechEncoder, targets: list[str] | None = None) -> SpeechEmotionCaptioner:
    torch.manual_seed(0)
    config = tiny_system_config(targets or ["transcript", "descriptor", "emotion"])
    return build_system(config, encoder.num_layers, encoder.hidden_size, "tiny").eval()


def noise(seconds: float = DURATION, seed: int = 0, offset: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(0.0, 0.1, round(seconds * SAMPLE_RATE)) + offset).astype(np.float32)


def one(wave: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    waves = torch.from_numpy(wave)[None]
    return waves, torch.ones_like(waves, dtype=torch.bool)


# --- The decision being explained -------------------------------------------------------------


def test_response_log_probs_are_the_training_loss_per_token(encoder):
    model = tiny_captioner(encoder)
    generator = torch.Generator().manual_seed(1)
    hidden = torch.randn(encoder.num_layers, 2, 30, encoder.hidden_size, generator=generator)
    mask = torch.arange(30)[None, :] < torch.tensor([30, 17])[:, None]
    targets = ["Descriptor: a calm voice\nEmotion: neutral", "Emotion: angry"]
    per_token = model.response_log_probs(hidden, mask, targets)
    tokenizer = model.decoder.tokenizer
    assert [len(t) for t in per_token] == [
        len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1
        for t in targets  # + <|eot_id|>
    ]
    assert all((t < 0).all() for t in per_token)
    content, content_mask, descriptor, descriptor_mask, _, _ = model.embed(hidden, mask)
    out = model.decoder(content, content_mask, descriptor, descriptor_mask, targets)
    ce_sums, _ = response_token_cross_entropy(out.logits, out.batch.labels)
    assert torch.allclose(torch.stack([-t.sum() for t in per_token]), ce_sums, atol=1e-4)


def test_label_response_is_the_training_format_split_before_the_label():
    context, label = label_response("ser_sed", "a calm  voice", "angry")
    assert (context, label) == ("Descriptor: a calm voice\nEmotion:", " angry")
    assert context + label == format_response(None, "a calm voice", "angry")
    assert label_response("ser", "ignored", "sad") == ("Emotion:", " sad")
    assert label_response("ser_sed", None, "sad") == ("Descriptor:\nEmotion:", " sad")


def test_captioner_target_is_the_label_tokens_log_prob_of_a_plain_forward(encoder):
    model = tiny_captioner(encoder)
    response = "Descriptor: a calm voice\nEmotion: angry"
    decision = CaptionerEmotion.from_response(model, encoder, response, LABELS)
    assert decision.label == "angry" and decision.response == response
    assert decision.description == "log p(angry)"
    waves, mask = one(noise())
    value = decision.from_waveforms(waves, mask)
    assert value.shape == (1,) and math.isfinite(value.item()) and value.item() < 0
    assert torch.equal(value, decision.from_waveforms(waves, mask))  # eval mode: z = mu, no dropout

    # Independently: a plain teacher-forced forward, the label's tokens found by tokenising apart.
    out = encoder(waves, mask)
    content, content_mask, descriptor, descriptor_mask, _, _ = model.embed(out.hidden_states, out.frame_mask)
    forward = model.decoder(content, content_mask, descriptor, descriptor_mask, [response])
    tokenizer = model.decoder.tokenizer
    context_ids = tokenizer("Descriptor: a calm voice\nEmotion:", add_special_tokens=False)["input_ids"]
    label_ids = tokenizer(response, add_special_tokens=False)["input_ids"][len(context_ids) :]
    first = int((forward.batch.labels[0] != IGNORE_INDEX).nonzero()[0])  # the response's first token
    log_probs = forward.logits[0].float().log_softmax(dim=-1)
    expected = sum(log_probs[first + len(context_ids) + i - 1, token] for i, token in enumerate(label_ids))
    assert len(label_ids) >= 1
    assert value.item() == pytest.approx(float(expected), abs=1e-4)
    assert decision.from_hidden_states(out.hidden_states, out.frame_mask).item() == pytest.approx(
        value.item(), abs=1e-5
    )

    other = CaptionerEmotion(model, encoder, "sad", descriptor="a calm voice")
    assert abs(other.from_waveforms(waves, mask).item() - value.item()) > 1e-4


@pytest.mark.parametrize(
    ("targets", "prefix"),
    [(["transcript", "descriptor", "emotion"], "Descriptor:"), (["transcript", "emotion"], "Emotion:")],
)
def test_predicted_explains_the_generated_answer_of_the_emotion_task(encoder, targets, prefix):
    model = tiny_captioner(encoder, targets)
    asked = []

    def generate(hidden_states, frame_mask, response_prefix, max_new_tokens):
        asked.append(response_prefix)
        descriptor = "" if response_prefix == "Emotion:" else "Descriptor: a loud voice\n"
        return [f"{descriptor}Emotion: Sad."]

    model.generate = generate
    decision = CaptionerEmotion.predicted(model, encoder, noise(), LABELS)
    assert asked == [prefix] and decision.label == "sad"
    expected = "Descriptor: a loud voice\nEmotion: sad" if prefix == "Descriptor:" else "Emotion: sad"
    assert decision.response == expected
    with pytest.raises(BenchmarkError, match="no single emotion label"):
        CaptionerEmotion.from_response(model, encoder, "Descriptor: calm\nEmotion: angry or sad", LABELS)


def test_ssl_target_is_the_classifier_logit(encoder):
    torch.manual_seed(0)
    model = SSLBaseline(encoder.num_layers, encoder.hidden_size, LABELS, hidden_dim=16).eval()
    waves, mask = one(noise())
    out = encoder(waves, mask)
    logits, _ = model(out.hidden_states, out.frame_mask)
    decision = SSLEmotion.predicted(model, encoder, noise())
    assert decision.label == LABELS[int(logits.argmax())]
    for label in LABELS:
        value = SSLEmotion(model, encoder, label).from_waveforms(waves, mask)
        assert value.item() == pytest.approx(logits[0, LABELS.index(label)].item(), abs=1e-6)


# --- Methods on hand-built scorers ------------------------------------------------------------

SEGMENT = (0.60, 0.75)


class SegmentLoudness:
    """Reads only the RMS of the samples in SEGMENT of the waveform."""

    description = "rms(0.60-0.75 s)"

    def from_waveforms(self, waves: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        start, end = (round(t * SAMPLE_RATE) for t in SEGMENT)
        return waves[:, start:end].pow(2).mean(dim=1).sqrt()


@pytest.mark.parametrize("baseline", ["silence", "mean"])
def test_occlusion_peaks_on_the_segment_that_decides(baseline):
    wave = noise(offset=0.05)  # a DC offset, so that the `mean` baseline is not silence
    saliency = occlusion_saliency(SegmentLoudness(), wave, baseline=baseline)
    assert saliency.method == "occlusion" and saliency.baseline == baseline
    assert saliency.hop == pytest.approx(0.05) and saliency.duration == DURATION
    assert saliency.times[0] == 0 and len(saliency.times) == round(DURATION / 0.05)
    best = top_windows(saliency, k=1)[0]
    assert best.start < SEGMENT[1] and best.end > SEGMENT[0]
    peak = saliency.times[int(np.argmax(saliency.values))]
    assert SEGMENT[0] <= peak < SEGMENT[1]
    # No window that touches the segment covers a bin more than a window away from it.
    far = (saliency.times + saliency.hop <= SEGMENT[0] - 0.15) | (saliency.times >= SEGMENT[1] + 0.15)
    assert far.sum() > 20
    assert np.abs(saliency.values[far]).max() < 1e-6 * saliency.values.max()


def test_occlusion_baselines_differ_and_are_stated():
    wave = noise(offset=0.05)
    silence = occlusion_saliency(SegmentLoudness(), wave, baseline="silence")
    mean = occlusion_saliency(SegmentLoudness(), wave, baseline="mean")
    assert not np.allclose(silence.values, mean.values)
    with pytest.raises(ValueError):
        occlusion_saliency(SegmentLoudness(), wave, baseline="noise")
    with pytest.raises(ValueError):
        occlusion_saliency(SegmentLoudness(), wave, window_s=0.05, stride_s=0.1)


class FrameEnergy(EncoderDecision):
    """Reads only encoder frames 40-49: 20 ms frames, so 0.80-1.00 s of the audio."""

    description = "energy(0.80-1.00 s)"

    def from_hidden_states(self, hidden_states: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        return hidden_states[:, :, 40:50].pow(2).sum(dim=(0, 2, 3))


@pytest.fixture(scope="module")
def biased_encoder() -> SpeechEncoder:
    """A tiny encoder whose silence is not all-zero hidden states (the random one's is: no biases),
    so that the `silence` and `zeros` baselines of integrated gradients can be told apart."""
    encoder = build_encoder("tiny", "hubert")
    bias = encoder.model.feature_projection.projection.bias
    bias.copy_(torch.randn(bias.shape, generator=torch.Generator().manual_seed(0)))
    return encoder


@pytest.mark.parametrize(
    ("method", "baseline"),
    [("input_x_gradient", "zeros"), ("integrated_gradients", "zeros"), ("integrated_gradients", "silence")],
)
def test_gradient_methods_put_the_mass_on_the_frames_that_decide(biased_encoder, method, baseline):
    encoder, wave = biased_encoder, noise()
    saliency = gradient_saliency(FrameEnergy(encoder), wave, method=method, baseline=baseline, n_steps=16)
    assert saliency.method == method and saliency.baseline == baseline
    assert saliency.hop == pytest.approx(0.02) and saliency.times[0] == 0
    assert len(saliency.values) == int(encoder.frame_lengths(torch.tensor([len(wave)]))[0])
    inside = (saliency.times >= 0.8 - 1e-9) & (saliency.times < 1.0 - 1e-9)
    assert inside.sum() == 10
    assert np.abs(saliency.values[~inside]).max() == 0
    assert np.abs(saliency.values[inside]).min() > 0
    if baseline == "zeros":  # x * grad of x^2 is 2x^2; the straight path from 0 gives x^2: all positive
        best = top_windows(saliency, k=1)[0]
        assert best.start >= 0.8 - 1e-9 and best.end <= 1.0 + 1e-9
    else:  # completeness: attributions add up to f(x) - f(the silent waveform's hidden states)
        decision = FrameEnergy(encoder)
        waves, mask = one(wave)
        silent = decision.from_waveforms(torch.zeros_like(waves), mask)
        assert silent.item() > 0.1 * decision.from_waveforms(waves, mask).item()  # not the zeros baseline
        gap = decision.from_waveforms(waves, mask) - silent
        assert saliency.values.sum() == pytest.approx(gap.item(), rel=1e-2)


# --- One timeline -----------------------------------------------------------------------------

ONSETS = (0.53, 1.31)  # off every frame grid, so that a frame boundary cannot hide an error
BURST = 0.1


def bursts(onsets: tuple[float, ...] = ONSETS) -> np.ndarray:
    """Silence with a 220 Hz tone burst of BURST seconds at each of `onsets`."""
    t = np.arange(round(DURATION * SAMPLE_RATE)) / SAMPLE_RATE
    wave = np.zeros_like(t)
    for onset in onsets:
        inside = (t >= onset) & (t < onset + BURST)
        wave[inside] = 0.5 * np.sin(2 * np.pi * 220 * (t[inside] - onset))
    return wave.astype(np.float32)


def onsets(times: np.ndarray, active: np.ndarray) -> list[float]:
    """Start times of the frames where a run of active frames begins."""
    starts = active & ~np.concatenate([[False], active[:-1]])
    return [float(t) for t in times[starts]]


def test_timeline_arithmetic(encoder):
    assert encoder_hop_samples(encoder) == 320 and encoder_field_samples(encoder) == 400
    assert encoder_frame_start(encoder, 25) == pytest.approx(0.5)
    assert adapter_token_start(encoder, 3, STACK) == pytest.approx(0.3)
    assert lld_frame_start(7) == pytest.approx(0.07)
    assert np.allclose(encoder_frame_times(encoder, 32000), np.arange(99) * 0.02)
    assert np.allclose(adapter_token_times(encoder, 32000, STACK), np.arange(20) * 0.1)
    times = np.arange(50) * 0.02
    inside = frames_in_window(times, Window(0.1, 0.2, 1.0))
    assert np.flatnonzero(inside).tolist() == [5, 6, 7, 8, 9]  # a frame starting at the end is out


def test_encoder_frames_and_adapter_tokens_put_the_events_at_their_times(encoder):
    wave = bursts()
    waves, mask = one(wave)
    # Frame timing is made by the conv front end; the transformer above mixes frames on purpose.
    inputs = prepare_waveforms(waves, mask, encoder.do_normalize)
    with torch.no_grad():
        features = encoder.model.feature_extractor(inputs)[0].T  # (F, C)
    times = encoder_frame_times(encoder, len(wave))
    assert len(times) == features.shape[0] == encoder(waves, mask).hidden_states.shape[2]
    change = (features - features[0]).abs().amax(dim=1)  # frame 0 hears only silence
    active = (change > 1e-4 * change.max()).numpy()
    field = encoder_field_samples(encoder) / SAMPLE_RATE
    found = onsets(times, active)
    assert len(found) == len(ONSETS)
    for start, onset in zip(found, ONSETS, strict=True):
        assert onset - field < start <= onset  # the first frame whose window reaches the onset

    stacked, _ = stack_frames(change[None, :, None], torch.ones(1, len(change), dtype=torch.bool), STACK)
    token_active = (stacked[0] > 1e-4 * change.max()).any(dim=1).numpy()
    token_times = adapter_token_times(encoder, len(wave), STACK)
    assert len(token_times) == len(token_active)
    token_field = (STACK - 1) * encoder_hop_samples(encoder) / SAMPLE_RATE + field
    found = onsets(token_times, token_active)
    assert len(found) == len(ONSETS)
    for start, onset in zip(found, ONSETS, strict=True):
        assert onset - token_field < start <= onset


# Off the 10 ms LLD grid at three phases, the last 1 ms short of the next frame.
LLD_ONSETS = (0.532, 1.017, 1.539)


@pytest.mark.slow
def test_egemaps_frames_put_the_events_at_their_times(tmp_path):
    path = tmp_path / "bursts.wav"
    sf.write(path, bursts(LLD_ONSETS), SAMPLE_RATE)
    lld = frame_cues(path)
    assert np.allclose(lld.index.to_numpy(), lld_frame_start(np.arange(len(lld))))
    loudness = lld["Loudness_sma3"].to_numpy()
    silence = loudness[lld.index.to_numpy() < LLD_ONSETS[0] - 0.1].max()
    found = onsets(lld.index.to_numpy(), loudness > 10 * silence)
    assert len(found) == len(LLD_ONSETS)
    # Loudness is measured over 20 ms windows and smoothed over 3 frames (`_sma3`, centred), so LLD
    # frame k hears [start_k - 10 ms, start_k + 30 ms): the first frame that hears an onset is
    # exactly the first whose start is later than 30 ms before it.
    for start, onset in zip(found, LLD_ONSETS, strict=True):
        assert start == pytest.approx(lld_frame_start(math.floor((onset - 0.03) / HOP_SECONDS) + 1))


class TotalLoudness:
    description = "rms"

    def from_waveforms(self, waves: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return waves.pow(2).mean(dim=1).sqrt()


def test_occlusion_finds_the_events_and_the_map_covers_the_whole_utterance(encoder):
    wave = bursts()
    saliency = occlusion_saliency(TotalLoudness(), wave)
    assert saliency.times[0] == 0 and saliency.duration == DURATION
    assert saliency.times[-1] < DURATION <= saliency.times[-1] + saliency.hop + 1e-9
    windows = top_windows(saliency, k=2)
    assert len(windows) == 2
    for onset in ONSETS:
        assert any(w.start < onset + BURST and w.end > onset for w in windows)
    frames = gradient_saliency(FrameEnergy(encoder), wave, method="input_x_gradient")
    field = encoder_field_samples(encoder) / SAMPLE_RATE
    assert frames.times[0] == 0 and frames.times[-1] + field > DURATION - frames.hop


# --- Top-k windows ----------------------------------------------------------------------------


def hand_map(values: np.ndarray, hop: float = 0.05, duration: float = DURATION) -> SaliencyMap:
    return SaliencyMap(np.arange(len(values)) * hop, hop, values, duration, "hand", "test", "none")


def test_top_windows_ignore_values_below_the_mean_and_stay_inside_the_clip():
    values = np.full(40, 0.1)
    values[10:13] = 5.0  # 0.50-0.65 s
    values[24:26] = 3.0  # 1.20-1.30 s
    values[38:40] = 4.0  # 1.90-2.00 s: the window must end at 2.0, not beyond
    values[30:33] = -2.0
    windows = top_windows(hand_map(values), k=5)
    # Only the three peaks stand above the mean; 0.1 and the negative bins count as zero, so no
    # fourth window has any saliency, and the sums carry no 0.1.
    assert [w.saliency for w in windows] == pytest.approx([15.0, 8.0, 6.0])
    assert (windows[0].start, windows[0].end) == pytest.approx((0.5, 0.65))
    assert (windows[1].start, windows[1].end) == pytest.approx((1.85, 2.0))
    assert windows[2].start <= 1.2 and windows[2].end >= 1.3


def test_top_windows_are_non_overlapping_sorted_and_inside():
    rng = np.random.default_rng(0)
    saliency = hand_map(rng.normal(size=97), hop=0.02, duration=1.95)
    windows = top_windows(saliency, k=5, window_s=0.15)
    assert len(windows) == 5
    assert [w.saliency for w in windows] == sorted((w.saliency for w in windows), reverse=True)
    for w in windows:
        assert 0 <= w.start < w.end <= saliency.duration and w.end - w.start == pytest.approx(0.15)
    for a in windows:
        for b in windows:
            assert a is b or a.end <= b.start + 1e-9 or b.end <= a.start + 1e-9
    # The last bin's only window inside the clip, [1.85, 2.0), overlaps the best one: no window for
    # it, rather than one running past the end.
    values = np.zeros(40)
    values[35:38], values[39] = 10.0, 5.0
    windows = top_windows(hand_map(values), k=5)
    assert [(w.start, w.end) for w in windows] == [(1.75, 1.9)]  # whole samples: exact
    short = top_windows(hand_map(np.array([1.0, 2.0]), hop=0.05, duration=0.1), k=3)
    assert [(w.start, w.end) for w in short] == [(0.0, 0.1)]
