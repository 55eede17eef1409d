"""Layer geometry of the RecVAE encoder/decoder for any voxel grid.

Each encoder stage is a ``Conv3d`` with kernel 4, stride 2, padding 1 along every
axis it can halve; its output size along that axis is ``floor((n + 2·1 − 4) / 2) + 1
= floor(n / 2)``. The mirrored decoder stage is a ``ConvTranspose3d`` with the same
kernel, stride and padding, whose output size is ``(m − 1)·2 − 2·1 + 4 + p = 2m + p``
with ``m = floor(n / 2)``; the output padding that restores ``n`` exactly is therefore
``p = n − 2·floor(n / 2) = n mod 2``, per axis and per stage.

An axis whose size at a stage is below 2 (a single slice, or an axis already halved
down to one voxel) cannot be halved: ``floor(1 / 2) = 0``. Along such an axis that
stage uses kernel 1, stride 1, padding 0 and output padding 0 — a pointwise map that
keeps the size — so grids such as ``40 × 20 × 1`` (one slice) or ``7 × 9 × 5`` work
with the same number of stages. A kernel of 1 rather than 3 with padding 1 because
along a one-voxel axis every tap but the centre would only ever see zero padding.

For the reference grid 91 × 109 × 91 (Zhou et al., the RecVAE package behind the seed,
``recvae/model.py``) the plan is::

    stage  in            out           decoder output padding
    1      91×109×91  -> 45×54×45      (1, 1, 1)
    2      45×54×45   -> 22×27×22      (1, 0, 1)
    3      22×27×22   -> 11×13×11      (0, 1, 0)
    4      11×13×11   ->  5×6×5        (1, 1, 1)

and with 32 channels at the bottom the flattened code has 32·5·6·5 = 4800 entries. The
decoder walks the stages backwards, so its output paddings read 1, (0,1,0), (1,0,1), 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from workbench.errors import ConfigError

Triple = tuple[int, int, int]

KERNEL = 4  # the reference's Conv3d(k=4, s=2, p=1): halves every axis of size >= 2
STRIDE = 2
PADDING = 1


@dataclass(frozen=True)
class ConvStage:
    """Per-axis geometry of one encoder stage and of its mirrored decoder stage.

    Attributes
    ----------
    in_size, out_size : tuple of int
        Spatial size before and after the encoder's ``Conv3d``; the decoder's
        ``ConvTranspose3d`` maps ``out_size`` back to ``in_size``.
    kernel, stride, padding : tuple of int
        Per-axis ``Conv3d`` / ``ConvTranspose3d`` arguments: ``(4, 2, 1)`` along an
        axis that is halved, ``(1, 1, 0)`` along an axis of size 1.
    output_padding : tuple of int
        The decoder's per-axis output padding, ``in_size mod 2`` along halved axes.
    """

    in_size: Triple
    out_size: Triple
    kernel: Triple
    stride: Triple
    padding: Triple
    output_padding: Triple


def _axis_stage(n: int) -> tuple[int, int, int, int, int]:
    """``(out, kernel, stride, padding, output_padding)`` of one axis of size ``n``."""
    if n < STRIDE:
        return n, 1, 1, 0, 0
    out = (n + 2 * PADDING - KERNEL) // STRIDE + 1  # = n // 2
    output_padding = n - ((out - 1) * STRIDE - 2 * PADDING + KERNEL)  # = n % 2
    return out, KERNEL, STRIDE, PADDING, output_padding


def conv_plan(grid: tuple[int, ...], n_stages: int = 4) -> list[ConvStage]:
    """Geometry of ``n_stages`` halving stages for a voxel grid.

    Parameters
    ----------
    grid : tuple of int
        ``(X, Y, Z)`` voxel grid, each size >= 1.
    n_stages : int
        Number of encoder stages (the length of the channel list).

    Returns
    -------
    list of ConvStage
        One entry per encoder stage, first to last; the decoder uses them in reverse.

    Raises
    ------
    ConfigError
        If ``grid`` is not three positive sizes or ``n_stages`` < 1.
    """
    if len(grid) != 3 or any(int(n) != n or n < 1 for n in grid):
        raise ConfigError(f"recvae grid must be three positive voxel counts (X, Y, Z), got grid={tuple(grid)}")
    if n_stages < 1:
        raise ConfigError(f"recvae needs at least one conv stage (channels list non-empty), got {n_stages}")
    stages = []
    size = tuple(int(n) for n in grid)
    for _ in range(n_stages):
        axes = [_axis_stage(n) for n in size]
        out, kernel, stride, padding, output_padding = (tuple(a[i] for a in axes) for i in range(5))
        stages.append(ConvStage(size, out, kernel, stride, padding, output_padding))
        size = out
    return stages


def bottleneck_size(grid: tuple[int, ...], n_stages: int = 4) -> Triple:
    """Spatial size ``(x, y, z)`` after the last encoder stage."""
    return conv_plan(grid, n_stages)[-1].out_size


def flat_size(grid: tuple[int, ...], channels: tuple[int, ...]) -> int:
    """Length of the flattened code after the conv stack: ``channels[-1] · x · y · z``."""
    return channels[-1] * math.prod(bottleneck_size(grid, len(channels)))
