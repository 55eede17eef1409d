"""`workbench export` / `load_encoder`: a run as config.json + model.safetensors, embedding exactly as the run."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import safetensors.torch
import torch

import workbench
from workbench.cli import EXIT_INPUT_ERROR, main
from workbench.cli.train import train_on_dataset
from workbench.data.synthetic import fingerprints
from workbench.data.windows import WindowSet
from workbench.embed_table import embed_table
from workbench.errors import CheckpointError, ConfigError, DataError, LearningWarning
from workbench.export import export_encoder
from workbench.runs import embed_function
from workbench.train import load_method


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, write_toy_catalog) -> Path:
    """A fewshot run of two steps on a toy catalog entry."""
    root = tmp_path_factory.mktemp("export")
    write_toy_catalog(root, n_subjects=4, n_rois=10, n_timepoints=160)
    settings = {"epochs": 1, "batch_size": 16, "max_steps": 2}
    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
        warnings.simplefilter("ignore", LearningWarning)  # two steps need not leave the loss floor
        patch.setenv("WORKBENCH_CATALOG", str(root / "catalog.yaml"))
        patch.setenv("WORKBENCH_CACHE", str(root / "cache"))
        train_on_dataset("fewshot", "toy", root / "run", window=16, preset="tiny", settings=settings, progress=False)
    return root / "run"


@pytest.fixture(scope="module")
def exported(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("exported") / "encoder"
    assert main(["export", str(run), "--out", str(out)]) == 0
    return out


def _windows() -> np.ndarray:
    recordings = fingerprints(n_subjects=3, n_rois=10, n_timepoints=80, tr=1.0, seed=5)
    return WindowSet(recordings, 16, 8).get(slice(None))


def _edited_copy(exported: Path, folder: Path, edit) -> Path:
    folder.mkdir()
    (folder / "model.safetensors").write_bytes((exported / "model.safetensors").read_bytes())
    config = json.loads((exported / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_a_loaded_export_embeds_bit_identically_to_the_run(run, exported):
    windows = _windows()
    method, standardizer, _ = load_method(run, device="cpu")
    encoder = workbench.load_encoder(exported)
    assert encoder.family == "fewshot" and encoder.config["preset"] == "tiny"
    for key, tensor in method.state_dict().items():
        assert torch.equal(encoder.method.state_dict()[key], tensor), key
    assert np.array_equal(encoder.standardizer.std_, standardizer.std_)
    embeddings = encoder.embed(windows)
    assert embeddings.dtype == np.float32 and embeddings.shape == (len(windows), method.config.latent_dim)
    assert np.array_equal(embeddings, embed_function(method, standardizer)(windows))


def test_the_folder_holds_plain_json_and_safetensors_and_no_pickle(exported):
    assert sorted(p.name for p in exported.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((exported / "config.json").read_text())
    assert config["family"] == "fewshot" and config["spec"]["n_features"] == 10
    assert config["method_config"]["d_model"] == 16 and config["standardizer"]["mode"] == "window"
    assert set(config["versions"]) == {"workbench", "torch", "numpy"}
    tensors = safetensors.torch.load_file(str(exported / "model.safetensors"))
    assert tensors["standardizer.mean"].dtype == torch.float64 and tensors["standardizer.mean"].shape == (10,)
    assert any(key.startswith("model.") for key in tensors)
    assert (exported / "model.safetensors").read_bytes()[:2] != b"\x80\x04"  # not a pickle stream


def test_an_edited_size_is_refused_naming_the_field(exported, tmp_path):
    edited = _edited_copy(exported, tmp_path / "edited", lambda c: c["method_config"].update(d_model=32))
    with pytest.raises(CheckpointError, match=r"method_config\.d_model"):
        workbench.load_encoder(edited)


def test_damaged_exports_are_refused(exported, tmp_path):
    broken = _edited_copy(exported, tmp_path / "broken", lambda c: c.pop("spec"))
    with pytest.raises(CheckpointError, match=r"lacks the field\(s\) \['spec'\]"):
        workbench.load_encoder(broken)
    truncated = _edited_copy(exported, tmp_path / "truncated", lambda c: None)
    (truncated / "model.safetensors").write_bytes((exported / "model.safetensors").read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        workbench.load_encoder(truncated)
    with pytest.raises(DataError, match=r"shape \(n, T, 10\)"):
        workbench.load_encoder(exported).embed(np.zeros((2, 16, 7), np.float32))


def test_a_non_empty_folder_is_refused_unless_forced(run, tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        export_encoder(run, out)
    assert main(["export", str(run), "--out", str(out)]) == EXIT_INPUT_ERROR
    assert "--force" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert main(["export", str(run), "--out", str(out), "--force"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "notes.txt"]


def test_importing_workbench_does_not_import_torch():
    code = "import sys, workbench; assert callable(workbench.__getattr__); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_embed_reads_an_export_folder_like_its_run(run, exported, tmp_path):
    recordings = fingerprints(n_subjects=2, n_rois=10, n_timepoints=64, tr=1.0, seed=7)
    from_run = embed_table(run, recordings, None, 8, tmp_path / "run.parquet", device="cpu", progress=False)
    from_export = embed_table(exported, recordings, None, 8, tmp_path / "export.parquet", progress=False)
    assert pd.read_parquet(from_export).equals(pd.read_parquet(from_run))
    assert len(pd.read_parquet(from_run)) == 14  # 7 windows of 16 frames, stride 8, in each 64-frame run
