"""Loss terms of the recurrent VAE over fMRI volumes, each reported separately.

For ``N`` frames (all time steps of all sequences of a batch, flattened), volumes
``x_n`` and reconstructions ``x̂_n`` over the voxels ``M`` inside the brain mask
(every voxel without a mask), posterior ``N(μ_n, diag σ²_n)`` with sample ``h_n``,
previous state ``h'_n`` and prior mean ``m_n = F h'_n``::

    reconstruction  R = (1/N) Σ_n ½ Σ_{v∈M} (x_nv − x̂_nv)² / σ_x²
    temporal        P = (1/N) Σ_n ½ ‖h_n − m_n‖² / σ_h²
    KL (option)     K = (1/N) Σ_n Σ_d ½ [ (σ²_nd + (μ_nd − m_nd)²) / σ_h² − 1 − log σ²_nd + log σ_h² ]
    z-sparsity      Z = λ_z Σ |z|
    F penalty       ρ ‖F‖²_F                       reported only: F is solved in closed form
    loss            R + P + Z    (R + K + Z with the KL option)

``R`` and ``P`` are the reference's ``loss1`` and ``loss2`` (Zhou et al., RecVAE package
behind the seed, ``RecVAELoss``: sums divided by ``2 · B · T``); ``P`` is the MAP
proxy of the temporal prior, ``K`` the closed-form KL between the posterior and the
transition prior ``N(F h_{t-1}, σ_h² I)`` that a proper ELBO has (Kingma & Welling,
ICLR 2014, appendix B; Chung et al., "A Recurrent Latent Variable Model for Sequential
Data", NeurIPS 2015). With ``voxel_reduction="mean"`` the voxel sum in ``R`` becomes a
mean over ``M``, which makes the figure comparable across grids and masks.

A reconstruction is only worth its distance to the trivial one:
:func:`window_mean_reconstruction` scores every frame of a window reconstructed by the
window's mean frame (each voxel by its mean over the window's frames), in the units of ``R``
— what a model that learned no frame-to-frame change scores.

Learned noise scales (:class:`NoiseScales` with ``learned=True``) keep ``log σ²`` as
parameters; ``R`` and ``P`` then gain the Gaussian log-normaliser ``½ D log σ²`` per
frame (``D`` = voxels counted per frame, or ``L``), without which the scales would grow
without bound. With fixed scales this term is a constant and is left out, so the
seed's numbers are reproduced.

Example
-------
>>> import torch
>>> from workbench.losses.recvae import NoiseScales, recvae_loss
>>> x, x_hat = torch.randn(6, 1, 4, 5, 3), torch.randn(6, 1, 4, 5, 3)
>>> mu, log_var, h_prev = torch.randn(6, 10), torch.zeros(6, 10), torch.randn(6, 10)
>>> F = torch.eye(10)
>>> terms = recvae_loss(x, x_hat, mu, mu, log_var, h_prev @ F.T, torch.zeros(2, 10), F, noise=NoiseScales())
>>> sorted(terms)
['F_penalty', 'loss', 'reconstruction', 'temporal', 'z_sparsity']
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from workbench.errors import ConfigError, DataError

VoxelReduction = Literal["sum", "mean"]
TemporalTerm = Literal["mse", "kl"]


def _loss_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """At least float32 (sums over ~10⁶ voxels in bf16 would lose the loss)."""
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _as_var(noise_var: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    var = torch.as_tensor(noise_var, device=like.device, dtype=like.dtype)
    if not isinstance(noise_var, torch.Tensor) and noise_var <= 0:
        raise ConfigError(f"recvae noise variances must be > 0, got {noise_var}")
    return var


def reconstruction_loss(
    x: torch.Tensor,
    x_hat: torch.Tensor,
    noise_var: float | torch.Tensor = 1.0,
    mask: torch.Tensor | None = None,
    voxel_reduction: VoxelReduction = "sum",
    log_normalizer: bool = False,
) -> torch.Tensor:
    """Reconstruction term ``R`` (see the module docstring).

    Parameters
    ----------
    x, x_hat : torch.Tensor
        ``(N, *V)`` frames and their reconstructions (for volumes ``V = (1, X, Y, Z)``).
    noise_var : float or torch.Tensor
        ``σ_x²`` (a 0-d tensor when learned).
    mask : torch.Tensor, optional
        Boolean mask broadcastable to ``V``; voxels outside it cost nothing, even if
        ``x`` holds NaN there.
    voxel_reduction : {"sum", "mean"}
        Sum over the counted voxels (the reference) or their mean.
    log_normalizer : bool
        Add ``½ D log σ_x²`` (``D`` voxels counted, 1 with ``"mean"``); for learned scales.

    Returns
    -------
    torch.Tensor
        0-d loss, float32 (or float64 for float64 inputs).
    """
    if x.shape != x_hat.shape or x.ndim < 2:
        raise DataError(
            f"reconstruction needs frames and reconstructions of one shape (N, ...), got {tuple(x.shape)} "
            f"and {tuple(x_hat.shape)}"
        )
    if voxel_reduction not in ("sum", "mean"):
        raise ConfigError(f"recvae voxel_reduction must be 'sum' or 'mean', got {voxel_reduction!r}")
    dtype = _loss_dtype(x, x_hat)
    n_frames = x.shape[0]
    if mask is None:
        # fused: no residual volume is materialised (the 3-D outputs dominate memory)
        total = nn.functional.mse_loss(x_hat.to(dtype), x.to(dtype), reduction="sum")
        n_voxels: torch.Tensor | int = math.prod(x.shape[1:])
    else:
        if mask.dtype != torch.bool:
            raise ConfigError(f"recvae brain mask must be boolean, got dtype {mask.dtype}")
        try:
            full_mask = mask.to(x.device).expand(x.shape[1:])
        except RuntimeError as err:
            raise DataError(f"brain mask of shape {tuple(mask.shape)} does not fit frames {tuple(x.shape)}") from err
        # mask the residual before squaring, so NaN/inf outside the mask get neither loss nor gradient
        zero = torch.zeros((), device=x.device, dtype=dtype)
        total = torch.where(full_mask, x.to(dtype) - x_hat.to(dtype), zero).square().sum()
        n_voxels = full_mask.sum()
    frame_mean = total / n_frames  # mean over frames of the per-frame voxel sum
    counted = n_voxels
    if voxel_reduction == "mean":
        frame_mean = frame_mean / n_voxels
        counted = 1
    var = _as_var(noise_var, frame_mean)
    loss = 0.5 * frame_mean / var
    if log_normalizer:
        loss = loss + 0.5 * counted * torch.log(var)
    return loss


def window_mean_reconstruction(
    windows: torch.Tensor,
    noise_var: float | torch.Tensor = 1.0,
    voxel_reduction: VoxelReduction = "sum",
    log_normalizer: bool = False,
) -> torch.Tensor:
    """``R`` of reconstructing every frame of a window by the window's mean frame (the trivial floor).

    Parameters
    ----------
    windows : torch.Tensor
        ``(B, T, V)`` windows of ``T`` frames of ``V`` voxels (in-mask frames, as the family trains on).
    noise_var, voxel_reduction, log_normalizer
        As in :func:`reconstruction_loss`, so the floor is in the units of the family's ``R``.

    Returns
    -------
    torch.Tensor
        0-d, float32 (float64 for float64 windows).
    """
    if windows.ndim != 3:
        raise DataError(f"the window-mean reconstruction needs (B, T, V) windows, got shape {tuple(windows.shape)}")
    mean = windows.to(_loss_dtype(windows)).mean(dim=1, keepdim=True).expand_as(windows)
    return reconstruction_loss(
        windows.flatten(0, 1), mean.flatten(0, 1), noise_var, None, voxel_reduction, log_normalizer=log_normalizer
    )


def temporal_loss(
    h: torch.Tensor, prior_mean: torch.Tensor, noise_var: float | torch.Tensor = 1.0, log_normalizer: bool = False
) -> torch.Tensor:
    """Temporal term ``P = (1/N) Σ_n ½ ‖h_n − F h'_n‖² / σ_h²`` (the seed's MSE proxy).

    Parameters
    ----------
    h, prior_mean : torch.Tensor
        ``(N, L)`` states and transition prior means ``g(h_{t-1}) = h_{t-1} Fᵀ``.
    noise_var : float or torch.Tensor
        ``σ_h²``.
    log_normalizer : bool
        Add ``½ L log σ_h²`` (for learned scales).
    """
    _check_latents(h, prior_mean)
    dtype = _loss_dtype(h, prior_mean)
    per_frame = (h.to(dtype) - prior_mean.to(dtype)).square().sum(-1)
    var = _as_var(noise_var, per_frame)
    loss = 0.5 * per_frame.mean() / var
    if log_normalizer:
        loss = loss + 0.5 * h.shape[-1] * torch.log(var)
    return loss


def transition_kl(
    mu: torch.Tensor, log_var: torch.Tensor, prior_mean: torch.Tensor, noise_var: float | torch.Tensor = 1.0
) -> torch.Tensor:
    """KL term ``K``: mean over frames of ``KL(N(μ, diag σ²) ‖ N(F h', σ_h² I))``.

    Parameters
    ----------
    mu, log_var : torch.Tensor
        ``(N, L)`` posterior means and log-variances.
    prior_mean : torch.Tensor
        ``(N, L)`` transition prior means.
    noise_var : float or torch.Tensor
        Prior variance ``σ_h²``.
    """
    _check_latents(mu, log_var)
    _check_latents(mu, prior_mean)
    dtype = _loss_dtype(mu, log_var, prior_mean)
    mu, log_var, prior_mean = mu.to(dtype), log_var.to(dtype), prior_mean.to(dtype)
    var = _as_var(noise_var, mu)
    per_dim = 0.5 * ((log_var.exp() + (mu - prior_mean).square()) / var - 1 - log_var + torch.log(var))
    return per_dim.sum(-1).mean()


def subject_sparsity(z: torch.Tensor, lambda_z: float = 10.0) -> torch.Tensor:
    """``Z = λ_z Σ |z|`` over every entry of ``z`` (the reference penalises the whole table)."""
    if lambda_z < 0:
        raise ConfigError(f"recvae lambda_z must be >= 0, got lambda_z={lambda_z}")
    return lambda_z * z.to(_loss_dtype(z)).abs().sum()


def transition_penalty(transition: torch.Tensor, rho: float = 0.1) -> torch.Tensor:
    """``ρ ‖F‖²_F``, detached: reported, never optimised (``F`` is solved in closed form)."""
    return rho * transition.detach().to(_loss_dtype(transition)).square().sum()


def _check_latents(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.ndim != 2 or a.shape != b.shape:
        raise DataError(
            f"recvae latent terms need two (N, L) tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )


class NoiseScales(nn.Module):
    """Observation and transition noise scales ``σ_x``, ``σ_h``, fixed or learned.

    Stored as ``log σ²`` (a parameter when learned, a buffer otherwise, so both travel
    in checkpoints). The seed fixes ``σ_x = σ_h = 1``.

    Parameters
    ----------
    sigma_x, sigma_h : float
        Initial (or fixed) standard deviations, > 0.
    learned : bool
        Learn ``log σ_x²`` and ``log σ_h²`` by gradient descent.
    """

    def __init__(self, sigma_x: float = 1.0, sigma_h: float = 1.0, learned: bool = False) -> None:
        super().__init__()
        if sigma_x <= 0 or sigma_h <= 0:
            raise ConfigError(f"recvae noise scales must be > 0, got sigma_x={sigma_x}, sigma_h={sigma_h}")
        self.learned = learned
        for name, sigma in (("log_var_x", sigma_x), ("log_var_h", sigma_h)):
            value = torch.tensor(2 * math.log(sigma))
            if learned:
                self.register_parameter(name, nn.Parameter(value))
            else:
                self.register_buffer(name, value)

    @property
    def var_x(self) -> torch.Tensor:
        """``σ_x²`` (0-d)."""
        return self.log_var_x.exp()

    @property
    def var_h(self) -> torch.Tensor:
        """``σ_h²`` (0-d)."""
        return self.log_var_h.exp()


def recvae_loss(
    x: torch.Tensor,
    x_hat: torch.Tensor,
    h: torch.Tensor,
    mu: torch.Tensor,
    log_var: torch.Tensor,
    prior_mean: torch.Tensor,
    subject_noise: torch.Tensor,
    transition: torch.Tensor,
    *,
    noise: NoiseScales,
    lambda_z: float = 10.0,
    rho: float = 0.1,
    temporal: TemporalTerm = "mse",
    mask: torch.Tensor | None = None,
    voxel_reduction: VoxelReduction = "sum",
) -> dict[str, torch.Tensor]:
    """All terms and their sum.

    Parameters
    ----------
    x, x_hat : torch.Tensor
        ``(N, *V)`` frames and reconstructions.
    h, mu, log_var, prior_mean : torch.Tensor
        ``(N, L)`` sampled states, posterior means and log-variances, prior means ``F h'``.
    subject_noise : torch.Tensor
        The subject vectors to penalise (the reference: the whole ``(N_subjects, L)`` table).
    transition : torch.Tensor
        ``(L, L)`` matrix ``F``, for the reported penalty.
    noise : NoiseScales
        ``σ_x``, ``σ_h``; learned scales add the log-normalisers.
    lambda_z, rho : float
        Weights of the z-sparsity and of the reported F penalty.
    temporal : {"mse", "kl"}
        The seed's MSE proxy ``P`` or the KL term ``K``.
    mask, voxel_reduction
        See :func:`reconstruction_loss`.

    Returns
    -------
    dict of str to torch.Tensor
        ``"loss"`` (with gradient), and detached ``"reconstruction"``, ``"temporal"`` or
        ``"kl"``, ``"z_sparsity"``, ``"F_penalty"``; with learned scales also
        ``"sigma_x"`` and ``"sigma_h"``.
    """
    if temporal not in ("mse", "kl"):
        raise ConfigError(f"recvae temporal term must be 'mse' or 'kl', got temporal={temporal!r}")
    recon = reconstruction_loss(x, x_hat, noise.var_x, mask, voxel_reduction, log_normalizer=noise.learned)
    if temporal == "mse":
        name, prior = "temporal", temporal_loss(h, prior_mean, noise.var_h, log_normalizer=noise.learned)
    else:
        name, prior = "kl", transition_kl(mu, log_var, prior_mean, noise.var_h)
    sparsity = subject_sparsity(subject_noise, lambda_z)
    terms = {
        "loss": recon + prior + sparsity,
        "reconstruction": recon.detach(),
        name: prior.detach(),
        "z_sparsity": sparsity.detach(),
        "F_penalty": transition_penalty(transition, rho),
    }
    if noise.learned:
        terms["sigma_x"] = noise.var_x.detach().sqrt()
        terms["sigma_h"] = noise.var_h.detach().sqrt()
    return terms
