"""Margin triplet loss: hand-computed values, reduction, gradients and input checks."""

from __future__ import annotations

import pytest
import torch

from workbench.errors import ConfigError
from workbench.losses.triplet import triplet_margin_loss, triplet_terms


def _hand_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    anchor = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    positive = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    negative = torch.tensor([[1.0, 1.0], [1.0, 0.5], [2.0, 1.0]])
    return anchor, positive, negative


def test_hand_computed_case() -> None:
    # row 0: d+ = 0² + 1² = 1,  d- = 1² + 1² = 2,    hinge = max(0, 1 - 2 + 0.3)    = 0
    # row 1: d+ = 0,            d- = 0.5² = 0.25,    hinge = max(0, 0 - 0.25 + 0.3) = 0.05
    # row 2: d+ = 2² = 4,       d- = 1² = 1,         hinge = max(0, 4 - 1 + 0.3)    = 3.3
    # loss = (0 + 0.05 + 3.3) / 3 = 1.11666...
    terms = triplet_terms(*_hand_case(), margin=0.3)
    torch.testing.assert_close(terms.pos_dist, torch.tensor([1.0, 0.0, 4.0]))
    torch.testing.assert_close(terms.neg_dist, torch.tensor([2.0, 0.25, 1.0]))
    torch.testing.assert_close(terms.hinge, torch.tensor([0.0, 0.05, 3.3]))
    loss = triplet_margin_loss(*_hand_case(), margin=0.3)
    torch.testing.assert_close(loss, torch.tensor(3.35 / 3))


def test_plain_mean_counts_satisfied_triplets() -> None:
    # the satisfied row 0 still counts in the denominator (mean over all 3, not over the 2 active)
    loss = triplet_margin_loss(*_hand_case(), margin=0.3)
    assert loss.item() == pytest.approx(3.35 / 3)
    assert loss.item() != pytest.approx(3.35 / 2)


def test_matches_independent_computation() -> None:
    gen = torch.Generator().manual_seed(0)
    a, p, n = torch.randn(3, 50, 7, generator=gen).unbind(0)
    expected = torch.clamp(torch.cdist(a, p).diagonal() ** 2 - torch.cdist(a, n).diagonal() ** 2 + 0.7, min=0).mean()
    torch.testing.assert_close(triplet_margin_loss(a, p, n, margin=0.7), expected, rtol=1e-4, atol=1e-5)


def test_satisfied_triplets_give_no_gradient() -> None:
    anchor, positive, negative = (t.clone().requires_grad_(True) for t in _hand_case())
    triplet_margin_loss(anchor, positive, negative, margin=0.3).backward()
    assert torch.all(anchor.grad[0] == 0) and torch.all(negative.grad[0] == 0)
    # active row 2: d/dn of -(‖a - n‖²)/3 = 2 (a - n) / 3 = (0, -2/3)
    torch.testing.assert_close(negative.grad[2], torch.tensor([0.0, -2.0 / 3.0]))


@pytest.mark.parametrize(
    "shapes, match",
    [
        (((4, 3), (4, 3), (4, 2)), "one shape"),
        (((4, 3), (5, 3), (4, 3)), "one shape"),
        (((4,), (4,), (4,)), r"\(N, D\)"),
        (((0, 3), (0, 3), (0, 3)), "at least one triplet"),
    ],
)
def test_bad_shapes_raise(shapes, match) -> None:
    legs = [torch.zeros(s) for s in shapes]
    with pytest.raises(ConfigError, match=match):
        triplet_margin_loss(*legs)


def test_negative_margin_raises() -> None:
    with pytest.raises(ConfigError, match="margin"):
        triplet_margin_loss(*_hand_case(), margin=-0.1)
