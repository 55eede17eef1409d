"""Encoders by name: the window-to-vector networks that families compose.

A backbone maps windows ``(B, T, F)`` (time first, features last) to vectors ``(B, out_dim)``
and exposes ``out_dim``. Families choose one by name (``build_backbone("connectome", ...)``)
and add their own heads and losses, so the same encoder can be trained by triplets, by a
contrastive loss or by random-projector targets. This registry is separate from the family
registry (:mod:`workbench.methods`): families import backbones, never each other. A family's
config inherits :class:`BackboneFields`, so every family names and sizes its encoder with the
same keys.

==================  ========================================================  ================
name                what                                                      ``out_dim``
==================  ========================================================  ================
``connectome``      Fisher-z FC profile of learned ROI mixtures × edge weights  ``k(k-1)/2``
``transformer``     frame projection, sin-cos position, pre-LN Transformer,   ``d_model``
                    final LayerNorm, mean over time (Neural Vault's encoder
                    without its head, plus the final norm of pre-LN stacks)
==================  ========================================================  ================

Why the final norm
------------------
Under per-window z-scoring (the engine's default ``normalization="window"``) every feature of a
window has mean 0 over its frames, so the linear path of the Transformer — project each frame,
add its position, average over time — is the same vector for every window: ``W·mean(x) + b +
mean(p) = b + mean(p)``. In a pre-LN stack the residual stream carries that path unchanged to
the output, and without a final norm the mean over time keeps only the attention and
feed-forward increments; with the linear branches of those layers at zero the output is exactly
constant. A LayerNorm on every token before the pooling (GPT-2, ViT; Xiong et al., "On Layer
Normalization in the Transformer Architecture", ICML 2020) is not linear, so the pooled output
depends on each frame, not only on the window's mean. ``final_norm=False`` keeps the old design
(Neural Vault's encoder, which :mod:`workbench.models.fewshot` uses).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from workbench.connectivity import fc_profile
from workbench.errors import ConfigError, DataError
from workbench.models.blocks import SinusoidalPositionalEncoding


def _check_windows(x: torch.Tensor, n_features: int, who: str) -> torch.Tensor:
    if x.ndim == 2:
        x = x.unsqueeze(1)
    if x.ndim != 3 or x.shape[-1] != n_features:
        raise DataError(
            f"{who} expects (B, T, {n_features}) windows or (B, {n_features}) frames, got shape "
            f"{tuple(x.shape)}; the model was built for {n_features} ROIs"
        )
    return x


class ConnectomeBackbone(nn.Module):
    """A learned functional-connectivity fingerprint.

    ``(B, T, R)`` → ``(B, k(k-1)/2)``: mix the ROIs with ``Linear(R → k)`` (the identity when
    ``k = R``, so training starts from the plain connectome), take the FC profile of the mixed
    series (:func:`workbench.connectivity.fc_profile`: Fisher-z correlations z-scored across
    edges), dropout, and multiply by one learned weight per edge (initialised to 1). Untrained
    with ``k = R`` it is the FC fingerprint of Finn et al. (2015).

    Parameters
    ----------
    n_features : int
        ROIs ``R``.
    k : int, optional
        ROI mixtures (default ``R``).
    dropout : float
        Dropout on the edges.
    learn_mix : bool
        Train the mixture (else it stays at its initialisation).
    """

    def __init__(self, n_features: int, k: int | None = None, dropout: float = 0.0, learn_mix: bool = True) -> None:
        super().__init__()
        k = k or n_features
        if k < 2:
            raise ConfigError(f"connectome backbone: k={k} ROI mixtures; need at least 2")
        self.n_features = n_features
        self.mix = nn.Linear(n_features, k, bias=False)
        if k == n_features:
            nn.init.eye_(self.mix.weight)
        else:
            nn.init.orthogonal_(self.mix.weight)
        self.mix.weight.requires_grad_(learn_mix)
        self.out_dim = k * (k - 1) // 2
        self.drop = nn.Dropout(dropout)
        self.edge_weight = nn.Parameter(torch.ones(self.out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _check_windows(x, self.n_features, "connectome backbone")
        if x.shape[1] < 2:
            raise DataError(
                f"the connectome backbone correlates frames and needs windows of at least 2 frames, got "
                f"{x.shape[1]}; use the transformer backbone for single frames"
            )
        return self.drop(fc_profile(self.mix(x))) * self.edge_weight


class TransformerBackbone(nn.Module):
    """Neural Vault's sequence encoder: ``(B, T, F)`` → ``(B, d_model)``.

    Frames are projected by ``Linear(F → d_model)``, given the sin-cos code of their index
    (Vaswani et al. 2017), passed through a pre-LN Transformer encoder with a 4× feed-forward
    layer, optionally a final LayerNorm on every token (module docstring), and mean-pooled over
    time. Single frames ``(B, F)`` are windows of length 1.

    Parameters
    ----------
    n_features : int
        Features per frame.
    d_model, nhead, n_layers : int
        Token width, attention heads (dividing ``d_model``), layers.
    dropout : float
        Dropout inside the layers.
    max_len : int
        Longest window accepted (a longer one is a ConfigError, never a silent extrapolation).
    final_norm : bool
        LayerNorm every token after the last layer, before the mean over time.
    """

    def __init__(
        self,
        n_features: int,
        d_model: int = 128,
        nhead: int = 8,
        n_layers: int = 2,
        dropout: float = 0.1,
        max_len: int = 512,
        final_norm: bool = True,
    ) -> None:
        super().__init__()
        if d_model % nhead:
            raise ConfigError(f"nhead={nhead} must divide d_model={d_model}")
        self.n_features, self.out_dim = n_features, d_model
        self.proj_in = nn.Linear(n_features, d_model)
        self.position = SinusoidalPositionalEncoding(d_model, max_len)
        layer = nn.TransformerEncoderLayer(
            d_model=d_model,
            nhead=nhead,
            dim_feedforward=4 * d_model,  # the standard 4x expansion
            dropout=dropout,
            batch_first=True,
            norm_first=True,
        )
        # the nested-tensor fast path is inference-only and warns with norm_first=True
        norm = nn.LayerNorm(d_model) if final_norm else None
        self.transformer = nn.TransformerEncoder(layer, n_layers, norm=norm, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _check_windows(x, self.n_features, "transformer backbone")
        return self.transformer(self.position(self.proj_in(x))).mean(dim=1)


BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "connectome": ConnectomeBackbone,
    "transformer": TransformerBackbone,
}


def build_backbone(name: str, n_features: int, **options) -> nn.Module:
    """Build the backbone called ``name`` for ``n_features`` features per frame.

    Raises
    ------
    ConfigError
        An unknown name (the message lists the choices) or an option the backbone lacks.
    """
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    try:
        return BACKBONES[name](n_features, **options)
    except TypeError as exc:
        raise ConfigError(f"backbone {name!r}: {exc}") from None


@dataclass
class BackboneFields:
    """The backbone fields a family config inherits: which encoder, and its options.

    A family's config dataclass subclasses this (redeclaring a field changes its default), so
    every family chooses its encoder with the same keys (``backbone=connectome``, ``d_model=64``)
    and :meth:`make_backbone` builds it from the registry. Options of the other backbone are
    ignored.
    """

    backbone: str = "transformer"  # connectome | transformer (workbench.models.backbones)
    d_model: int = 128  # transformer: token width
    nhead: int = 8  # transformer: attention heads; must divide d_model
    n_layers: int = 2  # transformer: encoder layers
    dropout: float = 0.1  # transformer: dropout inside the layers
    max_len: int = 512  # transformer: longest window (frames) accepted
    final_norm: bool = True  # transformer: LayerNorm every token before the mean (docs/recipes-lfr-yaware.md)
    connectivity_dim: int | None = None  # connectome: k ROI mixtures; None = one per ROI
    connectivity_dropout: float = 0.0  # connectome: dropout on the Fisher-z edges
    learn_mix: bool = True  # connectome: train the ROI mixture (else fixed at the identity)

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ConfigError(f"backbone={self.backbone!r}: choose one of {sorted(BACKBONES)}")
        if self.d_model < 2 or self.d_model % 2:
            raise ConfigError(f"d_model={self.d_model} must be even and >= 2 (sin-cos positional code)")
        if self.nhead < 1 or self.d_model % self.nhead:
            raise ConfigError(f"nhead={self.nhead} must divide d_model={self.d_model}")
        if self.n_layers < 1:
            raise ConfigError(f"n_layers={self.n_layers} must be >= 1")
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.connectivity_dropout < 1.0:
            raise ConfigError(
                f"dropout={self.dropout} and connectivity_dropout={self.connectivity_dropout} must lie in [0, 1)"
            )
        if self.connectivity_dim is not None and self.connectivity_dim < 2:
            raise ConfigError(f"connectivity_dim={self.connectivity_dim} must be >= 2 (or null for one per ROI)")

    def make_backbone(self, n_features: int, n_timepoints: int) -> nn.Module:
        """The chosen backbone for windows of ``n_timepoints`` frames of ``n_features`` features.

        Raises
        ------
        ConfigError
            When the windows are longer than the transformer's ``max_len`` (naming the field).
        """
        if self.backbone == "transformer":
            if n_timepoints > self.max_len:
                raise ConfigError(
                    f"windows of {n_timepoints} frames exceed max_len={self.max_len}; raise `max_len` to at "
                    f"least {n_timepoints}"
                )
            options = dict(
                d_model=self.d_model,
                nhead=self.nhead,
                n_layers=self.n_layers,
                dropout=self.dropout,
                final_norm=self.final_norm,
            )
            return build_backbone("transformer", n_features, max_len=self.max_len, **options)
        options = dict(k=self.connectivity_dim, dropout=self.connectivity_dropout, learn_mix=self.learn_mix)
        return build_backbone("connectome", n_features, **options)


__all__ = ["BACKBONES", "BackboneFields", "ConnectomeBackbone", "TransformerBackbone", "build_backbone"]
