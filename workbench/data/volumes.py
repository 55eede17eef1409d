"""Volumes as frames: a 4-D run ``(X, Y, Z, T)`` travels as ``(T, V)`` voxels inside a mask.

Windows, the engine and the evaluation work on ``(T, F)`` frames; a volume run enters them
through :func:`volume_frames`, which keeps the voxels of a brain mask (all voxels without one)
and records the grid and the mask in ``meta``, so a family can put frames back on the grid
(:func:`frames_to_volumes`) to run 3-D convolutions. Background voxels outside the mask cost
nothing; constant voxels inside it are allowed (scale volumes with ``normalization="global"``
or ``"none"``, which compute no per-voxel statistics).
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


def frames_to_volumes(frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Scatter ``(..., V)`` frames back onto the grid: ``(..., X, Y, Z)`` with zeros outside the mask.

    ``mask`` is the ``(X, Y, Z)`` boolean mask of :func:`volume_frames` (a tensor on the frames'
    device); differentiable in ``frames``.
    """
    if frames.shape[-1] != int(mask.sum()):
        raise DataError(f"frames have {frames.shape[-1]} voxels but the mask selects {int(mask.sum())}")
    out = frames.new_zeros(*frames.shape[:-1], mask.numel())
    out[..., mask.reshape(-1)] = frames
    return out.reshape(*frames.shape[:-1], *mask.shape)


__all__ = ["frames_to_volumes", "volume_frames"]
