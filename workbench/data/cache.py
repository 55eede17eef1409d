"""Runs cached as ``.npy`` files and read through memory maps, so cohorts larger than RAM stream.

:func:`memmap_recordings` writes each run once (atomically) and returns Recordings whose
``data`` are read-only memory maps; :func:`release_pages` drops the pages a read touched from
the process's resident set after every gather, so the resident memory of a process iterating
windows stays bounded by a batch (``bench/windows_memory.py`` measures it).
"""

from __future__ import annotations

import hashlib
import mmap
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from workbench.data.recording import Recording
from workbench.errors import DataError
from workbench.files import atomic_path


def release_pages(data: np.ndarray) -> None:
    """Drop the pages of a read-only memory map from this process's resident set.

    The file stays in the kernel's page cache; only this process's mapping of it is
    cleared, so the next read faults the pages back in cheaply. Read-only maps
    (``mode="r"``) are shared, so nothing can be lost.
    """
    if not isinstance(data, np.memmap) or data.mode != "r" or not hasattr(mmap, "MADV_DONTNEED"):
        return
    base = data.base
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    if base is not None and not base.closed:
        base.madvise(mmap.MADV_DONTNEED)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def _content_hash(data: np.ndarray, chunk_frames: int = 4096) -> str:
    """blake2b of dtype, shape and bytes, streamed along the first axis."""
    digest = hashlib.blake2b(f"{data.dtype.str}{data.shape}".encode(), digest_size=8)
    for lo in range(0, max(data.shape[0], 1), chunk_frames):
        digest.update(np.ascontiguousarray(data[lo : lo + chunk_frames]).tobytes())
    return digest.hexdigest()


def memmap_recordings(
    recordings: Iterable[Recording],
    cache_dir: str | Path,
    key: Callable[[Recording], str] | None = None,
) -> list[Recording]:
    """Cache each run as ``.npy`` under ``cache_dir`` and return memory-mapped Recordings.

    Parameters
    ----------
    recordings : iterable of Recording
        Consumed one at a time, so a generator that synthesises or reads one run at
        a time never holds the cohort in memory.
    cache_dir : str or Path
        Created if missing.
    key : callable, optional
        ``key(recording) -> str`` naming the cached file; it must change whenever
        the content does. Default: a blake2b hash of the data.

    Returns
    -------
    list of Recording
        Same subject, session, tr, frame labels and meta (plus ``meta["cache_file"]``); ``data`` is
        ``np.load(file, mmap_mode="r")``. Existing files are reused, never rewritten;
        new files appear atomically (temporary file, then ``os.replace``).
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for rec in recordings:
        tag = _safe(key(rec)) if key is not None else _content_hash(rec.data)
        shape = "x".join(str(s) for s in rec.data.shape)
        path = cache_dir / f"{_safe(rec.subject)}_{_safe(rec.session)}_{shape}_{rec.data.dtype.str[1:]}_{tag}.npy"
        if not path.exists():
            with atomic_path(path) as tmp, open(tmp, "wb") as stream:
                np.save(stream, rec.data)
        try:
            data = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise DataError(f"cached run {path} is unreadable ({exc}); delete it to rebuild") from None
        if data.shape != rec.data.shape or data.dtype != rec.data.dtype:
            raise DataError(
                f"cached run {path} holds {data.dtype}{data.shape}, expected {rec.data.dtype}{rec.data.shape}; "
                "delete it to rebuild"
            )
        meta = {**rec.meta, "cache_file": str(path)}
        out.append(Recording(rec.subject, rec.session, data, rec.tr, meta, rec.frame_labels))
    return out


__all__ = ["memmap_recordings", "release_pages"]
