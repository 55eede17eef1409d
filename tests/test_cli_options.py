"""The options every data-reading subcommand shares: ``--catalog``, ``--device``, ``--no-progress``, ``--dataset``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from workbench.cli import build_parser, main
from workbench.errors import CatalogError
from workbench.train import read_checkpoint

COMMON = ["--catalog", "my.yaml", "--device", "cpu", "--no-progress"]


def _arguments(folder: str) -> dict[str, list[str]]:
    """Each data-reading subcommand with the shared options and a folder as its dataset."""
    return {
        "train": ["train", "fewshot", "--dataset", folder, "--out", "run", *COMMON],
        "evaluate": ["evaluate", "run", "--dataset", folder, "--out", "eval", *COMMON],
        "evaluate-decoding": ["evaluate", "run", "--task", "decoding", "--label", "x", "--dataset", folder]
        + ["--out", "e", *COMMON],
        "embed": ["embed", "run", "--dataset", folder, "--out", "t.parquet", *COMMON],
        "report": ["report", "--catalog", "my.yaml", "--device", "cpu", "--no-progress"],
        "data-info": ["data", "info", folder, "--catalog", "my.yaml"],
        "data-check": ["data", "check", folder, "--catalog", "my.yaml"],
        "data-fetch": ["data", "fetch", "toy", "--catalog", "my.yaml", "--no-progress"],
    }


@pytest.mark.parametrize("command", list(_arguments("x")))
def test_every_data_command_takes_the_shared_options(command: str, tmp_path: Path) -> None:
    folder = str(tmp_path)
    args = build_parser().parse_args(_arguments(folder)[command])
    assert args.catalog == Path("my.yaml")
    if command in ("data-info", "data-check"):
        assert args.target == folder  # data names its dataset positionally
    elif command not in ("report", "data-fetch"):  # the notebooks and fetch read catalog entries only
        assert args.dataset == folder
    if command not in ("data-info", "data-check"):  # they read headers and files: no progress bars
        assert args.no_progress
    if not command.startswith("data"):  # data computes nothing on a device
        assert args.device == "cpu"


@pytest.mark.parametrize("command", ["train", "evaluate", "embed", "report"])
def test_an_unknown_device_is_refused_by_the_parser(command: str, capsys: pytest.CaptureFixture) -> None:
    arguments = {"train": ["train", "fewshot", "--dataset", "d", "--out", "r"], "report": ["report"]}
    head = arguments.get(command, [command, "run", "--dataset", "d", "--out", "o"])
    with pytest.raises(SystemExit):
        build_parser().parse_args([*head, "--device", "tpu"])
    assert "invalid device 'tpu'" in capsys.readouterr().err


@pytest.fixture
def user_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_toy_catalog) -> Path:
    path = write_toy_catalog(tmp_path, n_subjects=4, n_rois=8, n_timepoints=120)
    monkeypatch.delenv("WORKBENCH_CATALOG", raising=False)
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    return path


def _roi_folder(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    for subject in ("01", "02", "03"):
        (folder / f"sub-{subject}").mkdir(parents=True)
        np.save(folder / f"sub-{subject}" / f"sub-{subject}_bold.npy", rng.standard_normal((80, 6)).astype("float32"))
    return folder


def test_train_on_a_folder_with_device_catalog_and_no_progress(user_catalog, tmp_path, capsys) -> None:
    folder, run = _roi_folder(tmp_path / "my study"), tmp_path / "run"
    code = main(
        ["train", "fewshot", "--dataset", str(folder), "--window", "16", "--preset", "tiny", "--set", "max_steps=2"]
        + ["--out", str(run), "--device", "cpu", "--catalog", str(user_catalog), "--no-progress"]
    )
    assert code == 0
    captured = capsys.readouterr()
    assert "2 steps" in captured.out and "it/s" not in captured.err
    state = read_checkpoint(run)
    assert state["train_config"]["device"] == "cpu"
    assert sorted(state["subjects"]) == ["01", "02", "03"]


def test_device_flag_and_a_different_device_setting_are_refused(user_catalog, tmp_path, capsys) -> None:
    code = main(
        ["train", "fewshot", "--dataset", "toy", "--catalog", str(user_catalog), "--out", str(tmp_path / "r")]
        + ["--device", "cpu", "--set", "device=cuda", "--no-progress"]
    )
    assert code == 2
    assert "--device cpu contradicts the setting device=cuda" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "arguments",
    [
        ["train", "fewshot", "--dataset", "toi", "--out", "run"],
        ["evaluate", "run", "--dataset", "toi", "--out", "eval"],
        ["data", "info", "toi"],
        ["data", "fetch", "toi"],
    ],
)
def test_the_unknown_dataset_error_says_how_to_choose_a_catalog(arguments, user_catalog, tmp_path, capsys) -> None:
    code = main([*arguments, "--catalog", str(user_catalog)])
    assert code == 2
    error = capsys.readouterr().err
    assert "'toi'" in error and "did you mean 'toy'" in error
    assert "--catalog FILE" in error and "$WORKBENCH_CATALOG" in error


def test_a_catalog_name_wins_over_a_folder_of_the_same_name(user_catalog, tmp_path, monkeypatch) -> None:
    from workbench.cli.options import resolve_dataset

    monkeypatch.chdir(tmp_path)
    _roi_folder(tmp_path / "toy")
    name, catalog = resolve_dataset("toy", user_catalog)
    assert name == "toy" and catalog.entries["toy"].source.kind == "synthetic"
    name, catalog = resolve_dataset(str(tmp_path / "toy"), user_catalog)
    assert catalog.entries[name].source.kind == "local" and "toy" in catalog.entries


def test_an_empty_folder_is_refused_naming_it(user_catalog, tmp_path) -> None:
    from workbench.cli.options import resolve_dataset

    (tmp_path / "empty").mkdir()
    with pytest.raises(CatalogError, match="empty: no .nii"):
        resolve_dataset(str(tmp_path / "empty"), user_catalog)
