"""The LLM decoder (paper section 3.4): a causal LM reading speech embeddings spliced into its prompt.

The prompt is the authors' template (paper Fig. 1) in the model's chat template; the content and
descriptor embeddings take the places of `<Content>` and `<Speech descriptor>`, and the loss is the
response's cross-entropy only (paper eq. 4). Placeholders are found by rendering the template to a
string and splitting it at the placeholder strings, so no token is added to the vocabulary and
nothing depends on how a BPE splits them. An utterance's spliced sequence holds its real frames
only, so it is the same alone or in any batch (right-padded for training, left for generation).
The speed switches of `DecoderSettings` are applied in `build_decoder` and
`SpeechLLMDecoder.forward`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from torch import nn
from torch.nn import functional as F
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from benchmark.config import DecoderSettings, TinyLLMSettings
from benchmark.nn.backbones import get_backbone
from benchmark.nn.hub import shipped_config
from benchmark.nn.tokenizer import END_OF_TEXT, EOT, load_tokenizer

SYSTEM_PROMPT = "You are a helpful language and speech assistant."
CONTENT_PLACEHOLDER = "<Content>"
DESCRIPTOR_PLACEHOLDER = "<Speech descriptor>"
USER_PROMPT = (
    f"{CONTENT_PLACEHOLDER}\n{DESCRIPTOR_PLACEHOLDER}\n"
    "Please caption the input audio according to content and speech descriptor-related information."
)
IGNORE_INDEX = -100  # label of positions outside the response; torch's cross-entropy skips it
# Llama 3.1's template writes this date into the system turn; 3.2's writes today's unless told,
# which would change the prompt, and so the run, from one day to the next.
PROMPT_DATE = "26 Jul 2024"


@dataclass
class PromptIds:
    """Token ids of the rendered prompt around the two speech slots."""

    before_content: list[int]
    between: list[int]
    after_descriptor: list[int]


@dataclass
class SplicedBatch:
    """LM inputs with the speech in place; `labels` only when targets were given."""

    inputs_embeds: torch.Tensor  # (B, T, hidden)
    attention_mask: torch.Tensor  # (B, T), 1 on real positions
    labels: torch.Tensor | None = None  # (B, T), IGNORE_INDEX outside the response


@dataclass
class DecoderOutput:
    loss: torch.Tensor  # mean cross-entropy over all response tokens of the batch
    # (B, T, vocab); with `loss_logits_only` (N, vocab): only the N positions that predict a
    # response token, row by row (`response_token_cross_entropy` takes either)
    logits: torch.Tensor
    num_response_tokens: int
    batch: SplicedBatch = field(repr=False)


def response_token_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's summed cross-entropy over its response tokens (B,), float32, and its token count (B,).

    The same positions as the LM's own loss (`DecoderOutput.loss`): the logits at t predict the
    label at t + 1, and positions labelled IGNORE_INDEX (prompt, speech, padding) do not count.
    Only the response positions' logits are gathered before torch's cross-entropy (no reduction),
    so the memory is that of the response tokens, not of the whole spliced sequence. `logits` may
    also be those positions' alone, (N, vocab), as `loss_logits_only` computes them.
    """
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    rows = keep.nonzero()[:, 0]
    response_logits = logits if logits.dim() == 2 else logits[:, :-1][keep]
    token_ce = F.cross_entropy(response_logits.float(), targets[keep], reduction="none")
    sums = token_ce.new_zeros(labels.shape[0]).index_add(0, rows, token_ce)
    return sums, keep.sum(dim=1)


def prompt_ids(tokenizer: PreTrainedTokenizerBase) -> PromptIds:
    """Render the authors' prompt in the chat template and tokenise the pieces around the slots."""
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": USER_PROMPT}]
    text = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False, date_string=PROMPT_DATE
    )
    if text.count(CONTENT_PLACEHOLDER) != 1 or text.count(DESCRIPTOR_PLACEHOLDER) != 1:
        raise ValueError(f"the chat template must keep each placeholder once, got {text!r}")
    before, rest = text.split(CONTENT_PLACEHOLDER)
    between, after = rest.split(DESCRIPTOR_PLACEHOLDER)
    # The template already writes <|begin_of_text|>; Llama's tokenizer would add a second one.
    pieces = tokenizer([before, between, after], add_special_tokens=False)["input_ids"]
    return PromptIds(*pieces)


def _tiny_lm(
    sizes: TinyLLMSettings, tokenizer: PreTrainedTokenizerBase, dtype: torch.dtype
) -> LlamaForCausalLM:
    lm_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=sizes.hidden_size,
        intermediate_size=sizes.intermediate_size,
        num_hidden_layers=sizes.num_layers,
        num_attention_heads=sizes.num_heads,
        num_key_value_heads=sizes.num_heads,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(lm_config).to(dtype)


def _random_lm(checkpoint: str, dtype: torch.dtype) -> LlamaForCausalLM:
    """The architecture of `checkpoint` (its shipped config) with random weights, in `dtype`.

    Built on the current default device: `with torch.device("cuda")` initialises it on the GPU
    (seconds, where the CPU takes minutes), `with torch.device("meta")` counts parameters
    without allocating them.
    """
    config = LlamaConfig.from_dict(shipped_config(checkpoint))
    return AutoModelForCausalLM.from_config(config, dtype=dtype)


def causal_lm(lm: nn.Module) -> LlamaForCausalLM:
    """The transformers LM inside `lm`, under peft's wrapper in the `lora` regime."""
    return lm.get_base_model() if isinstance(lm, PeftModel) else lm


class SpeechLLMDecoder(nn.Module):
    """A causal LM (with LoRA in the `lora` regime) that captions spliced speech embeddings."""

    def __init__(
        self, lm: nn.Module, tokenizer: PreTrainedTokenizerBase, loss_logits_only: bool = False
    ) -> None:
        super().__init__()
        self.lm = lm
        self.tokenizer = tokenizer
        self.loss_logits_only = loss_logits_only
        self.prompt = prompt_ids(tokenizer)
        self.eos_token_id = tokenizer.convert_tokens_to_ids(EOT)
        vocab = tokenizer.get_vocab()
        self.stop_token_ids = sorted(vocab[token] for token in {EOT, END_OF_TEXT} & vocab.keys())

    @property
    def hidden_size(self) -> int:
        """The embedding width the adapters must map into."""
        return self.lm.get_input_embeddings().embedding_dim

    def speech_token_budget(self, max_new_tokens: int) -> int:
        """The LM positions left for speech tokens: its context (`max_position_embeddings`) less
        the prompt's tokens and the longest answer it may write."""
        prompt = self.prompt.before_content + self.prompt.between + self.prompt.after_descriptor
        return causal_lm(self.lm).config.max_position_embeddings - len(prompt) - max_new_tokens

    def _embed(self, ids: list[int]) -> torch.Tensor:
        embedding = self.lm.get_input_embeddings()
        return embedding(torch.tensor(ids, dtype=torch.long, device=embedding.weight.device))

    def splice(
        self,
        content_emb: torch.Tensor,
        content_mask: torch.Tensor | None = None,
        descriptor_emb: torch.Tensor | None = None,
        descriptor_mask: torch.Tensor | None = None,
        targets: list[str] | None = None,
        padding_side: str = "right",
    ) -> SplicedBatch:
        """Build the LM inputs: prompt pieces, the real speech frames, and the response if given.

        `descriptor_emb=None` stands for the zero descriptor tokens of stage 1 of the alternating
        schedule (paper 3.5): zeros as long as the content sequence. Speech embeddings are cast to
        the LM's dtype. Padding positions get zero embeddings and attention mask 0.
        """
        embedding = self.lm.get_input_embeddings()
        dtype, device = embedding.weight.dtype, embedding.weight.device
        batch_size = content_emb.shape[0]
        if content_mask is None:
            content_mask = content_emb.new_ones(content_emb.shape[:2], dtype=torch.bool)
        if descriptor_emb is None:
            descriptor_emb, descriptor_mask = torch.zeros_like(content_emb), content_mask
        elif descriptor_mask is None:
            descriptor_mask = descriptor_emb.new_ones(descriptor_emb.shape[:2], dtype=torch.bool)
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        if targets is not None and len(targets) != batch_size:
            raise ValueError(f"{len(targets)} targets for a batch of {batch_size}")

        prompt = self.prompt
        before, between, after = (
            self._embed(ids) for ids in (prompt.before_content, prompt.between, prompt.after_descriptor)
        )
        sequences, label_rows = [], []
        for b in range(batch_size):
            content = content_emb[b][content_mask[b].bool()].to(device=device, dtype=dtype)
            descriptor = descriptor_emb[b][descriptor_mask[b].bool()].to(device=device, dtype=dtype)
            pieces = [before, content, between, descriptor, after]
            if targets is not None:
                response = [
                    *self.tokenizer(targets[b], add_special_tokens=False)["input_ids"],
                    self.eos_token_id,
                ]
                pieces.append(self._embed(response))
            sequence = torch.cat(pieces)
            sequences.append(sequence)
            if targets is not None:
                prompt_length = len(sequence) - len(response)
                label_rows.append(torch.tensor([IGNORE_INDEX] * prompt_length + response, device=device))

        length = max(len(s) for s in sequences)
        inputs_embeds = embedding.weight.new_zeros(batch_size, length, embedding.embedding_dim)
        attention_mask = torch.zeros(batch_size, length, dtype=torch.long, device=device)
        labels = None if targets is None else torch.full((batch_size, length), IGNORE_INDEX, device=device)
        for b, sequence in enumerate(sequences):
            pad = length - len(sequence)
            span = slice(0, length - pad) if padding_side == "right" else slice(pad, length)
            inputs_embeds[b, span] = sequence
            attention_mask[b, span] = 1
            if labels is not None:
                labels[b, span] = label_rows[b]
        return SplicedBatch(inputs_embeds, attention_mask, labels)

    def forward(
        self,
        content_emb: torch.Tensor,
        content_mask: torch.Tensor | None,
        descriptor_emb: torch.Tensor | None,
        descriptor_mask: torch.Tensor | None,
        targets: list[str],
    ) -> DecoderOutput:
        """Teacher-forced cross-entropy of the responses (plus `<|eot_id|>`), prompt and speech excluded.

        With `loss_logits_only` the LM body runs as usual and its output layer only at the
        positions whose next token is a response token: the same loss as transformers' own, whose
        output layer runs over the whole sequence, up to float rounding.
        """
        batch = self.splice(content_emb, content_mask, descriptor_emb, descriptor_mask, targets)
        num_tokens = int((batch.labels != IGNORE_INDEX).sum())
        if not self.loss_logits_only:
            out = self.lm(
                inputs_embeds=batch.inputs_embeds,
                attention_mask=batch.attention_mask,
                labels=batch.labels,
                use_cache=False,
            )
            return DecoderOutput(out.loss, out.logits, num_tokens, batch)
        lm = causal_lm(self.lm)
        hidden = lm.model(
            inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask, use_cache=False
        ).last_hidden_state
        targets = batch.labels[:, 1:]
        keep = targets != IGNORE_INDEX
        logits = lm.lm_head(hidden[:, :-1][keep])
        loss = F.cross_entropy(logits.float(), targets[keep])
        return DecoderOutput(loss, logits, num_tokens, batch)

    def response_log_probs(
        self,
        content_emb: torch.Tensor,
        content_mask: torch.Tensor | None,
        descriptor_emb: torch.Tensor | None,
        descriptor_mask: torch.Tensor | None,
        targets: list[str],
    ) -> list[torch.Tensor]:
        """Each teacher-forced response's per-token log-probabilities, float32, gradients kept.

        One 1-D tensor per row: the log-probability of each token of its target (tokenised as in
        training), then of `<|eot_id|>`, given everything before it. These are the positions of
        the training loss (`response_token_cross_entropy` sums their negatives), kept per token so
        that a caller can score part of a response, e.g. the emotion label alone (saliency).
        """
        batch = self.splice(content_emb, content_mask, descriptor_emb, descriptor_mask, targets)
        logits = self.lm(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask).logits
        labels = batch.labels[:, 1:]
        keep = labels != IGNORE_INDEX
        log_probs = logits[:, :-1][keep].float().log_softmax(dim=-1)
        picked = log_probs.gather(1, labels[keep][:, None]).squeeze(1)
        return list(picked.split(keep.sum(dim=1).tolist()))

    @torch.no_grad()
    def generate(
        self,
        content_emb: torch.Tensor,
        content_mask: torch.Tensor | None = None,
        descriptor_emb: torch.Tensor | None = None,
        descriptor_mask: torch.Tensor | None = None,
        max_new_tokens: int = 128,
        response_prefix: str = "",
        synced: bool = False,
    ) -> list[str]:
        """Batched greedy decoding with the KV cache; each sequence stops at its first stop token.

        The prompts are left-padded so that every row's next token comes from the last column, and
        positions count real tokens only, so padding does not change a row's output. Call `.eval()`
        first: in train mode LoRA dropout would make decoding random.

        `response_prefix` is forced as the start of every response (tokenised as in a training
        target and placed after the assistant header); the returned texts start with it. The
        prompt is the same for every task, so this is how a task is asked for: "Emotion:" makes
        the model answer the SER field (see `benchmark.nn.system`).

        `synced=True` runs all `max_new_tokens` steps even when every row has stopped (the output is
        the same): under ZeRO-3 every rank must run as many forward passes as the others.
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
        batch = self.splice(content_emb, content_mask, descriptor_emb, descriptor_mask, padding_side="left")
        step_embeds, attention_mask = batch.inputs_embeds, batch.attention_mask
        prefix_ids = self.tokenizer(response_prefix, add_special_tokens=False)["input_ids"]
        if prefix_ids:  # rows are left-padded, so the prefix goes after the last column of every row
            prefix = self._embed(prefix_ids).expand(len(step_embeds), -1, -1)
            step_embeds = torch.cat([step_embeds, prefix], dim=1)
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones(prefix.shape[:2])], dim=1)
        position_ids = (attention_mask.cumsum(-1) - 1).clamp_min(0)
        past_key_values = None
        stop_ids = torch.tensor(self.stop_token_ids, device=attention_mask.device)
        finished = torch.zeros(attention_mask.shape[0], dtype=torch.bool, device=attention_mask.device)
        generated = []
        for _ in range(max_new_tokens):
            out = self.lm(
                inputs_embeds=step_embeds,
                attention_mask=attention_mask,
                position_ids=position_ids,
                past_key_values=past_key_values,
                use_cache=True,
            )
            past_key_values = out.past_key_values
            next_ids = torch.where(finished, self.eos_token_id, out.logits[:, -1].argmax(dim=-1))
            generated.append(next_ids)
            finished |= torch.isin(next_ids, stop_ids)
            if finished.all() and not synced:
                break
            step_embeds = self.lm.get_input_embeddings()(next_ids[:, None])
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(next_ids), 1)], dim=1)
            position_ids = position_ids[:, -1:] + 1

        texts = []
        for row in torch.stack(generated, dim=1).tolist():
            ends = [i for i, token in enumerate(row) if token in self.stop_token_ids]
            kept = row[: ends[0]] if ends else row
            texts.append(self.tokenizer.decode(prefix_ids + kept, skip_special_tokens=True))
        return texts


def build_decoder(settings: DecoderSettings, backbone: str) -> SpeechLLMDecoder:
    """The LLM of the registry's `backbone`, wrapped in LoRA (peft) when `settings.regime` is
    `lora`, with the speed switches of `settings` applied.

    `lora` (the paper) trains LoRA adapters on the attention projections only; `full` trains every
    LM weight, which is what a random `tiny` LM needs to learn anything. `tiny` is a random Llama
    of `settings.tiny`'s sizes, initialised from torch's global RNG (seed it for reproducible
    tests); a repo id is loaded from its local copy (`benchmark.nn.hub`) in the backbone's dtype,
    or with random weights its architecture is built (`_random_lm`).
    """
    spec = get_backbone(backbone)
    tokenizer = load_tokenizer(spec)
    dtype = getattr(torch, spec.dtype)
    if spec.llm == "tiny":
        lm = _tiny_lm(settings.tiny, tokenizer, dtype)
    elif (folder := spec.hub_folder(spec.llm)) is None:
        lm = _random_lm(spec.llm, dtype)
    else:
        lm = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    if settings.regime == "lora":
        lora = LoraConfig(
            r=settings.lora_r,
            lora_alpha=settings.lora_alpha,
            lora_dropout=settings.lora_dropout,
            target_modules=list(settings.lora_target_modules),
            task_type="CAUSAL_LM",
        )
        lm = get_peft_model(lm, lora)
        # peft keeps adapters in float32 even on a bf16 LLM; `lora_dtype` decides.
        dtype = getattr(torch, settings.lora_dtype)
        for module in lm.modules():
            if isinstance(module, LoraLayer):
                module.lora_A.to(dtype)
                module.lora_B.to(dtype)
    if settings.gradient_checkpointing:
        # Non-reentrant: the frozen LLM's inputs (the speech embeddings) carry the gradient.
        causal_lm(lm).gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if settings.compile_layers:
        for layer in causal_lm(lm).model.layers:
            layer.compile()
    return SpeechLLMDecoder(lm, tokenizer, loss_logits_only=settings.loss_logits_only)
