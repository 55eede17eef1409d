"""The one in-memory unit of data: a single run of one subject."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


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
        Anything else known about the run: dataset name, source file, labels
        such as age or site, ROI names.
    """

    subject: str
    session: str
    data: np.ndarray
    tr: float
    meta: dict[str, Any] = field(default_factory=dict)

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
