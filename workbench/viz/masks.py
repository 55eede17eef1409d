"""Figures and an interactive inspector for Brain-JEPA spatiotemporal masks.

Pure functions return matplotlib :class:`~matplotlib.figure.Figure` objects built without
pyplot (no global figure state; display them with IPython's ``display`` or save them).
:class:`MaskInspector` wraps :func:`render_masks` in ipywidgets sliders for the mask notebook.

The masks follow Dong et al., Brain-JEPA, NeurIPS 2024 (arXiv:2409.19407); see
:mod:`workbench.models.jepa.masks` for their semantics.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from workbench.errors import WorkbenchError
from workbench.models.jepa.masks import KINDS, MaskConfig, Masks, SpatiotemporalMaskCollator
from workbench.viz.outputs import png_output

COLOURS = {
    "dropped": "#e6e6e6",
    "context": "#3b75af",
    "cross_roi": "#ef8636",
    "cross_time": "#529e3e",
    "double_cross": "#c53a32",
}
LABELS = {
    "dropped": "dropped",
    "context": "context",
    "cross_roi": "Cross-ROI (α)",
    "cross_time": "Cross-Time (β)",
    "double_cross": "Double-Cross (γ)",
    "targets": "all targets",
}
SCALE_FIELDS = tuple(f.name for f in fields(MaskConfig) if f.name.endswith("_scale"))


def plot_mask_grid(masks: Masks, b: int = 0, ax: Axes | None = None) -> Axes:
    """Draw sample ``b`` of ``masks`` as an R × P grid coloured by role, with a legend.

    Parameters
    ----------
    masks : Masks
        Output of :class:`~workbench.models.jepa.masks.SpatiotemporalMaskCollator`.
    b : int
        Sample of the batch.
    ax : Axes, optional
        Where to draw; a new figure is made when omitted.

    Returns
    -------
    Axes
        Its single image holds ``masks.grid(b)`` (0 dropped, 1 context, 2 + k target kind k).
    """
    if ax is None:
        ax = Figure(figsize=(3.2, 5.0), layout="constrained").add_subplot()
    names = ["dropped", "context", *masks.kinds]
    grid = masks.grid(b)
    ax.imshow(
        grid,
        cmap=ListedColormap([COLOURS[n] for n in names]),
        vmin=-0.5,
        vmax=len(names) - 0.5,
        aspect="auto",
        interpolation="nearest",
    )
    ax.set_xlabel("time patch")
    ax.set_ylabel("ROI")
    handles = [
        Patch(color=COLOURS[n], label=f"{LABELS[n]}: {int((grid == code).sum())}") for code, n in enumerate(names)
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small")
    return ax


def mask_gallery(collator: SpatiotemporalMaskCollator, n: int = 6, seed: int = 0) -> Figure:
    """Figure with ``n`` independent draws (batch size 1, so nothing is truncated).

    Draw ``i`` is the ``i``-th call on one generator seeded with ``seed``.
    """
    generator = torch.Generator().manual_seed(seed)
    ncols = min(n, 6)
    nrows = -(-n // ncols)
    fig = Figure(figsize=(2.2 * ncols + 1.8, 3.6 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for i, ax in enumerate(axes):
        if i >= n:
            ax.set_axis_off()
            continue
        masks = collator(1, generator)
        plot_mask_grid(masks, ax=ax).get_legend().remove()
        n_targets = sum(t.shape[1] for t in masks.targets)
        ax.set_title(f"draw {i}\ncontext {masks.context.shape[1]}, targets {n_targets}", fontsize=9)
        if i % ncols:
            ax.set_ylabel("")
    fig.legend(
        handles=[Patch(color=COLOURS[n], label=LABELS[n]) for n in COLOURS],
        loc="outside right upper",
        fontsize="small",
    )
    fig.suptitle(f"{collator.n_rois} ROIs × {collator.n_time_patches} time patches, seed {seed}")
    return fig


def coverage_stats(
    collator: SpatiotemporalMaskCollator, n_draws: int = 500, seed: int = 0, batch_size: int = 1
) -> dict[str, Any]:
    """Token counts and per-token probabilities over ``n_draws`` batches.

    Parameters
    ----------
    collator : SpatiotemporalMaskCollator
    n_draws : int
        Number of batches drawn from one generator seeded with ``seed``.
    batch_size : int
        Samples per batch; above 1 the counts are after batch equalisation.

    Returns
    -------
    dict
        - ``"n_samples"``: ``n_draws · batch_size``.
        - ``"counts"``: ``{name: {"mean", "std"}}`` token counts per sample for ``"context"``,
          each kind of :data:`~workbench.models.jepa.masks.KINDS` (0 when dropped) and ``"targets"``
          (tokens in any kind).
        - ``"kind_frequency"``: ``{kind: fraction of batches holding it}``.
        - ``"p_context"``, ``"p_target"``: (R, P) probability of a token being context / in
          any target; ``"p_kind"``: ``{kind: (R, P)}``.
    """
    R, P = collator.n_rois, collator.n_time_patches
    generator = torch.Generator().manual_seed(seed)
    names = ("context", *KINDS, "targets")
    counts: dict[str, list[int]] = {name: [] for name in names}
    hits = {name: torch.zeros(R * P) for name in names}
    present = dict.fromkeys(KINDS, 0)

    def members(indices: torch.Tensor) -> torch.Tensor:
        return torch.zeros(batch_size, R * P, dtype=torch.bool).scatter_(1, indices, True)

    for _ in range(n_draws):
        masks = collator(batch_size, generator, device="cpu")
        by_kind = dict(zip(masks.kinds, masks.targets))
        blocks = {"context": members(masks.context)}
        blocks |= {kind: members(by_kind[kind]) for kind in masks.kinds}
        blocks["targets"] = torch.stack([blocks[k] for k in masks.kinds]).any(dim=0)
        for kind in masks.kinds:
            present[kind] += 1
        for name in names:
            if name in blocks:
                hits[name] += blocks[name].sum(dim=0)
                counts[name] += blocks[name].sum(dim=1).tolist()
            else:
                counts[name] += [0] * batch_size
    n_samples = n_draws * batch_size

    def probability(name: str) -> np.ndarray:
        return (hits[name] / n_samples).reshape(R, P).numpy()

    return {
        "n_samples": n_samples,
        "counts": {name: {"mean": float(np.mean(v)), "std": float(np.std(v))} for name, v in counts.items()},
        "kind_frequency": {k: present[k] / n_draws for k in KINDS},
        "p_context": probability("context"),
        "p_target": probability("targets"),
        "p_kind": {k: probability(k) for k in KINDS},
    }


def _draw_coverage(stats: dict[str, Any], ax_context: Axes, ax_target: Axes) -> None:
    for ax, key, title in (
        (ax_context, "p_context", "P(context)"),
        (ax_target, "p_target", "P(target)"),
    ):
        image = ax.imshow(stats[key], vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
        ax.set_title(title)
        ax.set_xlabel("time patch")
        ax.figure.colorbar(image, ax=ax, fraction=0.08)
    ax_context.set_ylabel("ROI")


def plot_coverage(stats: dict[str, Any]) -> Figure:
    """Heat maps of P(context) and P(target) per token and mean ± std token counts."""
    fig = Figure(figsize=(11.0, 4.0), layout="constrained")
    ax_context, ax_target, ax_counts = fig.subplots(1, 3)
    _draw_coverage(stats, ax_context, ax_target)
    names = list(stats["counts"])
    ax_counts.bar(
        [LABELS.get(n, n) for n in names],
        [stats["counts"][n]["mean"] for n in names],
        yerr=[stats["counts"][n]["std"] for n in names],
        color=[COLOURS.get(n, "#7f7f7f") for n in names],
    )
    ax_counts.set_ylabel("tokens per sample")
    ax_counts.tick_params(axis="x", labelrotation=30)
    fig.suptitle(f"coverage over {stats['n_samples']} samples")
    return fig


def render_masks(
    n_rois: int, n_time_patches: int, config: MaskConfig, seed: int, n_draws: int = 100
) -> tuple[Figure, dict[str, Any]]:
    """One draw (batch size 1, generator seeded ``seed``) beside coverage over ``n_draws``.

    Returns
    -------
    (Figure, dict)
        ``fig.axes[0]`` shows ``collator(1, torch.Generator().manual_seed(seed)).grid(0)``;
        the dict is :func:`coverage_stats` with the same seed.

    Raises
    ------
    ConfigError
        When the grid or configuration is invalid or cannot be met.
    """
    collator = SpatiotemporalMaskCollator(n_rois, n_time_patches, config)
    masks = collator(1, torch.Generator().manual_seed(seed))
    stats = coverage_stats(collator, n_draws=n_draws, seed=seed)
    fig = Figure(figsize=(12.0, 4.5), layout="constrained")
    ax_grid, ax_context, ax_target = fig.subplots(1, 3, width_ratios=[1.6, 1, 1])
    plot_mask_grid(masks, ax=ax_grid)
    ax_grid.set_title(f"draw (seed {seed})")
    _draw_coverage(stats, ax_context, ax_target)
    c = stats["counts"]
    fig.suptitle(
        f"mean tokens per sample over {stats['n_samples']} draws: "
        f"context {c['context']['mean']:.0f} ± {c['context']['std']:.0f}, "
        f"targets {c['targets']['mean']:.0f} ± {c['targets']['std']:.0f} "
        f"of {n_rois * n_time_patches}"
    )
    return fig, stats


class MaskInspector:
    """Sliders for every :class:`~workbench.models.jepa.masks.MaskConfig` field and the seed; redraws on change.

    Attributes
    ----------
    controls : dict[str, Widget]
        One ``FloatRangeSlider`` per scale field, ``IntSlider`` ``"min_keep"`` and ``"seed"``,
        ``Checkbox`` ``"allow_overlap"``. Assigning ``.value`` redraws.
    output : ipywidgets.Output
        Holds the figure as PNG, or the error message for settings that cannot be met.
    figure : Figure or None
        The last figure drawn.
    stats : dict or None
        The last :func:`coverage_stats`.
    error : str or None
        The message shown instead of a figure, if the current settings are invalid.
    widget : ipywidgets.VBox
        What to display (the inspector displays as this widget too).
    """

    def __init__(
        self,
        n_rois: int,
        n_time_patches: int,
        seed: int = 0,
        config: MaskConfig | None = None,
        n_draws: int = 100,
    ):
        config = config or MaskConfig()
        self.n_rois, self.n_time_patches, self.n_draws = n_rois, n_time_patches, n_draws
        wide = {"layout": widgets.Layout(width="520px"), "style": {"description_width": "180px"}}
        self.controls: dict[str, widgets.Widget] = {
            name: widgets.FloatRangeSlider(
                value=getattr(config, name),
                min=0.0,
                max=1.0,
                step=0.01,
                description=name,
                continuous_update=False,
                readout_format=".2f",
                **wide,
            )
            for name in SCALE_FIELDS
        }
        self.controls["min_keep"] = widgets.IntSlider(
            value=config.min_keep,
            min=1,
            max=max(n_rois * n_time_patches, config.min_keep),
            description="min_keep",
            continuous_update=False,
            **wide,
        )
        self.controls["allow_overlap"] = widgets.Checkbox(value=config.allow_overlap, description="allow_overlap")
        self.controls["seed"] = widgets.IntSlider(
            value=seed,
            min=0,
            max=max(999, seed),
            description="seed",
            continuous_update=False,
            **wide,
        )
        self.output = widgets.Output()
        self.figure: Figure | None = None
        self.stats: dict[str, Any] | None = None
        self.error: str | None = None
        for control in self.controls.values():
            control.observe(self._on_change, names="value")
        self.widget = widgets.VBox([*self.controls.values(), self.output])
        self.redraw()

    def config(self) -> MaskConfig:
        """The :class:`MaskConfig` the controls describe (raises ConfigError if invalid)."""
        scales = {name: tuple(self.controls[name].value) for name in SCALE_FIELDS}
        return MaskConfig(
            **scales,
            min_keep=self.controls["min_keep"].value,
            allow_overlap=self.controls["allow_overlap"].value,
        )

    def redraw(self) -> None:
        """Render the current settings into :attr:`output`; show an error instead of raising."""
        try:
            self.figure, self.stats = render_masks(
                self.n_rois,
                self.n_time_patches,
                self.config(),
                self.controls["seed"].value,
                self.n_draws,
            )
        except WorkbenchError as exc:
            self.error = str(exc)
            message = f"Invalid mask settings: {exc}\n"
            self.output.outputs = ({"output_type": "stream", "name": "stderr", "text": message},)
            return
        self.error = None
        self.output.outputs = (png_output(self.figure),)

    def _on_change(self, change: dict[str, Any]) -> None:
        self.redraw()

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any] | None:
        return self.widget._repr_mimebundle_(**kwargs)


def mask_inspector(n_rois: int, n_time_patches: int, seed: int = 0, n_draws: int = 100) -> MaskInspector:
    """Build a :class:`MaskInspector` with the default :class:`MaskConfig`; display ``.widget``.

    ``n_draws`` batches feed the coverage maps on each redraw (about 10 ms each on 450 × 10).
    """
    return MaskInspector(n_rois, n_time_patches, seed=seed, n_draws=n_draws)
