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

**Intercept (option).** The reference's ``g(h) = h Fᵀ`` has none, so a posterior path whose
mean is not zero — nothing fixes it: the decoder's bias absorbs any constant offset of
``h`` — can only be followed with an eigenvalue of ``F`` near 1 along the offset, which also
distorts the others. With ``bias=True`` the prior mean is ``g(h) = h Fᵀ + b`` and ``[Fᵀ; bᵀ]``
solves the ridge equations of the augmented regressors ``[h_{t-1}, 1]``, the intercept
unpenalised::

    [ A + 2σ_h²ρI   s ] [Fᵀ]   [ B  ]        s  = Σ h_{t-1}   (L,)
    [ sᵀ            n ] [bᵀ] = [ s'ᵀ ]       s' = Σ h_t       (L,),  n pairs

which equals the ridge regression of the centred pairs; the dynamics are those of ``F``
around the fixed point ``(I − F)⁻¹ b``.

The statistics are sums, so statistics of disjoint parts of the data add up to those
of the whole: under ``torch.distributed`` an ``all_reduce`` (sum) of ``A``, ``B``, the
state sums and the pair count before the solve gives every rank the same ``F``
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
    sum_prev: torch.Tensor
    """``(L,)`` Σ over pairs of ``h_{t-1}`` (for the intercept)."""
    sum_next: torch.Tensor
    """``(L,)`` Σ over pairs of ``h_t`` (for the intercept)."""


def _exact_dtype(device: torch.device) -> torch.dtype:
    """float64 where the device has it (not MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def transition_statistics(path: torch.Tensor, h0: torch.Tensor | None) -> TransitionStatistics:
    """Sufficient statistics of one batch of posterior paths.

    Parameters
    ----------
    path : torch.Tensor
        ``(S, T, L)`` states ``h_1 .. h_T`` of ``S`` independent sequences.
    h0 : torch.Tensor or None
        ``(L,)`` initial state shared by all sequences, or ``(S, L)``, prepended to every
        sequence (the reference); ``None`` takes the ``T − 1`` pairs within each sequence only.

    Returns
    -------
    TransitionStatistics
        ``Hᵀ H`` and ``Hᵀ H'`` over the pairs ``(h_{t-1}, h_t)`` (``S · T`` of them with ``h0``),
        the pair count and the sums of the previous and next states, computed in float64
        (float32 on MPS).
    """
    if path.ndim != 3:
        raise DataError(f"transition statistics need paths of shape (S, T, L), got {tuple(path.shape)}")
    n_seq, _, dim = path.shape
    dtype = _exact_dtype(path.device)
    with torch.autocast(path.device.type, enabled=False):
        nxt = path.detach().to(dtype)
        if h0 is None:
            prev, nxt = nxt[:, :-1], nxt[:, 1:]
        else:
            start = h0.detach().to(device=path.device, dtype=dtype).expand(n_seq, dim).unsqueeze(1)
            prev = torch.cat([start, nxt[:, :-1]], dim=1)  # shifted within each sequence only
        prev, nxt = prev.reshape(-1, dim), nxt.reshape(-1, dim)
        count = torch.tensor(float(prev.shape[0]), device=path.device, dtype=dtype)
        return TransitionStatistics(prev.T @ prev, prev.T @ nxt, count, prev.sum(0), nxt.sum(0))


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


def ridge_transition_with_bias(
    stats: TransitionStatistics, sigma_h: float | torch.Tensor = 1.0, rho: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve the augmented ridge equations (module docstring) for ``F`` ``(L, L)`` and ``b`` ``(L,)``.

    Raises
    ------
    ConfigError
        If ``rho < 0`` or the system is singular (no pair, or ``rho = 0`` with a degenerate path).
    """
    if rho < 0:
        raise ConfigError(f"recvae rho (ridge precision on F) must be >= 0, got rho={rho}")
    dim = stats.hth.shape[0]
    device, dtype = stats.hth.device, _exact_dtype(stats.hth.device)
    var_h = torch.as_tensor(sigma_h, device=device).detach().to(dtype) ** 2
    with torch.autocast(device.type, enabled=False):
        lhs = torch.zeros(dim + 1, dim + 1, device=device, dtype=dtype)
        lhs[:dim, :dim] = stats.hth.to(dtype) + 2 * var_h * rho * torch.eye(dim, device=device, dtype=dtype)
        lhs[:dim, dim] = lhs[dim, :dim] = stats.sum_prev.to(dtype)
        lhs[dim, dim] = stats.n_pairs.to(dtype)
        rhs = torch.cat([stats.hth_next.to(dtype), stats.sum_next.to(dtype).unsqueeze(0)])
        solution, info = torch.linalg.solve_ex(lhs, rhs)
    if int(info) != 0 or not bool(torch.isfinite(solution).all()):
        raise ConfigError(
            f"the ridge system for F and its intercept is singular (rho={rho}); set rho > 0 or feed longer, "
            "non-degenerate paths"
        )
    return solution[:dim].T.to(stats.hth.dtype), solution[dim].to(stats.hth.dtype)


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
    bias : bool
        Solve an unpenalised intercept ``b`` with ``F``: ``g(h) = h Fᵀ + b`` (the reference
        has none; ``b`` then stays 0).

    Buffers
    -------
    F : ``(L, L)``; b : ``(L,)``; hth, hth_next : ``(L, L)``, n_pairs : ``()``, sum_prev,
    sum_next : ``(L,)`` — the statistics accumulated since the last solve (float32, summed in
    float64 per batch).
    """

    def __init__(
        self,
        latent_dim: int = 10,
        rho: float = 0.1,
        init: Literal["uniform", "identity"] = "uniform",
        bias: bool = False,
    ):
        super().__init__()
        if latent_dim < 1:
            raise ConfigError(f"recvae latent_dim must be >= 1, got {latent_dim}")
        if rho < 0:
            raise ConfigError(f"recvae rho (ridge precision on F) must be >= 0, got rho={rho}")
        if init not in ("uniform", "identity"):
            raise ConfigError(f"recvae transition init must be 'uniform' or 'identity', got init={init!r}")
        self.rho, self.bias = float(rho), bool(bias)
        start = torch.rand(latent_dim, latent_dim) if init == "uniform" else torch.eye(latent_dim)
        self.register_buffer("F", start)
        self.register_buffer("b", torch.zeros(latent_dim))
        self.register_buffer("hth", torch.zeros(latent_dim, latent_dim))
        self.register_buffer("hth_next", torch.zeros(latent_dim, latent_dim))
        self.register_buffer("n_pairs", torch.zeros(()))
        self.register_buffer("sum_prev", torch.zeros(latent_dim))
        self.register_buffer("sum_next", torch.zeros(latent_dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Prior mean ``g(h) = h Fᵀ + b`` for states ``(..., L)``, in ``h``'s dtype (``b = 0`` without bias)."""
        return h @ self.F.T.to(h.dtype) + self.b.to(h.dtype)

    def statistics(self) -> TransitionStatistics:
        """The statistics accumulated since the last solve (views of the buffers)."""
        return TransitionStatistics(self.hth, self.hth_next, self.n_pairs, self.sum_prev, self.sum_next)

    @torch.no_grad()
    def accumulate(self, path: torch.Tensor, h0: torch.Tensor | None) -> None:
        """Add the pairs of ``S`` paths ``(S, T, L)``, from ``h0`` or within each (:func:`transition_statistics`)."""
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
        """Re-solve ``F`` (and ``b`` with ``bias``) from the accumulated statistics, then reset them.

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
        if updated and self.bias:
            transition, intercept = ridge_transition_with_bias(self.statistics(), sigma_h, self.rho)
            self.F.copy_(transition)
            self.b.copy_(intercept)
        elif updated:
            self.F.copy_(ridge_transition(self.hth, self.hth_next, sigma_h, self.rho))
        self.reset_statistics()
        return updated
