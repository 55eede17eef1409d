"""Few-shot identity encoder: a small Transformer trained with a margin triplet loss.

After Neural Vault's ``NeuralVaultFewShot``: windows ``(B, T, R)`` are projected
frame by frame to ``d_model``, given a sinusoidal code of the frame index, passed
through a pre-LN Transformer encoder, mean-pooled over time and mapped by a
LayerNorm–Linear–GELU–Linear head to an L2-normalised embedding. Training pulls
windows of one subject together and pushes other subjects away with the triplet
loss of FaceNet (Schroff et al., 2015); evaluation is nearest prototype.

Shapes
------
=========================  =====================  ==========================
stage                      input                  output
=========================  =====================  ==========================
input projection           ``(B, T, R)``           ``(B, T, d_model)``
positional code + encoder  ``(B, T, d_model)``     ``(B, T, d_model)``
mean over time + head      ``(B, T, d_model)``     ``(B, latent_dim)``, unit norm
=========================  =====================  ==========================

Triplets are formed inside each batch (see :meth:`FewShot.training_loss`), so
every window is embedded once per step rather than once per triplet leg.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workbench.data.samplers import (
    ClassBalancedBatchSampler,
    label_triplets,
    noise_negatives,
    random_halves,
)
from workbench.errors import ConfigError, DataError
from workbench.losses.triplet import triplet_terms
from workbench.models.base import Method
from workbench.models.blocks import SinusoidalPositionalEncoding

NEGATIVE_KINDS = ("label", "noise")
MINING = ("random", "batch_hard", "semi_hard")
_EPS = 1e-5


def zscore_over_time(x: torch.Tensor) -> torch.Tensor:
    """Z-score each channel of ``(B, T, k)`` over its ``T`` frames."""
    x = x - x.mean(dim=1, keepdim=True)
    return x / (x.pow(2).mean(dim=1, keepdim=True).sqrt() + _EPS)


class ConnectivityBranch(nn.Module):
    """Fisher-z correlations between ``k`` learned ROI combinations of a window, to ``d``."""

    def __init__(self, n_features: int, k: int, d: int, dropout: float, edge_embedding: bool = False, learn_mix: bool = True) -> None:
        super().__init__()
        self.mix = nn.Linear(n_features, k, bias=False)
        self.mix.weight.requires_grad_(learn_mix)
        if k == n_features:
            nn.init.eye_(self.mix.weight)
        else:
            nn.init.orthogonal_(self.mix.weight)
        rows, cols = torch.triu_indices(k, k, offset=1)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        self.edge_embedding = edge_embedding
        self.drop = nn.Dropout(dropout)
        if edge_embedding:
            self.norm = nn.LayerNorm(rows.numel(), elementwise_affine=False)
            self.weight = nn.Parameter(torch.ones(rows.numel()))
        else:
            self.norm = nn.LayerNorm(rows.numel())
            self.out = nn.Linear(rows.numel(), d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = zscore_over_time(self.mix(x))  # (B, T, k)
        corr = torch.einsum("btk,btl->bkl", h, h) / h.shape[1]
        edges = torch.atanh(corr[:, self.rows, self.cols].clamp(-0.999, 0.999))
        if self.edge_embedding:
            return self.drop(self.norm(edges)) * self.weight
        return self.out(self.drop(self.norm(edges)))


@dataclass
class FewShotConfig:
    """Hyper-parameters of the few-shot family (defaults: Neural Vault)."""

    d_model: int = 128  # token width of the Transformer
    nhead: int = 8  # attention heads; must divide d_model
    n_layers: int = 2  # Transformer encoder layers
    latent_dim: int = 128  # embedding width
    dropout: float = 0.1  # dropout inside the Transformer layers
    max_len: int = 512  # longest window (frames) the positional table accepts
    margin: float = 0.3  # triplet margin on squared Euclidean distances
    negatives: str = "label"  # "label": other subjects; "noise": Gaussian impostors (enrollment)
    noise_scale: float = 1.5  # std of the Gaussian impostors (standardised units)
    samples_per_class: int = 4  # minimum windows per subject in a class-balanced batch
    connectivity_dim: int = 0  # k of the correlation branch (0 = off); k = R starts as plain FC
    connectivity_dropout: float = 0.0  # dropout on the branch's Fisher-z edges
    edge_embedding: bool = False  # embed the re-weighted edges themselves (init: FC fingerprint)
    learn_mix: bool = True  # train the branch's ROI combinations (else fixed at init)
    temporal: bool = True  # the Transformer trunk over frames (False: connectivity branch only)
    mining: str = "random"  # "random" (label triplets) | "batch_hard" | "semi_hard"
    crop: float = 1.0  # training crop: fraction of the window's frames kept (1 = no crop)
    roi_dropout: float = 0.0  # training: probability of zeroing an ROI of a window
    input_noise: float = 0.0  # training: std of Gaussian noise added to standardised inputs

    def __post_init__(self) -> None:
        if self.negatives not in NEGATIVE_KINDS:
            raise ConfigError(f"negatives={self.negatives!r}: choose one of {NEGATIVE_KINDS}")
        if self.d_model % self.nhead:
            raise ConfigError(f"nhead={self.nhead} must divide d_model={self.d_model}")
        if self.d_model % 2:
            raise ConfigError(f"d_model={self.d_model} must be even (sin-cos positional code)")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout={self.dropout} must lie in [0, 1)")
        if self.margin < 0:
            raise ConfigError(f"margin={self.margin} must be >= 0")
        if self.mining not in MINING:
            raise ConfigError(f"mining={self.mining!r}: choose one of {MINING}")
        if self.samples_per_class < 2:
            raise ConfigError(f"samples_per_class={self.samples_per_class} must be >= 2")


def augment(x: torch.Tensor, config: FewShotConfig) -> torch.Tensor:
    """Training views: a random temporal crop, ROI dropout and Gaussian noise (torch's global RNG)."""
    b, t, r = x.shape
    keep = max(2, round(config.crop * t))
    if keep < t:
        start = torch.randint(0, t - keep + 1, (b, 1), device=x.device)
        frames = start + torch.arange(keep, device=x.device)
        x = torch.gather(x, 1, frames[..., None].expand(b, keep, r))
    if config.roi_dropout > 0:
        x = x * (torch.rand(b, 1, r, device=x.device) >= config.roi_dropout).to(x.dtype)
    if config.input_noise > 0:
        x = x + config.input_noise * torch.randn_like(x)
    return x


def mine_triplets(z: torch.Tensor, labels: torch.Tensor, mining: str, margin: float):
    """Batch-hard (hardest positive, hardest negative) or semi-hard negatives, per anchor."""
    dist = torch.cdist(z, z).pow(2)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=z.device)
    pos_mask = same & ~eye
    has_pos = pos_mask.any(1)
    positive = torch.where(pos_mask, dist, -1.0).argmax(1)
    positive = torch.where(has_pos, positive, torch.arange(len(labels), device=z.device))
    neg_dist = torch.where(same, float("inf"), dist)
    if mining == "batch_hard":
        negative = neg_dist.argmin(1)
    else:
        d_ap = dist.gather(1, positive[:, None])
        semi = (~same) & (dist > d_ap) & (dist < d_ap + margin)
        # semi-hard: the closest negative farther than the positive; else the hardest
        negative = torch.where(semi.any(1), torch.where(semi, dist, float("inf")).argmin(1), neg_dist.argmin(1))
    return torch.arange(len(labels), device=z.device), positive, negative


class FewShotEncoder(nn.Module):
    """Projection → sin-cos position → pre-LN Transformer → mean over time → MLP head → L2 norm.

    Parameters
    ----------
    n_features : int
        Features per frame ``F`` (ROIs).
    config : FewShotConfig
        Widths, depth, dropout and ``max_len``.

    Shapes
    ------
    ``(B, T, F)`` or ``(B, F)`` (one frame) → ``(B, latent_dim)`` with unit L2 norm.
    """

    def __init__(self, n_features: int, config: FewShotConfig) -> None:
        super().__init__()
        self.n_features = int(n_features)
        self.temporal = config.temporal
        d = config.d_model
        self.connectivity = (
            ConnectivityBranch(self.n_features, config.connectivity_dim, d, config.connectivity_dropout, config.edge_embedding, config.learn_mix)
            if config.connectivity_dim else None
        )
        if self.temporal:
            self.proj_in = nn.Linear(self.n_features, d)
            self.position = SinusoidalPositionalEncoding(d, config.max_len)
            layer = nn.TransformerEncoderLayer(
                d_model=d,
                nhead=config.nhead,
                dim_feedforward=4 * d,  # the standard 4x expansion
                dropout=config.dropout,
                batch_first=True,
                norm_first=True,
            )
            # nested-tensor fast path is inference-only and warns with norm_first=True
            self.transformer = nn.TransformerEncoder(layer, config.n_layers, enable_nested_tensor=False)
        self.head = nn.Sequential(
            nn.LayerNorm(d), nn.Linear(d, d), nn.GELU(), nn.Linear(d, config.latent_dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:
            x = x.unsqueeze(1)
        if x.ndim != 3 or x.shape[-1] != self.n_features:
            raise DataError(
                f"few-shot encoder expects (B, T, {self.n_features}) or (B, {self.n_features}) "
                f"windows, got shape {tuple(x.shape)}; the model was built for {self.n_features} ROIs"
            )
        if self.connectivity is not None and self.connectivity.edge_embedding:
            return F.normalize(self.connectivity(x), p=2, dim=1)
        h = 0
        if self.temporal:
            h = self.transformer(self.position(self.proj_in(x))).mean(dim=1)
        if self.connectivity is not None:
            h = h + self.connectivity(x)
        return F.normalize(self.head(h), p=2, dim=1)


class FewShot(Method):
    """The ``fewshot`` family: triplet metric learning of subject identity.

    Presets
    -------
    ``"neural-vault"``
        The seed's recipe: label negatives drawn at random, margin 0.3, mean
        pooling over raw standardised windows.
    ``"tiny"``
        A few-thousand-parameter model for tests.
    """

    name: ClassVar[str] = "fewshot"
    Config: ClassVar[type] = FewShotConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "neural-vault": {},
        "tiny": {"d_model": 16, "nhead": 2, "n_layers": 1, "latent_dim": 8, "dropout": 0.0},
    }
    # Neural Vault: AdamW lr 1e-4, weight decay 1e-4, gradient norm clipped at 1, batch 128.
    train_defaults: ClassVar[dict[str, Any]] = {
        "epochs": 100,
        "batch_size": 128,
        "lr": 1e-4,
        "weight_decay": 1e-4,
        "warmup_steps": 0,
        "clip_grad": 1.0,
    }

    def __init__(self, config: FewShotConfig, n_rois: int, n_timepoints: int) -> None:
        super().__init__(config, n_rois, n_timepoints)
        if n_timepoints > config.max_len:
            raise ConfigError(
                f"windows of {n_timepoints} frames exceed max_len={config.max_len}; "
                f"raise `max_len` in the fewshot config to at least {n_timepoints}"
            )
        self.encoder = FewShotEncoder(n_rois, config)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings ``(B, latent_dim)`` of windows ``(B, T, R)`` or frames ``(B, R)``."""
        return self.encoder(x)

    def training_loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Triplet loss on triplets formed inside the batch.

        ``negatives="label"``: every window is an anchor; its positive is another
        window of the same subject and its negative a window of another subject
        (:func:`~workbench.data.samplers.label_triplets`). ``negatives="noise"``
        (enrollment of one identity): anchors and positives are the two halves of a
        random permutation of the batch, whose subject labels are ignored, and
        negatives are Gaussian noise of scale ``noise_scale``. Randomness comes from
        torch's global RNG on the batch's device.

        Returns
        -------
        dict
            ``loss`` (batch mean over triplets), mean ``pos_dist`` and ``neg_dist``
            (squared distances) and ``frac_active`` (share of triplets with a
            non-zero hinge).
        """
        x = batch["x"]
        if self.config.negatives == "label":
            z = self.encoder(augment(x, self.config))
            labels = batch["subject"].to(x.device)
            if self.config.mining == "random":
                anchor_idx, positive_idx, negative_idx = label_triplets(labels)
            else:
                anchor_idx, positive_idx, negative_idx = mine_triplets(z.detach(), labels, self.config.mining, self.config.margin)
            anchor, positive, negative = z[anchor_idx], z[positive_idx], z[negative_idx]
        else:
            anchor_idx, positive_idx = random_halves(x.shape[0], device=x.device)
            noise = noise_negatives(x[anchor_idx], self.config.noise_scale)
            z = self.encoder(torch.cat([x, noise]))
            anchor, positive, negative = z[anchor_idx], z[positive_idx], z[x.shape[0] :]
        terms = triplet_terms(anchor, positive, negative, self.config.margin)
        return {
            "loss": terms.hinge.mean(),
            "pos_dist": terms.pos_dist.mean().detach(),
            "neg_dist": terms.neg_dist.mean().detach(),
            "frac_active": (terms.hinge > 0).float().mean(),
        }

    def batch_sampler(
        self, labels: np.ndarray, batch_size: int, seed: int
    ) -> ClassBalancedBatchSampler | None:
        """Class-balanced P×K batches so that every anchor has in-batch positives.

        ``P = min(n_subjects, batch_size // samples_per_class)`` subjects per batch and
        ``K = batch_size // P`` windows each (at least ``samples_per_class``). The
        noise-negative variant uses the engine's shuffled batches (``None``).
        """
        if self.config.negatives == "noise":
            return None
        n_classes = np.unique(labels).size
        per_batch = min(n_classes, batch_size // self.config.samples_per_class)
        if per_batch < 2:
            raise ConfigError(
                f"batch_size={batch_size} fits fewer than 2 subjects of samples_per_class="
                f"{self.config.samples_per_class} windows (training set: {n_classes} subjects); "
                "raise batch_size or lower samples_per_class"
            )
        return ClassBalancedBatchSampler(labels, per_batch, batch_size // per_batch, seed)
