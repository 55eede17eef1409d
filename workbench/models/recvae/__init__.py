"""Recurrent VAE over fMRI volumes: building blocks.

A 3-D CNN encodes every volume, an inference head turns the code and the previous
latent state into a Gaussian posterior over ``h_t``, a mirrored transposed-conv decoder
reconstructs the volume from ``h_t + z_s`` (``z_s`` a per-subject vector), and a linear
transition ``g(h) = h Fᵀ`` — re-solved each epoch by ridge regression — is the temporal
prior. Reference: Zhou et al., the RecVAE package behind the seed (``recvae/model.py``);
the losses are in :mod:`workbench.losses.recvae`.

Modules: :mod:`.geometry` (per-axis conv plan for any grid), :mod:`.networks` (encoder,
decoder, inference head, reparameterisation), :mod:`.recurrence` (the time-batched
forward pass), :mod:`.transition` (ridge-solved ``F`` with summable statistics),
:mod:`.volume_mask` (in-mask frames ↔ volumes).

Shapes (``S`` sequences of ``T`` frames, ``N = S·T``; reference defaults in brackets)::

    volumes               (S, T, 1, X, Y, Z)     [X, Y, Z = 91, 109, 91]
    encoder input         (N, 1, X, Y, Z)        all frames in one call
    conv stage k          (N, C_k, ⌊·/2⌋ per halved axis)   [C = 4, 8, 16, 32]
    bottleneck            (N, C_last, x, y, z)   [32 × 5 × 6 × 5 = 4800]
    encoding e_t          (S, T, enc_out_dim)    [100]
    h_{t-1}, μ_t, log σ²_t, h_t  (S, T, L)       [L = latent_dim = 10]
    z_s                   (S, L)                 added to every h_t before decoding
    decoder input         (N, L)
    reconstruction        (S, T, 1, X, Y, Z)
    F                     (L, L)                 g(h) = h Fᵀ
    Hᵀ H, Hᵀ H'           (L, L)                 ridge statistics, summed over pairs
    in-mask frames        (..., V)               V voxels inside the brain mask
"""

from workbench.models.recvae.geometry import ConvStage, bottleneck_size, conv_plan, flat_size
from workbench.models.recvae.networks import InferenceHead, VolumeDecoder, VolumeEncoder, reparameterize
from workbench.models.recvae.recurrence import PosteriorPath, RecurrentVAE, RecVAEOutput, unroll_posterior
from workbench.models.recvae.transition import (
    LinearTransition,
    TransitionStatistics,
    all_reduce_sum,
    ridge_transition,
    transition_statistics,
)
from workbench.models.recvae.volume_mask import BrainMask

__all__ = [
    "BrainMask",
    "ConvStage",
    "InferenceHead",
    "LinearTransition",
    "PosteriorPath",
    "RecVAEOutput",
    "RecurrentVAE",
    "TransitionStatistics",
    "VolumeDecoder",
    "VolumeEncoder",
    "all_reduce_sum",
    "bottleneck_size",
    "conv_plan",
    "flat_size",
    "reparameterize",
    "ridge_transition",
    "transition_statistics",
    "unroll_posterior",
]
