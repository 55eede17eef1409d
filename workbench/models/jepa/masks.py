"""Brain-JEPA spatiotemporal multi-block masks over an ROI × time-patch grid.

Dong et al., "Brain-JEPA: Brain Dynamics Foundation Model with Gradient Positioning and
Spatiotemporal Masking", NeurIPS 2024, arXiv:2409.19407, section 3.3. Masks are data: the
collator returns token indices and the encoder/predictor gather them, as in I-JEPA
(Assran et al., CVPR 2023, ``src/masks/multiblock.py``).

Grid and tokens
---------------
A sample is an ``(R, P)`` grid of R ROIs × P time patches, flattened ROI-major:
``token = roi * P + t`` (so ``grid.reshape(-1)`` is the token order). R and P come from the
data; nothing here assumes 450 × 10.

What one draw contains
----------------------
Per batch the block sizes are drawn once (as in I-JEPA); per sample the ROI subsets and
positions. ``floor(n * fraction)`` turns a fraction into a count, like the reference code.

1. **Observation block**: ``floor(R·s)`` random ROIs × a contiguous span of ``floor(P·s')``
   time patches (``s, s' ~ U(enc_mask_scale)``, drawn separately), start uniform over every
   position that fits.
2. **Cross-ROI target** (α, ``"cross_roi"``): ``floor(R·U(pred_mask_R_scale))`` random ROIs of
   all R × a contiguous span of ``floor(P·U(pred_mask_T_roi_scale))`` patches placed inside the
   observation span (its width is clamped to the observation width). Its ROIs are removed from
   the context at *every* time step (none when its width is 0: an empty block removes nothing).
3. **Edge targets**, drawn for the left and for the right edge of the time axis, each side
   with its own ROI fraction ``f ~ U(pred_mask_R_roi_scale)`` and width
   ``w = floor(P·U(pred_mask_T_scale))``; the target columns are the w outermost patches
   (``0..w-1`` on the left, ``P-w..P-1`` on the right) and are removed from the context for
   all ROIs.

   - **Cross-Time** (β, ``"cross_time"``): ``floor(f·|context ROIs|)`` of the context ROIs
     (observation ROIs that are not Cross-ROI ROIs) on the edge columns.
   - **Double-Cross** (γ, ``"double_cross"``): ``floor(f·|other ROIs|)`` of the ROIs outside
     the context (unobserved or Cross-ROI) on the edge columns.

   Left and right blocks of one kind are returned together as one target kind.

Context = observation block − Cross-ROI ROIs (all times) − edge columns (all ROIs), so no
target shares a token with it. Cross-Time and Cross-ROI use disjoint ROI sets, and so do
Cross-Time and Double-Cross; Double-Cross tokens that fall on a Cross-ROI token are given to
Cross-ROI, so the targets are pairwise disjoint. With ``allow_overlap=True`` (I-JEPA's
meaning) the context is the whole observation block and Double-Cross is not trimmed.

Guarantees
----------
- ``min_keep``: a sample whose context has fewer than ``min_keep`` tokens is redrawn
  (positions and ROI subsets, same block sizes); if some still fail after
  ``_MAX_SAMPLE_REDRAWS`` rounds, or if no target kind is non-empty in every sample, the
  block sizes are redrawn. Masks are therefore drawn conditioned on being valid. When
  ``_MAX_SIZE_REDRAWS`` size draws all fail the configuration cannot be met and
  :class:`~workbench.errors.ConfigError` says which fields to change.
- Empty target kinds: a width of 0 (allowed by ``pred_mask_T_scale = (0.0, 0.4)``) or a
  count of 0 in any sample makes that kind empty for the batch; it is **dropped** from
  ``Masks.targets`` and ``Masks.kinds`` for that batch, so every returned target tensor has
  at least one column and ``Masks.targets`` is never empty.
- Batch equalisation (I-JEPA): every sample of a batch keeps the same number of context
  tokens (the batch minimum) and, per kind, the same number of target tokens. I-JEPA keeps
  the first indices; here each sample keeps a *uniformly random subset* of its tokens, so the
  truncation has no spatial bias. :meth:`Masks.grid` shows the kept tokens; use
  :meth:`SpatiotemporalMaskCollator.sample_blocks` for the untruncated blocks.

Differences from the reference code (Eric-LRL/Brain-JEPA, ``spatialtemporal_multiblock.py``):
edge columns are the w outermost patches (the reference picks w of the first/last 3 patches at
random, a hard-coded 3 and 7); the observation start is uniform over all fitting positions
(the reference never lets it touch the last patch); a scale of 1.0 is allowed; edge block
sizes are drawn per batch (the reference draws them per sample); all draws use the given
generator (the reference mixes a seeded generator with the global RNG).

Example
-------
>>> collator = SpatiotemporalMaskCollator(n_rois=94, n_time_patches=10)
>>> masks = collator(batch_size=8, generator=torch.Generator().manual_seed(0))
>>> masks.context.shape[0], masks.kinds[0]
(8, 'cross_roi')
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from workbench.errors import ConfigError

KINDS = ("cross_roi", "cross_time", "double_cross")
# Redraw budgets: a valid draw is found in one round for every grid we use; these bounds only
# turn an impossible configuration into a ConfigError instead of an endless loop.
_MAX_SAMPLE_REDRAWS = 10
_MAX_SIZE_REDRAWS = 20


@dataclass(frozen=True)
class MaskConfig:
    """Brain-JEPA mask scales (fractions of R or P), defaults of the reference pretraining.

    Attributes
    ----------
    enc_mask_scale : (min, max)
        Observation block: fraction of ROIs and (drawn separately) of time patches.
    pred_mask_R_scale : (min, max)
        Cross-ROI target: fraction of all ROIs.
    pred_mask_T_roi_scale : (min, max)
        Cross-ROI target: fraction of P for its time width (inside the observation span).
    pred_mask_R_roi_scale : (min, max)
        Cross-Time / Double-Cross: fraction of the context ROIs / of the other ROIs.
    pred_mask_T_scale : (min, max)
        Cross-Time / Double-Cross: fraction of P for the width at each time edge (may be 0).
    min_keep : int
        Minimum number of context tokens per sample (>= 1).
    allow_overlap : bool
        If True the context is the whole observation block (targets may overlap it).
    """

    enc_mask_scale: tuple[float, float] = (0.84, 1.0)
    pred_mask_R_scale: tuple[float, float] = (0.45, 0.6)
    pred_mask_T_roi_scale: tuple[float, float] = (0.2, 0.6)
    pred_mask_R_roi_scale: tuple[float, float] = (0.15, 0.3)
    pred_mask_T_scale: tuple[float, float] = (0.0, 0.4)
    min_keep: int = 4
    allow_overlap: bool = False

    def __post_init__(self) -> None:
        for f in fields(self):
            if not f.name.endswith("_scale"):
                continue
            value = getattr(self, f.name)
            fix = "give (min, max) with 0 <= min <= max <= 1"
            if not isinstance(value, (tuple, list)) or len(value) != 2:
                raise ConfigError(f"MaskConfig.{f.name}={value!r} is not a pair; {fix}")
            try:
                lo, hi = (float(v) for v in value)
            except (TypeError, ValueError):
                raise ConfigError(f"MaskConfig.{f.name}={value!r} is not numeric; {fix}") from None
            if not (0.0 <= lo <= 1.0 and 0.0 <= hi <= 1.0):
                raise ConfigError(f"MaskConfig.{f.name}={value!r} lies outside [0, 1]; {fix}")
            if lo > hi:
                raise ConfigError(f"MaskConfig.{f.name}={value!r} has min > max; {fix}")
            object.__setattr__(self, f.name, (lo, hi))
        keep = self.min_keep
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ConfigError(f"MaskConfig.min_keep={self.min_keep!r} must be an integer >= 1")


@dataclass(frozen=True)
class BlockSizes:
    """Block sizes shared by every sample of one batch (counts, widths in patches, fractions)."""

    observation_rois: int
    observation_width: int
    cross_roi_rois: int
    cross_roi_width: int
    edge_roi_fraction: tuple[float, float]  # (left, right)
    edge_width: tuple[int, int]  # (left, right)


@dataclass
class MaskDraw:
    """Untruncated boolean blocks of one batch, each ``(B, R, P)``; ``targets`` keyed by kind."""

    observation: torch.Tensor
    context: torch.Tensor
    targets: dict[str, torch.Tensor]
    sizes: BlockSizes


@dataclass
class Masks:
    """Token indices of one batch (ROI-major tokens ``roi * P + t``).

    Attributes
    ----------
    context : LongTensor (B, Nc)
        Context token indices, sorted per row.
    targets : list of LongTensor (B, Nt_k)
        One tensor per non-empty target kind, sorted per row.
    kinds : list of str
        Kind of each entry of ``targets`` (a subset of ``KINDS``, in that order).
    n_rois, n_time_patches : int
        Grid shape R, P.
    """

    context: torch.Tensor
    targets: list[torch.Tensor]
    kinds: list[str]
    n_rois: int
    n_time_patches: int

    def to(self, device: torch.device | str) -> Masks:
        """Return a copy with every index tensor on ``device``."""
        return replace(self, context=self.context.to(device), targets=[t.to(device) for t in self.targets])

    def grid(self, b: int = 0) -> np.ndarray:
        """Codes of sample ``b`` as an ``(R, P)`` int array for plots.

        0 = dropped (including tokens removed by batch equalisation), 1 = context,
        ``2 + k`` = target kind ``self.kinds[k]``.
        """
        codes = np.zeros(self.n_rois * self.n_time_patches, dtype=np.int64)
        codes[self.context[b].cpu().numpy()] = 1
        for k, target in enumerate(self.targets):
            codes[target[b].cpu().numpy()] = 2 + k
        return codes.reshape(self.n_rois, self.n_time_patches)


def _draw_count(n: int, scale: tuple[float, float], u: float) -> int:
    """``floor(n · fraction)`` with ``fraction = lo + u (hi - lo)``."""
    return math.floor(n * (scale[0] + u * (scale[1] - scale[0])))


def _random_subset(pool: torch.Tensor, counts: torch.Tensor, generator) -> torch.Tensor:
    """Per row, ``counts[b]`` members of ``pool[b]`` chosen uniformly; (B, N) bool -> (B, N) bool.

    Pool members get random keys in [0, 1), the rest 2, so the members rank first;
    ``counts`` must not exceed the pool sizes.
    """
    keys = torch.rand(pool.shape, generator=generator, device=pool.device)
    keys = torch.where(pool, keys, torch.full_like(keys, 2.0))
    order = keys.argsort(dim=1)
    positions = torch.arange(pool.shape[1], device=pool.device).expand_as(order)
    ranks = torch.empty_like(order).scatter_(1, order, positions)
    return ranks < counts.unsqueeze(1)


def _span(starts: torch.Tensor, width: int, length: int) -> torch.Tensor:
    """Contiguous ``[start, start + width)`` per row as (B, length) bool."""
    cols = torch.arange(length, device=starts.device)
    return (cols >= starts.unsqueeze(1)) & (cols < (starts + width).unsqueeze(1))


def _keep_random(mask: torch.Tensor, generator) -> torch.Tensor:
    """Sorted indices of a uniformly random batch-minimum-size subset of each row of (B, N) bool.

    Each token gets an integer key ``random · N + column``, unique within its row, so the
    ``n``-th smallest member key selects exactly ``n`` tokens (a selection, not a full sort).
    """
    B, N = mask.shape
    n_keep = int(mask.sum(dim=1).min())
    if n_keep == 0:
        return torch.empty(B, 0, dtype=torch.long, device=mask.device)
    random = torch.randint(0, 2**62 // N, (B, N), generator=generator, device=mask.device)
    keys = random * N + torch.arange(N, device=mask.device)
    keys = torch.where(mask, keys, torch.full_like(keys, torch.iinfo(torch.long).max))
    threshold = keys.kthvalue(n_keep, dim=1, keepdim=True).values
    return (keys <= threshold).nonzero()[:, 1].view(B, n_keep)


class SpatiotemporalMaskCollator:
    """Draw Brain-JEPA context/target token indices for a batch (see the module docstring).

    Parameters
    ----------
    n_rois, n_time_patches : int
        Grid shape R × P (both >= 2), taken from the data.
    config : MaskConfig
        Scales, ``min_keep`` and ``allow_overlap``.
    """

    def __init__(self, n_rois: int, n_time_patches: int, config: MaskConfig = MaskConfig()):
        for name, value in (("n_rois", n_rois), ("n_time_patches", n_time_patches)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise ConfigError(f"{name}={value!r}: the mask grid needs an integer >= 2")
        if config.min_keep > n_rois * n_time_patches:
            raise ConfigError(
                f"MaskConfig.min_keep={config.min_keep} exceeds the {n_rois}×{n_time_patches} "
                f"grid's {n_rois * n_time_patches} tokens; lower min_keep"
            )
        self.n_rois = n_rois
        self.n_time_patches = n_time_patches
        self.config = config

    def __repr__(self) -> str:
        return f"SpatiotemporalMaskCollator({self.n_rois}, {self.n_time_patches}, {self.config})"

    def sample_sizes(self, generator: torch.Generator | None = None) -> BlockSizes:
        """Draw the per-batch block sizes (eight uniforms from ``generator``)."""
        R, P, c = self.n_rois, self.n_time_patches, self.config
        device = generator.device if generator is not None else "cpu"
        u = torch.rand(8, generator=generator, device=device).tolist()
        lo, hi = c.pred_mask_R_roi_scale
        obs_width = _draw_count(P, c.enc_mask_scale, u[1])
        return BlockSizes(
            observation_rois=_draw_count(R, c.enc_mask_scale, u[0]),
            observation_width=obs_width,
            cross_roi_rois=_draw_count(R, c.pred_mask_R_scale, u[2]),
            cross_roi_width=min(_draw_count(P, c.pred_mask_T_roi_scale, u[3]), obs_width),
            edge_roi_fraction=(lo + u[4] * (hi - lo), lo + u[5] * (hi - lo)),
            edge_width=(
                _draw_count(P, c.pred_mask_T_scale, u[6]),
                _draw_count(P, c.pred_mask_T_scale, u[7]),
            ),
        )

    def place_blocks(self, sizes: BlockSizes, batch_size: int, generator=None) -> MaskDraw:
        """Place blocks of ``sizes`` independently per sample (no validity check)."""
        R, P, B = self.n_rois, self.n_time_patches, batch_size
        device = generator.device if generator is not None else torch.device("cpu")
        every_roi = torch.ones(B, R, dtype=torch.bool, device=device)

        def counts(n: int | torch.Tensor) -> torch.Tensor:
            return torch.as_tensor(n, device=device).expand(B)

        obs_rois = _random_subset(every_roi, counts(sizes.observation_rois), generator)
        obs_start = torch.randint(0, P - sizes.observation_width + 1, (B,), generator=generator, device=device)
        obs_cols = _span(obs_start, sizes.observation_width, P)
        observation = obs_rois[:, :, None] & obs_cols[:, None, :]

        roi_alpha = _random_subset(every_roi, counts(sizes.cross_roi_rois), generator)
        roi_alpha &= sizes.cross_roi_width > 0  # an empty block takes no ROIs from the context
        offset = torch.randint(
            0,
            sizes.observation_width - sizes.cross_roi_width + 1,
            (B,),
            generator=generator,
            device=device,
        )
        alpha_cols = _span(obs_start + offset, sizes.cross_roi_width, P)
        cross_roi = roi_alpha[:, :, None] & alpha_cols[:, None, :]

        context_rois = obs_rois & ~roi_alpha
        other_rois = ~context_rois
        t = torch.arange(P, device=device)
        cross_time = torch.zeros(B, R, P, dtype=torch.bool, device=device)
        double_cross = torch.zeros_like(cross_time)
        edge_cols = torch.zeros(P, dtype=torch.bool, device=device)
        for fraction, width, cols in (
            (sizes.edge_roi_fraction[0], sizes.edge_width[0], t < sizes.edge_width[0]),
            (sizes.edge_roi_fraction[1], sizes.edge_width[1], t >= P - sizes.edge_width[1]),
        ):
            if width == 0:
                continue
            edge_cols |= cols
            for pool, out in ((context_rois, cross_time), (other_rois, double_cross)):
                n = (pool.sum(dim=1) * fraction).floor().long()
                out |= _random_subset(pool, n, generator)[:, :, None] & cols
        if self.config.allow_overlap:
            context = observation
        else:
            context = observation & context_rois[:, :, None] & ~edge_cols
            double_cross &= ~cross_roi
        targets = {"cross_roi": cross_roi, "cross_time": cross_time, "double_cross": double_cross}
        return MaskDraw(observation, context, targets, sizes)

    def sample_blocks(self, batch_size: int, generator: torch.Generator | None = None) -> MaskDraw:
        """Draw valid untruncated blocks for a batch (redraws as in the module docstring).

        Returns
        -------
        MaskDraw
            Boolean ``(B, R, P)`` observation, context and per-kind target blocks, on the
            generator's device, plus the batch's :class:`BlockSizes`.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size={batch_size!r} must be an integer >= 1")
        min_keep = self.config.min_keep
        for _ in range(_MAX_SIZE_REDRAWS):
            sizes = self.sample_sizes(generator)
            draw = self.place_blocks(sizes, batch_size, generator)
            for _ in range(_MAX_SAMPLE_REDRAWS):
                bad = draw.context.sum(dim=(1, 2)) < min_keep
                if not bad.any():
                    break
                fresh = self.place_blocks(sizes, batch_size, generator)
                pick = bad[:, None, None]
                draw = MaskDraw(
                    torch.where(pick, fresh.observation, draw.observation),
                    torch.where(pick, fresh.context, draw.context),
                    {k: torch.where(pick, fresh.targets[k], v) for k, v in draw.targets.items()},
                    sizes,
                )
            context_ok = bool((draw.context.sum(dim=(1, 2)) >= min_keep).all())
            some_target = any(bool(m.flatten(1).any(dim=1).all()) for m in draw.targets.values())
            if context_ok and some_target:
                return draw
        raise ConfigError(
            f"no valid mask on the {self.n_rois}×{self.n_time_patches} grid in "
            f"{_MAX_SIZE_REDRAWS} draws of the block sizes (context >= MaskConfig.min_keep="
            f"{min_keep} and at least one non-empty target); lower min_keep, raise "
            "enc_mask_scale, or lower pred_mask_R_scale / pred_mask_T_scale, or raise "
            "pred_mask_T_roi_scale / pred_mask_R_roi_scale so that a target exists"
        )

    def __call__(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Masks:
        """Draw the masks of one batch.

        Parameters
        ----------
        batch_size : int
            Number of samples B.
        generator : torch.Generator, optional
            Source of all randomness (the same seed gives the same masks); ``None`` uses
            torch's global generator. Tensors are drawn on the generator's device.
        device : optional
            Device of the returned indices (default: the generator's device).

        Returns
        -------
        Masks
            Context ``(B, Nc)`` and per-kind targets ``(B, Nt_k)``, equalised over the batch.
        """
        draw = self.sample_blocks(batch_size, generator)
        context = _keep_random(draw.context.flatten(1), generator)
        targets, kinds = [], []
        for kind, block in draw.targets.items():
            kept = _keep_random(block.flatten(1), generator)
            if kept.shape[1] > 0:
                targets.append(kept)
                kinds.append(kind)
        masks = Masks(context, targets, kinds, self.n_rois, self.n_time_patches)
        return masks.to(device) if device is not None else masks
