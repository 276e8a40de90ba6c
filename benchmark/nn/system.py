"""The paper's captioner (Fig. 1): encoder outputs -> two disentangling branches -> the LLM.

It starts from the encoder's OUTPUTS (all L+1 hidden states and a frame mask), so the frozen
encoder can run anywhere and this module holds only what trains:
- `disentangle` (the paper): a content and a descriptor branch, each an IB-VAE and a
  `FeatureAdapter`, filling the `<Content>` and `<Speech descriptor>` slots; loss = response
  cross-entropy + beta times both KL terms (paper eq. 2);
- without it (`no-fd`): one `WeightedLayerSum` branch and adapter, no VAE, an empty descriptor slot.
`zero_descriptor=True` (stage 1, paper 3.5) feeds zero descriptor tokens and does not run the
descriptor branch; at evaluation both branches run. Branches a stage does not train stay in eval
mode (`set_trainable`). The loss follows `bottleneck.loss_reduction`; `ce` and the KLs of
`SystemOutput` are always per-token / per-frame means, so logged runs stay comparable.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from benchmark.config import Module, SystemConfig
from benchmark.nn.adapter import FeatureAdapter
from benchmark.nn.bottleneck import LossReduction, VariationalBottleneck, VIBTerm, WeightedLayerSum, vib_loss
from benchmark.nn.decoder import SpeechLLMDecoder, build_decoder, response_token_cross_entropy

MODULE_GROUPS: tuple[Module, ...] = ("content", "descriptor", "llm")


@dataclass
class SystemOutput:
    loss: torch.Tensor  # what is back-propagated: eq. 2 under `bottleneck.loss_reduction`
    ce: torch.Tensor  # mean cross-entropy over the response tokens of the batch (either reduction)
    kl_content: torch.Tensor  # per frame (summed over dims, mean over real frames); 0 without disentangle
    kl_descriptor: torch.Tensor  # as kl_content; 0 without disentangle or with zero descriptor tokens
    num_tokens: int  # response tokens (targets incl. <|eot_id|>) of the batch


class SpeechBranch(nn.Module):
    """One stream of speech tokens: (IB-VAE or plain layer sum) -> frame-stacking adapter."""

    def __init__(self, system: SystemConfig, num_layers: int, encoder_dim: int, llm_dim: int) -> None:
        super().__init__()
        if system.disentangle:
            bottleneck = system.bottleneck
            self.bottleneck: nn.Module = VariationalBottleneck(
                num_layers,
                encoder_dim,
                bottleneck.hidden_dim,
                bottleneck.latent_dim,
                scale_preserving=bottleneck.init == "scale_preserving",
            )
            adapter_input = bottleneck.latent_dim
        else:
            self.bottleneck = WeightedLayerSum(num_layers)
            adapter_input = encoder_dim
        adapter = system.adapter
        self.adapter = FeatureAdapter(adapter_input, adapter.hidden_dim, llm_dim, adapter.stack)

    def forward(
        self, hidden_states: torch.Tensor, frame_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, VIBTerm]:
        """(L+1, B, F, D), (B, F) -> embeddings (B, F', llm_dim), mask (B, F'), KL.

        The KL holds the per-frame mean (scalar) and each example's sum (B,); zeros without a VAE.
        """
        if isinstance(self.bottleneck, VariationalBottleneck):
            out = self.bottleneck(hidden_states, frame_mask)
            z, kl = out.z, out.kl_term
        else:
            z = self.bottleneck(hidden_states)
            kl = _zero_kl(hidden_states, hidden_states.shape[1])
        embeddings, mask = self.adapter(z, frame_mask)
        return embeddings, mask, kl


def _zero_kl(like: torch.Tensor, batch_size: int) -> VIBTerm:
    """The KL of a branch without a VAE, or not run: 0 per frame and per example (dtype of `like`)."""
    return VIBTerm(mean=like.new_zeros(()), sums=like.new_zeros(batch_size))


class SpeechEmotionCaptioner(nn.Module):
    """Branches + decoder; see the module docstring for what goes where."""

    def __init__(
        self, system: SystemConfig, num_layers: int, encoder_dim: int, decoder: SpeechLLMDecoder
    ) -> None:
        super().__init__()
        self.config = system
        self.beta = system.beta
        self.loss_reduction: LossReduction = system.bottleneck.loss_reduction
        self.decoder = decoder
        self.content = SpeechBranch(system, num_layers, encoder_dim, decoder.hidden_size)
        self.descriptor = (
            SpeechBranch(system, num_layers, encoder_dim, decoder.hidden_size) if system.disentangle else None
        )
        self.trainable: set[str] = set(MODULE_GROUPS)

    def max_speech_frames(self) -> int:
        """The most encoder frames one utterance may have: each branch turns `adapter.stack` frames
        into one speech token, and all of them must fit the LLM's context beside the prompt and the
        longest answer (`SpeechLLMDecoder.speech_token_budget`)."""
        branches = 1 if self.descriptor is None else 2
        budget = self.decoder.speech_token_budget(self.config.decoder.max_new_tokens)
        return max(0, budget // branches) * self.content.adapter.stack

    def module_groups(self) -> dict[str, list[nn.Parameter]]:
        """The parameters a stage can train, by the names `StageConfig.train` uses.

        `llm` is the LoRA adapters in the `lora` regime (the base LM never trains) and every LM
        weight in the `full` regime; `descriptor` is empty without disentangle.
        """
        if self.config.decoder.regime == "lora":
            llm = [p for name, p in self.decoder.lm.named_parameters() if "lora_" in name]
        else:
            llm = list(self.decoder.lm.parameters())
        descriptor = list(self.descriptor.parameters()) if self.descriptor is not None else []
        return {"content": list(self.content.parameters()), "descriptor": descriptor, "llm": llm}

    def set_trainable(self, groups: list[str]) -> list[nn.Parameter]:
        """Freeze everything, unfreeze the named groups; return the trainable parameters.

        Also records which branches train, so that `train()` keeps frozen branches in eval mode.
        """
        if unknown := set(groups) - set(MODULE_GROUPS):
            raise ValueError(f"unknown module groups {sorted(unknown)}; known: {list(MODULE_GROUPS)}")
        for param in self.parameters():
            param.requires_grad_(False)
        module_groups = self.module_groups()
        trainable = [param for name in groups for param in module_groups[name]]
        for param in trainable:
            param.requires_grad_(True)
        self.trainable = set(groups)
        self.train(self.training)
        return trainable

    def train(self, mode: bool = True) -> SpeechEmotionCaptioner:
        super().train(mode)
        for name in ("content", "descriptor"):
            branch = getattr(self, name)
            if mode and branch is not None and name not in self.trainable:
                branch.eval()
        return self

    def embed(
        self, hidden_states: torch.Tensor, frame_mask: torch.Tensor, zero_descriptor: bool = False
    ) -> tuple[
        torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor, torch.Tensor
    ]:
        """Speech tokens of both slots: content emb/mask, descriptor emb/mask (None: zeros), both KLs.

        The KLs are the per-frame means (scalars). Without disentangle the descriptor slot gets a
        zero-length sequence.
        """
        content, content_mask, descriptor, descriptor_mask, kl_content, kl_descriptor = self._embed(
            hidden_states, frame_mask, zero_descriptor
        )
        return content, content_mask, descriptor, descriptor_mask, kl_content.mean, kl_descriptor.mean

    def _embed(
        self, hidden_states: torch.Tensor, frame_mask: torch.Tensor, zero_descriptor: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None, VIBTerm, VIBTerm]:
        """`embed` with both reductions of each KL (`VIBTerm`)."""
        content, content_mask, kl_content = self.content(hidden_states, frame_mask)
        kl_descriptor = _zero_kl(kl_content.mean, hidden_states.shape[1])
        if self.descriptor is None:
            descriptor = content.new_zeros(content.shape[0], 0, content.shape[2])
            descriptor_mask = content_mask.new_zeros(content.shape[0], 0)
        elif zero_descriptor:
            descriptor, descriptor_mask = None, None  # the decoder's zero tokens, as long as the content
        else:
            descriptor, descriptor_mask, kl_descriptor = self.descriptor(hidden_states, frame_mask)
        return content, content_mask, descriptor, descriptor_mask, kl_content, kl_descriptor

    def forward(
        self,
        hidden_states: torch.Tensor,
        frame_mask: torch.Tensor,
        targets: list[str],
        zero_descriptor: bool = False,
    ) -> SystemOutput:
        """Teacher-forced loss of `targets` (one formatted response per utterance), paper eq. 2.

        Reduced over the batch as `bottleneck.loss_reduction` says (see the module docstring).
        """
        content, content_mask, descriptor, descriptor_mask, kl_content, kl_descriptor = self._embed(
            hidden_states, frame_mask, zero_descriptor
        )
        out = self.decoder(content, content_mask, descriptor, descriptor_mask, targets)
        ce_sums = None
        if self.loss_reduction == "paper":
            ce_sums, _ = response_token_cross_entropy(out.logits, out.batch.labels)
        ce = VIBTerm(mean=out.loss.float(), sums=ce_sums)
        loss = vib_loss(ce, [kl_content, kl_descriptor], self.beta, self.loss_reduction)
        return SystemOutput(loss, ce.mean, kl_content.mean, kl_descriptor.mean, out.num_response_tokens)

    def response_log_probs(
        self, hidden_states: torch.Tensor, frame_mask: torch.Tensor, targets: list[str]
    ) -> list[torch.Tensor]:
        """Per-token log-probabilities of each teacher-forced response, both branches active
        (`SpeechLLMDecoder.response_log_probs`); differentiable in `hidden_states`, so gradient
        saliency can run through it. Call `.eval()` first for z = mu and no dropout."""
        content, content_mask, descriptor, descriptor_mask, _, _ = self.embed(hidden_states, frame_mask)
        return self.decoder.response_log_probs(content, content_mask, descriptor, descriptor_mask, targets)

    @torch.no_grad()
    def generate(
        self,
        hidden_states: torch.Tensor,
        frame_mask: torch.Tensor,
        response_prefix: str,
        max_new_tokens: int = 96,
        synced: bool = False,
    ) -> list[str]:
        """Greedy responses, each forced to start with `response_prefix`: the prompt is the same for
        every task, so the prefix (a task's first field name, `benchmark.data.tasks`) picks the task.

        Call `.eval()` first (z = mu, no LoRA dropout); both branches are active. `synced`: see
        `SpeechLLMDecoder.generate`.
        """
        content, content_mask, descriptor, descriptor_mask, _, _ = self.embed(hidden_states, frame_mask)
        return self.decoder.generate(
            content,
            content_mask,
            descriptor,
            descriptor_mask,
            max_new_tokens,
            response_prefix=response_prefix,
            synced=synced,
        )


def build_system(
    system: SystemConfig, num_layers: int, encoder_dim: int, backbone: str
) -> SpeechEmotionCaptioner:
    """The captioner of `system` on the LLM of the registry's `backbone` (`build_decoder`).

    `num_layers` counts the encoder's hidden states (L+1) and `encoder_dim` is their width.
    """
    decoder = build_decoder(system.decoder, backbone)
    return SpeechEmotionCaptioner(system, num_layers, encoder_dim, decoder)
