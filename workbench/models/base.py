"""The Method seam: what the engine, the evaluation and the notebooks know of a family.

A family is an ``nn.Module`` subclass of :class:`Method` with a config dataclass.
The engine calls :meth:`Method.training_loss` on batches, :meth:`Method.after_step`
after every optimiser step and :meth:`Method.after_epoch` after every epoch;
evaluation calls :meth:`Method.embed`.

Batches are dicts of tensors. Every family receives windows as ``batch["x"]`` of
shape ``(B, T, R)`` (time first, ROIs last) and the subject index as
``batch["subject"]`` ``(B,)``; a family that wants another layout (Brain-JEPA's
``(B, 1, R, T)``) converts inside.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Iterable, Iterator

import numpy as np
import torch
from torch import nn

from workbench.config import config_from_dict


class Method(nn.Module):
    """Base class of the five families.

    Subclasses set ``name``, ``Config`` (a dataclass whose defaults come from the
    seed), optionally ``presets`` (name -> dict of overrides) and ``train_defaults``
    (overrides of :class:`workbench.train.TrainConfig`; an instance may refine them in
    ``__init__`` when they depend on the config), and build their network in
    ``__init__(self, config, n_rois, n_timepoints)``.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type]
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    train_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, config: Any, n_rois: int, n_timepoints: int) -> None:
        super().__init__()
        self.config = config
        self.n_rois = int(n_rois)
        self.n_timepoints = int(n_timepoints)

    # -- the seam -----------------------------------------------------------------
    def training_loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Return at least ``{"loss": scalar}``; other scalar entries are logged."""
        raise NotImplementedError

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Map windows ``(B, T, R)`` to representations ``(B, D)``."""
        raise NotImplementedError

    def after_step(self, step: int, total_steps: int) -> None:
        """Called after every optimiser step (``step`` counts from 1)."""

    def after_epoch(self, epoch: int, data: Any) -> None:
        """Called after every epoch with the training dataset."""

    def prepare(self, train_windows: np.ndarray) -> None:
        """Fit data-dependent buffers on training windows ``(N, T, R)`` before training.

        Called once by the engine before the first step, never on evaluation data.
        """

    def batch_sampler(
        self, labels: np.ndarray, batch_size: int, seed: int
    ) -> Iterable[list[int]] | None:
        """Optionally return a batch sampler over the training set (lists of indices).

        ``None`` (the default) means shuffled batches. The sampler must be a pure
        function of ``seed`` so that a resumed run sees the same batches.
        """
        return None

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW parameter groups: no weight decay on biases and 1-D parameters."""
        decay, no_decay = [], []
        for _, p in self.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim <= 1 else decay).append(p)
        groups = [{"params": decay, "weight_decay": weight_decay, "apply_wd": True}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0, "apply_wd": False})
        return groups

    # -- helpers ------------------------------------------------------------------
    @classmethod
    def make_config(cls, preset: str | None = None, **overrides: Any) -> Any:
        """Build the config from seed defaults, an optional preset and overrides."""
        values: dict[str, Any] = {}
        if preset is not None:
            from workbench.errors import ConfigError

            if preset not in cls.presets:
                raise ConfigError(
                    f"unknown preset {preset!r} for method {cls.name!r}; "
                    f"choose one of {sorted(cls.presets)}"
                )
            values.update(cls.presets[preset])
        values.update(overrides)
        return config_from_dict(cls.Config, values, where=f"{cls.name} config")

    def config_dict(self) -> dict[str, Any]:
        """The config as plain types (for checkpoints and YAML)."""
        return dataclasses.asdict(self.config)


def batched(x: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """Yield consecutive slices of ``x`` along the first axis."""
    for i in range(0, x.shape[0], batch_size):
        yield x[i : i + batch_size]
