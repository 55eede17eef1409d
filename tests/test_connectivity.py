"""The one connectivity module: correlations, Fisher z, FC profiles and group FC."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from nilearn.connectome import ConnectivityMeasure
from sklearn.covariance import EmpiricalCovariance

from workbench.connectivity import (
    R_MAX,
    correlation,
    fc_matrix,
    fc_profile,
    fc_profiles,
    fisher_z,
    group_fc,
    upper_triangle,
)
from workbench.errors import DataError


def _windows(n=5, t=30, r=7, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, t, r))
    x[..., 3] += 0.8 * x[..., 1]  # some real correlation structure
    return x


def test_correlation_equals_nilearn_connectivity_measure():
    windows = _windows()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nilearn's deprecation chatter
        measure = ConnectivityMeasure(kind="correlation", cov_estimator=EmpiricalCovariance(), standardize=False)
        expected = measure.fit_transform(list(windows))
    ours = correlation(windows).numpy()
    # nilearn sets the diagonal to 1; ours is var / (std + eps)^2, 1 to 1e-8
    np.testing.assert_allclose(ours, expected, atol=1e-7)


def test_correlation_of_tensors_keeps_device_and_dtype():
    x = torch.randn(3, 20, 4, dtype=torch.float32)
    r = correlation(x)
    assert r.dtype == torch.float32 and r.shape == (3, 4, 4)
    np.testing.assert_allclose(r.numpy(), correlation(x.double().numpy()).numpy(), atol=1e-5)


def _reference_profile(window: np.ndarray) -> np.ndarray:
    """Independent FC profile of one ``(W, R)`` window with np.corrcoef (Finn et al. 2015)."""
    r = np.corrcoef(window.T)
    z = np.arctanh(r[np.triu_indices_from(r, k=1)])
    return (z - z.mean()) / z.std()


def test_fc_profiles_equal_the_corrcoef_computation_in_any_batching():
    windows = _windows().astype(np.float32)
    features = fc_profiles(windows, batch_size=2)  # batches must not change anything
    assert features.shape == (5, 21) and features.dtype == np.float32
    expected = np.stack([_reference_profile(w.astype(np.float64)) for w in windows])
    np.testing.assert_allclose(features, expected, atol=1e-5)
    np.testing.assert_allclose(fc_profile(torch.from_numpy(windows)).numpy(), features, atol=1e-5)


def test_constant_and_duplicate_rois_give_finite_profiles():
    rng = np.random.default_rng(1)
    window = rng.normal(size=(1, 25, 5))
    window[0, :, 2] = 4.0  # constant ROI: correlation undefined -> 0
    window[0, :, 4] = window[0, :, 0]  # duplicate ROI: r = 1 -> clipped
    features = fc_profiles(window)
    assert np.isfinite(features).all()
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.corrcoef(window[0].T)
    r[2, :] = r[:, 2] = 0.0
    z = np.arctanh(np.clip(r[np.triu_indices(5, k=1)], -R_MAX, R_MAX))
    np.testing.assert_allclose(features[0], (z - z.mean()) / z.std(), atol=1e-4)


def test_fisher_z_clips_once_and_upper_triangle_is_row_major():
    r = torch.tensor([[1.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    z = fisher_z(r)
    assert torch.isfinite(z).all() and z[0, 0] == pytest.approx(np.arctanh(R_MAX))
    m = torch.arange(16.0).reshape(4, 4)
    rows, cols = np.triu_indices(4, k=1)
    assert upper_triangle(m).tolist() == m.numpy()[rows, cols].tolist()


def test_group_fc_is_the_tanh_of_the_mean_fisher_z():
    windows = _windows(n=6, t=40, r=5, seed=3)
    fc = group_fc(windows)
    z = [np.arctanh(np.corrcoef(w.T)[np.triu_indices(5, k=1)]) for w in windows]
    expected = np.tanh(np.mean(z, axis=0))
    np.testing.assert_allclose(fc[np.triu_indices(5, k=1)], expected, atol=1e-5)
    assert np.allclose(np.diag(fc), 1.0) and np.allclose(fc, fc.T)
    runs = [windows[0], windows[1, :25]]  # runs of different lengths
    np.testing.assert_allclose(
        group_fc(runs)[0, 1], np.tanh(np.mean([np.arctanh(np.corrcoef(r.T)[0, 1]) for r in runs])), atol=1e-5
    )


def test_fc_matrix_of_one_series():
    series = _windows(n=1)[0]
    np.testing.assert_allclose(fc_matrix(series), np.corrcoef(series.T), atol=1e-7)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((10, 94)), np.zeros((2, 1, 4)), np.full((2, 10, 3), np.nan)],
    ids=["2-D", "one frame", "NaN"],
)
def test_bad_input_is_a_data_error(bad):
    with pytest.raises(DataError):
        if np.isnan(bad).any():
            group_fc(bad)
        else:
            fc_profiles(bad) if bad.ndim == 2 else correlation(bad)


def test_group_fc_counts_a_constant_roi_of_one_window_as_zero_correlation():
    rng = np.random.default_rng(1)
    windows = rng.standard_normal((7, 30, 6))
    windows[2, :, 4] = 3.0  # constant ROI in one window: contributes z = 0 there
    expected_z = np.zeros((6, 6))
    for w in windows:
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = np.nan_to_num(np.corrcoef(w.T))
        expected_z += np.arctanh(np.clip(corr, -R_MAX, R_MAX))
    expected = np.tanh(expected_z / len(windows))
    np.fill_diagonal(expected, 1.0)
    np.testing.assert_allclose(group_fc(windows), expected, atol=1e-5)
