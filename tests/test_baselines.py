"""FC fingerprinting, LDA on FC, chance and the linear probe (the FC features: test_connectivity.py)."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.connectivity import fc_profiles
from workbench.data.recording import Recording
from workbench.data.windows import WindowSet
from workbench.errors import ConfigError, DataError
from workbench.evaluation import (
    chance_summary,
    fc_fingerprint_factory,
    lda_fc_factory,
    linear_probe,
)


def _subject_runs(n_subjects=4, n_rois=6, n_frames=200, seed=0):
    """Runs whose ROI covariance is subject-specific: FC separates the subjects."""
    rng = np.random.default_rng(seed)
    runs = []
    for s in range(n_subjects):
        mixing = np.eye(n_rois) + rng.normal(size=(n_rois, n_rois))
        data = (rng.normal(size=(n_frames, n_rois)) @ mixing).astype(np.float32)
        runs.append(Recording(f"s{s}", "1", data, 0.72))
    return runs


def test_fingerprint_factory_is_untrained_fc():
    windows = WindowSet(_subject_runs(), 20, 10)
    embed = fc_fingerprint_factory(windows)
    x = windows.get(np.arange(4))
    np.testing.assert_array_equal(embed(x), fc_profiles(x))


def test_lda_factory_fits_on_given_windows_and_projects_to_c_minus_one_dims():
    runs = _subject_runs()
    train = WindowSet(runs, 20, 5, part="first")
    embed = lda_fc_factory(train)
    held_out = WindowSet(runs, 20, 20, part="second")
    z = embed(held_out.get(np.arange(len(held_out))))
    assert z.shape == (len(held_out), 3) and z.dtype == np.float32
    centroids = np.stack([z[held_out.labels == c].mean(0) for c in range(4)])
    nearest = ((z[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    assert (nearest == held_out.labels).mean() > 0.9


def test_lda_factory_needs_two_subjects():
    with pytest.raises(DataError, match="at least two subjects"):
        lda_fc_factory(WindowSet(_subject_runs(n_subjects=1), 20, 5))


def test_chance_levels():
    assert chance_summary(6) == {
        "accuracy": {"mean": 1 / 6, "ci": 0.0},
        "macro_f1": {"mean": 1 / 6, "ci": 0.0},
        "roc_auc": {"mean": 0.5, "ci": 0.0},
        "eer": {"mean": 0.5, "ci": 0.0},
    }


def _probe_data(seed=0):
    rng = np.random.default_rng(seed)
    centres = 3.0 * rng.normal(size=(3, 5))
    y_train, y_test = rng.integers(0, 3, 90), rng.integers(0, 3, 60)
    return (centres[y_train] + rng.normal(size=(90, 5)), y_train, centres[y_test] + rng.normal(size=(60, 5)), y_test)


def test_linear_probe_classification_uses_training_statistics_only():
    x_train, y_train, x_test, y_test = _probe_data()
    result = linear_probe(x_train, y_train, x_test, y_test)
    assert result["accuracy"] > 0.95 and result["macro_f1"] > 0.95
    assert result["n_train"] == 90 and result["n_test"] == 60
    # A scaler fitted on the test rows would undo this shift; one fitted on train does not.
    shifted = linear_probe(x_train, y_train, x_test + 100.0, y_test)
    assert shifted["accuracy"] < 0.6


def test_linear_probe_regression_recovers_a_linear_target():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 4))
    y = x @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.01 * rng.normal(size=200)
    result = linear_probe(x[:150], y[:150], x[150:], y[150:], task="regression")
    assert result["r2"] > 0.99 and result["pearson_r"] > 0.99 and result["mse"] < 0.01


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"task": "ranking"}, ConfigError, "task='ranking' is unknown"),
        ({"train_y": np.zeros(90)}, DataError, "single class"),
        ({"test_emb": np.zeros((60, 4))}, DataError, "D=5, test_emb D=4"),
    ],
)
def test_linear_probe_bad_input(kwargs, error, message):
    x_train, y_train, x_test, y_test = _probe_data()
    arguments = {"train_emb": x_train, "train_y": y_train, "test_emb": x_test, "test_y": y_test} | kwargs
    with pytest.raises(error, match=message):
        linear_probe(**arguments)
