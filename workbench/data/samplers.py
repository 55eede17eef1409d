"""Samplers for metric learning: class-balanced batches and enrollment pairs.

Two pieces, after the P×K batches of Hermans, Beyer & Leibe, "In Defense of the Triplet Loss
for Person Re-Identification", 2017, and the enrollment variant of Neural Vault (triplets within
a batch are chosen by :mod:`workbench.losses.mining`):

* :class:`ClassBalancedBatchSampler` — batches of ``P`` classes × ``K`` samples, so
  every anchor of a batch has in-batch positives; a pure function of
  ``(seed, epoch)``.
* :func:`random_halves` and :func:`noise_negatives` — the enrollment variant for a
  single identity without impostor data: anchors and positives are the two halves
  of a random permutation of the user's windows and negatives are Gaussian noise
  of scale 1.5. Neural Vault pairs this variant with a cosine-annealed learning
  rate; here that schedule is the training engine's (``workbench.train``, warm-up
  followed by cosine decay), not the sampler's.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from workbench.errors import ConfigError, DataError


class ClassBalancedBatchSampler:
    """Batches of ``P`` distinct classes × ``K`` samples each (P×K sampling).

    Within a batch the ``K`` samples of a class are distinct when the class has at
    least ``K`` members and cycle through all its members otherwise. The batches
    of an epoch are a pure function of ``(seed, epoch)`` (:meth:`batches`); iterating
    the sampler yields those of epoch 0. The engine builds one sampler per epoch from a
    seed derived from ``(run seed, epoch)``, so a resumed run draws the same batches.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(N,)`` class label of every training sample.
    classes_per_batch : int
        ``P``, at least 2 and at most the number of classes.
    samples_per_class : int
        ``K``, at least 2 so that every anchor has a positive.
    seed : int
        Seed of the sampling.
    n_batches : int or None
        Batches per epoch; by default ``N // (P·K)`` (at least 1), so an epoch
        draws about ``N`` samples.
    """

    def __init__(
        self,
        labels: np.ndarray,
        classes_per_batch: int,
        samples_per_class: int,
        seed: int,
        n_batches: int | None = None,
    ) -> None:
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.size == 0:
            raise DataError(f"labels must be a non-empty 1-D array, got shape {labels.shape}")
        classes, self._class_of = np.unique(labels, return_inverse=True)
        n_classes = classes.size
        if not 2 <= classes_per_batch <= n_classes:
            raise ConfigError(
                f"classes_per_batch={classes_per_batch} must lie in [2, {n_classes}] "
                f"(the training set has {n_classes} classes)"
            )
        if samples_per_class < 2:
            raise ConfigError(f"samples_per_class={samples_per_class} must be >= 2 so that every anchor has a positive")
        self.classes_per_batch = int(classes_per_batch)
        self.samples_per_class = int(samples_per_class)
        self.batch_size = self.classes_per_batch * self.samples_per_class
        self.n_batches = int(n_batches) if n_batches else max(1, labels.size // self.batch_size)
        self.seed = int(seed)
        self._order = np.argsort(self._class_of, kind="stable")
        self._counts = np.bincount(self._class_of)
        self._starts = np.cumsum(self._counts) - self._counts

    def __len__(self) -> int:
        return self.n_batches

    def batches(self, epoch: int) -> list[list[int]]:
        """The ``n_batches`` index lists of ``epoch``, each of length ``P·K``."""
        rng = np.random.default_rng([self.seed, int(epoch)])
        n_classes, p, k = self._counts.size, self.classes_per_batch, self.samples_per_class
        chosen = rng.permuted(np.tile(np.arange(n_classes), (self.n_batches, 1)), axis=1)[:, :p]
        count = self._counts[chosen][..., None]  # (n_batches, P, 1)
        # a random order of each chosen class's members: sort random keys, invalid slots last
        slots = np.arange(self._counts.max())
        keys = np.where(slots < count, rng.random((self.n_batches, p, slots.size)), np.inf)
        ranks = np.argsort(keys, axis=-1)
        ranks = np.take_along_axis(ranks, np.arange(k) % count, axis=-1)  # cycle if count < K
        index = self._order[self._starts[chosen][..., None] + ranks]
        return index.reshape(self.n_batches, p * k).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches(0))


def random_halves(
    n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor and positive indices from the two halves of a random permutation of ``n``.

    Parameters
    ----------
    n : int
        Number of windows of the enrolled identity (at least 2); with ``n`` odd
        the last permuted index is left out.
    generator : torch.Generator or None
        Source of randomness (on ``device``); ``None`` uses torch's global RNG.
    device : torch.device, str or None
        Device of the returned indices.

    Returns
    -------
    anchor, positive : torch.Tensor
        ``(n // 2,)`` int64 indices, disjoint.
    """
    if n < 2:
        raise DataError(f"enrollment pairs need at least 2 windows of the identity, got {n}")
    perm = torch.randperm(n, generator=generator, device=device)
    half = n // 2
    return perm[:half], perm[half : 2 * half]


def noise_negatives(anchor: torch.Tensor, scale: float = 1.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gaussian impostors ``scale · N(0, 1)`` shaped like ``anchor`` (on its device and dtype).

    With standardised inputs, a scale above 1 makes the negatives louder than any
    real window (Neural Vault uses 1.5).
    """
    if scale <= 0:
        raise ConfigError(f"noise negative scale must be > 0, got {scale}")
    noise = torch.randn(anchor.shape, generator=generator, device=anchor.device, dtype=anchor.dtype)
    return noise * scale
