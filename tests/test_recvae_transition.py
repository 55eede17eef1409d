"""RecVAE transition F: ridge statistics, closed-form solve, summability, distributed reduce."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.errors import ConfigError, DataError
from workbench.models.recvae import (
    LinearTransition,
    ridge_transition,
    ridge_transition_with_bias,
    transition_statistics,
)


def _numpy_pairs(paths: np.ndarray, h0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows (h_{t-1}, h_t) of every sequence, built with an explicit loop, h0 before each sequence."""
    prev, nxt = [], []
    for seq in paths:
        state = h0
        for h in seq:
            prev.append(state)
            nxt.append(h)
            state = h
    return np.array(prev), np.array(nxt)


def _numpy_ridge(paths: np.ndarray, h0: np.ndarray, sigma_h: float, rho: float) -> np.ndarray:
    x, y = _numpy_pairs(paths, h0)
    lhs = x.T @ x + 2 * sigma_h**2 * rho * np.eye(x.shape[1])
    return np.linalg.solve(lhs, x.T @ y).T


def test_statistics_match_numpy_float64():
    rng = np.random.default_rng(0)
    paths, h0 = rng.standard_normal((3, 4, 2)), rng.standard_normal(2)
    stats = transition_statistics(torch.from_numpy(paths), torch.from_numpy(h0))
    x, y = _numpy_pairs(paths, h0)
    np.testing.assert_allclose(stats.hth.numpy(), x.T @ x, rtol=1e-12)
    np.testing.assert_allclose(stats.hth_next.numpy(), x.T @ y, rtol=1e-12)
    assert float(stats.n_pairs) == 12


def test_without_h0_only_the_pairs_within_each_sequence_count():
    rng = np.random.default_rng(9)
    paths = rng.standard_normal((3, 5, 2))
    stats = transition_statistics(torch.from_numpy(paths), None)
    prev, nxt = paths[:, :-1].reshape(-1, 2), paths[:, 1:].reshape(-1, 2)
    np.testing.assert_allclose(stats.hth.numpy(), prev.T @ prev, rtol=1e-12)
    np.testing.assert_allclose(stats.hth_next.numpy(), prev.T @ nxt, rtol=1e-12)
    np.testing.assert_allclose(stats.sum_prev.numpy(), prev.sum(0), rtol=1e-12)
    np.testing.assert_allclose(stats.sum_next.numpy(), nxt.sum(0), rtol=1e-12)
    assert float(stats.n_pairs) == 12


def test_pairs_never_cross_sequence_boundaries():
    """Two sequences [a1, a2] and [b1, b2] from h0: no (a2, b1) pair."""
    h0, a1, a2, b1, b2 = (np.array(v, dtype=np.float64) for v in ([1, 0], [0, 2], [3, 1], [-1, 5], [2, -2]))
    stats = transition_statistics(torch.tensor(np.array([[a1, a2], [b1, b2]])), torch.tensor(h0))
    expected_next = np.outer(h0, a1) + np.outer(a1, a2) + np.outer(h0, b1) + np.outer(b1, b2)
    expected_hth = 2 * np.outer(h0, h0) + np.outer(a1, a1) + np.outer(b1, b1)
    np.testing.assert_allclose(stats.hth_next.numpy(), expected_next)
    np.testing.assert_allclose(stats.hth.numpy(), expected_hth)
    # the same four states as one sequence would add the cross pair (a2, b1)
    joined = transition_statistics(torch.tensor(np.array([[a1, a2, b1, b2]])), torch.tensor(h0))
    np.testing.assert_allclose(joined.hth_next.numpy() - stats.hth_next.numpy(), np.outer(a2, b1) - np.outer(h0, b1))


def test_statistics_of_two_halves_sum_to_the_whole():
    rng = np.random.default_rng(1)
    paths = torch.from_numpy(rng.standard_normal((6, 5, 3)))
    h0 = torch.from_numpy(rng.standard_normal(3))
    whole = transition_statistics(paths, h0)
    # split across sequences
    first, second = transition_statistics(paths[:2], h0), transition_statistics(paths[2:], h0)
    for w, a, b in zip(whole, first, second, strict=True):
        torch.testing.assert_close(a + b, w, rtol=1e-12, atol=1e-12)
    # split in time: the second half starts from the last state of the first
    early, late = transition_statistics(paths[:, :2], h0), transition_statistics(paths[:, 2:], paths[:, 1])
    for w, a, b in zip(whole, early, late, strict=True):
        torch.testing.assert_close(a + b, w, rtol=1e-12, atol=1e-12)


def test_ridge_update_equals_the_closed_form():
    rng = np.random.default_rng(2)
    batches = [rng.standard_normal((4, 7, 5)), rng.standard_normal((3, 7, 5))]
    h0 = rng.standard_normal(5)
    sigma_h, rho = 0.7, 0.3
    transition = LinearTransition(latent_dim=5, rho=rho)
    for b in batches:
        transition.accumulate(torch.from_numpy(b).float(), torch.from_numpy(h0).float())
    assert transition.solve(sigma_h) is True
    expected = _numpy_ridge(np.concatenate(batches).astype(np.float32).astype(np.float64), h0, sigma_h, rho)
    np.testing.assert_allclose(transition.F.numpy(), expected, rtol=1e-5, atol=1e-6)
    # the pure function on float64 statistics agrees to float64 precision
    stats = transition_statistics(torch.from_numpy(np.concatenate(batches)), torch.from_numpy(h0))
    f64 = ridge_transition(stats.hth, stats.hth_next, sigma_h, rho)
    np.testing.assert_allclose(f64.numpy(), _numpy_ridge(np.concatenate(batches), h0, sigma_h, rho), rtol=1e-10)


def test_intercept_solves_the_augmented_ridge_with_an_unpenalised_intercept():
    """[Fᵀ; bᵀ] = argmin ‖Y − X Fᵀ − 1 bᵀ‖² + 2σ_h²ρ‖F‖², by numpy lstsq on a stacked design."""
    rng = np.random.default_rng(7)
    paths, h0 = 3.0 + rng.standard_normal((4, 9, 3)), np.zeros(3)
    sigma_h, rho = 0.6, 0.4
    x, y = _numpy_pairs(paths, h0)
    lam = np.sqrt(2 * sigma_h**2 * rho)
    design = np.vstack([np.hstack([x, np.ones((len(x), 1))]), np.hstack([lam * np.eye(3), np.zeros((3, 1))])])
    target = np.vstack([y, np.zeros((3, 3))])
    coef = np.linalg.lstsq(design, target, rcond=None)[0]
    transition, intercept = ridge_transition_with_bias(
        transition_statistics(torch.from_numpy(paths), torch.from_numpy(h0)), sigma_h, rho
    )
    np.testing.assert_allclose(transition.numpy(), coef[:3].T, rtol=1e-7, atol=1e-8)  # offset 3: conditioning
    np.testing.assert_allclose(intercept.numpy(), coef[3], rtol=1e-7, atol=1e-8)
    module = LinearTransition(3, rho=rho, bias=True)
    module.accumulate(torch.from_numpy(paths).float(), torch.zeros(3))
    module.solve(sigma_h)
    np.testing.assert_allclose(module.F.numpy(), coef[:3].T, rtol=1e-4, atol=1e-5)
    prev = torch.randn(5, 3)
    torch.testing.assert_close(module(prev), prev @ module.F.T + module.b)


def test_an_offset_path_needs_the_intercept_to_keep_its_eigenvalues():
    """A stable dynamic around a far-away fixed point: without b, F gets an eigenvalue near 1."""
    rng = np.random.default_rng(8)
    true_f, centre = np.diag([0.5, 0.3]), np.array([4.0, -3.0])
    paths = np.empty((6, 150, 2))
    for s in range(6):
        h = centre.copy()
        for t in range(150):
            h = centre + true_f @ (h - centre) + 0.3 * rng.standard_normal(2)
            paths[s, t] = h
    plain, with_bias = LinearTransition(2, rho=0.01), LinearTransition(2, rho=0.01, bias=True)
    for module in (plain, with_bias):
        module.accumulate(torch.from_numpy(paths).float(), torch.from_numpy(centre).float())
        module.solve()
    moduli = np.sort(np.abs(np.linalg.eigvals(plain.F.numpy())))
    assert moduli[-1] > 0.95
    np.testing.assert_allclose(np.sort(np.abs(np.linalg.eigvals(with_bias.F.numpy()))), [0.3, 0.5], atol=0.05)
    fixed_point = np.linalg.solve(np.eye(2) - with_bias.F.numpy(), with_bias.b.numpy())
    np.testing.assert_allclose(fixed_point, centre, atol=0.1)


def test_learned_sigma_h_tensor_is_used_without_gradient():
    rng = np.random.default_rng(3)
    paths, h0 = torch.from_numpy(rng.standard_normal((2, 6, 3))), torch.zeros(3, dtype=torch.float64)
    stats = transition_statistics(paths, h0)
    sigma = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    f = ridge_transition(stats.hth, stats.hth_next, sigma, 0.5)
    assert not f.requires_grad
    np.testing.assert_allclose(f.numpy(), _numpy_ridge(paths.numpy(), h0.numpy(), 1.3, 0.5), rtol=1e-10)


def test_ridge_recovers_a_known_linear_dynamic():
    rng = np.random.default_rng(4)
    theta = 0.3
    true_f = 0.95 * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    paths = np.empty((8, 200, 2))
    for s in range(8):
        h = rng.standard_normal(2)
        for t in range(200):
            h = true_f @ h + 0.1 * rng.standard_normal(2)
            paths[s, t] = h
    transition = LinearTransition(latent_dim=2, rho=0.01)
    transition.accumulate(torch.from_numpy(paths).float(), torch.zeros(2))
    transition.solve()
    np.testing.assert_allclose(transition.F.numpy(), true_f, atol=0.03)


def test_reduce_hook_sums_the_statistics_of_other_workers():
    """Worker A sees half the sequences; a reduce adding worker B's statistics gives the full-data F."""
    rng = np.random.default_rng(5)
    paths, h0 = torch.from_numpy(rng.standard_normal((6, 5, 3))).float(), torch.zeros(3)
    worker_a, worker_b, single = (LinearTransition(3, rho=0.2) for _ in range(3))
    worker_a.accumulate(paths[:3], h0)
    worker_b.accumulate(paths[3:], h0)
    single.accumulate(paths, h0)
    other = {id(a): b.clone() for a, b in zip(worker_a.statistics(), worker_b.statistics(), strict=True)}
    worker_a.solve(reduce=lambda t: t.add_(other[id(t)]))
    single.solve()
    torch.testing.assert_close(worker_a.F, single.F, rtol=1e-5, atol=1e-6)


def _distributed_worker(rank: int, world: int, folder: str, paths: torch.Tensor) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{folder}/init", rank=rank, world_size=world)
    try:
        transition = LinearTransition(3, rho=0.2)
        transition.accumulate(paths[rank::world], torch.zeros(3))
        transition.solve()
        torch.save(transition.F, f"{folder}/F{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_all_reduce_gives_the_same_F_on_every_rank(tmp_path):
    """Two gloo ranks, each with half of the sequences, end with the F of all the data."""
    mp = torch.multiprocessing.get_context("fork")
    rng = np.random.default_rng(6)
    paths = torch.from_numpy(rng.standard_normal((4, 6, 3))).float()
    procs = [mp.Process(target=_distributed_worker, args=(r, 2, str(tmp_path), paths)) for r in range(2)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join(60)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
    assert all(p.exitcode == 0 for p in procs)
    f0, f1 = (torch.load(tmp_path / f"F{r}.pt", weights_only=True) for r in range(2))
    single = LinearTransition(3, rho=0.2)
    single.accumulate(paths, torch.zeros(3))
    single.solve()
    assert torch.equal(f0, f1)
    torch.testing.assert_close(f0, single.F, rtol=1e-5, atol=1e-6)


def test_solve_without_pairs_keeps_F_and_solve_resets_statistics():
    transition = LinearTransition(3, init="identity")
    assert transition.solve() is False
    torch.testing.assert_close(transition.F, torch.eye(3))
    transition.accumulate(torch.randn(2, 4, 3), torch.zeros(3))
    assert float(transition.n_pairs) == 8
    transition.solve()
    assert float(transition.n_pairs) == 0 and float(transition.hth.abs().sum()) == 0


def test_prior_mean_is_h_times_F_transposed():
    transition = LinearTransition(3)
    h = torch.randn(2, 5, 3)
    expected = np.einsum("stj,ij->sti", h.numpy().astype(np.float64), transition.F.numpy().astype(np.float64))
    np.testing.assert_allclose(transition(h).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_state_dict_restores_F_and_pending_statistics_exactly():
    source = LinearTransition(4)
    source.accumulate(torch.randn(3, 5, 4), torch.zeros(4))
    target = LinearTransition(4, init="identity")
    target.load_state_dict(source.state_dict())
    for name in ("F", "b", "hth", "hth_next", "n_pairs", "sum_prev", "sum_next"):
        assert torch.equal(getattr(target, name), getattr(source, name)), name


def test_invalid_settings_raise():
    with pytest.raises(ConfigError, match="rho"):
        LinearTransition(3, rho=-1)
    with pytest.raises(ConfigError, match="init"):
        LinearTransition(3, init="zeros")
    with pytest.raises(ConfigError, match="singular"):
        ridge_transition(torch.zeros(3, 3), torch.zeros(3, 3), rho=0.0)
    with pytest.raises(DataError, match=r"\(S, T, L\)"):
        transition_statistics(torch.zeros(4, 3), torch.zeros(3))
