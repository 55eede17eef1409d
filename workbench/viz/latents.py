"""Inspecting a trained recurrent VAE: latent paths, the transition's eigenvalues, reconstructed slices.

Pure functions draw matplotlib :class:`~matplotlib.figure.Figure` objects without pyplot and
build plotly figures; :class:`RecVAEInspector` wraps them in ipywidgets (a run, a time, a slice
axis and index) whose callbacks only redraw into ``Output`` widgets. What is drawn comes from
:func:`workbench.models.recvae.read_run` (one run read as a single sequence from ``h_0 = 0``):

* the posterior means ``μ_t`` of the run over time, one line per latent dimension;
* the eigenvalues of the transition ``F`` on the complex plane with the unit circle: inside the
  circle a mode decays, on it it persists, a complex pair oscillates (period ``2π / |arg λ|``
  frames);
* the original and the reconstructed volume at time ``t`` cut at one slice, and their difference;
* a plotly 3-D path of the latent means (the first three dimensions, or the first three
  principal components), coloured by the frames' category when the run has one, else by time.

Reference: the recurrent VAE of the seed (``workbench.models.recvae``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from workbench.errors import ConfigError, DataError
from workbench.models.recvae.readout import RunReadout
from workbench.viz.outputs import literal, plotly_text, png_output

AXES = ("x", "y", "z")
PROJECTIONS = ("first3", "pca")
_PALETTE = ("#3b75af", "#ef8636", "#529e3e", "#c53a32", "#8d69b8", "#84584e", "#d57fbe", "#7f7f7f", "#bcbd45")


def plot_latent_trajectory(
    mu: np.ndarray, tr: float | None = None, t: int | None = None, ax: Axes | None = None
) -> Axes:
    """Lines ``μ_t[d]`` over time, one per latent dimension; a vertical marker at frame ``t``.

    Parameters
    ----------
    mu : numpy.ndarray
        ``(T, L)`` posterior means.
    tr : float, optional
        Repetition time; the axis is in seconds when given, in frames otherwise.
    """
    mu = np.asarray(mu, dtype=np.float64)
    if mu.ndim != 2:
        raise DataError(f"a latent trajectory is (T, L), got shape {mu.shape}")
    if ax is None:
        ax = Figure(figsize=(6.0, 3.0), layout="constrained").add_subplot()
    step = tr if tr and np.isfinite(tr) else 1.0
    time = np.arange(mu.shape[0]) * step
    for d in range(mu.shape[1]):
        ax.plot(time, mu[:, d], lw=1.2, color=_PALETTE[d % len(_PALETTE)], label=f"h[{d}]")
    if t is not None:
        ax.axvline(t * step, color="black", lw=0.8, ls="--")
    ax.set_xlabel("time (s)" if step != 1.0 or tr else "frame")
    ax.set_ylabel("posterior mean")
    ax.legend(loc="upper right", fontsize="x-small", ncol=min(mu.shape[1], 5))
    return ax


def plot_eigenvalues(transition: np.ndarray, reference: np.ndarray | None = None, ax: Axes | None = None) -> Axes:
    """Eigenvalues of ``F`` on the complex plane with the unit circle (and a reference ``F``'s, hollow).

    The first line of the axes is the circle; the first collection holds ``F``'s eigenvalues
    (real part on x, imaginary part on y), the second the reference's when given.
    """
    transition = np.asarray(transition, dtype=np.float64)
    if transition.ndim != 2 or transition.shape[0] != transition.shape[1]:
        raise DataError(f"F must be a square matrix, got shape {transition.shape}")
    if ax is None:
        ax = Figure(figsize=(3.4, 3.4), layout="constrained").add_subplot()
    angle = np.linspace(0.0, 2 * np.pi, 361)
    ax.plot(np.cos(angle), np.sin(angle), color="grey", lw=0.8)
    eig = np.linalg.eigvals(transition)
    ax.scatter(eig.real, eig.imag, color=_PALETTE[0], zorder=3, label="learned F")
    if reference is not None:
        true = np.linalg.eigvals(np.asarray(reference, dtype=np.float64))
        ax.scatter(true.real, true.imag, facecolors="none", edgecolors=_PALETTE[1], zorder=3, label="reference")
        ax.legend(loc="lower left", fontsize="x-small")
    limit = max(1.1, float(np.abs(eig).max()) * 1.1)
    ax.set_xlim(-limit, limit)
    ax.set_ylim(-limit, limit)
    ax.set_aspect("equal")
    ax.axhline(0.0, color="grey", lw=0.4)
    ax.axvline(0.0, color="grey", lw=0.4)
    ax.set_xlabel("Re λ")
    ax.set_ylabel("Im λ")
    ax.set_title(f"eigenvalues of F (max |λ| = {np.abs(eig).max():.2f})", fontsize=9)
    return ax


def volume_slice(frame: np.ndarray, mask: np.ndarray, axis: str, index: int) -> np.ndarray:
    """The slice ``index`` along ``axis`` of one in-mask frame ``(V,)`` put on the grid (NaN outside the mask)."""
    if axis not in AXES:
        raise ConfigError(f"slice axis {axis!r}: choose one of {list(AXES)}")
    mask = np.asarray(mask, dtype=bool)
    frame = np.asarray(frame, dtype=np.float64)
    if frame.shape != (int(mask.sum()),):
        raise DataError(f"a frame of {frame.shape} values does not fit a mask of {int(mask.sum())} voxels")
    a = AXES.index(axis)
    if not 0 <= index < mask.shape[a]:
        raise ConfigError(f"slice {index} is outside the {axis} axis of {mask.shape[a]} voxels")
    volume = np.full(mask.shape, np.nan)
    volume[mask] = frame
    return np.take(volume, index, axis=a)


def plot_slices(
    original: np.ndarray, reconstruction: np.ndarray, mask: np.ndarray, axis: str, index: int, axes: list[Axes]
) -> None:
    """Original, reconstructed and difference slice of one frame on three axes (shared colour scale).

    Each axes holds one image: ``volume_slice(...)`` of the original, the reconstruction and
    ``reconstruction − original``.
    """
    first, second = volume_slice(original, mask, axis, index), volume_slice(reconstruction, mask, axis, index)
    limit = float(np.nanmax(np.abs(np.concatenate([first.ravel(), second.ravel()])))) or 1.0
    for ax, image, title in zip(axes, (first, second, second - first), ("original", "reconstruction", "difference")):
        shown = ax.imshow(image.T, origin="lower", cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[-1].figure.colorbar(shown, ax=list(axes), fraction=0.04, pad=0.02)


def render_run(
    readout: RunReadout,
    transition: np.ndarray,
    mask: np.ndarray,
    t: int,
    axis: str = "z",
    index: int = 0,
    tr: float | None = None,
    reference: np.ndarray | None = None,
    title: str = "",
) -> Figure:
    """The inspector's figure: trajectory and eigenvalues on top, the three slices below.

    ``fig.axes[0]`` is the trajectory, ``fig.axes[1]`` the eigenvalues, ``fig.axes[2:5]`` the
    original, reconstructed and difference slices of frame ``t``.
    """
    if not 0 <= t < readout.mu.shape[0]:
        raise ConfigError(f"time {t} is outside the run's {readout.mu.shape[0]} frames")
    # a fixed grid, no layout engine: the inspector redraws on every slider move
    fig = Figure(figsize=(11.0, 6.4))
    grid = fig.add_gridspec(2, 7, left=0.06, right=0.97, bottom=0.04, top=0.9, hspace=0.35, wspace=0.8)
    ax_path, ax_eig = fig.add_subplot(grid[0, :5]), fig.add_subplot(grid[0, 5:])
    plot_latent_trajectory(readout.mu, tr, t, ax_path)
    plot_eigenvalues(transition, reference, ax_eig)
    slices = [fig.add_subplot(grid[1, 2 * i : 2 * i + 2]) for i in range(3)]
    plot_slices(readout.original[t], readout.reconstruction[t], mask, axis, index, slices)
    error = float(np.mean((readout.reconstruction[t] - readout.original[t]) ** 2))
    slices[0].set_ylabel(f"frame {t}, {axis} = {index}\nframe MSE {error:.3g}", fontsize=9)
    if title:
        fig.suptitle(literal(title))
    return fig


def latent_coordinates(mu: np.ndarray, projection: str = "first3") -> np.ndarray:
    """``(T, 3)`` coordinates of a latent path: its first three dimensions, or its first three principal components.

    Paths with fewer than three dimensions are padded with zeros.
    """
    if projection not in PROJECTIONS:
        raise ConfigError(f"projection={projection!r}: choose one of {list(PROJECTIONS)}")
    mu = np.asarray(mu, dtype=np.float64)
    if projection == "pca":
        centred = mu - mu.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        mu = centred @ vt.T
    out = np.zeros((mu.shape[0], 3))
    out[:, : min(3, mu.shape[1])] = mu[:, :3]
    return out


def trajectory_3d(
    mu: np.ndarray,
    categories: np.ndarray | None = None,
    tr: float | None = None,
    projection: str = "first3",
    title: str = "",
) -> go.Figure:
    """Plotly 3-D path of the latent means, coloured by category (one trace each) or by time.

    Parameters
    ----------
    mu : numpy.ndarray
        ``(T, L)`` posterior means.
    categories : numpy.ndarray, optional
        ``(T,)`` label of every frame (missing as ``None``/NaN, shown as "none"); without it the
        points are coloured by time.
    projection : {"first3", "pca"}
        See :func:`latent_coordinates`.

    Returns
    -------
    plotly.graph_objects.Figure
        Trace 0 is the grey path through all frames; then one marker trace per category (in
        order of appearance), or one marker trace coloured by time.
    """
    xyz = latent_coordinates(mu, projection)
    step = tr if tr and np.isfinite(tr) else 1.0
    time = np.arange(xyz.shape[0]) * step
    fig = go.Figure(
        go.Scatter3d(x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2], mode="lines", line={"color": "lightgrey"}, name="path")
    )
    if categories is None:
        fig.add_trace(
            go.Scatter3d(
                x=xyz[:, 0],
                y=xyz[:, 1],
                z=xyz[:, 2],
                mode="markers",
                marker={"size": 3, "color": time, "colorscale": "Viridis", "colorbar": {"title": "time"}},
                name="time",
            )
        )
    else:
        categories = np.asarray(categories, dtype=object)
        if categories.shape != (xyz.shape[0],):
            raise DataError(f"{categories.shape[0]} categories for a path of {xyz.shape[0]} frames")
        names = np.array(
            ["none" if c is None or (isinstance(c, float) and np.isnan(c)) else str(c) for c in categories]
        )
        for i, name in enumerate(dict.fromkeys(names)):
            keep = names == name
            fig.add_trace(
                go.Scatter3d(
                    x=xyz[keep, 0],
                    y=xyz[keep, 1],
                    z=xyz[keep, 2],
                    mode="markers",
                    marker={"size": 3, "color": _PALETTE[i % len(_PALETTE)]},
                    name=plotly_text(name),
                    text=[f"t = {v:.1f}" for v in time[keep]],
                )
            )
    axis = ("h[0]", "h[1]", "h[2]") if projection == "first3" else ("PC 1", "PC 2", "PC 3")
    fig.update_layout(
        title=plotly_text(title),
        scene={"xaxis_title": axis[0], "yaxis_title": axis[1], "zaxis_title": axis[2]},
        height=520,
    )
    return fig


def plotly_output(fig: go.Figure) -> dict[str, Any]:
    """A ``display_data`` record of a plotly figure (JupyterLab renders the plotly MIME type)."""
    return {
        "output_type": "display_data",
        "data": {"application/vnd.plotly.v1+json": json.loads(fig.to_json()), "text/plain": "<plotly figure>"},
        "metadata": {},
    }


class RecVAEInspector:
    """Pick a run, a time and a slice; see the latent path, ``F``'s eigenvalues and the reconstruction.

    Parameters
    ----------
    readouts : mapping of str to RunReadout
        One read run per name (:func:`workbench.models.recvae.read_run`).
    transition : numpy.ndarray
        ``(L, L)`` the model's ``F``.
    mask : numpy.ndarray
        ``(X, Y, Z)`` boolean brain mask of the frames.
    categories : mapping of str to numpy.ndarray, optional
        ``(T,)`` category of every frame of a run, for the 3-D path's colours (time otherwise).
    tr : float, optional
        Repetition time, for axes in seconds.
    reference : numpy.ndarray, optional
        A known ``F`` whose eigenvalues are drawn hollow (synthetic data).
    projection : {"first3", "pca"}
        Coordinates of the 3-D path.

    Attributes
    ----------
    controls : dict[str, Widget]
        ``"run"`` (Dropdown), ``"time"`` (IntSlider), ``"axis"`` (Dropdown of x, y, z),
        ``"slice"`` (IntSlider). Assigning ``.value`` redraws.
    output, trajectory_output : ipywidgets.Output
        The matplotlib figure (PNG) and the plotly 3-D path.
    figure : Figure
        The last :func:`render_run` figure.
    trajectory : plotly.graph_objects.Figure
        The last :func:`trajectory_3d` figure (redrawn when the run changes).
    widget : ipywidgets.VBox
        What to display (the inspector displays as this widget too).
    """

    def __init__(
        self,
        readouts: Mapping[str, RunReadout],
        transition: np.ndarray,
        mask: np.ndarray,
        categories: Mapping[str, np.ndarray] | None = None,
        tr: float | None = None,
        reference: np.ndarray | None = None,
        projection: str = "first3",
    ):
        if not readouts:
            raise DataError("RecVAEInspector needs at least one read run")
        self.readouts, self.transition, self.mask = dict(readouts), np.asarray(transition), np.asarray(mask, bool)
        self.categories = dict(categories or {})
        self.tr, self.reference, self.projection = tr, reference, projection
        latent_coordinates(np.zeros((1, 1)), projection)  # checks the projection name
        first = next(iter(self.readouts))
        wide = {"layout": widgets.Layout(width="520px"), "continuous_update": False}
        self.controls: dict[str, widgets.Widget] = {
            "run": widgets.Dropdown(options=list(self.readouts), value=first, description="run"),
            "time": widgets.IntSlider(value=0, min=0, max=self._frames(first) - 1, description="time", **wide),
            "axis": widgets.Dropdown(options=AXES, value="z", description="slice axis"),
            "slice": widgets.IntSlider(value=self.mask.shape[2] // 2, min=0, max=self.mask.shape[2] - 1, **wide),
        }
        self.controls["slice"].description = "slice"
        self.output, self.trajectory_output = widgets.Output(), widgets.Output()
        self.figure: Figure | None = None
        self.trajectory: go.Figure | None = None
        self._quiet = False
        self.controls["run"].observe(self._on_run, names="value")
        self.controls["axis"].observe(self._on_axis, names="value")
        for name in ("time", "slice"):
            self.controls[name].observe(self._on_change, names="value")
        self.widget = widgets.VBox([*self.controls.values(), self.output, self.trajectory_output])
        self._draw_trajectory()
        self.redraw()

    def _frames(self, run: str) -> int:
        return int(self.readouts[run].mu.shape[0])

    def redraw(self) -> None:
        """Render the current run, time and slice into :attr:`output`."""
        run = self.controls["run"].value
        self.figure = render_run(
            self.readouts[run],
            self.transition,
            self.mask,
            int(self.controls["time"].value),
            self.controls["axis"].value,
            int(self.controls["slice"].value),
            self.tr,
            self.reference,
            title=run,
        )
        self.output.outputs = (png_output(self.figure),)

    def _draw_trajectory(self) -> None:
        run = self.controls["run"].value
        self.trajectory = trajectory_3d(
            self.readouts[run].mu, self.categories.get(run), self.tr, self.projection, title=f"{run}: latent path"
        )
        self.trajectory_output.outputs = (plotly_output(self.trajectory),)

    def _resize(self, name: str, size: int) -> None:
        """Set a slider's range to ``size`` values without a redraw per changed trait."""
        slider = self.controls[name]
        self._quiet = True
        try:
            slider.value = min(slider.value, size - 1)
            slider.max = size - 1
        finally:
            self._quiet = False

    def _on_run(self, change: dict[str, Any]) -> None:
        self._resize("time", self._frames(change["new"]))
        self._draw_trajectory()
        self.redraw()

    def _on_axis(self, change: dict[str, Any]) -> None:
        self._resize("slice", self.mask.shape[AXES.index(change["new"])])
        self.redraw()

    def _on_change(self, change: dict[str, Any]) -> None:
        if not self._quiet:
            self.redraw()

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any] | None:
        return self.widget._repr_mimebundle_(**kwargs)


__all__ = [
    "AXES",
    "PROJECTIONS",
    "RecVAEInspector",
    "latent_coordinates",
    "plot_eigenvalues",
    "plot_latent_trajectory",
    "plot_slices",
    "plotly_output",
    "render_run",
    "trajectory_3d",
    "volume_slice",
]
