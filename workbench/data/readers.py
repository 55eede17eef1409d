"""Read fMRI files into :class:`~workbench.data.recording.Recording` objects, with validation.

Supported files
---------------
``.mat``  MATLAB v5/v7 (``scipy.io.loadmat``); one named variable holding a 2-D table.
``.npy``  a 2-D numpy array (no pickles).
``.csv`` / ``.tsv``  a table whose header row holds the ROI names; rows are time points.
          ``header="auto"`` reads a first row of numbers as data, not as a header;
          ``True`` / ``False`` say it (e.g. a header of numeric region labels). Names
          are kept as written, duplicates included. Columns can be chosen, dropped or
          kept aside as confounds (:mod:`workbench.data.columns`).
``.nii`` / ``.nii.gz``  4-D NIfTI volumes ``(X, Y, Z, T)`` through nibabel; ROI series are
          extracted with nilearn's ``NiftiLabelsMasker`` (atlas image) or ``NiftiMasker``
          (mask image).

Orientation of 2-D tables
-------------------------
ROI series are returned time-first, ``(T, R)``. ``orientation`` says how the file stores them:
``"time_roi"`` (rows are time points), ``"roi_time"`` (rows are ROIs) or ``"auto"``, which
takes the **longer axis as time** (fMRI runs have more frames than ROIs in every embedded
dataset); a square table is ambiguous under ``"auto"`` and raises :class:`DataError`.

Validation
----------
Every run passes the checks of :mod:`workbench.data.validate` (length, finite values, constant
ROIs); NIfTI runs are read by :mod:`workbench.data.nifti`. A table whose layout the reader had to
guess (the longer axis taken as time, a first row of numbers read as data, fewer frames than
ROIs under a header) raises a :class:`~workbench.errors.DataWarning` that names the setting
which states it; a complex-valued array is an error, never cast to real. Before anything is
allocated, a ``.npy`` header is checked against the file's size, a ``.mat`` file's compressed
variables are inflated in a stream and counted, and both against the most a file may unpack to
(:func:`workbench.data.formats.max_read_bytes`); a file that is not what its suffix says (a
``.npz`` archive named ``.npy``) is named for what it is.
"""

from __future__ import annotations

import csv
import difflib
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from workbench.config import excerpt
from workbench.data.columns import ColumnRef, select_columns
from workbench.data.formats import (
    CORRUPT_FILE_ERRORS,
    NIFTI_SUFFIXES,
    SUPPORTED_SUFFIXES,
    check_mat_size,
    check_read_size,
    file_kind,
    file_suffix,
)
from workbench.data.nifti import extract_roi_series, load_nifti, mask_grid, nifti_tr, read_nifti_4d
from workbench.data.recording import Recording
from workbench.data.validate import ConstantPolicy, check_roi_series
from workbench.errors import DataError, DataWarning

Orientation = Literal["auto", "time_roi", "roi_time"]
Modality = Literal["roi_timeseries", "nifti_4d"]
HeaderOption = bool | Literal["auto"]


def _read_mat(path: Path, key: str | None) -> np.ndarray:
    import scipy.io

    try:
        check_mat_size(path)
        content = scipy.io.loadmat(path)
    except NotImplementedError:
        raise DataError(
            f"{path}: MATLAB v7.3 (HDF5) files are not supported; save it with `save(..., '-v7')` "
            "or convert the variable to .npy"
        ) from None
    except (*CORRUPT_FILE_ERRORS, scipy.io.matlab.MatReadError) as exc:
        raise DataError(f"{path}: unreadable or truncated MATLAB file ({exc})") from None
    variables = sorted(k for k in content if not k.startswith("__"))
    if key is None:
        if len(variables) != 1:
            raise DataError(f"{path}: holds variables {variables}; say which one with read.key")
        key = variables[0]
    if key not in content:
        close = difflib.get_close_matches(key, variables, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DataError(f"{path}: no variable {key!r}{hint}; the file holds {variables}")
    return np.asarray(content[key])


def _npy_layout(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a ``.npy`` file from its header, checked against the file's size and the read cap."""
    npy = np.lib.format
    with open(path, "rb") as stream:
        if stream.read(len(npy.MAGIC_PREFIX)) != npy.MAGIC_PREFIX:
            raise DataError(f"{path}: not a .npy array but {file_kind(path)}; save one array with numpy.save")
        stream.seek(0)
        try:
            version = npy.read_magic(stream)
            read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
            shape, _, dtype = read_header(stream)
        except CORRUPT_FILE_ERRORS as exc:
            raise DataError(f"{path}: unreadable .npy header ({exc})") from None
        offset = stream.tell()
    if dtype.hasobject:
        raise DataError(f"{path}: holds Python objects ({dtype}), which are never unpickled; save a numeric array")
    n_bytes = math.prod(shape) * dtype.itemsize
    size = path.stat().st_size
    if offset + n_bytes > size:
        raise DataError(
            f"{path}: the header claims shape {shape} of {dtype} ({n_bytes / 1e6:,.1f} MB) but the file holds "
            f"{size / 1e6:,.1f} MB; the file is truncated or its header is wrong"
        )
    check_read_size(n_bytes, path, f"shape {shape} of {dtype}")
    return shape, dtype


def _read_npy(path: Path) -> np.ndarray:
    _npy_layout(path)
    try:
        return np.load(path, allow_pickle=False)
    except CORRUPT_FILE_ERRORS as exc:
        raise DataError(f"{path}: unreadable or truncated .npy file ({exc})") from None


def _first_row(path: Path, sep: str) -> list[str]:
    """The first row of a ``.csv``/``.tsv`` file; DataError naming the line of a field over csv's size limit."""
    with open(path, newline="", encoding="utf-8") as stream:
        reader = csv.reader(stream, delimiter=sep)
        try:
            return next(reader, [])
        except csv.Error as exc:
            raise DataError(f"{path}, line {reader.line_num}: not a table of numbers ({exc})") from None


def _as_numbers(table: Any, path: Path) -> np.ndarray:
    """``table`` as float64; DataError naming the data row and column of the first cell that is not a number."""
    import pandas as pd

    numbers = table.apply(pd.to_numeric, errors="coerce")
    bad = np.argwhere(numbers.isna().to_numpy() & table.notna().to_numpy())
    if len(bad):
        row, column = bad[0]
        raise DataError(
            f"{path}: data row {row + 1}, column {column + 1} holds {excerpt(table.iat[row, column], 60)}, not a "
            "number; a table holds one ROI per column"
        )
    return numbers.to_numpy(dtype=np.float64)


def _read_table(path: Path, header: HeaderOption = "auto") -> tuple[np.ndarray, list[str] | None]:
    import pandas as pd

    sep = "\t" if file_suffix(path) == ".tsv" else ","
    try:
        first = _first_row(path, sep)
        has_header = header if header != "auto" else not all(_is_number(c) for c in first)
        if header == "auto" and not has_header and first:
            warnings.warn(
                f"{path}: its first row is all numbers and is read as data; if it names the columns "
                "(e.g. numeric region labels), set read.header: true",
                DataWarning,
                stacklevel=4,
            )
        table = pd.read_csv(path, sep=sep, header=None, skiprows=1 if has_header else 0)
    except (*CORRUPT_FILE_ERRORS, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a numeric table with one ROI per column ({exc})") from None
    values = _as_numbers(table, path)
    names = [name.strip() for name in first] if has_header else None
    if names is not None and len(names) != values.shape[1]:
        raise DataError(f"{path}: the header names {len(names)} columns but the rows hold {values.shape[1]}")
    return values, names


def _is_number(text: Any) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def read_table(
    path: str | Path, *, key: str | None = None, header: HeaderOption = "auto"
) -> tuple[np.ndarray, list[str] | None]:
    """Read a 2-D table from ``.mat``, ``.npy``, ``.csv`` or ``.tsv`` as stored on disk.

    Parameters
    ----------
    path : str or Path
        The file.
    key : str, optional
        Variable name inside a ``.mat`` file; may be omitted when the file holds one variable.
    header : {"auto", True, False}
        Whether a ``.csv``/``.tsv`` file starts with a row of column names (``"auto"``: when
        its first row is not all numbers).

    Returns
    -------
    table : numpy.ndarray
        The stored 2-D array, orientation untouched.
    column_names : list of str or None
        Header of a ``.csv``/``.tsv`` file (ROI names), else ``None``.
    """
    path = Path(path)
    suffix = file_suffix(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    names = None
    if suffix == ".mat":
        table = _read_mat(path, key)
    elif suffix == ".npy":
        table = _read_npy(path)
    elif suffix in (".csv", ".tsv"):
        table, names = _read_table(path, header)
    else:
        raise DataError(f"{path}: not a table; supported suffixes are {SUPPORTED_SUFFIXES}")
    if table.ndim != 2:
        raise DataError(f"{path}: expected a 2-D (time x ROI) table, got shape {table.shape}")
    if np.iscomplexobj(table):
        raise DataError(f"{path}: holds complex numbers ({table.dtype}); store the real series (or its magnitude)")
    if not np.issubdtype(table.dtype, np.number):
        raise DataError(f"{path}: expected numbers, got dtype {table.dtype}")
    return table, names


def to_time_first(table: np.ndarray, path: str | Path, orientation: Orientation = "auto") -> np.ndarray:
    """Return ``table`` as ``(T, R)``; ``"auto"`` takes the longer axis as time."""
    if orientation == "time_roi":
        return table
    if orientation == "roi_time":
        return table.T
    if table.shape[0] == table.shape[1]:
        raise DataError(
            f"{path}: square table {table.shape} is ambiguous; set read.orientation to 'time_roi' or 'roi_time'"
        )
    time_axis = "rows" if table.shape[0] > table.shape[1] else "columns"
    warnings.warn(
        f"{path}: read.orientation is 'auto', so the longer axis ({time_axis}, {max(table.shape)}) is taken as "
        "time; set read.orientation to 'time_roi' or 'roi_time' to state it",
        DataWarning,
        stacklevel=3,
    )
    return table if table.shape[0] > table.shape[1] else table.T


def read_roi_table(
    path: str | Path,
    *,
    key: str | None = None,
    orientation: Orientation = "auto",
    header: HeaderOption = "auto",
    columns: Sequence[ColumnRef] | None = None,
    drop_columns: Sequence[ColumnRef] = (),
    confounds: Sequence[ColumnRef] = (),
) -> tuple[np.ndarray, list[str] | None, Any]:
    """Read a table time-first and split it into ROI columns and confounds (not validated yet).

    Returns ``(series (T, R) float64, header names of the ROI columns or None, confounds
    DataFrame or None)``; see :func:`workbench.data.columns.select_columns`.
    """
    table, names = read_table(path, key=key, header=header)
    if names is not None and orientation == "auto":
        orientation = "time_roi"  # a header row names the columns, so columns are ROIs
        if table.shape[0] < table.shape[1]:
            warnings.warn(
                f"{path}: {table.shape[0]} rows (frames) under a header of {table.shape[1]} columns (ROIs); if "
                "the rows are ROIs, set read.orientation: roi_time",
                DataWarning,
                stacklevel=2,
            )
    return select_columns(
        to_time_first(table, path, orientation),
        names,
        path,
        columns=columns,
        drop_columns=drop_columns,
        confounds=confounds,
    )


def read_roi_series(
    path: str | Path,
    *,
    key: str | None = None,
    orientation: Orientation = "auto",
    min_timepoints: int = 2,
    constant: ConstantPolicy = "error",
    roi_names: list[str] | None = None,
    header: HeaderOption = "auto",
    columns: Sequence[ColumnRef] | None = None,
    drop_columns: Sequence[ColumnRef] = (),
) -> tuple[np.ndarray, list[str] | None, list[int]]:
    """Read and validate a ROI time-series table (``.mat``, ``.npy``, ``.csv``, ``.tsv``).

    ``roi_names`` (one per ROI kept by ``columns`` / ``drop_columns``) take precedence over a
    ``.csv``/``.tsv`` header. Returns ``(series (T, R) float32, roi_names or None, dropped ROI
    indices)`` as :func:`check_roi_series`.
    """
    series, header_names, _ = read_roi_table(
        path, key=key, orientation=orientation, header=header, columns=columns, drop_columns=drop_columns
    )
    return check_roi_series(
        series,
        path,
        min_timepoints=min_timepoints,
        constant=constant,
        roi_names=roi_names or header_names,
    )


def read_recording(
    path: str | Path,
    *,
    subject: str,
    session: str = "1",
    modality: Modality = "roi_timeseries",
    tr: float | None = None,
    key: str | None = None,
    orientation: Orientation = "auto",
    min_timepoints: int = 2,
    constant: ConstantPolicy = "error",
    labels_img: str | Path | None = None,
    mask_img: str | Path | None = None,
    roi_names: list[str] | None = None,
    meta: dict[str, Any] | None = None,
    header: HeaderOption = "auto",
    columns: Sequence[ColumnRef] | None = None,
    drop_columns: Sequence[ColumnRef] = (),
    confounds: Sequence[ColumnRef] = (),
) -> Recording:
    """Read one file into a validated :class:`Recording`.

    ``modality="roi_timeseries"`` gives ``data`` ``(T, R)`` float32 from a table, or from a
    NIfTI run reduced with ``labels_img``/``mask_img``; ``"nifti_4d"`` gives ``(X, Y, Z, T)``.
    ``tr`` (seconds) takes precedence over the NIfTI header; when neither is known the TR is
    NaN. ``meta`` gains ``source_file``, ``tr_source`` (catalog / header / unknown) and, when
    known, ``roi_names``, ``dropped_rois``, ``confounds`` (a ``T``-row DataFrame of the table's
    ``confounds`` columns) and, for voxels of a ``mask_img``, the ``grid`` ``(X, Y, Z)`` and the
    boolean ``mask`` (C order, as :func:`workbench.data.volumes.volume_frames`).
    """
    path = Path(path)
    meta = dict(meta or {}, source_file=str(path))
    header_tr = None
    dropped: list[int] = []
    if modality == "nifti_4d":
        data, header_tr = read_nifti_4d(path, min_timepoints=min_timepoints)
    elif file_suffix(path) in NIFTI_SUFFIXES:
        data, header_tr, roi_names, dropped = extract_roi_series(
            path,
            labels_img=labels_img,
            mask_img=mask_img,
            min_timepoints=min_timepoints,
            constant=constant,
            roi_names=roi_names,
        )
        if mask_img is not None:
            meta.update(mask_grid(Path(mask_img), path, data.shape[1]))
    else:
        series, header_names, confound_table = read_roi_table(
            path,
            key=key,
            orientation=orientation,
            header=header,
            columns=columns,
            drop_columns=drop_columns,
            confounds=confounds,
        )
        data, roi_names, dropped = check_roi_series(
            series, path, min_timepoints=min_timepoints, constant=constant, roi_names=roi_names or header_names
        )
        if confound_table is not None:
            meta["confounds"] = confound_table
    if data.ndim == 2 and roi_names is not None:
        meta["roi_names"] = list(roi_names)
    if dropped:
        meta["dropped_rois"] = dropped
    resolved = tr if tr is not None else header_tr
    meta["tr_source"] = "catalog" if tr is not None else ("header" if header_tr is not None else "unknown")
    return Recording(subject, session, data, float("nan") if resolved is None else float(resolved), meta)


def peek_file(path: str | Path, *, key: str | None = None) -> tuple[tuple[int, ...], float | None]:
    """Stored shape and header TR (seconds; NIfTI only, else ``None``) of a file.

    Reads only the header where the format allows it (NIfTI, ``.npy``, ``.mat``).
    """
    path = Path(path)
    suffix = file_suffix(path)
    if suffix in NIFTI_SUFFIXES:
        img = load_nifti(path)
        return tuple(int(n) for n in img.shape), nifti_tr(img)
    if suffix == ".npy":
        return _npy_layout(path)[0], None
    if suffix == ".mat":
        import scipy.io

        try:
            check_mat_size(path)
            variables = {name: shape for name, shape, _ in scipy.io.whosmat(path)}
        except (*CORRUPT_FILE_ERRORS, NotImplementedError, scipy.io.matlab.MatReadError) as exc:
            raise DataError(f"{path}: unreadable MATLAB file ({exc})") from None
        if key is None and len(variables) == 1:
            key = next(iter(variables))
        if key not in variables:
            raise DataError(f"{path}: no variable {key!r}; the file holds {sorted(variables)}")
        return tuple(int(n) for n in variables[key]), None
    return read_table(path)[0].shape, None
