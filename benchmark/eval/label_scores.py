"""The probability of each emotion label for an utterance, from a trained system.

An SSL baseline has a classifier: its softmax over the labels. An LLM captioner writes its answer
token by token, so the probability of a label is read by teacher forcing: the response up to
`Emotion:` (with the descriptor the system generated, for `ser_sed`) followed by the label, for
every label of the corpus, each scored as log p(label tokens | audio, prompt, context). The
labels' probabilities are renormalised over the labels (a softmax of those log-probabilities):
"given that the answer is one of these labels, which". The generated answer stays the system's
emotion; the probabilities say how close the call was. `label_response` and `label_tokens` are
also what saliency explains (`benchmark.explain.saliency.CaptionerEmotion`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from benchmark.config import Task
from benchmark.data.tasks import format_response, response_prefix
from benchmark.errors import BenchmarkError
from benchmark.eval.predict import generation_tasks
from benchmark.nn.ssl_baseline import SSLBaseline
from benchmark.nn.system import SpeechEmotionCaptioner


def emotion_task(model: SpeechEmotionCaptioner) -> Task:
    """The task whose generation gives a system's emotion answer, as `predict` asks for it."""
    tasks = [task for task in generation_tasks(model.config) if task in ("ser", "ser_sed")]
    if not tasks:
        raise BenchmarkError(f"system '{model.config.name}' has no emotion target, so no emotion label")
    return tasks[0]


def label_response(task: Task, descriptor: str | None, label: str) -> tuple[str, str]:
    """(context, label_text): the teacher-forced response is `context + label_text`.

    The context is the response up to and including `Emotion:` (with the generated descriptor
    for `ser_sed`), the label text is ` <label>`, as `format_response` writes them. The context
    ends at the colon so that it tokenises the same alone as in front of the label.
    """
    prefix = response_prefix(task)
    text = format_response(None, descriptor if task == "ser_sed" else None, label)
    if not text.startswith(prefix):  # an empty generated descriptor: the forced prefix was there
        text = f"{prefix}\n{text}"
    context = text[: len(text) - len(label)].rstrip(" ")
    return context, text[len(context) :]


def label_tokens(model: SpeechEmotionCaptioner, context: str, label_text: str) -> slice:
    """The positions of the label's tokens in the tokenised `context + label_text`.

    Raises when the label does not tokenise apart from its context (its tokens would then include
    part of the prefix, and its probability would not be the label's alone).
    """
    tokenizer = model.decoder.tokenizer
    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(context + label_text, add_special_tokens=False)["input_ids"]
    if response_ids[: len(context_ids)] != context_ids or len(response_ids) == len(context_ids):
        raise BenchmarkError(
            f"the label {label_text.strip()!r} does not tokenise apart from its context {context!r}",
            hint="the label's tokens cannot be told from the prefix's; report this tokenizer",
        )
    return slice(len(context_ids), len(response_ids))


def captioner_label_log_probs(
    model: SpeechEmotionCaptioner,
    hidden_states: torch.Tensor,
    frame_mask: torch.Tensor,
    labels: Sequence[str],
    descriptors: Sequence[str | None],
) -> torch.Tensor:
    """(B, len(labels)) log p(label tokens | audio, prompt, context) for a batch of utterances,
    each with the descriptor it generated (`descriptors`, one per utterance)."""
    task = emotion_task(model)
    batch = hidden_states.shape[1]
    targets, spans = [], []
    for descriptor in descriptors:
        for label in labels:
            context, label_text = label_response(task, descriptor, label)
            targets.append(context + label_text)
            spans.append(label_tokens(model, context, label_text))
    per_token = model.response_log_probs(
        hidden_states.repeat_interleave(len(labels), dim=1),
        frame_mask.repeat_interleave(len(labels), dim=0),
        targets,
    )
    sums = torch.stack([log_probs[span].sum() for log_probs, span in zip(per_token, spans, strict=True)])
    return sums.reshape(batch, len(labels))


@torch.no_grad()
def label_probabilities(
    model: SpeechEmotionCaptioner | SSLBaseline,
    hidden_states: torch.Tensor,
    frame_mask: torch.Tensor,
    labels: Sequence[str],
    descriptors: Sequence[str | None] | None = None,
) -> list[dict[str, float]]:
    """Per utterance of the batch, each label's probability (module docstring), summing to 1.

    `labels` are the corpus's (an SSL baseline's own labels are used and must be the same set);
    `descriptors` are the captioner's generated descriptors, one per utterance (None: none).
    """
    model.eval()
    if isinstance(model, SSLBaseline):
        emotion_logits, _ = model(hidden_states, frame_mask)
        probabilities = emotion_logits.float().softmax(dim=-1)
        names = list(model.labels)
    else:
        wanted = descriptors if descriptors is not None else [None] * hidden_states.shape[1]
        probabilities = captioner_label_log_probs(model, hidden_states, frame_mask, labels, wanted)
        probabilities = probabilities.softmax(dim=-1)
        names = list(labels)
    return [dict(zip(names, row.tolist(), strict=True)) for row in probabilities.cpu()]
