"""RecVAE latent inspection: trajectory, eigenvalues, slices, the 3-D path and the widget (Agg backend)."""

from __future__ import annotations

import base64

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from workbench.data.recording import Recording
from workbench.data.volume_runs import prepare_volume_runs
from workbench.data.windows import WindowSet
from workbench.errors import ConfigError, DataError
from workbench.models.recvae import RunReadout, read_run
from workbench.train import build_method
from workbench.viz.latents import (
    RecVAEInspector,
    latent_coordinates,
    plot_eigenvalues,
    render_run,
    trajectory_3d,
    volume_slice,
)

GRID = (4, 3, 5)
MASK = np.ones(GRID, dtype=bool)
MASK[0, 0, :] = False  # 55 voxels


def _readout(frames: int = 8, latent: int = 3, seed: int = 0) -> RunReadout:
    rng = np.random.default_rng(seed)
    original = rng.standard_normal((frames, int(MASK.sum())))
    return RunReadout(
        rng.standard_normal((frames, latent)), original, original + 0.1 * rng.standard_normal(original.shape)
    )


def _shown(ax) -> np.ndarray:
    """The image of an axes as float with NaN where matplotlib masked it."""
    return np.ma.filled(np.ma.asarray(ax.images[0].get_array(), dtype=float), np.nan)


def _rotation(radius: float, theta: float) -> np.ndarray:
    return radius * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])


def test_eigenvalues_are_drawn_on_the_complex_plane_with_the_unit_circle():
    ax = plot_eigenvalues(np.block([[_rotation(0.9, 0.5), np.zeros((2, 1))], [np.zeros((1, 2)), 0.3 * np.eye(1)]]))
    circle = ax.lines[0]
    np.testing.assert_allclose(np.hypot(circle.get_xdata(), circle.get_ydata()), 1.0)
    points = sorted(map(tuple, np.round(ax.collections[0].get_offsets(), 9)))
    expected = sorted([(0.3, 0.0), (0.9 * np.cos(0.5), 0.9 * np.sin(0.5)), (0.9 * np.cos(0.5), -0.9 * np.sin(0.5))])
    np.testing.assert_allclose(points, np.round(expected, 9))
    with pytest.raises(DataError, match="square"):
        plot_eigenvalues(np.zeros((2, 3)))


def test_a_slice_puts_the_frame_on_the_grid_with_nan_outside_the_mask():
    frame = np.arange(int(MASK.sum()), dtype=float)
    volume = np.full(GRID, np.nan)
    volume[MASK] = frame
    np.testing.assert_array_equal(volume_slice(frame, MASK, "z", 2), volume[:, :, 2])
    np.testing.assert_array_equal(volume_slice(frame, MASK, "x", 0), volume[0])
    assert np.isnan(volume_slice(frame, MASK, "x", 0)[0]).all()
    with pytest.raises(ConfigError, match="outside"):
        volume_slice(frame, MASK, "y", 3)
    with pytest.raises(DataError, match="mask"):
        volume_slice(frame[:-1], MASK, "z", 0)


def test_render_run_draws_the_path_the_eigenvalues_and_the_slices_of_frame_t():
    readout = _readout()
    fig = render_run(readout, _rotation(0.8, 0.2), MASK, t=5, axis="y", index=1, tr=2.0)
    path, _, original, reconstruction, difference = fig.axes[:5]
    for d, line in enumerate(path.lines[:3]):
        np.testing.assert_allclose(line.get_ydata(), readout.mu[:, d])
        np.testing.assert_allclose(line.get_xdata(), 2.0 * np.arange(8))
    np.testing.assert_allclose(path.lines[3].get_xdata(), [10.0, 10.0])  # the marker at t = 5 frames = 10 s
    want = volume_slice(readout.original[5], MASK, "y", 1)
    np.testing.assert_array_equal(_shown(original), want.T)
    got = volume_slice(readout.reconstruction[5], MASK, "y", 1)
    np.testing.assert_array_equal(_shown(reconstruction), got.T)
    np.testing.assert_allclose(_shown(difference), (got - want).T)
    with pytest.raises(ConfigError, match="time 8"):
        render_run(readout, np.eye(3), MASK, t=8)


def test_3d_path_has_a_trace_per_category_or_colours_by_time():
    mu = np.random.default_rng(1).standard_normal((6, 4))
    cats = np.array(["face", "face", None, "house", "face", np.nan], dtype=object)
    fig = trajectory_3d(mu, cats)
    assert [t.name for t in fig.data] == ["path", "face", "none", "house"]
    np.testing.assert_allclose(fig.data[0].x, mu[:, 0])
    np.testing.assert_allclose(fig.data[1].z, mu[[0, 1, 4], 2])
    np.testing.assert_allclose(fig.data[2].y, mu[[2, 5], 1])
    timed = trajectory_3d(mu, tr=2.0)
    np.testing.assert_allclose(timed.data[1].marker.color, 2.0 * np.arange(6))
    pcs = PCA(3).fit_transform(mu)
    np.testing.assert_allclose(np.abs(latent_coordinates(mu, "pca")), np.abs(pcs), atol=1e-9)
    assert latent_coordinates(mu[:, :2]).shape == (6, 3) and (latent_coordinates(mu[:, :2])[:, 2] == 0).all()
    with pytest.raises(DataError, match="categories"):
        trajectory_3d(mu, cats[:4])


def test_inspector_redraws_when_controls_change():
    readouts = {"run a": _readout(8, seed=0), "run b": _readout(12, seed=1)}
    inspector = RecVAEInspector(readouts, _rotation(0.9, 0.3), MASK, categories={"run b": np.array(list("ab") * 6)})
    (png,) = inspector.output.outputs
    assert base64.b64decode(png["data"]["image/png"]).startswith(b"\x89PNG")
    assert inspector.trajectory_output.outputs[0]["data"]["application/vnd.plotly.v1+json"]["data"]
    assert [t.name for t in inspector.trajectory.data] == ["path", "time"]

    inspector.controls["time"].value = 6
    np.testing.assert_allclose(inspector.figure.axes[0].lines[3].get_xdata(), [6.0, 6.0])
    inspector.controls["slice"].value = 3
    shown = _shown(inspector.figure.axes[2])
    np.testing.assert_array_equal(shown, volume_slice(readouts["run a"].original[6], MASK, "z", 3).T)

    inspector.controls["axis"].value = "y"  # 3 voxels along y: the slice falls back to the last one
    assert inspector.controls["slice"].max == 2 and inspector.controls["slice"].value == 2
    shown = _shown(inspector.figure.axes[2])
    np.testing.assert_array_equal(shown, volume_slice(readouts["run a"].original[6], MASK, "y", 2).T)

    inspector.controls["run"].value = "run b"
    assert inspector.controls["time"].max == 11
    np.testing.assert_allclose(inspector.figure.axes[0].lines[0].get_ydata(), readouts["run b"].mu[:, 0])
    assert [t.name for t in inspector.trajectory.data] == ["path", "a", "b"]
    np.testing.assert_allclose(inspector.trajectory.data[1].x, readouts["run b"].mu[::2, 0])


def test_read_run_feeds_the_inspector_from_a_model():
    rng = np.random.default_rng(0)
    data = np.zeros((5, 6, 4, 10), dtype=np.float32)
    data[1:4, 1:5, :] = rng.standard_normal((3, 4, 4, 10))
    runs = prepare_volume_runs(
        [Recording("s0", "1", data, 2.0, {}), Recording("s1", "1", data[..., ::-1].copy(), 2.0, {})]
    )
    torch.manual_seed(0)
    model = build_method("recvae", WindowSet(runs, 5, 5).spec(), "tiny").eval()
    readout = read_run(model, runs[0])
    assert readout.mu.shape == (10, 3) and readout.reconstruction.shape == readout.original.shape == (10, 48)
    with torch.no_grad():
        windows = torch.from_numpy(runs[0].data[None])
        np.testing.assert_allclose(readout.mu, model.posterior(windows).mu[0].numpy(), rtol=1e-5, atol=1e-6)
    inspector = RecVAEInspector({"s0": readout}, model.transition.F.numpy(), runs[0].meta["mask"], tr=2.0)
    assert inspector.figure is not None and len(inspector.figure.axes) >= 5
