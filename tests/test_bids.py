"""fMRIPrep derivatives read through a ``kind: bids`` catalog source (workbench/data/bids.py)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from workbench.cli import main
from workbench.data.catalog import load_catalog, load_recordings
from workbench.errors import CatalogError, DataError

N_FRAMES = 40
TR = 2.0
SPIKE = 20  # the frame whose framewise displacement exceeds scrubbing's 0.5 mm
MOTION = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
N_COMPCOR = 4


def _confounds(rng: np.random.Generator) -> pd.DataFrame:
    """The columns fMRIPrep writes that simple, scrubbing and compcor need ("n/a" first rows as fMRIPrep)."""
    table = {}
    for name in [*MOTION, "csf", "white_matter", "global_signal"]:
        base = np.cumsum(rng.standard_normal(N_FRAMES)) * 0.1
        derivative = np.r_[np.nan, np.diff(base)]
        table.update({name: base, f"{name}_derivative1": derivative, f"{name}_power2": base**2})
        table[f"{name}_derivative1_power2"] = derivative**2
    fd = np.full(N_FRAMES, 0.1)
    fd[0], fd[SPIKE] = np.nan, 0.9
    table.update(framewise_displacement=fd, std_dvars=np.r_[np.nan, np.ones(N_FRAMES - 1)], dvars=np.ones(N_FRAMES))
    table.update({f"a_comp_cor_{i:02d}": rng.standard_normal(N_FRAMES) for i in range(N_COMPCOR)})
    table["cosine00"] = np.cos(np.pi * (np.arange(N_FRAMES) + 0.5) / N_FRAMES)
    table["motion_outlier00"] = (np.arange(N_FRAMES) == SPIKE).astype(float)
    return pd.DataFrame(table)


def _compcor_metadata() -> dict:
    return {
        f"a_comp_cor_{i:02d}": {"Method": "aCompCor", "Mask": "combined", "Retained": True} for i in range(N_COMPCOR)
    }


def _write_run(func: Path, subject: str, rng: np.random.Generator, atlas: np.ndarray) -> None:
    """A 6x6x6x40 BOLD run: three regions' signals contaminated by motion, CSF and CompCor regressors."""
    prefix = f"sub-{subject}_task-motor_run-1"
    confounds = _confounds(rng)
    nuisance = confounds[["trans_x", "rot_y", "csf", "a_comp_cor_00"]].to_numpy() @ np.array([5.0, 3.0, 4.0, 2.0])
    volumes = 100 + rng.standard_normal((6, 6, 6, N_FRAMES))
    for label in (1, 2, 3):
        volumes[atlas == label] += rng.standard_normal(N_FRAMES) + label * nuisance
    bold = f"{prefix}_space-MNI152NLin2009cAsym_desc-preproc_bold"
    nib.save(nib.Nifti1Image(volumes.astype(np.float32), np.eye(4)), func / f"{bold}.nii.gz")
    (func / f"{bold}.json").write_text(json.dumps({"RepetitionTime": TR, "TaskName": "motor"}))
    confounds.to_csv(func / f"{prefix}_desc-confounds_timeseries.tsv", sep="\t", index=False, na_rep="n/a")
    (func / f"{prefix}_desc-confounds_timeseries.json").write_text(json.dumps(_compcor_metadata()))


def _write_events(raw: Path, subject: str) -> None:
    func = raw / f"sub-{subject}" / "func"
    func.mkdir(parents=True)
    events = pd.DataFrame({"onset": [0.0, 40.0], "duration": [40.0, 40.0], "trial_type": ["tap", "rest"]})
    events.to_csv(func / f"sub-{subject}_task-motor_run-1_events.tsv", sep="\t", index=False)


@pytest.fixture
def study(tmp_path: Path) -> Path:
    """2 subjects x 1 run of fMRIPrep output, an atlas and the raw dataset's events; returns the folder."""
    rng = np.random.default_rng(0)
    atlas = np.zeros((6, 6, 6), dtype=np.int16)
    atlas[:3, :3], atlas[3:, :3], atlas[:, 3:] = 1, 2, 3
    nib.save(nib.Nifti1Image(atlas, np.eye(4)), tmp_path / "atlas.nii.gz")
    for subject in ("01", "02"):
        func = tmp_path / "derivatives" / "fmriprep" / f"sub-{subject}" / "func"
        func.mkdir(parents=True)
        _write_run(func, subject, rng, atlas)
        _write_events(tmp_path / "raw", subject)
    return tmp_path


def _entry(confounds: str = "simple", **source: object) -> dict:
    """A ``kind: bids`` catalog entry of the study, events labels from the raw dataset."""
    events = "raw/sub-{subject}/func/sub-{subject}_task-{task}_run-{run}_events.tsv"
    return {
        "description": "fMRIPrep motor task",
        "modality": "roi_timeseries",
        "atlas": "three blocks",
        "citation": "none",
        "licence": "CC0",
        "read": {"labels_img": "atlas.nii.gz"},
        "labels": [{"kind": "events", "path": events}],
        "source": {
            "kind": "bids",
            "root": "derivatives/fmriprep",
            "task": "motor",
            "space": "MNI152NLin2009cAsym",
            "confounds": confounds,
            **source,
        },
    }


def _catalog(folder: Path, **entries: dict) -> Path:
    path = folder / "catalog.yaml"
    path.write_text(yaml.safe_dump({"datasets": entries}))
    return path


def _load(folder: Path, confounds: str, tr: float | None = None) -> list:
    entry = _entry(confounds) | ({"tr": tr} if tr is not None else {})
    return load_recordings("motor", load_catalog(_catalog(folder, motor=entry)), progress=False, stream=False)


def _largest_cosine(series: np.ndarray, regressors: pd.DataFrame) -> float:
    """Largest |cosine| between an ROI series and a (centred) regressor, over ROIs and regressors."""
    confounds = regressors.to_numpy(dtype=float)
    confounds = confounds - confounds.mean(axis=0)
    centred = series - series.mean(axis=0)
    products = confounds.T @ centred
    norms = np.linalg.norm(confounds, axis=0)[:, None] * np.linalg.norm(centred, axis=0)[None, :]
    return float(np.max(np.abs(products) / norms))


def test_entities_tr_and_events_labels_are_read(study: Path) -> None:
    recordings = _load(study, "simple")
    assert [(r.subject, r.session) for r in recordings] == [("01", "run-1"), ("02", "run-1")]
    first = recordings[0]
    assert first.meta["task"] == "motor" and first.meta["run"] == "1"
    assert first.tr == TR and first.meta["tr_source"] == "sidecar"
    assert first.data.shape == (N_FRAMES, 3)
    assert first.frame_labels["trial_type"].tolist() == ["tap"] * 20 + ["rest"] * 20


@pytest.mark.parametrize("strategy", ["simple", "compcor"])
def test_confounds_of_the_strategy_are_regressed_out(study: Path, strategy: str) -> None:
    raw = _load(study, "none")[0]
    cleaned = _load(study, strategy)[0]
    regressors = cleaned.meta["confounds"]
    assert {"trans_x", "rot_y"} <= set(regressors.columns)
    assert ("a_comp_cor_00" in regressors.columns) == (strategy == "compcor")
    assert ("csf" in regressors.columns) == (strategy == "simple")
    assert _largest_cosine(raw.data, regressors) > 0.3  # the run is contaminated before denoising
    assert _largest_cosine(cleaned.data, regressors) < 1e-4


def test_strategies_give_different_series(study: Path) -> None:
    simple, compcor = (_load(study, strategy)[0].data for strategy in ("simple", "compcor"))
    difference = (simple - simple.mean(axis=0)) - (compcor - compcor.mean(axis=0))
    assert np.std(difference) > 0.1 * np.std(simple - simple.mean(axis=0))


def test_scrubbing_drops_the_high_motion_frame_and_its_labels(study: Path) -> None:
    run = _load(study, "scrubbing")[0]
    kept = [frame for frame in range(N_FRAMES) if frame != SPIKE]
    assert run.meta["kept_frames"] == kept and run.meta["frames_in_file"] == N_FRAMES
    assert run.data.shape == (N_FRAMES - 1, 3) and len(run.meta["confounds"]) == N_FRAMES - 1
    assert run.frame_labels["trial_type"].tolist() == ["tap"] * 20 + ["rest"] * 19  # frame 20 was "rest"
    assert _largest_cosine(run.data, run.meta["confounds"]) < 1e-4


def test_missing_sidecar_is_an_error_naming_it_unless_the_catalog_gives_tr(study: Path) -> None:
    sidecar = next((study / "derivatives").rglob("sub-02_*_bold.json"))
    sidecar.unlink()
    with pytest.raises(DataError, match=sidecar.name):
        _load(study, "none")
    second = _load(study, "none", tr=2.5)[1]
    assert second.tr == 2.5 and second.meta["tr_source"] == "catalog"


def test_missing_confounds_file_is_an_error_naming_it(study: Path) -> None:
    table = next((study / "derivatives").rglob("sub-01_*_desc-confounds_timeseries.tsv"))
    table.unlink()
    with pytest.raises(DataError, match=table.name):
        _load(study, "simple")


@pytest.mark.parametrize(
    ("strategy", "removed", "named"),
    [("simple", "csf", "csf"), ("compcor", "json", "desc-confounds_timeseries.json")],
)
def test_confounds_lacking_what_the_strategy_needs_are_an_error(
    study: Path, strategy: str, removed: str, named: str
) -> None:
    table = next((study / "derivatives").rglob("sub-01_*_desc-confounds_timeseries.tsv"))
    if removed == "json":
        table.with_suffix(".json").unlink()
    else:
        pd.read_csv(table, sep="\t").drop(columns=[removed]).to_csv(table, sep="\t", index=False, na_rep="n/a")
    with pytest.raises(DataError, match=f"{table.name}.*{strategy!r}.*{named}"):
        _load(study, strategy)


def test_unknown_strategy_is_refused_at_validation(study: Path) -> None:
    with pytest.raises(CatalogError, match=r"source\.confounds.*'scrubbing'"):
        load_catalog(_catalog(study, motor=_entry("scrub")))


def test_subjects_filter_and_no_match_error(study: Path) -> None:
    catalog = load_catalog(_catalog(study, second=_entry(subjects=["02"]), rest=_entry(task="rest")))
    assert [r.subject for r in load_recordings("second", catalog, progress=False, stream=False)] == ["02"]
    with pytest.raises(DataError, match="task-rest"):
        load_recordings("rest", catalog, progress=False, stream=False)


def test_data_list_info_and_check_describe_a_bids_entry(study: Path, capsys: pytest.CaptureFixture) -> None:
    catalog = str(_catalog(study, motor=_entry()))
    assert main(["data", "list", "--catalog", catalog]) == 0
    assert "local files" in capsys.readouterr().out
    assert main(["data", "info", "motor", "--json", "--catalog", catalog]) == 0
    info = json.loads(capsys.readouterr().out)
    assert "bids derivatives/fmriprep task-motor" in json.dumps(info)
    assert [(f["subject"], f["header_tr"]) for f in info["files"]] == [("01", TR), ("02", TR)]
    assert main(["data", "check", "motor", "--catalog", catalog]) == 0
