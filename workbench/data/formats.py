"""The file formats the readers know, the errors a truncated or corrupt file raises while read, and size guards.

Size guards
-----------
No file may unpack to more than :func:`max_read_bytes` in memory (``$WORKBENCH_MAX_READ_BYTES``,
default 2 GiB): the readers compare what a header claims (a ``.npy`` shape, a NIfTI shape) and
what a MATLAB file's compressed variables inflate to (counted in a stream, never held) with it
before any array is allocated.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

from workbench.errors import ConfigError, DataError

SUPPORTED_SUFFIXES = (".nii.gz", ".nii", ".npy", ".csv", ".tsv", ".mat")
NIFTI_SUFFIXES = (".nii.gz", ".nii")
# Errors the readers raise on truncated or corrupt files (zlib.error is not an OSError).
CORRUPT_FILE_ERRORS = (OSError, EOFError, zlib.error, ValueError, IndexError)
MAX_READ_BYTES_ENV = "WORKBENCH_MAX_READ_BYTES"
DEFAULT_MAX_READ_BYTES = 2 * 1024**3
GZIP_MAX_RATIO = 1032  # deflate never inflates one byte into more than about 1032
_CHUNK = 1 << 20
_MAT_COMPRESSED = 15  # miCOMPRESSED: a zlib stream holding one variable
# What a file really is, from its first bytes (checked in this order).
_SIGNATURES = (
    (b"\x93NUMPY", "a .npy array"),
    (b"PK\x03\x04", "a zip archive (a .npz file holds several arrays in one zip)"),
    (b"PK\x05\x06", "an empty zip archive"),
    (b"\x1f\x8b", "a gzip-compressed file"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (MATLAB v7.3 saves .mat files as HDF5)"),
    (b"MATLAB 5.0 MAT-file", "a MATLAB .mat file"),
)


def file_suffix(path: str | Path) -> str:
    """Supported suffix of ``path`` (``".nii.gz"`` counts as one), or ``""``."""
    name = Path(path).name.lower()
    return next((s for s in SUPPORTED_SUFFIXES if name.endswith(s)), "")


def file_stem(path: str | Path) -> str:
    """File name without its supported suffix (``sub-01_bold.nii.gz`` -> ``sub-01_bold``)."""
    name = Path(path).name
    return name[: len(name) - len(file_suffix(name))] if file_suffix(name) else Path(name).stem


def file_kind(path: Path) -> str:
    """What the first bytes of ``path`` say it is (``"a zip archive ..."``), or ``"of unknown format"``."""
    with open(path, "rb") as stream:
        head = stream.read(32)
    if len(head) >= 4 and 348 in struct.unpack("<i", head[:4]) + struct.unpack(">i", head[:4]):
        return "a NIfTI-1 image"
    return next((kind for signature, kind in _SIGNATURES if head.startswith(signature)), "of unknown format")


def max_read_bytes() -> int:
    """Most bytes one file may unpack to: ``$WORKBENCH_MAX_READ_BYTES`` (whole bytes, e.g. ``8000000000``) or 2 GiB."""
    raw = os.environ.get(MAX_READ_BYTES_ENV)
    if raw is None:
        return DEFAULT_MAX_READ_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"${MAX_READ_BYTES_ENV}={raw!r} must be a whole number of bytes >= 1, e.g. 8000000000")
    return value


def _too_large(path: str | Path, claim: str) -> DataError:
    return DataError(
        f"{path}: {claim} more than a file may unpack to ({max_read_bytes() / 1e6:,.0f} MB); the file is corrupt "
        f"or crafted, or, if it really is that large, set ${MAX_READ_BYTES_ENV} to a larger number of bytes"
    )


def check_read_size(n_bytes: int, path: str | Path, what: str) -> None:
    """DataError when ``n_bytes`` (what reading ``path`` would take in memory) exceed :func:`max_read_bytes`."""
    if n_bytes > max_read_bytes():
        raise _too_large(path, f"{what} takes {n_bytes / 1e6:,.0f} MB in memory,")


def _inflated_size(stream, n_compressed: int, budget: int) -> int:
    """Bytes the zlib stream of the next ``n_compressed`` bytes inflates to, counted up to just above ``budget``."""
    inflater = zlib.decompressobj()
    inflated = 0
    remaining = n_compressed
    while remaining > 0 and not inflater.eof:
        data = stream.read(min(_CHUNK, remaining))
        if not data:
            break
        remaining -= len(data)
        while data and inflated <= budget:
            inflated += len(inflater.decompress(data, _CHUNK))
            data = inflater.unconsumed_tail
        if inflated > budget:
            break
    return inflated


def mat_unpacked_bytes(path: Path) -> int:
    """Bytes a MATLAB v5 file holds once its compressed variables are inflated (counted up to the cap).

    The compressed variables are inflated in a stream of 1 MB steps and nothing is kept, so a zlib
    bomb costs time up to the cap, never memory. Files of other MATLAB versions count their size.
    """
    size = path.stat().st_size
    cap = max_read_bytes()
    with open(path, "rb") as stream:
        header = stream.read(128)
        order = {b"IM": "<", b"MI": ">"}.get(header[126:128])
        if order is None:
            return size
        total = size
        while total <= cap and len(tag := stream.read(8)) == 8:
            mdtype, n_bytes = struct.unpack(order + "II", tag)
            if mdtype >> 16:  # a small element: type and size in 4 bytes, its data in the other 4
                continue
            start = stream.tell()
            if mdtype == _MAT_COMPRESSED:
                total += _inflated_size(stream, n_bytes, cap - total)
            stream.seek(start + n_bytes)
    return total


def check_mat_size(path: Path) -> None:
    """DataError when a MATLAB file's variables inflate beyond :func:`max_read_bytes` (a zlib bomb)."""
    if mat_unpacked_bytes(path) > max_read_bytes():
        raise _too_large(path, "its compressed variables inflate to")


def check_inside(path: Path, folder: Path, fix: str) -> None:
    """DataError when ``path`` leads (through symbolic links) to a file outside ``folder``; nothing of it is read."""
    target = path.resolve()
    if not target.is_relative_to(folder.resolve()):
        raise DataError(f"{path}: a link to {target}, outside the data folder {folder}; it is not read. {fix}")


__all__ = [
    "CORRUPT_FILE_ERRORS",
    "DEFAULT_MAX_READ_BYTES",
    "GZIP_MAX_RATIO",
    "MAX_READ_BYTES_ENV",
    "NIFTI_SUFFIXES",
    "SUPPORTED_SUFFIXES",
    "check_inside",
    "check_mat_size",
    "check_read_size",
    "file_kind",
    "file_stem",
    "file_suffix",
    "mat_unpacked_bytes",
    "max_read_bytes",
]
