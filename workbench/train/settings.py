"""Engine settings: the config, the device, the optimiser and its schedules, deterministic kernels.

Everything here is a pure function of the settings and the step, so a resumed run follows
exactly the schedules of an uninterrupted one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from workbench.config import config_from_dict
from workbench.data.normalize import Standardizer
from workbench.errors import ConfigError
from workbench.models.base import Method

OPTIMIZERS = ("adamw", "adam", "sgd")
OPTIMIZER_IMPLS = ("auto", "loop", "foreach", "fused")
LOGS = ("tensorboard",)  # where a training may log besides history.json (workbench.train.tensorboard)


@dataclass
class TrainConfig:
    """Optimisation settings shared by every family.

    A family overrides the defaults through ``Method.train_defaults``; the user overrides both
    with a YAML file or ``key=value`` pairs.
    """

    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adamw"  # adamw | adam | sgd (with momentum)
    momentum: float = 0.9  # sgd only
    lr: float = 1e-3  # peak learning rate, reached after warm-up (times each group's lr_scale)
    start_lr: float = 0.0  # learning rate at step 0 of the warm-up
    min_lr: float = 0.0  # learning rate at the end of the cosine
    warmup_steps: int = 0  # optimiser steps of linear warm-up
    weight_decay: float = 0.0
    final_weight_decay: float | None = None  # cosine from weight_decay to this; None = constant
    clip_grad: float | None = 1.0  # max global gradient norm; None = no clipping
    grad_accum: int = 1  # batches per optimiser step
    max_steps: int | None = None  # stop after this many optimiser steps (None = all epochs)
    checkpoint_every: int = 0  # optimiser steps between checkpoints (0 = end of each epoch only)
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    amp: bool = True  # bf16 autocast on CUDA (ignored elsewhere)
    cpu_amp: bool = False  # bf16 autocast on the CPU too (bench/train_speed.py: slower without AVX512-BF16/AMX)
    optimizer_impl: str = "auto"  # auto (torch's choice) | loop | foreach | fused: how the optimiser steps
    compile: bool = False  # torch.compile the family's training_loss (first steps compile; bench/train_speed.py)
    loader_workers: int = 0  # background processes reading the next batches (pinned memory on CUDA); 0 = inline
    normalization: str = "window"  # window | window-demean | dataset | global | robust | none (data.normalize)
    deterministic: bool = True  # torch's deterministic kernels: same seed, same weights bit for bit
    monitor_every: int | None = None  # steps between learning diagnostics (None: ~20 over the run; 0: off)
    monitor_windows: int = 128  # windows of the fixed monitor batch (workbench.train.monitor)
    log: tuple[str, ...] = ()  # also log to: tensorboard (<run folder>/tensorboard/); changes no weight
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.grad_accum < 1 or self.epochs < 1:
            raise ConfigError("train config: epochs, batch_size and grad_accum must be >= 1")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"train config: optimizer={self.optimizer!r}; choose one of {list(OPTIMIZERS)}")
        if self.optimizer_impl not in OPTIMIZER_IMPLS:
            raise ConfigError(
                f"train config: optimizer_impl={self.optimizer_impl!r}; choose one of {list(OPTIMIZER_IMPLS)}"
            )
        if self.loader_workers < 0:
            raise ConfigError(f"train config: loader_workers={self.loader_workers} must be >= 0 (0 reads inline)")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"train config: max_steps={self.max_steps} must be >= 1 (or null for no cap)")
        if self.monitor_every is not None and self.monitor_every < 0:
            raise ConfigError(f"train config: monitor_every={self.monitor_every} must be >= 0 (0: no diagnostics)")
        if self.monitor_windows < 2:
            raise ConfigError(f"train config: monitor_windows={self.monitor_windows} must be >= 2")
        unknown = [name for name in self.log if name not in LOGS]
        if unknown:
            raise ConfigError(f"train config: log={list(self.log)} names {unknown}; choose from {list(LOGS)}")
        Standardizer(self.normalization)  # checks the name


def make_train_config(method: Method | type[Method], **overrides: Any) -> TrainConfig:
    """The engine settings: dataclass defaults < the family's ``train_defaults`` < ``overrides``."""
    return config_from_dict(TrainConfig, {**method.train_defaults, **overrides}, where="train config")


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` picks cuda, then mps, then cpu; an unavailable device is a ConfigError."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device {name!r} is not a device name; use auto, cpu, cuda or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but no CUDA GPU is visible; use device=auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device 'mps' was asked for but MPS is not available; use device=auto")
    return device


def cosine_schedule(
    step: int, total: int, start: float, end: float, warmup: int = 0, warmup_start: float | None = None
) -> float:
    """Linear warm-up from ``warmup_start`` to ``start`` over ``warmup`` steps, then cosine to ``end``.

    ``step`` counts optimiser steps from 0; the value is a pure function of the step.
    """
    if warmup > 0 and step < warmup:
        base = start if warmup_start is None else warmup_start
        return base + (start - base) * step / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * progress))


def make_optimizer(method: Method, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser over the family's parameter groups (``lr_scale`` and ``apply_wd`` kept per group).

    ``config.optimizer_impl`` picks torch's implementation: ``loop`` (one parameter at a time),
    ``foreach`` (multi-tensor kernels), ``fused`` (one fused kernel per group) or ``auto``
    (torch's default: foreach on CUDA, the loop on the CPU).
    """
    groups = method.param_groups(config.weight_decay)
    for group in groups:
        group.setdefault("lr_scale", 1.0)
        group.setdefault("apply_wd", True)
    impl = {
        "auto": {},
        "loop": {"foreach": False},
        "foreach": {"foreach": True},
        "fused": {"fused": True},
    }[config.optimizer_impl]
    try:
        if config.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, **impl)
        kind = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
        return kind(groups, lr=config.lr, **impl)
    except RuntimeError as exc:
        raise ConfigError(
            f"train config: optimizer_impl={config.optimizer_impl!r} is not available here ({exc}); use auto"
        ) from None


def autocast_context(device: torch.device, config: TrainConfig) -> AbstractContextManager:
    """bf16 autocast on CUDA (``amp``) or on the CPU (``cpu_amp``); otherwise full float32."""
    if (device.type == "cuda" and config.amp) or (device.type == "cpu" and config.cpu_amp):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def apply_schedules(
    optimizer: torch.optim.Optimizer, config: TrainConfig, step: int, total: int
) -> tuple[float, float]:
    """Set every group's learning rate and weight decay for optimiser step ``step``."""
    lr = cosine_schedule(step, total, config.lr, config.min_lr, config.warmup_steps, config.start_lr)
    wd = config.weight_decay
    if config.final_weight_decay is not None:
        wd = cosine_schedule(step, total, config.weight_decay, config.final_weight_decay)
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]
        if group["apply_wd"]:
            group["weight_decay"] = wd
    return lr, wd


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """The torch seed of optimiser step ``step``; process ``rank`` > 0 of a distributed run draws its own."""
    entropy = [seed, step] if rank == 0 else [seed, step, rank]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


@contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """Use torch's deterministic kernels inside the block; the previous setting is restored after.

    Some CPU kernels (e.g. the backward of indexing) otherwise add in a thread-dependent order,
    so two runs with the same seed differ in the last bits. Where no deterministic kernel
    exists torch warns instead of failing (``warn_only``); on CUDA the cuBLAS workspace is
    pinned as torch's reproducibility notes require.
    """
    previous = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


__all__ = [
    "LOGS",
    "OPTIMIZERS",
    "OPTIMIZER_IMPLS",
    "TrainConfig",
    "apply_schedules",
    "autocast_context",
    "cosine_schedule",
    "deterministic_algorithms",
    "make_optimizer",
    "make_train_config",
    "resolve_device",
    "step_seed",
]
