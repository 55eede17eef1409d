"""Cohorts larger than memory: runs memory-mapped from the cache, embeddings written in chunks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from workbench.data.cache import RunCollector, stream_threshold
from workbench.data.catalog import load_catalog, load_recordings, memmap_dir
from workbench.data.recording import Recording
from workbench.data.windows import WindowSet
from workbench.errors import ConfigError, DataError
from workbench.evaluation import embed_windows
from workbench.runs import embed_function, training_windows
from workbench.train import build_method, make_train_config, train


def _study(tmp_path: Path, n_runs: int = 4, constant_roi: bool = False) -> Path:
    """A local entry of ``n_runs`` .npy runs (60 frames x 5 ROIs); ROI 2 of run 1 is flat if asked."""
    rng = np.random.default_rng(0)
    (tmp_path / "data").mkdir()
    for i in range(n_runs):
        data = rng.standard_normal((60, 5)).astype(np.float32) + i
        if constant_roi and i == 1:
            data[:, 2] = 3.0
        np.save(tmp_path / "data" / f"sub-{i:02d}_timeseries.npy", data)
    entry = {
        "description": "toy",
        "modality": "roi_timeseries",
        "tr": 2.0,
        "atlas": "toy",
        "citation": "-",
        "licence": "-",
        "read": {"constant": "drop", "orientation": "time_roi"},
        "source": {"kind": "local", "glob": "data/*.npy"},
    }
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({"datasets": {"toy": entry}}))
    return path


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("WORKBENCH_CACHE", str(root))
    monkeypatch.delenv("WORKBENCH_STREAM_BYTES", raising=False)
    return root


def _all_windows(recordings: list[Recording]) -> np.ndarray:
    windows = WindowSet(recordings, 10, 3)
    return windows.get(np.arange(len(windows)))


def test_streamed_dataset_gives_the_same_runs_and_windows(tmp_path: Path, cache: Path) -> None:
    catalog = load_catalog(_study(tmp_path, constant_roi=True))
    with pytest.warns(UserWarning, match="dropped"):
        memory = load_recordings("toy", catalog, progress=False, stream=False)
    with pytest.warns(UserWarning, match="dropped"):
        streamed = load_recordings("toy", catalog, progress=False, stream=True)
    assert not any(isinstance(r.data, np.memmap) for r in memory)
    assert all(isinstance(r.data, np.memmap) and not r.data.flags.writeable for r in streamed)
    assert all(Path(r.meta["cache_file"]).parent == memmap_dir("toy") for r in streamed)
    assert [r.data.shape for r in streamed] == [(60, 4)] * 4  # ROI 2 dropped from every run
    assert [(r.subject, r.meta["dropped_rois"]) for r in streamed] == [(r.subject, [2]) for r in memory]
    np.testing.assert_array_equal(_all_windows(streamed), _all_windows(memory))


def test_auto_streaming_switches_once_the_dataset_passes_the_threshold(tmp_path: Path) -> None:
    runs = [Recording(f"s{i}", "1", np.full((10, 3), i, np.float32), 1.0) for i in range(4)]
    collector = RunCollector(tmp_path, threshold=2 * 120 + 1)  # 120 bytes a run: the third run passes it
    collector.add(runs[:2])
    assert not collector.streaming and collector.runs[0] is runs[0]
    collector.add(runs[2:])
    assert collector.streaming and all(isinstance(r.data, np.memmap) for r in collector.runs)
    assert [float(r.data[0, 0]) for r in collector.runs] == [0.0, 1.0, 2.0, 3.0]
    never = RunCollector(tmp_path / "never", stream=False, threshold=0)
    never.add(runs)
    assert not never.streaming and not (tmp_path / "never").exists()


def test_stream_threshold_from_the_environment(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert stream_threshold() == 2 * 1024**3
    monkeypatch.setenv("WORKBENCH_STREAM_BYTES", "0")
    streamed = load_recordings("toy", load_catalog(_study(tmp_path)), progress=False)
    assert all(isinstance(r.data, np.memmap) for r in streamed)
    monkeypatch.setenv("WORKBENCH_STREAM_BYTES", "2GB")
    with pytest.raises(ConfigError, match="WORKBENCH_STREAM_BYTES='2GB' must be a whole number of bytes"):
        stream_threshold()


def _train_and_embed(recordings: list[Recording], out: Path) -> tuple[list[float], np.ndarray]:
    windows = training_windows(recordings, 20)
    torch.manual_seed(0)
    method = build_method("fewshot", windows.spec(), "tiny")
    config = make_train_config(method, max_steps=2, batch_size=8, seed=0, device="cpu")
    result = train(method, windows, config, out, progress=False)
    embed = embed_function(result.method, result.standardizer)
    embeddings = embed_windows(embed, windows, batch_size=7, out=out / "emb.npy")
    return [row["loss"] for row in result.history["step"]], embeddings


def test_training_and_embedding_from_memory_maps_equal_the_in_memory_path(tmp_path: Path, cache: Path) -> None:
    catalog = load_catalog(_study(tmp_path, n_runs=6))
    memory = load_recordings("toy", catalog, progress=False, stream=False)
    streamed = load_recordings("toy", catalog, progress=False, stream=True)
    losses_m, emb_m = _train_and_embed(memory, tmp_path / "memory")
    losses_s, emb_s = _train_and_embed(streamed, tmp_path / "streamed")
    assert losses_m == losses_s
    assert isinstance(emb_s, np.memmap) and emb_s.dtype == np.float32
    np.testing.assert_array_equal(emb_s, emb_m)


def _windows() -> WindowSet:
    rng = np.random.default_rng(1)
    return WindowSet(
        [Recording(f"s{i}", "1", rng.standard_normal((50, 4)).astype(np.float32), 1.0) for i in range(3)], 5, 5
    )


def _mean_and_std(x: np.ndarray) -> np.ndarray:
    return np.concatenate([x.mean(axis=1), x.std(axis=1)], axis=1)


def test_embeddings_written_in_chunks_equal_the_in_memory_ones(tmp_path: Path) -> None:
    windows = _windows()
    expected = embed_windows(_mean_and_std, windows, batch_size=4)
    assert expected.shape == (30, 8)
    np.testing.assert_array_equal(embed_windows(_mean_and_std, windows, batch_size=4, out=tmp_path / "e.npy"), expected)
    np.testing.assert_array_equal(np.load(tmp_path / "e.npy"), expected)
    target = np.lib.format.open_memmap(tmp_path / "given.npy", mode="w+", dtype=np.float32, shape=(30, 8))
    assert embed_windows(_mean_and_std, windows, batch_size=7, out=target) is target
    np.testing.assert_array_equal(target, expected)
    with pytest.raises(ConfigError, match=r"out has shape \(30, 3\) but the embeddings are \(30, 8\)"):
        embed_windows(_mean_and_std, windows, out=np.zeros((30, 3), np.float32))


def test_an_error_while_embedding_leaves_no_half_written_file(tmp_path: Path) -> None:
    calls = []

    def fails_on_third_batch(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        if len(calls) == 3:
            raise RuntimeError("out of memory")
        return _mean_and_std(x)

    target = tmp_path / "emb" / "e.npy"
    with pytest.raises(RuntimeError, match="out of memory"):
        embed_windows(fails_on_third_batch, _windows(), batch_size=4, out=target)
    assert list(target.parent.iterdir()) == []  # neither the target nor a temporary file
    target.write_bytes(b"an older, complete file")
    widths = iter([8, 3])

    def changes_width(x: np.ndarray) -> np.ndarray:
        return _mean_and_std(x)[:, : next(widths)]

    with pytest.raises(DataError, match=r"returned 3 features for windows 4\.\., 8 before"):
        embed_windows(changes_width, _windows(), batch_size=4, out=target)
    assert target.read_bytes() == b"an older, complete file"  # an old file survives a failed rewrite
    assert sorted(p.name for p in target.parent.iterdir()) == ["e.npy"]
