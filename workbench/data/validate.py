"""Checks every run passes: length, finite values, and the policy for constant ROIs (per run and per dataset).

* fewer than ``min_timepoints`` frames or non-finite values (the message gives the count)
  -> :class:`DataError`;
* constant ROIs in ROI series (zero variance over time: no signal, undefined correlation)
  -> ``constant="error"`` (default) raises naming the ROI indices, ``"drop"`` removes them,
  ``"keep"`` keeps them; over a whole dataset, :func:`apply_constant_policy` drops a ROI constant
  in *any* run from *every* run, so all runs keep one ROI count.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np

from workbench.config import excerpt
from workbench.data.cache import release_pages
from workbench.data.recording import Recording
from workbench.errors import DataError

ConstantPolicy = Literal["error", "drop", "keep"]


def check_finite(data: np.ndarray, path: str | Path) -> None:
    n_bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if n_bad:
        raise DataError(f"{path}: {n_bad} non-finite value(s) (NaN or inf) out of {data.size}")


def check_length(n_timepoints: int, path: str | Path, min_timepoints: int) -> None:
    if n_timepoints < min_timepoints:
        raise DataError(f"{path}: {n_timepoints} time points, fewer than the {min_timepoints} required")


def check_roi_series(
    series: np.ndarray,
    path: str | Path,
    *,
    min_timepoints: int = 2,
    constant: ConstantPolicy = "error",
    roi_names: list[str] | None = None,
) -> tuple[np.ndarray, list[str] | None, list[int]]:
    """Validate a ``(T, R)`` series and apply the constant-ROI policy.

    Returns
    -------
    series : numpy.ndarray
        ``(T, R')`` float32; ``R' < R`` only when ``constant="drop"`` removed ROIs.
    roi_names : list of str or None
        ``roi_names`` without the removed ROIs.
    dropped : list of int
        0-based indices (into the original R) of the ROIs removed.
    """
    series = np.asarray(series, dtype=np.float32)
    if roi_names is not None and len(roi_names) != series.shape[1]:
        raise DataError(f"{path}: {series.shape[1]} ROIs but {len(roi_names)} ROI names were given")
    check_length(series.shape[0], path, min_timepoints)
    check_finite(series, path)
    flat = np.flatnonzero(np.ptp(series, axis=0) == 0).tolist()
    if flat and constant == "error":
        raise DataError(
            f"{path}: ROI(s) {excerpt(flat)} ({len(flat)} in all, 0-based columns) are constant over time; "
            "fix the file or set read.constant to 'drop' (remove them) or 'keep'"
        )
    if not flat or constant == "keep":
        return series, roi_names, []
    if roi_names is not None:
        roi_names = [name for i, name in enumerate(roi_names) if i not in set(flat)]
    return np.delete(series, flat, axis=1), roi_names, flat


def _constant_columns(data: np.ndarray) -> list[int]:
    """0-based columns of a ``(T, R)`` run that never change (a memory map's pages are released)."""
    flat = np.flatnonzero(np.ptp(np.asarray(data), axis=0) == 0).tolist()
    release_pages(data)
    return flat


def apply_constant_policy(
    recordings: list[Recording], constant: ConstantPolicy, store: Callable[[Recording], Recording] | None = None
) -> list[Recording]:
    """Apply the constant-ROI policy to a whole dataset of ``(T, R)`` runs.

    ``"error"`` raises naming the first run and its constant ROIs; ``"keep"`` changes nothing;
    ``"drop"`` removes every ROI that is constant in *any* run from *every* run, so the runs keep
    one ROI count, warns naming them, and records ``meta["dropped_rois"]`` (0-based indices into
    the runs' columns) and ``meta["dropped_roi_names"]`` (when names are known). Volumes pass.

    ``store`` (e.g. :meth:`workbench.data.cache.RunCollector.store`) receives each changed run as
    soon as it is built, so a streamed dataset keeps at most one run in memory.

    Returns
    -------
    list of Recording
        New Recording objects for the runs that changed (as ``store`` returned them), the others
        as given.
    """
    series = [r for r in recordings if r.data.ndim == 2]
    if constant == "keep" or not series:
        return recordings
    flat_by_run = {id(r): _constant_columns(r.data) for r in series}
    if constant == "error":
        for rec in series:
            if flat_by_run[id(rec)]:
                raise DataError(
                    f"{rec.meta.get('source_file', rec.subject)} ({rec.subject}/{rec.session}): ROI(s) "
                    f"{excerpt(flat_by_run[id(rec)])} ({len(flat_by_run[id(rec)])} in all, 0-based columns) are "
                    "constant over time; fix the file or set read.constant to 'drop' (remove them from every run) "
                    "or 'keep'"
                )
        return recordings
    check_same_roi_count(series)
    flat = sorted({i for indices in flat_by_run.values() for i in indices})
    if not flat:
        return recordings
    names = series[0].meta.get("roi_names")
    dropped_names = [names[i] for i in flat] if names else None
    runs = sum(bool(v) for v in flat_by_run.values())
    warnings.warn(
        f"{len(flat)} ROI(s) constant in {runs} of {len(series)} runs are dropped from every run: "
        f"{excerpt(dropped_names or flat)}",
        stacklevel=2,
    )
    out = []
    for rec in recordings:
        if rec.data.ndim != 2:
            out.append(rec)
            continue
        meta = {**rec.meta, "dropped_rois": flat}
        if rec.meta.get("roi_names"):
            meta["roi_names"] = [n for i, n in enumerate(rec.meta["roi_names"]) if i not in set(flat)]
            meta["dropped_roi_names"] = [rec.meta["roi_names"][i] for i in flat]
        data = np.delete(np.asarray(rec.data), flat, axis=1)
        changed = Recording(rec.subject, rec.session, data, rec.tr, meta, rec.frame_labels)
        out.append(store(changed) if store is not None else changed)
        release_pages(rec.data)
    return out


def check_same_roi_count(recordings: list[Recording]) -> None:
    """Raise :class:`DataError` naming two files whose ROI series differ in ROI count."""
    series = [r for r in recordings if r.data.ndim == 2]
    if not series:
        return
    first = series[0]
    for other in series[1:]:
        if other.data.shape[1] != first.data.shape[1]:
            raise DataError(
                f"ROI counts differ: {first.meta.get('source_file', first.subject)} has "
                f"{first.data.shape[1]} ROIs but {other.meta.get('source_file', other.subject)} has "
                f"{other.data.shape[1]}; all runs of a dataset must share one parcellation"
            )


__all__ = [
    "ConstantPolicy",
    "apply_constant_policy",
    "check_finite",
    "check_length",
    "check_roi_series",
    "check_same_roi_count",
]
