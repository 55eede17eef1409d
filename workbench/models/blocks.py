"""Small building blocks shared by the families.

* :func:`sincos_1d` — the fixed 1-D sine/cosine code of "Attention Is All You Need"
  (Vaswani et al., 2017, §3.5) for arbitrary positions, usable on its own (for
  example as half of a 2-D or gradient positional embedding).
* :class:`SinusoidalPositionalEncoding` — that code as a registered buffer added
  to a ``(B, T, D)`` token sequence.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from workbench.errors import ConfigError


def sincos_1d(positions: torch.Tensor, dim: int, base: float = 10000.0) -> torch.Tensor:
    """Sine/cosine code of scalar positions.

    ``out[i, 2k] = sin(p_i / base^(2k/dim))`` and ``out[i, 2k+1] = cos(p_i / base^(2k/dim))``
    (Vaswani et al., 2017): even channels carry sines, odd channels cosines, at
    geometrically spaced frequencies from 1 down to ``1/base``.

    Parameters
    ----------
    positions : torch.Tensor
        ``(N,)`` positions (integer or real, any device); the output lives on
        the same device.
    dim : int
        Code width; must be even.
    base : float
        Longest wavelength divided by ``2π``.

    Returns
    -------
    torch.Tensor
        ``(N, dim)`` float32 code.

    Raises
    ------
    ConfigError
        If ``dim`` is odd or not positive.
    """
    if dim <= 0 or dim % 2:
        raise ConfigError(f"sin-cos positional code needs an even positive width, got dim={dim}")
    pos = positions.to(torch.float32).reshape(-1, 1)
    # frequencies base^(-2k/dim), k = 0 .. dim/2 - 1
    freq = torch.exp(torch.arange(0, dim, 2, device=pos.device, dtype=torch.float32) * (-math.log(base) / dim))
    angles = pos * freq  # (N, dim/2)
    out = torch.empty(pos.shape[0], dim, device=pos.device, dtype=torch.float32)
    out[:, 0::2] = torch.sin(angles)
    out[:, 1::2] = torch.cos(angles)
    return out


class SinusoidalPositionalEncoding(nn.Module):
    """Add the fixed sin-cos code of the frame index to a token sequence.

    The table is a non-persistent buffer: it follows the module across devices
    and dtypes, takes no gradient and is not written to checkpoints (it is a pure
    function of ``max_len`` and ``dim``).

    Parameters
    ----------
    dim : int
        Token width ``D`` (even).
    max_len : int
        Longest sequence accepted. A longer input raises :class:`ConfigError`
        rather than silently reusing or extrapolating positions: raise
        ``max_len`` in the config instead.

    Shapes
    ------
    ``(B, T, D) -> (B, T, D)`` with ``T <= max_len``.
    """

    def __init__(self, dim: int, max_len: int = 512) -> None:
        super().__init__()
        if max_len < 1:
            raise ConfigError(f"max_len must be a positive number of frames, got {max_len}")
        self.max_len = int(max_len)
        table = sincos_1d(torch.arange(self.max_len), dim)
        self.register_buffer("table", table.unsqueeze(0), persistent=False)  # (1, max_len, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_frames = x.shape[1]
        if n_frames > self.max_len:
            raise ConfigError(
                f"sequence of {n_frames} frames is longer than the positional-encoding table "
                f"(max_len={self.max_len}); raise `max_len` in the config to at least {n_frames}"
            )
        return x + self.table[:, :n_frames].to(x.dtype)
