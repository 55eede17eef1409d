"""Windows over runs: temporal splits without overlap, window labels, vectorised reads.

A window is ``length`` consecutive frames of one run. Evaluation draws support windows from
the first part of each run and query windows from the second (``part="first"`` /
``"second"``, cut at ``round(T * split)``); no window crosses the cut, so the two never share
a frame. :func:`assert_disjoint` checks this for any two sets. Windows read only the frames
they need, so runs cached as memory maps (:mod:`workbench.data.cache`) stream; their labels
come from the runs' frame labels (:mod:`workbench.data.labels`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from workbench.data.cache import release_pages
from workbench.data.labels import CategoricalRule, frame_values, label_columns, window_values
from workbench.data.recording import Recording
from workbench.data.spec import DataSpec, LabelColumn, encode_mask
from workbench.errors import ConfigError, DataError

PARTS = ("first", "second", "all")


def window_starts(n_timepoints: int, length: int, stride: int, part: str = "all", split: float = 0.5) -> np.ndarray:
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


def _check_roi_series(recordings: list[Recording]) -> int:
    """Validate that every recording is a ``(T, R)`` series with one common R; return R."""
    if not recordings:
        raise DataError("no recordings were given to window; check the catalog entry or subject filter")
    first = recordings[0]
    for rec in recordings:
        if rec.data.ndim != 2:
            raise DataError(
                f"recording {rec.subject}/{rec.session} has data of shape {rec.data.shape}; windows are "
                "for (T, F) frames — extract ROI time series from volumes, or flatten them with "
                "workbench.data.volumes.volume_frames"
            )
        if rec.data.shape[1] != first.data.shape[1]:
            raise DataError(
                f"recordings disagree on the number of ROIs: {first.subject}/{first.session} has "
                f"{first.data.shape[1]}, {rec.subject}/{rec.session} has {rec.data.shape[1]}; "
                "use one parcellation for all runs"
            )
    return int(first.data.shape[1])


class WindowSet:
    """All windows of one temporal part over a list of recordings of ``(T, F)`` frames.

    Frames are ROI series (``F`` ROIs) or volumes flattened to their voxels (see
    :func:`workbench.data.volumes.volume_frames`); ``n_rois`` counts the features either way.

    Parameters
    ----------
    recordings : list of Recording
        Runs with data ``(T, F)`` (arrays or memory maps) and a common ``F``.
    length, stride : int
        Window length ``W`` and step, in frames.
    part, split
        Temporal part, see :func:`window_starts`.
    subjects : list of str, optional
        The label space: ``labels`` index into it. Defaults to the sorted unique
        subjects of ``recordings``; give it to share labels between sets.
    label_names : sequence of str or of LabelColumn, optional
        Frame labels to give each window (:mod:`workbench.data.labels`). ``None``: every
        column shared by the recordings' ``frame_labels`` (none when they have none); a list
        of :class:`LabelColumn` fixes the categories, so that a test set codes them as the
        training set did.
    label_rule : {"majority", "pure"}
        How a categorical label of a window is read from its frames.

    Attributes
    ----------
    rec_index, starts, labels : numpy.ndarray
        ``(n,)`` int64: recording of each window, its first frame and its subject label.
    label_columns : tuple of LabelColumn
        The columns of :attr:`y`.
    y : numpy.ndarray or None
        ``(n, k)`` float32 window labels (categories as codes, NaN undefined); ``None`` without labels.
    """

    def __init__(
        self,
        recordings: list[Recording],
        length: int,
        stride: int,
        part: str = "all",
        split: float = 0.5,
        subjects: list[str] | None = None,
        label_names: Sequence[str] | Sequence[LabelColumn] | None = None,
        label_rule: CategoricalRule = "majority",
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
            window_starts(rec.n_timepoints, self.length, self.stride, part, self.split) for rec in self.recordings
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
        self.label_rule = label_rule
        if label_names is not None and all(isinstance(c, LabelColumn) for c in label_names):
            self.label_columns = tuple(label_names)
        else:
            self.label_columns = label_columns(self.recordings, label_names)
        self.y = self._window_labels(per_recording) if self.label_columns else None

    def _window_labels(self, per_recording: list[np.ndarray]) -> np.ndarray:
        parts = [
            window_values(
                frame_values(rec, self.label_columns), starts, self.length, self.label_columns, self.label_rule
            )
            for rec, starts in zip(self.recordings, per_recording, strict=True)
            if len(starts)
        ]
        return np.concatenate(parts)

    def spec(self) -> DataSpec:
        """The :class:`DataSpec` of a family trained on these windows.

        Volume frames (:func:`workbench.data.volumes.volume_frames`) give their grid and their
        brain mask; every run must share both.
        """
        volumes = [rec for rec in self.recordings if "grid" in rec.meta]
        grids = {tuple(rec.meta["grid"]) for rec in volumes}
        if len(grids) > 1:
            raise DataError(f"the recordings' volume grids differ: {sorted(grids)}; resample them to one grid")
        mask = None
        if volumes and "mask" in volumes[0].meta:
            first = volumes[0]
            for rec in volumes[1:]:
                if not np.array_equal(rec.meta.get("mask"), first.meta["mask"]):
                    raise DataError(
                        f"runs {first.subject}/{first.session} and {rec.subject}/{rec.session} were cut with "
                        "different brain masks; build the frames of all runs with one mask"
                    )
            mask = encode_mask(first.meta["mask"])
        return DataSpec(
            n_features=self.n_rois,
            n_timepoints=self.length,
            grid=grids.pop() if grids else None,
            n_subjects=len(self.subjects),
            labels=self.label_columns,
            mask=mask,
        )

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
            release_pages(data)
        return out[0] if single else out

    def time_in_run(self) -> np.ndarray:
        """``(n,)`` window centre divided by the run length, in [0, 1]."""
        return (self.starts + self.length / 2.0) / self._run_lengths[self.rec_index]

    def spans(self) -> np.ndarray:
        """``(n, 3)`` int64 rows ``(rec_index, start, stop)``, stop exclusive."""
        return np.stack([self.rec_index, self.starts, self.starts + self.length], axis=1)


def window_problems(windows: WindowSet, indices: Sequence[int], limit: int = 3) -> list[str]:
    """What in raw windows can make a loss non-finite: NaN or inf, constant features, huge values.

    Returns at most ``limit`` lines, each naming the run, the window's frames and the features,
    for the engine's error when a loss becomes NaN (empty when the windows look sound).
    """
    out = []
    for i in dict.fromkeys(int(i) for i in indices):
        x = windows.get(i).astype(np.float64)
        rec = windows.recordings[windows.rec_index[i]]
        where = f"run {rec.subject}/{rec.session} frames [{windows.starts[i]}, {windows.starts[i] + windows.length})"
        finite = np.isfinite(x)
        if not finite.all():
            out.append(f"{where} holds {int((~finite).sum())} NaN/inf value(s)")
        elif (flat := np.flatnonzero(np.ptp(x, axis=0) == 0)).size:
            out.append(f"{where} has constant feature(s) {flat[:5].tolist()} (e.g. a region without coverage)")
        elif np.abs(x).max() > 1e8:
            out.append(f"{where} holds values up to {np.abs(x).max():.3g}; check the units or scaling")
        if len(out) >= limit:
            break
    return out


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


def covered_frames(windows: WindowSet, r: int) -> np.ndarray:
    """Indices of the frames of recording ``r`` covered by at least one window (each once)."""
    starts = windows.starts[windows.rec_index == r]
    depth = np.zeros(windows.recordings[r].n_timepoints + 1, dtype=np.int64)
    np.add.at(depth, starts, 1)
    np.add.at(depth, starts + windows.length, -1)
    return np.flatnonzero(np.cumsum(depth[:-1]) > 0)


__all__ = ["PARTS", "WindowSet", "assert_disjoint", "covered_frames", "window_problems", "window_starts"]
