"""Trivial floors of the families' objectives, on hand-made cases with known values.

lfr: the best input-independent prediction of the batch-wise Barlow Twins loss and the loss's
minimum; yaware: the collapsed InfoNCE; fewshot: the collapsed triplet loss; recvae: the
window-mean reconstruction. And the Transformer backbone, which must not be a constant of
per-window z-scored windows by construction.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from workbench.errors import ConfigError, DataError
from workbench.losses.barlow_twins import (
    batch_centred,
    batchwise_barlow_twins_loss,
    batchwise_barlow_twins_minimum,
    constant_prediction_floor,
    constant_prediction_loss,
    mean_pairwise_cosine,
)
from workbench.losses.recvae import reconstruction_loss, window_mean_reconstruction
from workbench.losses.triplet import collapsed_triplet_loss, triplet_margin_loss
from workbench.losses.yaware_infonce import YAwareInfoNCE
from workbench.models.backbones import BackboneFields, TransformerBackbone


# -- lfr: the constant prediction ------------------------------------------------------------
@pytest.mark.parametrize(("batch", "weight"), [(4, 0.5), (128, 0.01), (8, 0.0)])
def test_identical_targets_floor_is_b_lambda_b_minus_1_over_alpha(batch: int, weight: float) -> None:
    # every target e1: L(a) = B [(s-1)² + λ(B-1) s²], minimal at s = 1/α, α = 1 + λ(B-1):
    # B λ(B-1) / α, reached by a unit vector at cos 1/α from e1; nothing input-dependent does better
    z = torch.zeros(batch, 3)
    z[:, 0] = 2.0
    alpha = 1 + weight * (batch - 1)
    floor = constant_prediction_floor(z, weight)
    assert floor.value.item() == pytest.approx(batch * weight * (batch - 1) / alpha, abs=1e-9)
    assert floor.direction[0].item() == pytest.approx(1 / alpha, abs=1e-9)
    assert floor.direction.norm().item() == pytest.approx(1.0)
    assert batchwise_barlow_twins_minimum(z, weight).item() == pytest.approx(floor.value.item(), abs=1e-9)


def test_orthonormal_targets_on_the_sphere() -> None:
    # B = D = 4, λ = 0: L(a) = Σ (s_j - 1)² with Σ s_j² = 1: s_j = 1/2, L = 4 · 1/4 = 1 (zero prediction: 4)
    z = torch.eye(4)
    floor = constant_prediction_floor(z, 0.0)
    assert floor.value.item() == pytest.approx(1.0, abs=1e-9)
    torch.testing.assert_close(floor.direction, torch.full((4,), 0.5, dtype=torch.float64))
    # every row can copy its own target at no off-diagonal cost: the minimum is 0 for any λ
    assert batchwise_barlow_twins_minimum(z, 0.3).item() == pytest.approx(0.0, abs=1e-9)


def test_the_hard_case_puts_the_missing_length_outside_the_targets_span() -> None:
    # B = 2 orthonormal targets in D = 3, λ = 3: α = 4, unconstrained s_j = 1/4 has length² 1/8 < 1,
    # so the unit minimiser is (1/4, 1/4, ±√(7/8)) and L = 2 - 2/4 = 1.5
    z = torch.eye(3)[:2]
    floor = constant_prediction_floor(z, 3.0)
    assert floor.value.item() == pytest.approx(1.5, abs=1e-9)
    assert floor.direction[:2].tolist() == pytest.approx([0.25, 0.25], abs=1e-9)
    assert abs(floor.direction[2].item()) == pytest.approx(math.sqrt(7 / 8), abs=1e-9)


def test_the_zero_prediction_wins_when_no_direction_helps() -> None:
    # D = 1, targets +1 and -1: a = ±1 scores (1-1)² + (-1-1)² + 2λ = 4 + 2λ; a = 0 scores B = 2
    z = torch.tensor([[1.0], [-1.0]])
    floor = constant_prediction_floor(z, 0.01)
    assert floor.value.item() == 2.0 and floor.direction.tolist() == [0.0]
    assert constant_prediction_floor(z, 0.01, divide_by_batch=True).value.item() == 1.0


def test_the_constant_loss_is_the_batch_loss_of_a_repeated_prediction_and_the_floor_beats_any_constant() -> None:
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(16, 5, generator=gen, dtype=torch.float64) + 1.0
    for weight, divide in ((0.01, False), (0.2, True)):
        floor = constant_prediction_floor(z, weight, divide)
        candidates = torch.cat([torch.randn(500, 5, generator=gen, dtype=torch.float64), z.mean(0, keepdim=True)])
        for a in candidates:
            repeated = batchwise_barlow_twins_loss(a.expand(16, 5), z, weight, divide)
            assert constant_prediction_loss(a, z, weight, divide).item() == pytest.approx(repeated.item(), rel=1e-9)
            assert floor.value.item() <= repeated.item() + 1e-9
        assert constant_prediction_loss(floor.direction, z, weight, divide).item() == pytest.approx(floor.value.item())
        # the minimum is a lower bound of every prediction, the constant's included
        assert batchwise_barlow_twins_minimum(z, weight, divide) <= floor.value + 1e-9


def test_the_minimum_is_below_any_prediction() -> None:
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(6, 4, generator=gen, dtype=torch.float64) + 0.5
    minimum = batchwise_barlow_twins_minimum(z, 0.1).item()
    for _ in range(200):
        assert minimum <= batchwise_barlow_twins_loss(torch.randn(6, 4, generator=gen), z, 0.1).item() + 1e-6
    assert minimum <= batchwise_barlow_twins_loss(z, z, 0.1).item()  # the exact copy included


def test_mean_pairwise_cosine_and_centring_by_hand() -> None:
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    r = 1 / math.sqrt(2)  # cosines: (1,2) 0, (1,3) r, (2,3) r
    assert mean_pairwise_cosine(z).item() == pytest.approx(2 * r / 3)
    centred = batch_centred(z)
    torch.testing.assert_close(centred.sum(0), torch.zeros(2))
    # centring removes the shared direction: identical targets leave only zeros
    assert batch_centred(torch.ones(4, 3)).abs().max() == 0
    with pytest.raises(ConfigError, match="at least 2 rows"):
        mean_pairwise_cosine(z[:1])
    with pytest.raises(ConfigError, match=r"\(B, D\)"):
        constant_prediction_floor(torch.zeros(3))
    with pytest.raises(ConfigError, match="constant prediction"):
        constant_prediction_loss(torch.zeros(3), z)


# -- yaware, fewshot, recvae ------------------------------------------------------------------
@pytest.mark.parametrize("normalize", ["row", "column"])
@pytest.mark.parametrize("n", [1, 4, 32])
def test_collapsed_infonce_is_log_2b_minus_1_with_and_without_labels(n: int, normalize: str) -> None:
    loss_fn = YAwareInfoNCE("gaussian", bandwidth=2.0, normalize=normalize)
    expected = math.log(2 * n - 1)
    assert loss_fn.collapsed_loss(n).item() == pytest.approx(expected, abs=1e-6)
    labels = torch.linspace(0.0, 3.0, n)
    labels[0] = float("nan")  # an undefined label falls back to the positive pair
    assert loss_fn.collapsed_loss(n, labels).item() == pytest.approx(expected, abs=1e-6)
    same = torch.randn(1, 7).expand(n, 7)
    assert loss_fn(same, same, labels).item() == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ConfigError, match="at least one sample"):
        loss_fn.collapsed_loss(0)


@pytest.mark.parametrize("margin", [0.0, 0.3, 1.5])
def test_collapsed_triplet_loss_is_the_margin(margin: float) -> None:
    assert collapsed_triplet_loss(margin) == pytest.approx(margin)
    same = torch.randn(1, 5).expand(9, 5)
    assert triplet_margin_loss(same, same, same, margin).item() == pytest.approx(margin)


def test_window_mean_reconstruction_by_hand() -> None:
    # one window, two frames, two voxels: frames (1, 0) and (3, 4); mean frame (2, 2); residuals (∓1, ∓2)
    # R = (1/N) Σ_n ½ Σ_v r² / σ² = ½ · ½ · (1 + 4 + 1 + 4) = 2.5 (sum), 1.25 (mean over the 2 voxels)
    x = torch.tensor([[[1.0, 0.0], [3.0, 4.0]]])
    assert window_mean_reconstruction(x).item() == pytest.approx(2.5)
    assert window_mean_reconstruction(x, voxel_reduction="mean").item() == pytest.approx(1.25)
    assert window_mean_reconstruction(x, noise_var=2.0).item() == pytest.approx(1.25)
    learned = window_mean_reconstruction(x, torch.tensor(2.0), log_normalizer=True).item()
    assert learned == pytest.approx(1.25 + 0.5 * 2 * math.log(2.0))
    # two windows: each is scored against its own mean frame, so a constant window costs nothing
    both = torch.cat([x, torch.full((1, 2, 2), 7.0)])
    assert window_mean_reconstruction(both).item() == pytest.approx(2.5 / 2)
    frames = both.flatten(0, 1)
    assert reconstruction_loss(frames, frames).item() == 0.0
    with pytest.raises(DataError, match=r"\(B, T, V\)"):
        window_mean_reconstruction(frames)


# -- the backbone -------------------------------------------------------------------------------
def _skip_path_only(backbone: TransformerBackbone) -> TransformerBackbone:
    """Zero the output projections of every attention and feed-forward branch: the residual stream alone."""
    for layer in backbone.transformer.layers:
        for linear in (layer.self_attn.out_proj, layer.linear2):
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)
    return backbone.eval()


def test_without_a_final_norm_the_skip_path_of_z_scored_windows_is_one_constant() -> None:
    # two windows of different content with the same per-feature means (0, as after window z-scoring)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 12, 6, generator=gen)
    x = (x - x.mean(dim=1, keepdim=True)) / x.std(dim=1, keepdim=True)
    torch.manual_seed(0)
    old = _skip_path_only(TransformerBackbone(6, 16, 2, 2, dropout=0.0, final_norm=False))
    with torch.no_grad():
        out = old(x)  # mean over time of W x_t + b + p_t = b + mean(p): the same for both windows
    torch.testing.assert_close(out[0], out[1])
    torch.manual_seed(0)
    new = _skip_path_only(TransformerBackbone(6, 16, 2, 2, dropout=0.0, final_norm=True))
    with torch.no_grad():
        out = new(x)  # the LayerNorm of every token is not linear: the pooled output reads the frames
    assert (out[0] - out[1]).abs().max() > 1e-2
    # the families' configs build the final norm by default; fewshot keeps Neural Vault's encoder without it
    built = BackboneFields().make_backbone(6, 12)
    assert isinstance(built.transformer.norm, nn.LayerNorm)
    assert BackboneFields(final_norm=False).make_backbone(6, 12).transformer.norm is None
