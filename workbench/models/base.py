"""The Method seam: what the engine, the evaluation and the notebooks know of a family.

A family is an ``nn.Module`` subclass of :class:`Method` with a config dataclass, registered
by name in :mod:`workbench.methods`. It is built from its config and a :class:`DataSpec`
(what the data look like), and the engine drives it through a few calls:

==========================  ======================================================  ============
call                        when                                                    default
==========================  ======================================================  ============
``prepare(windows, y)``     once before training, on a sample of training windows   nothing
``before_epoch(e)``         before every epoch, also the epoch a resumed run        nothing
                            re-enters
``training_loss(batch)``    every micro-batch; returns ``{"loss": scalar, ...}``    (required)
``after_step(s, total)``    after every optimiser step (``s`` counts from 1);       nothing
                            returning ``True`` ends training
``after_epoch(e)``          after every full epoch                                  nothing
``after_training()``        once at the end, also when ``max_steps`` cuts an epoch  nothing
``embed(x)``                evaluation: windows ``(B, T, F)`` -> ``(B, D)``         (required)
``diagnostics(batch)``      every ``monitor_every`` steps, on a fixed monitor       the loss only
                            batch: the objective beside its trivial ``floor``
``param_groups(wd)``        the optimiser's groups, with ``lr_scale``/``apply_wd``  decay on
                                                                                    >= 2-D only
``batch_sampler(...)``      the batches of an epoch                                 shuffled
==========================  ======================================================  ============

Batches are dicts of tensors: ``"x"`` windows ``(B, T, F)`` (time first, features last: ROIs,
or the voxels of volume frames), ``"subject"`` ``(B,)`` the index of the training subject, and,
when the data carry labels, ``"y"`` ``(B, k)`` float32 in the order of ``spec.labels``
(categorical columns as codes into their categories, NaN where undefined). A family that wants
another layout (Brain-JEPA's ``(B, 1, R, T)`` image) converts inside.

Learning is shown, not assumed: :meth:`Method.diagnostics` returns the family's objective on a
fixed monitor batch beside its *trivial floor* — what a model that learned nothing but position,
a constant or the mean scores on the same batch — and :meth:`Method.learning_verdict` turns a
record into a sentence when the run has not left that floor. The engine adds the effective rank
of the centred embeddings (:func:`workbench.spectrum.rankme`) and writes every record to
``history.json``.

Randomness inside ``training_loss`` comes from torch's global RNG, which the engine reseeds from
``(seed, step)`` before every optimiser step; state that must survive a resume (EMA targets,
fitted buffers, phase counters) lives in registered buffers, which checkpoints carry.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from workbench.config import config_from_dict
from workbench.data.spec import DataSpec
from workbench.errors import ConfigError


class Method(nn.Module):
    """Base class of the families (see the module docstring for the seam).

    Subclasses set ``name``, ``Config`` (a dataclass whose defaults come from the family's
    reference), optionally ``presets`` (name -> dict of overrides) and ``train_defaults``
    (overrides of :class:`workbench.train.TrainConfig`; an instance may refine them in
    ``__init__`` when they depend on the config), and build their network in
    ``__init__(self, config, spec)``.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type]
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    train_defaults: ClassVar[dict[str, Any]] = {}
    readouts: ClassVar[tuple[str, ...]] = ("mean",)
    """Ways ``embed`` pools; a family with more than one takes ``embed(x, readout=name)`` (jepa: ``"roi"``)."""
    floor_description: ClassVar[str] = ""
    """The trivial floor of :meth:`diagnostics` in words, e.g. ``"predicting each position's mean target"``."""

    def __init__(self, config: Any, spec: DataSpec) -> None:
        super().__init__()
        self.config = config
        self.spec = spec

    # -- required --------------------------------------------------------------------------
    def training_loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Return at least ``{"loss": scalar}``; other scalar entries are logged."""
        raise NotImplementedError

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Map windows ``(B, T, F)`` to representations ``(B, D)``."""
        raise NotImplementedError

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Map windows ``(B, T, F)`` to the frozen token grid ``(B, N, D)`` of a token family.

        For readouts that keep the grid (the attentive probe); families without tokens raise.
        """
        raise ConfigError(f"family {self.name!r} has no token grid; token readouts need a token family (jepa)")

    # -- learning diagnostics ----------------------------------------------------------------
    def diagnostics(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """The objective on a fixed monitor batch beside its trivial floor.

        The engine calls it in eval mode, without gradients and with torch's global RNG seeded
        to the same value at every call (so masks and views are the same draws each time),
        before the first step, every ``monitor_every`` steps and after the last.

        Returns
        -------
        dict of str to float
            ``"loss"``: the family's objective on ``batch`` (lower is better); ``"floor"``
            (where the family has one): what a model that learned nothing scores on the same
            batch in the same units, as described by :attr:`floor_description`; any further
            family-specific scalars (e.g. jepa's ``content_cosine``). This default reports the
            training loss and no floor.
        """
        return {"loss": float(self.training_loss(batch)["loss"].detach())}

    def learning_verdict(self, record: dict[str, float]) -> str | None:
        """``None`` when a :meth:`diagnostics` record shows learning, else a sentence saying why not.

        The default: the loss has not gone below the floor.
        """
        loss, floor = record.get("loss", math.nan), record.get("floor", math.nan)
        if math.isfinite(floor) and not loss < floor:
            return (
                f"its loss on the monitor batch ({loss:.4g}) is not below its trivial floor ({floor:.4g}, "
                f"{self.floor_description or 'a model that learned nothing'})"
            )
        return None

    # -- optional hooks ----------------------------------------------------------------------
    def prepare(self, windows: np.ndarray, labels: np.ndarray | None = None) -> None:
        """Fit data-dependent buffers on training windows ``(N, T, F)`` (and labels ``(N, k)``).

        Called once by the engine before the first step, never on evaluation data.
        """

    def before_epoch(self, epoch: int) -> None:
        """Called before every epoch (counted from 0), also for the epoch a resumed run re-enters."""

    def after_step(self, step: int, total_steps: int) -> bool | None:
        """Called after every optimiser step (``step`` counts from 1); return ``True`` to end training."""
        return None

    def after_epoch(self, epoch: int) -> None:
        """Called after every full epoch."""

    def after_training(self) -> None:
        """Called once when training ends, also when ``max_steps`` or ``after_step`` cut an epoch."""

    def batch_sampler(self, labels: np.ndarray, batch_size: int, seed: int) -> Iterable[list[int]] | None:
        """Optionally return the batches of one epoch (lists of window indices).

        ``None`` (the default) means shuffled batches. The sampler must be a pure function of
        ``seed`` so that a resumed run sees the same batches.
        """
        return None

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """Optimiser groups: weight decay on >= 2-D parameters only, every group at the base rate.

        A family may return more groups; the engine honours two extra keys per group:
        ``lr_scale`` (multiplies the scheduled learning rate, default 1) and ``apply_wd``
        (``False``: no weight decay, e.g. biases, norms and per-subject parameters).
        """
        decay, no_decay = [], []
        for p in self.parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 else decay).append(p)
        groups = [{"params": decay, "weight_decay": weight_decay, "apply_wd": True, "lr_scale": 1.0}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0, "apply_wd": False, "lr_scale": 1.0})
        return groups

    # -- helpers -----------------------------------------------------------------------------
    @property
    def n_features(self) -> int:
        """Features per frame (ROIs or voxels)."""
        return self.spec.n_features

    @property
    def n_timepoints(self) -> int:
        """Window length the family was built for."""
        return self.spec.n_timepoints

    @classmethod
    def make_config(cls, preset: str | None = None, **overrides: Any) -> Any:
        """Build the config from the family's defaults, an optional preset and overrides."""
        values: dict[str, Any] = {}
        if preset is not None:
            if preset not in cls.presets:
                raise ConfigError(
                    f"unknown preset {preset!r} for family {cls.name!r}; choose one of {sorted(cls.presets)}"
                )
            values.update(cls.presets[preset])
        values.update(overrides)
        return config_from_dict(cls.Config, values, where=f"{cls.name} config")

    def config_dict(self) -> dict[str, Any]:
        """The config as plain types (for checkpoints and YAML)."""
        return dataclasses.asdict(self.config)
