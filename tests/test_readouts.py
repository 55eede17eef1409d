"""Readouts that keep the token grid: jepa's per-ROI pooling beside the mean pool, through the factories."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from workbench.data.normalize import Standardizer
from workbench.data.recording import Recording
from workbench.data.spec import DataSpec
from workbench.errors import ConfigError, DataError
from workbench.models.jepa.model import BrainJEPA, pool_roi_tokens, pool_tokens
from workbench.notebook import readout_factories, training_plan
from workbench.runs import TrainedFactory, check_readout, embed_function, training_windows, untrained_factory

R, T = 10, 32  # tiny preset: patch 8 -> 4 time patches, 40 ROI-major tokens


def _windows(n: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal((n, T, 3)) @ rng.standard_normal((3, R))
    return (shared + rng.standard_normal((n, T, R))).astype(np.float32)


def test_roi_pool_averages_each_rois_patches_then_normalises_per_roi():
    # 2 ROIs x 3 time patches x 4 features, ROI-major: tokens 0-2 are ROI 0, tokens 3-5 ROI 1
    h = torch.arange(24, dtype=torch.float32).reshape(1, 6, 4) ** 1.5
    expected = torch.cat([F.layer_norm(h[:, :3].mean(1), (4,)), F.layer_norm(h[:, 3:].mean(1), (4,))], dim=1)
    torch.testing.assert_close(pool_roi_tokens(h, 2), expected)
    # one ROI is the mean pool
    torch.testing.assert_close(pool_roi_tokens(h, 1), pool_tokens(h))
    with pytest.raises(DataError, match="6 tokens do not form a grid of 4 ROIs"):
        pool_roi_tokens(h, 4)


def test_jepa_embeds_with_either_readout():
    torch.manual_seed(0)
    method = BrainJEPA(BrainJEPA.make_config("tiny", gradient_sparsity=0.8), DataSpec(R, T))
    method.prepare(_windows(24))
    x = torch.as_tensor(_windows(3, seed=1))
    with torch.no_grad():
        mean, roi = method.embed(x), method.embed(x, readout="roi")
        tokens = method.target_encoder(x[:, :, :].transpose(1, 2).unsqueeze(1), method.gradients)
    assert mean.shape == (3, 32) and roi.shape == (3, R * 32)
    torch.testing.assert_close(roi, pool_roi_tokens(tokens, R))
    with pytest.raises(ConfigError, match="readout='cls' is unknown; use one of mean, roi"):
        method.embed(x, readout="cls")
    run = Recording("s", "1", _windows(4).reshape(-1, R), 1.0)
    standardizer = Standardizer("window").fit(training_windows([run], T))
    np.testing.assert_allclose(
        embed_function(method, standardizer, readout="roi")(_windows(3, seed=1)).shape, (3, R * 32)
    )


def test_a_readout_shares_its_familys_run_and_other_families_refuse_it(tmp_path):
    rng = np.random.default_rng(0)
    runs = [Recording(f"s{i}", "1", rng.standard_normal((80, R)).astype(np.float32), 1.0) for i in range(3)]
    windows = training_windows(runs, T)
    mean = TrainedFactory("jepa", "tiny", run_root=tmp_path, progress=False)
    roi = TrainedFactory("jepa", "tiny", run_root=tmp_path, progress=False, readout="roi")
    assert mean.run_dir(windows) == roi.run_dir(windows)
    with pytest.raises(ConfigError, match="'fewshot' has no readout 'roi'; it offers \\['mean'\\]"):
        check_readout("fewshot", "roi")
    with pytest.raises(ConfigError, match="no readout"):
        untrained_factory("fewshot", readout="roi")
    embed = untrained_factory("jepa", "tiny", overrides={"gradient_sparsity": 0.5}, readout="roi", device="cpu")
    assert embed(windows)(windows.get(np.arange(2))).shape == (2, R * 32)
    plan = training_plan({"methods": ["fewshot", "jepa"], "presets": {"jepa": "tiny"}})
    extra = readout_factories(plan, tmp_path, progress=False)
    assert list(extra) == ["jepa · roi"] and extra["jepa · roi"].readout == "roi"
