"""Which triplets a batch trains on: random label triplets, batch-hard and semi-hard mining.

Given embeddings ``z`` ``(N, D)`` and class labels ``(N,)``, every sample is an anchor and
gets one positive (same class, another sample when there is one) and one negative (another
class), as indices into the batch; the triplet loss (:mod:`workbench.losses.triplet`) is then
computed on ``z[anchor], z[positive], z[negative]``. With squared Euclidean distances
``d(i, j) = ‖z_i − z_j‖²``:

=============  =====================================================================  ===========
mining         positive / negative of anchor ``a``                                    reference
=============  =====================================================================  ===========
``random``     uniform among the other members of its class / a uniform member of a   Neural
               uniformly drawn other class                                            Vault
``batch_hard``  ``argmax_{p: y_p = y_a, p ≠ a} d(a, p)`` /                            Hermans et
               ``argmin_{n: y_n ≠ y_a} d(a, n)``                                      al. 2017
``semi_hard``  the batch-hard positive / the closest negative with                    Schroff et
               ``d(a, p) < d(a, n) < d(a, p) + m``, else the hardest negative         al. 2015
=============  =====================================================================  ===========

A class with a single member in the batch uses the anchor itself as positive (distance 0).

References
----------
Schroff F., Kalenichenko D., Philbin J. (2015). FaceNet: a unified embedding for face
recognition and clustering. CVPR.
Hermans A., Beyer L., Leibe B. (2017). In defense of the triplet loss for person
re-identification. arXiv:1703.07737.
"""

from __future__ import annotations

import numpy as np
import torch

from workbench.errors import ConfigError, DataError

MINING = ("random", "batch_hard", "semi_hard")

Generator = np.random.Generator | torch.Generator | None


def _uniforms(n: int, generator: Generator, device: torch.device) -> torch.Tensor:
    """``(n,)`` uniforms in [0, 1) from a numpy or torch generator (or torch's global RNG)."""
    if isinstance(generator, np.random.Generator):
        return torch.from_numpy(generator.random(n)).to(device=device, dtype=torch.float32)
    return torch.rand(n, generator=generator, device=device)


def _floor_index(u: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """``floor(u * size)`` clamped to ``[0, size - 1]`` (guards float rounding at u → 1)."""
    idx = torch.floor(u * size.to(u.dtype)).long()
    return torch.minimum(idx, (size - 1).clamp(min=0))


def random_triplets(
    labels: np.ndarray | torch.Tensor, generator: Generator = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One random triplet per sample with label negatives, without a per-anchor loop.

    Parameters
    ----------
    labels : numpy.ndarray or torch.Tensor
        ``(N,)`` integer class labels (any values).
    generator : numpy.random.Generator, torch.Generator or None
        Source of randomness; ``None`` uses torch's global RNG on the labels' device (the
        engine seeds it per step).

    Returns
    -------
    anchor, positive, negative
        ``(N,)`` int64 indices into ``labels``; numpy arrays for numpy labels, tensors on the
        labels' device for tensor labels. ``anchor`` is ``arange(N)``.

    Raises
    ------
    DataError
        If ``labels`` is not 1-D or holds fewer than two classes (no negative exists).
    """
    as_numpy = isinstance(labels, np.ndarray)
    lab = torch.from_numpy(np.asarray(labels)) if as_numpy else labels
    if lab.ndim != 1:
        raise DataError(f"labels must be a 1-D array of class ids, got shape {tuple(lab.shape)}")
    lab = lab.long()
    n, device = lab.shape[0], lab.device

    order = torch.argsort(lab, stable=True)  # sorted position -> sample
    classes, counts = torch.unique_consecutive(lab[order], return_counts=True)
    n_classes = classes.shape[0]
    if n_classes < 2:
        raise DataError(f"triplets need labels of at least two classes to draw negatives, got {n_classes}")
    starts = torch.cumsum(counts, 0) - counts  # first sorted position of each class
    cls = torch.searchsorted(classes, lab)  # class index of every sample
    rank = torch.empty_like(order)  # position of every sample inside its class block
    rank[order] = torch.arange(n, device=device) - starts.repeat_interleave(counts)
    size, start = counts[cls], starts[cls]

    u = _uniforms(3 * n, generator, device).view(3, n)
    # positive: uniform over the size-1 other members, skipping the anchor's own rank
    j = _floor_index(u[0], (size - 1).clamp(min=1))
    j = j + (j >= rank).long()
    positive = torch.where(size > 1, order[(start + j).clamp(max=n - 1)], torch.arange(n, device=device))
    # negative class: uniform over the other n_classes-1 classes, skipping the anchor's class
    other = _floor_index(u[1], torch.full_like(cls, n_classes - 1))
    other = other + (other >= cls).long()
    negative = order[starts[other] + _floor_index(u[2], counts[other])]

    anchor = torch.arange(n, device=device)
    if as_numpy:
        return anchor.numpy(), positive.numpy(), negative.numpy()
    return anchor, positive, negative


def hard_triplets(
    z: torch.Tensor, labels: torch.Tensor, mining: str = "batch_hard", margin: float = 0.3
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch-hard or semi-hard triplets of every anchor (see the module table).

    Parameters
    ----------
    z : torch.Tensor
        ``(N, D)`` embeddings (pass them detached: mining picks indices, it is not differentiated).
    labels : torch.Tensor
        ``(N,)`` class labels on ``z``'s device.
    mining : {"batch_hard", "semi_hard"}
        The rule.
    margin : float
        The triplet margin ``m`` (semi-hard window).

    Returns
    -------
    anchor, positive, negative : torch.Tensor
        ``(N,)`` int64 indices; ``anchor`` is ``arange(N)``.
    """
    if mining not in ("batch_hard", "semi_hard"):
        raise ConfigError(f"mining={mining!r}: hard_triplets takes 'batch_hard' or 'semi_hard'")
    dist = torch.cdist(z, z).pow(2)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=z.device)
    pos_mask = same & ~eye
    positive = torch.where(pos_mask, dist, -1.0).argmax(1)
    positive = torch.where(pos_mask.any(1), positive, torch.arange(len(labels), device=z.device))
    neg_dist = torch.where(same, float("inf"), dist)
    negative = neg_dist.argmin(1)
    if mining == "semi_hard":
        d_ap = dist.gather(1, positive[:, None])
        semi = (~same) & (dist > d_ap) & (dist < d_ap + margin)
        closest_semi = torch.where(semi, dist, float("inf")).argmin(1)
        negative = torch.where(semi.any(1), closest_semi, negative)
    return torch.arange(len(labels), device=z.device), positive, negative


def mine_triplets(
    z: torch.Tensor, labels: torch.Tensor, mining: str, margin: float = 0.3
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Triplet indices of a batch under ``mining`` (``"random"``, ``"batch_hard"``, ``"semi_hard"``)."""
    if mining == "random":
        return random_triplets(labels)
    if mining not in MINING:
        raise ConfigError(f"mining={mining!r}: choose one of {MINING}")
    return hard_triplets(z.detach(), labels, mining, margin)


__all__ = ["MINING", "hard_triplets", "mine_triplets", "random_triplets"]
