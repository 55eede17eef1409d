"""Mask figures, coverage statistics and the MaskInspector widget (Agg backend, small grids)."""

from __future__ import annotations

import base64

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

from workbench.models.jepa.masks import KINDS, MaskConfig, SpatiotemporalMaskCollator
from workbench.viz.masks import (
    MaskInspector,
    coverage_stats,
    mask_gallery,
    mask_inspector,
    plot_coverage,
    plot_mask_grid,
    render_masks,
)

R, P = 12, 5


def _grid(config: MaskConfig, seed: int) -> np.ndarray:
    masks = SpatiotemporalMaskCollator(R, P, config)(1, torch.Generator().manual_seed(seed))
    return masks.grid(0)


def test_plot_mask_grid_shows_the_grid_with_a_legend() -> None:
    masks = SpatiotemporalMaskCollator(R, P)(2, torch.Generator().manual_seed(0))
    ax = plot_mask_grid(masks, b=1)
    np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), masks.grid(1))
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(labels) == 2 + len(masks.kinds)
    assert labels[1] == f"context: {masks.context.shape[1]}"


def test_render_masks_image_equals_the_masks_grid() -> None:
    config = MaskConfig(min_keep=3)
    fig, stats = render_masks(R, P, config, seed=4, n_draws=20)
    image = np.asarray(fig.axes[0].images[0].get_array())
    np.testing.assert_array_equal(image, _grid(config, 4))
    assert stats["n_samples"] == 20


def test_coverage_stats_agree_with_direct_counts() -> None:
    collator = SpatiotemporalMaskCollator(R, P)
    stats = coverage_stats(collator, n_draws=30, seed=2)
    generator = torch.Generator().manual_seed(2)
    draws = [collator(1, generator) for _ in range(30)]
    context = [m.context.shape[1] for m in draws]
    assert stats["counts"]["context"]["mean"] == pytest.approx(np.mean(context))
    assert stats["counts"]["context"]["std"] == pytest.approx(np.std(context))
    # the per-token probabilities sum to the mean counts
    assert stats["p_context"].shape == (R, P)
    assert stats["p_context"].sum() == pytest.approx(np.mean(context))
    for kind in KINDS:
        assert stats["p_kind"][kind].sum() == pytest.approx(stats["counts"][kind]["mean"])
        freq = np.mean([kind in m.kinds for m in draws])
        assert stats["kind_frequency"][kind] == pytest.approx(freq)
    # targets are disjoint from each other and from the context (allow_overlap=False)
    assert stats["p_target"].sum() == pytest.approx(stats["counts"]["targets"]["mean"])
    assert (stats["p_context"] + stats["p_target"] <= 1.0 + 1e-6).all()


def test_gallery_and_coverage_figures() -> None:
    collator = SpatiotemporalMaskCollator(R, P)
    fig = mask_gallery(collator, n=7, seed=1)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 7
    # draw i is the i-th call on one generator seeded with the seed
    generator = torch.Generator().manual_seed(1)
    for ax in shown:
        expected = collator(1, generator).grid(0)
        np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), expected)
    stats = coverage_stats(collator, n_draws=10, seed=0)
    cover = plot_coverage(stats)
    np.testing.assert_array_equal(np.asarray(cover.axes[0].images[0].get_array()), stats["p_context"])


def test_inspector_draws_on_creation() -> None:
    inspector = mask_inspector(R, P, seed=3, n_draws=20)
    assert isinstance(inspector, MaskInspector)
    assert inspector.error is None
    np.testing.assert_array_equal(np.asarray(inspector.figure.axes[0].images[0].get_array()), _grid(MaskConfig(), 3))
    (output,) = inspector.output.outputs
    png = base64.b64decode(output["data"]["image/png"])
    assert png.startswith(b"\x89PNG")
    assert set(inspector.controls) >= {"enc_mask_scale", "pred_mask_T_scale", "min_keep", "seed"}
    assert inspector.widget.children[-1] is inspector.output


def test_inspector_redraws_on_slider_change() -> None:
    inspector = MaskInspector(R, P, seed=0, n_draws=20)
    first_figure, first_stats = inspector.figure, inspector.stats
    inspector.controls["seed"].value = 9
    assert inspector.figure is not first_figure
    np.testing.assert_array_equal(np.asarray(inspector.figure.axes[0].images[0].get_array()), _grid(MaskConfig(), 9))
    assert inspector.stats["counts"] != first_stats["counts"]

    inspector.controls["pred_mask_T_scale"].value = (0.0, 0.0)
    config = MaskConfig(pred_mask_T_scale=(0.0, 0.0))
    assert inspector.config() == config
    np.testing.assert_array_equal(np.asarray(inspector.figure.axes[0].images[0].get_array()), _grid(config, 9))
    assert inspector.stats["counts"]["cross_time"]["mean"] == 0.0
    assert inspector.stats["kind_frequency"]["double_cross"] == 0.0


def test_invalid_settings_show_the_error_instead_of_raising() -> None:
    inspector = MaskInspector(R, P, n_draws=10)
    last_figure = inspector.figure
    # at most floor(12 · 0.99..) = 11 ROIs × 4 patches = 44 context tokens can exist
    inspector.controls["min_keep"].value = 50
    assert inspector.error is not None and "min_keep=50" in inspector.error
    (output,) = inspector.output.outputs
    assert output["output_type"] == "stream" and "Invalid mask settings" in output["text"]
    assert inspector.figure is last_figure
    # going back to valid settings draws again
    inspector.controls["min_keep"].value = 4
    assert inspector.error is None and inspector.output.outputs[0]["output_type"] == "display_data"
