"""The IB-VAE disentanglement block of one branch (paper section 3.2, Fig. 1).

The frozen encoder's hidden states are mixed by learned softmax weights, encoded by a two-layer
GELU perceptron and mapped to a diagonal Gaussian posterior p(z|x): training samples
z = mu + sigma * eps, evaluation uses z = mu. The KL to N(0, I) (paper eq. 2) is weighted by beta
in the training loss, not here, so one module serves every beta of the ablation.

He init for the GELU layers and 1/sqrt(fan_in) for the mean head keep mu at the features' scale,
so z does not start as near-pure noise (`bottleneck.init: pytorch` keeps PyTorch's default).
`vib_loss` reduces as `BottleneckConfig.loss_reduction` says: `paper` (per-example sums, the scale
of the paper's betas) or `token_mean` (per-token / per-frame means, the demo recipe's scale); a
beta does not carry over between them. `VIBTerm` keeps each term both ways (docs/design.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F


class WeightedLayerSum(nn.Module):
    """Softmax-weighted sum over the encoder's L+1 hidden states."""

    def __init__(self, num_layers: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(num_layers))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(layers, B, T, D) -> (B, T, D)."""
        if hidden_states.shape[0] != self.logits.shape[0]:
            raise ValueError(f"expected {self.logits.shape[0]} layers, got {hidden_states.shape[0]}")
        weights = F.softmax(self.logits, dim=0).to(hidden_states.dtype)
        return torch.einsum("l,lbtd->btd", weights, hidden_states)


LossReduction = Literal["paper", "token_mean"]
LOSS_REDUCTIONS: tuple[LossReduction, ...] = ("paper", "token_mean")


@dataclass
class VIBTerm:
    """One term of a batch's VIB loss (the response cross-entropy or one branch's KL), both reductions.

    `sums` may be None where only `token_mean` is asked for (the system then skips computing the
    per-example cross-entropies).
    """

    mean: torch.Tensor  # scalar: per response token (CE) or per real frame (KL), over the batch
    sums: torch.Tensor | None  # (B,): each example's total over its response tokens / real frames


def masked_term(values: torch.Tensor, mask: torch.Tensor | None = None) -> VIBTerm:
    """Per-item values (B, T) -> their mean over the items where mask is True, and each row's sum.

    Items are response tokens (cross-entropy) or frames (KL); without a mask every item counts. The
    mean is computed in the values' dtype (as the logged per-frame KL always was), the sums in float32.
    """
    if mask is None:
        return VIBTerm(mean=values.mean(), sums=values.sum(dim=-1, dtype=torch.float32))
    mask = mask.to(values.dtype)
    masked = values * mask
    sums = masked.sum(dim=-1, dtype=torch.float32)
    return VIBTerm(mean=masked.sum() / mask.sum().clamp_min(1.0), sums=sums)


def vib_loss(ce: VIBTerm, kls: Sequence[VIBTerm], beta: float, reduction: LossReduction) -> torch.Tensor:
    """Paper eq. 2 over a batch, reduced as `reduction` says (see the module docstring).

    `token_mean`: ce.mean + beta * sum of the KL means (per token, per frame).
    `paper`: mean over examples of (ce.sums + beta * sum of the KL sums) (per example totals).
    A branch that is not run (no VAE, or zero descriptor tokens) passes zeros or is left out.
    """
    if reduction == "token_mean":
        parts = [ce.mean, *(kl.mean for kl in kls)]
    elif reduction == "paper":
        if ce.sums is None or any(kl.sums is None for kl in kls):
            raise ValueError("the paper reduction needs each example's sums of every term")
        parts = [ce.sums, *(kl.sums for kl in kls)]
    else:
        raise ValueError(f"unknown loss reduction {reduction!r}; known: {list(LOSS_REDUCTIONS)}")
    task, *compression = (part.float() for part in parts)
    loss = task
    if compression:
        total_kl = compression[0]
        for kl in compression[1:]:
            total_kl = total_kl + kl
        loss = task + beta * total_kl
    return loss if reduction == "token_mean" else loss.mean()


@dataclass
class BottleneckOutput:
    z: torch.Tensor  # (B, T, latent)
    mu: torch.Tensor
    sigma: torch.Tensor
    kl: torch.Tensor  # scalar: KL per frame, averaged over real (unmasked) frames
    kl_sum: torch.Tensor  # (B,): KL of each example's whole latent sequence (real frames, all dims)

    @property
    def kl_term(self) -> VIBTerm:
        """The KL as a term of `vib_loss`."""
        return VIBTerm(mean=self.kl, sums=self.kl_sum)


def gaussian_kl_per_frame(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) of each frame, summed over latent dims: (B, T, latent) -> (B, T)."""
    return 0.5 * (mu.pow(2) + sigma.pow(2) - 1.0 - 2.0 * torch.log(sigma)).sum(dim=-1)


def gaussian_kl(mu: torch.Tensor, sigma: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) summed over latent dims, averaged over frames where mask is True."""
    return masked_term(gaussian_kl_per_frame(mu, sigma), mask).mean


class VariationalBottleneck(nn.Module):
    """Weighted layer sum -> Linear, GELU, Linear, GELU -> mean head and Softplus std head."""

    def __init__(
        self, num_layers: int, input_dim: int, hidden_dim: int, latent_dim: int, scale_preserving: bool = True
    ) -> None:
        super().__init__()
        self.layer_sum = WeightedLayerSum(num_layers)
        self.encoder = nn.Sequential(
            nn.Linear(input_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim), nn.GELU()
        )
        self.mean = nn.Linear(hidden_dim, latent_dim)
        self.std = nn.Sequential(nn.Linear(hidden_dim, latent_dim), nn.Softplus())
        if scale_preserving:
            self._init_scale_preserving()

    def _init_scale_preserving(self) -> None:
        """He init before the GELUs, unit-gain init for the mean head (see the module docstring)."""
        for layer in (self.encoder[0], self.encoder[2]):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)
        nn.init.normal_(self.mean.weight, std=self.mean.in_features**-0.5)
        nn.init.zeros_(self.mean.bias)

    def forward(self, hidden_states: torch.Tensor, mask: torch.Tensor | None = None) -> BottleneckOutput:
        """hidden_states (layers, B, T, D), mask (B, T) True on real frames."""
        h = self.encoder(self.layer_sum(hidden_states))
        mu = self.mean(h)
        sigma = self.std(h) + 1e-6  # keeps log(sigma) finite when Softplus underflows
        z = mu + sigma * torch.randn_like(sigma) if self.training else mu
        kl = masked_term(gaussian_kl_per_frame(mu, sigma), mask)
        return BottleneckOutput(z=z, mu=mu, sigma=sigma, kl=kl.mean, kl_sum=kl.sums)
