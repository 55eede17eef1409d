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
   epoch), the learning verdict, final checkpoint marked finished.

Learning is shown, not assumed: before the first step, every ``monitor_every`` steps and after the
last, the family's objective on a fixed monitor batch is recorded beside its trivial floor and
the centred RankMe of its embeddings (:mod:`workbench.train.monitor`); a run that ends at its floor
says so with a :class:`~workbench.errors.LearningWarning`.

With ``log: [tensorboard]`` the steps, the monitor records, the monitor batch's embeddings and the
hyper-parameters also go to ``<run folder>/tensorboard/`` (:mod:`workbench.train.tensorboard`).

Under ``torchrun`` each process trains on its slice of every batch and the gradients are averaged
over the processes before each step (:mod:`workbench.train.distributed`); rank 0 alone shows
progress and writes the checkpoint.

Reproducibility by construction: the batches of epoch ``e`` are a pure function of
``(seed, e)``, the torch RNG is re-seeded from ``(seed, step)`` before every optimiser step,
and every schedule is a pure function of the step. A run stopped at any checkpoint and
resumed (with as many processes) therefore takes exactly the steps the uninterrupted run would
have taken.
"""

from __future__ import annotations

import dataclasses
import errno
import time
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.data.dataset import WindowDataset
from workbench.data.normalize import Standardizer
from workbench.data.windows import WindowSet, window_problems
from workbench.errors import CheckpointError, ConfigError, LearningWarning
from workbench.files import atomic_path, run_folder_lock, sweep_temporaries, write_json
from workbench.models.base import Method
from workbench.train.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_NAME, check_same_run, read_checkpoint
from workbench.train.distributed import Distributed, current, rank_device
from workbench.train.monitor import (
    check_monitor_labels,
    diagnose,
    floor_postfix,
    is_monitor_step,
    monitor_batch,
    monitor_interval,
)
from workbench.train.settings import (
    TrainConfig,
    apply_schedules,
    autocast_context,
    deterministic_algorithms,
    make_optimizer,
    resolve_device,
    step_seed,
)
from workbench.train.tensorboard import Monitored, open_training_log

HISTORY_NAME = "history.json"
PREPARE_WINDOWS = 2048
_DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))  # no space, or no quota left


@dataclass
class TrainResult:
    """What :func:`train` returns: the trained method and where its files are."""

    method: Method
    standardizer: Standardizer
    history: dict[str, Any]
    checkpoint: Path
    seconds: float
    steps: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


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
    history: dict[str, Any] = field(default_factory=lambda: {"step": [], "epoch": [], "monitor": []})


def train(
    method: Method,
    train_windows: WindowSet,
    config: TrainConfig,
    out_dir: str | Path,
    standardizer: Standardizer | None = None,
    progress: bool = True,
    resume: bool = True,
    provenance: dict[str, Any] | None = None,
    monitor: WindowSet | None = None,
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
    monitor : WindowSet, optional
        Held-out windows (never trained on) of which ``config.monitor_windows`` evenly spaced
        ones form the fixed batch of the learning diagnostics; default: the training windows.
        They must carry the training windows' label columns when the family reads labels.

    Raises
    ------
    ConfigError
        If ``out_dir`` is a file, or another training is writing there (the folder is locked
        for the whole training, see :func:`workbench.files.run_folder_lock`).
    CheckpointError
        If the disk fills up while a checkpoint is written; the last complete one is kept.
    """
    distributed = current(config.device)
    with (
        deterministic_algorithms(config.deterministic),
        _run_folder(Path(out_dir), distributed) as folder,
        ExitStack() as closing,
    ):
        return _train(
            method,
            train_windows,
            config,
            folder,
            distributed,
            standardizer,
            progress,
            resume,
            provenance or {},
            monitor,
            closing,
        )


@contextmanager
def _run_folder(out_dir: Path, distributed: Distributed) -> Iterator[Path]:
    """The run folder, locked by the main process for the whole training and swept of dead writers' temporaries."""
    if not distributed.is_main:
        yield out_dir
        return
    with run_folder_lock(out_dir, "training") as folder:
        sweep_temporaries(folder)
        yield folder


@contextmanager
def _full_disk_as_checkpoint_error(folder: Path) -> Iterator[None]:
    """Turn a write that failed on a full disk into a CheckpointError naming ``folder``.

    ``torch.save`` reports a failed write to a Python file as a RuntimeError whose context is
    the ``OSError`` that caused it.
    """
    try:
        yield
    except (OSError, RuntimeError) as exc:
        cause = exc if isinstance(exc, OSError) else exc.__context__
        if isinstance(cause, OSError) and cause.errno in _DISK_FULL:
            raise CheckpointError(
                f"the disk holding {folder} is full ({cause.strerror}) while writing the checkpoint; every file "
                "there is whole (the last complete checkpoint is kept): free space and run the same command again "
                "to resume"
            ) from None
        raise


def _train(
    method: Method,
    windows: WindowSet,
    config: TrainConfig,
    out_dir: Path,
    distributed: Distributed,
    standardizer: Standardizer | None,
    progress: bool,
    resume: bool,
    provenance: dict[str, Any],
    monitor: WindowSet | None,
    closing: ExitStack,
) -> TrainResult:
    from tqdm.auto import tqdm

    # 1. set up
    device = rank_device(resolve_device(config.device), distributed)
    torch.manual_seed(config.seed)
    standardizer = standardizer or Standardizer(config.normalization).fit(windows)
    prepare_method(method, windows, standardizer)
    method.to(device)
    distributed.broadcast_module(method)
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
        "train_config": {k: v for k, v in dataclasses.asdict(config).items() if k != "log"},  # logs change no weight
        "provenance": provenance,
    }
    checkpoint = out_dir / CHECKPOINT_NAME

    def save(run: _Progress) -> None:
        if not distributed.is_main:
            distributed.barrier()
            return
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
        with _full_disk_as_checkpoint_error(out_dir):
            with atomic_path(checkpoint) as tmp, open(tmp, "wb") as stream:
                torch.save(state, stream)
            write_json(out_dir / HISTORY_NAME, run.history, indent=1)
        distributed.barrier()

    # 2. restore (rank 0 reads the checkpoint and hands it to the other processes)
    run = _Progress()
    state = read_checkpoint(checkpoint) if distributed.is_main and resume and checkpoint.exists() else None
    state = distributed.broadcast_object(state)
    if state is not None:
        check_same_run(state, identity, checkpoint)
        method.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        run = _Progress(state["step"], state["epoch"], state["batch_in_epoch"], state["finished"], state["history"])

    autocast = autocast_context(device, config)
    interval = monitor_interval(total, config.monitor_every)
    check_monitor_labels(windows, monitor)
    watched = monitor if monitor is not None else windows
    probe = None if interval == 0 else monitor_batch(watched, standardizer, config.monitor_windows)
    run.history.setdefault("monitor", [])
    if run.step == 0:  # a resumed run keeps the name of the windows its records came from
        run.history["monitor_on"] = (
            "off" if probe is None else "training windows" if monitor is None else "held-out windows"
        )
    log = open_training_log(
        config.log,
        out_dir,
        distributed.is_main and not run.finished,
        0 if state is None else run.step + 1,  # hides what an interrupted process logged past its checkpoint
        Monitored(probe, watched, autocast, device),
    )
    closing.callback(log.close)

    def record() -> dict[str, float] | None:
        """Add a diagnostics record for the current step (once per step) and return the last one."""
        if probe is None:
            return None
        records = run.history["monitor"]
        if not records or records[-1]["step"] != run.step:
            records.append(diagnose(method, probe, run.step, autocast, device))
            log.monitor(records[-1])
        return records[-1]

    if run.step == 0:
        record()
    loss_fn = torch.compile(method.training_loss) if config.compile else method.training_loss
    show = progress and distributed.is_main
    bar = tqdm(total=total, initial=run.step, desc=f"train {method.name}", disable=not show, leave=False)
    t0 = time.perf_counter()
    stop = run.finished or run.step >= total
    while not stop:
        # 3. one epoch of optimiser steps
        method.before_epoch(run.epoch)
        batches = _epoch_batches(method, windows.labels, config.batch_size, config.seed, run.epoch)
        usable = batches[: steps_per_epoch * config.grad_accum]
        method.train()
        loaded = _load(dataset, [distributed.shard(b) for b in usable[run.batch_in_epoch :]], config, device)
        while run.batch_in_epoch < len(usable) and not stop:
            micro = [next(loaded) for _ in range(config.grad_accum)]
            logs, lr, wd = _optimizer_step(
                method, loss_fn, optimizer, dataset, micro, config, run.step, total, device, autocast, distributed
            )
            run.step += 1
            run.batch_in_epoch += config.grad_accum
            stop = bool(method.after_step(run.step, total)) or run.step >= total
            run.history["step"].append({"step": run.step, "epoch": run.epoch, "lr": lr, "weight_decay": wd, **logs})
            log.step(run.history["step"][-1])
            bar.update(1)
            # the last record is taken after after_training (which may still change the model)
            last = record() if not stop and is_monitor_step(run.step, total, interval) else None
            last = last or (run.history["monitor"][-1] if run.history["monitor"] else None)
            bar.set_postfix(loss=f"{logs['loss']:.4f}", epoch=run.epoch, **(floor_postfix(last) if last else {}))
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
        last = record()
        verdict = None if last is None else method.learning_verdict(last)
        run.history["verdict"] = verdict
        if verdict is not None:
            warnings.warn(LearningWarning(f"{method.name} after {run.step} steps: {verdict}"), stacklevel=3)
        run.finished = True
        save(run)
        log.finish(method, run.history, identity["train_config"])
    method.eval()
    meta = {"world_size": distributed.world_size, "weights_sha256": distributed.check_identical(method)}
    return TrainResult(method, standardizer, run.history, checkpoint, time.perf_counter() - t0, run.step, meta)


def _optimizer_step(
    method: Method,
    loss_fn,
    optimizer: torch.optim.Optimizer,
    dataset: WindowDataset,
    micro_batches: list[tuple[list[int], dict[str, torch.Tensor]]],
    config: TrainConfig,
    step: int,
    total: int,
    device: torch.device,
    autocast,
    distributed: Distributed,
) -> tuple[dict[str, float], float, float]:
    """One optimiser step over ``grad_accum`` micro-batches; returns the averaged logs, lr and wd.

    ``micro_batches`` are this process's slices of the micro-batches, as window indices and
    tensors; the gradients are averaged over the processes before clipping, and the logs are the
    mean over the processes.
    """
    torch.manual_seed(step_seed(config.seed, step, distributed.rank))
    lr, wd = apply_schedules(optimizer, config, step, total)
    optimizer.zero_grad(set_to_none=True)
    logs: dict[str, float] = {}
    for indices, tensors in micro_batches:
        batch = {k: _to_device(v, device) for k, v in tensors.items()}
        with autocast:
            out = loss_fn(batch)
        loss = out["loss"].float()
        finite = bool(torch.isfinite(loss))
        if distributed.any(not finite, device):
            if finite:
                raise ConfigError(f"{method.name}: the loss became non-finite at step {step} in another process")
            raise ConfigError(_non_finite_message(method.name, loss.item(), step, dataset.windows, indices))
        (loss / config.grad_accum).backward()
        for key, value in out.items():
            logs[key] = logs.get(key, 0.0) + float(value.detach()) / config.grad_accum
    distributed.average_gradients(list(method.parameters()))
    logs = distributed.mean(logs, device)
    if config.clip_grad is not None:
        logs["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(method.parameters(), config.clip_grad))
    optimizer.step()
    distributed.broadcast_norm_statistics(method)
    return logs, lr, wd


class _Batches(torch.utils.data.Dataset):
    """The batches of an epoch as items, for a DataLoader's workers: item ``i`` is batch ``i``."""

    def __init__(self, dataset: WindowDataset, batches: list[list[int]]) -> None:
        self.dataset, self.batches = dataset, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> tuple[list[int], dict[str, torch.Tensor]]:
        return self.batches[i], self.dataset[self.batches[i]]


def _load(dataset: WindowDataset, batches: list[list[int]], config: TrainConfig, device: torch.device):
    """Iterate ``(indices, tensors)`` of ``batches`` in order: read here, or by ``loader_workers``
    background processes that read ahead (pinned memory on CUDA)."""
    if config.loader_workers == 0:
        return ((indices, dataset[indices]) for indices in batches)
    loader = torch.utils.data.DataLoader(
        _Batches(dataset, batches),
        batch_size=None,
        num_workers=config.loader_workers,
        pin_memory=device.type == "cuda",
    )
    return iter(loader)


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a batch tensor; on CUDA through pinned memory so that the copy overlaps compute."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def _non_finite_message(name: str, value: float, step: int, windows: WindowSet, indices: list[int]) -> str:
    """Why a loss became NaN or inf: the likely cause in the batch's windows, else the learning rate."""
    head = f"{name}: the loss became {value} at step {step}"
    problems = window_problems(windows, indices)
    if problems:
        return (
            f"{head}; the batch's windows are the likely cause: {'; '.join(problems)}. Fix the data, drop the "
            "region for the whole dataset (read.constant: drop) or choose another normalization"
        )
    return f"{head}; the batch's windows look sound (finite, no constant feature): lower the learning rate"


__all__ = ["HISTORY_NAME", "PREPARE_WINDOWS", "TrainResult", "prepare_method", "train"]
