"""y-Aware contrastive learning: two views of a window, positives weighted by label proximity.

Each training window ``x`` gives two random views (:func:`workbench.models.augment.augment`:
shifted crops, ROI dropout, amplitude scaling, noise); a backbone from
:mod:`workbench.models.backbones` maps each view to a representation ``h`` and a projection
head (an MLP) maps ``h`` to ``z``. The y-Aware InfoNCE loss
(:class:`workbench.losses.yaware_infonce.YAwareInfoNCE`) then treats the two views of one window
as positives, as SimCLR does, and in addition pulls together windows whose labels ``y`` are
close, with a kernel weight on the label distance. With no label column it is plain InfoNCE
(NT-Xent, SimCLR).

Shapes
------
=======================  ===========================  ====================================
stage                    input                        output
=======================  ===========================  ====================================
two views                ``(B, T, F)``                 ``(2B, T', F)``, ``T' = round(crop·T)``
backbone                 ``(2B, T', F)``               ``(2B, D)`` (``D = backbone.out_dim``)
projection head          ``(2B, D)``                   ``(2B, projection_dim)``
labels                   ``batch["y"]`` ``(B, k)``      ``(B, k')``: chosen columns, one-hot
                                                      categorical ones
=======================  ===========================  ====================================

Labels
------
``labels`` names the columns of ``batch["y"]`` to use (``None``: every label column of the data;
``[]``: none, plain InfoNCE). A continuous column is used as is; a categorical column is one-hot
coded (:func:`~workbench.losses.label_kernels.one_hot_codes`), so two windows of one category are
at distance 0 (weight 1, as positive as the other view) and two of different categories weigh
``categorical_weight`` (:func:`~workbench.losses.label_kernels.categorical_bandwidth` gives the
bandwidth of those columns). ``bandwidth`` applies to the continuous columns: a scalar ``h``
(``H = h·I``, ``h`` plays ``σ²``), one value per continuous column, a full SPD matrix (continuous
columns only), or ``"scott"`` / ``"silverman"``, fitted in :meth:`YAware.prepare` on the training
labels (rows with all chosen continuous labels defined) and kept in the checkpoint. A window whose
label is NaN weighs 0 against the others (its row falls back to plain InfoNCE).

Embedding
---------
:meth:`YAware.embed` returns the backbone's representation ``h``, not the projection ``z``: the
head absorbs the invariances the loss asks for (Chen et al. 2020 show that a linear probe on
``h`` beats one on ``z`` by over 10 points), and every contrastive paper, y-Aware's included,
evaluates the encoder before the head.

Floor
-----
:meth:`YAware.diagnostics` reports the loss of two seeded views of the engine's monitor batch
beside the collapsed loss, ``log(2B − 1)`` (every projection one vector; labels do not change
it). Under the default per-window z-scoring the backbone's final norm (``final_norm``,
:mod:`workbench.models.backbones`) and the un-re-standardised crops keep the representation from
being constant by construction; the measurements are in ``docs/recipes-lfr-yaware.md``.

References
----------
B. Dufumier et al., "Contrastive Learning with Continuous Proxy Meta-Data for 3D MRI
Classification", MICCAI 2021 (arXiv 2106.08808); the training settings (Adam, lr 1e-4, weight
decay 5e-5, batch 64, 100 epochs, τ = 0.1) are those of its code (Duplums/yAwareContrastiveLearning,
``config.py``). T. Chen et al., "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020 (SimCLR).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workbench.data.spec import DataSpec, LabelColumn
from workbench.errors import ConfigError, DataError
from workbench.losses.label_kernels import categorical_bandwidth, check_kernel, one_hot_codes
from workbench.losses.yaware_infonce import YAwareInfoNCE
from workbench.models.augment import ViewConfig, augment
from workbench.models.backbones import BackboneFields
from workbench.models.base import Method

BANDWIDTH_RULES = ("scott", "silverman")


@dataclass
class YAwareConfig(BackboneFields):
    """Hyper-parameters of the ``yaware`` family (defaults: the paper's loss, views for fMRI windows)."""

    projection_hidden_dim: int = 512  # projection head: Linear(D → hidden) · ReLU · Linear(hidden → dim)
    projection_dim: int = 128  # projection width z (the loss's space; the paper's 128)
    labels: list[str] | None = None  # label columns of batch["y"]; None = all the data carry, [] = plain InfoNCE
    kernel: str = "gaussian"  # gaussian | epanechnikov | exponential | linear | cosine
    # continuous columns: H (plays σ²) as a scalar, one value per column, an SPD matrix, or scott | silverman
    bandwidth: float | list[float] | list[list[float]] | str = "scott"
    categorical_weight: float = 0.1  # weight of two windows of different categories (same category: 1)
    temperature: float = 0.1  # τ dividing the cosine similarities (the paper's)
    normalize: Literal["row", "column"] = "row"  # row: the paper's formula; column: nidl's behaviour
    crop: float = 0.8  # each view keeps round(crop · T) consecutive frames from a random start
    roi_dropout: float = 0.1  # each view zeroes each ROI's series with this probability
    scale: float = 0.1  # each view is multiplied by exp(N(0, scale²))
    noise: float = 0.1  # each view gets N(0, noise²) added (standardised units)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_kernel(self.kernel)
        if self.projection_hidden_dim < 1 or self.projection_dim < 1:
            raise ConfigError(
                f"projection_hidden_dim={self.projection_hidden_dim} and projection_dim={self.projection_dim} "
                "must be >= 1"
            )
        if isinstance(self.bandwidth, str) and self.bandwidth not in BANDWIDTH_RULES:
            raise ConfigError(f"bandwidth={self.bandwidth!r}: give a number, a list or one of {BANDWIDTH_RULES}")
        if not self.temperature > 0:
            raise ConfigError(f"temperature={self.temperature} must be > 0")
        if not 0.0 <= self.categorical_weight < 1.0:
            raise ConfigError(f"categorical_weight={self.categorical_weight} must lie in [0, 1)")
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ConfigError(f"labels={self.labels} names a column twice")
        self.view()  # checks crop, roi_dropout, scale and noise

    def view(self) -> ViewConfig:
        """The random view each window is drawn twice through."""
        return ViewConfig(crop=self.crop, roi_dropout=self.roi_dropout, scale=self.scale, noise=self.noise)


def projection_head(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """SimCLR's projection head ``Linear · ReLU · Linear``: ``(B, in_dim)`` → ``(B, out_dim)``."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))


class YAware(Method):
    """The ``yaware`` family: y-Aware InfoNCE (plain InfoNCE without labels) on two views of each window.

    See the module docstring for the views, the labels and the embedding.

    Presets
    -------
    ``"quick"``
        A 2-layer, 64-wide Transformer without dropout (a third of the step's time, and beside
        the point in a short run) and a 256 → 64 head: a few hundred steps of 64 windows of
        94–122 ROIs × 40 frames in well under a minute on 2 CPU cores (``bench/families_speed.py``).
    ``"connectome"``
        The connectome backbone (a learned FC fingerprint) instead of the Transformer.
    ``"tiny"``
        A few-thousand-parameter model for tests.
    """

    name: ClassVar[str] = "yaware"
    Config: ClassVar[type] = YAwareConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {
            "d_model": 64,
            "nhead": 4,
            "n_layers": 2,
            "dropout": 0.0,
            "projection_hidden_dim": 256,
            "projection_dim": 64,
        },
        "connectome": {"backbone": "connectome"},
        "tiny": {
            "d_model": 16,
            "nhead": 2,
            "n_layers": 1,
            "dropout": 0.0,
            "projection_hidden_dim": 16,
            "projection_dim": 8,
        },
    }
    floor_description: ClassVar[str] = "every projection the same vector (collapse): log(2B − 1)"
    # Dufumier et al.'s code: Adam (L2 weight decay), lr 1e-4, weight decay 5e-5, batch 64, 100 epochs, no clipping.
    train_defaults: ClassVar[dict[str, Any]] = {
        "epochs": 100,
        "batch_size": 64,
        "optimizer": "adam",
        "lr": 1e-4,
        "weight_decay": 5e-5,
        "clip_grad": None,
    }

    def __init__(self, config: YAwareConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        self.backbone = config.make_backbone(spec.n_features, spec.n_timepoints)
        self.head = projection_head(self.backbone.out_dim, config.projection_hidden_dim, config.projection_dim)
        names = [c.name for c in spec.labels] if config.labels is None else config.labels
        self.columns: tuple[tuple[int, LabelColumn], ...] = tuple(
            (spec.labels.index(spec.label(name)), spec.label(name)) for name in names
        )
        self.loss_fn = YAwareInfoNCE(config.kernel, self._bandwidth(), config.temperature, normalize=config.normalize)

    # -- labels ------------------------------------------------------------------------------
    @property
    def continuous(self) -> list[int]:
        """Positions (in ``batch["y"]``) of the chosen continuous columns."""
        return [i for i, c in self.columns if c.kind == "continuous"]

    def _categorical_bandwidth(self) -> float:
        """The bandwidth of one-hot columns giving ``categorical_weight`` across categories."""
        try:
            return categorical_bandwidth(self.config.kernel, self.config.categorical_weight)
        except ConfigError as exc:
            names = [c.name for _, c in self.columns if c.kind == "categorical"]
            raise ConfigError(f"yaware: categorical labels {names}: {exc}") from None

    def _diagonal(self, continuous: list[float]) -> list[float]:
        """Diagonal ``H`` over the expanded columns, in column order: ``continuous`` values, one-hot bandwidths."""
        values = iter(continuous)
        diagonal: list[float] = []
        for _, column in self.columns:
            if column.kind == "continuous":
                diagonal.append(next(values))
            else:
                diagonal += [self._categorical_bandwidth()] * len(column.categories)
        return diagonal

    def _bandwidth(self) -> Any:
        """The loss's bandwidth over the expanded label columns (a rule until :meth:`prepare` fits it)."""
        bandwidth, n_continuous = self.config.bandwidth, len(self.continuous)
        if not self.columns:
            return 1.0  # plain InfoNCE: unused
        has_categorical = n_continuous < len(self.columns)
        if isinstance(bandwidth, str):
            return bandwidth if n_continuous else self._diagonal([])
        values = np.asarray(bandwidth, dtype=np.float64)
        if values.ndim == 0:
            return self._diagonal([float(values)] * n_continuous) if has_categorical else float(values)
        if values.ndim == 2 and has_categorical:
            raise ConfigError(
                "yaware: a matrix bandwidth covers continuous columns only, but the labels include categorical "
                "ones; give a scalar, one value per continuous column, or a rule"
            )
        if values.shape[0] != n_continuous:
            names = [c.name for _, c in self.columns if c.kind == "continuous"]
            raise ConfigError(
                f"yaware: bandwidth has {values.shape[0]} entries but there are {n_continuous} continuous label "
                f"columns {names}; give one value per column (or a scalar)"
            )
        return self._diagonal(values.tolist()) if values.ndim == 1 else values

    def label_features(self, y: torch.Tensor) -> torch.Tensor:
        """The loss's labels: chosen columns of ``y`` ``(B, k)``, categorical ones one-hot → ``(B, k')``."""
        if y.ndim != 2 or y.shape[1] != len(self.spec.labels):
            raise DataError(
                f"yaware: batch['y'] must be (B, {len(self.spec.labels)}) labels "
                f"{[c.name for c in self.spec.labels]}, got shape {tuple(y.shape)}"
            )
        parts = [
            y[:, i : i + 1] if column.kind == "continuous" else one_hot_codes(y[:, i], len(column.categories))
            for i, column in self.columns
        ]
        return torch.cat(parts, dim=1)

    # -- the seam ----------------------------------------------------------------------------
    def prepare(self, windows: np.ndarray, labels: np.ndarray | None = None) -> None:
        """Fit a Scott / Silverman bandwidth on the continuous training labels (nothing else to fit).

        Raises
        ------
        DataError
            When label columns are chosen but no labels come, or too few are defined to fit the rule.
        """
        if not self.columns:
            return
        if labels is None:
            raise DataError(
                f"yaware uses the label columns {[c.name for _, c in self.columns]} but prepare received no "
                "labels; train on windows that carry them, or set labels: [] for plain InfoNCE"
            )
        labels = np.asarray(labels)
        if labels.ndim != 2 or labels.shape[1] != len(self.spec.labels):
            raise DataError(
                f"yaware: prepare needs (N, {len(self.spec.labels)}) labels {[c.name for c in self.spec.labels]}, "
                f"got shape {labels.shape}"
            )
        if not isinstance(self.config.bandwidth, str) or not self.continuous:
            return
        rule = YAwareInfoNCE(self.config.kernel, self.config.bandwidth).fit(labels[:, self.continuous])
        continuous = (1.0 / rule.inv_sqrt_bandwidth.double().square()).tolist()
        self.loss_fn = YAwareInfoNCE(
            self.config.kernel,
            self._diagonal(continuous),
            self.config.temperature,
            normalize=self.config.normalize,
        ).to(self.loss_fn.inv_sqrt_bandwidth.device)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Backbone representations ``(2B, D)`` and projections ``(2B, projection_dim)`` of two views of ``x``."""
        view = self.config.view()
        h = self.backbone(torch.cat([augment(x, view), augment(x, view)]))
        return h, self.head(h)

    def training_loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """y-Aware InfoNCE between the projections of two views of every window of the batch.

        Returns
        -------
        dict
            ``loss`` and ``view_cosine`` (mean cosine similarity of the two views' projections).
        """
        x = batch["x"]
        if x.ndim != 3 or x.shape[-1] != self.n_features:
            raise DataError(
                f"yaware expects (B, T, {self.n_features}) windows, got shape {tuple(x.shape)}; the model was "
                f"built for {self.n_features} ROIs"
            )
        y = self._labels(batch)
        _, z = self.project(x)
        z1, z2 = z.chunk(2)
        return {
            "loss": self.loss_fn(z1, z2, y),
            "view_cosine": F.cosine_similarity(z1.detach().float(), z2.detach().float(), dim=1).mean(),
        }

    def _labels(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The loss's labels of a batch (:meth:`label_features`), ``None`` for plain InfoNCE."""
        if not self.columns:
            return None
        if "y" not in batch:
            raise DataError(
                f"yaware uses the label columns {[c.name for _, c in self.columns]} but the batch has no "
                "'y'; train on windows that carry them, or set labels: [] for plain InfoNCE"
            )
        if not self.loss_fn.fitted:
            raise ConfigError(
                f"yaware: the {self.config.bandwidth} bandwidth is fitted by prepare(windows, labels) on the "
                "training labels; train through workbench.train.train or call prepare first"
            )
        return self.label_features(batch["y"].to(batch["x"].device))

    @torch.no_grad()
    def diagnostics(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """The loss on two views of a monitor batch beside the collapsed loss.

        The views come from torch's global RNG, which the engine seeds identically at every call.

        Returns
        -------
        dict of str to float
            ``loss`` and ``view_cosine`` (as :meth:`training_loss`) and ``floor``, the loss when every
            projection is one vector (:meth:`~workbench.losses.yaware_infonce.YAwareInfoNCE.collapsed_loss`
            with the batch's labels: ``log(2B − 1)``).
        """
        out = self.training_loss(batch)
        return {
            "loss": float(out["loss"]),
            "floor": float(self.loss_fn.collapsed_loss(batch["x"].shape[0], self._labels(batch))),
            "view_cosine": float(out["view_cosine"]),
        }

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's representation ``(B, D)`` of windows ``(B, T, F)`` (before the projection head)."""
        return self.backbone(x)


__all__ = ["YAware", "YAwareConfig", "projection_head"]
