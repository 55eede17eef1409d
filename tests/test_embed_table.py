"""`workbench embed` / `embed_table`: one parquet row per window, streamed in row groups, written atomically."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from workbench.cli import main
from workbench.cli.train import train_on_dataset
from workbench.data.catalog import load_recordings
from workbench.data.synthetic import fingerprints
from workbench.data.windows import WindowSet
from workbench.embed_table import embed_table
from workbench.errors import ConfigError, LearningWarning
from workbench.evaluation import embed_windows
from workbench.runs import embed_function
from workbench.train import load_method

SETTINGS = {"epochs": 1, "batch_size": 24, "max_steps": 2}


@pytest.fixture(scope="module")
def toy_env(tmp_path_factory: pytest.TempPathFactory, write_toy_catalog):
    root = tmp_path_factory.mktemp("embed-table")
    write_toy_catalog(root)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WORKBENCH_CATALOG", str(root / "catalog.yaml"))
        patch.setenv("WORKBENCH_CACHE", str(root / "cache"))
        yield root


@pytest.fixture(scope="module")
def run(toy_env: Path) -> Path:
    """A fewshot run of two steps on the toy catalog entry."""
    out = toy_env / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LearningWarning)  # two steps need not leave the loss floor
        train_on_dataset("fewshot", "toy", out, window=16, preset="tiny", settings=SETTINGS, progress=False)
    return out


def _expected(run_dir: Path, windows: WindowSet) -> np.ndarray:
    method, standardizer, _ = load_method(run_dir, device="cpu")
    return embed_windows(embed_function(method, standardizer), windows)


def _embeddings(table: pd.DataFrame) -> np.ndarray:
    columns = [c for c in table.columns if c.startswith("e") and c[1:].isdigit()]
    assert columns == [f"e{d}" for d in range(len(columns))]
    return table[columns].to_numpy()


def _labelled_recordings() -> list:
    """Toy runs with a categorical and a continuous frame label; two of them name their run."""
    recordings = fingerprints(n_subjects=3, n_rois=12, n_timepoints=120, tr=1.0, difficulty=0.2, seed=1)
    for i, rec in enumerate(recordings):
        blocks = np.repeat(["rest", "task", "rest", "motor"], 30)
        rec.frame_labels = pd.DataFrame(
            {
                "condition": pd.Categorical(blocks, categories=["motor", "rest", "task"]),
                "motion": np.linspace(0.0, 1.0, 120) + i,
            }
        )
        if i < 2:
            rec.meta["run"] = str(i + 1)
    return recordings


def test_cli_embed_round_trip_equals_in_memory_embeddings(toy_env, run, capsys):
    out = toy_env / "tables" / "toy.parquet"
    args = ["embed", str(run), "--dataset", "toy", "--window", "16", "--stride", "8", "--out", str(out)]
    assert main([*args, "--chunk", "50", "--device", "cpu", "--no-progress"]) == 0
    windows = WindowSet(load_recordings("toy", progress=False), 16, 8)
    table = pd.read_parquet(out)
    assert len(table) == len(windows) == 144
    assert np.array_equal(_embeddings(table), _expected(run, windows))
    assert table["e0"].dtype == np.float32
    assert list(table.columns[:3]) == ["subject", "session", "start"]  # no recording names a run
    assert table["subject"].tolist() == [windows.recordings[r].subject for r in windows.rec_index]
    assert table["session"].tolist() == [windows.recordings[r].session for r in windows.rec_index]
    assert np.array_equal(table["start"].to_numpy(), windows.starts)
    assert pq.ParquetFile(out).num_row_groups == 3  # 144 windows in chunks of 50
    assert "3 row group(s)" in capsys.readouterr().out


def test_function_writes_labels_and_runs_as_the_window_set_aggregates_them(run, tmp_path):
    recordings = _labelled_recordings()
    out = embed_table(run, recordings, None, 4, tmp_path / "labels.parquet", chunk_size=17, label_rule="pure",
                      device="cpu", progress=False)  # fmt: skip
    windows = WindowSet(recordings, 16, 4, label_rule="pure")
    table = pd.read_parquet(out)
    assert pq.ParquetFile(out).num_row_groups == -(-len(windows) // 17) > 1
    assert np.array_equal(_embeddings(table), _expected(run, windows))
    assert list(table.columns[:6]) == ["subject", "session", "run", "start", "condition", "motion"]
    expected_runs = [windows.recordings[r].meta.get("run") for r in windows.rec_index]
    assert [None if pd.isna(v) else v for v in table["run"]] == expected_runs and None in expected_runs
    condition = table["condition"]
    assert list(condition.cat.categories) == ["motor", "rest", "task"]
    codes = windows.y[:, 0]
    assert np.isnan(codes).any()  # windows across a block change are not pure
    assert np.array_equal(condition.cat.codes.to_numpy(), np.where(np.isnan(codes), -1, codes))
    assert np.array_equal(table["motion"].to_numpy(), windows.y[:, 1])


def test_an_error_mid_stream_leaves_neither_the_table_nor_a_temporary(run, tmp_path, monkeypatch):
    folder = tmp_path / "tables"
    folder.mkdir()
    reads = []
    original = WindowSet.get

    def failing_get(self, idx):
        reads.append(idx)
        if len(reads) == 2:
            raise RuntimeError("disk gone")
        return original(self, idx)

    monkeypatch.setattr(WindowSet, "get", failing_get)
    with pytest.raises(RuntimeError, match="disk gone"):
        embed_table(run, _labelled_recordings(), 16, 4, folder / "t.parquet", chunk_size=10, progress=False)
    assert len(reads) == 2  # the first chunk was written before the error
    assert list(folder.iterdir()) == []


def test_data_of_another_parcellation_are_refused(run, tmp_path):
    recordings = fingerprints(n_subjects=2, n_rois=5, n_timepoints=60, tr=1.0, seed=0)
    with pytest.raises(ConfigError, match="trained on 12 features but the data have 5"):
        embed_table(run, recordings, 16, 16, tmp_path / "t.parquet", progress=False)
    assert not (tmp_path / "t.parquet").exists()
