"""UMAP maps, plotly figures, atomic saving, nearest neighbours and the LatentInspector.

The first UMAP fit of a process compiles numba code (tens of seconds on a loaded 2-core
machine); the maps are therefore computed once per module.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from workbench.errors import ConfigError, DataError
from workbench.viz.embeddings import (
    PLOTLY_BUNDLE,
    LatentInspector,
    nearest_neighbours,
    save_html,
    save_png,
    umap_coords,
    umap_figure,
)


def _clusters(n_per: int = 20, dim: int = 8, gap: float = 20.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    points = np.concatenate([rng.normal(0.0, 1.0, (n_per, dim)), rng.normal(gap, 1.0, (n_per, dim))])
    return points, np.repeat(np.array(["a", "b"]), n_per)


@pytest.fixture(scope="module")
def maps() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    points, _ = _clusters()
    first = umap_coords(points, seed=3, n_neighbors=10, n_epochs=30)
    second = umap_coords(points, seed=3, n_neighbors=10, n_epochs=30)
    return points, first, second


def test_umap_coords_is_deterministic_for_a_seed(maps) -> None:
    _, first, second = maps
    assert first.shape == (40, 2)
    np.testing.assert_array_equal(first, second)


def test_umap_coords_separates_far_apart_clusters(maps) -> None:
    _, coords, _ = maps
    a, b = coords[:20], coords[20:]
    spread = max(np.linalg.norm(a - a.mean(0), axis=1).max(), np.linalg.norm(b - b.mean(0), axis=1).max())
    assert np.linalg.norm(a.mean(0) - b.mean(0)) > 2 * spread
    assert cdist(a, b).min() > max(cdist(a, a).max(), cdist(b, b).max()) / 2


def test_umap_coords_rejects_too_few_points_and_unknown_metrics() -> None:
    with pytest.raises(DataError, match="at least 4 points"):
        umap_coords(np.zeros((3, 5)))
    with pytest.raises(ConfigError, match="unknown metric"):
        umap_coords(np.random.default_rng(0).normal(size=(6, 3)), metric="nonsense")
    with pytest.raises(DataError, match="NaN or inf"):
        umap_coords(np.full((6, 3), np.nan))


def _figure():
    rng = np.random.default_rng(1)
    coords = rng.normal(size=(12, 2))
    subjects = np.array(["s1", "s2", "s3"] * 4)
    dataset = np.array(["hcp"] * 6 + ["gw"] * 6)
    time = np.linspace(0.0, 110.0, 12)
    fig = umap_figure(
        coords,
        {"subject": subjects, "dataset": dataset, "time in run": time},
        hover={"window": np.arange(12)},
        title="map",
    )
    return fig, coords, subjects, time


def test_umap_figure_has_a_trace_per_category_and_a_button_per_colouring() -> None:
    fig, coords, subjects, time = _figure()
    by_colouring = [t.meta for t in fig.data]
    assert by_colouring == ["subject"] * 3 + ["dataset"] * 2 + ["time in run"]
    subject_traces = fig.data[:3]
    assert [t.name for t in subject_traces] == ["s1", "s2", "s3"]
    for trace in subject_traces:
        rows = subjects == trace.name
        np.testing.assert_allclose(trace.x, coords[rows, 0])
        np.testing.assert_allclose(trace.y, coords[rows, 1])
        np.testing.assert_array_equal(trace.customdata[:, 0], np.flatnonzero(rows))
    assert len({t.marker.color for t in subject_traces}) == 3
    numeric = fig.data[5]
    np.testing.assert_allclose(numeric.marker.color, time)
    assert numeric.marker.colorbar.title.text == "time in run"
    assert [t.visible for t in fig.data] == [True] * 3 + [False] * 3
    buttons = fig.layout.updatemenus[0].buttons
    assert [b.label for b in buttons] == ["subject", "dataset", "time in run"]
    for button, colouring in zip(buttons, ["subject", "dataset", "time in run"]):
        assert button.args[0]["visible"] == [m == colouring for m in by_colouring]


def test_umap_figure_rejects_misshapen_fields() -> None:
    with pytest.raises(DataError, match=r"shape \(4,\)"):
        umap_figure(np.zeros((4, 2)), {"subject": np.arange(3)})


def test_save_html_shares_one_local_plotly_bundle_and_is_atomic(tmp_path, monkeypatch) -> None:
    fig = _figure()[0]
    path = save_html(fig, tmp_path / "out" / "map.html")
    text = path.read_text()
    assert '<script src="https://cdn' not in text
    assert f'src="{PLOTLY_BUNDLE}"' in text and len(text) < 200_000  # not inlined
    bundle = path.parent / PLOTLY_BUNDLE
    assert "plotly.js v" in bundle.read_text()[:500] and bundle.stat().st_size > 1_000_000
    before = bundle.stat().st_mtime_ns
    save_html(fig, path.parent / "second.html")  # a second page reuses the bundle
    assert bundle.stat().st_mtime_ns == before
    (path.parent / "second.html").unlink()
    assert sorted(p.name for p in path.parent.iterdir()) == ["map.html", PLOTLY_BUNDLE]

    def broken(file, **kwargs):
        with open(file, "w") as stream:
            stream.write("<html>half")
        raise OSError("disk full")

    monkeypatch.setattr(fig, "write_html", broken)
    with pytest.raises(OSError, match="disk full"):
        save_html(fig, path)
    assert path.read_text() == text  # the old file is untouched, no temporary left behind
    assert sorted(p.name for p in path.parent.iterdir()) == ["map.html", PLOTLY_BUNDLE]


def test_save_png_writes_a_png(tmp_path) -> None:
    coords = np.random.default_rng(2).normal(size=(24, 2))
    twelve = np.array([f"subject-{i}" for i in range(12)] * 2)  # more than plotly's 10 colours
    path = save_png(coords, twelve, tmp_path / "map.png", title="subjects")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    save_png(coords, np.linspace(0, 1, 24), tmp_path / "time.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.png", "time.png"]
    fig = umap_figure(coords, {"subject": twelve})
    assert len({t.marker.color for t in fig.data}) == 12


def test_saved_files_get_the_usual_permissions(tmp_path) -> None:
    import os

    umask = os.umask(0o022)
    try:
        path = save_png(np.zeros((4, 2)), np.arange(4.0), tmp_path / "map.png")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644  # readable by others, as any written file


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_nearest_neighbours_match_brute_force(metric: str) -> None:
    points = np.random.default_rng(3).normal(size=(30, 5))
    indices, distances = nearest_neighbours(points, 4, k=6, metric=metric)
    brute = cdist(points[4:5], points, metric=metric)[0]
    brute[4] = np.inf
    expected = np.argsort(brute)[:6]
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_allclose(distances, brute[expected])
    assert 4 not in indices


def test_nearest_neighbours_reject_bad_arguments() -> None:
    points = np.random.default_rng(4).normal(size=(5, 2))
    with pytest.raises(ConfigError, match="between 1 and n - 1 = 4"):
        nearest_neighbours(points, 0, k=5)
    with pytest.raises(DataError, match="outside 0..4"):
        nearest_neighbours(points, 5)
    with pytest.raises(ConfigError, match="metric"):
        nearest_neighbours(points, 0, k=2, metric="manhattan")


def test_latent_inspector_recomputes_on_control_changes() -> None:
    points, subjects = _clusters(n_per=10, dim=4, gap=10.0, seed=5)
    windows = np.random.default_rng(6).normal(size=(20, 7, 3))
    times = np.arange(20) * 1.5
    inspector = LatentInspector(points, subjects, times=times, windows=windows, k=4)
    assert set(inspector.controls) == {"window", "k", "metric"}
    inspector.controls["window"].value = 13
    rows, distances = nearest_neighbours(points, 13, k=4)
    np.testing.assert_array_equal(inspector.neighbours["window"], rows)
    np.testing.assert_allclose(inspector.neighbours["distance"], distances)
    np.testing.assert_allclose(inspector.neighbours["time (s)"], times[rows])
    assert inspector.same_subject_fraction == 1.0
    left, right = (np.asarray(ax.images[0].get_array()) for ax in inspector.figure.axes[:2])
    np.testing.assert_allclose(left, windows[13].T)
    np.testing.assert_allclose(right, windows[rows[0]].T)
    assert [o["output_type"] for o in inspector.output.outputs] == ["display_data"] * 2
    assert "image/png" in inspector.output.outputs[1]["data"]

    inspector.controls["metric"].value = "cosine"
    inspector.controls["k"].value = 9
    rows, _ = nearest_neighbours(points, 13, k=9, metric="cosine")
    np.testing.assert_array_equal(inspector.neighbours["window"], rows)
    assert inspector.same_subject_fraction == 1.0


def test_latent_inspector_same_subject_fraction_counts_mixed_neighbours() -> None:
    points = np.arange(6, dtype=float)[:, None] * [1.0, 0.0]  # points on a line
    inspector = LatentInspector(points, np.array(["a", "a", "b", "b", "b", "b"]), k=4)
    inspector.controls["window"].value = 1  # neighbours 0, 2, 3, 4: one of four is "a"
    np.testing.assert_array_equal(inspector.neighbours["window"], [0, 2, 3, 4])
    assert inspector.same_subject_fraction == 0.25
    assert inspector.figure is None and len(inspector.output.outputs) == 1
    with pytest.raises(DataError, match="subjects has 2 rows"):
        LatentInspector(points, np.array(["a", "b"]))
