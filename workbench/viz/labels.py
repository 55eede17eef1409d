"""Figures that check task labels against the signal they describe (the data-inspection notebook).

A label is only as good as its timing. Two views check it on real data:

* :func:`plot_event_locked`: the group mean response of a set of regions around the onsets of
  one kind of event (e.g. heat), beside another kind (e.g. rating), with a 95% band over
  subjects and the response a canonical haemodynamic model predicts for a block of the event's
  length. Well-aligned labels give a response that rises after the onset and peaks a few seconds
  after the block ends, as the model does; misaligned labels give a flat or shifted curve.
* :func:`plot_design_carpet`: the category-by-volume design of block-design runs above the
  voxel carpet (Power 2017) of the same volumes, so blocks and signal can be compared by eye.

Events are read from ``Recording.frame_labels``: an event starts at a frame labelled ``value``
whose previous frame is not, and lags are counted in frames from that first frame (``lag * TR``
seconds; the true onset lies up to one TR earlier). The canonical response is a boxcar of the
event's median length convolved with the SPM double-gamma HRF (peak ~5 s, undershoot ~15 s;
Friston et al. 1998, "Event-related fMRI: characterizing differential responses", NeuroImage 7:30).
Figures are built without pyplot, as in :mod:`workbench.viz.data`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.signal
from matplotlib.figure import Figure
from scipy.stats import gamma

from workbench.data.recording import Recording
from workbench.errors import DataError
from workbench.viz.outputs import literal

# MIST 122 regions (names as in the heatpain entry) that respond to painful heat.
PAIN_REGIONS: dict[str, tuple[str, ...]] = {
    "insula": ("AINS_pd", "AINS_v", "AINS_ad", "PINS_v", "PINS_d"),
    "cingulate": ("ACcor_d",),  # dorsal anterior cingulate; CNGsul_p follows the (motor) rating periods
}
_CI_Z = 1.96  # two-sided 95% normal quantile
_HRF_DT = 0.1  # seconds, resolution of the canonical-response convolution
_CARPET_CLIP = 2.5  # z-scores beyond this saturate the carpet's grey scale


@dataclass(frozen=True)
class EventLockedAverage:
    """A group event-locked average; arrays are ``(L,)`` over lags."""

    lags: np.ndarray  # seconds from the event's first frame
    mean: np.ndarray  # mean over subjects of each subject's mean over events
    low: np.ndarray  # mean - 1.96 SEM (over subjects; over events when there is one subject)
    high: np.ndarray
    n_subjects: int
    n_events: int
    block_s: float  # median length of the events, seconds

    @property
    def peak_lag(self) -> float:
        """Lag (s) of the largest mean response."""
        return float(self.lags[int(np.argmax(self.mean))])


def onset_frames(labels: pd.Series, value: str) -> np.ndarray:
    """Frames where a run of ``value`` starts (labelled ``value``, the previous frame not)."""
    hit = (labels.astype(object) == value).to_numpy(dtype=bool)
    return np.flatnonzero(hit & ~np.r_[False, hit[:-1]])


def _block_lengths(labels: pd.Series, value: str) -> list[int]:
    hit = (labels.astype(object) == value).to_numpy(dtype=bool)
    edges = np.diff(np.r_[0, hit.astype(int), 0])
    return (np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).tolist()


def _region_signal(recording: Recording, regions: Sequence[str]) -> np.ndarray:
    names = recording.meta.get("roi_names")
    if not names:
        raise DataError(f"{recording.subject}/{recording.session}: event-locked averages need meta['roi_names']")
    missing = [r for r in regions if r not in names]
    if missing:
        raise DataError(f"{recording.subject}/{recording.session}: no region(s) {missing} among the ROI names")
    series = np.asarray(recording.data, dtype=np.float64)[:, [names.index(r) for r in regions]]
    std = series.std(axis=0)
    z = np.divide(series - series.mean(axis=0), std, out=np.zeros_like(series), where=std > 0)
    return z.mean(axis=1)


def event_locked_average(
    recordings: Sequence[Recording],
    regions: Sequence[str],
    column: str,
    value: str,
    window_s: tuple[float, float] = (-6.0, 30.0),
) -> EventLockedAverage:
    """Group mean response of ``regions`` (each z-scored per run, then averaged) around events.

    Parameters
    ----------
    recordings : sequence of Recording
        ``(T, R)`` runs with ``meta["roi_names"]``, ``frame_labels`` and one common TR.
    regions : sequence of str
        Region names to average.
    column, value : str
        The frame label and the value whose onsets lock the average (``"period"``, ``"heat"``).
    window_s : (float, float)
        First and last lag, seconds; events whose window leaves the run are skipped.
    """
    trs = {float(r.tr) for r in recordings}
    if len(trs) != 1:
        raise DataError(f"event-locked averages need one TR, the recordings have {sorted(trs)}")
    tr = trs.pop()
    lag_frames = np.arange(int(np.ceil(window_s[0] / tr)), int(np.floor(window_s[1] / tr)) + 1)
    by_subject: dict[str, list[np.ndarray]] = {}
    lengths: list[int] = []
    for rec in recordings:
        if rec.frame_labels is None or column not in rec.frame_labels.columns:
            raise DataError(f"{rec.subject}/{rec.session}: no frame label {column!r}")
        signal = _region_signal(rec, regions)
        labels = rec.frame_labels[column]
        lengths += _block_lengths(labels, value)
        for start in onset_frames(labels, value):
            frames = start + lag_frames
            if frames[0] >= 0 and frames[-1] < len(signal):
                by_subject.setdefault(rec.subject, []).append(signal[frames])
    if not by_subject:
        raise DataError(f"no {column} == {value!r} event has a whole window {window_s} s inside its run")
    events = [segment for segments in by_subject.values() for segment in segments]
    units = np.array([np.mean(s, axis=0) for s in by_subject.values()]) if len(by_subject) > 1 else np.array(events)
    mean = units.mean(axis=0)
    sem = units.std(axis=0, ddof=1) / np.sqrt(len(units)) if len(units) > 1 else np.zeros_like(mean)
    return EventLockedAverage(
        lags=lag_frames * tr,
        mean=mean,
        low=mean - _CI_Z * sem,
        high=mean + _CI_Z * sem,
        n_subjects=len(by_subject),
        n_events=len(events),
        block_s=float(np.median(lengths)) * tr,
    )


def canonical_response(duration_s: float, lags_s: np.ndarray) -> np.ndarray:
    """A ``duration_s`` boxcar from lag 0 convolved with the SPM double-gamma HRF, peak 1, at ``lags_s``."""
    t = np.arange(0.0, max(float(np.max(lags_s)), 0.0) + 32.0, _HRF_DT)
    hrf = gamma.pdf(t, 6.0) - gamma.pdf(t, 16.0) / 6.0
    response = np.convolve((t < duration_s).astype(float), hrf)[: len(t)]
    return np.interp(lags_s, t, response / response.max(), left=0.0)


def plot_event_locked(
    recordings: Sequence[Recording],
    regions: Mapping[str, Sequence[str]] = PAIN_REGIONS,
    column: str = "period",
    events: Sequence[str] = ("heat", "rating"),
    window_s: tuple[float, float] = (-6.0, 30.0),
) -> Figure:
    """Event-locked group averages, one panel per region group, one line per kind of event.

    Each panel shows, for every value of ``events``, the mean (solid) with its 95% band; for the
    first event also the canonical response to a block of its median length (dashed, scaled to
    the observed peak), and shades that block. Legend entries give the observed peak lag.

    Returns
    -------
    Figure
        ``len(regions)`` axes; in each, ``ax.lines`` hold the observed mean of each event in
        order, then the model, then the zero line; ``ax.collections`` the bands (and the shading).
    """
    fig = Figure(figsize=(5.0 * len(regions), 3.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(regions), sharey=True))
    colours = ("tab:red", "tab:blue", "tab:green", "tab:purple")
    for ax, (group, names) in zip(axes, regions.items()):
        averages = [event_locked_average(recordings, names, column, value, window_s) for value in events]
        first = averages[0]
        for i, (value, average) in enumerate(zip(events, averages)):
            colour = colours[i % len(colours)]
            label = f"{literal(value)} onset (peak {average.peak_lag:.0f} s; {average.n_events} events)"
            ax.plot(average.lags, average.mean, color=colour, linewidth=1.8, label=label)
            ax.fill_between(average.lags, average.low, average.high, color=colour, alpha=0.2, linewidth=0)
        model = canonical_response(first.block_s, first.lags) * float(np.max(first.mean))
        ax.plot(
            first.lags,
            model,
            color=colours[0],
            linestyle="--",
            linewidth=1.0,
            label=f"canonical HRF x {first.block_s:.0f} s {literal(events[0])} block",
        )
        ax.axvspan(0.0, first.block_s, color="0.85", zorder=0)
        ax.axhline(0.0, color="0.5", linewidth=0.6)
        ax.set_title(literal(f"{group}: {', '.join(names)}"), fontsize="small")
        ax.set_xlabel(f"seconds from the event's first frame ({first.n_subjects} subjects)")
        ax.legend(fontsize="x-small", loc="upper left")
    axes[0].set_ylabel("mean z-scored signal")
    return fig


def plot_design_carpet(
    recordings: Sequence[Recording], column: str = "category", baseline: str = "rest", detrend: bool = True
) -> Figure:
    """The category-by-volume design of runs above their voxel (or ROI) carpet.

    Runs are concatenated in the given order. The design shows one row per category (all but
    ``baseline``), black where a volume carries it; the carpet shows every feature z-scored within
    its run (after removing its linear trend when ``detrend``: scanner drift hides the blocks),
    ``(V, T)``, grey-scale clipped at ±2.5. Run boundaries are dotted lines on both.

    Returns
    -------
    Figure
        Two axes sharing x: ``axes[0].images[0]`` the ``(categories, T)`` design, ``axes[1].images[0]``
        the ``(V, T)`` carpet; each axes holds ``n_runs - 1`` boundary lines.
    """
    if any(r.frame_labels is None or column not in r.frame_labels.columns for r in recordings):
        raise DataError(f"plot_design_carpet needs the frame label {column!r} on every run")
    labels = pd.concat([r.frame_labels[column].astype(object) for r in recordings], ignore_index=True)
    categories = sorted({str(v) for v in labels.dropna()} - {baseline})
    design = np.array([(labels == c).to_numpy(dtype=float) for c in categories])
    runs = []
    for rec in recordings:
        data = np.asarray(rec.data, dtype=np.float64)
        if data.ndim != 2:
            raise DataError(f"{rec.subject}/{rec.session}: the carpet needs (T, V) frames, got {data.shape}")
        if detrend:
            data = scipy.signal.detrend(data, axis=0)
        std = data.std(axis=0)
        runs.append(np.divide(data - data.mean(axis=0), std, out=np.zeros_like(data), where=std > 0))
    carpet = np.clip(np.concatenate(runs).T, -_CARPET_CLIP, _CARPET_CLIP)
    fig = Figure(figsize=(11.0, 6.0), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(1, 3))
    top.imshow(design, aspect="auto", cmap="Greys", interpolation="nearest", vmin=0, vmax=1)
    top.set_yticks(range(len(categories)), [literal(c) for c in categories], fontsize="small")
    top.set_title(literal(f"design: {column} per volume ({baseline} blank)"))
    bottom.imshow(carpet, aspect="auto", cmap="gray", interpolation="nearest", vmin=-_CARPET_CLIP, vmax=_CARPET_CLIP)
    bottom.set_ylabel(f"{carpet.shape[0]} features (z within run)")
    bottom.set_xlabel(f"volume ({len(recordings)} runs concatenated)")
    for boundary in np.cumsum([r.n_timepoints for r in recordings])[:-1]:
        for ax in (top, bottom):
            ax.axvline(boundary - 0.5, color="tab:orange", linestyle=":", linewidth=1.0)
    return fig


__all__ = [
    "EventLockedAverage",
    "PAIN_REGIONS",
    "canonical_response",
    "event_locked_average",
    "onset_frames",
    "plot_design_carpet",
    "plot_event_locked",
]
