"""Few-shot result tables, K / window curves and verification ROC / DET figures."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from scipy.stats import norm

from workbench.data.recording import Recording
from workbench.errors import ConfigError, DataError
from workbench.evaluation import closed_set
from workbench.viz.fewshot import (
    plot_k_curves,
    plot_roc_det,
    plot_window_curves,
    results_frame,
    table_markdown,
)

METRICS = ("accuracy", "macro_f1", "roc_auc", "eer")


def _results(window: int, protocol: str = "closed-set", n_way: int = 4) -> dict:
    """Hand-made results in the format of closed_set / open_set, values encode their position."""
    methods = {}
    for m, method in enumerate(("fewshot", "fc-fingerprint")):
        methods[method] = {
            str(k): {
                metric: {"mean": 0.5 + 0.1 * m + 0.01 * k + window / 1000, "ci": 0.01 * (m + 1)} for metric in METRICS
            }
            for k in (1, 2, 4)
        }
    methods["chance"] = {str(k): {metric: {"mean": 1 / n_way, "ci": 0.0} for metric in METRICS} for k in (1, 2, 4)}
    return {"meta": {"protocol": protocol, "window": window, "n_way": n_way}, "methods": methods}


def test_results_frame_is_long_and_complete() -> None:
    frame = results_frame({20: _results(20), 40: _results(40)})
    assert list(frame.columns) == ["protocol", "window", "n_way", "method", "k", "metric", "mean", "ci"]
    assert len(frame) == 2 * 3 * 3 * 4  # windows × methods × K × metrics
    row = frame[
        (frame.window == 40) & (frame.method == "fc-fingerprint") & (frame.k == 4) & (frame.metric == "eer")
    ].iloc[0]
    assert row["mean"] == pytest.approx(0.5 + 0.1 + 0.04 + 0.04) and row["ci"] == pytest.approx(0.02)
    assert frame["k"].dtype.kind == "i"
    with pytest.raises(DataError, match="key 20 holds results for window 40"):
        results_frame({20: _results(40)})
    with pytest.raises(DataError, match="not an evaluation result"):
        results_frame({20: {"methods": {}}})


def test_results_frame_reads_real_closed_set_output() -> None:
    rng = np.random.default_rng(0)
    recordings = [Recording(f"s{i}", "1", (rng.normal(size=(160, 6)) + i).astype(np.float32), 2.0) for i in range(4)]
    results = closed_set(recordings, window=16, k_shots=(1, 2), n_episodes=8)
    frame = results_frame([results])
    assert set(frame["method"]) == set(results["methods"])
    assert set(frame["metric"]) == set(METRICS) and set(frame["k"]) == {1, 2}
    value = results["methods"]["lda-fc"]["2"]["accuracy"]
    row = frame[(frame.method == "lda-fc") & (frame.k == 2) & (frame.metric == "accuracy")].iloc[0]
    assert (row["mean"], row["ci"], row["protocol"], row["n_way"]) == (value["mean"], value["ci"], "closed-set", 4)


def test_plot_k_curves_draws_means_and_ci_bands() -> None:
    frame = results_frame({20: _results(20), 40: _results(40)})
    fig = plot_k_curves(frame, metric="accuracy")
    ax = fig.axes[1]  # W = 40
    fewshot, fingerprint, chance = ax.lines
    np.testing.assert_allclose(fewshot.get_xdata(), [1, 2, 4])
    np.testing.assert_allclose(fewshot.get_ydata(), [0.5 + 0.01 * k + 0.04 for k in (1, 2, 4)])
    np.testing.assert_allclose(fingerprint.get_ydata(), [0.6 + 0.01 * k + 0.04 for k in (1, 2, 4)])
    assert chance.get_linestyle() == "--"
    np.testing.assert_allclose(chance.get_ydata(), 0.25)
    band = ax.collections[0].get_paths()[0].vertices  # fewshot: mean ± 0.01
    for k in (1, 2, 4):
        at_k = band[np.isclose(band[:, 0], k), 1]
        mean = 0.5 + 0.01 * k + 0.04
        assert at_k.min() == pytest.approx(mean - 0.01) and at_k.max() == pytest.approx(mean + 0.01)
    assert len(ax.collections) == 2  # chance has no band
    assert fig.axes[0].get_title().startswith("W = 20")


def test_plot_k_curves_needs_a_protocol_when_the_frame_mixes_them() -> None:
    frame = results_frame([_results(20), _results(20, protocol="open-set", n_way=2)])
    with pytest.raises(ConfigError, match="choose one with protocol="):
        plot_k_curves(frame)
    chance = plot_k_curves(frame, protocol="open-set").axes[0].lines[-1]
    np.testing.assert_allclose(chance.get_ydata(), 0.5)
    with pytest.raises(ConfigError, match="metrics"):
        plot_k_curves(frame, metric="recall", protocol="open-set")


def test_plot_window_curves_draws_means_against_window_length() -> None:
    frame = results_frame({80: _results(80), 20: _results(20), 40: _results(40)})
    ax = plot_window_curves(frame, metric="macro_f1", k=2).axes[0]
    np.testing.assert_allclose(ax.lines[0].get_xdata(), [20, 40, 80])
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [0.52 + w / 1000 for w in (20, 40, 80)])
    band = ax.collections[1].get_paths()[0].vertices  # fc-fingerprint: mean ± 0.02
    at_40 = band[np.isclose(band[:, 0], 40), 1]
    assert at_40.min() == pytest.approx(0.62 + 0.04 - 0.02)
    with pytest.raises(ConfigError, match="K = 16"):
        plot_window_curves(frame, k=16)


def test_plot_roc_det_perfect_separation_has_auc_one_corners() -> None:
    genuine, impostor = np.linspace(0.6, 1.0, 20), np.linspace(-1.0, 0.5, 60).reshape(3, 20)
    rng = np.random.default_rng(1)
    fig = plot_roc_det({"perfect": (genuine, impostor), "noise": (rng.normal(size=200), rng.normal(size=600))})
    ax_roc, ax_det = fig.axes[:2]
    perfect = ax_roc.lines[0].get_xydata()
    assert [0.0, 1.0] in perfect.tolist() and perfect[0].tolist() == [0.0, 0.0]
    assert perfect[-1].tolist() == [1.0, 1.0]
    assert not ((perfect[:, 0] > 0) & (perfect[:, 1] < 1)).any()  # no point inside the square
    assert ax_roc.lines[0].get_label() == "perfect (AUC 1.000)"
    noise_auc = float(ax_roc.lines[1].get_label().split("AUC ")[1].rstrip(")"))
    assert abs(noise_auc - 0.5) < 0.1
    # DET on normal deviates: a perfect split is the single point FPR = FNR = 0, drawn in the
    # lower-left corner (rates clipped to 1e-4 so that Φ⁻¹ stays finite)
    floor = norm.ppf(1e-4)
    np.testing.assert_allclose(ax_det.lines[0].get_xydata(), [[floor, floor]])
    assert ax_det.get_xlim() == pytest.approx((floor, -floor))
    with pytest.raises(DataError, match="genuine and impostor"):
        plot_roc_det({"empty": (np.array([]), impostor)})


def test_plot_roc_det_det_curve_is_the_probit_of_the_error_rates() -> None:
    genuine, impostor = np.array([0.9, 0.4, 0.8, 0.3]), np.array([0.1, 0.5, 0.2, 0.35, 0.0])
    ax_det = plot_roc_det({"m": (genuine, impostor)}).axes[1]
    # threshold 0.4: genuine 0.3 rejected (FNR 1/4), impostor 0.5 accepted (FPR 1/5)
    point = [norm.ppf(1 / 5), norm.ppf(1 / 4)]
    assert any(np.allclose(p, point) for p in ax_det.lines[0].get_xydata())


def test_table_markdown_has_method_rows_and_window_k_columns() -> None:
    frame = results_frame({20: _results(20), 40: _results(40)})
    text = table_markdown(frame, metric="accuracy", ks=(1, 4))
    lines = text.splitlines()
    assert lines[2] == "| method | W = 20, K = 1 | W = 20, K = 4 | W = 40, K = 1 | W = 40, K = 4 |"
    assert lines[4] == "| fewshot | 0.53 ± 0.01 | 0.56 ± 0.01 | 0.55 ± 0.01 | 0.58 ± 0.01 |"
    assert lines[6] == "| chance | 0.25 ± 0.00 | 0.25 ± 0.00 | 0.25 ± 0.00 | 0.25 ± 0.00 |"
    partial = frame[~((frame.method == "fewshot") & (frame.window == 40) & (frame.k == 4))]
    assert table_markdown(partial).splitlines()[4].endswith("| – |")
