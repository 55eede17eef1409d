"""The collapse check drawn (the embeddings notebook): centred spectrum, spread per dimension, the offset.

Numbers come from :mod:`workbench.evaluation.collapse` (RankMe of Garrido et al. 2023 on the
centred embeddings, the standard deviation of every dimension, the cosine with the mean
direction, which describes the shared offset and is not collapse); this module only draws
them, one line or histogram per family.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure

from workbench.errors import DataError
from workbench.evaluation.collapse import collapse_summary, cosine_to_mean, singular_spectrum
from workbench.viz.outputs import literal


def plot_collapse(embeddings: Mapping[str, np.ndarray]) -> Figure:
    """Three panels per set of families' ``(n, D)`` embeddings.

    Left: the singular values of the *centred* embeddings divided by their sum, largest first,
    against their rank (log scale; a collapsed family falls off after the first), centred
    RankMe in the legend. Middle: the standard deviation of every dimension over the windows,
    sorted, relative to the mean distance of the windows from their mean (log scale). Right:
    histograms of the cosine of each embedding with the mean direction, with the offset ratio
    (norm of the mean embedding over that mean distance) in the legend: a spike at 1 with a
    large ratio is a shared offset, which no probe sees; it is not collapse.
    """
    if not embeddings:
        raise DataError("plot_collapse got no embeddings; pass {family: (n, D) array}")
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    spectrum_ax, spread_ax, cosine_ax = fig.subplots(1, 3)
    bins = np.linspace(-1.0, 1.0, 81)
    for key, emb in embeddings.items():
        name = literal(key)
        x = np.asarray(emb, dtype=np.float64)
        spectrum = singular_spectrum(x)
        rank = np.arange(1, spectrum.size + 1)
        summary = collapse_summary(x)
        label = f"{name} (RankMe {summary['rankme']:.1f} of {x.shape[1]})"
        spectrum_ax.plot(rank, np.maximum(spectrum, 1e-12), label=label)
        reference = summary["spread"] if summary["spread"] > 0 else 1.0
        spread = np.sort(x.std(axis=0))[::-1] / reference
        spread_ax.plot(np.arange(1, spread.size + 1), np.maximum(spread, 1e-12), label=name)
        ratio = summary["offset_ratio"]
        cosine_ax.hist(cosine_to_mean(x), bins=bins, histtype="step", label=f"{name} (offset/spread {ratio:.2g})")
    spectrum_ax.set(
        xscale="log", yscale="log", xlabel="rank k", ylabel="σ_k / Σσ", title="Spectrum of the centred embeddings"
    )
    spread_ax.set(
        xscale="log",
        yscale="log",
        xlabel="dimension (sorted)",
        ylabel="std over windows / mean distance from the mean",
        title="Spread per dimension",
    )
    cosine_ax.set(xlabel="cosine with the mean direction", ylabel="windows", title="Shared offset (not collapse)")
    spectrum_ax.legend(fontsize="small")
    cosine_ax.legend(fontsize="small")
    return fig


__all__ = ["plot_collapse"]
