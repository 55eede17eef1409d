"""Random views: temporal crop, ROI dropout, amplitude scaling, noise."""

from __future__ import annotations

import pytest
import torch

from workbench.errors import ConfigError
from workbench.models.augment import ViewConfig, augment

N_FRAMES, N_ROIS = 12, 6


def test_augmentation_crops_drops_and_is_identity_when_off() -> None:
    x = torch.randn(4, N_FRAMES, N_ROIS)
    assert torch.equal(augment(x, ViewConfig()), x)
    torch.manual_seed(0)
    out = augment(x, ViewConfig(crop=0.5, roi_dropout=0.5))
    assert out.shape == (4, N_FRAMES // 2, N_ROIS)
    dropped = (out == 0).all(dim=1)  # whole ROIs zeroed
    assert dropped.any() and not dropped.all()
    for b in range(4):  # every kept frame is a contiguous crop of the original
        kept = ~dropped[b]
        half = N_FRAMES // 2
        starts = [s for s in range(half + 1) if torch.equal(x[b, s : s + half][:, kept], out[b][:, kept])]
        assert len(starts) == 1


def test_scaling_multiplies_each_window_by_one_positive_factor_and_noise_adds() -> None:
    x = torch.randn(8, N_FRAMES, N_ROIS)
    torch.manual_seed(1)
    scaled = augment(x, ViewConfig(scale=0.5))
    factor = scaled / x
    assert torch.allclose(factor, factor[:, :1, :1].expand_as(factor), rtol=1e-5)  # one factor per window
    assert (factor > 0).all() and factor[:, 0, 0].std() > 0.1
    torch.manual_seed(2)
    noisy = augment(x, ViewConfig(noise=0.1))
    assert 0.05 < (noisy - x).std() < 0.15


def test_views_come_from_the_global_rng() -> None:
    x = torch.randn(4, N_FRAMES, N_ROIS)
    view = ViewConfig(crop=0.7, roi_dropout=0.2, scale=0.1, noise=0.1)
    torch.manual_seed(5)
    first = augment(x, view)
    torch.manual_seed(5)
    assert torch.equal(augment(x, view), first)


@pytest.mark.parametrize("bad", [{"crop": 0.0}, {"crop": 1.5}, {"roi_dropout": 1.0}, {"scale": -1.0}, {"noise": -0.1}])
def test_bad_settings_are_config_errors(bad) -> None:
    with pytest.raises(ConfigError):
        ViewConfig(**bad)
