"""RecVAE networks: 3-D CNN encoder, mirrored transposed-conv decoder, inference head.

The layout is the reference's (Zhou et al., RecVAE package behind the seed,
``recvae/model.py``), generalised to any voxel grid through :func:`conv_plan`:

* encoder — ``len(channels)`` × [Conv3d k4 s2 p1 → BatchNorm3d → LeakyReLU 0.2],
  channels ``1 → 4 → 8 → 16 → 32`` by default, then Flatten → Linear → Tanh;
* decoder — Linear(latent → flat) → reshape → BatchNorm3d → LeakyReLU 0.2, then the
  stages mirrored with ConvTranspose3d k4 s2 p1 and output paddings computed from the
  grid, each followed by BatchNorm3d → LeakyReLU 0.2 except the last, whose output is
  linear (z-scored data, the default) or Tanh (min-max data in [-1, 1] or [0, 1], the
  seed's choice);
* inference head — ``cat[encoding, h_{t-1}]`` → Linear → μ and Linear → log σ².

Differences from the reference that do not change the layout: the convolutions that
feed a BatchNorm have no bias (BatchNorm subtracts it anyway) and the last transposed
convolution has one (the reference has none; with a linear output it lets the model
learn the offset of the data).

Neither network depends on the recurrent state, so both take every frame of every
sequence in one batch ``(S·T, 1, X, Y, Z)``; only the cheap inference head runs step by
step (:mod:`workbench.models.recvae.recurrence`). BatchNorm statistics are therefore
computed over all frames of the batch, where the frame-by-frame reference computes
them over the ``S`` subjects of one time point.

Shapes for the default grid 91 × 109 × 91 (``N`` frames)::

    x          (N, 1, 91, 109, 91)
    stage 1    (N, 4, 45, 54, 45)
    stage 2    (N, 8, 22, 27, 22)
    stage 3    (N, 16, 11, 13, 11)
    stage 4    (N, 32, 5, 6, 5)      flat 4800
    encoding   (N, 100)
    h, μ, logσ² (N, 10)
    decoded    (N, 1, 91, 109, 91)
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from workbench.errors import ConfigError, DataError
from workbench.models.recvae.geometry import conv_plan, flat_size

LEAK = 0.2  # LeakyReLU negative slope of the reference
DEFAULT_CHANNELS = (4, 8, 16, 32)

OutputActivation = Literal["linear", "tanh"]


def _check_channels(channels: tuple[int, ...]) -> tuple[int, ...]:
    channels = tuple(int(c) for c in channels)
    if not channels or any(c < 1 for c in channels):
        raise ConfigError(f"recvae channels must be a non-empty list of positive ints, got channels={channels}")
    return channels


def _as_volumes(x: torch.Tensor, grid: tuple[int, int, int], what: str) -> torch.Tensor:
    """``(N, X, Y, Z)`` or ``(N, 1, X, Y, Z)`` → ``(N, 1, X, Y, Z)``, checked against ``grid``."""
    if x.ndim == 4:
        x = x.unsqueeze(1)
    if x.ndim != 5 or x.shape[1] != 1 or tuple(x.shape[2:]) != grid:
        raise DataError(
            f"{what} expects volumes of shape (N, 1, {grid[0]}, {grid[1]}, {grid[2]}), got {tuple(x.shape)}; "
            "resample the data to the model's grid or build the model for this grid"
        )
    return x


class VolumeEncoder(nn.Module):
    """3-D CNN encoder: volumes ``(N, 1, X, Y, Z)`` → codes ``(N, enc_out_dim)`` in (-1, 1).

    Parameters
    ----------
    grid : tuple of int
        ``(X, Y, Z)`` voxel grid of the input.
    enc_out_dim : int
        Width of the code (100 in the reference).
    channels : tuple of int
        Output channels of the conv stages; their number is the number of stages.
    """

    def __init__(
        self, grid: tuple[int, int, int], enc_out_dim: int = 100, channels: tuple[int, ...] = DEFAULT_CHANNELS
    ) -> None:
        super().__init__()
        if enc_out_dim < 1:
            raise ConfigError(f"recvae enc_out_dim must be >= 1, got {enc_out_dim}")
        self.channels = _check_channels(channels)
        self.plan = conv_plan(grid, len(self.channels))
        self.grid = self.plan[0].in_size
        layers: list[nn.Module] = []
        in_ch = 1
        for stage, out_ch in zip(self.plan, self.channels, strict=True):
            layers += [
                nn.Conv3d(in_ch, out_ch, stage.kernel, stage.stride, stage.padding, bias=False),
                nn.BatchNorm3d(out_ch),
                nn.LeakyReLU(LEAK, inplace=True),
            ]
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(flat_size(self.grid, self.channels), enc_out_dim), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode ``(N, 1, X, Y, Z)`` (or ``(N, X, Y, Z)``) volumes to ``(N, enc_out_dim)``."""
        return self.head(self.features(_as_volumes(x, self.grid, "VolumeEncoder")))


class VolumeDecoder(nn.Module):
    """Mirrored transposed-conv decoder: latents ``(N, latent_dim)`` → volumes ``(N, 1, X, Y, Z)``.

    Parameters
    ----------
    grid : tuple of int
        ``(X, Y, Z)`` voxel grid to reproduce exactly.
    latent_dim : int
        Width of the decoded state ``h_t + z_s``.
    channels : tuple of int
        The encoder's channel list (the decoder walks it backwards to 1 channel).
    output : {"linear", "tanh"}
        Activation of the last layer: linear for z-scored data, Tanh for min-max data.
    """

    def __init__(
        self,
        grid: tuple[int, int, int],
        latent_dim: int = 10,
        channels: tuple[int, ...] = DEFAULT_CHANNELS,
        output: OutputActivation = "linear",
    ) -> None:
        super().__init__()
        if latent_dim < 1:
            raise ConfigError(f"recvae latent_dim must be >= 1, got {latent_dim}")
        if output not in ("linear", "tanh"):
            raise ConfigError(f"recvae decoder output must be 'linear' or 'tanh', got output={output!r}")
        self.channels = _check_channels(channels)
        self.plan = conv_plan(grid, len(self.channels))
        self.grid = self.plan[0].in_size
        bottom = (self.channels[-1], *self.plan[-1].out_size)
        self.project = nn.Sequential(
            nn.Linear(latent_dim, flat_size(self.grid, self.channels)),
            nn.Unflatten(1, bottom),
            nn.BatchNorm3d(self.channels[-1]),
            nn.LeakyReLU(LEAK, inplace=True),
        )
        layers: list[nn.Module] = []
        targets = (*reversed(self.channels[:-1]), 1)
        stages = list(zip(reversed(self.plan), reversed(self.channels), targets, strict=True))
        for i, (stage, in_ch, out_ch) in enumerate(stages):
            last = i == len(stages) - 1
            layers.append(
                nn.ConvTranspose3d(
                    in_ch, out_ch, stage.kernel, stage.stride, stage.padding, stage.output_padding, bias=last
                )
            )
            if not last:
                layers += [nn.BatchNorm3d(out_ch), nn.LeakyReLU(LEAK, inplace=True)]
        if output == "tanh":
            layers.append(nn.Tanh())
        self.features = nn.Sequential(*layers)
        self.output = output

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Decode ``(N, latent_dim)`` states to ``(N, 1, X, Y, Z)`` volumes."""
        return self.features(self.project(h))


class InferenceHead(nn.Module):
    """Gaussian posterior over ``h_t`` from the frame's code and the previous state.

    ``[e_t, h_{t-1}]`` → ``μ_t = W_μ [e_t, h_{t-1}] + b_μ`` and
    ``log σ²_t = W_σ [e_t, h_{t-1}] + b_σ`` (two Linear layers, as the reference's
    ``hidden2mu`` / ``hidden2log_var``).

    Parameters
    ----------
    enc_out_dim : int
        Width of the encoder code ``e_t``.
    latent_dim : int
        Width of the state ``h``.
    """

    def __init__(self, enc_out_dim: int = 100, latent_dim: int = 10) -> None:
        super().__init__()
        if enc_out_dim < 1 or latent_dim < 1:
            raise ConfigError(
                f"recvae enc_out_dim and latent_dim must be >= 1, got enc_out_dim={enc_out_dim}, "
                f"latent_dim={latent_dim}"
            )
        self.to_mu = nn.Linear(enc_out_dim + latent_dim, latent_dim)
        self.to_log_var = nn.Linear(enc_out_dim + latent_dim, latent_dim)

    def forward(self, encoding: torch.Tensor, h_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, enc_out_dim)``, ``(N, latent_dim)`` → ``(μ, log σ²)``, each ``(N, latent_dim)``."""
        joint = torch.cat([encoding, h_prev.to(encoding.dtype)], dim=-1)
        return self.to_mu(joint), self.to_log_var(joint)


def reparameterize(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """Draw ``h = μ + exp(½ log σ²) ⊙ ε`` with ``ε ~ N(0, I)`` on ``mu``'s device and dtype.

    Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014, §2.4. The noise comes
    from torch's global RNG (which the engine reseeds before every step).
    """
    return mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)
