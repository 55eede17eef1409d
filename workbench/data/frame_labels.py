"""Labels per frame from the files that describe a task: BIDS events, FSL onsets, per-volume tables.

The result is always a :class:`pandas.DataFrame` with one row per frame (``Recording.frame_labels``):
continuous columns float (NaN where undefined), categorical columns of pandas ``category`` dtype.

Alignment rule (events and onsets)
----------------------------------
Frame ``k`` of a run with repetition time ``TR`` covers ``[k TR, (k + 1) TR)`` seconds after the
run start and is represented by its **centre** ``t_k = (k + 0.5) TR``. An event with onset ``o``
and duration ``d`` (seconds) labels frame ``k`` when

    o + hrf_shift <= t_k < o + hrf_shift + d,

so a frame belongs to the event that covers most of it (a block of ``d = n TR`` starting on a
frame boundary labels exactly ``n`` frames). An event of duration 0 labels the one frame whose
interval contains ``o + hrf_shift``. ``hrf_shift`` (seconds, default 0) moves every event later,
e.g. by 4-6 s so that labels follow the delayed haemodynamic response rather than the stimulus.
Where events overlap, the later onset wins; a missing value (``n/a``) never overwrites. This
rule reproduces, volume for volume, the per-volume labels PyMVPA ships for Haxby et al. (2001)
from its FSL onset files (TR 2.5 s, 22.5 s blocks: 9 volumes each).

Some event files count onsets on one clock across a scanning visit (the first event of a later
run at 846 s). ``first_onset_at`` re-references them: the run starts ``first_onset_at`` seconds
before the run's first event.

Per-volume tables (``read_frame_table``) have one row per frame; ``first_frame`` says which frame
the first row describes (framewise displacement has no value for frame 0: ``first_frame=1``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from workbench.config import excerpt
from workbench.data.labels import category_name, check_label_kinds
from workbench.data.recording import Recording
from workbench.errors import DataError

LabelKind = Literal["categorical", "continuous"]
_MISSING = ["n/a", "N/A", "NA", "nan", "NaN", ""]


def frame_centres(n_frames: int, tr: float) -> np.ndarray:
    """``(T,)`` centre times ``(k + 0.5) TR`` of the frames, seconds after the run start."""
    if not (np.isfinite(tr) and tr > 0):
        raise DataError(f"labels from onsets need the run's TR in seconds, got {tr}; set `tr` in the catalog entry")
    return (np.arange(n_frames) + 0.5) * tr


def covered_frames(onset: float, duration: float, n_frames: int, tr: float) -> np.ndarray:
    """``(T,)`` bool: the frames an event labels (see the module docstring)."""
    centres = frame_centres(n_frames, tr)
    if duration > 0:
        return (centres >= onset) & (centres < onset + duration)
    return np.floor(centres / tr) == np.floor(onset / tr)


def _typed(values: pd.Series, kind: LabelKind, where: str) -> pd.Series:
    if kind == "continuous":
        try:
            return pd.to_numeric(values, errors="raise").astype(np.float64)
        except (TypeError, ValueError):
            bad = next(v for v in values.dropna() if not _is_number(v))
            raise DataError(f"{where}: label {values.name!r} is continuous but holds {excerpt(bad, 80)}") from None
    return _as_categories(values)


def _as_categories(values: pd.Series, categories: Sequence[str] | None = None) -> pd.Series:
    """``values`` named by :func:`category_name` (missing values kept), as ``categories`` (default: their own)."""
    text = values.astype(object).map(lambda v: v if pd.isna(v) else category_name(v))
    return text.astype(pd.CategoricalDtype(sorted(text.dropna().unique()) if categories is None else categories))


def _is_number(value: object) -> bool:
    try:
        float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def _inferred_kinds(table: pd.DataFrame, columns: Sequence[str]) -> dict[str, LabelKind]:
    return {c: "continuous" if pd.api.types.is_numeric_dtype(table[c]) else "categorical" for c in columns}


def read_events(path: str | Path) -> pd.DataFrame:
    """A BIDS ``events.tsv``: ``onset`` and ``duration`` (seconds) and any other columns; ``n/a`` -> NaN."""
    try:
        table = pd.read_csv(path, sep="\t", na_values=_MISSING, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a readable events table ({exc})") from None
    check_event_times(table, str(path), "row(s) below the header")
    return table


def check_event_times(events: pd.DataFrame, where: str, rows: str = "event(s)") -> None:
    """DataError naming the ``rows`` (counted from 1) whose onset or duration is not a finite number of seconds.

    Durations must also be >= 0. ``where`` names the source, ``rows`` what the numbers count.
    """
    seconds = {}
    for column in ("onset", "duration"):
        if column not in events.columns:
            raise DataError(f"{where}: events table needs an {column!r} column; it has {list(events.columns)}")
        seconds[column] = pd.to_numeric(events[column], errors="coerce").to_numpy(np.float64)
        bad = np.flatnonzero(~np.isfinite(seconds[column]))
        if len(bad):
            shown = excerpt(events[column].iloc[bad[:3]].tolist(), 80)
            raise DataError(
                f"{where}: {column} must be a finite number of seconds; {rows} {_numbers(bad)} hold {shown}"
            )
    negative = np.flatnonzero(seconds["duration"] < 0)
    if len(negative):
        raise DataError(f"{where}: negative duration in {rows} {_numbers(negative)}")


def _numbers(positions: np.ndarray, limit: int = 5) -> str:
    """1-based numbers of 0-based ``positions``: ``"2, 5"`` or ``"2, 5, 7, 8, 9 and 3 more"``."""
    shown = ", ".join(str(i + 1) for i in positions[:limit])
    return shown + (f" and {len(positions) - limit} more" if len(positions) > limit else "")


def events_to_frames(
    events: pd.DataFrame,
    n_frames: int,
    tr: float,
    *,
    hrf_shift: float = 0.0,
    first_onset_at: float | None = None,
    columns: Mapping[str, LabelKind] | None = None,
    trial_type_from: Mapping[str, str] | None = None,
    per_run: Sequence[str] = (),
    fill: Mapping[str, str] | None = None,
    where: str = "events",
) -> pd.DataFrame:
    """Per-frame labels of one run from its events (rule in the module docstring).

    Parameters
    ----------
    events : pandas.DataFrame
        ``onset``, ``duration`` (seconds) and label columns, one row per event.
    n_frames : int
        Frames of the run, ``T``.
    tr : float
        Repetition time, seconds.
    hrf_shift : float
        Seconds added to every onset.
    first_onset_at : float, optional
        Re-reference onsets so that the first event lies this many seconds after the run start.
    columns : mapping, optional
        Label columns and their kinds; default every column but onset/duration, numeric ones
        continuous, the others categorical.
    trial_type_from : mapping, optional
        ``{type: column}``: adds a categorical ``trial_type`` column whose value is ``type`` on the
        events where ``column`` is defined (files without a ``trial_type`` column).
    per_run : sequence of str
        Columns that hold one value for the whole run (e.g. a regulation instruction): that value
        labels every frame; two different values in one file are an error.
    fill : mapping, optional
        ``{column: value}`` for frames no event covers (e.g. ``rest``), default NaN.
    where : str
        Name of the source, for messages.

    Returns
    -------
    pandas.DataFrame
        ``T`` rows, one column per label.
    """
    check_event_times(events, where)
    table = events.copy()
    for name, column in (trial_type_from or {}).items():
        if column not in table.columns:
            raise DataError(f"{where}: trial_type_from names column {column!r}, absent from {list(table.columns)}")
        table.loc[table[column].notna(), "trial_type"] = name
    if columns is None:
        label_names = [c for c in table.columns if c not in ("onset", "duration")]
        kinds = _inferred_kinds(table, label_names)
    else:
        missing = [c for c in columns if c not in table.columns]
        if missing:
            raise DataError(f"{where}: no column(s) {missing}; the file has {list(table.columns)}")
        kinds = {**dict(columns), **({"trial_type": "categorical"} if trial_type_from else {})}
    onsets = table["onset"].to_numpy(np.float64)
    if first_onset_at is not None and len(onsets):
        onsets = onsets - onsets.min() + first_onset_at
    onsets = onsets + hrf_shift
    order = np.argsort(onsets, kind="stable")
    masks = [covered_frames(onsets[i], float(table["duration"].iloc[i]), n_frames, tr) for i in order]
    out = {}
    for name, kind in kinds.items():
        values = _typed(table[name], kind, where)
        if name in per_run:
            distinct = values.dropna().unique()
            if len(distinct) > 1:
                raise DataError(f"{where}: {name!r} is declared per run but takes values {sorted(map(str, distinct))}")
            frame_values = pd.Series([distinct[0] if len(distinct) else np.nan] * n_frames, dtype=object)
        else:
            frame_values = pd.Series([np.nan] * n_frames, dtype=object)
            if fill and name in fill:
                frame_values[:] = fill[name]
            for i, mask in zip(order, masks):
                if not pd.isna(values.iloc[i]):
                    frame_values[mask] = values.iloc[i]
        out[name] = _typed(frame_values.rename(name), kind, where)
    return pd.DataFrame(out)


def read_frame_table(
    path: str | Path,
    n_frames: int,
    *,
    header: bool = True,
    names: Sequence[str] | None = None,
    first_frame: int = 0,
    columns: Mapping[str, LabelKind] | None = None,
) -> pd.DataFrame:
    """Per-frame labels from a table with one row per frame (``.tsv`` tab, ``.csv`` comma, else spaces).

    ``names`` name the columns (replacing a header row, or for files without one); the file must
    hold exactly ``n_frames - first_frame`` rows, which label frames ``first_frame`` onwards
    (earlier frames get NaN). ``columns`` chooses and types the columns (default all, inferred).
    """
    path = Path(path)
    sep = "\t" if path.suffix == ".tsv" else "," if path.suffix == ".csv" else r"\s+"
    try:
        table = pd.read_csv(
            path,
            sep=sep,
            header=0 if header else None,
            names=list(names) if names else None,
            na_values=_MISSING,
            keep_default_na=False,
        )
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a readable per-frame table ({exc})") from None
    expected = n_frames - first_frame
    if len(table) != expected:
        raise DataError(
            f"{path}: {len(table)} rows, but the run has {n_frames} frames and the first row describes frame "
            f"{first_frame}, so {expected} rows are expected; check first_frame or the file"
        )
    table.columns = [str(c).strip() for c in table.columns]
    if columns is None:
        columns = _inferred_kinds(table, list(table.columns))
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DataError(f"{path}: no column(s) {missing}; the file has {list(table.columns)}")
    pad = pd.DataFrame({c: [np.nan] * first_frame for c in columns}, dtype=object)
    padded = pd.concat([pad, table[list(columns)].astype(object)], ignore_index=True)
    return pd.DataFrame({c: _typed(padded[c].rename(c), kind, str(path)) for c, kind in columns.items()})


def read_condition_key(path: str | Path) -> dict[str, str]:
    """OpenfMRI ``condition_key.txt`` (``task001 cond001 house`` per line) -> ``{"cond001": "house"}``."""
    names = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 3:
            raise DataError(f"{path}:{number}: expected 'task condition name', got {excerpt(line, 80)}")
        names[parts[1]] = " ".join(parts[2:])
    return names


def read_fsl_onsets(paths: Sequence[str | Path], conditions: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Events of FSL three-column files (onset, duration, weight; one file per condition).

    The condition of a file is ``conditions[stem]`` (``cond001.txt`` -> ``house``), else its stem.
    Returns an events table ``onset``, ``duration``, ``trial_type`` (the weight is not used).
    """
    rows = []
    for path in paths:
        stem = Path(path).name.split(".")[0]
        if conditions is not None and stem not in conditions:
            raise DataError(f"{path}: condition {stem!r} is not in the condition key ({sorted(conditions)})")
        try:
            values = np.loadtxt(path, ndmin=2)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: not an FSL three-column onset file ({exc})") from None
        if values.size and values.shape[1] != 3:
            raise DataError(f"{path}: FSL onset files have 3 columns (onset, duration, weight), got {values.shape[1]}")
        if values.size:
            check_event_times(pd.DataFrame(values[:, :2], columns=["onset", "duration"]), str(path), "row(s)")
        name = conditions[stem] if conditions is not None else stem
        rows += [(onset, duration, name) for onset, duration, _ in values]
    return pd.DataFrame(rows, columns=["onset", "duration", "trial_type"])


def split_by_label(recording: Recording, column: str) -> list[Recording]:
    """Cut one recording into runs at the changes of a frame-label column (e.g. PyMVPA's chunks).

    Each contiguous block becomes a Recording whose session is ``run-<value>`` (prefixed by the
    original session unless it is ``"1"``), with ``meta["run"]`` the value; the column leaves the
    frame labels. A value that occurs in two separate blocks is an error.
    """
    table = recording.frame_labels
    if table is None or column not in table.columns:
        available = [] if table is None else list(table.columns)
        raise DataError(f"read.split_by names label {column!r}, but the frame labels are {available}")
    values = table[column].astype(object).to_numpy()
    if pd.isna(values).any():
        raise DataError(f"read.split_by: label {column!r} is missing on some frames; every frame needs a run")
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    bounds = list(zip(starts, np.r_[starts[1:], len(values)]))
    seen = [str(values[a]) for a, _ in bounds]
    if len(set(seen)) != len(seen):
        raise DataError(f"read.split_by: runs of {column!r} are not contiguous (order {seen})")
    rest = table.drop(columns=[column])
    out = []
    for a, b in bounds:
        value = str(values[a])
        session = f"run-{value}" if recording.session == "1" else f"{recording.session}_run-{value}"
        data = recording.data[..., a:b] if recording.data.ndim == 4 else recording.data[a:b]
        labels = rest.iloc[a:b].reset_index(drop=True)
        meta = {**recording.meta, "run": value}
        out.append(Recording(recording.subject, session, np.ascontiguousarray(data), recording.tr, meta, labels))
    return out


def unify_categories(recordings: Sequence[Recording]) -> list[Recording]:
    """Give each categorical label the same categories (sorted union) in every run, in place.

    Categories are named by :func:`~workbench.data.labels.category_name` (``1`` and ``1.0`` are
    one). Raises DataError when a label is numeric in some runs and text in others, naming them.
    """
    check_label_kinds(recordings)
    tables = [r.frame_labels for r in recordings if r.frame_labels is not None]
    names = {c for t in tables for c in t.columns if isinstance(t[c].dtype, pd.CategoricalDtype)}
    for name in names:
        columns = [t[name] for t in tables if name in t.columns]
        union = sorted({category_name(v) for c in columns if hasattr(c, "cat") for v in c.cat.categories})
        for table in tables:
            if name in table.columns:
                table[name] = _as_categories(table[name], union)
    return list(recordings)


__all__ = [
    "LabelKind",
    "check_event_times",
    "covered_frames",
    "events_to_frames",
    "frame_centres",
    "read_condition_key",
    "read_events",
    "read_fsl_onsets",
    "read_frame_table",
    "split_by_label",
    "unify_categories",
]
