"""Which columns of a ROI table are regions: choose, drop, or keep aside as confounds.

Users' tables often hold more than regions: a global signal, motion parameters, an index
column. Three options (the ``read`` block of a catalog entry) say what is what:

``confounds``     columns taken out of the ROI series and kept beside it, per frame
                  (``Recording.meta["confounds"]``, a DataFrame; e.g. ``GlobSig``);
``columns``       the ROI columns to keep, in this order (everything else is dropped);
``drop_columns``  columns to remove (everything else is a ROI).

A column is named by its header name (tables with a header row) or by its 0-based position
along the ROI axis of the time-first table (any table). Every reference is checked: an
unknown name (with the closest valid one), a position out of range, a name the header holds
twice, or one column asked for as both ROI and confound raise :class:`DataError`.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.errors import DataError

ColumnRef = str | int


def _position(ref: ColumnRef, names: list[str] | None, n_columns: int, path: str | Path) -> int:
    if isinstance(ref, int):
        if not 0 <= ref < n_columns:
            raise DataError(f"{path}: column {ref} is out of range; the table has {n_columns} columns (0-based)")
        return ref
    if names is None:
        raise DataError(f"{path}: column {ref!r} is named but the table has no header row; use its 0-based position")
    hits = [i for i, name in enumerate(names) if name == ref]
    if not hits:
        close = difflib.get_close_matches(ref, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DataError(f"{path}: no column {ref!r}{hint}")
    if len(hits) > 1:
        raise DataError(f"{path}: the header names {len(hits)} columns {ref!r} (positions {hits}); use a position")
    return hits[0]


def select_columns(
    series: np.ndarray,
    names: list[str] | None,
    path: str | Path,
    *,
    columns: Sequence[ColumnRef] | None = None,
    drop_columns: Sequence[ColumnRef] = (),
    confounds: Sequence[ColumnRef] = (),
) -> tuple[np.ndarray, list[str] | None, pd.DataFrame | None]:
    """Split a time-first table into ROI series and confounds.

    Parameters
    ----------
    series : numpy.ndarray
        ``(T, C)`` table, time first.
    names : list of str or None
        Header names of the C columns, if the file has a header row.
    path : str or Path
        The file, for messages.
    columns, drop_columns, confounds
        See the module docstring; ``columns`` and ``drop_columns`` exclude each other.

    Returns
    -------
    series : numpy.ndarray
        ``(T, R)`` ROI columns.
    names : list of str or None
        Their names.
    confounds : pandas.DataFrame or None
        ``T`` rows, one float column per confound (named by the header, else ``column_<i>``).
    """
    n_columns = series.shape[1]
    if columns is not None and drop_columns:
        raise DataError(f"{path}: give read.columns (keep) or read.drop_columns (remove), not both")
    aside = [_position(ref, names, n_columns, path) for ref in confounds]
    if columns is not None:
        keep = [_position(ref, names, n_columns, path) for ref in columns]
        both = sorted(set(keep) & set(aside))
        if both:
            raise DataError(f"{path}: column(s) {both} are listed both as ROIs (read.columns) and read.confounds")
    else:
        dropped = {_position(ref, names, n_columns, path) for ref in drop_columns} | set(aside)
        keep = [i for i in range(n_columns) if i not in dropped]
    if not keep:
        raise DataError(f"{path}: no ROI column is left after read.columns / drop_columns / confounds")
    table = None
    if aside:
        labels = [names[i] if names is not None else f"column_{i}" for i in aside]
        table = pd.DataFrame(np.asarray(series[:, aside], dtype=np.float64), columns=labels)
    kept_names = [names[i] for i in keep] if names is not None else None
    return series[:, keep], kept_names, table


__all__ = ["ColumnRef", "select_columns"]
