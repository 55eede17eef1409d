"""The JEPA objective: smooth-L1 between predicted and layer-normed target features.

For ``M`` target tokens with predicted features ``p_m`` and target-encoder features ``h_m``
(``D`` dimensions each), the target is layer-normed without affine parameters,
``t_m = (h_m − mean(h_m)) / sqrt(var(h_m) + ε)`` with ``ε = 1e-5``, and the loss is the mean
of the elementwise smooth-L1 (Huber with δ = 1)::

    ℓ(u) = u² / 2        if |u| < 1
           |u| − 1/2     otherwise
    L    = 1 / (M·D) Σ_m Σ_d ℓ(p_md − t_md)

Targets never receive gradients (they come from the EMA target encoder); both sides are cast
to float32, so the loss is exact under bf16 autocast.

References
----------
Assran M. et al. (2023). Self-supervised learning from images with a joint-embedding
predictive architecture. CVPR (I-JEPA).
Dong Z. et al. (2024). Brain-JEPA: brain dynamics foundation model with gradient positioning
and spatiotemporal masking. NeurIPS, arXiv:2409.19407.

Example
-------
>>> import torch
>>> prediction, target = torch.zeros(2, 3, 4), torch.randn(2, 3, 4)
>>> jepa_loss(prediction, target).shape
torch.Size([])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from workbench.errors import ConfigError


def layer_normed_targets(target: torch.Tensor) -> torch.Tensor:
    """Affine-free LayerNorm over the last (feature) axis, in float32, without gradient."""
    target = target.detach().float()
    return F.layer_norm(target, (target.shape[-1],))


def jepa_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Smooth-L1 between ``prediction`` and the layer-normed ``target`` (see the module docstring).

    Parameters
    ----------
    prediction : torch.Tensor
        ``(..., D)`` predicted features of the target tokens.
    target : torch.Tensor
        ``(..., D)`` target-encoder features of the same tokens (raw, not normalised).

    Returns
    -------
    torch.Tensor
        Scalar float32.
    """
    if prediction.shape != target.shape:
        raise ConfigError(
            f"JEPA loss: prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape"
        )
    return F.smooth_l1_loss(prediction.float(), layer_normed_targets(target))


__all__ = ["jepa_loss", "layer_normed_targets"]
