"""Group FC and diffusion-map gradients: independent re-computations, invariants, planted structure, errors."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.errors import DataError
from workbench.models.jepa.gradients import (
    DisconnectedAffinityError,
    diffusion_map_gradients,
    load_gradients_csv,
)


def _random_fc(n_rois: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    series = rng.standard_normal((200, n_rois)) + rng.standard_normal((200, 3)) @ rng.standard_normal((3, n_rois))
    return np.corrcoef(series.T)


def _block_fc(sizes: tuple[int, int], within: float, between: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1], sizes)
    fc = np.where(labels[:, None] == labels[None, :], within, between)
    noise = rng.normal(0.0, 0.05, fc.shape)
    fc = fc + (noise + noise.T) / 2
    np.fill_diagonal(fc, 1.0)
    return fc


def _naive_affinity(fc: np.ndarray, sparsity: float) -> np.ndarray:
    """Row by row: zero the diagonal, keep the top ceil((1-s)R), cosine, clip at 0."""
    r = fc.shape[0]
    keep = int(np.ceil((1 - sparsity) * r))
    sparse = np.zeros_like(fc)
    for i in range(r):
        row = fc[i].copy()
        row[i] = 0.0
        top = np.argsort(row)[-keep:]
        sparse[i, top] = row[top]
    affinity = np.zeros_like(fc)
    for i in range(r):
        for j in range(r):
            affinity[i, j] = sparse[i] @ sparse[j] / (np.linalg.norm(sparse[i]) * np.linalg.norm(sparse[j]))
    return np.clip(affinity, 0.0, None)


# -- diffusion map -------------------------------------------------------------------------


def test_gradients_solve_the_diffusion_eigenproblem_and_are_orthogonal():
    fc = _random_fc(40)
    grads = diffusion_map_gradients(fc, k=6, alpha=0.5, sparsity=0.9)
    assert grads.shape == (40, 6)
    # independent operator: W -> D^-a W D^-a -> row-normalised P
    affinity = _naive_affinity(fc, 0.9)
    d = affinity.sum(axis=1)
    w_alpha = affinity / np.outer(d**0.5, d**0.5)
    d_alpha = w_alpha.sum(axis=1)
    p = w_alpha / d_alpha[:, None]
    eigvals = np.sort(np.linalg.eigvals(p).real)[::-1]
    lam = eigvals[1:7]
    # each column is an eigenvector of P with the k largest non-trivial eigenvalues ...
    np.testing.assert_allclose(p @ grads, grads * lam[None, :], atol=1e-8 * np.abs(grads).max())
    # ... scaled by lambda / (1 - lambda) (multi-scale), relative to the trivial vector = 1:
    # psi^T D_a psi / sum(d_a) = 1 for each unit-normalised eigenvector psi
    gram = grads.T @ (d_alpha[:, None] * grads)
    np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0.0, atol=1e-8 * np.abs(gram).max())
    norms = np.sqrt(np.diag(gram) / d_alpha.sum())
    np.testing.assert_allclose(norms, lam / (1 - lam), rtol=1e-6)
    # sign convention: the largest-magnitude entry of every gradient is positive
    assert (grads[np.abs(grads).argmax(axis=0), np.arange(6)] > 0).all()


def test_first_gradient_separates_two_planted_communities():
    fc = _block_fc((12, 18), within=0.6, between=0.1, seed=3)
    labels = np.repeat([0, 1], (12, 18))
    for sparsity in (0.0, 0.5):
        first = diffusion_map_gradients(fc, k=3, sparsity=sparsity)[:, 0]
        assert (np.sign(first[labels == 0]) != np.sign(first[labels == 1][0])).all()
        assert len(set(np.sign(first[labels == 1]))) == 1


def test_gradients_follow_a_permutation_of_the_rois():
    fc = _random_fc(30, seed=4)
    perm = np.random.default_rng(5).permutation(30)
    grads = diffusion_map_gradients(fc, k=5)
    np.testing.assert_allclose(diffusion_map_gradients(fc[np.ix_(perm, perm)], k=5), grads[perm], atol=1e-8)


def test_disconnected_graph_and_isolated_roi_are_data_errors():
    fc = _block_fc((10, 10), within=0.6, between=0.0)
    fc[:10, 10:] = fc[10:, :10] = 0.0
    with pytest.raises(DisconnectedAffinityError, match="lower the sparsity"):
        diffusion_map_gradients(fc, k=2)
    fc = _random_fc(12)
    fc[5, :] = fc[:, 5] = 0.0
    with pytest.raises(DataError, match=r"ROI\(s\) \[5\] have no connections"):
        diffusion_map_gradients(fc, k=2, sparsity=0.0)
    with pytest.raises(DataError, match="finite"):
        diffusion_map_gradients(np.full((4, 4), np.nan), k=2)


def test_too_many_gradients_are_lowered_with_a_warning():
    fc = _random_fc(8)
    with pytest.warns(UserWarning, match="using k=7 instead of 30"):
        grads = diffusion_map_gradients(fc, k=30, sparsity=0.0)
    assert grads.shape == (8, 7)
    with pytest.raises(ValueError, match="k >= 1"):
        diffusion_map_gradients(fc, k=0)


# -- CSV -----------------------------------------------------------------------------------


def test_gradient_csv_round_trip_and_shape_errors(tmp_path):
    table = np.random.default_rng(0).standard_normal((9, 4))
    path = tmp_path / "gradients.csv"
    np.savetxt(path, table, delimiter=",")
    np.testing.assert_allclose(load_gradients_csv(path, 9), table)
    with pytest.raises(DataError, match="has 9 rows but the data has 12 ROIs"):
        load_gradients_csv(path, 12)
    with pytest.raises(DataError, match="does not exist"):
        load_gradients_csv(tmp_path / "missing.csv", 9)
    (tmp_path / "text.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="not a table of numbers"):
        load_gradients_csv(tmp_path / "text.csv", 2)
