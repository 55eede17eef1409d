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

Validation policy
-----------------
* fewer than ``min_timepoints`` frames, a table that is not 2-D, a volume that is not 4-D,
  non-finite values (NaN/inf; the message gives the count) -> :class:`DataError`;
* constant ROIs in ROI series (zero variance over time: no signal, undefined correlation)
  -> ``constant="error"`` (default) raises naming the ROI indices, ``"drop"`` removes them
  (recorded in ``meta["dropped_rois"]``), ``"keep"`` keeps them; over a whole dataset,
  :func:`apply_constant_policy` drops a ROI constant in *any* run from *every* run, so all runs
  keep one ROI count;
* constant voxels in NIfTI volumes are normal (the background outside the brain) and kept;
  only a volume in which every voxel is constant is rejected;
* unreadable, truncated or corrupt files (gzip, zlib, EOF, OS and MATLAB reader errors)
  -> :class:`DataError` naming the file.
"""

from __future__ import annotations

import csv
import difflib
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from workbench.data.columns import ColumnRef, select_columns
from workbench.data.recording import Recording
from workbench.errors import DataError

Orientation = Literal["auto", "time_roi", "roi_time"]
ConstantPolicy = Literal["error", "drop", "keep"]
Modality = Literal["roi_timeseries", "nifti_4d"]
HeaderOption = bool | Literal["auto"]

SUPPORTED_SUFFIXES = (".nii.gz", ".nii", ".npy", ".csv", ".tsv", ".mat")
NIFTI_SUFFIXES = (".nii.gz", ".nii")
# Errors the readers raise on truncated or corrupt files (zlib.error is not an OSError).
_CORRUPT_FILE_ERRORS = (OSError, EOFError, zlib.error, ValueError, IndexError)
_TR_UNIT_SECONDS = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6, "unknown": 1.0}


def file_suffix(path: str | Path) -> str:
    """Supported suffix of ``path`` (``".nii.gz"`` counts as one), or ``""``."""
    name = Path(path).name.lower()
    return next((s for s in SUPPORTED_SUFFIXES if name.endswith(s)), "")


def file_stem(path: str | Path) -> str:
    """File name without its supported suffix (``sub-01_bold.nii.gz`` -> ``sub-01_bold``)."""
    name = Path(path).name
    return name[: len(name) - len(file_suffix(name))] if file_suffix(name) else Path(name).stem


def _read_mat(path: Path, key: str | None) -> np.ndarray:
    import scipy.io

    try:
        content = scipy.io.loadmat(path)
    except NotImplementedError:
        raise DataError(
            f"{path}: MATLAB v7.3 (HDF5) files are not supported; save it with `save(..., '-v7')` "
            "or convert the variable to .npy"
        ) from None
    except (*_CORRUPT_FILE_ERRORS, scipy.io.matlab.MatReadError) as exc:
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


def _read_table(path: Path, header: HeaderOption = "auto") -> tuple[np.ndarray, list[str] | None]:
    import pandas as pd

    sep = "\t" if file_suffix(path) == ".tsv" else ","
    try:
        with open(path, newline="", encoding="utf-8") as stream:
            first = next(csv.reader(stream, delimiter=sep), [])
        has_header = header if header != "auto" else not all(_is_number(c) for c in first)
        table = pd.read_csv(path, sep=sep, header=None, skiprows=1 if has_header else 0)
        values = table.to_numpy(dtype=np.float64)
    except (*_CORRUPT_FILE_ERRORS, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a numeric table with one ROI per column ({exc})") from None
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
        try:
            table = np.load(path, allow_pickle=False)
        except _CORRUPT_FILE_ERRORS as exc:
            raise DataError(f"{path}: unreadable or truncated .npy file ({exc})") from None
    elif suffix in (".csv", ".tsv"):
        table, names = _read_table(path, header)
    else:
        raise DataError(f"{path}: not a table; supported suffixes are {SUPPORTED_SUFFIXES}")
    if table.ndim != 2:
        raise DataError(f"{path}: expected a 2-D (time x ROI) table, got shape {table.shape}")
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
    return table if table.shape[0] > table.shape[1] else table.T


def _check_finite(data: np.ndarray, path: str | Path) -> None:
    n_bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if n_bad:
        raise DataError(f"{path}: {n_bad} non-finite value(s) (NaN or inf) out of {data.size}")


def _check_length(n_timepoints: int, path: str | Path, min_timepoints: int) -> None:
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
    _check_length(series.shape[0], path, min_timepoints)
    _check_finite(series, path)
    flat = np.flatnonzero(np.ptp(series, axis=0) == 0).tolist()
    if flat and constant == "error":
        raise DataError(
            f"{path}: ROI(s) {flat} (0-based columns) are constant over time; fix the file "
            "or set read.constant to 'drop' (remove them) or 'keep'"
        )
    if not flat or constant == "keep":
        return series, roi_names, []
    if roi_names is not None:
        roi_names = [name for i, name in enumerate(roi_names) if i not in set(flat)]
    return np.delete(series, flat, axis=1), roi_names, flat


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


def _load_nifti(path: Path) -> Any:
    import nibabel as nib

    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        return nib.load(path)
    except (*_CORRUPT_FILE_ERRORS, nib.filebasedimages.ImageFileError) as exc:
        raise DataError(f"{path}: unreadable or corrupt NIfTI file ({exc})") from None


def nifti_tr(img: Any) -> float | None:
    """Repetition time in seconds from a NIfTI header (``pixdim[4]``), or ``None`` if unset.

    Converts ``msec``/``usec`` units; an ``unknown`` time unit is read as seconds.
    """
    zooms = img.header.get_zooms()
    if len(zooms) < 4 or not zooms[3] > 0:
        return None
    unit = img.header.get_xyzt_units()[1]
    return float(zooms[3]) * _TR_UNIT_SECONDS.get(unit, 1.0)


def _read_run(path: Path, min_timepoints: int) -> tuple[Any, np.ndarray]:
    img = _load_nifti(path)
    if len(img.shape) != 4:
        raise DataError(f"{path}: expected a 4-D (X, Y, Z, T) image, got shape {img.shape}")
    try:
        volumes = img.get_fdata(dtype=np.float32)
    except _CORRUPT_FILE_ERRORS as exc:
        raise DataError(f"{path}: truncated or corrupt NIfTI data ({exc})") from None
    _check_length(volumes.shape[3], path, min_timepoints)
    _check_finite(volumes, path)
    if not np.any(np.ptp(volumes, axis=3)):
        raise DataError(f"{path}: every voxel is constant over time; the run holds no signal")
    return img, volumes


def read_nifti_4d(path: str | Path, *, min_timepoints: int = 2) -> tuple[np.ndarray, float | None]:
    """Read a 4-D NIfTI run.

    Returns
    -------
    volumes : numpy.ndarray
        ``(X, Y, Z, T)`` float32 (scaling slopes applied). Constant voxels are kept.
    tr : float or None
        Repetition time in seconds from the header.
    """
    img, volumes = _read_run(Path(path), min_timepoints)
    return volumes, nifti_tr(img)


def extract_roi_series(
    path: str | Path,
    *,
    labels_img: str | Path | None = None,
    mask_img: str | Path | None = None,
    min_timepoints: int = 2,
    constant: ConstantPolicy = "error",
    roi_names: list[str] | None = None,
) -> tuple[np.ndarray, float | None, list[str] | None, list[int]]:
    """Reduce a 4-D NIfTI run to a ``(T, R)`` series with nilearn.

    Exactly one of ``labels_img`` (an atlas: R = number of labels, the mean signal of each
    label, ``NiftiLabelsMasker``) or ``mask_img`` (R = voxels inside the mask,
    ``NiftiMasker``) must be given. No standardisation, detrending or filtering is applied.

    Returns
    -------
    series : numpy.ndarray
        ``(T, R)`` float32.
    tr : float or None
        Repetition time from the header, seconds.
    roi_names, dropped
        As :func:`check_roi_series`.
    """
    import nibabel as nib
    from nilearn.maskers import NiftiLabelsMasker, NiftiMasker

    if (labels_img is None) == (mask_img is None):
        raise DataError(
            f"{path}: a NIfTI run becomes ROI series through exactly one of read.labels_img (an atlas "
            "image) or read.mask_img (a mask image)"
        )
    img, volumes = _read_run(Path(path), min_timepoints)
    if labels_img is not None:
        masker = NiftiLabelsMasker(labels_img=_load_nifti(Path(labels_img)))
    else:
        masker = NiftiMasker(mask_img=_load_nifti(Path(mask_img)))
    try:
        with warnings.catch_warnings():  # nilearn 0.14 warns on its own default standardize=False
            warnings.filterwarnings("ignore", "boolean values for 'standardize'", FutureWarning)
            series = masker.fit_transform(nib.Nifti1Image(volumes, img.affine, img.header))
    except ValueError as exc:
        raise DataError(f"{path}: ROI extraction failed ({exc})") from None
    series, roi_names, dropped = check_roi_series(
        series, path, min_timepoints=min_timepoints, constant=constant, roi_names=roi_names
    )
    return series, nifti_tr(img), roi_names, dropped


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
            meta.update(_mask_grid(Path(mask_img), path, data.shape[1]))
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


def _mask_grid(mask_img: Path, path: Path, n_voxels: int) -> dict[str, Any]:
    """``grid`` and boolean ``mask`` of a mask image, when they describe the extracted voxels."""
    image = _load_nifti(mask_img)
    mask = np.asarray(image.dataobj) != 0
    run_grid = tuple(int(n) for n in _load_nifti(path).shape[:3])
    if mask.shape != run_grid or int(mask.sum()) != n_voxels:  # nilearn resampled the mask: no grid
        return {}
    return {"grid": run_grid, "mask": mask}


def apply_constant_policy(recordings: list[Recording], constant: ConstantPolicy) -> list[Recording]:
    """Apply the constant-ROI policy to a whole dataset of ``(T, R)`` runs.

    ``"error"`` raises naming the first run and its constant ROIs; ``"keep"`` changes nothing;
    ``"drop"`` removes every ROI that is constant in *any* run from *every* run, so the runs keep
    one ROI count, warns naming them, and records ``meta["dropped_rois"]`` (0-based indices into
    the runs' columns) and ``meta["dropped_roi_names"]`` (when names are known). Volumes pass.

    Returns
    -------
    list of Recording
        New Recording objects for the runs that changed, the others as given.
    """
    series = [r for r in recordings if r.data.ndim == 2]
    if constant == "keep" or not series:
        return recordings
    flat_by_run = {id(r): np.flatnonzero(np.ptp(np.asarray(r.data), axis=0) == 0).tolist() for r in series}
    if constant == "error":
        for rec in series:
            if flat_by_run[id(rec)]:
                raise DataError(
                    f"{rec.meta.get('source_file', rec.subject)} ({rec.subject}/{rec.session}): ROI(s) "
                    f"{flat_by_run[id(rec)]} (0-based columns) are constant over time; fix the file or set "
                    "read.constant to 'drop' (remove them from every run) or 'keep'"
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
        f"{dropped_names or flat}",
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
        out.append(Recording(rec.subject, rec.session, data, rec.tr, meta, rec.frame_labels))
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


def peek_file(path: str | Path, *, key: str | None = None) -> tuple[tuple[int, ...], float | None]:
    """Stored shape and header TR (seconds; NIfTI only, else ``None``) of a file.

    Reads only the header where the format allows it (NIfTI, ``.npy``, ``.mat``).
    """
    path = Path(path)
    suffix = file_suffix(path)
    if suffix in NIFTI_SUFFIXES:
        img = _load_nifti(path)
        return tuple(int(n) for n in img.shape), nifti_tr(img)
    if suffix == ".npy":
        try:
            return tuple(np.load(path, mmap_mode="r", allow_pickle=False).shape), None
        except _CORRUPT_FILE_ERRORS as exc:
            raise DataError(f"{path}: unreadable .npy file ({exc})") from None
    if suffix == ".mat":
        import scipy.io

        try:
            variables = {name: shape for name, shape, _ in scipy.io.whosmat(path)}
        except (*_CORRUPT_FILE_ERRORS, NotImplementedError, scipy.io.matlab.MatReadError) as exc:
            raise DataError(f"{path}: unreadable MATLAB file ({exc})") from None
        if key is None and len(variables) == 1:
            key = next(iter(variables))
        if key not in variables:
            raise DataError(f"{path}: no variable {key!r}; the file holds {sorted(variables)}")
        return tuple(int(n) for n in variables[key]), None
    return read_table(path)[0].shape, None
