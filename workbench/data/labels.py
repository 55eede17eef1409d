"""Labels of windows from the labels of their frames.

A recording may carry ``frame_labels``: a table with one row per frame (see
:class:`~workbench.data.recording.Recording`). A window of ``W`` frames gets one value per
column:

* **continuous** columns: the mean over the window's frames where the value is defined
  (NaN when it is defined on none of them);
* **categorical** columns: the most frequent category of the window's frames (``"majority"``,
  ties to the category listed first), or, with ``rule="pure"``, the category only when every
  frame of the window has it (NaN otherwise, e.g. a window straddling two task blocks).

Categories travel as float codes into :attr:`LabelColumn.categories`, so a batch's ``"y"`` is
one float32 array ``(B, k)``; NaN marks an undefined value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from workbench.data.recording import Recording
from workbench.data.spec import LabelColumn
from workbench.errors import DataError

CategoricalRule = Literal["majority", "pure"]


def _is_categorical(series) -> bool:
    import pandas as pd

    return isinstance(series.dtype, pd.CategoricalDtype) or series.dtype == object or series.dtype == bool


def label_columns(recordings: Sequence[Recording], names: Sequence[str] | None = None) -> tuple[LabelColumn, ...]:
    """The label columns shared by every recording (or the ``names`` asked for).

    Categories are those the tables declare (pandas ``category`` dtype), else the sorted
    distinct values; recordings that disagree get the sorted union.

    Raises
    ------
    DataError
        A name asked for is missing from some recording (the message lists the shared ones),
        or a column is categorical in one run and continuous in another.
    """
    tables = [r.frame_labels for r in recordings]
    if not recordings or any(t is None for t in tables):
        if names:
            raise DataError(f"labels {list(names)} were asked for but the recordings carry no frame labels")
        return ()
    shared = [c for c in tables[0].columns if all(c in t.columns for t in tables[1:])]
    if names is None:
        names = shared
    missing = [n for n in names if n not in shared]
    if missing:
        raise DataError(f"label(s) {missing} are not in the frame labels of every run; available: {shared}")
    columns = []
    for name in names:
        kinds = {_is_categorical(t[name]) for t in tables}
        if len(kinds) > 1:
            raise DataError(f"label {name!r} is categorical in some runs and numeric in others; make it one kind")
        if kinds.pop():
            declared = []
            for t in tables:
                values = t[name].cat.categories if hasattr(t[name], "cat") else t[name].dropna().unique()
                declared.extend(str(v) for v in values)
            columns.append(LabelColumn(str(name), "categorical", tuple(sorted(set(declared)))))
        else:
            columns.append(LabelColumn(str(name), "continuous"))
    return tuple(columns)


def frame_values(recording: Recording, columns: Sequence[LabelColumn]) -> np.ndarray:
    """``(T, k)`` float64 values of a recording's frames: continuous values or category codes (NaN: none)."""
    out = np.full((recording.n_timepoints, len(columns)), np.nan)
    table = recording.frame_labels
    for j, column in enumerate(columns):
        if table is None or column.name not in table.columns:
            raise DataError(f"recording {recording.subject}/{recording.session} has no frame label {column.name!r}")
        values = table[column.name]
        if column.kind == "continuous":
            out[:, j] = values.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            code_of = {c: i for i, c in enumerate(column.categories)}
            out[:, j] = [code_of.get(str(v), np.nan) if v == v and v is not None else np.nan for v in values]
    return out


def window_values(
    frames: np.ndarray,
    starts: np.ndarray,
    length: int,
    columns: Sequence[LabelColumn],
    rule: CategoricalRule = "majority",
) -> np.ndarray:
    """Labels of the windows ``[s, s + length)`` of one run from its frame values ``(T, k)``.

    Returns
    -------
    numpy.ndarray
        ``(len(starts), k)`` float32 (see the module docstring for the rules).
    """
    if rule not in ("majority", "pure"):
        raise DataError(f"categorical label rule {rule!r}: choose 'majority' or 'pure'")
    window = frames[np.asarray(starts)[:, None] + np.arange(length)]  # (n, W, k)
    out = np.full((window.shape[0], len(columns)), np.nan)
    for j, column in enumerate(columns):
        values = window[:, :, j]
        defined = ~np.isnan(values)
        if column.kind == "continuous":
            counts = defined.sum(axis=1)
            sums = np.where(defined, values, 0.0).sum(axis=1)
            out[:, j] = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
            continue
        n_categories = len(column.categories)
        codes = np.where(defined, values, n_categories).astype(np.int64)  # undefined -> extra bin
        counts = np.stack([(codes == c).sum(axis=1) for c in range(n_categories)], axis=1)
        best = counts.argmax(axis=1)
        top = counts.max(axis=1)
        keep = top == length if rule == "pure" else top > 0
        out[:, j] = np.where(keep, best, np.nan)
    return out.astype(np.float32)


__all__ = ["CategoricalRule", "frame_values", "label_columns", "window_values"]
