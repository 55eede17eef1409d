"""The one training engine, for any :class:`~workbench.models.base.Method`.

It owns everything that is not a family's business: device choice, bf16 autocast on
CUDA, AdamW with warm-up + cosine learning rate and cosine weight decay, gradient
clipping and accumulation, seeding, progress, history and checkpoints.

Reproducibility by construction: the batch order of epoch ``e`` is a pure function of
``(seed, e)`` and the torch RNG is re-seeded from ``(seed, step)`` before every optimiser
step, and every schedule is a pure function of the step. A run stopped at any checkpoint
and resumed therefore takes exactly the steps the uninterrupted run would have taken.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from workbench.config import config_from_dict
from workbench.data.windows import Standardizer, WindowSet
from workbench.errors import CheckpointError, ConfigError
from workbench.methods import get_method
from workbench.models.base import Method

CHECKPOINT_FORMAT = "workbench-checkpoint-1"
CHECKPOINT_NAME = "checkpoint.pt"
HISTORY_NAME = "history.json"
PREPARE_WINDOWS = 2048


@dataclass
class TrainConfig:
    """Optimisation settings shared by every family.

    A family overrides the defaults through ``Method.train_defaults``; the user
    overrides both with a YAML file or ``key=value`` pairs.
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3  # peak learning rate, reached after warm-up
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
    window_norm: str = "zscore"  # none | demean | zscore: each window's ROIs over its frames (Standardizer)
    deterministic: bool = True  # torch's deterministic kernels: same seed, same weights bit for bit
    seed: int = 0


@dataclass
class TrainResult:
    """What :func:`train` returns: the trained method and where its files are."""

    method: Method
    standardizer: Standardizer
    history: dict[str, list[dict[str, float]]]
    checkpoint: Path
    seconds: float
    steps: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


# -- devices and schedules ----------------------------------------------------------


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


def cosine_schedule(step: int, total: int, start: float, end: float, warmup: int = 0,
                    warmup_start: float | None = None) -> float:
    """Linear warm-up from ``warmup_start`` to ``start`` over ``warmup`` steps, then cosine to ``end``.

    ``step`` counts optimiser steps from 0; the value is a pure function of the step.
    """
    if warmup > 0 and step < warmup:
        base = start if warmup_start is None else warmup_start
        return base + (start - base) * step / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * progress))


def _step_seed(seed: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, step]).generate_state(1)[0])


# -- batching -------------------------------------------------------------------------


def _epoch_batches(method: Method, labels: np.ndarray, batch_size: int, seed: int,
                   epoch: int) -> list[list[int]]:
    """The batches of one epoch, a pure function of ``(seed, epoch)``."""
    epoch_seed = int(np.random.SeedSequence([seed, 7919, epoch]).generate_state(1)[0])
    custom = method.batch_sampler(labels, batch_size, epoch_seed)
    if custom is not None:
        return [list(b) for b in custom]
    order = np.random.default_rng(epoch_seed).permutation(len(labels))
    n_full = len(order) // batch_size
    if n_full == 0:
        return [order.tolist()]
    return [order[i * batch_size : (i + 1) * batch_size].tolist() for i in range(n_full)]


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


# -- checkpoints ------------------------------------------------------------------------


def _atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _atomic_json(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, indent=1)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


_REQUIRED_KEYS = {
    "format", "method", "method_config", "train_config", "n_rois", "n_timepoints", "model",
    "optimizer", "step", "epoch", "batch_in_epoch", "standardizer", "subjects", "history",
}


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` and check that it is one of ours.

    Raises
    ------
    CheckpointError
        If the file is missing, unreadable, holds anything but tensors and plain
        types, or lacks / adds keys.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; train first or pass the run folder")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise CheckpointError(
            f"checkpoint {path} could not be loaded safely ({type(exc).__name__}: {exc}); "
            "it is corrupt or holds objects other than tensors and plain types"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a workbench checkpoint ({CHECKPOINT_FORMAT})")
    keys = set(state)
    if keys != _REQUIRED_KEYS:
        raise CheckpointError(
            f"checkpoint {path} has unexpected content: missing {sorted(_REQUIRED_KEYS - keys)}, "
            f"extra {sorted(keys - _REQUIRED_KEYS)}"
        )
    return state


def load_method(path: str | Path, device: str = "cpu") -> tuple[Method, Standardizer, dict[str, Any]]:
    """Rebuild a trained method from a checkpoint.

    Returns
    -------
    method, standardizer, state
        The method in eval mode on ``device``, the standardizer fitted on its training
        windows, and the raw checkpoint dict (for its config and history).
    """
    state = read_checkpoint(path)
    cls = get_method(state["method"])
    config = config_from_dict(cls.Config, state["method_config"], where=f"{path}: method_config")
    method = cls(config, state["n_rois"], state["n_timepoints"])
    try:
        method.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path} does not match the {state['method']} model: {exc}") from None
    method.to(resolve_device(device)).eval()
    return method, Standardizer.from_dict(state["standardizer"]), state


# -- the engine -------------------------------------------------------------------------


def build_method(name: str, n_rois: int, n_timepoints: int, preset: str | None = None,
                 overrides: dict[str, Any] | None = None) -> Method:
    """Instantiate a registered family from its name, an optional preset and overrides."""
    cls = get_method(name)
    config = cls.make_config(preset, **(overrides or {}))
    return cls(config, n_rois, n_timepoints)


def make_train_config(method: Method | type[Method], **overrides: Any) -> TrainConfig:
    """The engine settings: dataclass defaults < the family's ``train_defaults`` < ``overrides``."""
    values = {**method.train_defaults, **overrides}
    return config_from_dict(TrainConfig, values, where="train config")


def prepare_method(method: Method, windows: WindowSet, standardizer: Standardizer) -> None:
    """Fit a method's data-dependent buffers (e.g. Brain-JEPA's gradients) on training windows.

    At most ``PREPARE_WINDOWS`` evenly spaced windows are read, so a cohort larger than
    RAM is never loaded whole.
    """
    picks = np.unique(np.linspace(0, len(windows) - 1, PREPARE_WINDOWS).round().astype(int))
    method.prepare(standardizer.transform(windows.get(picks)))


def train(
    method: Method,
    train_windows: WindowSet,
    config: TrainConfig,
    out_dir: str | Path,
    standardizer: Standardizer | None = None,
    progress: bool = True,
    resume: bool = True,
) -> TrainResult:
    """Train ``method`` on ``train_windows``; write ``checkpoint.pt`` and ``history.json`` in ``out_dir``.

    Parameters
    ----------
    method : Method
        A freshly built family (see :func:`build_method`).
    train_windows : WindowSet
        The training windows, ``(N, T, R)``. Nothing else is seen during training.
    config : TrainConfig
        Optimisation settings (see :func:`make_train_config`).
    out_dir : path
        Run folder. With ``resume=True`` an existing checkpoint there is continued.
    standardizer : Standardizer, optional
        Per-ROI scaling; fitted on ``train_windows`` with ``config.window_norm`` when omitted.
    progress : bool
        Show a progress bar with the live loss.
    resume : bool
        Continue from ``out_dir/checkpoint.pt`` when present.
    """
    with deterministic_algorithms(config.deterministic):
        return _train(method, train_windows, config, Path(out_dir), standardizer, progress, resume)


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


def _train(
    method: Method,
    train_windows: WindowSet,
    config: TrainConfig,
    out_dir: Path,
    standardizer: Standardizer | None,
    progress: bool,
    resume: bool,
) -> TrainResult:
    from tqdm.auto import tqdm

    ckpt_path = out_dir / CHECKPOINT_NAME
    if config.batch_size < 1 or config.grad_accum < 1 or config.epochs < 1:
        raise ConfigError("train config: epochs, batch_size and grad_accum must be >= 1")
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    standardizer = standardizer or Standardizer(config.window_norm).fit(train_windows)
    prepare_method(method, train_windows, standardizer)
    method.to(device)

    optimizer = torch.optim.AdamW(method.param_groups(config.weight_decay), lr=config.lr)
    labels = train_windows.labels
    steps_per_epoch = len(_epoch_batches(method, labels, config.batch_size, config.seed, 0)) // config.grad_accum
    if steps_per_epoch == 0:
        raise ConfigError(
            f"train config: {len(labels)} training windows make no optimiser step with batch_size="
            f"{config.batch_size} and grad_accum={config.grad_accum}; lower them"
        )
    total = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)

    step, start_epoch, skip = 0, 0, 0
    history: dict[str, list[dict[str, float]]] = {"step": [], "epoch": []}
    if resume and ckpt_path.exists():
        state = read_checkpoint(ckpt_path)
        if state["method"] != method.name:
            raise CheckpointError(f"{ckpt_path} belongs to method {state['method']!r}, not {method.name!r}")
        method.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, start_epoch, skip = state["step"], state["epoch"], state["batch_in_epoch"]
        history = state["history"]

    def save() -> None:
        _atomic_torch_save(
            {
                "format": CHECKPOINT_FORMAT,
                "method": method.name,
                "method_config": method.config_dict(),
                "train_config": dataclasses.asdict(config),
                "n_rois": method.n_rois,
                "n_timepoints": method.n_timepoints,
                "model": {k: v.detach().cpu() for k, v in method.state_dict().items()},
                "optimizer": optimizer.state_dict(),
                "step": step,
                "epoch": epoch,
                "batch_in_epoch": batch_in_epoch,
                "standardizer": standardizer.to_dict(),
                "subjects": list(train_windows.subjects),
                "history": history,
            },
            ckpt_path,
        )
        _atomic_json(history, out_dir / HISTORY_NAME)

    autocast = (
        torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        if device.type == "cuda" and config.amp
        else nullcontext()
    )
    bar = tqdm(total=total, initial=step, desc=f"train {method.name}", disable=not progress, leave=False)
    t0 = time.perf_counter()
    epoch, batch_in_epoch = start_epoch, skip
    while step < total:
        batches = _epoch_batches(method, labels, config.batch_size, config.seed, epoch)
        usable = batches[: steps_per_epoch * config.grad_accum]
        method.train()
        for batch_in_epoch in range(skip, len(usable), config.grad_accum):
            torch.manual_seed(_step_seed(config.seed, step))
            lr = cosine_schedule(step, total, config.lr, config.min_lr, config.warmup_steps, config.start_lr)
            wd = (
                config.weight_decay
                if config.final_weight_decay is None
                else cosine_schedule(step, total, config.weight_decay, config.final_weight_decay)
            )
            for group in optimizer.param_groups:
                group["lr"] = lr
                if group.get("apply_wd", True):
                    group["weight_decay"] = wd
            optimizer.zero_grad(set_to_none=True)
            logs: dict[str, float] = {}
            for micro in usable[batch_in_epoch : batch_in_epoch + config.grad_accum]:
                batch = _to_device(_make_batch(train_windows, standardizer, micro), device)
                with autocast:
                    out = method.training_loss(batch)
                loss = out["loss"].float()
                if not torch.isfinite(loss):
                    raise ConfigError(
                        f"{method.name}: the loss became {loss.item()} at step {step}; "
                        "lower the learning rate or check the data for extreme values"
                    )
                (loss / config.grad_accum).backward()
                for key, value in out.items():
                    logs[key] = logs.get(key, 0.0) + float(value.detach()) / config.grad_accum
            if config.clip_grad is not None:
                logs["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(method.parameters(), config.clip_grad))
            optimizer.step()
            step += 1
            method.after_step(step, total)
            history["step"].append({"step": step, "epoch": epoch, "lr": lr, "weight_decay": wd, **logs})
            bar.update(1)
            bar.set_postfix(loss=f"{logs['loss']:.4f}", epoch=epoch)
            batch_in_epoch += config.grad_accum
            if config.checkpoint_every and step % config.checkpoint_every == 0 and step < total:
                save()
            if step >= total:
                break
        finished_epoch = batch_in_epoch >= len(usable)
        if finished_epoch:
            losses = [h["loss"] for h in history["step"] if h["epoch"] == epoch]
            if losses:
                history["epoch"].append({"epoch": epoch, "loss": float(np.mean(losses)), "step": step})
            method.after_epoch(epoch, train_windows)
            epoch, batch_in_epoch, skip = epoch + 1, 0, 0
        save()
    bar.close()
    method.eval()
    return TrainResult(method, standardizer, history, ckpt_path, time.perf_counter() - t0, step)


def _make_batch(windows: WindowSet, standardizer: Standardizer,
                indices: list[int]) -> dict[str, torch.Tensor]:
    """Gather a batch in one vectorised read: ``x`` (B, T, R) standardised, ``subject`` (B,)."""
    idx = np.asarray(indices, dtype=np.int64)
    return {
        "x": torch.from_numpy(standardizer.transform(windows.get(idx))),
        "subject": torch.from_numpy(windows.labels[idx].astype(np.int64)),
    }


__all__ = [
    "TrainConfig",
    "TrainResult",
    "build_method",
    "cosine_schedule",
    "load_method",
    "make_train_config",
    "prepare_method",
    "read_checkpoint",
    "resolve_device",
    "train",
]
