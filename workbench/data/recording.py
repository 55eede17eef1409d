"""The one in-memory unit of data: a single run of one subject."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.errors import DataError

if TYPE_CHECKING:  # pandas is imported by the code that builds labels, not by every reader
    import pandas as pd


@dataclass
class Recording:
    """One fMRI run.

    Parameters
    ----------
    subject : str
        Subject identifier (e.g. ``"101309"``).
    session : str
        Session / run identifier (``"1"`` when the source has a single run).
    data : numpy.ndarray
        ``(T, R)`` ROI time series (time first) for ``roi_timeseries`` data, or
        ``(X, Y, Z, T)`` volumes for ``nifti_4d`` data. May be a memory map.
    tr : float
        Repetition time in seconds.
    meta : dict
        Anything else known about the run: dataset name, source file, ROI names, and for
        frames of volumes the voxel ``grid`` ``(X, Y, Z)``.
    frame_labels : pandas.DataFrame, optional
        One row per frame (``T`` rows): continuous columns as floats (NaN where undefined),
        categorical columns of pandas ``category`` dtype (missing values NaN); a label that
        holds for the whole run (a group, an age) is repeated on every frame.
    """

    subject: str
    session: str
    data: np.ndarray
    tr: float
    meta: dict[str, Any] = field(default_factory=dict)
    frame_labels: pd.DataFrame | None = None

    def __post_init__(self) -> None:
        if self.frame_labels is not None and len(self.frame_labels) != self.n_timepoints:
            raise DataError(
                f"recording {self.subject}/{self.session}: frame_labels has {len(self.frame_labels)} rows "
                f"but the run has {self.n_timepoints} frames; give one row per frame"
            )

    @property
    def n_timepoints(self) -> int:
        """Number of frames (last axis of volumes, first axis of ROI series)."""
        return int(self.data.shape[-1] if self.data.ndim == 4 else self.data.shape[0])

    @property
    def n_rois(self) -> int:
        """Number of ROIs of an ROI series (``data.shape[1]``)."""
        if self.data.ndim != 2:
            raise AttributeError("n_rois is defined for (T, R) ROI series only")
        return int(self.data.shape[1])
