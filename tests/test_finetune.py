"""Fine-tuning every family with a head: learning, layer-wise rates, early stopping, the inner split, errors."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import balanced_accuracy_score, r2_score

from workbench.data.normalize import Standardizer
from workbench.data.spec import DataSpec
from workbench.errors import ConfigError, DataError
from workbench.evaluation.finetune import (
    FinetuneSettings,
    finetune,
    finetune_predictions,
    inner_validation_split,
    layer_depths,
)
from workbench.train import build_method

R, T = 10, 32  # jepa tiny: patch 8 -> 4 time patches
GRID = (6, 7, 4)  # recvae: 168 voxels, frames of windows of 6
MIX = np.random.default_rng(0).standard_normal((3, R))
WINDOW = Standardizer.from_dict({"mode": "window", "mean": [0.0] * R, "std": [1.0] * R})  # the engine's default
FAST = FinetuneSettings(lr=3e-3, batch_size=16)
FAMILIES = {
    "fewshot": ("tiny", {}),
    "jepa": ("tiny", {"gradient_sparsity": 0.8}),  # 10 ROIs keep 2 FC entries per row: a connected graph
    "yaware": ("tiny", {}),
    "lfr": ("tiny", {}),
}


def _windows(n: int, seed: int = 1, signal: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows with shared structure, labels alternating 0/1 (class 1: an oscillation in 5 ROIs), 16 per group."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, T, 3)) @ MIX + rng.standard_normal((n, T, R))).astype(np.float32)
    y = np.tile([0, 1], n // 2)
    x[y == 1, :, :5] += signal * np.sin(np.arange(T) / 2.0)[None, :, None].astype(np.float32)
    return x, y, np.arange(n) // 16


def _method(family: str, preset: str | None = None, windows: np.ndarray | None = None, seed: int = 0, **over):
    default_preset, default_over = FAMILIES.get(family, (None, {}))
    torch.manual_seed(seed)
    method = build_method(family, DataSpec(R, T), preset or default_preset, {**default_over, **over})
    if family == "jepa":  # its gradient positional code is fitted on training windows
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            method.prepare(WINDOW.transform(windows if windows is not None else _windows(32)[0]))
    return method


def _volumes(n: int = 128, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Volume frames of recvae: class 1 raises a 3×3×2 block of voxels by 1 (a mean offset)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6, int(np.prod(GRID)))).astype(np.float32)
    y = np.tile([0, 1], n // 2)
    block = np.zeros(GRID, bool)
    block[1:4, 1:4, 1:3] = True
    x[np.ix_(y == 1, np.arange(6), np.flatnonzero(block.ravel()))] += 1.0
    return x, y, np.arange(n) // 16


def _chance_cross_entropy(method, standardizer, x, y, groups, x_test, y_test) -> float:
    """Test cross-entropy of the head at its initialisation (one epoch at a negligible rate)."""
    untrained = finetune(method, standardizer, x, y, groups, "categorical", FinetuneSettings(lr=1e-12, max_epochs=1))
    logits = torch.as_tensor(untrained.outputs(x_test))
    return float(F.cross_entropy(logits, torch.as_tensor(y_test)))


# -- 1. every family learns a separable task ----------------------------------------------------------


@pytest.mark.parametrize("family", ["fewshot", "jepa", "yaware", "lfr", "recvae"])
def test_every_family_goes_from_chance_to_a_separable_task(family):
    if family == "recvae":  # volume frames on a grid; a mean offset, so no per-window scaling
        x, y, groups = _volumes()
        standardizer = Standardizer("none")
        torch.manual_seed(0)
        method = build_method("recvae", DataSpec(x.shape[2], 6, grid=GRID, n_subjects=1), "tiny", {})
    else:  # the oscillation survives per-window z-scoring; jepa's patch_norm keeps its shape, not its amplitude
        x, y, groups = _windows(128)
        standardizer = WINDOW
        method = _method(family, windows=x[groups < 6])
    fit, test = groups < 6, groups >= 6  # 6 training groups, 2 held-out groups never seen
    chance = _chance_cross_entropy(method, standardizer, x[fit], y[fit], groups[fit], x[test], y[test])
    assert chance == pytest.approx(math.log(2), abs=0.01)  # the untrained head knows nothing
    tuned = finetune(method, standardizer, x[fit], y[fit], groups[fit], "categorical", FAST)
    accuracy = balanced_accuracy_score(y[test], tuned.predict(x[test]))
    logits = torch.as_tensor(tuned.outputs(x[test]))
    print(f"{family}: balanced accuracy {accuracy:.3f} after {tuned.history['stopped_epoch']} epochs")
    assert accuracy >= 0.8
    assert float(F.cross_entropy(logits, torch.as_tensor(y[test]))) < chance - 0.2
    assert set(np.unique(tuned.predict(x[test]))) <= {0, 1}


def test_class_codes_come_back_as_given():
    x, y, groups = _windows(96)
    codes = np.where(y == 1, "rest", "task")
    tuned = finetune(_method("yaware"), WINDOW, x, codes, groups, "categorical", FinetuneSettings(max_epochs=2))
    assert list(tuned.classes) == ["rest", "task"] and set(tuned.predict(x[:8])) <= {"rest", "task"}


# -- 2. layer-wise learning-rate decay ----------------------------------------------------------------


def test_jepa_depths_follow_beit_and_the_rates_are_applied():
    method = _method("jepa")
    depths = layer_depths(method, WINDOW.transform(_windows(4)[0]))
    depth = method.config.depth
    assert depths["target_encoder.patch_embed.weight"] == 0  # target (EMA) encoder, per embed_with
    assert depths["target_encoder.transformer.norm.weight"] == depth + 1
    for i in range(depth):
        block = {k: v for k, v in depths.items() if k.startswith(f"target_encoder.transformer.blocks.{i}.")}
        assert block and set(block.values()) == {i + 1}
    assert not any(k.startswith(("predictor.", "encoder.")) for k in depths)  # never read by embed
    assert all(not p.requires_grad for p in method.target_encoder.parameters())  # flags restored

    x, y, groups = _windows(64)
    settings = FinetuneSettings(lr=2e-3, layer_decay=0.5, max_epochs=2)
    tuned = finetune(method, WINDOW, x, y, groups, "categorical", settings)
    assert tuned.learning_rates == {d: 2e-3 * 0.5 ** (depth + 1 - d) for d in range(depth + 2)}
    # a decay of 1e-6 freezes the patch embedding (rate 1e-21) while the top depth trains at lr
    frozen = finetune(method, WINDOW, x, y, groups, "categorical", FinetuneSettings(layer_decay=1e-6, max_epochs=2))
    copy = frozen.model.method.target_encoder
    torch.testing.assert_close(copy.patch_embed.weight, method.target_encoder.patch_embed.weight, rtol=0, atol=1e-12)
    assert not torch.allclose(copy.transformer.norm.weight, method.target_encoder.transformer.norm.weight)


def test_transformer_layers_are_blocks_and_a_connectome_is_one_depth():
    example = WINDOW.transform(_windows(4)[0])
    depths = layer_depths(_method("yaware"), example)
    assert depths["backbone.proj_in.weight"] == 0 and depths["backbone.transformer.norm.weight"] == 2
    assert {v for k, v in depths.items() if ".transformer.layers.0." in k} == {1}
    assert not any(k.startswith("projection") for k in depths)  # the projection head is not the embedding
    connectome = _method("fewshot", preset=None, encoder="connectome")
    assert set(layer_depths(connectome, example).values()) == {0}
    x, y, groups = _windows(64)
    tuned = finetune(connectome, WINDOW, x, y, groups, "categorical", FinetuneSettings(lr=1e-3, max_epochs=1))
    assert tuned.learning_rates == {0: 1e-3}


# -- 3. the original is untouched; seeds --------------------------------------------------------------


def test_the_method_is_untouched_and_seeds_reproduce():
    method = _method("jepa")
    before = {k: v.clone() for k, v in method.state_dict().items()}
    flags = [p.requires_grad for p in method.parameters()]
    x, y, groups = _windows(64)
    settings = FinetuneSettings(max_epochs=3, batch_size=16)
    rng_state = torch.get_rng_state()
    first = finetune(method, WINDOW, x, y, groups, "categorical", settings, seed=3)
    assert torch.equal(torch.get_rng_state(), rng_state)  # the global RNG is left alone
    assert all(torch.equal(v, method.state_dict()[k]) for k, v in before.items())
    assert [p.requires_grad for p in method.parameters()] == flags
    again = finetune(method, WINDOW, x, y, groups, "categorical", settings, seed=3)
    assert again.history == first.history
    np.testing.assert_array_equal(again.outputs(x), first.outputs(x))
    other = finetune(method, WINDOW, x, y, groups, "categorical", settings, seed=4)
    assert other.history["train_loss"] != first.history["train_loss"]


# -- 4. early stopping --------------------------------------------------------------------------------


def test_early_stopping_restores_the_best_epoch():
    x, _, groups = _windows(96)
    y = np.random.default_rng(5).integers(0, 2, len(x))  # random labels: fitting them only over-fits
    settings = FinetuneSettings(lr=1e-2, patience=1, max_epochs=30, batch_size=16)
    tuned = finetune(_method("yaware"), WINDOW, x, y, groups, "categorical", settings)
    history = tuned.history
    assert history["stopped_epoch"] < settings.max_epochs and len(history["val_loss"]) == history["stopped_epoch"]
    assert history["best_epoch"] < history["stopped_epoch"]
    best = history["val_loss"][history["best_epoch"] - 1]
    assert best == min(history["val_loss"]) and history["val_loss"][-1] > best
    val = tuned.validation_rows
    np.testing.assert_array_equal(val, inner_validation_split(groups, settings.val_fraction, 0)[1])
    logits = torch.as_tensor(tuned.outputs(x[val]))
    assert float(F.cross_entropy(logits, torch.as_tensor(y[val]))) == pytest.approx(best, rel=1e-5)


# -- 5. the inner split -------------------------------------------------------------------------------


def test_inner_validation_split_holds_out_whole_groups():
    groups = np.repeat(np.array(list("abcdefghij")), 5)
    fit, val = inner_validation_split(groups, 0.2, seed=0)
    assert len(fit) + len(val) == len(groups) and not set(fit) & set(val)
    assert not set(groups[fit]) & set(groups[val]) and len(set(groups[val])) == 2  # 20 % of 10 groups
    draws = {tuple(sorted(set(groups[inner_validation_split(groups, 0.2, s)[1]]))) for s in range(5)}
    assert len(draws) > 1  # seeded draws
    np.testing.assert_array_equal(inner_validation_split(groups, 0.2, seed=0)[1], val)
    assert len(set(groups[inner_validation_split(groups, 0.01, 0)[1]])) == 1  # at least one group
    assert len(set(groups[inner_validation_split(groups[:10], 0.9, 0)[0]])) == 1  # at least one fitting group
    fit, val = inner_validation_split(np.zeros(20), 0.2)  # one group: the last rows, in time order
    np.testing.assert_array_equal(val, np.arange(16, 20))
    np.testing.assert_array_equal(fit, np.arange(16))
    with pytest.raises(ConfigError, match="val_fraction"):
        inner_validation_split(groups, 1.0)


# -- 6. errors ----------------------------------------------------------------------------------------


def test_bad_input_names_the_argument():
    method = _method("yaware")
    x, y, groups = _windows(32)
    cases = [
        (DataError, "windows must have shape", dict(windows=x[:, :, :7])),
        (DataError, "windows must have shape", dict(windows=x[0])),
        (DataError, "y must hold one value per window", dict(y=y[:31])),
        (DataError, "groups must hold one value per window", dict(groups=groups[:5])),
        (DataError, "windows hold NaN or inf", dict(windows=np.where(np.arange(R) == 3, np.nan, x))),
        (DataError, "y holds NaN", dict(y=np.where(np.arange(32) == 4, np.inf, y * 1.0), kind="continuous")),
        (DataError, "at least 2", dict(windows=x[:2], y=y[:2], groups=np.zeros(2))),
        (DataError, "single class", dict(y=np.zeros(32))),
        (ConfigError, "kind=", dict(kind="ranking")),
        (ConfigError, "readout=", dict(readout="roi")),  # jepa's, not yaware's
        (ConfigError, "settings", dict(settings={"lr": 1e-3})),
    ]
    for error, match, bad in cases:
        kwargs = {**dict(windows=x, y=y, groups=groups, kind="categorical"), **bad}
        with pytest.raises(error, match=match):
            finetune(method, WINDOW, **kwargs)
    with pytest.raises(DataError, match="test_windows"):
        finetune_predictions(method, WINDOW, x, y, groups, x[:, :, :7], "categorical")
    with pytest.raises(DataError, match="train_y"):
        finetune_predictions(method, WINDOW, x, y[:3], groups, x, "categorical")
    for field, value in [
        ("lr", 0.0),
        ("layer_decay", 1.5),
        ("weight_decay", -0.1),
        ("max_epochs", 0),
        ("patience", 2.5),
        ("batch_size", 1),
        ("val_fraction", 1.0),
    ]:
        with pytest.raises(ConfigError, match=rf"FinetuneSettings\.{field}=.*must be"):
            FinetuneSettings(**{field: value})


def test_jepa_fine_tunes_its_roi_readout():
    method = _method("jepa")
    x, y, groups = _windows(32)
    tuned = finetune(method, WINDOW, x, y, groups, "categorical", FinetuneSettings(max_epochs=1), readout="roi")
    assert tuned.model.head[1].in_features == R * method.config.embed_dim


# -- 7. regression ------------------------------------------------------------------------------------


def test_a_continuous_target_is_learned_in_its_units():
    rng = np.random.default_rng(2)
    n = 160
    x = (rng.standard_normal((n, T, R)) + rng.standard_normal((n, 1, 1))).astype(np.float32)  # a level per window
    target = 3.0 * x.mean(axis=(1, 2)) + 10.0
    groups = np.arange(n) // 16
    fit, test = groups < 8, groups >= 8
    predicted = finetune_predictions(
        _method("yaware"), Standardizer("none"), x[fit], target[fit], groups[fit], x[test], "continuous", FAST
    )
    r2 = r2_score(target[test], predicted)
    print(f"regression R2 {r2:.3f}")
    assert r2 > 0.5
