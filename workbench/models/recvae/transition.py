"""Linear latent transition ``g(h) = h Fᵀ``, re-solved in closed form by ridge regression.

``F`` is not trained by gradient descent. Over an epoch the posterior paths are
collected as pairs ``(h_{t-1}, h_t)`` — with ``h_0`` prepended to every sequence and
pairs taken only within a sequence, never across the end of one and the start of the
next — and summarised by the sufficient statistics::

    A = Hᵀ H      = Σ h_{t-1} h_{t-1}ᵀ        (L, L)
    B = Hᵀ H'     = Σ h_{t-1} h_tᵀ            (L, L)

where the rows of ``H`` are the previous states and those of ``H'`` the next ones.
At the end of the epoch ``F`` solves the ridge normal equations exactly as the reference
(Zhou et al., RecVAE package behind the seed, ``RecVAEModel.updating_F``) does::

    (A + 2 σ_h² ρ I) Fᵀ = B

the MAP estimate under the temporal term ``‖h_t − F h_{t-1}‖² / (2σ_h²)`` and a
Gaussian prior of precision ``ρ`` on ``F``.

The statistics are sums, so statistics of disjoint parts of the data add up to those
of the whole: under ``torch.distributed`` an ``all_reduce`` (sum) of ``A``, ``B`` and
the pair count before the solve gives every rank the same ``F``
(:func:`all_reduce_sum`, the default ``reduce`` of :meth:`LinearTransition.solve`).

Statistics are stored in float32 buffers (so they survive a resume and move to any
device, MPS included, which has no float64); each batch's contribution is computed and
the system solved in float64 wherever the device supports it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple

import torch
import torch.distributed as dist
from torch import nn

from workbench.errors import ConfigError, DataError


class TransitionStatistics(NamedTuple):
    """Sufficient statistics of the ridge regression ``h_t ≈ F h_{t-1}``."""

    hth: torch.Tensor
    """``Hᵀ H`` ``(L, L)``: Σ over pairs of ``h_{t-1} h_{t-1}ᵀ``."""
    hth_next: torch.Tensor
    """``Hᵀ H'`` ``(L, L)``: Σ over pairs of ``h_{t-1} h_tᵀ``."""
    n_pairs: torch.Tensor
    """Number of pairs (0-d)."""


def _exact_dtype(device: torch.device) -> torch.dtype:
    """float64 where the device has it (not MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def transition_statistics(path: torch.Tensor, h0: torch.Tensor) -> TransitionStatistics:
    """Sufficient statistics of one batch of posterior paths.

    Parameters
    ----------
    path : torch.Tensor
        ``(S, T, L)`` states ``h_1 .. h_T`` of ``S`` independent sequences.
    h0 : torch.Tensor
        ``(L,)`` initial state shared by all sequences, or ``(S, L)``.

    Returns
    -------
    TransitionStatistics
        ``Hᵀ H`` and ``Hᵀ H'`` over the ``S · T`` pairs ``(h_{t-1}, h_t)``, computed in
        float64 (float32 on MPS), and the pair count.
    """
    if path.ndim != 3:
        raise DataError(f"transition statistics need paths of shape (S, T, L), got {tuple(path.shape)}")
    n_seq, _, dim = path.shape
    dtype = _exact_dtype(path.device)
    with torch.autocast(path.device.type, enabled=False):
        nxt = path.detach().to(dtype)
        start = h0.detach().to(device=path.device, dtype=dtype).expand(n_seq, dim).unsqueeze(1)
        prev = torch.cat([start, nxt[:, :-1]], dim=1)  # shifted within each sequence only
        prev, nxt = prev.reshape(-1, dim), nxt.reshape(-1, dim)
        return TransitionStatistics(
            prev.T @ prev, prev.T @ nxt, torch.tensor(float(prev.shape[0]), device=path.device, dtype=dtype)
        )


def ridge_transition(
    hth: torch.Tensor, hth_next: torch.Tensor, sigma_h: float | torch.Tensor = 1.0, rho: float = 0.1
) -> torch.Tensor:
    """Solve ``(Hᵀ H + 2 σ_h² ρ I) Fᵀ = Hᵀ H'`` for ``F``.

    Parameters
    ----------
    hth, hth_next : torch.Tensor
        ``(L, L)`` sufficient statistics.
    sigma_h : float or torch.Tensor
        Transition noise scale ``σ_h`` (a 0-d tensor when learned; used without gradient).
    rho : float
        Ridge precision ``ρ >= 0``.

    Returns
    -------
    torch.Tensor
        ``(L, L)`` matrix ``F`` in the dtype of ``hth``.

    Raises
    ------
    ConfigError
        If ``rho < 0`` or the system is singular (``rho = 0`` with a rank-deficient path).
    """
    if rho < 0:
        raise ConfigError(f"recvae rho (ridge precision on F) must be >= 0, got rho={rho}")
    dim = hth.shape[0]
    dtype = _exact_dtype(hth.device)
    if isinstance(sigma_h, torch.Tensor):
        var_h = sigma_h.detach().to(device=hth.device, dtype=dtype) ** 2
    else:
        var_h = torch.tensor(float(sigma_h), device=hth.device, dtype=dtype) ** 2
    with torch.autocast(hth.device.type, enabled=False):
        lhs = hth.to(dtype) + 2 * var_h * rho * torch.eye(dim, device=hth.device, dtype=dtype)
        f_t, info = torch.linalg.solve_ex(lhs, hth_next.to(dtype))
    if int(info) != 0 or not bool(torch.isfinite(f_t).all()):
        raise ConfigError(
            f"the ridge system for F is singular (rho={rho}); set rho > 0 or feed longer, non-degenerate paths"
        )
    return f_t.T.to(hth.dtype)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` in place over all ranks when ``torch.distributed`` is initialised; else leave it."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


class LinearTransition(nn.Module):
    """The transition ``g(h) = h Fᵀ`` with ``F`` a buffer solved by ridge regression.

    Parameters
    ----------
    latent_dim : int
        State width ``L``.
    rho : float
        Ridge precision ``ρ`` (0.1 in the reference).
    init : {"uniform", "identity"}
        Initial ``F``: entries uniform in [0, 1) from torch's global RNG (the reference's
        ``torch.rand``) or the identity (a random walk prior until the first solve).

    Buffers
    -------
    F : ``(L, L)``; hth, hth_next : ``(L, L)`` and n_pairs : ``()`` — the statistics
    accumulated since the last solve (float32, summed in float64 per batch).
    """

    def __init__(self, latent_dim: int = 10, rho: float = 0.1, init: Literal["uniform", "identity"] = "uniform"):
        super().__init__()
        if latent_dim < 1:
            raise ConfigError(f"recvae latent_dim must be >= 1, got {latent_dim}")
        if rho < 0:
            raise ConfigError(f"recvae rho (ridge precision on F) must be >= 0, got rho={rho}")
        if init not in ("uniform", "identity"):
            raise ConfigError(f"recvae transition init must be 'uniform' or 'identity', got init={init!r}")
        self.rho = float(rho)
        start = torch.rand(latent_dim, latent_dim) if init == "uniform" else torch.eye(latent_dim)
        self.register_buffer("F", start)
        self.register_buffer("hth", torch.zeros(latent_dim, latent_dim))
        self.register_buffer("hth_next", torch.zeros(latent_dim, latent_dim))
        self.register_buffer("n_pairs", torch.zeros(()))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Prior mean ``g(h) = h Fᵀ`` for states ``(..., L)``, in ``h``'s dtype."""
        return h @ self.F.T.to(h.dtype)

    def statistics(self) -> TransitionStatistics:
        """The statistics accumulated since the last solve (views of the buffers)."""
        return TransitionStatistics(self.hth, self.hth_next, self.n_pairs)

    @torch.no_grad()
    def accumulate(self, path: torch.Tensor, h0: torch.Tensor) -> None:
        """Add the pairs of ``S`` posterior paths ``(S, T, L)`` started from ``h0`` (:func:`transition_statistics`)."""
        stats = transition_statistics(path, h0)
        for buffer, value in zip(self.statistics(), stats, strict=True):
            buffer += value.to(device=buffer.device, dtype=buffer.dtype)

    @torch.no_grad()
    def reset_statistics(self) -> None:
        """Forget the accumulated pairs (done by :meth:`solve`)."""
        for buffer in self.statistics():
            buffer.zero_()

    @torch.no_grad()
    def solve(
        self,
        sigma_h: float | torch.Tensor = 1.0,
        reduce: Callable[[torch.Tensor], torch.Tensor] | None = all_reduce_sum,
    ) -> bool:
        """Re-solve ``F`` from the accumulated statistics, then reset them.

        Parameters
        ----------
        sigma_h : float or torch.Tensor
            Transition noise scale ``σ_h``.
        reduce : callable, optional
            Applied in place to each statistic before the solve; the default sums them over
            the ranks of an initialised ``torch.distributed`` group (a no-op otherwise), so
            every rank solves the same system. ``None`` keeps the local statistics.

        Returns
        -------
        bool
            ``True`` when ``F`` was updated; ``False`` when no pair was accumulated (on any
            rank), in which case ``F`` keeps its value.
        """
        if reduce is not None:
            for buffer in self.statistics():
                reduce(buffer)
        updated = float(self.n_pairs) > 0
        if updated:
            self.F.copy_(ridge_transition(self.hth, self.hth_next, sigma_h, self.rho))
        self.reset_statistics()
        return updated
