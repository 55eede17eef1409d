"""The collapse check: RankMe, spread per dimension and the shared direction on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.data.windows import WindowSet
from workbench.errors import DataError
from workbench.evaluation.collapse import (
    collapse_check,
    collapse_summary,
    collapse_table,
    cosine_to_mean,
    rankme,
    singular_spectrum,
)


def test_rankme_of_hand_computed_spectra():
    # uncentred (the paper's value): singular values (3, 1), p = (3/4, 1/4), exp(-(3/4 ln 3/4 + 1/4 ln 1/4)) = 1.7548
    expected = np.exp(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25)))
    assert rankme(np.diag([3.0, 1.0]), centre=False) == pytest.approx(expected, 1e-6)
    assert rankme(np.diag([3.0, 1.0]), centre=False) == pytest.approx(1.7548, abs=1e-4)
    np.testing.assert_allclose(singular_spectrum(np.diag([1.0, 3.0]), centre=False), [0.75, 0.25])
    # orthogonal rows of equal length: a flat spectrum, RankMe = D uncentred; centring removes one direction
    # (the rows' mean), leaving D - 1 equal singular values
    assert rankme(5.0 * np.eye(8), centre=False) == pytest.approx(8.0, rel=1e-5)
    assert rankme(5.0 * np.eye(8)) == pytest.approx(7.0, rel=1e-5)
    # centred, the rows (3, 0) and (0, 1) differ along one line only
    assert rankme(np.diag([3.0, 1.0])) == pytest.approx(1.0, abs=1e-5)


def test_a_large_offset_is_not_collapse():
    # rank-4 variation (four equal directions) plus an offset 1000 times larger than the spread
    rng = np.random.default_rng(4)
    basis = np.linalg.qr(rng.normal(size=(16, 4)))[0].T  # (4, 16) orthonormal rows
    coefficients = np.linalg.qr(rng.normal(size=(400, 4)))[0] * np.sqrt(400)  # orthogonal columns, norm sqrt(n)
    coefficients -= coefficients.mean(axis=0)
    varied = coefficients @ basis
    offset = 1000.0 * rng.normal(size=16)
    x = varied + offset
    assert rankme(x) == pytest.approx(rankme(varied), rel=1e-6)
    assert rankme(x) == pytest.approx(4.0, rel=0.02)
    assert rankme(x, centre=False) < 1.1  # the paper's raw value reads the offset as collapse
    summary = collapse_summary(x)
    assert summary["rankme"] == pytest.approx(4.0, rel=0.02) and summary["rankme_uncentred"] < 1.1
    assert summary["offset_norm"] == pytest.approx(np.linalg.norm(offset), rel=1e-6)
    assert summary["offset_ratio"] > 100 and summary["cosine_mean"] > 0.99


def test_standardized_rankme_is_blind_to_the_scale_of_dimensions():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3000, 6)) * np.array([100.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    assert rankme(x) < 2.0  # one dimension of large scale dominates the centred spectrum
    assert rankme(x, standardize=True) == pytest.approx(6.0, rel=0.02)
    # a constant dimension stays at zero (it carries nothing) instead of dividing by zero
    x[:, 0] = 7.0
    assert rankme(x, standardize=True) == pytest.approx(5.0, rel=0.02)


def test_rank_one_embeddings_score_one_and_isotropic_ones_their_dimension():
    rng = np.random.default_rng(0)
    direction = rng.normal(size=32)
    line = rng.normal(size=(500, 1)) * direction  # every window on one line
    assert rankme(line) == pytest.approx(1.0, abs=1e-3)
    assert rankme(np.ones((500, 32))) == pytest.approx(1.0, abs=1e-3)  # total collapse
    isotropic = rng.normal(size=(5000, 32))
    assert 0.97 * 32 < rankme(isotropic) <= 32
    assert rankme(isotropic @ np.diag([1.0] * 8 + [0.0] * 24)) == pytest.approx(8.0, rel=0.03)  # a subspace


def test_summary_spread_and_cosine_to_the_mean_direction():
    # rows (1, 0) and (0, 1): mean (1/2, 1/2), cosine 1/sqrt(2) each; std 1/2 per dimension
    np.testing.assert_allclose(cosine_to_mean(np.eye(2)), [2**-0.5, 2**-0.5])
    summary = collapse_summary(np.eye(2))
    assert summary["std_mean"] == pytest.approx(0.5) and summary["norm_mean"] == pytest.approx(1.0)
    # centred, two rows span one line: RankMe 1 of the most a centred 2-row matrix can reach (1)
    assert summary["rankme"] == pytest.approx(1.0, rel=1e-5)
    assert summary["rankme_fraction"] == pytest.approx(1.0, rel=1e-5)
    assert summary["rankme_uncentred"] == pytest.approx(2.0, rel=1e-5)
    assert summary["offset_norm"] == pytest.approx(2**-0.5) and summary["spread"] == pytest.approx(2**-0.5)
    # one direction plus a tiny isotropic jitter: the windows still vary in every direction around the
    # offset (full centred rank), but by little: the spread and the offset ratio tell it
    rng = np.random.default_rng(1)
    collapsed = 5.66 * np.ones(32) / np.sqrt(32) + 0.01 * rng.normal(size=(400, 32))
    summary = collapse_summary(collapsed)
    assert summary["cosine_mean"] > 0.999 and summary["std_mean"] < 0.02 and summary["rankme_uncentred"] < 1.5
    assert summary["rankme"] > 25 and summary["offset_ratio"] > 50
    assert (summary["windows"], summary["dim"]) == (400, 32)


def test_table_per_family_and_check_on_windows():
    rng = np.random.default_rng(2)
    table = collapse_table({"spread": rng.normal(size=(200, 8)), "line": np.outer(rng.normal(size=200), np.ones(8))})
    assert list(table.index) == ["spread", "line"]
    assert table.loc["spread", "rankme"] > 7 and table.loc["line", "rankme"] == pytest.approx(1.0, abs=1e-3)
    from workbench.data.recording import Recording

    runs = [Recording(f"s{i}", "1", rng.normal(size=(60, 4)).astype(np.float32), 1.0) for i in range(3)]
    windows = WindowSet(runs, 10, 10)
    checked = collapse_check({"mean": lambda x: x.mean(axis=1), "first": lambda x: x[:, 0]}, windows)
    assert checked.loc["mean", "windows"] == len(windows) and checked.loc["first", "dim"] == 4


@pytest.mark.parametrize("bad", [np.zeros(5), np.zeros((1, 4)), np.array([[0.0, np.nan], [1.0, 2.0]])])
def test_bad_embeddings_are_data_errors(bad):
    with pytest.raises(DataError, match="collapse check"):
        rankme(bad)
    with pytest.raises(DataError, match="no embeddings"):
        collapse_table({})


def test_plot_draws_a_line_per_family_with_rankme_in_the_legend():
    from workbench.viz.collapse import plot_collapse

    rng = np.random.default_rng(3)
    fig = plot_collapse({"spread": rng.normal(size=(100, 6)), "line": np.outer(rng.normal(size=100), np.ones(6))})
    spectrum_ax, spread_ax, cosine_ax = fig.axes
    labels = [t.get_text() for t in spectrum_ax.get_legend().get_texts()]
    assert labels[1] == "line (RankMe 1.0 of 6)" and labels[0] == "spread (RankMe 6.0 of 6)"
    assert len(spectrum_ax.lines) == len(spread_ax.lines) == 2 and len(cosine_ax.patches) == 2
    with pytest.raises(DataError, match="no embeddings"):
        plot_collapse({})
