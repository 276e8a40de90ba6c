"""The feature adapter of one branch (paper section 3.3, eq. 3).

Following LLaMA-Omni, frames are downsampled by stacking k consecutive latent frames into one
vector (k = 5 turns HuBERT's 50 Hz into 10 Hz), then a two-layer ReLU perceptron maps them into
the LLM's embedding width, so each stacked frame becomes one "speech token" in the prompt.
"""

from __future__ import annotations

import torch
from torch import nn


def stack_frames(x: torch.Tensor, mask: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, D), (B, T) -> (B, ceil(T/k), k*D), (B, ceil(T/k)).

    The tail is zero-padded to a multiple of k; a stacked frame is real if any of its frames is.
    """
    batch, frames, dim = x.shape
    pad = (-frames) % k
    if pad:
        x = torch.cat([x, x.new_zeros(batch, pad, dim)], dim=1)
        mask = torch.cat([mask, mask.new_zeros(batch, pad)], dim=1)
    x = x * mask.unsqueeze(-1).to(x.dtype)
    stacked = x.reshape(batch, (frames + pad) // k, k * dim)
    return stacked, mask.reshape(batch, -1, k).any(dim=-1)


class FeatureAdapter(nn.Module):
    """Stack k frames -> Linear, ReLU, Linear into the LLM embedding width."""

    def __init__(self, latent_dim: int, hidden_dim: int, llm_dim: int, stack: int = 5) -> None:
        super().__init__()
        self.stack = stack
        self.proj = nn.Sequential(
            nn.Linear(latent_dim * stack, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, llm_dim)
        )

    def forward(self, z: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z (B, T, latent), mask (B, T) -> embeddings (B, T', llm_dim), mask (B, T')."""
        stacked, stacked_mask = stack_frames(z, mask, self.stack)
        return self.proj(stacked), stacked_mask
