"""Brain-JEPA spatiotemporal masks: invariants over many seeds and grids, hand cases, errors."""

from __future__ import annotations

import math

import pytest
import torch

from workbench.config import config_from_dict
from workbench.errors import ConfigError
from workbench.models.jepa.masks import KINDS, MaskConfig, Masks, SpatiotemporalMaskCollator

# (n_rois, n_time_patches, seeds): 200 seeds per grid, 50 on the 4,500-token grid to stay fast
GRIDS = [(8, 4, 200), (5, 3, 200), (30, 7, 200), (94, 10, 200), (450, 10, 50)]
BATCH = 3


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _as_bool(indices: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """(B, n) token indices -> (B, n_tokens) membership."""
    out = torch.zeros(indices.shape[0], n_tokens, dtype=torch.bool)
    return out.scatter_(1, indices, True)


def _floor_bounds(n: int, scale: tuple[float, float]) -> tuple[int, int]:
    return math.floor(n * scale[0]), math.floor(n * scale[1])


def _check_masks(masks: Masks, collator: SpatiotemporalMaskCollator, batch: int) -> None:
    R, P = collator.n_rois, collator.n_time_patches
    N = R * P
    assert (masks.n_rois, masks.n_time_patches) == (R, P)
    assert masks.kinds == [k for k in KINDS if k in masks.kinds] and len(masks.kinds) >= 1
    assert len(masks.targets) == len(masks.kinds)
    assert masks.context.shape[0] == batch and masks.context.shape[1] >= collator.config.min_keep
    blocks = []
    for idx in [masks.context, *masks.targets]:
        assert idx.dtype == torch.long and idx.shape[0] == batch and idx.shape[1] >= 1
        assert int(idx.min()) >= 0 and int(idx.max()) < N
        assert bool((idx.diff(dim=1) > 0).all()), "indices must be sorted and unique per row"
        blocks.append(_as_bool(idx, N))
    context, *targets = blocks
    for k, target in enumerate(targets):
        assert not (context & target).any(), f"{masks.kinds[k]} overlaps the context"
        for other in targets[k + 1 :]:
            assert not (target & other).any(), "targets overlap each other"


def _check_draw(collator: SpatiotemporalMaskCollator, seed: int) -> None:
    """Untruncated blocks: sizes inside their scales and the Brain-JEPA removal rules."""
    R, P, cfg = collator.n_rois, collator.n_time_patches, collator.config
    draw = collator.sample_blocks(BATCH, _seeded(seed))
    s = draw.sizes
    lo, hi = _floor_bounds(R, cfg.enc_mask_scale)
    assert lo <= s.observation_rois <= hi
    lo, hi = _floor_bounds(P, cfg.enc_mask_scale)
    assert lo <= s.observation_width <= hi
    lo, hi = _floor_bounds(R, cfg.pred_mask_R_scale)
    assert lo <= s.cross_roi_rois <= hi
    lo, hi = _floor_bounds(P, cfg.pred_mask_T_roi_scale)
    assert s.cross_roi_width <= s.observation_width
    assert s.cross_roi_width <= hi
    assert s.cross_roi_width >= lo or s.cross_roi_width == s.observation_width  # clamped
    lo, hi = _floor_bounds(P, cfg.pred_mask_T_scale)
    assert all(lo <= w <= hi for w in s.edge_width)
    lo_f, hi_f = cfg.pred_mask_R_roi_scale
    assert all(lo_f <= f <= hi_f for f in s.edge_roi_fraction)

    obs, ctx, t = draw.observation, draw.context, draw.targets
    obs_rois, obs_cols = obs.any(dim=2), obs.any(dim=1)
    assert bool((obs_rois.sum(dim=1) == s.observation_rois).all())
    assert bool((obs_cols.sum(dim=1) == s.observation_width).all())
    # the observation block is a full rectangle: its ROIs × a contiguous span
    assert torch.equal(obs, obs_rois[:, :, None] & obs_cols[:, None, :])
    assert bool((obs_cols.int().diff(dim=1).abs().sum(dim=1) <= 2).all())
    alpha_rois, alpha_cols = t["cross_roi"].any(dim=2), t["cross_roi"].any(dim=1)
    if s.cross_roi_width > 0:
        assert bool((alpha_rois.sum(dim=1) == s.cross_roi_rois).all())
        assert bool((alpha_cols.sum(dim=1) == s.cross_roi_width).all())
    assert not (alpha_cols & ~obs_cols).any(), "Cross-ROI span leaves the observation span"
    # Cross-ROI ROIs are absent from the context at every time step
    assert not (ctx.any(dim=2) & alpha_rois).any()
    # edge columns are absent from the context for all ROIs, and edge targets live only there
    cols = torch.arange(P)
    edge = (cols < s.edge_width[0]) | (cols >= P - s.edge_width[1])
    assert not ctx[:, :, edge].any()
    assert not t["cross_time"][:, :, ~edge].any() and not t["double_cross"][:, :, ~edge].any()
    context_rois = obs_rois & ~alpha_rois
    assert not (t["cross_time"].any(dim=2) & ~context_rois).any(), "Cross-Time off context ROIs"
    assert not (t["double_cross"].any(dim=2) & context_rois).any(), "Double-Cross on context ROIs"
    # the context is exactly what the rules leave of the observation block
    assert torch.equal(ctx, obs & context_rois[:, :, None] & ~edge)
    assert bool((ctx.sum(dim=(1, 2)) >= cfg.min_keep).all())
    # ROI counts of the edge blocks on the outermost left column (when the sides do not meet)
    if s.edge_width[0] > 0 and s.edge_width[0] + s.edge_width[1] <= P:
        n_ct = (context_rois.sum(dim=1) * s.edge_roi_fraction[0]).floor().long()
        assert torch.equal(t["cross_time"][:, :, 0].sum(dim=1), n_ct)
        n_dc = ((~context_rois).sum(dim=1) * s.edge_roi_fraction[0]).floor().long()
        untrimmed = ~alpha_cols[:, 0]
        assert bool((t["double_cross"][:, :, 0].sum(dim=1) <= n_dc).all())
        assert torch.equal(t["double_cross"][untrimmed, :, 0].sum(dim=1), n_dc[untrimmed])


@pytest.mark.parametrize(("n_rois", "n_time_patches", "n_seeds"), GRIDS)
def test_invariants_over_many_seeds(n_rois: int, n_time_patches: int, n_seeds: int) -> None:
    collator = SpatiotemporalMaskCollator(n_rois, n_time_patches)
    for seed in range(n_seeds):
        _check_draw(collator, seed)
        _check_masks(collator(BATCH, _seeded(seed)), collator, BATCH)


@pytest.mark.parametrize(("n_rois", "n_time_patches"), [(8, 4), (94, 10)])
def test_equalised_masks_are_random_subsets_of_the_draw(n_rois: int, n_time_patches: int) -> None:
    collator = SpatiotemporalMaskCollator(n_rois, n_time_patches)
    N = n_rois * n_time_patches
    differs_from_prefix = False
    for seed in range(60):
        # __call__ starts with sample_blocks, so the same seed reproduces the untruncated draw
        draw = collator.sample_blocks(6, _seeded(seed))
        masks = collator(6, _seeded(seed))
        context = draw.context.flatten(1)
        assert masks.context.shape[1] == int(context.sum(dim=1).min())
        assert not (_as_bool(masks.context, N) & ~context).any()
        present = [k for k in KINDS if bool(draw.targets[k].flatten(1).any(dim=1).all())]
        assert masks.kinds == present, "a kind is dropped exactly when some sample has none of it"
        for kind, idx in zip(masks.kinds, masks.targets):
            block = draw.targets[kind].flatten(1)
            assert idx.shape[1] == int(block.sum(dim=1).min())
            assert not (_as_bool(idx, N) & ~block).any()
        longest = int(context.sum(dim=1).argmax())
        prefix = context[longest].nonzero()[: masks.context.shape[1], 0]
        differs_from_prefix |= not torch.equal(prefix, masks.context[longest])
    assert differs_from_prefix, "truncation keeps a random subset, not I-JEPA's prefix"


def test_hand_computed_sizes_with_fixed_scales() -> None:
    # R = P = 10, every ROI and patch observed; Cross-ROI 5 ROIs × 3 patches; edges 2 patches each
    # side on floor(0.4 · 5) = 2 ROIs. Context = 5 ROIs × (10 − 2 − 2) patches = 30 tokens.
    fixed = dict(
        enc_mask_scale=(1.0, 1.0),
        pred_mask_R_scale=(0.5, 0.5),
        pred_mask_T_roi_scale=(0.3, 0.3),
        pred_mask_R_roi_scale=(0.4, 0.4),
        pred_mask_T_scale=(0.2, 0.2),
    )
    collator = SpatiotemporalMaskCollator(10, 10, MaskConfig(**fixed))
    for seed in range(20):
        masks = collator(4, _seeded(seed))
        assert masks.kinds == list(KINDS)
        assert masks.context.shape == (4, 30)
        assert masks.targets[0].shape == (4, 15)  # 5 ROIs × 3 patches
        assert masks.targets[1].shape == (4, 8)  # 2 ROIs × 2 patches × 2 sides
        assert masks.targets[2].shape[1] <= 8  # less where it meets the Cross-ROI block
        grid = masks.grid(0)
        assert grid[:, [0, 1, 8, 9]].max() >= 3 and (grid[:, [0, 1, 8, 9]] != 1).all()
    overlapping = SpatiotemporalMaskCollator(10, 10, MaskConfig(**fixed, allow_overlap=True))
    masks = overlapping(4, _seeded(0))
    assert masks.context.shape == (4, 100)  # the whole observation block
    assert [t.shape[1] for t in masks.targets] == [15, 8, 8]


def test_zero_width_edges_drop_their_kinds() -> None:
    collator = SpatiotemporalMaskCollator(20, 6, MaskConfig(pred_mask_T_scale=(0.0, 0.0)))
    for seed in range(30):
        masks = collator(4, _seeded(seed))
        assert masks.kinds == ["cross_roi"]
        _check_masks(masks, collator, 4)
        # no edge column is removed: the context keeps the whole observation span
        draw = collator.sample_blocks(4, _seeded(seed))
        assert torch.equal(draw.context.any(dim=1), draw.observation.any(dim=1))


def test_default_scales_sometimes_drop_edge_kinds() -> None:
    # (0.0, 0.4) on P = 4 gives width 0 with probability 5/8 per side
    collator = SpatiotemporalMaskCollator(8, 4)
    kinds = [tuple(collator(2, _seeded(seed)).kinds) for seed in range(60)]
    assert ("cross_roi",) in kinds and any("cross_time" in k for k in kinds)


def test_two_time_patches_rarely_have_a_target_three_usually_do() -> None:
    # P = 2: edges floor(2 · U(0, .4)) = 0 always; Cross-ROI width floor(2 · U(.2, .6)) > 0 when U >= .5
    # (1/4). P = 3: Cross-ROI width > 0 with 2/3, each edge with 1/6: 1 - 1/3 · (5/6)^2 = 0.77.
    def with_target(n_patches: int) -> float:
        collator = SpatiotemporalMaskCollator(119, n_patches)
        generator = _seeded(0)
        draws = [collator.sample_sizes(generator) for _ in range(4000)]
        return sum(d.cross_roi_width > 0 or max(d.edge_width) > 0 for d in draws) / len(draws)

    assert with_target(2) == pytest.approx(0.25, abs=0.03)
    assert with_target(3) == pytest.approx(1 - (1 / 3) * (5 / 6) ** 2, abs=0.03)


def test_min_keep_is_guaranteed() -> None:
    collator = SpatiotemporalMaskCollator(8, 4, MaskConfig(min_keep=9))
    for seed in range(50):
        assert collator(8, _seeded(seed)).context.shape[1] >= 9


def test_unreachable_configs_raise_config_error() -> None:
    # at most floor(8 · 0.99..) = 7 ROIs × 3 patches = 21 context tokens can exist
    with pytest.raises(ConfigError, match="min_keep=30"):
        SpatiotemporalMaskCollator(8, 4, MaskConfig(min_keep=30))(2, _seeded(0))
    with pytest.raises(ConfigError, match="min_keep=33 exceeds"):
        SpatiotemporalMaskCollator(8, 4, MaskConfig(min_keep=33))
    no_target = MaskConfig(pred_mask_T_roi_scale=(0.0, 0.0), pred_mask_T_scale=(0.0, 0.0))
    with pytest.raises(ConfigError, match="non-empty target"):
        SpatiotemporalMaskCollator(8, 4, no_target)(2, _seeded(0))


def test_same_seed_same_masks_different_seed_different() -> None:
    collator = SpatiotemporalMaskCollator(94, 10)
    a, b = collator(4, _seeded(7)), collator(4, _seeded(7))
    assert torch.equal(a.context, b.context) and a.kinds == b.kinds
    assert all(torch.equal(x, y) for x, y in zip(a.targets, b.targets))
    contexts = {tuple(collator(4, _seeded(seed)).context[0].tolist()) for seed in range(10)}
    assert len(contexts) == 10
    # without a generator, torch's global generator is used (seeded by torch.manual_seed)
    torch.manual_seed(3)
    c = collator(2).context
    torch.manual_seed(3)
    assert torch.equal(c, collator(2).context)


def test_device_argument_and_to() -> None:
    collator = SpatiotemporalMaskCollator(30, 7)
    masks = collator(2, _seeded(0), device="cpu")
    assert masks.context.device.type == "cpu"
    moved = masks.to("meta")
    assert moved.context.device.type == "meta"
    assert all(t.device.type == "meta" for t in moved.targets)
    assert masks.context.device.type == "cpu", "to() returns a copy"


def test_grid_codes_match_indices() -> None:
    collator = SpatiotemporalMaskCollator(30, 7)
    masks = collator(3, _seeded(1))
    for b in range(3):
        grid = masks.grid(b)
        assert grid.shape == (30, 7)
        flat = grid.reshape(-1)  # ROI-major: token = roi * P + t
        assert (flat[masks.context[b].numpy()] == 1).all()
        assert (grid == 1).sum() == masks.context.shape[1]
        for k, target in enumerate(masks.targets):
            assert (flat[target[b].numpy()] == 2 + k).all()
            assert (grid == 2 + k).sum() == target.shape[1]


def test_typical_sizes_match_the_reference() -> None:
    # the reference implementation: ~1.4k context and ~1.1k target tokens of 4,500 on 450 × 10
    collator = SpatiotemporalMaskCollator(450, 10)
    gen = _seeded(0)
    draws = [collator(1, gen) for _ in range(40)]
    context = sum(m.context.shape[1] for m in draws) / len(draws)
    target = sum(sum(t.shape[1] for t in m.targets) for m in draws) / len(draws)
    assert 1100 < context < 1600 and 850 < target < 1350


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"enc_mask_scale": (0.9, 0.5)}, "enc_mask_scale.*min > max"),
        ({"pred_mask_R_scale": (-0.1, 0.5)}, "pred_mask_R_scale.*outside"),
        ({"pred_mask_T_scale": (0.0, 1.5)}, "pred_mask_T_scale.*outside"),
        ({"pred_mask_T_roi_scale": (0.2,)}, "pred_mask_T_roi_scale.*not a pair"),
        ({"pred_mask_R_roi_scale": ("a", 0.3)}, "pred_mask_R_roi_scale.*not numeric"),
        ({"enc_mask_scale": (float("nan"), 1.0)}, "enc_mask_scale.*outside"),
        ({"min_keep": 0}, "min_keep"),
    ],
)
def test_bad_config_raises(overrides: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        MaskConfig(**overrides)


def test_bad_grid_and_batch_raise() -> None:
    with pytest.raises(ConfigError, match="n_rois"):
        SpatiotemporalMaskCollator(1, 10)
    with pytest.raises(ConfigError, match="n_time_patches"):
        SpatiotemporalMaskCollator(10, 1)
    with pytest.raises(ConfigError, match="batch_size"):
        SpatiotemporalMaskCollator(10, 10)(0)


def test_config_loads_from_yaml_style_dict() -> None:
    cfg = config_from_dict(MaskConfig, {"enc_mask_scale": [0.8, 0.9], "min_keep": 2}, "masks")
    assert cfg.enc_mask_scale == (0.8, 0.9) and cfg.min_keep == 2
    with pytest.raises(ConfigError, match="pred_mask_R_scale"):
        config_from_dict(MaskConfig, {"pred_mask_R_scale": [0.7, 0.2]}, "masks")
