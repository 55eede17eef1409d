"""Batch-wise Barlow Twins loss: hand-computed values, duplicates, gradients, dtypes, input checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from workbench.errors import ConfigError
from workbench.losses.barlow_twins import BatchWiseBarlowTwinsLoss, batchwise_barlow_twins_loss


def _hand_case() -> tuple[torch.Tensor, torch.Tensor]:
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    z = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, 5.0]])
    return p, z


def test_hand_computed_case() -> None:
    # unit rows: p = [(1, 0), (0, 1), (r, r)], z = [(1, 0), (r, r), (0, 1)] with r = 1/√2
    # c = [[1, r, 0], [0, r, 1], [r, 1, r]]
    # diagonal: (1-1)² + (r-1)² + (r-1)² = 2 (1 - r)²
    # off-diagonal squares: r² + 0 + 0 + 1 + r² + 1 = 2 + 2 r² = 3
    r = 1 / math.sqrt(2)
    on, off = 2 * (1 - r) ** 2, 3.0
    loss = BatchWiseBarlowTwinsLoss()(*_hand_case())
    assert loss.item() == pytest.approx(on + 0.01 * off, rel=1e-6)
    loss = batchwise_barlow_twins_loss(*_hand_case(), off_diagonal_weight=0.5, divide_by_batch=True)
    assert loss.item() == pytest.approx((on + 0.5 * off) / 3, rel=1e-6)


def test_matches_numpy_formula() -> None:
    gen = torch.Generator().manual_seed(0)
    p, z = torch.randn(7, 5, generator=gen), torch.randn(7, 5, generator=gen)
    pn = p.double().numpy() / np.linalg.norm(p.double().numpy(), axis=1, keepdims=True)
    zn = z.double().numpy() / np.linalg.norm(z.double().numpy(), axis=1, keepdims=True)
    c = pn @ zn.T
    expected = ((np.diag(c) - 1) ** 2).sum() + 0.01 * ((c**2).sum() - (np.diag(c) ** 2).sum())
    assert BatchWiseBarlowTwinsLoss()(p, z).item() == pytest.approx(expected, rel=1e-5)


def test_duplicate_samples_do_not_fail() -> None:
    # every row identical and p = z: c is all ones, on-diagonal 0, off-diagonal B(B-1)
    p = torch.tensor([[0.5, -1.0, 2.0]]).repeat(4, 1)
    loss = BatchWiseBarlowTwinsLoss(off_diagonal_weight=0.01)(p, p.clone())
    assert loss.item() == pytest.approx(0.01 * 12, rel=1e-5)


def test_zero_rows_are_finite() -> None:
    p = torch.zeros(3, 4, requires_grad=True)
    loss = BatchWiseBarlowTwinsLoss()(p, torch.ones(3, 4))
    loss.backward()
    assert loss.item() == pytest.approx(3.0)  # c = 0: three (0 - 1)² terms
    assert torch.isfinite(p.grad).all()


def test_grows_with_batch_unless_divided() -> None:
    p = torch.tensor([[1.0, 0.0]]).repeat(8, 1)
    z = torch.tensor([[0.0, 1.0]]).repeat(8, 1)  # c = 0: loss = B
    assert BatchWiseBarlowTwinsLoss()(p, z).item() == pytest.approx(8.0)
    assert BatchWiseBarlowTwinsLoss(divide_by_batch=True)(p, z).item() == pytest.approx(1.0)


def test_gradients_flow_to_both_inputs() -> None:
    gen = torch.Generator().manual_seed(1)
    p = torch.randn(5, 6, generator=gen, requires_grad=True)
    z = torch.randn(5, 6, generator=gen, requires_grad=True)
    BatchWiseBarlowTwinsLoss()(p, z).backward()
    for grad in (p.grad, z.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_perfect_prediction_only_pays_the_off_diagonal() -> None:
    # orthonormal targets predicted exactly: c = I, loss 0
    eye = torch.eye(4)
    assert BatchWiseBarlowTwinsLoss()(eye * 3.0, eye).item() == pytest.approx(0.0, abs=1e-7)


def test_dtype_policy_and_bf16_autocast() -> None:
    p, z = _hand_case()
    assert BatchWiseBarlowTwinsLoss()(p, z).dtype == torch.float32
    assert BatchWiseBarlowTwinsLoss()(p.double(), z.double()).dtype == torch.float64
    head = torch.nn.Linear(2, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hp, hz = head(p), head(z)
        assert hp.dtype == torch.bfloat16
        loss = BatchWiseBarlowTwinsLoss()(hp, hz)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_bad_input_is_rejected() -> None:
    with pytest.raises(ConfigError, match="one shape"):
        BatchWiseBarlowTwinsLoss()(torch.zeros(3, 2), torch.zeros(3, 4))
    with pytest.raises(ConfigError, match="B = 0"):
        BatchWiseBarlowTwinsLoss()(torch.zeros(0, 2), torch.zeros(0, 2))
    with pytest.raises(ConfigError, match="off_diagonal_weight"):
        BatchWiseBarlowTwinsLoss(off_diagonal_weight=-0.1)
