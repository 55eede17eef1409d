"""Recurrent VAE over fMRI volumes: the ``recvae`` family and its building blocks.

A 3-D CNN encodes every volume, an inference head turns the code and the previous
latent state into a Gaussian posterior over ``h_t``, a mirrored transposed-conv decoder
reconstructs the volume from ``h_t + z_s`` (``z_s`` a per-subject vector), and a linear
transition ``g(h) = h Fᵀ`` — re-solved each epoch by ridge regression — is the temporal
prior. Reference: Zhou et al., the RecVAE package behind the seed (``recvae/model.py``);
the losses are in :mod:`workbench.losses.recvae`.

Modules: :mod:`.geometry` (per-axis conv plan for any grid), :mod:`.networks` (encoder,
decoder, inference head, reparameterisation), :mod:`.recurrence` (the time-batched
forward pass), :mod:`.transition` (ridge-solved ``F`` with summable statistics),
:mod:`.family` (the ``recvae`` Method), :mod:`.heldout` (held-out subject vectors and
reconstruction errors). In-mask frames ↔ volumes: :mod:`workbench.data.volumes`.

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
    F, b                  (L, L), (L,)           g(h) = h Fᵀ (+ b with the intercept option)
    Hᵀ H, Hᵀ H'           (L, L)                 ridge statistics, summed over pairs
    in-mask frames        (..., V)               V voxels inside the brain mask
"""

from workbench.models.recvae.family import RecVAE, RecVAEConfig
from workbench.models.recvae.geometry import ConvStage, bottleneck_size, conv_plan, flat_size
from workbench.models.recvae.networks import InferenceHead, VolumeDecoder, VolumeEncoder, reparameterize
from workbench.models.recvae.readout import (
    RunReadout,
    fit_subject_noise,
    read_run,
    reconstruct,
    reconstruction_mse,
    subject_row,
)
from workbench.models.recvae.recurrence import PosteriorPath, RecurrentVAE, RecVAEOutput, in_chunks, unroll_posterior
from workbench.models.recvae.transition import (
    LinearTransition,
    TransitionStatistics,
    all_reduce_sum,
    ridge_transition,
    ridge_transition_with_bias,
    transition_statistics,
)

__all__ = [
    "ConvStage",
    "InferenceHead",
    "LinearTransition",
    "PosteriorPath",
    "RecVAE",
    "RecVAEConfig",
    "RecVAEOutput",
    "RecurrentVAE",
    "RunReadout",
    "TransitionStatistics",
    "VolumeDecoder",
    "VolumeEncoder",
    "all_reduce_sum",
    "bottleneck_size",
    "conv_plan",
    "fit_subject_noise",
    "flat_size",
    "in_chunks",
    "read_run",
    "reconstruct",
    "reconstruction_mse",
    "reparameterize",
    "ridge_transition",
    "ridge_transition_with_bias",
    "subject_row",
    "transition_statistics",
    "unroll_posterior",
]
