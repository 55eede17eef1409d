"""Class-balanced and enrollment samplers: invariants, determinism, failures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.data.samplers import (
    ClassBalancedBatchSampler,
    noise_negatives,
    random_halves,
)
from workbench.errors import ConfigError, DataError


def _pk_labels() -> np.ndarray:
    # 5 classes with 30, 30, 30, 30 and 3 members (the last smaller than K)
    return np.random.default_rng(2).permutation(np.repeat(np.arange(5), [30, 30, 30, 30, 3]))


def test_pk_sampler_composition() -> None:
    labels = _pk_labels()
    sampler = ClassBalancedBatchSampler(labels, classes_per_batch=3, samples_per_class=4, seed=0)
    assert len(sampler) == labels.size // 12
    for batch in sampler.batches(0) + sampler.batches(1):
        assert len(batch) == 12
        classes, counts = np.unique(labels[batch], return_counts=True)
        assert classes.size == 3 and np.all(counts == 4)
        for c in classes:
            members = [i for i in batch if labels[i] == c]
            distinct = len(set(members))
            # distinct when the class has >= K members; all 3 members of the small class otherwise
            assert distinct == (4 if c < 4 else 3)


def test_pk_sampler_is_a_function_of_seed_and_epoch() -> None:
    labels = _pk_labels()
    a = ClassBalancedBatchSampler(labels, 3, 4, seed=11)
    b = ClassBalancedBatchSampler(labels, 3, 4, seed=11)
    assert a.batches(0) == b.batches(0) and a.batches(3) == b.batches(3)
    assert a.batches(0) != a.batches(1)
    assert a.batches(0) != ClassBalancedBatchSampler(labels, 3, 4, seed=12).batches(0)
    assert list(a) == a.batches(0) == list(a)  # iterating gives epoch 0, again and again


def test_pk_sampler_covers_classes_evenly() -> None:
    labels = _pk_labels()
    sampler = ClassBalancedBatchSampler(labels, 2, 2, seed=0, n_batches=2000)
    seen = np.bincount(labels[np.concatenate(sampler.batches(0))], minlength=5)
    np.testing.assert_allclose(seen / seen.sum(), 0.2, atol=0.02)


@pytest.mark.parametrize(
    "p, k, match", [(1, 4, "classes_per_batch"), (6, 4, "classes_per_batch"), (3, 1, "samples_per_class")]
)
def test_pk_sampler_rejects_bad_sizes(p: int, k: int, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ClassBalancedBatchSampler(_pk_labels(), p, k, seed=0)


def test_random_halves_are_disjoint_and_seeded() -> None:
    a, p = random_halves(11, torch.Generator().manual_seed(3))
    assert a.shape == p.shape == (5,)
    assert len(set(a.tolist()) | set(p.tolist())) == 10
    a2, p2 = random_halves(11, torch.Generator().manual_seed(3))
    assert torch.equal(a, a2) and torch.equal(p, p2)
    with pytest.raises(DataError, match="at least 2 windows"):
        random_halves(1)


def test_noise_negatives_scale_shape_dtype() -> None:
    anchor = torch.zeros(200, 30, 20, dtype=torch.float64)
    noise = noise_negatives(anchor, 1.5, torch.Generator().manual_seed(0))
    assert noise.shape == anchor.shape and noise.dtype == torch.float64
    assert noise.std().item() == pytest.approx(1.5, rel=0.02)
    assert noise.mean().item() == pytest.approx(0.0, abs=0.02)
    torch.testing.assert_close(noise, noise_negatives(anchor, 1.5, torch.Generator().manual_seed(0)))
    with pytest.raises(ConfigError, match="scale"):
        noise_negatives(anchor, 0.0)
