"""The file formats the readers know, and the errors a truncated or corrupt file raises while read."""

from __future__ import annotations

import zlib
from pathlib import Path

SUPPORTED_SUFFIXES = (".nii.gz", ".nii", ".npy", ".csv", ".tsv", ".mat")
NIFTI_SUFFIXES = (".nii.gz", ".nii")
# Errors the readers raise on truncated or corrupt files (zlib.error is not an OSError).
CORRUPT_FILE_ERRORS = (OSError, EOFError, zlib.error, ValueError, IndexError)


def file_suffix(path: str | Path) -> str:
    """Supported suffix of ``path`` (``".nii.gz"`` counts as one), or ``""``."""
    name = Path(path).name.lower()
    return next((s for s in SUPPORTED_SUFFIXES if name.endswith(s)), "")


def file_stem(path: str | Path) -> str:
    """File name without its supported suffix (``sub-01_bold.nii.gz`` -> ``sub-01_bold``)."""
    name = Path(path).name
    return name[: len(name) - len(file_suffix(name))] if file_suffix(name) else Path(name).stem


__all__ = ["CORRUPT_FILE_ERRORS", "NIFTI_SUFFIXES", "SUPPORTED_SUFFIXES", "file_stem", "file_suffix"]
