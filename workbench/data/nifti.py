"""4-D NIfTI runs: read with nibabel (guarded against crafted headers), reduced to ROI series with nilearn.

Constant voxels are normal in volumes (the background outside the brain) and kept; only a run
in which every voxel is constant is rejected. A header whose shape claims more voxels than the
file can hold, than this machine's memory or than a file may unpack to
(:func:`~workbench.data.formats.max_read_bytes`) is refused before anything is allocated; so are
atlas and mask images.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from workbench.data.formats import CORRUPT_FILE_ERRORS, GZIP_MAX_RATIO, check_read_size
from workbench.data.validate import ConstantPolicy, check_finite, check_length, check_roi_series
from workbench.errors import DataError

_TR_UNIT_SECONDS = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6, "unknown": 1.0}


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not every platform reports it
        return 1 << 40


def check_claimed_size(img: Any, path: Path) -> None:
    """DataError when the header's shape cannot be real or is too large to read.

    Refused before anything is allocated: more bytes than the file holds (``.nii``) or than a
    gzip file of its size can inflate to (``.nii.gz``, at most ~1032 times its size), more than
    this machine's memory, or more than a file may unpack to (:func:`~workbench.data.formats.max_read_bytes`).
    """
    shape = tuple(int(n) for n in img.shape)
    voxels = math.prod(shape)
    as_float32 = voxels * 4
    stored = voxels * img.header.get_data_dtype().itemsize + int(img.header.get_data_offset())
    size = path.stat().st_size
    compressed = not str(path).lower().endswith(".nii")
    if not compressed and stored > size:
        raise DataError(
            f"{path}: the header claims shape {shape} ({stored / 1e6:.1f} MB) but the file holds "
            f"{size / 1e6:.1f} MB; the file is truncated or its header is wrong"
        )
    if as_float32 > _memory_bytes():
        raise DataError(
            f"{path}: the header claims shape {shape}, {as_float32 / 1e9:.1f} GB as float32, more than this "
            "machine's memory; the header is corrupt, or the run must be cropped or resampled first"
        )
    if compressed and stored > size * GZIP_MAX_RATIO:
        raise DataError(
            f"{path}: the header claims shape {shape} ({stored / 1e6:.1f} MB) but a gzip file of {size / 1e6:.3f} MB "
            f"inflates to at most {size * GZIP_MAX_RATIO / 1e6:.1f} MB; the file is truncated or its header is wrong"
        )
    check_read_size(max(stored, as_float32), path, f"shape {shape} as float32")


def load_nifti(path: Path) -> Any:
    import nibabel as nib

    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        return nib.load(path)
    except (*CORRUPT_FILE_ERRORS, nib.filebasedimages.ImageFileError) as exc:
        raise DataError(f"{path}: unreadable or corrupt NIfTI file ({exc})") from None


def load_checked(path: Path) -> Any:
    """:func:`load_nifti` and :func:`check_claimed_size`: an image whose data can be read safely."""
    img = load_nifti(path)
    check_claimed_size(img, path)
    return img


def nifti_tr(img: Any) -> float | None:
    """Repetition time in seconds from a NIfTI header (``pixdim[4]``), or ``None`` if unset.

    Converts ``msec``/``usec`` units; an ``unknown`` time unit is read as seconds.
    """
    zooms = img.header.get_zooms()
    if len(zooms) < 4 or not zooms[3] > 0:
        return None
    unit = img.header.get_xyzt_units()[1]
    return float(zooms[3]) * _TR_UNIT_SECONDS.get(unit, 1.0)


def read_run(path: Path, min_timepoints: int) -> tuple[Any, np.ndarray]:
    img = load_nifti(path)
    if len(img.shape) != 4:
        raise DataError(f"{path}: expected a 4-D (X, Y, Z, T) image, got shape {img.shape}")
    check_claimed_size(img, path)
    try:
        volumes = img.get_fdata(dtype=np.float32)
    except CORRUPT_FILE_ERRORS as exc:
        raise DataError(f"{path}: truncated or corrupt NIfTI data ({exc})") from None
    check_length(volumes.shape[3], path, min_timepoints)
    check_finite(volumes, path)
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
    img, volumes = read_run(Path(path), min_timepoints)
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
    img, volumes = read_run(Path(path), min_timepoints)
    if labels_img is not None:
        masker = NiftiLabelsMasker(labels_img=load_checked(Path(labels_img)))
    else:
        masker = NiftiMasker(mask_img=load_checked(Path(mask_img)))
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


def mask_grid(mask_img: Path, path: Path, n_voxels: int) -> dict[str, Any]:
    """``grid`` and boolean ``mask`` of a mask image, when they describe the extracted voxels."""
    image = load_checked(mask_img)
    mask = np.asarray(image.dataobj) != 0
    run_grid = tuple(int(n) for n in load_nifti(path).shape[:3])
    if mask.shape != run_grid or int(mask.sum()) != n_voxels:  # nilearn resampled the mask: no grid
        return {}
    return {"grid": run_grid, "mask": mask}


__all__ = [
    "check_claimed_size",
    "extract_roi_series",
    "load_checked",
    "load_nifti",
    "mask_grid",
    "nifti_tr",
    "read_nifti_4d",
    "read_run",
]
