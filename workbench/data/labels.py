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
one float32 array ``(B, k)``; NaN marks an undefined value. A category is named by its text, and
a number by its value (:func:`category_name`: ``1``, ``1.0`` and ``"1.0"`` are one category ``"1"``).
A column is one kind in every run: numeric in some runs and text in others is an error naming
the runs (:func:`check_label_kinds`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Literal

import numpy as np

from workbench.data.recording import Recording
from workbench.data.spec import LabelColumn
from workbench.errors import DataError

CategoricalRule = Literal["majority", "pure"]


_INTEGER = re.compile(r"[+-]?[0-9]+")


def is_categorical(series) -> bool:
    """Whether a frame-label column holds categories (pandas ``category``, text or booleans) rather than numbers."""
    import pandas as pd

    dtype = series.dtype
    return (
        isinstance(dtype, pd.CategoricalDtype)
        or pd.api.types.is_bool_dtype(dtype)
        or not (pd.api.types.is_numeric_dtype(dtype))
    )


def category_name(value: object) -> str:
    """The name of a category: a number by its value, anything else by its text.

    ``1``, ``1.0``, ``numpy.float32(1)`` and ``"1.0"`` all name category ``"1"``; ``0.50`` names
    ``"0.5"``; whole numbers written as text keep every digit (``"12345678901234567890"``).
    Booleans and text that is not a finite number are kept as written.
    """
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    text = value.strip() if isinstance(value, str) else None
    if text is not None and _INTEGER.fullmatch(text):
        return str(int(text))
    try:
        number = float(text if text is not None else value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return str(value)
    if not math.isfinite(number):
        return str(value)
    return str(int(number)) if number.is_integer() else repr(number)


def _run_name(recording: Recording) -> str:
    source = recording.meta.get("source_file")
    return f"{recording.subject}/{recording.session}" + (f" ({source})" if source else "")


def _listed(runs: list[str], limit: int = 3) -> str:
    shown = ", ".join(runs[:limit])
    return shown + (f" and {len(runs) - limit} more" if len(runs) > limit else "")


def check_label_kinds(recordings: Sequence[Recording], names: Sequence[str] | None = None) -> None:
    """DataError when a frame label (of ``names``, default all) is numeric in some runs and text in others.

    A run where the label is missing on every frame has no kind. The message names the column
    and the runs of each kind; declaring the column's kind in the label source
    (``columns: {name: categorical}``) makes every run read it alike.
    """
    kinds: dict[str, dict[bool, list[str]]] = {}
    for rec in recordings:
        table = rec.frame_labels
        if table is None:
            continue
        for name in [c for c in table.columns if (names is None or c in names) and table[c].notna().any()]:
            kinds.setdefault(str(name), {}).setdefault(is_categorical(table[name]), []).append(_run_name(rec))
    for name, by_kind in kinds.items():
        if len(by_kind) > 1:
            raise DataError(
                f"label {name!r} is numeric in run(s) {_listed(by_kind[False])} but text in run(s) "
                f"{_listed(by_kind[True])}; make it one kind: declare it in the label source's `columns` "
                f"({name}: categorical or continuous) or fix the files"
            )


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
    check_label_kinds(recordings, names)
    columns = []
    for name in names:
        defined = [t[name] for t in tables if t[name].notna().any()] or [tables[0][name]]
        if is_categorical(defined[0]):
            declared = []
            for t in tables:
                values = t[name].cat.categories if hasattr(t[name], "cat") else t[name].dropna().unique()
                declared.extend(category_name(v) for v in values)
            if not declared:
                raise DataError(f"label {name!r} holds no value on any frame of any run; leave it out or fix the files")
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
            out[:, j] = [code_of.get(category_name(v), np.nan) if v == v and v is not None else np.nan for v in values]
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


__all__ = [
    "CategoricalRule",
    "category_name",
    "check_label_kinds",
    "frame_values",
    "is_categorical",
    "label_columns",
    "window_values",
]
