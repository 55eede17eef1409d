"""`workbench train` and `workbench evaluate` end to end on a small synthetic catalog; `report` errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench.cli import main
from workbench.cli.train import split_settings
from workbench.errors import ConfigError
from workbench.train import read_checkpoint


@pytest.fixture
def toy_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_toy_catalog) -> Path:
    path = write_toy_catalog(tmp_path)
    monkeypatch.setenv("WORKBENCH_CATALOG", str(path))
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    return path


def test_train_then_evaluate_writes_checkpoint_metrics_and_figure(toy_catalog, tmp_path, capsys):
    run, out = tmp_path / "run", tmp_path / "eval"
    config = tmp_path / "settings.yaml"
    config.write_text("epochs: 1\nbatch_size: 24\nmax_steps: 3\n")
    code = main(
        [
            "train",
            "fewshot",
            "--dataset",
            "toy",
            "--window",
            "16",
            "--preset",
            "tiny",
            "--config",
            str(config),
            "--set",
            "max_steps=2",
            "--set",
            "seed=3",
            "--out",
            str(run),
            "--no-progress",
        ]
    )
    assert code == 0
    assert "2 steps" in capsys.readouterr().out  # --set wins over --config
    info = read_checkpoint(run)["provenance"]
    assert info["protocol"] == "closed" and info["window"] == 16 and info["dataset"] == "toy"
    history = json.loads((run / "history.json").read_text())
    assert len(history["step"]) == 2

    code = main(
        [
            "evaluate",
            str(run),
            "--dataset",
            "toy",
            "--out",
            str(out),
            "--k-shots",
            "1,2",
            "--episodes",
            "20",
            "--no-progress",
        ]
    )
    assert code == 0
    results = json.loads((out / "metrics.json").read_text())
    assert set(results["methods"]) == {"fewshot", "fewshot-untrained", "fc-fingerprint", "lda-fc", "chance"}
    assert results["meta"]["window"] == 16 and results["meta"]["k_shots"] == [1, 2]
    assert (out / "accuracy_vs_k.png").stat().st_size > 1000
    assert "| fewshot |" in capsys.readouterr().out


def test_evaluate_refuses_a_run_that_saw_the_query_halves(toy_catalog, tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "fewshot",
                "--dataset",
                "toy",
                "--window",
                "16",
                "--preset",
                "tiny",
                "--protocol",
                "all",
                "--set",
                "max_steps=1",
                "--set",
                "batch_size=24",
                "--out",
                str(run),
                "--no-progress",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["evaluate", str(run), "--dataset", "toy", "--out", str(tmp_path / "e"), "--no-progress"]) == 2
    assert "query halves" in capsys.readouterr().err


def test_bad_settings_and_names_are_reported_not_raised(toy_catalog, tmp_path, capsys):
    assert main(["train", "fewshot", "--dataset", "toy", "--set", "learning_rate=1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "learning_rate" in err and "training keys" in err
    assert main(["train", "fewsht", "--dataset", "toy", "--out", str(tmp_path)]) == 2
    assert "fewshot" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "missing"), "--dataset", "toy", "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_split_settings_routes_keys_by_owner():
    family, engine = split_settings("jepa", {"depth": 2, "lr": 1e-3, "patch_size": 8, "seed": 1})
    assert family == {"depth": 2, "patch_size": 8} and engine == {"lr": 1e-3, "seed": 1}
    with pytest.raises(ConfigError, match="dept"):
        split_settings("jepa", {"dept": 2})


def test_report_refuses_an_unknown_parameter_before_running(tmp_path, capsys):
    assert main(["report", "--profile", "tiny", "-p", "windowz=40", "--out", str(tmp_path)]) == 2
    assert "windowz" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing was executed or written


def test_resuming_with_other_settings_is_refused_and_force_new_starts_again(toy_catalog, tmp_path, capsys):
    run = tmp_path / "run"
    common = [
        "train",
        "fewshot",
        "--dataset",
        "toy",
        "--window",
        "16",
        "--preset",
        "tiny",
        "--out",
        str(run),
        "--set",
        "batch_size=24",
        "--no-progress",
    ]
    assert main([*common, "--set", "max_steps=1"]) == 0
    capsys.readouterr()
    assert main([*common, "--set", "max_steps=1", "--set", "lr=0.5"]) == 2
    err = capsys.readouterr().err
    assert "lr (0.0001 -> 0.5)" in err and "--force-new" in err
    assert main([*common, "--set", "max_steps=1", "--protocol", "all"]) == 2
    assert "protocol ('closed' -> 'all')" in capsys.readouterr().err
    assert main([*common, "--set", "max_steps=1", "--set", "lr=0.5", "--force-new"]) == 0
    assert read_checkpoint(run)["train_config"]["lr"] == 0.5


VOLUME_CATALOG = """
datasets:
  vols:
    description: two synthetic subjects of small 4-D volumes
    modality: nifti_4d
    tr: 2.0
    space: none
    citation: generated
    licence: MIT
    source:
      kind: synthetic
      generator: volumes
      params: {n_subjects: 2, n_timepoints: 24, grid: [8, 10, 8], latent_dim: 3, tr: 2.0, seed: 0}
"""


def test_train_on_a_volume_dataset_masks_and_flattens_the_runs(tmp_path, monkeypatch, capsys):
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(VOLUME_CATALOG)
    monkeypatch.setenv("WORKBENCH_CATALOG", str(catalog))
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    argv = ["train", "recvae", "--dataset", "vols", "--window", "12", "--preset", "tiny", "--out", str(run)]
    assert main([*argv, "--set", "max_steps=1", "--no-progress"]) == 0, capsys.readouterr().err
    state = read_checkpoint(run / "checkpoint.pt")
    spec = state["spec"]
    assert tuple(spec["grid"]) == (8, 10, 8)
    assert spec["mask"] is not None  # the frames decode back onto the grid through the mask
    assert 0 < spec["n_features"] <= 8 * 10 * 8
