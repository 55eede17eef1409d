"""Data-parallel training across processes started by ``torchrun`` (PyTorch's distributed engine).

``torchrun --nproc_per_node N -m workbench.cli train ...`` starts ``N`` copies of the same run;
torchrun sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` and
:func:`current` joins the process group from them (gloo on the CPU, NCCL on CUDA, each rank on
``cuda:LOCAL_RANK``). Several machines are torchrun's rendezvous
(``--nnodes``, ``--rdzv-backend c10d``, ``--rdzv-endpoint host:port``); nothing here changes.

What data parallelism means for the engine (the scheme of ``DistributedDataParallel``, Li et al.
2020, "PyTorch Distributed", VLDB):

* every rank draws the same epoch batches (a pure function of ``(seed, epoch)``, so the
  families' batch samplers stay) and trains on its contiguous slice of each (:meth:`Distributed.shard`);
* after the backward passes the gradients are averaged over the ranks in one all-reduce
  (:meth:`Distributed.average_gradients`) before clipping and the optimiser step, so every rank
  takes the same step and the weights stay bit-identical; BatchNorm running statistics are
  broadcast from rank 0 after each step, as ``DistributedDataParallel(broadcast_buffers=True)``
  does;
* state the families update outside the optimiser stays identical by construction: the EMA
  target of ``jepa`` and the phase counters of ``lfr`` are deterministic functions of identical
  weights and steps, and ``recvae`` sums its transition statistics over the ranks before each
  closed-form solve of ``F``;
* rank 0 alone logs, shows progress and writes checkpoints; the others wait at a barrier.

A single process (no torchrun) is the world of one: every call here is then a no-op.
"""

from __future__ import annotations

import atexit
import hashlib
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import distributed as dist
from torch import nn

from workbench.errors import ConfigError

ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Distributed:
    """This process's place in the data-parallel world (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, indices: list[int]) -> list[int]:
        """This rank's contiguous slice of one batch (a P×K batch keeps its subjects together).

        Raises
        ------
        ConfigError
            If the batch has fewer windows than there are ranks.
        """
        if not self.active:
            return indices
        if len(indices) < self.world_size:
            raise ConfigError(
                f"a batch of {len(indices)} windows cannot be shared by {self.world_size} processes; "
                f"raise batch_size to at least {self.world_size} or start fewer processes"
            )
        bounds = [len(indices) * r // self.world_size for r in range(self.world_size + 1)]
        return indices[bounds[self.rank] : bounds[self.rank + 1]]

    def average_gradients(self, parameters: list[nn.Parameter]) -> None:
        """Average the gradients over the ranks in one flat all-reduce.

        A parameter without a gradient on some rank counts as zero there; one without a
        gradient on every rank keeps ``grad=None`` (the optimiser skips it, as in one process).
        """
        if not self.active:
            return
        params = [p for p in parameters if p.requires_grad]
        if not params:
            return
        device = params[0].device
        has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
        dist.all_reduce(has_grad, op=dist.ReduceOp.MAX)
        synced = [p for p, flag in zip(params, has_grad.tolist(), strict=True) if flag]
        for p in synced:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        if not synced:
            return
        flat = torch.cat([p.grad.reshape(-1) for p in synced])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world_size
        offset = 0
        for p in synced:
            p.grad.copy_(flat[offset : offset + p.numel()].view_as(p.grad))
            offset += p.numel()

    def mean(self, values: dict[str, float], device: torch.device) -> dict[str, float]:
        """The mean of every logged scalar over the ranks (the same keys on every rank)."""
        if not self.active or not values:
            return values
        keys = sorted(values)
        tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return dict(zip(keys, (tensor / self.world_size).tolist(), strict=True))

    def any(self, flag: bool, device: torch.device) -> bool:
        """``True`` on every rank when ``flag`` is true on at least one."""
        if not self.active:
            return flag
        tensor = torch.tensor([float(flag)], device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())

    def broadcast_module(self, module: nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every rank (the start of every run)."""
        if self.active:
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0)

    def broadcast_norm_statistics(self, module: nn.Module) -> None:
        """Copy rank 0's BatchNorm running statistics to every rank (DDP's ``broadcast_buffers``)."""
        if self.active:
            for norm in module.modules():
                if isinstance(norm, nn.modules.batchnorm._BatchNorm) and norm.track_running_stats:
                    for tensor in (norm.running_mean, norm.running_var, norm.num_batches_tracked):
                        if tensor is not None:
                            dist.broadcast(tensor, src=0)

    def broadcast_object(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (e.g. a checkpoint only rank 0 can read)."""
        if not self.active:
            return value
        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def check_identical(self, module: nn.Module) -> str:
        """The sha256 of the module's state; raises if any rank holds other weights.

        Raises
        ------
        RuntimeError
            If the ranks diverged (a bug: a family updated state differently per rank).
        """
        digest = state_digest(module)
        if self.active:
            digests: list[str | None] = [None] * self.world_size
            dist.all_gather_object(digests, digest)
            if len(set(digests)) != 1:
                raise RuntimeError(f"the {self.world_size} training processes ended with different weights: {digests}")
        return digest


def state_digest(module: nn.Module) -> str:
    """sha256 over the names, dtypes and bytes of every parameter and buffer (in state_dict order)."""
    sha = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        sha.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        sha.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()


def launched_by_torchrun() -> bool:
    """Whether torchrun (or another launcher) set the environment of a world larger than one."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def current(device: str = "auto") -> Distributed:
    """This process's :class:`Distributed`; joins the process group from torchrun's variables.

    A world of one (no torchrun) needs nothing. Under torchrun the group is created once per
    process (NCCL when ``device`` may use CUDA and a GPU is visible, gloo otherwise) and destroyed
    at exit; a group the caller created already is used as it is.

    Raises
    ------
    ConfigError
        If ``WORLD_SIZE`` > 1 but the other variables torchrun sets are missing.
    """
    if dist.is_available() and dist.is_initialized():
        return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if not launched_by_torchrun():
        return Distributed()
    missing = [key for key in ENV_KEYS if key not in os.environ]
    if missing:
        raise ConfigError(
            f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {missing} are not set; start the run with "
            "torchrun --nproc_per_node N -m workbench.cli train ..."
        )
    local_rank = int(os.environ["LOCAL_RANK"])
    use_cuda = device != "cpu" and not device.startswith("mps") and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if use_cuda else "gloo")
    atexit.register(_destroy)
    return Distributed(dist.get_rank(), dist.get_world_size(), local_rank)


def rank_device(device: torch.device, distributed: Distributed) -> torch.device:
    """``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun; other devices stay."""
    if distributed.active and device.type == "cuda":
        return torch.device("cuda", distributed.local_rank)
    return device


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


__all__ = ["Distributed", "current", "launched_by_torchrun", "rank_device", "state_digest"]
