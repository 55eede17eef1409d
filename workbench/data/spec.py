"""What a family is built for: the data description every Method receives and checkpoints keep.

:class:`DataSpec` says how many features a frame has (ROIs, or voxels of volume frames, with
their grid), how long a window is, how many subjects trained and which label columns
``batch["y"]`` carries (:class:`LabelColumn`). :meth:`WindowSet.spec
<workbench.data.windows.WindowSet.spec>` builds it from training windows; ``load_method``
rebuilds any family from the copy in its checkpoint.

Volume frames carry the brain mask that put their voxels in order (frame column ``v`` is the
``v``-th in-mask voxel of the grid in C order), so that a family can put frames back on the
grid. Checkpoints hold plain types only, so the mask travels packed: one bit per voxel,
zlib-compressed, base64 text (:func:`encode_mask` / :func:`decode_mask`; an MNI brain mask at
2 mm packs into a few kilobytes).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import math
import zlib
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from workbench.config import clip, excerpt
from workbench.errors import CheckpointError, ConfigError

LabelKind = Literal["categorical", "continuous"]


def encode_mask(mask: np.ndarray) -> str:
    """Pack a boolean ``(X, Y, Z)`` mask as text: C-order bits, zlib, base64 (inverse: :func:`decode_mask`)."""
    bits = np.packbits(np.asarray(mask, dtype=bool).ravel(order="C"))
    return base64.b64encode(zlib.compress(bits.tobytes(), 9)).decode("ascii")


def decode_mask(text: str, grid: tuple[int, int, int]) -> np.ndarray:
    """The boolean ``grid``-shaped mask packed by :func:`encode_mask`; ConfigError when it does not fit."""
    size = math.prod(grid)
    try:
        packed = np.frombuffer(zlib.decompress(base64.b64decode(text.encode("ascii"), validate=True)), np.uint8)
    except (binascii.Error, zlib.error, ValueError, UnicodeEncodeError) as exc:
        raise ConfigError(f"data spec: the packed brain mask is corrupt ({exc})") from None
    if packed.size != -(-size // 8):
        raise ConfigError(f"data spec: the packed brain mask holds {packed.size * 8} bits, grid {grid} needs {size}")
    return np.unpackbits(packed, count=size).astype(bool).reshape(grid)


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
            raise ConfigError(
                f"label column {excerpt(self.name)}: kind={excerpt(self.kind)} is not categorical or continuous"
            )
        if self.kind == "categorical" and len(self.categories) < 1:
            raise ConfigError(f"label column {excerpt(self.name)} is categorical but lists no categories")


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
    mask : str, optional
        With ``grid``: the brain mask of volume frames packed by :func:`encode_mask` (it selects
        ``n_features`` voxels); ``None`` means every voxel of the grid.
    """

    n_features: int
    n_timepoints: int
    grid: tuple[int, int, int] | None = None
    n_subjects: int = 0
    labels: tuple[LabelColumn, ...] = ()
    mask: str | None = None

    def __post_init__(self) -> None:
        if self.n_features < 1 or self.n_timepoints < 1:
            raise ConfigError(
                f"data spec: n_features={self.n_features} and n_timepoints={self.n_timepoints} must be >= 1"
            )
        if self.grid is not None and (len(self.grid) != 3 or min(self.grid) < 1):
            raise ConfigError(f"data spec: grid={excerpt(self.grid)} must be three positive sizes (X, Y, Z)")
        if self.mask is not None and self.grid is None:
            raise ConfigError("data spec: a brain mask needs the voxel grid it lies on (grid=(X, Y, Z))")
        if self.grid is not None:
            selected = math.prod(self.grid) if self.mask is None else int(self.mask_array().sum())
            if selected != self.n_features:
                raise ConfigError(
                    f"data spec: frames have n_features={self.n_features} voxels but the "
                    f"{'mask' if self.mask is not None else 'full grid'} {self.grid} selects {selected}; "
                    "give the mask the frames were cut with (workbench.data.volumes.volume_frames)"
                )

    def mask_array(self) -> np.ndarray:
        """The boolean ``grid``-shaped brain mask of volume frames (all voxels when none was given)."""
        if self.grid is None:
            raise ConfigError("data spec: these frames are not volumes (no grid), so they have no brain mask")
        if self.mask is None:
            return np.ones(self.grid, dtype=bool)
        return decode_mask(self.mask, self.grid)

    def label(self, name: str) -> LabelColumn:
        """The label column called ``name``; ConfigError listing the available ones."""
        for column in self.labels:
            if column.name == name:
                return column
        available = excerpt([c.name for c in self.labels], 500)
        raise ConfigError(f"label {excerpt(name)} is not in the data; available labels: {available}")

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
                mask=state.get("mask"),
            )
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise CheckpointError(f"the checkpoint's data spec is malformed ({clip(str(exc))})") from None


__all__ = ["DataSpec", "LabelColumn", "LabelKind", "decode_mask", "encode_mask"]
