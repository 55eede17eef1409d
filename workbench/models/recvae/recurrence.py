"""The RecVAE recurrence: encode every frame at once, infer the latent path step by step, decode at once.

For a batch of ``S`` sequences of ``T`` volumes (Zhou et al., RecVAE package behind the
seed, ``RecVAEModel.forward``)::

    e_t            = Enc(x_t)                              all S·T frames in one call
    μ_t, log σ²_t  = Head(e_t, h_{t-1})                    t = 1 .. T, h_0 given
    h_t            = μ_t + σ_t ⊙ ε_t                       (μ_t when not sampling)
    x̂_t            = Dec(h_t + z_s)                        all S·T frames in one call

Only the inference head sees ``h_{t-1}``, so the two expensive 3-D networks run once on
``(S·T, 1, X, Y, Z)`` instead of ``T`` times on ``(S, 1, X, Y, Z)``; gradients still flow
through the whole path (back-propagation through time over the head).

``frame_chunk`` caps the frames per encoder/decoder call (the ``S·T`` frames, sequence-major,
are cut into consecutive chunks): the same numbers in eval mode; in training mode BatchNorm
then normalises each chunk with its own batch statistics. ``frame_chunk = S`` is the
reference's frame-by-frame cost profile without its loop. Measured on the CPU
(``bench/recvae_epoch.py``, 4 × 30 volumes at 91×109×91): no chunk size is faster than one call;
chunks only trim the transient buffers of a call (4.1 → 3.6 GB peak), since autograd keeps the
activations of every chunk.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from workbench.errors import ConfigError, DataError
from workbench.models.recvae.networks import (
    DEFAULT_CHANNELS,
    InferenceHead,
    OutputActivation,
    VolumeDecoder,
    VolumeEncoder,
    reparameterize,
)


class PosteriorPath(NamedTuple):
    """Latent path of ``S`` sequences of ``T`` frames, every field ``(S, T, latent_dim)``."""

    h: torch.Tensor
    """States ``h_t`` (sampled, or ``μ_t`` when not sampling)."""
    mu: torch.Tensor
    """Posterior means ``μ_t``."""
    log_var: torch.Tensor
    """Posterior log-variances ``log σ²_t``."""
    h_prev: torch.Tensor
    """Previous states ``h_{t-1}``; ``h_prev[:, 0]`` is ``h_0``."""


def in_chunks(module: nn.Module, frames: torch.Tensor, frame_chunk: int | None) -> torch.Tensor:
    """``module`` on ``frames`` ``(N, ...)`` in consecutive chunks of at most ``frame_chunk`` (None: one call)."""
    if frame_chunk is None or frame_chunk >= frames.shape[0]:
        return module(frames)
    if frame_chunk < 1:
        raise ConfigError(f"recvae frame_chunk must be >= 1 (or null for all frames at once), got {frame_chunk}")
    return torch.cat([module(part) for part in frames.split(frame_chunk)])


class RecVAEOutput(NamedTuple):
    """Output of :class:`RecurrentVAE`."""

    reconstruction: torch.Tensor
    """``(S, T, 1, X, Y, Z)`` decoded volumes."""
    path: PosteriorPath
    """The posterior latent path."""


def unroll_posterior(
    head: InferenceHead, encodings: torch.Tensor, h0: torch.Tensor, sample: bool = True
) -> PosteriorPath:
    """Run the inference head along time.

    Parameters
    ----------
    head : InferenceHead
        Maps ``(e_t, h_{t-1})`` to ``(μ_t, log σ²_t)``.
    encodings : torch.Tensor
        ``(S, T, enc_out_dim)`` frame codes.
    h0 : torch.Tensor
        ``(latent_dim,)`` initial state shared by all sequences, or ``(S, latent_dim)``.
    sample : bool
        Draw ``h_t`` by reparameterisation (training) or take ``h_t = μ_t`` (inference).

    Returns
    -------
    PosteriorPath
        Fields ``(S, T, latent_dim)``.
    """
    n_seq, n_steps = encodings.shape[:2]
    h_prev = h0.to(device=encodings.device).expand(n_seq, -1)
    states, means, log_vars, previous = [], [], [], []
    for t in range(n_steps):
        mu, log_var = head(encodings[:, t], h_prev)
        h = reparameterize(mu, log_var) if sample else mu
        previous.append(h_prev.to(mu.dtype))
        states.append(h)
        means.append(mu)
        log_vars.append(log_var)
        h_prev = h
    return PosteriorPath(*(torch.stack(seq, dim=1) for seq in (states, means, log_vars, previous)))


class RecurrentVAE(nn.Module):
    """Encoder, inference head and decoder of RecVAE, batched over time.

    The transition ``F`` (:class:`~workbench.models.recvae.transition.LinearTransition`)
    and the subject noise ``z_s`` belong to the family that owns this module; ``z_s``
    arrives per sequence in :meth:`forward`.

    Parameters
    ----------
    grid : tuple of int
        ``(X, Y, Z)`` voxel grid.
    enc_out_dim, latent_dim : int
        Code width (100) and state width (10) of the reference.
    channels : tuple of int
        Conv channels per stage (``(4, 8, 16, 32)``).
    output : {"linear", "tanh"}
        Decoder output activation.
    """

    def __init__(
        self,
        grid: tuple[int, int, int],
        enc_out_dim: int = 100,
        latent_dim: int = 10,
        channels: tuple[int, ...] = DEFAULT_CHANNELS,
        output: OutputActivation = "linear",
    ) -> None:
        super().__init__()
        self.encoder = VolumeEncoder(grid, enc_out_dim, channels)
        self.head = InferenceHead(enc_out_dim, latent_dim)
        self.decoder = VolumeDecoder(grid, latent_dim, channels, output)
        self.grid = self.encoder.grid
        self.latent_dim = latent_dim

    def forward(
        self,
        volumes: torch.Tensor,
        h0: torch.Tensor,
        subject_noise: torch.Tensor | None = None,
        sample: bool = True,
        frame_chunk: int | None = None,
    ) -> RecVAEOutput:
        """Reconstruct ``S`` sequences of ``T`` volumes.

        Parameters
        ----------
        volumes : torch.Tensor
            ``(S, T, X, Y, Z)`` or ``(S, T, 1, X, Y, Z)``.
        h0 : torch.Tensor
            ``(latent_dim,)`` or ``(S, latent_dim)`` initial state.
        subject_noise : torch.Tensor, optional
            ``(S, latent_dim)`` subject vectors ``z_s`` added to every state before decoding.
        sample : bool
            Reparameterised draws (training) or posterior means.
        frame_chunk : int, optional
            At most this many frames per encoder/decoder call (see the module docstring).

        Returns
        -------
        RecVAEOutput
            ``reconstruction (S, T, 1, X, Y, Z)`` and the :class:`PosteriorPath`.
        """
        path = self.infer(volumes, h0, sample, frame_chunk)
        return RecVAEOutput(self.decode(path.h, subject_noise, frame_chunk), path)

    def infer(
        self, volumes: torch.Tensor, h0: torch.Tensor, sample: bool = True, frame_chunk: int | None = None
    ) -> PosteriorPath:
        """Posterior path of ``(S, T, [1,] X, Y, Z)`` volumes: the encoder on all frames, the head along time."""
        if volumes.ndim not in (5, 6):
            raise DataError(
                f"RecurrentVAE expects sequences of volumes (S, T, X, Y, Z), got shape {tuple(volumes.shape)}"
            )
        n_seq, n_steps = volumes.shape[:2]
        frames = volumes.reshape(n_seq * n_steps, *volumes.shape[2:])
        encodings = in_chunks(self.encoder, frames, frame_chunk).reshape(n_seq, n_steps, -1)
        return unroll_posterior(self.head, encodings, h0, sample)

    def decode(
        self, states: torch.Tensor, subject_noise: torch.Tensor | None = None, frame_chunk: int | None = None
    ) -> torch.Tensor:
        """Volumes ``(S, T, 1, X, Y, Z)`` decoded from states ``(S, T, L)`` plus ``z_s`` ``(S, L)`` when given."""
        n_seq, n_steps = states.shape[:2]
        if subject_noise is not None:
            states = states + subject_noise.unsqueeze(1).to(states.dtype)
        decoded = in_chunks(self.decoder, states.reshape(n_seq * n_steps, self.latent_dim), frame_chunk)
        return decoded.reshape(n_seq, n_steps, *decoded.shape[1:])
