"""Volumes as frames: a 4-D run ``(X, Y, Z, T)`` travels as ``(T, V)`` voxels inside a mask.

Windows, the engine and the evaluation work on ``(T, F)`` frames; a volume run enters them
through :func:`volume_frames`, which keeps the voxels of a brain mask (all voxels without one)
and records the grid and the mask in ``meta``, so a family can put frames back on the grid
(:func:`frames_to_volumes`) to run 3-D convolutions and read its output back at the in-mask
voxels (:func:`volumes_to_frames`). Background voxels outside the mask cost nothing; constant
voxels inside it are allowed (scale volumes with ``normalization="global"`` or ``"none"``, which
compute no per-voxel statistics). :mod:`workbench.data.volume_runs` prepares whole datasets
(resampling, a common length, per-run scaling, the mask rule).

Frame column ``v`` is the ``v``-th ``True`` voxel of the mask in C order, i.e. the voxel at flat
position ``voxel_index(mask)[v]`` of the grid.
"""

from __future__ import annotations

import numpy as np
import torch

from workbench.data.recording import Recording
from workbench.errors import DataError


def volume_frames(recording: Recording, mask: np.ndarray | None = None) -> Recording:
    """A 4-D run as ``(T, V)`` float32 frames of the voxels inside ``mask``.

    Parameters
    ----------
    recording : Recording
        ``data`` of shape ``(X, Y, Z, T)``.
    mask : numpy.ndarray, optional
        ``(X, Y, Z)`` boolean brain mask; default every voxel.

    Returns
    -------
    Recording
        Same ids, TR and labels; ``meta`` gains ``grid`` ``(X, Y, Z)`` and ``mask`` (the boolean
        mask, C order: frame column ``v`` is the ``v``-th ``True`` voxel).
    """
    if recording.data.ndim != 4:
        raise DataError(
            f"recording {recording.subject}/{recording.session}: volume_frames needs (X, Y, Z, T) data, got "
            f"shape {recording.data.shape}"
        )
    grid = tuple(int(n) for n in recording.data.shape[:3])
    mask = np.ones(grid, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != grid:
        raise DataError(f"mask of shape {mask.shape} does not match the volume grid {grid}; resample one of them")
    if not mask.any():
        raise DataError("the mask selects no voxel; check the mask image")
    frames = np.ascontiguousarray(np.asarray(recording.data, dtype=np.float32)[mask].T)  # (T, V)
    meta = {**recording.meta, "grid": grid, "mask": mask}
    return Recording(recording.subject, recording.session, frames, recording.tr, meta, recording.frame_labels)


def voxel_index(mask: torch.Tensor) -> torch.Tensor:
    """Flat C-order positions ``(V,)`` int64 of the in-mask voxels of a boolean ``(X, Y, Z)`` mask.

    Computing it once and passing it to :func:`frames_to_volumes` / :func:`volumes_to_frames`
    spares a device synchronisation per call on accelerators (``nonzero`` waits for the result).
    """
    if mask.dtype != torch.bool or mask.ndim != 3:
        raise DataError(
            f"a brain mask is a boolean (X, Y, Z) tensor, got dtype {mask.dtype}, shape {tuple(mask.shape)}"
        )
    return torch.flatten(mask).nonzero().squeeze(1)


def _index(mask: torch.Tensor, index: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    return (voxel_index(mask) if index is None else index).to(device)


def frames_to_volumes(frames: torch.Tensor, mask: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
    """Scatter ``(..., V)`` frames back onto the grid: ``(..., X, Y, Z)`` with zeros outside the mask.

    Parameters
    ----------
    frames : torch.Tensor
        ``(..., V)`` in-mask voxel values.
    mask : torch.Tensor
        The ``(X, Y, Z)`` boolean mask of :func:`volume_frames`.
    index : torch.Tensor, optional
        ``voxel_index(mask)``, precomputed.

    Returns
    -------
    torch.Tensor
        ``(..., X, Y, Z)`` on the frames' device and dtype, differentiable in ``frames``.
    """
    index = _index(mask, index, frames.device)
    if frames.shape[-1] != index.numel():
        raise DataError(f"frames have {frames.shape[-1]} voxels but the mask selects {index.numel()}")
    lead = frames.shape[:-1]
    flat = frames.new_zeros(*lead, mask.numel()).index_copy(-1, index, frames)
    return flat.reshape(*lead, *mask.shape)


def volumes_to_frames(volumes: torch.Tensor, mask: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
    """Gather the in-mask voxels of ``(..., X, Y, Z)`` volumes: ``(..., V)`` (inverse of :func:`frames_to_volumes`).

    Differentiable in ``volumes``; voxels outside the mask get no gradient.
    """
    if volumes.ndim < 3 or tuple(volumes.shape[-3:]) != tuple(mask.shape):
        raise DataError(
            f"volumes of shape {tuple(volumes.shape)} do not lie on the mask's grid {tuple(mask.shape)}; expected "
            "(..., X, Y, Z)"
        )
    index = _index(mask, index, volumes.device)
    return volumes.reshape(*volumes.shape[:-3], mask.numel()).index_select(-1, index)


__all__ = ["frames_to_volumes", "volume_frames", "volumes_to_frames", "voxel_index"]
