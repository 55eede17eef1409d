"""The one training engine, for any :class:`~workbench.models.base.Method`.

It owns everything that is not a family's business: device choice, bf16 autocast on CUDA, the
optimiser (AdamW, Adam or SGD with momentum) with warm-up + cosine learning rate and cosine
weight decay, per-group learning-rate scales, gradient clipping and accumulation, seeding,
progress, history and checkpoints. A family plugs in through the hooks of its Method.

One run reads top to bottom (:func:`train`):

1. **set up** — device, window scaling fitted on the training windows, ``prepare``, optimiser;
2. **restore** — continue a checkpoint of the same run, or refuse one of another run;
3. **per epoch** — ``before_epoch``, then optimiser steps over the epoch's batches:
   schedules, forward/backward of the micro-batches, clipping, step, ``after_step``;
4. **end of epoch** — ``after_epoch``, epoch history, checkpoint;
5. **end of training** — ``after_training`` (also when ``max_steps`` or ``after_step`` cut an
   epoch), final checkpoint marked finished.

Reproducibility by construction: the batches of epoch ``e`` are a pure function of
``(seed, e)``, the torch RNG is re-seeded from ``(seed, step)`` before every optimiser step,
and every schedule is a pure function of the step. A run stopped at any checkpoint and
resumed therefore takes exactly the steps the uninterrupted run would have taken.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.config import config_from_dict
from workbench.data.dataset import WindowDataset
from workbench.data.normalize import Standardizer
from workbench.data.spec import DataSpec
from workbench.data.windows import WindowSet
from workbench.errors import CheckpointError, ConfigError
from workbench.files import atomic_path, write_json
from workbench.methods import get_method
from workbench.models.base import Method

CHECKPOINT_FORMAT = "workbench-checkpoint-2"
CHECKPOINT_NAME = "checkpoint.pt"
HISTORY_NAME = "history.json"
PREPARE_WINDOWS = 2048
OPTIMIZERS = ("adamw", "adam", "sgd")
# engine settings that may change between a run and its resumption without changing its result
RESUMABLE_CHANGES = ("device", "checkpoint_every")


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
    normalization: str = "window"  # window | window-demean | dataset | global | none (workbench.data.normalize)
    deterministic: bool = True  # torch's deterministic kernels: same seed, same weights bit for bit
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.grad_accum < 1 or self.epochs < 1:
            raise ConfigError("train config: epochs, batch_size and grad_accum must be >= 1")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"train config: optimizer={self.optimizer!r}; choose one of {list(OPTIMIZERS)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"train config: max_steps={self.max_steps} must be >= 1 (or null for no cap)")
        Standardizer(self.normalization)  # checks the name


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


# -- devices, schedules, optimisers -------------------------------------------------------


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
    """The optimiser over the family's parameter groups (``lr_scale`` and ``apply_wd`` kept per group)."""
    groups = method.param_groups(config.weight_decay)
    for group in groups:
        group.setdefault("lr_scale", 1.0)
        group.setdefault("apply_wd", True)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    kind = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return kind(groups, lr=config.lr)


def _apply_schedules(
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


def _step_seed(seed: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, step]).generate_state(1)[0])


def _epoch_batches(method: Method, labels: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
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


# -- checkpoints ------------------------------------------------------------------------------

_REQUIRED_KEYS = {
    "format",
    "method",
    "method_config",
    "spec",
    "train_config",
    "provenance",
    "model",
    "optimizer",
    "step",
    "epoch",
    "batch_in_epoch",
    "finished",
    "standardizer",
    "subjects",
    "history",
}


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` and check that it is one of ours.

    Raises
    ------
    CheckpointError
        If the file is missing, unreadable, holds anything but tensors and plain types, or lacks
        / adds keys.
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
        raise CheckpointError(f"checkpoint {path} is not a workbench checkpoint ({CHECKPOINT_FORMAT}); train it again")
    keys = set(state)
    if keys != _REQUIRED_KEYS:
        raise CheckpointError(
            f"checkpoint {path} has unexpected content: missing {sorted(_REQUIRED_KEYS - keys)}, "
            f"extra {sorted(keys - _REQUIRED_KEYS)}"
        )
    return state


def build_method(
    name: str, spec: DataSpec, preset: str | None = None, overrides: dict[str, Any] | None = None
) -> Method:
    """Instantiate a registered family from its name, the data spec, an optional preset and overrides."""
    cls = get_method(name)
    return cls(cls.make_config(preset, **(overrides or {})), spec)


def load_method(path: str | Path, device: str = "cpu") -> tuple[Method, Standardizer, dict[str, Any]]:
    """Rebuild a trained family from a checkpoint (its config and data spec are inside).

    Returns
    -------
    method, standardizer, state
        The method in eval mode on ``device``, the standardizer fitted on its training windows,
        and the raw checkpoint dict (for its config, provenance and history).
    """
    state = read_checkpoint(path)
    cls = get_method(state["method"])
    config = config_from_dict(cls.Config, state["method_config"], where=f"{path}: method_config")
    method = cls(config, DataSpec.from_dict(state["spec"]))
    try:
        method.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path} does not match the {state['method']} model: {exc}") from None
    method.to(resolve_device(device)).eval()
    return method, Standardizer.from_dict(state["standardizer"]), state


def _differences(saved: dict[str, Any], now: dict[str, Any], prefix: str) -> list[str]:
    keys = sorted(set(saved) | set(now))
    return [f"{prefix}{k} ({saved.get(k)!r} -> {now.get(k)!r})" for k in keys if saved.get(k) != now.get(k)]


def _check_same_run(state: dict[str, Any], identity: dict[str, Any], path: Path) -> None:
    """Refuse to resume a checkpoint written by another run, naming what differs."""
    diffs = []
    if state["method"] != identity["method"]:
        diffs.append(f"family ({state['method']!r} -> {identity['method']!r})")
    else:
        diffs += _differences(state["method_config"], identity["method_config"], "")
    diffs += _differences(state["spec"], identity["spec"], "data.")
    saved_train = {k: v for k, v in state["train_config"].items() if k not in RESUMABLE_CHANGES}
    now_train = {k: v for k, v in identity["train_config"].items() if k not in RESUMABLE_CHANGES}
    diffs += _differences(saved_train, now_train, "")
    diffs += _differences(state["provenance"], identity["provenance"], "")
    if diffs:
        raise CheckpointError(
            f"{path} was written by another run; differing: {'; '.join(diffs[:8])}"
            f"{' ...' if len(diffs) > 8 else ''}. Train into another folder (--out) or start this one "
            "again (--force-new)"
        )


# -- the engine ---------------------------------------------------------------------------------


def make_train_config(method: Method | type[Method], **overrides: Any) -> TrainConfig:
    """The engine settings: dataclass defaults < the family's ``train_defaults`` < ``overrides``."""
    return config_from_dict(TrainConfig, {**method.train_defaults, **overrides}, where="train config")


def prepare_method(method: Method, windows: WindowSet, standardizer: Standardizer) -> None:
    """Fit a family's data-dependent buffers (e.g. Brain-JEPA's gradients) on training windows.

    At most ``PREPARE_WINDOWS`` evenly spaced windows are read, so a cohort larger than RAM is
    never loaded whole; their labels go along when the windows have some.
    """
    picks = np.unique(np.linspace(0, len(windows) - 1, PREPARE_WINDOWS).round().astype(int))
    labels = None if windows.y is None else windows.y[picks]
    method.prepare(standardizer.transform(windows.get(picks)), labels)


@dataclass
class _Progress:
    """Where a run stands; what a checkpoint stores besides weights."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    finished: bool = False
    history: dict[str, list[dict[str, float]]] = field(default_factory=lambda: {"step": [], "epoch": []})


def train(
    method: Method,
    train_windows: WindowSet,
    config: TrainConfig,
    out_dir: str | Path,
    standardizer: Standardizer | None = None,
    progress: bool = True,
    resume: bool = True,
    provenance: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``method`` on ``train_windows``; write ``checkpoint.pt`` and ``history.json`` in ``out_dir``.

    Parameters
    ----------
    method : Method
        A freshly built family (see :func:`build_method`).
    train_windows : WindowSet
        The training windows, ``(N, T, F)``. Nothing else is seen during training.
    config : TrainConfig
        Optimisation settings (see :func:`make_train_config`).
    out_dir : path
        Run folder. With ``resume=True`` a checkpoint of the same run there is continued, and a
        checkpoint of another run (other family, settings, data or provenance) is refused.
    standardizer : Standardizer, optional
        Window scaling; fitted on ``train_windows`` with ``config.normalization`` when omitted.
    progress : bool
        Show a progress bar with the live loss.
    resume : bool
        Continue from ``out_dir/checkpoint.pt`` when present; ``False`` starts again.
    provenance : dict, optional
        Plain facts about where the windows came from (dataset, content digest, protocol) kept
        in the checkpoint: a resumption must match them, and evaluation reads its leak guard
        from them.
    """
    with deterministic_algorithms(config.deterministic):
        return _train(method, train_windows, config, Path(out_dir), standardizer, progress, resume, provenance or {})


def _train(
    method: Method,
    windows: WindowSet,
    config: TrainConfig,
    out_dir: Path,
    standardizer: Standardizer | None,
    progress: bool,
    resume: bool,
    provenance: dict[str, Any],
) -> TrainResult:
    from tqdm.auto import tqdm

    # 1. set up
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    standardizer = standardizer or Standardizer(config.normalization).fit(windows)
    prepare_method(method, windows, standardizer)
    method.to(device)
    optimizer = make_optimizer(method, config)
    dataset = WindowDataset(windows, standardizer)
    steps_per_epoch = (
        len(_epoch_batches(method, windows.labels, config.batch_size, config.seed, 0)) // config.grad_accum
    )
    if steps_per_epoch == 0:
        raise ConfigError(
            f"train config: {len(windows)} training windows make no optimiser step with batch_size="
            f"{config.batch_size} and grad_accum={config.grad_accum}; lower them"
        )
    total = (
        steps_per_epoch * config.epochs
        if config.max_steps is None
        else min(steps_per_epoch * config.epochs, config.max_steps)
    )
    identity = {
        "method": method.name,
        "method_config": method.config_dict(),
        "spec": method.spec.to_dict(),
        "train_config": dataclasses.asdict(config),
        "provenance": provenance,
    }
    checkpoint = out_dir / CHECKPOINT_NAME

    def save(run: _Progress) -> None:
        state = {
            **identity,
            "format": CHECKPOINT_FORMAT,
            "model": {k: v.detach().cpu() for k, v in method.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "step": run.step,
            "epoch": run.epoch,
            "batch_in_epoch": run.batch_in_epoch,
            "finished": run.finished,
            "standardizer": standardizer.to_dict(),
            "subjects": list(windows.subjects),
            "history": run.history,
        }
        with atomic_path(checkpoint) as tmp:
            torch.save(state, tmp)
        write_json(out_dir / HISTORY_NAME, run.history, indent=1)

    # 2. restore
    run = _Progress()
    if resume and checkpoint.exists():
        state = read_checkpoint(checkpoint)
        _check_same_run(state, identity, checkpoint)
        method.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        run = _Progress(state["step"], state["epoch"], state["batch_in_epoch"], state["finished"], state["history"])

    autocast = (
        torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        if device.type == "cuda" and config.amp
        else nullcontext()
    )
    bar = tqdm(total=total, initial=run.step, desc=f"train {method.name}", disable=not progress, leave=False)
    t0 = time.perf_counter()
    stop = run.finished or run.step >= total
    while not stop:
        # 3. one epoch of optimiser steps
        method.before_epoch(run.epoch)
        batches = _epoch_batches(method, windows.labels, config.batch_size, config.seed, run.epoch)
        usable = batches[: steps_per_epoch * config.grad_accum]
        method.train()
        while run.batch_in_epoch < len(usable) and not stop:
            micro = usable[run.batch_in_epoch : run.batch_in_epoch + config.grad_accum]
            logs, lr, wd = _optimizer_step(method, optimizer, dataset, micro, config, run.step, total, device, autocast)
            run.step += 1
            run.batch_in_epoch += config.grad_accum
            stop = bool(method.after_step(run.step, total)) or run.step >= total
            run.history["step"].append({"step": run.step, "epoch": run.epoch, "lr": lr, "weight_decay": wd, **logs})
            bar.update(1)
            bar.set_postfix(loss=f"{logs['loss']:.4f}", epoch=run.epoch)
            if config.checkpoint_every and run.step % config.checkpoint_every == 0 and not stop:
                save(run)
        # 4. end of epoch
        if run.batch_in_epoch >= len(usable):
            losses = [h["loss"] for h in run.history["step"] if h["epoch"] == run.epoch]
            run.history["epoch"].append({"epoch": run.epoch, "loss": float(np.mean(losses)), "step": run.step})
            method.after_epoch(run.epoch)
            run.epoch, run.batch_in_epoch = run.epoch + 1, 0
        if not stop:
            save(run)
    bar.close()
    # 5. end of training
    if not run.finished:
        method.after_training()
        run.finished = True
        save(run)
    method.eval()
    return TrainResult(method, standardizer, run.history, checkpoint, time.perf_counter() - t0, run.step)


def _optimizer_step(
    method: Method,
    optimizer: torch.optim.Optimizer,
    dataset: WindowDataset,
    micro_batches: list[list[int]],
    config: TrainConfig,
    step: int,
    total: int,
    device: torch.device,
    autocast,
) -> tuple[dict[str, float], float, float]:
    """One optimiser step over ``grad_accum`` micro-batches; returns the averaged logs, lr and wd."""
    torch.manual_seed(_step_seed(config.seed, step))
    lr, wd = _apply_schedules(optimizer, config, step, total)
    optimizer.zero_grad(set_to_none=True)
    logs: dict[str, float] = {}
    for indices in micro_batches:
        batch = {k: v.to(device, non_blocking=True) for k, v in dataset[indices].items()}
        with autocast:
            out = method.training_loss(batch)
        loss = out["loss"].float()
        if not torch.isfinite(loss):
            raise ConfigError(
                f"{method.name}: the loss became {loss.item()} at step {step}; lower the learning rate or check "
                "the data for extreme values"
            )
        (loss / config.grad_accum).backward()
        for key, value in out.items():
            logs[key] = logs.get(key, 0.0) + float(value.detach()) / config.grad_accum
    if config.clip_grad is not None:
        logs["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(method.parameters(), config.clip_grad))
    optimizer.step()
    return logs, lr, wd


__all__ = [
    "OPTIMIZERS",
    "TrainConfig",
    "TrainResult",
    "build_method",
    "cosine_schedule",
    "load_method",
    "make_optimizer",
    "make_train_config",
    "prepare_method",
    "read_checkpoint",
    "resolve_device",
    "train",
]
