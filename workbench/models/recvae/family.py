"""The ``recvae`` family: a recurrent VAE over fMRI volumes with a closed-form linear transition.

A window of ``T`` frames of one run is a sequence. Its ``(B, T, V)`` in-mask voxels go back onto
the grid (:func:`workbench.data.volumes.frames_to_volumes`, zeros outside the brain mask of
the data spec), the 3-D encoder and decoder run batched over all ``B·T`` frames, the inference
head walks along time from ``h_0 = 0``, and the decoder reconstructs every frame from
``h_t + z_s`` (``z_s`` the window's subject vector). The reconstruction is read back at the
in-mask voxels only, so background voxels cost nothing. Reference: the RecVAE package behind
the seed (``recvae/model.py``, ``RecVAEModel``); networks in :mod:`.networks`, the recurrence
in :mod:`.recurrence`, the transition in :mod:`.transition`, the loss terms in
:mod:`workbench.losses.recvae`.

Training (one optimiser step per batch of windows)::

    loss = R + P + Z        (R + K + Z with temporal="kl"),  ρ‖F‖² reported only

``F`` is a buffer, never a parameter: each training batch adds its posterior path (sampled
states, as the reference, or means) to the ridge statistics ``HᵀH``, ``HᵀH'``; ``after_epoch``
re-solves ``(HᵀH + 2σ_h²ρI) Fᵀ = HᵀH'`` and resets them, and ``after_training`` solves once
more from the pairs of an epoch that ``max_steps`` cut short. Under ``torch.distributed`` the
statistics are summed over ranks before the solve, so every rank holds the same ``F``.

Two ways to fit ``F`` (``transition_fit``). ``"reference"`` is the seed's: ``g(h) = h Fᵀ`` on
the pairs of every window with ``h_0 = 0`` prepended. ``"centred"`` (the default) adds an
unpenalised intercept, ``g(h) = h Fᵀ + b`` (:mod:`.transition`), and takes the pairs within
each window only. Both matter on real training runs: the posterior path's mean is free (the
decoder's bias absorbs any offset of ``h``), and on ``synthetic-volumes``-like data it sits
2–4 standard deviations from 0; without an intercept ``F`` then spends an eigenvalue near 1 on
the offset, and with one the pair ``(h_0 = 0, h_1)`` at the start of every window lies that far
from the path's cloud and pulls ``F`` (the seed's sequences are whole runs of 120 frames, ours
windows of 10–40). Measured with the ``small`` preset, 100 epochs on 4 voxel-z-scored runs of
200 frames at 8×10×8 from a generator with moduli ``[0.33, 0.33, 0.84, 0.90]``: the reference
fit gives ``[0.49, 0.49, 0.86, 0.99]``, the intercept with the ``h_0`` pairs
``[0.12, 0.51, 0.75, 0.88]``, the centred fit ``[0.39, 0.39, 0.83, 0.89]`` — as close as PCA
plus ridge on the same frames (``[0.39, 0.39, 0.84, 0.90]``). The temporal loss keeps the
first pair either way (a prior ``N(g(h_0), σ_h² I)`` on the window's first state).

Embedding (:meth:`RecVAE.embed`): the posterior means ``μ_1 … μ_T`` of the window (no
sampling, ``h_0 = 0`` at its first frame), averaged over time — ``(B, latent_dim)``. The
posterior does not depend on ``z_s`` (only the decoder sees it), so embeddings of held-out
subjects need no subject vector; their reconstructions do (:mod:`.readout`: ``z_s = 0`` or a
row fitted with the network frozen).

Frames must be scaled per run before windows are cut (:func:`workbench.data.volume_runs.prepare_volume_runs`);
the engine's window scaling defaults to ``"none"`` for this family. A Tanh decoder output
(the seed's) needs data inside ``[-1, 1]`` (``scaling="minmax"``); :meth:`RecVAE.prepare`
refuses other data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from workbench.data.spec import DataSpec
from workbench.data.volumes import frames_to_volumes, volumes_to_frames, voxel_index
from workbench.errors import ConfigError, DataError
from workbench.losses.recvae import NoiseScales, reconstruction_loss, recvae_loss, window_mean_reconstruction
from workbench.models.base import Method
from workbench.models.recvae.networks import DEFAULT_CHANNELS
from workbench.models.recvae.recurrence import PosteriorPath, RecurrentVAE
from workbench.models.recvae.transition import LinearTransition

RECIPES = ("adamw", "seed")
TRANSITION_STATES = ("sample", "mean")
TRANSITION_FITS = ("centred", "reference")

# engine settings per recipe: AdamW (default) or the reference's plain SGD at 1e-6
_RECIPE_TRAINING: dict[str, dict[str, Any]] = {
    "adamw": {
        "optimizer": "adamw",
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "clip_grad": 1.0,
        "epochs": 100,
        "batch_size": 8,
        "normalization": "none",
        "monitor_windows": 8,  # volume windows: the monitor batch is one training batch, not 128 windows
    },
    "seed": {
        "optimizer": "sgd",
        "momentum": 0.0,
        "lr": 1e-6,
        "weight_decay": 0.0,
        "clip_grad": None,
        "epochs": 500,
        "batch_size": 4,
        "normalization": "none",
    },
}


@dataclass
class RecVAEConfig:
    """Hyper-parameters of the ``recvae`` family (reference values in the comments)."""

    enc_out_dim: int = 100  # encoder code width (100)
    latent_dim: int = 10  # state width L; z_s has L entries too, since it is added to h (z_dim = 10)
    channels: tuple[int, ...] = DEFAULT_CHANNELS  # conv channels per stage (4, 8, 16, 32)
    output: str = "linear"  # decoder output: "linear" (z-scored data) | "tanh" (min-max data, the seed)
    temporal: str = "mse"  # "mse": the seed's ‖h_t − F h_{t-1}‖² proxy | "kl": KL to N(F h_{t-1}, σ_h² I)
    sigma_x: float = 1.0  # observation noise scale σ_x (1)
    sigma_h: float = 1.0  # transition noise scale σ_h (1)
    learn_noise: bool = False  # learn log σ_x², log σ_h² (fixed in the seed)
    rho: float = 0.1  # ridge precision on F (0.1)
    lambda_z: float = 10.0  # L1 weight on the subject vectors (10)
    z_init_std: float = 0.0  # initial z_s ~ N(0, std²); the seed draws randn · σ_z (1)
    transition_init: str = "identity"  # F before the first solve: "identity" | "uniform" (the seed's torch.rand)
    transition_states: str = "sample"  # path the ridge fits: "sample" (the seed's h_t) | "mean" (μ_t)
    transition_fit: str = "centred"  # "centred": g(h) = h Fᵀ + b on pairs within windows | "reference": h Fᵀ, h_0 first
    voxel_reduction: str = "sum"  # reconstruction over voxels: "sum" (the seed) | "mean"
    frame_chunk: int | None = None  # at most this many frames per encoder/decoder call (None: all)
    recipe: str = "adamw"  # engine defaults: "adamw" (lr 1e-3) | "seed" (SGD lr 1e-6, 500 epochs, batch 4)

    def __post_init__(self) -> None:
        choices = {
            "output": ("linear", "tanh"),
            "temporal": ("mse", "kl"),
            "transition_init": ("identity", "uniform"),
            "transition_states": TRANSITION_STATES,
            "transition_fit": TRANSITION_FITS,
            "voxel_reduction": ("sum", "mean"),
            "recipe": RECIPES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"recvae {name}={getattr(self, name)!r}: choose one of {list(allowed)}")
        if self.sigma_x <= 0 or self.sigma_h <= 0:
            raise ConfigError(f"recvae sigma_x={self.sigma_x} and sigma_h={self.sigma_h} must be > 0")
        if self.rho < 0 or self.lambda_z < 0 or self.z_init_std < 0:
            raise ConfigError(
                f"recvae rho={self.rho}, lambda_z={self.lambda_z} and z_init_std={self.z_init_std} must be >= 0"
            )
        if self.frame_chunk is not None and self.frame_chunk < 1:
            raise ConfigError(f"recvae frame_chunk={self.frame_chunk} must be >= 1 (or null for all frames)")


class RecVAE(Method):
    """The ``recvae`` family (see the module docstring).

    Presets
    -------
    ``"tiny"``
        Two conv stages of 2 and 4 channels, code 8, latent 3: for tests.
    ``"small"``
        Three stages of 4, 8, 16 channels, code 32, latent 4 (the size of the
        ``synthetic-volumes`` generator): minutes on a CPU for the 6×10×10 (``haxby-25mm``)
        and 16×20×16 (``synthetic-volumes``) grids.
    ``"seed"``
        The reference's settings: Tanh output (pair with ``scaling="minmax"``), MSE temporal
        term, ``F`` from ``torch.rand``, ``z_s`` from ``randn``, SGD at lr 1e-6 for 500 epochs
        of batches of 4.

    Buffers
    -------
    ``transition.F`` and its statistics, ``h0`` (zeros), fixed noise scales; ``mask`` and
    ``voxel_index`` come from the data spec and are not saved.
    """

    name: ClassVar[str] = "recvae"
    Config: ClassVar[type] = RecVAEConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"enc_out_dim": 8, "latent_dim": 3, "channels": (2, 4)},
        "small": {"enc_out_dim": 32, "latent_dim": 4, "channels": (4, 8, 16)},
        "seed": {
            "output": "tanh",
            "temporal": "mse",
            "transition_init": "uniform",
            "transition_fit": "reference",
            "z_init_std": 1.0,
            "recipe": "seed",
        },
    }
    train_defaults: ClassVar[dict[str, Any]] = _RECIPE_TRAINING["adamw"]
    floor_description: ClassVar[str] = "every frame reconstructed by its window's mean frame"

    def __init__(self, config: RecVAEConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        if spec.grid is None:
            raise ConfigError(
                "recvae needs volume frames (a data spec with a voxel grid); turn 4-D runs into frames with "
                "workbench.data.volume_runs.prepare_volume_runs"
            )
        if spec.n_subjects < 1:
            raise ConfigError("recvae needs the number of training subjects (data spec n_subjects >= 1) for z_s")
        self.train_defaults = _RECIPE_TRAINING[config.recipe]
        mask = torch.from_numpy(spec.mask_array())
        self.register_buffer("mask", mask, persistent=False)
        self.register_buffer("voxel_index", voxel_index(mask), persistent=False)
        self.vae = RecurrentVAE(spec.grid, config.enc_out_dim, config.latent_dim, config.channels, config.output)
        centred = config.transition_fit == "centred"
        self.transition = LinearTransition(config.latent_dim, config.rho, config.transition_init, bias=centred)
        self.noise = NoiseScales(config.sigma_x, config.sigma_h, learned=config.learn_noise)
        self.subject_noise = nn.Parameter(config.z_init_std * torch.randn(spec.n_subjects, config.latent_dim))
        self.register_buffer("h0", torch.zeros(config.latent_dim))

    # -- frames <-> volumes ------------------------------------------------------------------
    def to_volumes(self, x: torch.Tensor) -> torch.Tensor:
        """Windows ``(B, T, V)`` → volumes ``(B, T, X, Y, Z)``, zeros outside the mask."""
        if x.ndim != 3 or x.shape[-1] != self.voxel_index.numel():
            raise DataError(
                f"recvae expects windows (B, T, V) of V={self.voxel_index.numel()} in-mask voxels, got shape "
                f"{tuple(x.shape)}; use frames cut with the training data's mask and grid {self.spec.grid}"
            )
        return frames_to_volumes(x, self.mask, self.voxel_index)

    def to_frames(self, volumes: torch.Tensor) -> torch.Tensor:
        """Decoded volumes ``(B, T, 1, X, Y, Z)`` → in-mask frames ``(B, T, V)``."""
        return volumes_to_frames(volumes.squeeze(2), self.mask, self.voxel_index)

    # -- the model -----------------------------------------------------------------------------
    def posterior(self, x: torch.Tensor, sample: bool = False) -> PosteriorPath:
        """Posterior path ``(B, T, L)`` fields of windows ``(B, T, V)``, from ``h_0 = 0`` at each window's start."""
        return self.vae.infer(self.to_volumes(x), self.h0, sample, self.config.frame_chunk)

    def decode_frames(self, states: torch.Tensor, subject_noise: torch.Tensor | None = None) -> torch.Tensor:
        """In-mask frames ``(B, T, V)`` decoded from states ``(B, T, L)`` plus ``z_s`` ``(B, L)`` when given."""
        return self.to_frames(self.vae.decode(states, subject_noise, self.config.frame_chunk))

    def training_loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Loss terms of a batch of windows; adds the batch's path to the ridge statistics of ``F``.

        Returns
        -------
        dict
            ``loss`` and the detached ``reconstruction``, ``temporal`` (or ``kl``), ``z_sparsity``,
            ``F_penalty`` (and ``sigma_x``, ``sigma_h`` when learned).
        """
        x = batch["x"]
        path = self.posterior(x, sample=True)
        z_s = self.subject_noise[batch["subject"].to(x.device)]
        recon = self.decode_frames(path.h, z_s)
        cfg = self.config
        terms = recvae_loss(
            x.flatten(0, 1),
            recon.flatten(0, 1),
            path.h.flatten(0, 1),
            path.mu.flatten(0, 1),
            path.log_var.flatten(0, 1),
            self.transition(path.h_prev).flatten(0, 1),
            self.subject_noise,
            self.transition.F,
            noise=self.noise,
            lambda_z=cfg.lambda_z,
            rho=cfg.rho,
            temporal=cfg.temporal,
            voxel_reduction=cfg.voxel_reduction,
        )
        if self.training:
            states = path.h if cfg.transition_states == "sample" else path.mu
            self.transition.accumulate(states, self.h0 if cfg.transition_fit == "reference" else None)
        return terms

    @torch.no_grad()
    def diagnostics(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """The reconstruction term ``R`` on a monitor batch beside the window-mean reconstruction's.

        The frames are decoded from the posterior means (no sampling) without the subject vector
        (``z_s = 0``, as for a held-out subject, so any windows can be monitored); the floor
        (:func:`~workbench.losses.recvae.window_mean_reconstruction`) uses the same noise scale and
        voxel reduction, so both are in the units of the ``reconstruction`` the training logs.

        Returns
        -------
        dict of str to float
            ``loss`` (``R`` of the reconstruction) and ``floor`` (``R`` of each window's mean frame).
        """
        x = batch["x"]
        recon = self.decode_frames(self.posterior(x, sample=False).mu)
        learned, var_x, reduction = self.noise.learned, self.noise.var_x, self.config.voxel_reduction
        loss = reconstruction_loss(x.flatten(0, 1), recon.flatten(0, 1), var_x, None, reduction, log_normalizer=learned)
        floor = window_mean_reconstruction(x, var_x, reduction, log_normalizer=learned)
        return {"loss": float(loss), "floor": float(floor)}

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Windows ``(B, T, V)`` → the time average of their posterior means ``(B, latent_dim)``."""
        return self.posterior(x, sample=False).mu.mean(dim=1)

    # -- hooks ---------------------------------------------------------------------------------
    def prepare(self, windows: np.ndarray, labels: np.ndarray | None = None) -> None:
        """Refuse data a Tanh output cannot reach (values outside ``[-1, 1]``)."""
        if self.config.output == "tanh":
            peak = float(np.abs(windows).max())
            if peak > 1.0:
                raise ConfigError(
                    f"recvae output='tanh' reconstructs values in (-1, 1) but the training windows reach {peak:.3g}; "
                    "scale the runs with prepare_volume_runs(..., scaling='minmax') or use output='linear'"
                )

    def solve_transition(self) -> bool:
        """Re-solve ``F`` from the statistics gathered since the last solve (summed over ranks); reset them."""
        return self.transition.solve(self.noise.var_h.sqrt())

    def after_epoch(self, epoch: int) -> None:
        """Closed-form ridge update of ``F`` on the epoch's posterior paths."""
        self.solve_transition()

    def after_training(self) -> None:
        """Solve ``F`` from the pairs of an epoch cut short by ``max_steps`` (no-op after a full epoch)."""
        self.solve_transition()

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """Weight decay on >= 2-D network weights; ``z_s`` (L1-penalised), biases, norms, noise scales opt out."""
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 and name != "subject_noise" else no_decay).append(p)
        return [
            {"params": decay, "weight_decay": weight_decay, "apply_wd": True, "lr_scale": 1.0},
            {"params": no_decay, "weight_decay": 0.0, "apply_wd": False, "lr_scale": 1.0},
        ]


__all__ = ["RECIPES", "RecVAE", "RecVAEConfig"]
