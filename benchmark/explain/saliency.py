"""Time saliency of the emotion decision, on the original audio's timeline, for every kind of system.

The explained number (`Decision`): for LLM captioners (`CaptionerEmotion`) the log-probability of
the predicted label's tokens, teacher-forcing the generated response up to the label; for SSL
baselines (`SSLEmotion`) the classifier's logit of the predicted label. Both run from waveforms
(occlusion) or hidden states (gradients), in eval mode. Methods, through Captum:
- `occlusion_saliency`: waveform windows replaced by a `silence` or `mean` baseline;
- `gradient_saliency`: input x gradient or integrated gradients on all hidden states, summed per
  frame (baseline: a silent waveform's hidden states, or zeros).
Nothing is trimmed: every map covers the whole utterance in seconds of the original 16 kHz audio.
`top_windows` zeroes values below the map's mean, as the reference paper does, and keeps the k
non-overlapping windows with the largest sums. docs/design.md has the details.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import torch
from captum.attr import InputXGradient, IntegratedGradients, Occlusion

from benchmark.config import Task
from benchmark.data.audio import SAMPLE_RATE
from benchmark.data.tasks import parse_response, response_prefix
from benchmark.errors import BenchmarkError
from benchmark.eval.label_scores import emotion_task, label_response, label_tokens
from benchmark.explain.timeline import encoder_frame_start, encoder_hop_samples
from benchmark.nn.encoder import SpeechEncoder
from benchmark.nn.ssl_baseline import SSLBaseline
from benchmark.nn.system import SpeechEmotionCaptioner

OcclusionBaseline = Literal["silence", "mean"]
GradientMethod = Literal["input_x_gradient", "integrated_gradients"]
GradientBaseline = Literal["silence", "zeros"]
Waveform = np.ndarray | torch.Tensor  # one utterance, mono, 16 kHz, shape (S,)


@dataclass(frozen=True, eq=False)
class SaliencyMap:
    """Relevance over the utterance's own timeline: bin i covers [times[i], times[i] + hop)."""

    times: np.ndarray  # (N,) start of each bin, seconds of the original audio (times[0] = 0)
    hop: float  # seconds between bin starts
    values: np.ndarray  # (N,) relevance of each bin for the target (higher: the target needs it more)
    duration: float  # seconds of the whole utterance; the bins cover [0, duration]
    method: str  # "occlusion", "input_x_gradient" or "integrated_gradients"
    target: str  # what was explained, e.g. "log p(angry)"
    baseline: str  # what the input was compared with: "silence", "mean" or "zeros"


@dataclass(frozen=True)
class Window:
    """A stretch of the original audio, [start, end) in seconds, and its summed saliency."""

    start: float
    end: float
    saliency: float


class WaveformDecision(Protocol):
    """A scalar per utterance computed from waveforms: all that occlusion needs."""

    description: str  # e.g. "log p(angry)"

    def from_waveforms(self, waves: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """waves (B, S) at 16 kHz, mask (B, S) True on real samples -> (B,)."""
        ...


class ProbabilityDecision(WaveformDecision, Protocol):
    """A decision whose label also has a probability (what the deletion test measures)."""

    def probability(self, waves: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """waves (B, S), mask (B, S) -> (B,) the probability of the explained label."""
        ...


class Decision(WaveformDecision, Protocol):
    """A decision that can also be computed from the frozen encoder's outputs (gradient methods)."""

    encoder: SpeechEncoder

    def from_hidden_states(self, hidden_states: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """hidden_states (L+1, B, F, D), frame_mask (B, F) -> (B,)."""
        ...


class EncoderDecision(ABC):
    """A decision on the encoder's outputs; from waveforms it runs the frozen encoder first.

    Subclasses say how the decision reads the hidden states, which is what the gradient methods
    attribute on.
    """

    description = "decision"

    def __init__(self, encoder: SpeechEncoder) -> None:
        self.encoder = encoder

    def from_waveforms(self, waves: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = self.encoder(waves, mask)
        return self.from_hidden_states(out.hidden_states, out.frame_mask)

    @abstractmethod
    def from_hidden_states(self, hidden_states: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """hidden_states (L+1, B, F, D), frame_mask (B, F) -> the decision's value per utterance (B,)."""


def _one_utterance(wave: Waveform) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, S) float32 waveform and its all-True mask."""
    waves = torch.as_tensor(wave).detach().to(torch.float32).reshape(1, -1)
    return waves, torch.ones_like(waves, dtype=torch.bool)


class CaptionerEmotion(EncoderDecision):
    """log p(label tokens | audio, prompt, response up to `Emotion:`) of an LLM captioner."""

    def __init__(
        self,
        model: SpeechEmotionCaptioner,
        encoder: SpeechEncoder,
        label: str,
        descriptor: str | None = None,
        task: Task | None = None,
    ) -> None:
        super().__init__(encoder)
        self.model = model.eval()
        self.label = label
        self.task = task or emotion_task(model)
        context, label_text = label_response(self.task, descriptor, label)
        self.response = context + label_text
        self.label_tokens = label_tokens(model, context, label_text)
        self.description = f"log p({label})"

    @classmethod
    def from_response(
        cls, model: SpeechEmotionCaptioner, encoder: SpeechEncoder, response: str, labels: list[str]
    ) -> CaptionerEmotion:
        """The decision of a generated `response`: its emotion label, after its own descriptor."""
        parsed = parse_response(response, labels)
        if not parsed.valid_emotion:
            raise BenchmarkError(
                f"the response names no single emotion label of {labels}: {response!r}",
                hint="an unparseable answer has no label whose evidence could be mapped",
            )
        return cls(model, encoder, parsed.emotion, parsed.descriptor)

    @classmethod
    def predicted(
        cls, model: SpeechEmotionCaptioner, encoder: SpeechEncoder, wave: Waveform, labels: list[str]
    ) -> CaptionerEmotion:
        """Generate the emotion response for `wave` as `predict` does, and explain its label."""
        waves, mask = _one_utterance(wave)
        out = encoder(waves, mask)
        (response,) = model.eval().generate(
            out.hidden_states,
            out.frame_mask,
            response_prefix(emotion_task(model)),
            max_new_tokens=model.config.decoder.max_new_tokens,
        )
        return cls.from_response(model, encoder, response, labels)

    @torch.no_grad()
    def probability(self, waves: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """p(label tokens | ...) per waveform: the probability the deletion test compares."""
        return self.from_waveforms(waves, mask).exp()

    def from_hidden_states(self, hidden_states: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        targets = [self.response] * hidden_states.shape[1]
        per_token = self.model.response_log_probs(hidden_states, frame_mask, targets)
        return torch.stack([log_probs[self.label_tokens].sum() for log_probs in per_token])


class SSLEmotion(EncoderDecision):
    """The emotion classifier's logit of `label` for an SSL baseline."""

    def __init__(self, model: SSLBaseline, encoder: SpeechEncoder, label: str) -> None:
        super().__init__(encoder)
        if label not in model.labels:
            raise BenchmarkError(f"'{label}' is not one of the classifier's labels {model.labels}")
        self.model = model.eval()
        self.label = label
        self.index = model.labels.index(label)
        self.description = f"logit({label})"

    @classmethod
    def predicted(cls, model: SSLBaseline, encoder: SpeechEncoder, wave: Waveform) -> SSLEmotion:
        """The decision for the label the baseline predicts for `wave`."""
        waves, mask = _one_utterance(wave)
        out = encoder(waves, mask)
        (label,), _ = model.eval().predict(out.hidden_states, out.frame_mask)
        return cls(model, encoder, label)

    def from_hidden_states(self, hidden_states: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        emotion_logits, _ = self.model(hidden_states, frame_mask)
        return emotion_logits[:, self.index]

    @torch.no_grad()
    def probability(self, waves: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The classifier's softmax probability of the label per waveform (the deletion test)."""
        out = self.encoder(waves, mask)
        emotion_logits, _ = self.model(out.hidden_states, out.frame_mask)
        return emotion_logits.softmax(dim=-1)[:, self.index]


def _bin_samples(per_sample: np.ndarray, hop_s: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Mean of per-sample values over bins of `hop_s` seconds from time 0: (times, values, hop).

    The last bin may be shorter; it is the mean of the samples it has, so the tail is kept.
    """
    hop = max(1, round(hop_s * SAMPLE_RATE))
    count = math.ceil(len(per_sample) / hop)
    padded = np.full(count * hop, np.nan)
    padded[: len(per_sample)] = per_sample
    values = np.nanmean(padded.reshape(count, hop), axis=1)
    return np.arange(count) * hop / SAMPLE_RATE, values, hop / SAMPLE_RATE


def occlusion_saliency(
    decision: WaveformDecision,
    wave: Waveform,
    window_s: float = 0.15,
    stride_s: float = 0.05,
    baseline: OcclusionBaseline = "silence",
    hop_s: float | None = None,
    perturbations_per_eval: int = 16,
) -> SaliencyMap:
    """Occlusion of windows of the waveform: the target's drop, averaged over covering windows.

    Captum slides a window of `window_s` seconds by `stride_s` over the whole utterance (the last
    window is cut at the end, so every sample is occluded at least once), replaces it with the
    baseline (`silence`: 0.0; `mean`: the utterance's mean sample value) and gives each sample the
    mean drop of the windows that cover it. The map averages those over bins of `hop_s` seconds
    (default: the stride) from time 0 to the end. `perturbations_per_eval` occluded copies go
    through the model at once.
    """
    waves, _ = _one_utterance(wave)
    length = waves.shape[1]
    window = min(max(1, round(window_s * SAMPLE_RATE)), length)
    stride = max(1, round(stride_s * SAMPLE_RATE))
    if stride > window:
        raise ValueError(f"stride {stride_s} s is longer than the window {window_s} s: samples go unseen")
    if baseline not in ("silence", "mean"):
        raise ValueError(f"occlusion baseline must be 'silence' or 'mean', got {baseline!r}")
    fill = 0.0 if baseline == "silence" else float(waves.mean())

    def forward(batch: torch.Tensor) -> torch.Tensor:
        return decision.from_waveforms(batch, torch.ones_like(batch, dtype=torch.bool))

    attributions = Occlusion(forward).attribute(
        waves,
        sliding_window_shapes=(window,),
        strides=(stride,),
        baselines=fill,
        perturbations_per_eval=perturbations_per_eval,
    )
    per_sample = attributions[0].detach().cpu().double().numpy()
    times, values, hop = _bin_samples(per_sample, hop_s or stride_s)
    return SaliencyMap(times, hop, values, length / SAMPLE_RATE, "occlusion", decision.description, baseline)


def gradient_saliency(
    decision: Decision,
    wave: Waveform,
    method: GradientMethod = "integrated_gradients",
    baseline: GradientBaseline = "silence",
    n_steps: int = 32,
    internal_batch_size: int | None = 8,
) -> SaliencyMap:
    """Input x gradient or integrated gradients on the encoder's hidden states, per frame.

    Attributions are summed over the L+1 hidden states and their dimensions of each frame (signed:
    positive where a frame raises the target) and placed at the frame's start time. Input x
    gradient compares implicitly with all-zero hidden states; integrated gradients (`n_steps` steps,
    `internal_batch_size` at a time) start from `baseline`: `silence`, the hidden states of a
    silent waveform of the same length, or `zeros`. The frames are the encoder's own
    (`SpeechEncoder.frame_lengths`), so the map ends where the last full frame does.
    """
    waves, mask = _one_utterance(wave)
    encoder = decision.encoder
    out = encoder(waves, mask)
    # (1, L+1, F, D): Captum wants the batch first; the encoder's outputs carry no gradient of their own
    hidden = out.hidden_states.transpose(0, 1).float().requires_grad_()

    def forward(states: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        return decision.from_hidden_states(states.transpose(0, 1), frame_mask)

    if method == "input_x_gradient":
        attributions = InputXGradient(forward).attribute(hidden, additional_forward_args=(out.frame_mask,))
        baseline_name = "zeros"
    elif method == "integrated_gradients":
        if baseline == "silence":
            reference = encoder(torch.zeros_like(waves), mask).hidden_states.transpose(0, 1).float()
        elif baseline == "zeros":
            reference = torch.zeros_like(hidden)
        else:
            raise ValueError(f"integrated-gradients baseline must be 'silence' or 'zeros', got {baseline!r}")
        attributions = IntegratedGradients(forward).attribute(
            hidden,
            baselines=reference,
            additional_forward_args=(out.frame_mask,),
            n_steps=n_steps,
            internal_batch_size=internal_batch_size,
        )
        baseline_name = baseline
    else:
        raise ValueError(f"unknown gradient method {method!r}")
    frames = int(out.frame_mask.sum())
    per_frame = attributions[0, :, :frames].sum(dim=(0, 2)).detach().cpu().double().numpy()
    times = encoder_frame_start(encoder, np.arange(frames))
    hop = encoder_hop_samples(encoder) / SAMPLE_RATE
    duration = waves.shape[1] / SAMPLE_RATE
    return SaliencyMap(times, hop, per_frame, duration, method, decision.description, baseline_name)


def _samples(seconds: np.ndarray | float) -> np.ndarray:
    """Seconds as whole samples: windows are stretches of samples, and integer arithmetic keeps
    float slivers (a bin ending at 0.6500000000000001) out of the window sums."""
    return np.round(np.asarray(seconds, dtype=np.float64) * SAMPLE_RATE).astype(np.int64)


def top_windows(saliency: SaliencyMap, k: int = 5, window_s: float = 0.15) -> list[Window]:
    """The k non-overlapping windows of `window_s` seconds with the largest summed saliency.

    Values below the map's mean are set to zero first (as "Beyond saliency" does), so a window's
    saliency is the part of the map that stands out. A window's sum weights each bin by the share
    of it inside the window. Candidate windows start at every bin start and at `duration -
    window_s`, and lie inside [0, duration] (the whole utterance when it is shorter than a window).
    Windows are chosen greedily, best first, skipping any that overlaps one already chosen; those
    with no saliency left are not returned, so fewer than k may come back. Sorted by saliency,
    descending. Times are handled in whole samples of the 16 kHz audio.
    """
    values = np.asarray(saliency.values, dtype=np.float64)
    kept = np.where(values >= values.mean(), values, 0.0) if len(values) else values
    duration, hop = int(_samples(saliency.duration)), max(1, int(_samples(saliency.hop)))
    width = min(int(_samples(window_s)), duration)
    last = duration - width
    bin_start = _samples(saliency.times)
    bin_end = np.minimum(bin_start + hop, duration)
    starts = np.unique(np.append(bin_start[bin_start <= last], last).clip(0, last))
    overlap = np.minimum(starts[:, None] + width, bin_end) - np.maximum(starts[:, None], bin_start)
    sums = (overlap.clip(0, None) / hop) @ kept
    chosen: list[tuple[int, float]] = []
    for i in np.argsort(-sums, kind="stable"):
        if len(chosen) == k or sums[i] <= 0:
            break
        if all(abs(int(starts[i]) - start) >= width for start, _ in chosen):
            chosen.append((int(starts[i]), float(sums[i])))
    return [Window(start / SAMPLE_RATE, (start + width) / SAMPLE_RATE, total) for start, total in chosen]
