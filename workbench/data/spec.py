"""What a family is built for: the data description every Method receives and checkpoints keep.

:class:`DataSpec` says how many features a frame has (ROIs, or voxels of volume frames, with
their grid), how long a window is, how many subjects trained and which label columns
``batch["y"]`` carries (:class:`LabelColumn`). :meth:`WindowSet.spec
<workbench.data.windows.WindowSet.spec>` builds it from training windows; ``load_method``
rebuilds any family from the copy in its checkpoint.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from workbench.errors import CheckpointError, ConfigError

LabelKind = Literal["categorical", "continuous"]


@dataclass(frozen=True)
class LabelColumn:
    """One label column of ``batch["y"]``.

    Attributes
    ----------
    name : str
        Column name in the recordings' ``frame_labels``.
    kind : {"categorical", "continuous"}
        Categorical values travel as float codes ``0 .. len(categories) - 1``.
    categories : tuple of str
        The category of each code (categorical columns only).
    """

    name: str
    kind: LabelKind
    categories: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("categorical", "continuous"):
            raise ConfigError(f"label column {self.name!r}: kind={self.kind!r} is not categorical or continuous")
        if self.kind == "categorical" and len(self.categories) < 1:
            raise ConfigError(f"label column {self.name!r} is categorical but lists no categories")


@dataclass(frozen=True)
class DataSpec:
    """What a family is built for: passed to every constructor and stored in checkpoints.

    Attributes
    ----------
    n_features : int
        Features per frame: ROIs of ROI series, voxels (inside the mask) of volume frames.
    n_timepoints : int
        Window length ``W`` in frames.
    grid : tuple of 3 int, optional
        Voxel grid ``(X, Y, Z)`` when frames are volumes.
    n_subjects : int
        Subjects of the training data (for per-subject parameters).
    labels : tuple of LabelColumn
        The columns of ``batch["y"]``, in order.
    """

    n_features: int
    n_timepoints: int
    grid: tuple[int, int, int] | None = None
    n_subjects: int = 0
    labels: tuple[LabelColumn, ...] = ()

    def __post_init__(self) -> None:
        if self.n_features < 1 or self.n_timepoints < 1:
            raise ConfigError(
                f"data spec: n_features={self.n_features} and n_timepoints={self.n_timepoints} must be >= 1"
            )
        if self.grid is not None and (len(self.grid) != 3 or min(self.grid) < 1):
            raise ConfigError(f"data spec: grid={self.grid} must be three positive sizes (X, Y, Z)")

    def label(self, name: str) -> LabelColumn:
        """The label column called ``name``; ConfigError listing the available ones."""
        for column in self.labels:
            if column.name == name:
                return column
        raise ConfigError(f"label {name!r} is not in the data; available labels: {[c.name for c in self.labels]}")

    def to_dict(self) -> dict[str, Any]:
        """Plain types, for checkpoints."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> DataSpec:
        """Inverse of :meth:`to_dict`; CheckpointError on a malformed state."""
        try:
            labels = tuple(
                LabelColumn(c["name"], c["kind"], tuple(c.get("categories", ()))) for c in state.get("labels", ())
            )
            grid = state.get("grid")
            return cls(
                n_features=int(state["n_features"]),
                n_timepoints=int(state["n_timepoints"]),
                grid=None if grid is None else tuple(int(g) for g in grid),
                n_subjects=int(state.get("n_subjects", 0)),
                labels=labels,
            )
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise CheckpointError(f"the checkpoint's data spec is malformed ({exc})") from None


__all__ = ["DataSpec", "LabelColumn", "LabelKind"]
