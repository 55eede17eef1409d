"""Runs cached as ``.npy`` files and read through memory maps, so cohorts larger than RAM stream.

:func:`memmap_recordings` writes each run once (atomically) and returns Recordings whose
``data`` are read-only memory maps; :func:`release_pages` drops the pages a read touched from
the process's resident set after every gather, so the resident memory of a process iterating
windows stays bounded by a batch (``bench/windows_memory.py`` and ``bench/memory_scaling.py``
measure it). :class:`RunCollector` is what ``load_recordings`` reads a dataset into: runs stay
in memory while the dataset is small and go to the cache one at a time once it is larger than
:func:`stream_threshold` (or always, when streaming is asked for).
"""

from __future__ import annotations

import hashlib
import mmap
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from workbench.data.recording import Recording
from workbench.errors import ConfigError, DataError
from workbench.files import atomic_path


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
    "DEFAULT_STREAM_BYTES",
    "STREAM_BYTES_ENV",
    "RunCollector",
    "memmap_recordings",
    "release_pages",
    "stream_threshold",
]
