"""Brain mask: between ``(…, V)`` in-mask voxel frames and ``(…, 1, X, Y, Z)`` volumes.

Volume runs travel through the data layer as frames of the ``V`` voxels inside a brain
mask; the 3-D networks need full grids. :class:`BrainMask` scatters frames into zeroed
volumes (background = 0) and gathers volumes back to frames, differentiably and on the
inputs' device and dtype. Computing the reconstruction loss on gathered frames (or with
``mask=`` in :func:`workbench.losses.recvae.reconstruction_loss`) makes background
voxels cost nothing.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from workbench.errors import DataError


class BrainMask(nn.Module):
    """A boolean ``(X, Y, Z)`` mask with its flat voxel index, as buffers.

    Parameters
    ----------
    mask : torch.Tensor or numpy.ndarray
        ``(X, Y, Z)`` boolean (or 0/1) array; at least one voxel must be inside.

    Raises
    ------
    DataError
        If the mask is not 3-D, not boolean/0-1, or empty.
    """

    def __init__(self, mask: torch.Tensor | np.ndarray) -> None:
        super().__init__()
        mask = torch.as_tensor(mask)
        if mask.ndim != 3:
            raise DataError(f"brain mask must be a 3-D (X, Y, Z) array, got shape {tuple(mask.shape)}")
        if mask.dtype != torch.bool:
            if not bool(((mask == 0) | (mask == 1)).all()):
                raise DataError("brain mask must hold only 0/1 or booleans; threshold it first (e.g. mask > 0.5)")
            mask = mask != 0
        if not bool(mask.any()):
            raise DataError("brain mask selects no voxel; check the mask file or its threshold")
        self.register_buffer("mask", mask)
        self.register_buffer("index", torch.flatten(mask).nonzero().squeeze(1))
        self.grid: tuple[int, int, int] = tuple(mask.shape)  # type: ignore[assignment]

    @property
    def n_voxels(self) -> int:
        """Number ``V`` of voxels inside the mask."""
        return int(self.index.numel())

    def to_volumes(self, frames: torch.Tensor) -> torch.Tensor:
        """``(…, V)`` in-mask frames → ``(…, 1, X, Y, Z)`` volumes, zero outside the mask."""
        if frames.shape[-1] != self.n_voxels:
            raise DataError(f"frames carry {frames.shape[-1]} voxels, the brain mask has {self.n_voxels}")
        lead = frames.shape[:-1]
        flat = frames.new_zeros(*lead, self.mask.numel()).index_copy(-1, self.index, frames)
        return flat.reshape(*lead, 1, *self.grid)

    def to_frames(self, volumes: torch.Tensor) -> torch.Tensor:
        """``(…, 1, X, Y, Z)`` volumes → ``(…, V)`` in-mask frames."""
        if volumes.ndim < 4 or tuple(volumes.shape[-4:]) != (1, *self.grid):
            raise DataError(
                f"volumes of shape {tuple(volumes.shape)} do not match the brain mask: expected (..., 1, "
                f"{', '.join(map(str, self.grid))})"
            )
        lead = volumes.shape[:-4]
        return volumes.reshape(*lead, self.mask.numel()).index_select(-1, self.index)
