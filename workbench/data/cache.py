"""Runs cached as ``.npy`` files and read through memory maps, so cohorts larger than RAM stream.

:func:`memmap_recordings` writes each run once (atomically) and returns Recordings whose
``data`` are read-only memory maps; :func:`release_pages` drops the pages a read touched from
the process's resident set after every gather, so the resident memory of a process iterating
windows stays bounded by a batch (``bench/windows_memory.py`` and ``bench/memory_scaling.py``
measure it). :class:`RunCollector` is what ``load_recordings`` reads a dataset into: runs stay
in memory while the dataset is small and go to the cache one at a time once it is larger than
:func:`stream_threshold` (or always, when streaming is asked for).

A cached run is checked before it is used: its size against its dtype and shape every time,
and its content against the run it caches (the blake2b digest the default file name carries)
the first time a process opens it, again whenever the file changes (size, mtime or inode). A
run this process has just written counts as checked. A file that fails is refused with a
:class:`DataError`, never read silently. A cache that cannot be written (read-only, full disk)
is a :class:`DataError` naming the folder and ``$WORKBENCH_CACHE``.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from workbench.data.recording import Recording
from workbench.errors import ConfigError, DataError
from workbench.files import CACHE_ENV, atomic_path

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)
_STREAMED_RUNS = "the runs of a streamed dataset (--stream; --no-stream keeps them in memory)"
# Cached run -> (size, mtime_ns, inode) when this process last found it whole and matching.
_CHECKED: dict[Path, tuple[int, int, int]] = {}


def release_pages(data: np.ndarray) -> None:
    """Drop the pages of a shared memory map from this process's resident set.

    The file stays in the kernel's page cache; only this process's mapping of it is
    cleared, so the next read faults the pages back in cheaply. Maps opened ``"r"``, ``"r+"``
    or ``"w+"`` are shared with the file (written pages are kept by the page cache and
    written back), so nothing can be lost; copy-on-write maps (``"c"``) are left alone.
    """
    if not isinstance(data, np.memmap) or data.mode == "c" or not hasattr(mmap, "MADV_DONTNEED"):
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


def cache_write_error(exc: OSError, folder: Path, what: str) -> DataError | None:
    """The :class:`DataError` for a write into the cache folder ``folder`` that failed with ``exc``.

    A full disk (or quota) and a folder that cannot be written are the user's to fix: the message
    names the folder and ``$WORKBENCH_CACHE``. Any other error gives ``None`` (the caller re-raises it).
    """
    if exc.errno in _DISK_FULL:
        return DataError(
            f"the disk holding {folder} is full ({exc.strerror}) while writing {what}; nothing half-written was "
            f"kept. Free space there, or set ${CACHE_ENV} to a folder on a disk with room"
        )
    if exc.errno in _NOT_WRITABLE:
        return DataError(
            f"cannot write {what} into {folder} ({exc.strerror}). Make the folder writable, or set ${CACHE_ENV} "
            "to a writable folder"
        )
    return None


@contextmanager
def writing_into(folder: Path, what: str) -> Iterator[None]:
    """Turn a read-only cache or a full disk met inside the block into :func:`cache_write_error`."""
    try:
        yield
    except OSError as exc:
        error = cache_write_error(exc, folder, what)
        if error is None:
            raise
        raise error from None


def _stamp(path: Path) -> tuple[int, int, int]:
    status = path.stat()
    return status.st_size, status.st_mtime_ns, status.st_ino


def _open_checked(path: Path, source: np.ndarray, digest: str | None) -> np.memmap:
    """Map the cached run ``path`` of ``source`` after checking its size and, once per file version, its content.

    ``digest`` is :func:`_content_hash` of ``source`` when already known (the default file name).
    """
    try:
        data = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise DataError(f"cached run {path} is unreadable ({exc}); delete it to rebuild") from None
    if data.shape != source.shape or data.dtype != source.dtype:
        raise DataError(
            f"cached run {path} holds {data.dtype}{data.shape}, expected {source.dtype}{source.shape}; "
            "delete it to rebuild"
        )
    stamp = _stamp(path)
    if stamp[0] != data.offset + data.nbytes:
        raise DataError(
            f"cached run {path} has {stamp[0]} bytes, {data.offset + data.nbytes} for its {data.dtype}{data.shape}; "
            "it changed after it was written: delete it to rebuild"
        )
    if _CHECKED.get(path) != stamp:
        matches = _content_hash(data) == (digest or _content_hash(source))
        release_pages(data)
        if not matches:
            raise DataError(
                f"cached run {path} does not hold the run it caches (its content digest differs); it changed after "
                "it was written: delete it to rebuild"
            )
        _CHECKED[path] = stamp
    return data


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
        ``np.load(file, mmap_mode="r")``. Existing files are reused, never rewritten, once checked
        (see the module docstring); new files appear atomically (temporary file, then ``os.replace``).

    Raises
    ------
    DataError
        A cached file is unreadable, of another size or content than its run, or the cache
        folder cannot be written (read-only, full disk).
    """
    cache_dir = Path(cache_dir)
    with writing_into(cache_dir, _STREAMED_RUNS):
        cache_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for rec in recordings:
        tag = _safe(key(rec)) if key is not None else _content_hash(rec.data)
        shape = "x".join(str(s) for s in rec.data.shape)
        path = cache_dir / f"{_safe(rec.subject)}_{_safe(rec.session)}_{shape}_{rec.data.dtype.str[1:]}_{tag}.npy"
        if not path.exists():
            with writing_into(cache_dir, _STREAMED_RUNS), atomic_path(path) as tmp, open(tmp, "wb") as stream:
                np.save(stream, rec.data)
            _CHECKED[path] = _stamp(path)
        data = _open_checked(path, rec.data, tag if key is None else None)
        meta = {**rec.meta, "cache_file": str(path)}
        out.append(Recording(rec.subject, rec.session, data, rec.tr, meta, rec.frame_labels))
    return out


STREAM_BYTES_ENV = "WORKBENCH_STREAM_BYTES"
DEFAULT_STREAM_BYTES = 2 * 1024**3


def stream_threshold() -> int:
    """Bytes of run data above which a dataset is memory-mapped instead of held in memory.

    ``$WORKBENCH_STREAM_BYTES`` (a whole number of bytes, e.g. ``500000000``) or 2 GiB.
    """
    raw = os.environ.get(STREAM_BYTES_ENV)
    if raw is None:
        return DEFAULT_STREAM_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(f"${STREAM_BYTES_ENV}={raw!r} must be a whole number of bytes >= 0, e.g. 2000000000")
    return value


class RunCollector:
    """Gathers a dataset's runs, memory-mapping them once the dataset is large.

    Parameters
    ----------
    cache_dir : str or Path
        Where :func:`memmap_recordings` writes the runs.
    stream : bool, optional
        ``True``: every run goes to the cache as soon as it is added, so at most one run is in
        memory at a time; ``False``: every run stays in memory; ``None`` (default): runs stay in
        memory until their bytes exceed ``threshold``, then those and every later run are mapped.
    threshold : int, optional
        Default :func:`stream_threshold`.

    Attributes
    ----------
    runs : list of Recording
        The runs added so far, in order.
    streaming : bool
        Whether the runs are memory maps.
    """

    def __init__(self, cache_dir: str | Path, stream: bool | None = None, threshold: int | None = None) -> None:
        self.cache_dir = Path(cache_dir)
        self.stream = stream
        self.threshold = stream_threshold() if threshold is None else int(threshold)
        self.streaming = bool(stream)
        self.runs: list[Recording] = []
        self._nbytes = 0

    def store(self, recording: Recording) -> Recording:
        """The recording as this collector keeps it: a memory map when streaming, else itself."""
        return memmap_recordings([recording], self.cache_dir)[0] if self.streaming else recording

    def add(self, recordings: Iterable[Recording]) -> None:
        """Append runs (consumed one at a time)."""
        for rec in recordings:
            self.runs.append(self.store(rec))
            self._nbytes += int(rec.data.nbytes)
            if not self.streaming and self.stream is None and self._nbytes > self.threshold:
                self.streaming = True
                self.runs = memmap_recordings(self.runs, self.cache_dir)


__all__ = [
    "CACHE_ENV",
    "DEFAULT_STREAM_BYTES",
    "STREAM_BYTES_ENV",
    "RunCollector",
    "cache_write_error",
    "memmap_recordings",
    "release_pages",
    "stream_threshold",
    "writing_into",
]
