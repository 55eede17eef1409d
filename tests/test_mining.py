"""Triplet mining: random label triplets, batch-hard and semi-hard selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.errors import ConfigError, DataError
from workbench.losses.mining import hard_triplets, mine_triplets, random_triplets

# classes of sizes 1 (label 9), 2 (label 3), 3 (label 0) and 6 (label 7), shuffled
LABELS = np.random.default_rng(0).permutation(np.array([9] + [3] * 2 + [0] * 3 + [7] * 6))


def test_label_triplet_invariants_over_many_seeds() -> None:
    single = LABELS == 9
    for seed in range(500):
        anchor, positive, negative = random_triplets(LABELS, np.random.default_rng(seed))
        np.testing.assert_array_equal(anchor, np.arange(LABELS.size))
        assert np.all(LABELS[positive] == LABELS[anchor])
        assert np.all(LABELS[negative] != LABELS[anchor])
        assert np.all(positive[single] == anchor[single])  # single-member class: the anchor itself
        assert np.all(positive[~single] != anchor[~single])  # never the anchor otherwise


def test_random_triplets_torch_generator_and_device() -> None:
    labels = torch.from_numpy(LABELS)
    first = random_triplets(labels, torch.Generator().manual_seed(5))
    again = random_triplets(labels, torch.Generator().manual_seed(5))
    assert all(isinstance(t, torch.Tensor) and t.dtype == torch.int64 for t in first)
    for a, b in zip(first, again):
        torch.testing.assert_close(a, b)
    assert torch.all(labels[first[1]] == labels) and torch.all(labels[first[2]] != labels)


def test_random_triplets_are_uniform() -> None:
    # anchor of the class of size 3: each of its 2 other members is the positive half the time;
    # negatives: each of the 3 other classes a third of the time (Neural Vault's class-first draw)
    rng = np.random.default_rng(1)
    draws = [random_triplets(LABELS, rng) for _ in range(3000)]
    i = int(np.flatnonzero(LABELS == 0)[0])
    positives = np.array([p[i] for _, p, _ in draws])
    others = np.flatnonzero(LABELS == 0)[1:]
    assert set(np.unique(positives)) == set(others)
    assert np.mean(positives == others[0]) == pytest.approx(0.5, abs=0.04)
    neg_classes = LABELS[np.array([n[i] for _, _, n in draws])]
    for c in (9, 3, 7):
        assert np.mean(neg_classes == c) == pytest.approx(1 / 3, abs=0.04)


def test_random_triplets_need_two_classes() -> None:
    with pytest.raises(DataError, match="at least two classes"):
        random_triplets(np.zeros(5, dtype=int), np.random.default_rng(0))
    with pytest.raises(DataError, match="1-D"):
        random_triplets(np.zeros((2, 3), dtype=int), np.random.default_rng(0))


def test_batch_hard_mining_picks_the_hardest_pairs() -> None:
    # 1-D points: class 0 at 0, 1, 3; class 1 at 3.5, 10
    z = torch.tensor([[0.0], [1.0], [3.0], [3.5], [10.0]])
    labels = torch.tensor([0, 0, 0, 1, 1])
    anchor, positive, negative = hard_triplets(z, labels, "batch_hard", margin=0.3)
    assert anchor.tolist() == [0, 1, 2, 3, 4]
    assert positive.tolist() == [2, 2, 0, 4, 3]  # farthest same-class point
    assert negative.tolist() == [3, 3, 3, 2, 2]  # nearest other-class point
    _, _, semi = hard_triplets(z, labels, "semi_hard", margin=100.0)
    # semi-hard: the closest negative farther than the positive (anchor 0: d_ap = 9 -> 3.5² = 12.25)
    assert semi[0].item() == 3


def test_semi_hard_falls_back_to_the_hardest_negative_and_unknown_rules_fail():
    z = torch.tensor([[0.0], [1.0], [3.0], [3.5], [10.0]])
    labels = torch.tensor([0, 0, 0, 1, 1])
    # margin 0: no negative lies strictly between d_ap and d_ap + 0 -> the hardest negative
    _, _, negative = hard_triplets(z, labels, "semi_hard", margin=0.0)
    _, _, hardest = hard_triplets(z, labels, "batch_hard")
    assert negative.tolist() == hardest.tolist()
    with pytest.raises(ConfigError, match="mining"):
        mine_triplets(z, labels, "hardest")
    anchor, positive, negative = mine_triplets(z, labels, "random")
    assert torch.all(labels[positive] == labels[anchor]) and torch.all(labels[negative] != labels)
