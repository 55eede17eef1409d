"""A torch ``Dataset`` of standardised windows and their labels: what the engine batches.

Three ways to read it, all backed by one vectorised :meth:`WindowSet.get
<workbench.data.windows.WindowSet.get>`:

- ``dataset[i]`` gives one item;
- a DataLoader with ``batch_size`` (or a ``batch_sampler``) calls ``__getitems__`` once per
  batch and collates the items as usual;
- ``dataset[indices]`` with a sequence gives the batch directly (what the engine uses), so
  ``DataLoader(dataset, sampler=BatchSampler(...), batch_size=None)`` skips the per-item split
  and re-stack of collation.
"""

from __future__ import annotations

import numpy as np
import torch

from workbench.data.normalize import Standardizer
from workbench.data.windows import WindowSet


class WindowDataset(torch.utils.data.Dataset):
    """Map-style dataset of windows.

    Items are ``{"x": (W, F) float32, "subject": int64, "index": int64}`` plus ``"y"`` ``(k,)``
    float32 when the windows carry labels; batches stack them (``(B, W, F)``, ``(B,)``,
    ``(B, k)``). ``x`` is standardised when a fitted :class:`Standardizer` is given.
    """

    def __init__(self, windows: WindowSet, standardizer: Standardizer | None = None) -> None:
        if standardizer is not None:
            standardizer.check_features(windows.n_rois)
        self.windows = windows
        self.standardizer = standardizer
        self.keys = ("x", "subject", "index") + (("y",) if windows.y is not None else ())

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
        batch = {
            "x": torch.from_numpy(x),
            "subject": torch.from_numpy(self.windows.labels[idx]),
            "index": torch.from_numpy(idx),
        }
        if self.windows.y is not None:
            batch["y"] = torch.from_numpy(self.windows.y[idx])
        return batch

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        batch = self._batch(indices)
        rows = zip(*(batch[name].unbind(0) for name in self.keys), strict=True)
        return [dict(zip(self.keys, row, strict=True)) for row in rows]

    def __getitem__(self, i) -> dict[str, torch.Tensor]:
        if np.ndim(i) == 0:
            return self.__getitems__([i])[0]
        return self._batch(i)


__all__ = ["WindowDataset"]
