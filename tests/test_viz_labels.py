"""Label-alignment figures: event-locked averages and the design next to the carpet (Agg backend)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from workbench.data.recording import Recording
from workbench.errors import DataError
from workbench.viz.labels import (
    canonical_response,
    event_locked_average,
    onset_frames,
    plot_design_carpet,
    plot_event_locked,
)

TR = 2.0
HEAT = [(5, 11), (25, 31), (45, 51)]  # [start, stop) frames of heat blocks
RATING = [(15, 19), (35, 39)]


def _period(n_frames: int = 60) -> pd.Series:
    values = np.full(n_frames, None, dtype=object)
    for value, blocks in (("heat", HEAT), ("rating", RATING)):
        for a, b in blocks:
            values[a:b] = value
    return pd.Series(pd.Categorical(values, categories=["heat", "rating"]))


def _runs(n_subjects: int = 3, n_runs: int = 2) -> list[Recording]:
    rng = np.random.default_rng(0)
    out = []
    for s in range(n_subjects):
        for r in range(n_runs):
            data = rng.standard_normal((60, 3)).astype(np.float32)
            for a, _ in HEAT:
                data[a + 3, :2] += 4.0  # a response 3 frames (6 s) after each heat onset, regions A and B
            labels = pd.DataFrame({"period": _period()})
            out.append(Recording(f"s{s}", f"run-{r}", data, TR, {"roi_names": ["A", "B", "C"]}, labels))
    return out


def test_onset_frames_are_the_first_frames_of_each_block() -> None:
    assert onset_frames(_period(), "heat").tolist() == [5, 25, 45]
    assert onset_frames(_period(), "rating").tolist() == [15, 35]


def test_event_locked_average_matches_a_direct_computation() -> None:
    runs = _runs()
    average = event_locked_average(runs, ["A", "B"], "period", "heat", window_s=(-6.0, 30.0))
    lags = np.arange(-3, 16)  # frames; the onset at 45 + 15 = 60 leaves the 60-frame run and is skipped
    per_subject = {}
    for rec in runs:
        x = rec.data[:, :2].astype(np.float64)
        z = ((x - x.mean(0)) / x.std(0)).mean(1)
        per_subject.setdefault(rec.subject, []).extend(z[onset + lags] for onset in (5, 25))
    units = np.array([np.mean(v, axis=0) for v in per_subject.values()])
    sem = units.std(axis=0, ddof=1) / np.sqrt(3)
    np.testing.assert_allclose(average.lags, lags * TR)
    np.testing.assert_allclose(average.mean, units.mean(0), rtol=1e-6)
    np.testing.assert_allclose(average.high - average.mean, 1.96 * sem, rtol=1e-6)
    assert average.peak_lag == 6.0 and average.n_subjects == 3 and average.n_events == 12
    assert average.block_s == 6 * TR
    with pytest.raises(DataError, match=r"no region\(s\) \['Z'\]"):
        event_locked_average(runs, ["Z"], "period", "heat")


def test_canonical_response_rises_after_the_onset_and_peaks_near_5_s_for_an_impulse() -> None:
    lags = np.arange(-4.0, 30.0, 0.1)
    impulse = canonical_response(0.1, lags)
    assert np.all(impulse[lags < 0] == 0) and impulse.max() == pytest.approx(1.0)
    assert 4.5 <= lags[np.argmax(impulse)] <= 5.5  # the SPM double-gamma HRF peaks at about 5 s
    block = canonical_response(12.0, lags)
    assert lags[np.argmax(block)] > lags[np.argmax(impulse)] + 5.0  # a long block peaks near its end


def test_plot_event_locked_has_a_panel_per_region_group() -> None:
    fig = plot_event_locked(_runs(), regions={"AB": ["A", "B"], "C": ["C"]}, events=("heat", "rating"))
    assert len(fig.axes) == 2
    for ax in fig.axes:
        labels = [line.get_label() for line in ax.lines]
        assert labels[0].startswith("heat onset") and labels[1].startswith("rating onset")
        assert labels[2].startswith("canonical HRF x 12 s heat block") and len(ax.lines) == 4  # + zero line
        assert len(ax.collections) == 2  # one band per event
    assert fig.axes[0].lines[0].get_label().startswith("heat onset (peak 6 s")


def test_plot_design_carpet_shows_one_hot_design_and_carpet() -> None:
    runs = []
    for r in range(3):
        category = np.array(["rest"] * 4 + ["face"] * 3 + ["house"] * 3, dtype=object)
        labels = pd.DataFrame({"category": pd.Categorical(category)})
        data = np.random.default_rng(r).standard_normal((10, 7)).astype(np.float32)
        runs.append(Recording("1", f"run-{r}", data, 2.5, {}, labels))
    fig = plot_design_carpet(runs)
    design, carpet = fig.axes[0].images[0].get_array(), fig.axes[1].images[0].get_array()
    assert design.shape == (2, 30) and carpet.shape == (7, 30)
    np.testing.assert_array_equal(design[0], np.tile([0, 0, 0, 0, 1, 1, 1, 0, 0, 0], 3))  # face
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["face", "house"]
    assert len(fig.axes[0].lines) == len(fig.axes[1].lines) == 2  # two run boundaries
    assert np.abs(carpet).max() <= 2.5
