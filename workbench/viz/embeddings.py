"""UMAP maps of embeddings, interactive plotly figures and a nearest-neighbour inspector.

UMAP: McInnes, Healy & Melville 2018, "UMAP: Uniform Manifold Approximation and Projection
for Dimension Reduction", arXiv:1802.03426 (the ``umap-learn`` package).

Plotly figures are saved as self-contained HTML (the plotly.js bundle inlined, so the file
opens offline); static pictures are drawn with matplotlib, because plotly's static export
needs a headless Chrome.
"""

from __future__ import annotations

import html
import os
import warnings
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from plotly.colors import qualitative, unconvert_from_RGB_255, unlabel_rgb
from plotly.offline import get_plotlyjs
from sklearn.neighbors import NearestNeighbors

from workbench.errors import ConfigError, DataError
from workbench.files import atomic_path
from workbench.viz.outputs import literal, plotly_text, png_output

MAX_CATEGORIES = 24  # integer labels with at most this many values are drawn as categories
NEIGHBOUR_METRICS = ("euclidean", "cosine")
# 10 + 8 + 9 distinct colours as hex strings, which plotly and matplotlib both accept
_PALETTE = [
    to_hex(unconvert_from_RGB_255(unlabel_rgb(c))) if c.startswith("rgb") else c
    for c in qualitative.Plotly + qualitative.Set2 + qualitative.Pastel1
]


def _check_embeddings(embeddings: np.ndarray, what: str) -> np.ndarray:
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if embeddings.ndim != 2:
        raise DataError(f"{what}: embeddings must be (n, D), got shape {embeddings.shape}")
    if not np.isfinite(embeddings).all():
        raise DataError(f"{what}: embeddings hold NaN or inf; check the encoder's output")
    return embeddings


def umap_coords(
    embeddings: np.ndarray,
    seed: int = 0,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    metric: str = "euclidean",
    n_epochs: int | None = None,
) -> np.ndarray:
    """Two-dimensional UMAP of ``embeddings``.

    Parameters
    ----------
    embeddings : numpy.ndarray
        ``(n, D)``, ``n >= 4``.
    seed : int
        ``random_state`` of UMAP: the same seed gives the same map on the same machine
        (UMAP then runs single-threaded).
    n_neighbors : int
        Size of the local neighbourhood; clipped to ``n - 1``.
    min_dist : float
        Minimum distance between points in the map.
    metric : str
        Distance in the embedding space (any scikit-learn brute-force metric).
    n_epochs : int, optional
        Optimisation epochs; UMAP's default (200 or 500 by size) when omitted.

    Returns
    -------
    numpy.ndarray
        ``(n, 2)`` float32 map coordinates.

    Notes
    -----
    The neighbour graph is computed exactly with scikit-learn and handed to UMAP as
    ``precomputed_knn``. Below 4096 points UMAP itself would compute the same exact
    neighbours, but through numba code compiled on first use; this skips that compilation.
    Above 4096 points exact neighbours replace UMAP's approximate NN-descent search.
    """
    from sklearn.neighbors import VALID_METRICS, NearestNeighbors

    embeddings = _check_embeddings(embeddings, "umap_coords")
    n = embeddings.shape[0]
    if n < 4:
        raise DataError(f"umap_coords: UMAP needs at least 4 points, got {n}; embed more windows")
    if metric not in VALID_METRICS["brute"]:
        raise ConfigError(f"umap_coords: unknown metric {metric!r}; use e.g. 'euclidean' or 'cosine'")
    with warnings.catch_warnings():  # deferred: importing umap-learn takes seconds
        warnings.filterwarnings("ignore", "Tensorflow not installed", ImportWarning)
        import umap

    k = max(2, min(int(n_neighbors), n - 1))
    search = NearestNeighbors(n_neighbors=k, metric=metric, algorithm="brute").fit(embeddings)
    distances, indices = search.kneighbors(embeddings)  # each point is its own first neighbour
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=k,
        min_dist=min_dist,
        metric=metric,
        n_epochs=n_epochs,
        random_state=seed,
        n_jobs=1,
        precomputed_knn=(indices, distances),
    )
    with warnings.catch_warnings():  # only `transform` of new points needs a search index
        warnings.filterwarnings("ignore", "precomputed_knn\\[2\\]", UserWarning)
        return reducer.fit_transform(embeddings)


def _is_categorical(values: np.ndarray) -> bool:
    if values.dtype.kind in "OUSb":
        return True
    return values.dtype.kind in "iu" and np.unique(values).size <= MAX_CATEGORIES


def _hover(hover: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, Any]:
    if not hover:
        return {}
    custom = np.stack([np.asarray(v, dtype=object)[rows] for v in hover.values()], axis=1)
    custom = np.vectorize(lambda x: plotly_text(x) if isinstance(x, str) else x, otypes=[object])(custom)
    lines = [f"{plotly_text(name)}: %{{customdata[{i}]}}" for i, name in enumerate(hover)]
    return {"customdata": custom, "hovertemplate": "<br>".join(lines) + "<extra></extra>"}


def _colouring_traces(name, values, coords, hover, visible) -> list[go.Scatter]:
    if _is_categorical(values):
        traces = []
        for index, category in enumerate(pd.unique(values)):
            rows = np.flatnonzero(values == category)
            traces.append(
                go.Scatter(
                    x=coords[rows, 0],
                    y=coords[rows, 1],
                    mode="markers",
                    name=plotly_text(category),
                    marker={"size": 5, "color": _PALETTE[index % len(_PALETTE)]},
                    meta=name,
                    visible=visible,
                    **_hover(hover, rows),
                )
            )
        return traces
    rows = np.arange(values.size)
    return [
        go.Scatter(
            x=coords[:, 0],
            y=coords[:, 1],
            mode="markers",
            name=plotly_text(name),
            showlegend=False,
            marker={
                "size": 5,
                "color": values.astype(np.float64),
                "colorscale": "Viridis",
                "colorbar": {"title": {"text": plotly_text(name)}},
            },
            meta=name,
            visible=visible,
            **_hover(hover, rows),
        )
    ]


def umap_figure(
    coords: np.ndarray,
    colour_by: dict[str, np.ndarray],
    hover: dict[str, np.ndarray] | None = None,
    title: str = "",
) -> go.Figure:
    """Interactive scatter of a 2-D map with a button per colouring.

    Parameters
    ----------
    coords : numpy.ndarray
        ``(n, 2)`` map, e.g. from :func:`umap_coords`.
    colour_by : dict of str to numpy.ndarray
        Colouring name (``"subject"``, ``"dataset"``, ``"time in run"``, ...) -> ``(n,)``
        values. Strings, booleans and integers with at most 24 distinct values are
        categories (one trace per category, discrete colours, legend); other numbers get a
        continuous colour scale with a colour bar (one trace).
    hover : dict of str to numpy.ndarray, optional
        Fields shown when hovering a point, ``(n,)`` each.
    title : str
        Figure title.

    Returns
    -------
    plotly.graph_objects.Figure
        Traces in ``colour_by`` order, each with ``meta`` = its colouring name; only the
        first colouring is visible. ``layout.updatemenus[0].buttons[i]`` (label = the
        colouring name) shows colouring ``i`` alone.
    """
    coords = np.asarray(coords)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise DataError(f"umap_figure: coords must be (n, 2), got shape {coords.shape}")
    if not colour_by:
        raise DataError("umap_figure: colour_by is empty; give at least one colouring")
    n = coords.shape[0]
    fields = {**colour_by, **(hover or {})}
    wrong = {name: np.shape(v) for name, v in fields.items() if np.shape(v) != (n,)}
    if wrong:
        raise DataError(f"umap_figure: every colouring and hover field needs shape ({n},), got {wrong}")
    fig = go.Figure()
    groups = []
    for position, (name, values) in enumerate(colour_by.items()):
        traces = _colouring_traces(name, np.asarray(values), coords, hover or {}, position == 0)
        groups.append(len(traces))
        fig.add_traces(traces)
    owner = np.repeat(np.arange(len(groups)), groups)
    buttons = [
        {
            "label": plotly_text(name),
            "method": "update",
            "args": [{"visible": (owner == i).tolist()}, {"title.text": plotly_text(f"{title} — {name}".strip(" —"))}],
        }
        for i, name in enumerate(colour_by)
    ]
    first = next(iter(colour_by))
    fig.update_layout(
        title={"text": plotly_text(f"{title} — {first}".strip(" —"))},
        updatemenus=[
            {
                "type": "buttons",
                "direction": "right",
                "buttons": buttons,
                "x": 0.0,
                "xanchor": "left",
                "y": 1.12,
                "yanchor": "top",
            }
        ],
        xaxis={"title": {"text": "UMAP 1"}},
        yaxis={"title": {"text": "UMAP 2"}},
        legend={"itemsizing": "constant"},
        template="plotly_white",
        height=560,
    )
    return fig


PLOTLY_BUNDLE = "plotly.min.js"
"""The plotly.js file that every interactive page of a folder shares (written beside them)."""


def save_html(fig: go.Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` as an HTML page that opens offline, atomically.

    The page loads plotly.js from :data:`PLOTLY_BUNDLE` in its own folder, written once (atomically)
    from the installed plotly package, so several pages in one report share one 4.9 MB bundle
    instead of embedding one each, and the folder still opens without a network.
    """
    path = Path(path)
    bundle = path.parent / PLOTLY_BUNDLE
    script = get_plotlyjs()
    if not bundle.is_file() or bundle.stat().st_size != len(script.encode()):
        with atomic_path(bundle) as tmp:
            Path(tmp).write_text(script, encoding="utf-8")
    with atomic_path(path) as tmp:
        fig.write_html(tmp, include_plotlyjs=PLOTLY_BUNDLE, full_html=True)
    return path


def save_png(coords: np.ndarray, labels: np.ndarray, path: str | os.PathLike, title: str = "") -> Path:
    """Static matplotlib scatter of a 2-D map coloured by ``labels``, written atomically as PNG.

    Categorical ``labels`` (as in :func:`umap_figure`) get a legend, numeric ones a colour bar.
    """
    coords, labels = np.asarray(coords), np.asarray(labels)
    if coords.ndim != 2 or coords.shape[1] != 2 or labels.shape != (coords.shape[0],):
        raise DataError(f"save_png: need coords (n, 2) and labels (n,), got {coords.shape} and {labels.shape}")
    fig = Figure(figsize=(6.5, 5.0), layout="constrained")
    ax = fig.add_subplot()
    if _is_categorical(labels):
        for index, category in enumerate(pd.unique(labels)):
            rows = labels == category
            ax.scatter(
                coords[rows, 0], coords[rows, 1], s=6, label=literal(category), color=_PALETTE[index % len(_PALETTE)]
            )
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", markerscale=2)
    else:
        points = ax.scatter(coords[:, 0], coords[:, 1], s=6, c=labels.astype(np.float64), cmap="viridis")
        fig.colorbar(points, ax=ax)
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    ax.set_title(literal(title))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return Path(path)


def nearest_neighbours(
    embeddings: np.ndarray, index: int, k: int = 5, metric: str = "euclidean"
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows nearest to row ``index``, itself excluded.

    Parameters
    ----------
    embeddings : numpy.ndarray
        ``(n, D)``.
    index : int
        The query row.
    k : int
        Number of neighbours, ``1 <= k <= n - 1``.
    metric : {"euclidean", "cosine"}
        Euclidean distance, or cosine distance ``1 - cos``.

    Returns
    -------
    indices : numpy.ndarray
        ``(k,)`` int rows, nearest first (scikit-learn's brute-force search).
    distances : numpy.ndarray
        ``(k,)`` float64 distances.
    """
    embeddings = _check_embeddings(embeddings, "nearest_neighbours")
    n = embeddings.shape[0]
    if not 0 <= index < n:
        raise DataError(f"nearest_neighbours: index {index} is outside 0..{n - 1}")
    if not 1 <= k <= n - 1:
        raise ConfigError(f"nearest_neighbours: k={k} must be between 1 and n - 1 = {n - 1}")
    if metric not in NEIGHBOUR_METRICS:
        raise ConfigError(f"nearest_neighbours: metric {metric!r} is not one of {NEIGHBOUR_METRICS}")
    if metric == "cosine" and not np.linalg.norm(embeddings, axis=1).all():
        raise DataError("nearest_neighbours: the cosine distance is undefined for zero embeddings")
    search = NearestNeighbors(n_neighbors=k + 1, metric=metric, algorithm="brute").fit(embeddings)
    distances, rows = search.kneighbors(embeddings[index : index + 1])
    keep = rows[0] != index  # the query itself (or, with duplicates, one copy too many)
    return rows[0][keep][:k], distances[0][keep][:k].astype(np.float64)


def _html_output(table: pd.DataFrame, caption: str) -> dict[str, Any]:
    """A ``display_data`` record of ``caption`` above ``table``; both escaped, so no name from the data is markup."""
    return {
        "output_type": "display_data",
        "data": {
            "text/html": f"<p>{html.escape(caption)}</p>" + table.to_html(index=False, float_format="%.4g"),
            "text/plain": f"{caption}\n{table.to_string(index=False)}",
        },
        "metadata": {},
    }


class LatentInspector:
    """Pick a window, see its nearest neighbours in embedding space and their subjects.

    Parameters
    ----------
    embeddings : numpy.ndarray
        ``(n, D)`` one embedding per window.
    subjects : numpy.ndarray
        ``(n,)`` subject of each window.
    times : numpy.ndarray, optional
        ``(n,)`` start of each window in its run, seconds.
    windows : numpy.ndarray, optional
        ``(n, T, R)`` the windows themselves; the picked window and its nearest neighbour are
        then drawn side by side as ROI × time images.
    k : int
        Initial number of neighbours.

    Attributes
    ----------
    controls : dict[str, Widget]
        ``"window"`` (``IntSlider`` over rows), ``"k"`` (``IntSlider``), ``"metric"``
        (``Dropdown`` of ``"euclidean"``, ``"cosine"``). Assigning ``.value`` recomputes.
    output : ipywidgets.Output
        Holds the neighbour table and, with ``windows``, the figure.
    neighbours : pandas.DataFrame
        The last result, nearest first: ``window`` (row), ``subject``, ``distance``,
        ``time (s)`` (with ``times``) and ``same_subject``.
    same_subject_fraction : float
        Fraction of the neighbours that share the picked window's subject.
    figure : Figure or None
        The last figure (``None`` without ``windows``).
    widget : ipywidgets.VBox
        What to display (the inspector displays as this widget too).
    """

    def __init__(
        self,
        embeddings: np.ndarray,
        subjects: np.ndarray,
        times: np.ndarray | None = None,
        windows: np.ndarray | None = None,
        k: int = 5,
    ):
        self.embeddings = _check_embeddings(embeddings, "LatentInspector")
        n = self.embeddings.shape[0]
        self.subjects = np.asarray(subjects)
        self.times = None if times is None else np.asarray(times, dtype=np.float64)
        self.windows = None if windows is None else np.asarray(windows)
        for name, values in (("subjects", self.subjects), ("times", self.times), ("windows", self.windows)):
            if values is not None and values.shape[0] != n:
                raise DataError(f"LatentInspector: {name} has {values.shape[0]} rows, embeddings {n}")
        if n < 2:
            raise DataError("LatentInspector: need at least 2 embeddings")
        wide = {"layout": widgets.Layout(width="520px"), "continuous_update": False}
        self.controls: dict[str, widgets.Widget] = {
            "window": widgets.IntSlider(value=0, min=0, max=n - 1, description="window", **wide),
            "k": widgets.IntSlider(value=min(max(k, 1), n - 1), min=1, max=min(50, n - 1), description="k", **wide),
            "metric": widgets.Dropdown(options=NEIGHBOUR_METRICS, value="euclidean", description="metric"),
        }
        self.output = widgets.Output()
        self.neighbours: pd.DataFrame = pd.DataFrame()
        self.same_subject_fraction = float("nan")
        self.figure: Figure | None = None
        for control in self.controls.values():
            control.observe(self._on_change, names="value")
        self.widget = widgets.VBox([*self.controls.values(), self.output])
        self.update()

    def update(self) -> None:
        """Recompute the neighbours of the picked window and redraw :attr:`output`."""
        query = int(self.controls["window"].value)
        rows, distances = nearest_neighbours(
            self.embeddings, query, int(self.controls["k"].value), self.controls["metric"].value
        )
        table = {"window": rows, "subject": self.subjects[rows], "distance": distances}
        if self.times is not None:
            table["time (s)"] = self.times[rows]
        table["same_subject"] = self.subjects[rows] == self.subjects[query]
        self.neighbours = pd.DataFrame(table)
        self.same_subject_fraction = float(self.neighbours["same_subject"].mean())
        where = "" if self.times is None else f" at {self.times[query]:.1f} s"
        caption = (
            f"window {query} (subject {self.subjects[query]}{where}): "
            f"{self.same_subject_fraction:.0%} of {len(rows)} neighbours share its subject"
        )
        outputs = [_html_output(self.neighbours, caption)]
        self.figure = None if self.windows is None else self._draw(query, int(rows[0]))
        if self.figure is not None:
            outputs.append(png_output(self.figure))
        self.output.outputs = tuple(outputs)

    def _draw(self, query: int, nearest: int) -> Figure:
        pair = self.windows[[query, nearest]].astype(np.float64)
        limit = float(np.abs(pair).max()) or 1.0
        fig = Figure(figsize=(10.0, 3.2), layout="constrained")
        axes = fig.subplots(1, 2, sharey=True)
        for ax, row, role in zip(axes, (query, nearest), ("picked", "nearest")):
            image = ax.imshow(
                self.windows[row].T, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest"
            )
            ax.set_title(literal(f"{role}: window {row}, subject {self.subjects[row]}"))
            ax.set_xlabel("frame")
        axes[0].set_ylabel("ROI")
        fig.colorbar(image, ax=list(axes), fraction=0.04)
        return fig

    def _on_change(self, change: dict[str, Any]) -> None:
        self.update()

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any] | None:
        return self.widget._repr_mimebundle_(**kwargs)
