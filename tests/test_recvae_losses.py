"""RecVAE loss terms against hand computations in numpy float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from workbench.errors import ConfigError, DataError
from workbench.losses.recvae import (
    NoiseScales,
    reconstruction_loss,
    recvae_loss,
    subject_sparsity,
    temporal_loss,
    transition_kl,
    transition_penalty,
)


def test_reconstruction_is_the_reference_loss1():
    """loss1 = Σ_{b,t} ‖x − x̂‖² / (σ_x² · 2 B T) (the reference), here with B·T = 6 frames of 2×3×2 voxels."""
    rng = np.random.default_rng(0)
    x, x_hat = rng.standard_normal((6, 1, 2, 3, 2)), rng.standard_normal((6, 1, 2, 3, 2))
    expected = ((x - x_hat) ** 2).sum() / (0.5**2 * 2 * 6)
    got = reconstruction_loss(torch.from_numpy(x), torch.from_numpy(x_hat), noise_var=0.25)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(float(got), expected, rtol=1e-12)


def test_reconstruction_by_hand_on_two_frames():
    x = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    x_hat = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    # squared residual sums per frame: 0 + 4 + 9 = 13 and 3 -> ½ · mean(13, 3) = 4
    assert float(reconstruction_loss(x, x_hat)) == pytest.approx(4.0)
    # per-voxel mean: ½ · mean(13/3, 1) = 4/3
    assert float(reconstruction_loss(x, x_hat, voxel_reduction="mean")) == pytest.approx(4 / 3)
    # learned-scale form with σ² = 2: 4/2 + ½ · 3 · log 2
    got = reconstruction_loss(x, x_hat, noise_var=torch.tensor(2.0), log_normalizer=True)
    assert float(got) == pytest.approx(2.0 + 1.5 * math.log(2.0))


def test_masked_reconstruction_ignores_background_even_when_it_is_nan():
    rng = np.random.default_rng(1)
    x, x_hat = rng.standard_normal((4, 1, 3, 3, 2)), rng.standard_normal((4, 1, 3, 3, 2))
    mask = rng.random((3, 3, 2)) > 0.5
    x[:, 0][:, ~mask] = np.nan
    expected_sum = 0.5 * np.mean([((x[n, 0] - x_hat[n, 0])[mask] ** 2).sum() for n in range(4)])
    x_hat_t = torch.from_numpy(x_hat).requires_grad_()
    got = reconstruction_loss(torch.from_numpy(x), x_hat_t, mask=torch.from_numpy(mask))
    np.testing.assert_allclose(float(got.detach()), expected_sum, rtol=1e-12)
    got.backward()
    grad = x_hat_t.grad.numpy()[:, 0]
    assert np.isfinite(grad).all() and (grad[:, ~mask] == 0).all()
    np.testing.assert_allclose(grad[:, mask], (x_hat[:, 0] - x[:, 0])[:, mask] / 4, rtol=1e-12)
    mean = reconstruction_loss(
        torch.from_numpy(x), torch.from_numpy(x_hat), mask=torch.from_numpy(mask), voxel_reduction="mean"
    )
    np.testing.assert_allclose(float(mean), expected_sum / mask.sum(), rtol=1e-12)


def test_an_all_true_mask_equals_no_mask():
    rng = np.random.default_rng(8)
    x, x_hat = (
        torch.from_numpy(rng.standard_normal((3, 1, 4, 2, 3))),
        torch.from_numpy(rng.standard_normal((3, 1, 4, 2, 3))),
    )
    everything = torch.ones(4, 2, 3, dtype=torch.bool)
    for reduction in ("sum", "mean"):
        torch.testing.assert_close(
            reconstruction_loss(x, x_hat, mask=everything, voxel_reduction=reduction),
            reconstruction_loss(x, x_hat, voxel_reduction=reduction),
        )


def test_temporal_term_by_hand():
    h = torch.tensor([[1.0, 2.0], [0.0, -1.0], [3.0, 0.0]])
    prior = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # ‖·‖² per frame: 5, 4, 5 -> ½ · 14/3 / σ_h² with σ_h² = 4
    assert float(temporal_loss(h, prior, noise_var=4.0)) == pytest.approx(14 / 3 / 8)
    got = temporal_loss(h, prior, noise_var=torch.tensor(4.0), log_normalizer=True)
    assert float(got) == pytest.approx(14 / 3 / 8 + 0.5 * 2 * math.log(4.0))


def test_kl_matches_the_gaussian_formula_and_torch_distributions():
    rng = np.random.default_rng(2)
    mu, log_var, prior = rng.standard_normal((5, 3)), 0.5 * rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    var_h = 1.7
    var = np.exp(log_var)
    textbook = 0.5 * (np.log(var_h / var) + (var + (mu - prior) ** 2) / var_h - 1)
    got = transition_kl(torch.from_numpy(mu), torch.from_numpy(log_var), torch.from_numpy(prior), var_h)
    np.testing.assert_allclose(float(got), textbook.sum(1).mean(), rtol=1e-12)
    q = Normal(torch.from_numpy(mu), torch.from_numpy(var).sqrt())
    p = Normal(torch.from_numpy(prior), torch.full((5, 3), math.sqrt(var_h), dtype=torch.float64))
    np.testing.assert_allclose(float(got), float(kl_divergence(q, p).sum(1).mean()), rtol=1e-12)


def test_kl_vanishes_when_the_posterior_is_the_prior():
    prior = torch.randn(4, 3)
    log_var = torch.full((4, 3), math.log(0.3))
    assert abs(float(transition_kl(prior.clone(), log_var, prior, 0.3))) < 1e-6


def test_subject_sparsity_and_its_gradient():
    z = torch.tensor([[0.5, -2.0], [0.0, 1.5]], requires_grad=True)
    loss = subject_sparsity(z, lambda_z=10.0)
    assert float(loss.detach()) == pytest.approx(40.0)
    loss.backward()
    torch.testing.assert_close(z.grad, 10.0 * torch.sign(z.detach()))


def test_transition_penalty_is_reported_without_gradient():
    f = torch.tensor([[1.0, 2.0], [0.0, -3.0]], requires_grad=True)
    penalty = transition_penalty(f, rho=0.1)
    assert float(penalty) == pytest.approx(1.4)
    assert not penalty.requires_grad


def test_noise_scales_fixed_are_buffers_learned_are_parameters():
    fixed, learned = NoiseScales(2.0, 0.5), NoiseScales(2.0, 0.5, learned=True)
    assert list(fixed.parameters()) == [] and {"log_var_x", "log_var_h"} <= set(fixed.state_dict())
    assert float(fixed.var_x) == pytest.approx(4.0) and float(fixed.var_h) == pytest.approx(0.25)
    assert {n for n, _ in learned.named_parameters()} == {"log_var_x", "log_var_h"}


def _inputs(seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    x, x_hat = torch.randn(6, 1, 2, 3, 2, generator=g), torch.randn(6, 1, 2, 3, 2, generator=g)
    h, mu, log_var, prior = (torch.randn(6, 4, generator=g) for _ in range(4))
    return x, x_hat, h, mu, log_var, prior, torch.randn(3, 4, generator=g), torch.randn(4, 4, generator=g)


def test_total_is_the_sum_of_the_reported_terms():
    x, x_hat, h, mu, log_var, prior, z, f = _inputs()
    terms = recvae_loss(x, x_hat, h, mu, log_var, prior, z, f, noise=NoiseScales(), lambda_z=2.0, rho=0.5)
    assert set(terms) == {"loss", "reconstruction", "temporal", "z_sparsity", "F_penalty"}
    torch.testing.assert_close(terms["loss"], terms["reconstruction"] + terms["temporal"] + terms["z_sparsity"])
    torch.testing.assert_close(terms["reconstruction"], reconstruction_loss(x, x_hat))
    torch.testing.assert_close(terms["temporal"], temporal_loss(h, prior))
    torch.testing.assert_close(terms["F_penalty"], 0.5 * f.square().sum())
    kl = recvae_loss(x, x_hat, h, mu, log_var, prior, z, f, noise=NoiseScales(), temporal="kl")
    assert "kl" in kl and "temporal" not in kl
    torch.testing.assert_close(kl["kl"], transition_kl(mu, log_var, prior))


def test_learned_scales_get_gradients_and_are_reported():
    x, x_hat, h, mu, log_var, prior, z, f = _inputs()
    noise = NoiseScales(1.5, 0.8, learned=True)
    terms = recvae_loss(x, x_hat, h, mu, log_var, prior, z, f, noise=noise)
    terms["loss"].backward()
    assert noise.log_var_x.grad is not None and float(noise.log_var_x.grad) != 0
    assert noise.log_var_h.grad is not None and float(noise.log_var_h.grad) != 0
    assert float(terms["sigma_x"]) == pytest.approx(1.5) and float(terms["sigma_h"]) == pytest.approx(0.8)
    # the optimum of ½ r²/σ² + ½ log σ² over σ² is the mean squared residual
    per_voxel = (x - x_hat).square().mean()
    best = NoiseScales(float(per_voxel.sqrt()), learned=True)
    recon = reconstruction_loss(x, x_hat, best.var_x, voxel_reduction="mean", log_normalizer=True)
    recon.backward()
    assert abs(float(best.log_var_x.grad)) < 1e-5


def test_loss_in_bf16_inputs_is_computed_in_float32():
    x, x_hat, h, mu, log_var, prior, z, f = _inputs()
    terms = recvae_loss(x, x_hat.bfloat16(), h.bfloat16(), mu, log_var, prior.bfloat16(), z, f, noise=NoiseScales())
    assert terms["loss"].dtype == torch.float32


def test_bad_inputs_raise():
    x = torch.zeros(2, 3)
    with pytest.raises(DataError, match="one shape"):
        reconstruction_loss(x, torch.zeros(2, 4))
    with pytest.raises(ConfigError, match="boolean"):
        reconstruction_loss(x, x, mask=torch.ones(3))
    with pytest.raises(DataError, match="does not fit"):
        reconstruction_loss(x, x, mask=torch.ones(4, dtype=torch.bool))
    with pytest.raises(ConfigError, match="voxel_reduction"):
        reconstruction_loss(x, x, voxel_reduction="max")
    with pytest.raises(ConfigError, match="> 0"):
        temporal_loss(x, x, noise_var=0.0)
    with pytest.raises(DataError, match=r"\(N, L\)"):
        temporal_loss(torch.zeros(2, 3, 1), torch.zeros(2, 3, 1))
    with pytest.raises(ConfigError, match="lambda_z"):
        subject_sparsity(x, lambda_z=-1.0)
    with pytest.raises(ConfigError, match="noise scales"):
        NoiseScales(0.0)
    with pytest.raises(ConfigError, match="temporal"):
        recvae_loss(x, x, x, x, x, x, x, torch.eye(3), noise=NoiseScales(), temporal="l1")
