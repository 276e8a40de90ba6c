"""The IB-VAE disentanglement block of one branch (paper section 3.2, Fig. 1).

All hidden states of the frozen encoder are mixed by learned softmax weights (s3prl's weighted
sum, starting equal), encoded by a two-layer GELU perceptron, and mapped to the mean and standard
deviation of a diagonal Gaussian posterior p(z|x). Training samples z = mu + sigma * eps (the
reparameterisation trick); evaluation uses z = mu. The KL divergence to the N(0, I) prior is the
compression term of the variational information bottleneck (paper eq. 2) and is weighted by beta
in the training loss, not here, so that one module serves every beta of the ablation.

Initialisation: PyTorch's default Linear init shrinks a signal by about sqrt(3) per layer, so
through three layers and two GELUs the posterior mean would start some 20 times smaller than the
encoder features while the Softplus std starts near 0.7: the sampled z would be almost pure noise
(and without the noise, almost zero), and the LLM learns to ignore the speech before the branch
can grow its mean. He (Kaiming) init for the GELU layers and 1/sqrt(fan_in) for the mean head keep
mu at the scale of the features, of the order of the N(0, I) prior. On the demo corpus this took
the five-fold WER of `full` from 0.51 +- 0.09 to 0.33 +- 0.03 at the same UA (0.68).
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass
class BottleneckOutput:
    z: torch.Tensor  # (B, T, latent)
    mu: torch.Tensor
    sigma: torch.Tensor
    kl: torch.Tensor  # scalar: KL per frame, averaged over real (unmasked) frames


def gaussian_kl(mu: torch.Tensor, sigma: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) summed over latent dims, averaged over frames where mask is True."""
    per_frame = 0.5 * (mu.pow(2) + sigma.pow(2) - 1.0 - 2.0 * torch.log(sigma)).sum(dim=-1)
    if mask is None:
        return per_frame.mean()
    mask = mask.to(per_frame.dtype)
    return (per_frame * mask).sum() / mask.sum().clamp_min(1.0)


class VariationalBottleneck(nn.Module):
    """Weighted layer sum -> Linear, GELU, Linear, GELU -> mean head and Softplus std head."""

    def __init__(self, num_layers: int, input_dim: int, hidden_dim: int, latent_dim: int) -> None:
        super().__init__()
        self.layer_sum = WeightedLayerSum(num_layers)
        self.encoder = nn.Sequential(
            nn.Linear(input_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim), nn.GELU()
        )
        self.mean = nn.Linear(hidden_dim, latent_dim)
        self.std = nn.Sequential(nn.Linear(hidden_dim, latent_dim), nn.Softplus())
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
        return BottleneckOutput(z=z, mu=mu, sigma=sigma, kl=gaussian_kl(mu, sigma, mask))
