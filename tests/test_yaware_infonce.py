"""y-Aware InfoNCE: plain InfoNCE limit, hand-computed kernels, normalisations, bandwidths, dtypes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch
import torch.nn.functional as F

from workbench.errors import ConfigError, DataError
from workbench.losses.label_kernels import KERNELS, bandwidth_rule_factor, categorical_bandwidth, one_hot_codes
from workbench.losses.yaware_infonce import YAwareInfoNCE

# A fixed 4-sample case (also run through nidl's YAwareInfoNCE, see test_column_matches_nidl).
Z1 = [[1.0, 0.0, 0.5], [0.2, 1.0, -0.3], [-0.4, 0.1, 1.0], [0.9, -0.6, 0.2]]
Z2 = [[0.8, 0.3, 0.4], [0.1, 0.7, -0.5], [-0.2, 0.4, 0.9], [1.0, -0.2, -0.1]]

NUMPY_KERNELS = {
    "gaussian": lambda x: np.exp(-(x**2) / 2),
    "epanechnikov": lambda x: np.where(x < 1, 1 - x**2, 0.0),
    "exponential": lambda x: np.exp(-x),
    "linear": lambda x: np.where(x < 1, 1 - x, 0.0),
    "cosine": lambda x: np.where(x < 1, np.cos(np.pi * x / 2), 0.0),
}


def _z(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(Z1, dtype=dtype), torch.tensor(Z2, dtype=dtype)


def _random_z(n: int = 6, d: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen), torch.randn(n, d, generator=gen)


def numpy_weights(y: np.ndarray, kernel: str, bandwidth: np.ndarray, normalize: str) -> np.ndarray:
    """Normalised (2n, 2n) weights from the formula, with Mahalanobis distances d' H^-1 d."""
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    labels = np.concatenate([y, y])
    h = np.atleast_2d(np.asarray(bandwidth, dtype=np.float64))
    h = h * np.eye(labels.shape[1]) if h.shape == (1, 1) else (np.diag(h[0]) if h.shape[0] == 1 else h)
    h_inv = np.linalg.inv(h)
    diff = labels[:, None, :] - labels[None, :, :]
    x = np.sqrt(np.einsum("abi,ij,abj->ab", diff, h_inv, diff))
    w = NUMPY_KERNELS[kernel](x)
    np.fill_diagonal(w, 0.0)
    return w / w.sum(axis=1, keepdims=True) if normalize == "row" else w / w.sum(axis=0, keepdims=True)


def numpy_loss(z1: list, z2: list, weights: np.ndarray, temperature: float) -> float:
    """−(1/2n) Σ ŵ_ab log p_ab in float64, log p over the other 2n − 1 views."""
    z = np.concatenate([np.asarray(z1, np.float64), np.asarray(z2, np.float64)])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    s = z @ z.T / temperature
    np.fill_diagonal(s, -np.inf)
    log_p = s - scipy.special.logsumexp(s, axis=1, keepdims=True)
    np.fill_diagonal(log_p, 0.0)
    return float(-(weights * log_p).sum() / len(z))


def plain_infonce(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent written independently: cross-entropy of each view against its partner."""
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(logits, targets)


@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_far_apart_labels_give_plain_infonce(kernel: str) -> None:
    z1, z2 = _random_z()
    far = torch.arange(6, dtype=torch.float32) * 1000.0
    for normalize in ("row", "column"):
        loss_fn = YAwareInfoNCE(kernel, bandwidth=1.0, temperature=0.2, normalize=normalize)
        expected = plain_infonce(z1, z2, 0.2)
        torch.testing.assert_close(loss_fn(z1, z2, far), expected, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(loss_fn(z1, z2), expected, rtol=1e-6, atol=1e-6)


def test_default_temperature_is_the_papers() -> None:
    z1, z2 = _random_z()
    torch.testing.assert_close(YAwareInfoNCE()(z1, z2), plain_infonce(z1, z2, 0.1), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_hand_computed_four_samples(kernel: str) -> None:
    # H = 0.25 (σ = 0.5): |Δy| / 0.5 gives x in {0.4, 0.6, 1.0 (boundary: 0 for compact kernels), 3.0, 3.4, 4.0}
    y = [0.0, 0.3, 0.5, 2.0]
    loss_fn = YAwareInfoNCE(kernel, bandwidth=0.25, temperature=0.5)
    expected_w = numpy_weights(np.array(y), kernel, np.array(0.25), "row")
    weights = loss_fn.pair_weights(torch.tensor(y))
    np.testing.assert_allclose(weights.numpy(), expected_w, rtol=1e-6, atol=1e-7)
    expected = numpy_loss(Z1, Z2, expected_w, 0.5)
    assert loss_fn(*_z(), torch.tensor(y)).item() == pytest.approx(expected, rel=1e-6)


def test_gaussian_row_by_hand() -> None:
    # row 0 (y = 0): views of samples 0..3 then their second views; x = |Δy| / 0.5
    raw = [0.0, math.exp(-0.18), math.exp(-0.5), math.exp(-8.0), 1.0, math.exp(-0.18), math.exp(-0.5), math.exp(-8.0)]
    expected = torch.tensor(raw) / sum(raw)
    weights = YAwareInfoNCE("gaussian", bandwidth=0.25).pair_weights(torch.tensor([0.0, 0.3, 0.5, 2.0]))
    torch.testing.assert_close(weights[0], expected)


def test_compact_kernels_vanish_at_the_boundary() -> None:
    weights = YAwareInfoNCE("epanechnikov", bandwidth=0.25).pair_weights(torch.tensor([0.0, 0.5]))
    assert weights[0, 1].item() == 0.0  # x = 1 exactly
    assert weights[0, 2].item() == 1.0  # only the positive pair is left


def test_row_and_column_normalisation_differ_and_match_their_formulas() -> None:
    y = torch.tensor([0.0, 0.2, 0.5, 1.1])
    row = YAwareInfoNCE("gaussian", bandwidth=1.0, temperature=0.5, normalize="row")
    column = YAwareInfoNCE("gaussian", bandwidth=1.0, temperature=0.5, normalize="column")
    w_row, w_column = row.pair_weights(y), column.pair_weights(y)
    torch.testing.assert_close(w_row.sum(dim=1), torch.ones(8))
    torch.testing.assert_close(w_column.sum(dim=0), torch.ones(8))
    assert not torch.allclose(w_row, w_column, atol=1e-3)
    for loss_fn, normalize in ((row, "row"), (column, "column")):
        expected_w = numpy_weights(y.numpy(), "gaussian", np.array(1.0), normalize)
        np.testing.assert_allclose(loss_fn.pair_weights(y).numpy(), expected_w, rtol=1e-6, atol=1e-7)
        expected = numpy_loss(Z1, Z2, expected_w, 0.5)
        assert loss_fn(*_z(), y).item() == pytest.approx(expected, rel=1e-6)
    assert abs(row(*_z(), y).item() - column(*_z(), y).item()) > 1e-3


# nidl.losses.yaware_infonce.YAwareInfoNCE(kernel, bandwidth=1.0, temperature=0.5)(Z1, Z2, y) on
# y = [[0.0], [0.2], [0.5], [1.1]], run outside the project (nidl commit efb1343); float64 outputs.
NIDL_VALUES = {
    "gaussian": 4.718405490298599,
    "epanechnikov": 4.6684363970733465,
    "exponential": 4.530221412715067,
    "linear": 4.393911739783142,
    "cosine": 4.623500595444783,
}
NIDL_PLAIN = 0.8581842184066772  # nidl, labels=None
NIDL_FAR = 1.716368392109871  # nidl, y = [0, 1000, 2000, 3000]: twice plain InfoNCE


@pytest.mark.parametrize("kernel", sorted(NIDL_VALUES))
def test_column_matches_nidl(kernel: str) -> None:
    # nidl divides the same weighted sum by n instead of 2n: its loss is twice ours.
    y = torch.tensor([[0.0], [0.2], [0.5], [1.1]])
    loss_fn = YAwareInfoNCE(kernel, bandwidth=1.0, temperature=0.5, normalize="column")
    assert 2 * loss_fn(*_z(), y).item() == pytest.approx(NIDL_VALUES[kernel], rel=1e-6)
    assert 2 * loss_fn(*_z(torch.float64), y).item() == pytest.approx(NIDL_VALUES[kernel], rel=1e-6)


def test_plain_and_far_apart_match_nidl_up_to_its_factor_two() -> None:
    loss_fn = YAwareInfoNCE("gaussian", bandwidth=1.0, temperature=0.5)
    assert loss_fn(*_z()).item() == pytest.approx(NIDL_PLAIN, rel=1e-6)
    far = torch.tensor([0.0, 1000.0, 2000.0, 3000.0])
    assert 2 * loss_fn(*_z(), far).item() == pytest.approx(NIDL_FAR, rel=1e-6)


def test_diagonal_and_full_bandwidths_match_mahalanobis() -> None:
    gen = torch.Generator().manual_seed(1)
    y = torch.randn(5, 2, generator=gen)
    z1, z2 = _random_z(n=5)
    for bandwidth in (np.array([0.5, 2.0]), np.array([[1.0, 0.3], [0.3, 0.5]])):
        loss_fn = YAwareInfoNCE("gaussian", bandwidth=bandwidth, temperature=0.3)
        expected_w = numpy_weights(y.numpy(), "gaussian", bandwidth, "row")
        np.testing.assert_allclose(loss_fn.pair_weights(y).numpy(), expected_w, rtol=1e-5, atol=1e-7)
        expected = numpy_loss(z1.tolist(), z2.tolist(), expected_w, 0.3)
        assert loss_fn(z1, z2, y).item() == pytest.approx(expected, rel=1e-5)


def test_scalar_bandwidth_is_a_variance() -> None:
    # H = 4 means σ = 2: labels 2 apart sit at x = 1
    weights = YAwareInfoNCE("linear", bandwidth=4.0).pair_weights(torch.tensor([0.0, 1.0]))
    # row 0: [0, K(0.5) = 0.5, 1 (positive), 0.5] / 2
    torch.testing.assert_close(weights[0], torch.tensor([0.0, 0.25, 0.5, 0.25]))


@pytest.mark.parametrize(
    "bandwidth, match",
    [
        ([[1.0, 2.0], [2.0, 1.0]], "positive definite"),  # symmetric, eigenvalues 3 and -1
        ([[1.0, 0.0], [0.0, 0.0]], "positive definite"),  # singular
        ([[1.0, 0.5], [0.0, 1.0]], "not symmetric"),
        ([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], "square"),
        (np.ones((2, 2, 2)), "2-D"),
        (-1.0, "positive"),
        (0.0, "positive"),
        ([1.0, -2.0], "positive"),
        (float("nan"), "finite"),
        ([], "non-empty"),
        ("median", "scott"),
        (True, "numeric"),
        ("abc", "scott"),
    ],
)
def test_bad_bandwidth_is_rejected(bandwidth: object, match: str) -> None:
    with pytest.raises(ConfigError, match="bandwidth") as error:
        YAwareInfoNCE(bandwidth=bandwidth)
    assert match in str(error.value)


def test_bandwidth_columns_must_match_labels() -> None:
    z1, z2 = _random_z(n=4)
    with pytest.raises(ConfigError, match="bandwidth has 2 label columns but y has 3"):
        YAwareInfoNCE(bandwidth=[1.0, 2.0])(z1, z2, torch.zeros(4, 3))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kernel": "triangle"}, "kernel"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"normalize": "both"}, "normalize"),
    ],
)
def test_bad_settings_are_rejected(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        YAwareInfoNCE(**kwargs)


def test_bad_shapes_are_rejected() -> None:
    loss_fn = YAwareInfoNCE()
    with pytest.raises(ConfigError, match="one shape"):
        loss_fn(torch.zeros(4, 3), torch.zeros(4, 2))
    for y in (torch.zeros(5), torch.zeros(4, 1, 1), torch.tensor(1.0)):
        with pytest.raises(ConfigError, match="n = 4"):
            loss_fn(torch.zeros(4, 3), torch.zeros(4, 3), y)


@pytest.mark.parametrize("y", [None, torch.tensor([0.0, 0.1, 0.3, 0.4, 2.0, 2.2])])
def test_gradients_flow_to_both_views(y: torch.Tensor | None) -> None:
    z1, z2 = (t.requires_grad_(True) for t in _random_z())
    YAwareInfoNCE(bandwidth=0.5)(z1, z2, y).backward()
    for grad in (z1.grad, z2.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_dtype_policy() -> None:
    y = torch.tensor([0.0, 0.1, 0.3, 0.4])
    loss_fn = YAwareInfoNCE(bandwidth=0.5)
    assert loss_fn(*_z(torch.float32), y).dtype == torch.float32
    assert loss_fn(*_z(torch.float64), y).dtype == torch.float64
    assert loss_fn(*_z(torch.bfloat16), y).dtype == torch.float32
    assert loss_fn(*_z(torch.bfloat16)).dtype == torch.float32


def test_bf16_autocast_on_cpu_is_finite_and_close() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 12, generator=gen)
    head = torch.nn.Linear(12, 6)
    y = torch.linspace(0.0, 2.0, 8)
    loss_fn = YAwareInfoNCE(bandwidth=0.5)
    reference = loss_fn(head(x), head(x + 0.1), y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z1, z2 = head(x), head(x + 0.1)
        assert z1.dtype == torch.bfloat16
        loss = loss_fn(z1, z2, y)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert loss.item() == pytest.approx(reference.item(), rel=5e-2)


def test_undefined_labels_fall_back_to_the_positive_pair() -> None:
    y = torch.tensor([0.0, float("nan"), 0.1, 5.0])
    weights = YAwareInfoNCE(bandwidth=1.0).pair_weights(y)
    assert torch.isfinite(weights).all()
    expected_row = torch.zeros(8)
    expected_row[5] = 1.0
    torch.testing.assert_close(weights[1], expected_row)
    assert weights[0, 1].item() == 0.0 and weights[0, 5].item() == 0.0
    z1, z2 = (t.requires_grad_(True) for t in _random_z(n=4))
    loss = YAwareInfoNCE(bandwidth=1.0)(z1, z2, y)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z1.grad).all()


def test_scott_and_silverman_rules() -> None:
    y = np.array([[1.0, 10.0], [2.0, 14.0], [3.0, 12.0], [4.0, 20.0], [5.0, 16.0]])
    sigma = np.array([math.sqrt(2.5), math.sqrt(14.8)])  # sample standard deviations, by hand
    scott = YAwareInfoNCE(bandwidth="scott").fit(y)
    np.testing.assert_allclose(scott.inv_sqrt_bandwidth.numpy(), 1 / (sigma * 5 ** (-1 / 6)), rtol=1e-6)
    # one column: Silverman's 1.06-style factor (3n/4)^(-1/5) differs from Scott's n^(-1/5)
    silverman = YAwareInfoNCE(bandwidth="silverman").fit(torch.tensor(y[:, :1]))
    expected = 1 / (math.sqrt(2.5) * (5 * 3 / 4) ** (-1 / 5))
    assert silverman.inv_sqrt_bandwidth.item() == pytest.approx(expected, rel=1e-6)
    assert bandwidth_rule_factor("silverman", 1000, 1) == pytest.approx(1.0592 * 1000 ** (-1 / 5), rel=1e-4)


def test_rule_factors_match_scipy() -> None:
    data = np.random.default_rng(0).normal(size=(3, 40))
    kde = scipy.stats.gaussian_kde(data)
    assert bandwidth_rule_factor("scott", 40, 3) == pytest.approx(kde.scotts_factor())
    assert bandwidth_rule_factor("silverman", 40, 3) == pytest.approx(kde.silverman_factor())


def test_rule_fit_skips_undefined_rows_and_rejects_constant_columns() -> None:
    y = np.array([[1.0], [2.0], [np.nan], [3.0]])
    fitted = YAwareInfoNCE(bandwidth="scott").fit(y)
    assert fitted.inv_sqrt_bandwidth.item() == pytest.approx(1 / (1.0 * 3 ** (-1 / 5)), rel=1e-6)
    with pytest.raises(DataError, match=r"column\(s\) \[1\] are constant"):
        YAwareInfoNCE(bandwidth="scott").fit(np.array([[1.0, 2.0], [2.0, 2.0], [3.0, 2.0]]))
    with pytest.raises(DataError, match="at least 2"):
        YAwareInfoNCE(bandwidth="scott").fit(np.array([[1.0], [np.nan]]))


def test_unfitted_rule_is_a_clear_error_and_a_fitted_one_survives_a_checkpoint() -> None:
    z1, z2 = _random_z(n=4)
    y = torch.tensor([[0.0, 1.0], [0.5, 0.0], [1.0, 2.0], [3.0, 1.0]])
    with pytest.raises(ConfigError, match=r"fit\(y_train\)"):
        YAwareInfoNCE(bandwidth="silverman")(z1, z2, y)
    fitted = YAwareInfoNCE(bandwidth="silverman").fit(y)
    restored = YAwareInfoNCE(bandwidth="silverman")
    restored.load_state_dict(fitted.state_dict())
    assert restored.fitted
    torch.testing.assert_close(restored(z1, z2, y), fitted(z1, z2, y))


def test_fixed_bandwidth_fit_only_checks_columns() -> None:
    loss_fn = YAwareInfoNCE(bandwidth=[1.0, 2.0])
    assert loss_fn.fit(np.zeros((4, 2))) is loss_fn
    with pytest.raises(ConfigError, match="label columns"):
        loss_fn.fit(np.zeros((4, 3)))


def test_one_hot_codes() -> None:
    codes = torch.tensor([0.0, 2.0, float("nan"), 1.0, 3.0, -1.0, 1.5])
    one_hot = one_hot_codes(codes, 3)
    torch.testing.assert_close(one_hot[:2], torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
    torch.testing.assert_close(one_hot[3], torch.tensor([0.0, 1.0, 0.0]))
    for row in (2, 4, 5, 6):  # undefined, out of range, negative, fractional
        assert torch.isnan(one_hot[row]).all()


@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_categorical_bandwidth_sets_the_cross_category_weight(kernel: str) -> None:
    y = one_hot_codes(torch.tensor([0.0, 0.0, 1.0]), 2)
    weights = YAwareInfoNCE(kernel, bandwidth=categorical_bandwidth(kernel, 0.3)).pair_weights(y)
    # row 0: same category (sample 1) weighs 1, the other category (sample 2) weighs 0.3
    assert (weights[0, 2] / weights[0, 1]).item() == pytest.approx(0.3, rel=1e-5)


def test_categorical_bandwidth_zero_weight() -> None:
    y = one_hot_codes(torch.tensor([0.0, 1.0]), 2)
    weights = YAwareInfoNCE("cosine", bandwidth=categorical_bandwidth("cosine", 0.0)).pair_weights(y)
    assert weights[0, 1].item() == 0.0
    with pytest.raises(ConfigError, match="never reaches 0"):
        categorical_bandwidth("gaussian", 0.0)
    with pytest.raises(ConfigError, match="cross_weight"):
        categorical_bandwidth("linear", 1.0)
