"""Windows over ROI series: temporal splits without overlap, train-only z-scoring, memory maps.

A window is ``length`` consecutive frames of one run. Evaluation draws support
windows from the first part of each run and query windows from the second
(``part="first"`` / ``"second"``, cut at ``round(T * split)``); no window crosses the
cut, so the two never share a frame. :func:`assert_disjoint` checks this for any two
sets. :class:`Standardizer` learns per-ROI statistics from training windows only.
:func:`memmap_recordings` caches runs as ``.npy`` files read through memory maps, and
reads release the mapped pages again, so a cohort larger than RAM streams through a
process whose resident memory stays bounded by a batch.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import re
import tempfile
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from workbench.data.recording import Recording
from workbench.errors import CheckpointError, ConfigError, DataError

PARTS = ("first", "second", "all")


def window_starts(
    n_timepoints: int, length: int, stride: int, part: str = "all", split: float = 0.5
) -> np.ndarray:
    """Start frames of the windows that fit entirely inside one temporal part of a run.

    Parameters
    ----------
    n_timepoints : int
        Frames ``T`` of the run.
    length, stride : int
        Window length and step between starts, in frames (>= 1).
    part : {"first", "second", "all"}
        ``[0, cut)``, ``[cut, T)`` or ``[0, T)`` with ``cut = round(T * split)``.
    split : float
        Fraction of the run in the first part, strictly between 0 and 1.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` int64 starts, possibly empty.
    """
    for name, value in (("n_timepoints", n_timepoints), ("length", length), ("stride", stride)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ConfigError(f"window {name} must be an integer number of frames, got {value!r}")
    if length < 1 or stride < 1:
        raise ConfigError(f"window length and stride must be >= 1, got length={length}, stride={stride}")
    if part not in PARTS:
        raise ConfigError(f"unknown window part {part!r}; choose one of {list(PARTS)}")
    if not 0.0 < split < 1.0:
        raise ConfigError(f"window split must lie strictly between 0 and 1, got {split}")
    cut = int(round(n_timepoints * split))
    low, high = {"first": (0, cut), "second": (cut, n_timepoints), "all": (0, n_timepoints)}[part]
    return np.arange(low, high - length + 1, stride, dtype=np.int64)


def _release_pages(data: np.ndarray) -> None:
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


def _check_roi_series(recordings: list[Recording]) -> int:
    """Validate that every recording is a ``(T, R)`` series with one common R; return R."""
    if not recordings:
        raise DataError("no recordings were given to window; check the catalog entry or subject filter")
    first = recordings[0]
    for rec in recordings:
        if rec.data.ndim != 2:
            raise DataError(
                f"recording {rec.subject}/{rec.session} has data of shape {rec.data.shape}; windows are "
                "for (T, R) ROI series — extract ROI time series from volumes first"
            )
        if rec.data.shape[1] != first.data.shape[1]:
            raise DataError(
                f"recordings disagree on the number of ROIs: {first.subject}/{first.session} has "
                f"{first.data.shape[1]}, {rec.subject}/{rec.session} has {rec.data.shape[1]}; "
                "use one parcellation for all runs"
            )
    return int(first.data.shape[1])


class WindowSet:
    """All windows of one temporal part over a list of ROI-series recordings.

    Parameters
    ----------
    recordings : list of Recording
        Runs with data ``(T, R)`` (arrays or memory maps) and a common ``R``.
    length, stride : int
        Window length ``W`` and step, in frames.
    part, split
        Temporal part, see :func:`window_starts`.
    subjects : list of str, optional
        The label space: ``labels`` index into it. Defaults to the sorted unique
        subjects of ``recordings``; give it to share labels between sets.

    Attributes
    ----------
    rec_index, starts, labels : numpy.ndarray
        ``(n,)`` int64: recording of each window, its first frame and its subject label.
    """

    def __init__(
        self,
        recordings: list[Recording],
        length: int,
        stride: int,
        part: str = "all",
        split: float = 0.5,
        subjects: list[str] | None = None,
    ) -> None:
        self.recordings = list(recordings)
        self.n_rois = _check_roi_series(self.recordings)
        self.length, self.stride, self.part, self.split = int(length), int(stride), part, float(split)
        present = sorted({rec.subject for rec in self.recordings})
        if subjects is None:
            self.subjects = present
        else:
            self.subjects = list(subjects)
            if len(set(self.subjects)) != len(self.subjects):
                raise ConfigError(f"subjects list has duplicates: {self.subjects}")
            missing = sorted(set(present) - set(self.subjects))
            if missing:
                raise DataError(f"recordings of subjects {missing} are not in the given subjects list")
        label_of = {subject: i for i, subject in enumerate(self.subjects)}
        per_recording = [
            window_starts(rec.n_timepoints, self.length, self.stride, part, self.split)
            for rec in self.recordings
        ]
        counts = np.array([len(s) for s in per_recording], dtype=np.int64)
        if counts.sum() == 0:
            shortest = min(rec.n_timepoints for rec in self.recordings)
            raise DataError(
                f"no window of length {self.length} fits in part {part!r} (split {self.split}) of any "
                f"recording (the shortest run has {shortest} frames); lower the window length or use part='all'"
            )
        self.rec_index = np.repeat(np.arange(len(self.recordings), dtype=np.int64), counts)
        self.starts = np.concatenate(per_recording)
        rec_labels = np.array([label_of[rec.subject] for rec in self.recordings], dtype=np.int64)
        self.labels = rec_labels[self.rec_index]
        self._run_lengths = np.array([rec.n_timepoints for rec in self.recordings], dtype=np.int64)

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    def get(self, idx: np.ndarray | slice | int) -> np.ndarray:
        """Copy the requested windows out of their recordings.

        Parameters
        ----------
        idx : int, slice or array of int
            Window indices.

        Returns
        -------
        numpy.ndarray
            float32 ``(n, W, R)`` for a slice or an array, ``(W, R)`` for an int
            (numpy indexing rules). Only the requested frames are read.
        """
        single = np.ndim(idx) == 0 and not isinstance(idx, slice)
        chosen = np.atleast_1d(np.arange(len(self))[idx])
        rec_index, starts = self.rec_index[chosen], self.starts[chosen]
        out = np.empty((len(chosen), self.length, self.n_rois), dtype=np.float32)
        offsets = np.arange(self.length)
        order = np.argsort(rec_index, kind="stable")
        bounds = np.flatnonzero(np.diff(rec_index[order])) + 1
        for group in np.split(order, bounds) if len(order) else []:  # one gather per recording touched
            data = self.recordings[rec_index[group[0]]].data
            out[group] = data[starts[group][:, None] + offsets]
            _release_pages(data)
        return out[0] if single else out

    def time_in_run(self) -> np.ndarray:
        """``(n,)`` window centre divided by the run length, in [0, 1]."""
        return (self.starts + self.length / 2.0) / self._run_lengths[self.rec_index]

    def subset(self, subjects: list[str]) -> WindowSet:
        """The windows of ``subjects`` only, with labels indexing into ``subjects``."""
        unknown = sorted(set(subjects) - set(self.subjects))
        if unknown:
            raise DataError(f"subjects {unknown} are not in this window set; known: {self.subjects}")
        wanted = set(subjects)
        chosen = [rec for rec in self.recordings if rec.subject in wanted]
        return WindowSet(chosen, self.length, self.stride, self.part, self.split, subjects=list(subjects))

    def spans(self) -> np.ndarray:
        """``(n, 3)`` int64 rows ``(rec_index, start, stop)``, stop exclusive."""
        return np.stack([self.rec_index, self.starts, self.starts + self.length], axis=1)


def assert_disjoint(a: WindowSet, b: WindowSet) -> None:
    """Raise DataError if a window of ``a`` shares a frame with a window of ``b``.

    Runs are matched by ``(subject, session)``, so two sets built from different
    copies of the same run (e.g. before and after :func:`memmap_recordings`) are
    still compared. Vectorised: ``b``'s windows are sorted by (run, start); since
    they share one length, the last one starting before a window of ``a`` ends is
    the one reaching furthest, and it overlaps iff it ends after that window starts.
    """
    keys = {}
    for rec in a.recordings + b.recordings:
        keys.setdefault((rec.subject, rec.session), len(keys))
    code_a = np.array([keys[(r.subject, r.session)] for r in a.recordings], dtype=np.int64)[a.rec_index]
    code_b = np.array([keys[(r.subject, r.session)] for r in b.recordings], dtype=np.int64)[b.rec_index]
    span = int(max(a.starts.max() + a.length, b.starts.max() + b.length)) + 1
    sorted_b = np.sort(code_b * span + b.starts)
    a_stop = a.starts + a.length
    pos = np.searchsorted(sorted_b, code_a * span + a_stop, side="left") - 1
    prev = sorted_b[np.maximum(pos, 0)]
    overlap = (pos >= 0) & (prev // span == code_a) & (prev % span + b.length > a.starts)
    if overlap.any():
        i = int(np.flatnonzero(overlap)[0])
        rec = a.recordings[a.rec_index[i]]
        b_start = int(prev[i] % span)
        raise DataError(
            f"{int(overlap.sum())} window(s) overlap between the two sets, e.g. run {rec.subject}/"
            f"{rec.session} frames [{a.starts[i]}, {a_stop[i]}) and [{b_start}, {b_start + b.length}); "
            "build them from different parts (part='first' / 'second') of each run"
        )


def _covered_frames(windows: WindowSet, r: int) -> np.ndarray:
    """Indices of the frames of recording ``r`` covered by at least one window (each once)."""
    starts = windows.starts[windows.rec_index == r]
    depth = np.zeros(windows.recordings[r].n_timepoints + 1, dtype=np.int64)
    np.add.at(depth, starts, 1)
    np.add.at(depth, starts + windows.length, -1)
    return np.flatnonzero(np.cumsum(depth[:-1]) > 0)


WINDOW_NORMS = ("none", "demean", "zscore")


class Standardizer:
    """Per-ROI z-scoring whose statistics come from training windows only, then per-window scaling.

    ``mean_`` and ``std_`` (population std, ``ddof=0``) are computed in float64 over
    the union of the frames the training windows cover, each frame counted once,
    streaming one recording at a time (Chan et al. 1979 pairwise update), so fitting
    on a memory-mapped cohort never loads it whole.

    Parameters
    ----------
    window_norm : {"none", "demean", "zscore"}
        Applied after the global z-score to every window ``(..., W, R)`` on its own:
        remove each ROI's mean over the window's frames (``demean``) and also divide by
        its standard deviation (``zscore``). This instance normalisation uses no other
        window, so it cannot leak; it removes per-run offsets and gains (scanner drift,
        the baseline of unprocessed BOLD) that otherwise identify a run trivially.
        A ROI constant within a window becomes zeros.
    """

    chunk_frames = 8192

    def __init__(self, window_norm: str = "none") -> None:
        if window_norm not in WINDOW_NORMS:
            raise ConfigError(f"window_norm={window_norm!r}: choose one of {list(WINDOW_NORMS)}")
        self.window_norm = window_norm
        self.mean_: np.ndarray | None = None
        self.std_: np.ndarray | None = None

    def fit(self, windows: WindowSet) -> Standardizer:
        """Fit on the frames covered by ``windows``; DataError names a constant ROI."""
        count, mean, m2 = 0, np.zeros(windows.n_rois), np.zeros(windows.n_rois)
        for r in np.unique(windows.rec_index):
            frames = _covered_frames(windows, int(r))
            data = windows.recordings[r].data
            for lo in range(0, len(frames), self.chunk_frames):
                block = np.asarray(data[frames[lo : lo + self.chunk_frames]], dtype=np.float64)
                n_b, mean_b = block.shape[0], block.mean(axis=0)
                m2_b = ((block - mean_b) ** 2).sum(axis=0)
                delta, total = mean_b - mean, count + n_b
                mean = mean + delta * (n_b / total)
                m2 = m2 + m2_b + delta**2 * (count * n_b / total)
                count = total
            _release_pages(data)
        std = np.sqrt(m2 / count)
        bad = ~np.isfinite(std) | (std <= np.finfo(np.float32).eps * np.maximum(np.abs(mean), 1e-30))
        if bad.any():
            roi = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"ROI {roi} is constant or non-finite over the training windows (mean {mean[roi]:.6g}, "
                f"std {std[roi]:.3g}); drop that ROI or fix the recording"
            )
        self.mean_, self.std_ = mean, std
        return self

    def transform(self, x: np.ndarray, copy: bool = True) -> np.ndarray:
        """Z-score ``x`` of shape ``(..., R)`` (then each window over axis ``-2``, see
        ``window_norm``); returns float32 of the same shape.

        With ``copy=False`` and ``window_norm="none"`` a writeable float32 ``x`` is overwritten
        (no new array).
        """
        if self.mean_ is None or self.std_ is None:
            raise ConfigError("Standardizer is not fitted; call fit(training_windows) first")
        if x.shape[-1] != self.mean_.shape[0]:
            raise DataError(f"data has {x.shape[-1]} ROIs but the Standardizer was fitted on {self.mean_.shape[0]}")
        if self.window_norm != "none":
            return self._normalise_windows(x)
        in_place = not copy and isinstance(x, np.ndarray) and x.dtype == np.float32 and x.flags.writeable
        out = x if in_place else np.array(x, dtype=np.float32)
        out -= self.mean_.astype(np.float32)
        out /= self.std_.astype(np.float32)
        return out

    def _normalise_windows(self, x: np.ndarray) -> np.ndarray:
        """Per-window centring (and scaling) in float64, so a large run offset costs no precision.

        Centring each window makes the global mean irrelevant; ``demean`` keeps the global
        scale, ``zscore`` replaces it by the window's own.
        """
        if x.ndim < 2 or x.shape[-2] < 2:
            raise DataError(f"window_norm={self.window_norm!r} needs windows (..., W >= 2, R), got {x.shape}")
        out = np.array(x, dtype=np.float64)
        out -= out.mean(axis=-2, keepdims=True)
        if self.window_norm == "zscore":
            scale = out.std(axis=-2, keepdims=True)
            out /= np.where(scale > 1e-12 * self.std_, scale, np.inf)  # a constant ROI becomes 0
        else:
            out /= self.std_
        return out.astype(np.float32)

    def to_dict(self) -> dict[str, list[float]]:
        """Plain lists for a checkpoint."""
        if self.mean_ is None or self.std_ is None:
            raise ConfigError("Standardizer is not fitted; nothing to save")
        return {"mean": self.mean_.tolist(), "std": self.std_.tolist(), "window_norm": self.window_norm}

    @classmethod
    def from_dict(cls, state: dict[str, list[float]]) -> Standardizer:
        """Inverse of :meth:`to_dict`; CheckpointError on a malformed state."""
        try:
            mean = np.asarray(state["mean"], dtype=np.float64)
            std = np.asarray(state["std"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"standardizer state needs 'mean' and 'std' lists of numbers: {exc}") from None
        if mean.ndim != 1 or mean.shape != std.shape or not (std > 0).all():
            raise CheckpointError("standardizer state: 'mean' and 'std' must be equal-length lists with std > 0")
        window_norm = state.get("window_norm", "none")
        if window_norm not in WINDOW_NORMS:
            raise CheckpointError(f"standardizer state: window_norm={window_norm!r} is not one of {list(WINDOW_NORMS)}")
        out = cls(window_norm)
        out.mean_, out.std_ = mean, std
        return out


class WindowDataset(torch.utils.data.Dataset):
    """Map-style dataset of windows: ``{"x": (W, R) float32, "subject": int64, "index": int64}``.

    Three ways to read it, all backed by one vectorised :meth:`WindowSet.get`:

    - ``dataset[i]`` gives one item;
    - a DataLoader with ``batch_size`` (or a ``batch_sampler``) calls
      ``__getitems__`` once per batch and collates the items as usual;
    - ``dataset[indices]`` with a sequence gives the batch ``{"x": (B, W, R),
      "subject": (B,), "index": (B,)}`` directly, so
      ``DataLoader(dataset, sampler=BatchSampler(...), batch_size=None)`` skips the
      per-item split and re-stack of collation (faster for large batches).
    """

    def __init__(self, windows: WindowSet, standardizer: Standardizer | None = None) -> None:
        if standardizer is not None and standardizer.mean_ is not None and standardizer.mean_.shape[0] != windows.n_rois:
            raise DataError(
                f"the Standardizer was fitted on {standardizer.mean_.shape[0]} ROIs, the windows have {windows.n_rois}"
            )
        self.windows = windows
        self.standardizer = standardizer

    def __len__(self) -> int:
        return len(self.windows)

    def _batch(self, indices) -> dict[str, torch.Tensor]:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"window index out of range for {len(self)} windows")
        idx = idx % len(self)
        x = self.windows.get(idx)
        if self.standardizer is not None:
            x = self.standardizer.transform(x, copy=False)  # x is a fresh copy from get()
        return {"x": torch.from_numpy(x), "subject": torch.from_numpy(self.windows.labels[idx]),
                "index": torch.from_numpy(idx)}

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        batch = self._batch(indices)
        rows = zip(*(batch[name].unbind(0) for name in ("x", "subject", "index")))
        return [{"x": x_k, "subject": label_k, "index": index_k} for x_k, label_k, index_k in rows]

    def __getitem__(self, i) -> dict[str, torch.Tensor]:
        if np.ndim(i) == 0:
            return self.__getitems__([i])[0]
        return self._batch(i)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def _content_hash(data: np.ndarray, chunk_frames: int = 4096) -> str:
    """blake2b of dtype, shape and bytes, streamed along the first axis."""
    digest = hashlib.blake2b(f"{data.dtype.str}{data.shape}".encode(), digest_size=8)
    for lo in range(0, max(data.shape[0], 1), chunk_frames):
        digest.update(np.ascontiguousarray(data[lo : lo + chunk_frames]).tobytes())
    return digest.hexdigest()


def _write_atomic(path: Path, data: np.ndarray) -> None:
    """``np.save`` to a temporary file beside ``path``, then rename; no partial file survives."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; cached runs are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
        Same subject, session, tr and meta (plus ``meta["cache_file"]``); ``data`` is
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
            _write_atomic(path, rec.data)
        try:
            data = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise DataError(f"cached run {path} is unreadable ({exc}); delete it to rebuild") from None
        if data.shape != rec.data.shape or data.dtype != rec.data.dtype:
            raise DataError(
                f"cached run {path} holds {data.dtype}{data.shape}, expected {rec.data.dtype}{rec.data.shape}; "
                "delete it to rebuild"
            )
        out.append(Recording(rec.subject, rec.session, data, rec.tr, {**rec.meta, "cache_file": str(path)}))
    return out
