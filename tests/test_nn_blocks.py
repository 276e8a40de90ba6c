from __future__ import annotations

import math

import pytest
import torch

from benchmark.nn.adapter import FeatureAdapter, stack_frames
from benchmark.nn.bottleneck import (
    VariationalBottleneck,
    VIBTerm,
    WeightedLayerSum,
    gaussian_kl,
    gaussian_kl_per_frame,
    masked_term,
    vib_loss,
)


def test_weighted_sum_starts_as_the_layer_mean():
    hidden = torch.randn(4, 2, 7, 3)
    assert torch.allclose(WeightedLayerSum(4)(hidden), hidden.mean(dim=0), atol=1e-6)
    with pytest.raises(ValueError, match="expected 4 layers"):
        WeightedLayerSum(4)(torch.randn(3, 2, 7, 3))


def test_kl_matches_the_closed_form_on_a_hand_case():
    mu = torch.tensor([[[0.5, -1.0], [0.0, 0.0]]])  # (B=1, T=2, latent=2)
    sigma = torch.tensor([[[2.0, 0.5], [1.0, 1.0]]])
    # frame 1: 0.5*((0.25 + 4 - 1 - 2 ln 2) + (1 + 0.25 - 1 - 2 ln 0.5)); frame 2: 0 (equals the prior)
    frame1 = 0.5 * ((0.25 + 4 - 1 - 2 * math.log(2)) + (1 + 0.25 - 1 - 2 * math.log(0.5)))
    assert gaussian_kl(mu, sigma).item() == pytest.approx(frame1 / 2)
    only_first = torch.tensor([[True, False]])
    assert gaussian_kl(mu, sigma, only_first).item() == pytest.approx(frame1)
    q = torch.distributions.Normal(mu, sigma)
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(sigma))
    assert gaussian_kl(mu, sigma).item() == pytest.approx(
        torch.distributions.kl_divergence(q, p).sum(-1).mean().item()
    )


def test_bottleneck_samples_in_training_and_uses_mu_in_eval():
    torch.manual_seed(0)
    block = VariationalBottleneck(num_layers=3, input_dim=8, hidden_dim=16, latent_dim=4)
    hidden, mask = torch.randn(3, 2, 5, 8), torch.ones(2, 5, dtype=torch.bool)
    block.eval()
    out = block(hidden, mask)
    assert out.z.shape == (2, 5, 4) and torch.equal(out.z, out.mu)
    assert torch.equal(block(hidden, mask).z, out.z)
    block.train()
    first, second = block(hidden, mask), block(hidden, mask)
    assert not torch.equal(first.z, first.mu) and not torch.equal(first.z, second.z)
    assert (first.sigma > 0).all() and first.kl.ndim == 0


@pytest.mark.parametrize("feature_scale", [0.5, 2.0])
def test_posterior_mean_starts_at_the_scale_of_the_features(feature_scale):
    # With PyTorch's default Linear init the mean would start ~20x below the features and the
    # sampled z would be mostly noise (std ~0.7); see the bottleneck's docstring.
    torch.manual_seed(0)
    block = VariationalBottleneck(num_layers=3, input_dim=128, hidden_dim=256, latent_dim=128).eval()
    hidden = feature_scale * torch.randn(3, 4, 50, 128)
    ratio = block(hidden).mu.std().item() / block.layer_sum(hidden).std().item()
    assert 0.5 < ratio < 2.0


def test_padded_frames_do_not_change_the_kl():
    torch.manual_seed(0)
    block = VariationalBottleneck(3, 8, 16, 4).eval()
    hidden = torch.randn(3, 1, 5, 8)
    padded = torch.cat([hidden, 100 * torch.randn(3, 1, 4, 8)], dim=2)
    mask = torch.tensor([[True] * 5 + [False] * 4])
    assert block(padded, mask).kl.item() == pytest.approx(block(hidden).kl.item(), rel=1e-5)


def test_bottleneck_kl_sum_is_each_examples_whole_sequence():
    torch.manual_seed(0)
    block = VariationalBottleneck(3, 8, 16, 4).eval()
    hidden = torch.randn(3, 2, 6, 8)
    mask = torch.tensor([[True] * 6, [True] * 2 + [False] * 4])
    out = block(hidden, mask)
    per_frame = gaussian_kl_per_frame(out.mu, out.sigma)
    assert out.kl_sum.shape == (2,)
    assert out.kl_sum[0].item() == pytest.approx(per_frame[0].sum().item(), rel=1e-6)
    assert out.kl_sum[1].item() == pytest.approx(per_frame[1, :2].sum().item(), rel=1e-6)
    assert torch.equal(out.kl, gaussian_kl(out.mu, out.sigma, mask))  # the logged per-frame mean
    assert out.kl.item() == pytest.approx(out.kl_sum.sum().item() / 8, rel=1e-6)  # 8 real frames


# A batch of two: 3 and 1 response tokens, 2 and 4 real frames; padding holds large values that
# would show if they counted. Two KL terms (content, descriptor) enter the same way.
TOKEN_CE = torch.tensor([[1.0, 2.0, 3.0, 50.0], [4.0, 60.0, 70.0, 80.0]])
TOKEN_MASK = torch.tensor([[True, True, True, False], [True, False, False, False]])
KL_CONTENT = torch.tensor([[0.5, 1.5, 99.0, 99.0], [1.0, 1.0, 1.0, 1.0]])
KL_DESCRIPTOR = torch.tensor([[1.0, 1.0, 99.0, 99.0], [0.5, 0.5, 0.5, 0.5]])
FRAME_MASK = torch.tensor([[True, True, False, False], [True, True, True, True]])


def hand_terms(ce_scale: float = 1.0, kl_scale: float = 1.0) -> tuple[VIBTerm, list[VIBTerm]]:
    ce = masked_term(ce_scale * TOKEN_CE, TOKEN_MASK)
    kls = [masked_term(kl_scale * kl, FRAME_MASK) for kl in (KL_CONTENT, KL_DESCRIPTOR)]
    return ce, kls


def test_vib_loss_reductions_on_a_hand_case():
    beta = 0.1
    ce, kls = hand_terms()
    # token_mean: CE (1+2+3+4)/4 tokens; KL per frame (0.5+1.5+4)/6 and (1+1+2)/6 frames
    assert vib_loss(ce, kls, beta, "token_mean").item() == pytest.approx(2.5 + beta * (1.0 + 4 / 6))
    # paper: per example sum of CE + beta * (KL summed over frames), then the mean over the 2 examples
    example0 = (1 + 2 + 3) + beta * ((0.5 + 1.5) + (1 + 1))
    example1 = 4 + beta * ((1 + 1 + 1 + 1) + (0.5 * 4))
    assert vib_loss(ce, kls, beta, "paper").item() == pytest.approx((example0 + example1) / 2)


def test_the_reductions_differ_by_items_per_example():
    """paper = token_mean x (real items / examples) for each term alone: 4 tokens and 6 frames over 2."""
    no_kl = hand_terms(kl_scale=0.0)
    assert vib_loss(*no_kl, 0.1, "paper").item() == pytest.approx(
        vib_loss(*no_kl, 0.1, "token_mean").item() * 4 / 2
    )
    no_ce = hand_terms(ce_scale=0.0)
    assert vib_loss(*no_ce, 0.1, "paper").item() == pytest.approx(
        vib_loss(*no_ce, 0.1, "token_mean").item() * 6 / 2
    )


def test_token_mean_is_the_earlier_expression_bit_for_bit():
    generator = torch.Generator().manual_seed(0)
    ce, kl_c, kl_d = (torch.rand((), generator=generator) for _ in range(3))
    terms = [VIBTerm(mean=kl, sums=None) for kl in (kl_c, kl_d)]
    loss = vib_loss(VIBTerm(mean=ce, sums=None), terms, 1e-3, "token_mean")
    assert torch.equal(loss, ce.float() + 1e-3 * (kl_c.float() + kl_d.float()))


def test_vib_loss_refuses_missing_sums_and_unknown_reductions():
    ce, kls = hand_terms()
    with pytest.raises(ValueError, match="needs each example's sums"):
        vib_loss(VIBTerm(mean=ce.mean, sums=None), kls, 0.1, "paper")
    with pytest.raises(ValueError, match="unknown loss reduction"):
        vib_loss(ce, kls, 0.1, "sum")


def test_stack_frames_shapes_and_mask():
    x = torch.arange(2 * 7 * 2, dtype=torch.float32).reshape(2, 7, 2)
    mask = torch.tensor([[True] * 7, [True] * 3 + [False] * 4])
    stacked, stacked_mask = stack_frames(x, mask, k=3)
    assert stacked.shape == (2, 3, 6)
    assert stacked_mask.tolist() == [[True, True, True], [True, False, False]]
    assert stacked[0, 0].tolist() == x[0, :3].reshape(-1).tolist()
    assert stacked[0, 2, 2:].abs().sum() == 0  # zero padding of the tail
    assert stacked[1, 1].abs().sum() == 0  # padded frames are zeroed


def test_adapter_maps_into_the_llm_width():
    adapter = FeatureAdapter(latent_dim=4, hidden_dim=16, llm_dim=32, stack=5)
    emb, mask = adapter(torch.randn(2, 12, 4), torch.ones(2, 12, dtype=torch.bool))
    assert emb.shape == (2, 3, 32) and mask.shape == (2, 3)
