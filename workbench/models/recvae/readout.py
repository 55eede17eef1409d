"""What a trained ``recvae`` says about runs: latent paths, reconstructions, held-out subject vectors.

Held-out runs and subjects have no row in the table ``z_s`` of the training subjects. Two
choices, both used with the network in eval mode (BatchNorm on its running statistics) and the
posterior means ``μ_t`` (no sampling):

* ``z_s = 0`` — the population decoder; this is all an embedding ever needs, since the
  posterior (and so :meth:`RecVAE.embed <workbench.models.recvae.family.RecVAE.embed>`) does
  not depend on ``z_s``;
* **fitted** (:func:`fit_subject_noise`) — a new row ``z`` minimising the training objective
  restricted to it, ``R(x, Dec(μ + z)) + λ_z ‖z‖₁``, over the given windows, with every weight
  of the network frozen (Adam on ``z`` alone). Fit it on one part of a held-out run and measure
  on another (:func:`reconstruction_mse` on the second half, say), so the ``L`` fitted numbers
  never see the frames they are scored on.

:func:`reconstruction_mse` is the mean over windows, frames and in-mask voxels of
``(x − x̂)²`` in the units of the frames given to it (the engine's window scaling, when it is
``"global"`` or ``"dataset"``, is undone first; the family's default ``"none"`` leaves the
per-run scaled units of :func:`~workbench.data.volume_runs.prepare_volume_runs`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from workbench.data.normalize import Standardizer
from workbench.data.recording import Recording
from workbench.errors import ConfigError, DataError
from workbench.losses.recvae import reconstruction_loss, subject_sparsity
from workbench.models.recvae.family import RecVAE

_INVERTIBLE = ("none", "global", "dataset")


class RunReadout(NamedTuple):
    """One run read through a trained model as a single sequence from ``h_0 = 0``."""

    mu: np.ndarray
    """``(T, L)`` posterior means ``μ_t``."""
    original: np.ndarray
    """``(T, V)`` the frames, in their units."""
    reconstruction: np.ndarray
    """``(T, V)`` decoded from ``μ_t + z``, in the same units."""


def _device(method: RecVAE) -> torch.device:
    return method.h0.device


def _as_windows(windows: np.ndarray | torch.Tensor, method: RecVAE) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(windows, dtype=np.float32) if isinstance(windows, np.ndarray) else windows)
    if x.ndim == 2:
        x = x.unsqueeze(0)
    if x.ndim != 3:
        raise DataError(f"recvae readout expects windows (B, T, V) or one run (T, V), got shape {tuple(x.shape)}")
    return x.to(device=_device(method), dtype=torch.float32)


def _scaled(windows: np.ndarray, standardizer: Standardizer | None) -> np.ndarray:
    if standardizer is None:
        return np.asarray(windows, dtype=np.float32)
    if standardizer.mode not in _INVERTIBLE:
        raise ConfigError(
            f"recvae readout measures errors in the data's units, which window scaling {standardizer.mode!r} "
            f"cannot give back; train with normalization in {list(_INVERTIBLE)}"
        )
    return standardizer.transform(np.asarray(windows))


def _unscaled(values: torch.Tensor, standardizer: Standardizer | None) -> torch.Tensor:
    if standardizer is None or standardizer.mode == "none":
        return values
    mean = torch.as_tensor(standardizer.mean_, dtype=values.dtype, device=values.device)
    std = torch.as_tensor(standardizer.std_, dtype=values.dtype, device=values.device)
    return values * std + mean


def _noise_rows(z: torch.Tensor | None, n: int, method: RecVAE) -> torch.Tensor | None:
    if z is None:
        return None
    z = torch.as_tensor(z, dtype=torch.float32, device=_device(method))
    return z.expand(n, -1) if z.ndim == 1 else z


@torch.no_grad()
def reconstruct(
    method: RecVAE, windows: np.ndarray | torch.Tensor, subject_noise: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior means and reconstructions of windows (frames in the model's units).

    Parameters
    ----------
    method : RecVAE
        A trained model (put in eval mode here).
    windows : array or tensor
        ``(B, T, V)`` windows or one ``(T, V)`` run.
    subject_noise : tensor, optional
        ``(L,)`` one vector for every window, ``(B, L)`` one per window; ``None`` is ``z_s = 0``.

    Returns
    -------
    mu, reconstruction : torch.Tensor
        ``(B, T, L)`` and ``(B, T, V)``.
    """
    method.eval()
    x = _as_windows(windows, method)
    mu = method.posterior(x, sample=False).mu
    return mu, method.decode_frames(mu, _noise_rows(subject_noise, x.shape[0], method))


def fit_subject_noise(
    method: RecVAE, windows: np.ndarray | torch.Tensor, steps: int = 300, lr: float = 0.05
) -> torch.Tensor:
    """A subject vector for held-out windows, fitted with the network frozen (module docstring).

    Parameters
    ----------
    method : RecVAE
        A trained model; none of its weights changes.
    windows : array or tensor
        ``(B, T, V)`` windows (or one ``(T, V)`` run) of one held-out subject, in the model's units.
    steps, lr : int, float
        Adam iterations and step size on ``z`` (from ``z = 0``).

    Returns
    -------
    torch.Tensor
        ``(L,)`` the fitted vector, detached.
    """
    if steps < 1 or lr <= 0:
        raise ConfigError(f"fit_subject_noise needs steps >= 1 and lr > 0, got steps={steps}, lr={lr}")
    method.eval()
    x = _as_windows(windows, method)
    with torch.no_grad():
        mu = method.posterior(x, sample=False).mu  # the posterior does not depend on z
    z = torch.zeros(method.config.latent_dim, device=x.device, requires_grad=True)
    optimiser = torch.optim.Adam([z], lr=lr)
    cfg = method.config
    for _ in range(steps):
        recon = method.decode_frames(mu, z.expand(x.shape[0], -1))
        loss = reconstruction_loss(
            x.flatten(0, 1), recon.flatten(0, 1), method.noise.var_x.detach(), voxel_reduction=cfg.voxel_reduction
        ) + subject_sparsity(z, cfg.lambda_z)
        (grad,) = torch.autograd.grad(loss, [z])  # the network's .grad stay untouched
        z.grad = grad
        optimiser.step()
    return z.detach()


def reconstruction_mse(
    method: RecVAE,
    windows: np.ndarray,
    subject_noise: torch.Tensor | None = None,
    standardizer: Standardizer | None = None,
) -> float:
    """Per-voxel reconstruction MSE of windows, in the units of ``windows`` (module docstring).

    Parameters
    ----------
    windows : numpy.ndarray
        ``(B, T, V)`` windows (or one ``(T, V)`` run) as stored in the recordings.
    subject_noise : tensor, optional
        ``(L,)`` or ``(B, L)``; ``None`` is ``z_s = 0``.
    standardizer : Standardizer, optional
        The run's window scaling (``"none"``, ``"global"`` or ``"dataset"``), applied before the
        model and undone after it.
    """
    raw = np.asarray(windows, dtype=np.float32)
    _, recon = reconstruct(method, _scaled(raw, standardizer), subject_noise)
    truth = _as_windows(raw, method)
    return float((_unscaled(recon, standardizer) - truth).double().square().mean())


def read_run(
    method: RecVAE,
    recording: Recording,
    subject_noise: torch.Tensor | None = None,
    standardizer: Standardizer | None = None,
) -> RunReadout:
    """A whole run ``(T, V)`` read as one sequence: posterior means and reconstruction (for inspection)."""
    frames = np.asarray(recording.data, dtype=np.float32)
    mu, recon = reconstruct(method, _scaled(frames[None], standardizer), subject_noise)
    return RunReadout(mu[0].cpu().numpy(), frames, _unscaled(recon, standardizer)[0].cpu().numpy())


def subject_row(method: RecVAE, subjects: list[str], subject: str) -> torch.Tensor | None:
    """The trained ``z_s`` of ``subject`` (``subjects`` = the checkpoint's training subjects), or ``None``."""
    if len(subjects) != method.subject_noise.shape[0]:
        raise DataError(
            f"{len(subjects)} subject names for a table of {method.subject_noise.shape[0]} subject vectors; pass "
            "the training subjects of the checkpoint (state['subjects'])"
        )
    return method.subject_noise.detach()[subjects.index(subject)] if subject in subjects else None


__all__ = ["RunReadout", "fit_subject_noise", "read_run", "reconstruct", "reconstruction_mse", "subject_row"]
