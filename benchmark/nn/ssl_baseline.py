"""The SSL baselines of Table 2 (Sys. 1-3): weighted layer sums with an SER and a CTC head.

`ssl.finetune_layers` chooses how much of the encoder trains:
- 0 (the default, a deliberate deviation from the paper): the encoder stays frozen on the cached
  features every other system uses, and only the layer weightings and heads train: the s3prl /
  SUPERB "weighted sum + downstream head" probe, comparable with our systems on the same features;
- k > 0 or `all`: the top k transformer layers train too, at `ssl.encoder_lr`, as `TopLayers`
  (`benchmark.nn.encoder`) re-run on cached hidden states, so the feature cache stays useful.
Each task has its own `WeightedLayerSum`. SER: masked mean pooling and a small MLP classifier.
ASR: a per-frame projection and a Linear CTC head over `benchmark.nn.ctc.VOCAB` (blank first),
decoded greedily. docs/design.md says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from benchmark.nn.bottleneck import WeightedLayerSum
from benchmark.nn.ctc import BLANK, VOCAB, encode_text, greedy_decode
from benchmark.nn.encoder import TopLayers


@dataclass
class SSLOutput:
    loss: torch.Tensor  # ce + ctc
    ce: torch.Tensor  # emotion cross-entropy over utterances with a known label (0 if none)
    ctc: torch.Tensor  # CTC loss over utterances with a transcript (0 if none)


def masked_mean(frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, F, D) frames, (B, F) mask True on real frames -> (B, D) mean over real frames."""
    weights = mask.to(frames.dtype).unsqueeze(-1)
    return (frames * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


class SSLBaseline(nn.Module):
    """SSL baseline: emotion classifier and character CTC head over the encoder's hidden states.

    `num_layers` counts the encoder's hidden states (L+1), `input_dim` is their width and
    `labels` the corpus's emotion labels (the classifier's classes, in this order). With
    `top_layers` the encoder's top layers are part of the model and recompute the top hidden
    states from the cached ones before the heads see them; without, the encoder is frozen.
    """

    def __init__(
        self,
        num_layers: int,
        input_dim: int,
        labels: Sequence[str],
        hidden_dim: int = 256,
        top_layers: TopLayers | None = None,
    ) -> None:
        super().__init__()
        if top_layers is not None and top_layers.num_hidden_states != num_layers:
            raise ValueError(
                f"top layers of {top_layers.num_hidden_states} hidden states, heads of {num_layers}"
            )
        self.top_layers = top_layers
        self.labels = list(labels)
        self.ser_sum = WeightedLayerSum(num_layers)
        self.classifier = nn.Sequential(
            nn.Linear(input_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, len(self.labels))
        )
        self.asr_sum = WeightedLayerSum(num_layers)
        self.projection = nn.Sequential(nn.Linear(input_dim, hidden_dim), nn.GELU())
        self.ctc_head = nn.Linear(hidden_dim, len(VOCAB))

    def forward(self, hidden_states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """hidden_states (L+1, B, F, D), mask (B, F) -> emotion logits (B, C), CTC logits (B, F, V)."""
        if self.top_layers is not None:
            hidden_states = self.top_layers(hidden_states, mask)
        pooled = masked_mean(self.ser_sum(hidden_states), mask)
        ctc_logits = self.ctc_head(self.projection(self.asr_sum(hidden_states)))
        return self.classifier(pooled), ctc_logits

    def loss(
        self,
        hidden_states: torch.Tensor,
        mask: torch.Tensor,
        emotions: Sequence[str | None],
        transcripts: Sequence[str | None],
    ) -> SSLOutput:
        """Cross-entropy + CTC; an utterance without an emotion label or transcript skips that term."""
        emotion_logits, ctc_logits = self(hidden_states, mask)
        classes = torch.tensor(
            [self.labels.index(e) if e in self.labels else -100 for e in emotions], device=mask.device
        )
        ce = (
            F.cross_entropy(emotion_logits.float(), classes, ignore_index=-100)
            if (classes >= 0).any()
            else emotion_logits.sum() * 0.0
        )
        labels = [encode_text(t or "") for t in transcripts]
        rows = [i for i, label in enumerate(labels) if label]
        if rows:
            log_probs = F.log_softmax(ctc_logits[rows].float(), dim=-1).transpose(0, 1)  # (F, B', V)
            ctc = F.ctc_loss(
                log_probs,
                torch.tensor([c for i in rows for c in labels[i]], device=mask.device),
                input_lengths=mask[rows].sum(dim=1),
                target_lengths=torch.tensor([len(labels[i]) for i in rows], device=mask.device),
                blank=VOCAB.index(BLANK),
                zero_infinity=True,  # a transcript longer than its frames gives no gradient, not inf
            )
        else:
            ctc = ctc_logits.sum() * 0.0
        return SSLOutput(loss=ce + ctc, ce=ce, ctc=ctc)

    @torch.no_grad()
    def predict(self, hidden_states: torch.Tensor, mask: torch.Tensor) -> tuple[list[str], list[str]]:
        """The most likely emotion label and the greedy CTC transcript of every utterance."""
        emotion_logits, ctc_logits = self(hidden_states, mask)
        emotions = [self.labels[i] for i in emotion_logits.argmax(dim=-1).tolist()]
        lengths = mask.sum(dim=1).tolist()
        transcripts = [greedy_decode(logits, n) for logits, n in zip(ctc_logits, lengths, strict=True)]
        return emotions, transcripts
