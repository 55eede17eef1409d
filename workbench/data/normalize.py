"""Scaling of windows before a family sees them, fitted on training windows only.

========================  =================================================================
mode                      what every window ``(W, F)`` becomes
========================  =================================================================
``"window"`` (default)    each feature z-scored over the window's own frames: per-run
                          offsets and gains (scanner drift, the baseline of unprocessed
                          BOLD) cannot identify a run; first-order activation is erased
``"window-demean"``       each feature centred over the window, divided by its training std
``"dataset"``             each feature z-scored with the training windows' mean and std
``"global"``              one mean and one std over all features and frames of the training
                          windows: no per-voxel statistics, constant background voxels are fine
``"robust"``              Brain-JEPA's input scaling: each feature minus the median and over
                          the interquartile range of the training runs' means of that feature
                          (Dong et al., NeurIPS 2024); run offsets are kept, not erased
``"none"``                unchanged (float32)
========================  =================================================================

Window modes use no other window, so they cannot leak; the statistics of ``"dataset"``,
``"global"`` and ``"robust"`` come from the training windows only, each frame counted once,
streamed one recording at a time (Chan et al. 1979 pairwise update), so fitting a memory-mapped
cohort never loads it whole. ``"robust"`` takes the mean of each training run's covered frames
per feature (one row per run, as the reference's one run per subject) and keeps the median and
interquartile range of those rows. Per-run standardisation (each run z-scored on its own, for decoding)
is a transformation of the recordings before windows are cut: :func:`standardize_runs`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from workbench.data.cache import release_pages
from workbench.data.recording import Recording
from workbench.data.windows import WindowSet, covered_frames
from workbench.errors import CheckpointError, ConfigError, DataError

NORMALIZATIONS = ("window", "window-demean", "dataset", "global", "robust", "none")
_FEATURE_STATS = ("window", "window-demean", "dataset", "robust")  # modes that fit a location and scale per feature
_CHUNK_FRAMES = 8192


def _merge(count: int, mean: np.ndarray, m2: np.ndarray, block: np.ndarray, axis) -> tuple[int, np.ndarray, np.ndarray]:
    """Chan et al. (1979) pairwise update of (count, mean, sum of squared deviations) with ``block``."""
    n_b = block.shape[0] if axis == 0 else block.size
    mean_b = block.mean(axis=axis)
    m2_b = ((block - mean_b) ** 2).sum(axis=axis)
    delta, total = mean_b - mean, count + n_b
    return total, mean + delta * (n_b / total), m2 + m2_b + delta**2 * (count * n_b / total)


class Standardizer:
    """The scaling of windows a family trains and is evaluated with (modes: module docstring).

    Parameters
    ----------
    mode : {"window", "window-demean", "dataset", "global", "robust", "none"}
        How windows are scaled.

    Attributes
    ----------
    mean_, std_ : numpy.ndarray or None
        Fitted location and scale: ``(F,)`` per feature (for ``"robust"`` the median and the
        interquartile range of the runs' means), ``(1,)`` for ``"global"``, ``None`` for ``"none"``.
    """

    def __init__(self, mode: str = "window") -> None:
        if mode not in NORMALIZATIONS:
            raise ConfigError(f"normalization={mode!r}: choose one of {list(NORMALIZATIONS)}")
        self.mode = mode
        self.mean_: np.ndarray | None = None
        self.std_: np.ndarray | None = None
        self._fitted = mode == "none"

    def fit(self, windows: WindowSet) -> Standardizer:
        """Fit on the frames covered by ``windows``; DataError names a constant feature."""
        if self.mode == "none":
            return self
        if self.mode == "robust":
            return self._fit_robust(windows)
        per_feature = self.mode in _FEATURE_STATS
        size = windows.n_rois if per_feature else 1
        count, mean, m2 = 0, np.zeros(size), np.zeros(size)
        for r in np.unique(windows.rec_index):
            frames = covered_frames(windows, int(r))
            data = windows.recordings[r].data
            for lo in range(0, len(frames), _CHUNK_FRAMES):
                block = np.asarray(data[frames[lo : lo + _CHUNK_FRAMES]], dtype=np.float64)
                count, mean, m2 = _merge(count, mean, m2, block, axis=0 if per_feature else None)
            release_pages(data)
        std = np.sqrt(m2 / count)
        bad = ~np.isfinite(std) | (std <= np.finfo(np.float32).eps * np.maximum(np.abs(mean), 1e-30))
        if bad.any():
            feature = int(np.flatnonzero(bad)[0])
            what = f"ROI {feature} is" if per_feature else "the training windows are"
            raise DataError(
                f"{what} constant or non-finite over the training windows (mean {mean[feature]:.6g}, std "
                f"{std[feature]:.3g}); drop that ROI, fix the recording, or use normalization='global' for volumes"
            )
        self.mean_, self.std_, self._fitted = mean, std, True
        return self

    def _fit_robust(self, windows: WindowSet) -> Standardizer:
        """Median and interquartile range over the training runs of each feature's run mean.

        Dong et al., "Brain-JEPA", NeurIPS 2024 (arXiv:2409.19407): the reference scales each
        ROI by the median and IQR of the subjects' ROI means over its training subjects.
        """
        run_means, squares, count = [], np.zeros(windows.n_rois), 0
        for r in np.unique(windows.rec_index):
            frames = covered_frames(windows, int(r))
            data = windows.recordings[r].data
            total, total_sq = np.zeros(windows.n_rois), np.zeros(windows.n_rois)
            for lo in range(0, len(frames), _CHUNK_FRAMES):
                block = np.asarray(data[frames[lo : lo + _CHUNK_FRAMES]], dtype=np.float64)
                total += block.sum(axis=0)
                total_sq += (block**2).sum(axis=0)
            release_pages(data)
            run_means.append(total / len(frames))
            squares += total_sq - total**2 / len(frames)  # sum of squared deviations within the run
            count += len(frames)
        means = np.stack(run_means)
        median = np.median(means, axis=0)
        iqr = np.percentile(means, 75, axis=0) - np.percentile(means, 25, axis=0)
        within = np.sqrt(np.maximum(squares, 0.0) / max(count, 1))  # pooled within-run std per feature
        # runs whose means agree to a thousandth of the signal's own spread (e.g. each run demeaned) give no
        # scale: dividing by such an IQR would blow the windows up
        bad = ~np.isfinite(iqr) | (iqr <= 1e-3 * within) | (iqr <= np.finfo(np.float32).eps * np.abs(median))
        if bad.any():
            feature = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"normalization='robust': ROI {feature} has the same mean in the training runs ({len(means)} runs, "
                f"interquartile range {iqr[feature]:.3g}), so there is no scale to divide by; it needs at least two "
                "runs whose means differ (data demeaned per run have none): use normalization='dataset' instead"
            )
        self.mean_, self.std_, self._fitted = median, iqr, True
        return self

    def check_features(self, n_features: int) -> None:
        """DataError when fitted per-feature statistics do not match ``n_features``."""
        if self.mode in _FEATURE_STATS and self.mean_ is not None and self.mean_.shape[0] != n_features:
            raise DataError(f"data have {n_features} features but the Standardizer was fitted on {self.mean_.shape[0]}")

    def transform(self, x: np.ndarray, copy: bool = True) -> np.ndarray:
        """Scale ``x`` of shape ``(..., W, F)``; returns float32 of the same shape.

        With ``copy=False`` a writeable float32 ``x`` may be overwritten (modes ``"dataset"``,
        ``"global"``).
        """
        if not self._fitted:
            raise ConfigError("Standardizer is not fitted; call fit(training_windows) first")
        self.check_features(x.shape[-1])
        if self.mode in ("window", "window-demean"):
            return self._normalise_windows(x)
        in_place = not copy and isinstance(x, np.ndarray) and x.dtype == np.float32 and x.flags.writeable
        out = x if in_place else np.array(x, dtype=np.float32)
        if self.mode != "none":
            out -= self.mean_.astype(np.float32)
            out /= self.std_.astype(np.float32)
        return out

    def _normalise_windows(self, x: np.ndarray) -> np.ndarray:
        """Per-window centring (and scaling) in float64, so a large run offset costs no precision.

        Centring each window makes the global mean irrelevant; ``window-demean`` keeps the
        training scale, ``window`` replaces it by the window's own (a feature constant within a
        window, or far below its training scale, becomes zeros: no division by zero).
        """
        if x.ndim < 2 or x.shape[-2] < 2:
            raise DataError(f"normalization={self.mode!r} needs windows (..., W >= 2, F), got {x.shape}")
        out = np.array(x, dtype=np.float64)
        out -= out.mean(axis=-2, keepdims=True)
        if self.mode == "window":
            scale = out.std(axis=-2, keepdims=True)
            out /= np.where(scale > 1e-12 * self.std_, scale, np.inf)
        else:
            out /= self.std_
        return out.astype(np.float32)

    def to_dict(self) -> dict[str, object]:
        """Plain types for a checkpoint."""
        if not self._fitted:
            raise ConfigError("Standardizer is not fitted; nothing to save")
        mean = None if self.mean_ is None else self.mean_.tolist()
        std = None if self.std_ is None else self.std_.tolist()
        return {"mode": self.mode, "mean": mean, "std": std}

    @classmethod
    def from_dict(cls, state: dict[str, object]) -> Standardizer:
        """Inverse of :meth:`to_dict`; CheckpointError on a malformed state."""
        mode = state.get("mode") if isinstance(state, dict) else None
        if mode not in NORMALIZATIONS:
            raise CheckpointError(f"standardizer state: mode={mode!r} is not one of {list(NORMALIZATIONS)}")
        out = cls(mode)
        if mode == "none":
            return out
        try:
            mean = np.asarray(state["mean"], dtype=np.float64)
            std = np.asarray(state["std"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"standardizer state needs 'mean' and 'std' lists of numbers: {exc}") from None
        if mean.ndim != 1 or mean.shape != std.shape or not (std > 0).all():
            raise CheckpointError("standardizer state: 'mean' and 'std' must be equal-length lists with std > 0")
        out.mean_, out.std_, out._fitted = mean, std, True
        return out


def standardize_runs(recordings: Sequence[Recording]) -> list[Recording]:
    """Each run z-scored feature by feature over its own frames (nothing crosses runs or subjects).

    The per-run standardisation of task decoding: it keeps within-run activation (a block
    of heat against a block of rating) that per-window scaling erases, and removes the
    per-run offsets that would otherwise identify a run. A feature constant over a run
    becomes zeros. The data become float32 arrays in memory.
    """
    out = []
    for rec in recordings:
        data = np.asarray(rec.data, dtype=np.float64)
        centred = data - data.mean(axis=0)
        scale = centred.std(axis=0)
        z = centred / np.where(scale > 0, scale, np.inf)
        out.append(Recording(rec.subject, rec.session, z.astype(np.float32), rec.tr, dict(rec.meta), rec.frame_labels))
    return out


__all__ = ["NORMALIZATIONS", "Standardizer", "standardize_runs"]
