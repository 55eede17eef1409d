"""Hostile or broken data files: size bombs, files that are not what their suffix says, labels of mixed
kinds or values, runs too short to use, and links out of a data folder."""

from __future__ import annotations

import gzip
import io
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import scipy.io
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.cli import main
from workbench.data.catalog import load_catalog, load_recordings
from workbench.data.check import MIN_USABLE_FRAMES, check_data
from workbench.data.describe import describe
from workbench.data.formats import MAX_READ_BYTES_ENV, mat_unpacked_bytes
from workbench.data.frame_labels import events_to_frames, read_events, read_fsl_onsets, unify_categories
from workbench.data.labels import category_name, frame_values, label_columns
from workbench.data.readers import peek_file, read_recording
from workbench.data.recording import Recording
from workbench.errors import DataError, WorkbenchError

PROPERTIES = settings(max_examples=150, deadline=None, derandomize=True)
SECRET = "root:SECRET-LINE-OF-A-FILE-OUTSIDE"


def _npy_with_header(path: Path, shape: tuple[int, ...], descr: str, payload: bytes = b"") -> Path:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": descr, "fortran_order": False, "shape": shape})
    path.write_bytes(header.getvalue() + payload)
    return path


def _read(path: Path, **options: Any) -> Recording:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # layouts the reader guessed are announced, not failures here
        return read_recording(path, subject="s", **options)


# --------------------------------------------------------------------------- size guards


def test_an_npy_header_claiming_terabytes_is_refused_from_its_header(tmp_path):
    path = _npy_with_header(tmp_path / "huge.npy", (400_000_000, 1000), "<f8", b"\0" * 64)
    with pytest.raises(DataError, match=r"huge\.npy: the header claims shape \(400000000, 1000\).*truncated"):
        _read(path)
    with pytest.raises(DataError, match="truncated"):
        peek_file(path)
    assert describe(tmp_path)["files"][0]["status"] == "unreadable"


def test_an_honest_npy_above_the_read_cap_names_the_setting(tmp_path, monkeypatch):
    path = tmp_path / "run.npy"
    np.save(path, np.random.default_rng(0).standard_normal((50, 4)))  # 1,600 bytes of data
    assert _read(path).data.shape == (50, 4)
    monkeypatch.setenv(MAX_READ_BYTES_ENV, "1000")
    with pytest.raises(DataError, match=f"more than a file may unpack to.*\\${MAX_READ_BYTES_ENV}"):
        _read(path)
    monkeypatch.setenv(MAX_READ_BYTES_ENV, "lots")
    with pytest.raises(WorkbenchError, match=f"\\${MAX_READ_BYTES_ENV}='lots' must be a whole number"):
        _read(path)


def test_files_under_the_npy_suffix_are_named_for_what_they_are(tmp_path):
    np.savez(tmp_path / "arrays.npz", a=np.ones((10, 3)))
    (tmp_path / "arrays.npz").rename(tmp_path / "arrays.npy")
    with pytest.raises(DataError, match=r"arrays\.npy: not a \.npy array but a zip archive \(a \.npz file"):
        _read(tmp_path / "arrays.npy")
    scipy.io.savemat(tmp_path / "m.npy", {"x": np.ones((10, 3))})
    with pytest.raises(DataError, match="not a .npy array but a MATLAB .mat file"):
        _read(tmp_path / "m.npy")
    np.save(tmp_path / "objects.npy", np.array([[{"a": 1}]], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"holds Python objects \(object\), which are never unpickled"):
        _read(tmp_path / "objects.npy")


@PROPERTIES
@given(
    shape=st.lists(st.integers(0, 2**40), max_size=3).map(tuple),
    descr=st.sampled_from(["<f8", "<f4", ">i2", "|u1", "<c8", "|b1", "|O"]),
    payload=st.binary(max_size=300),
)
def test_any_npy_header_gives_a_run_or_a_data_error_never_an_allocation(shape, descr, payload):
    with tempfile.TemporaryDirectory() as folder:
        path = _npy_with_header(Path(folder) / "run.npy", shape, descr, payload)
        stored = math.prod(shape) * np.dtype(descr).itemsize
        try:
            recording = _read(path, orientation="time_roi")
        except WorkbenchError as exc:  # MemoryError or any other exception fails the property
            if stored > len(payload) and "|O" not in descr:
                assert "truncated or its header is wrong" in str(exc)
        else:
            assert stored <= len(payload) and recording.data.dtype == np.float32


def _nifti_header(shape: tuple[int, ...]) -> bytes:
    header = nib.Nifti1Header()
    header.set_data_dtype(np.float32)
    header.set_data_shape(shape)
    header.set_data_offset(352)
    return header.binaryblock + b"\0" * 4


def test_a_gzipped_nifti_claiming_more_than_gzip_can_hold_is_refused_before_reading(tmp_path):
    path = tmp_path / "bomb.nii.gz"
    path.write_bytes(gzip.compress(_nifti_header((1024, 1024, 1024, 1)) + b"\0" * 1_000_000))  # claims 4.3 GB
    assert path.stat().st_size < 10_000
    with pytest.raises(DataError, match=r"bomb\.nii\.gz: the header claims shape \(1024, 1024, 1024, 1\).*gzip file"):
        _read(path, modality="nifti_4d")


def test_a_gzipped_nifti_that_really_inflates_beyond_the_cap_is_refused(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    path = tmp_path / "run.nii.gz"
    nib.save(nib.Nifti1Image(rng.standard_normal((6, 6, 6, 20)).astype(np.float32), np.eye(4)), path)
    assert _read(path, modality="nifti_4d").data.shape == (6, 6, 6, 20)
    monkeypatch.setenv(MAX_READ_BYTES_ENV, "10000")  # the run takes 17,280 bytes
    with pytest.raises(DataError, match=r"shape \(6, 6, 6, 20\) as float32 takes .* more than a file may unpack"):
        _read(path, modality="nifti_4d")


def test_a_mat_zlib_bomb_is_counted_in_a_stream_and_refused(tmp_path, monkeypatch):
    path = tmp_path / "bomb.mat"
    scipy.io.savemat(path, {"x": np.zeros((2000, 2000))}, do_compression=True)  # 32 MB from about 30 kB
    assert path.stat().st_size < 100_000 and mat_unpacked_bytes(path) >= 32_000_000
    monkeypatch.setenv(MAX_READ_BYTES_ENV, "10000000")
    with pytest.raises(DataError, match=r"bomb\.mat: its compressed variables inflate to more than a file may"):
        _read(path)
    with pytest.raises(DataError, match="inflate to more than"):
        peek_file(path)


def test_a_compressed_mat_within_the_cap_is_read_and_counted(tmp_path):
    table = np.random.default_rng(0).standard_normal((40, 5))
    path = tmp_path / "run.mat"
    scipy.io.savemat(path, {"x": table}, do_compression=True)
    assert table.nbytes <= mat_unpacked_bytes(path) <= table.nbytes + path.stat().st_size + 1024
    np.testing.assert_allclose(_read(path, orientation="time_roi").data, table.astype(np.float32))


def test_a_csv_field_over_the_csv_limit_names_the_file_and_line(tmp_path):
    path = tmp_path / "run.csv"
    path.write_text("x" * 140_000 + ",b\n1,2\n3,4\n5,6\n")
    with pytest.raises(DataError, match=r"run\.csv, line 1: .*field larger than field limit"):
        _read(path)
    path.write_text("a,b\n1,2\n3,4\n5," + "y" * 140_000 + "\n6,7\n")
    with pytest.raises(DataError, match=r"run\.csv: data row 3, column 2 holds 'yyy.*\.\.\., not a number") as info:
        _read(path)
    assert len(str(info.value)) < 400  # the field is quoted in part, never whole


# --------------------------------------------------------------------------- labels


@PROPERTIES
@given(number=st.floats(allow_nan=False, allow_infinity=False), other=st.floats(allow_nan=False, allow_infinity=False))
def test_a_number_names_one_category_however_it_is_written(number, other):
    name = category_name(number)
    assert category_name(str(number)) == category_name(np.float64(number)) == category_name(repr(number)) == name
    if number.is_integer() and abs(number) < 2**53:
        assert category_name(int(number)) == category_name(str(int(number))) == name
    assert category_name(name) == name
    assert (category_name(other) == name) == (other == number)


@PROPERTIES
@given(value=st.one_of(st.text(max_size=20), st.integers(), st.booleans()))
def test_category_names_are_stable_and_text_stays_as_written(value):
    name = category_name(value)
    assert category_name(name) == name
    if isinstance(value, str) and name != value:
        assert float(value) == float(name)  # only a number written another way is renamed


LABEL_VALUES = st.one_of(
    st.integers(-2, 3),
    st.sampled_from([0.0, 1.0, 2.5, -1.0]),
    st.sampled_from(["1", "1.0", "2.50", " 3", "a", "b", "01", "nan-ish"]),
    st.none(),
)


def _number(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


@PROPERTIES
@given(runs=st.lists(st.lists(LABEL_VALUES, min_size=1, max_size=6), min_size=1, max_size=3))
def test_mixed_label_values_give_one_code_per_value_or_name_the_runs(runs):
    data = [np.zeros((len(values), 1), dtype=np.float32) for values in runs]
    recordings = [
        Recording(f"s{i}", "1", x, 1.0, {}, pd.DataFrame({"y": pd.Series(values)}))
        for i, (x, values) in enumerate(zip(data, runs))
    ]
    text_runs = {f"s{i}" for i, run in enumerate(runs) if any(isinstance(v, str) for v in run)}
    numeric_runs = {f"s{i}" for i, run in enumerate(runs) if any(v is not None for v in run)} - text_runs
    if text_runs and numeric_runs:
        with pytest.raises(DataError, match=rf"label 'y' is numeric in run\(s\) .*{min(numeric_runs)}/1.* text in"):
            label_columns(recordings)
        return
    if all(v is None for run in runs for v in run):
        with pytest.raises(DataError, match="label 'y' holds no value on any frame of any run"):
            label_columns(recordings)
        return
    (column,) = label_columns(recordings)
    codes = np.concatenate([frame_values(r, [column])[:, 0] for r in recordings])
    values = [v for run in runs for v in run]
    if column.kind == "continuous":
        np.testing.assert_array_equal(codes, [np.nan if v is None else float(v) for v in values])
        return
    assert len({_number(c) for c in column.categories if _number(c) is not None}) == len(
        [c for c in column.categories if _number(c) is not None]
    )  # no two categories of one value
    for a, code_a in zip(values, codes):
        for b, code_b in zip(values, codes):
            if a is not None and b is not None and _number(a) is not None and _number(a) == _number(b):
                assert code_a == code_b


def _with_labels(recording: Recording, labels: pd.DataFrame) -> Recording:
    return Recording(recording.subject, recording.session, recording.data, recording.tr, {}, labels)


def test_one_and_one_point_zero_are_one_category_across_runs():
    data = np.zeros((4, 2), dtype=np.float32)
    runs = [
        Recording("a", "1", data, 1.0, {}, pd.DataFrame({"y": pd.Series([1, 2, 1, 2], dtype=object)})),
        Recording("b", "1", data, 1.0, {}, pd.DataFrame({"y": pd.Series(["1.0", 2.0, np.float32(1), None])})),
    ]
    (column,) = label_columns(runs)
    assert column.categories == ("1", "2")
    np.testing.assert_array_equal(frame_values(runs[1], [column])[:, 0], [0, 1, 0, np.nan])
    typed = [
        _with_labels(r, events_to_frames(events, 4, 1.0, columns={"y": "categorical"}))
        for r, events in zip(
            runs,
            [
                pd.DataFrame({"onset": [0.0, 2.0], "duration": [1.0, 1.0], "y": [1, 2]}),
                pd.DataFrame({"onset": [0.0, 2.0], "duration": [1.0, 1.0], "y": ["1.0", "2.00"]}),
            ],
        )
    ]
    unify_categories(typed)
    assert [list(r.frame_labels["y"].cat.categories) for r in typed] == [["1", "2"], ["1", "2"]]
    assert typed[1].frame_labels["y"].tolist()[::2] == ["1", "2"]


def _mixed_kind_study(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    for run, response in (("1", "1\n2"), ("2", "left\nright")):
        np.save(data / f"sub-01_run-{run}.npy", rng.standard_normal((20, 4)))
        lines = [f"{onset}\t2\t{r}" for onset, r in zip((0, 10), response.split("\n"))]
        (data / f"sub-01_run-{run}_events.tsv").write_text("onset\tduration\tresponse\n" + "\n".join(lines) + "\n")
    entry = {
        "description": "d",
        "modality": "roi_timeseries",
        "tr": 1.0,
        "atlas": "none",
        "citation": "c",
        "licence": "l",
        "read": {"orientation": "time_roi"},
        "labels": [{"kind": "events", "path": "data/sub-{subject}_run-{run}_events.tsv"}],
        "source": {"kind": "local", "glob": "data/sub-*_run-*.npy"},
    }
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({"datasets": {"mixed": entry}}, sort_keys=False))
    return path


def test_a_label_numeric_in_one_run_and_text_in_another_is_found_by_check_and_load(tmp_path):
    catalog = load_catalog(_mixed_kind_study(tmp_path))
    report = check_data("mixed", catalog)
    messages = [message for _, message in report.problems]
    assert not report.ok and any("label 'response' is numeric in run(s) 01/run-1" in m for m in messages)
    assert any("text in run(s) 01/run-2" in m for m in messages)
    with pytest.raises(
        DataError, match=r"label 'response' is numeric in run\(s\) 01/run-1 .*text in run\(s\) 01/run-2"
    ):
        load_recordings("mixed", catalog, progress=False)


def test_a_label_missing_on_every_frame_of_a_run_takes_the_kind_of_the_others():
    data = np.zeros((3, 2), dtype=np.float32)
    empty = Recording("a", "1", data, 1.0, {}, pd.DataFrame({"y": [np.nan] * 3}))
    text = Recording("b", "1", data, 1.0, {}, pd.DataFrame({"y": pd.Categorical(["x", "z", "x"])}))
    unify_categories([empty, text])
    (column,) = label_columns([empty, text])
    assert column.kind == "categorical" and np.isnan(frame_values(empty, [column])).all()


@pytest.mark.parametrize(
    "rows, column, row",
    [("inf\t2\ta\n", "onset", "2"), ("4\tinf\ta\n", "duration", "2"), ("4\t-Infinity\ta\n", "duration", "2")],
)
def test_an_infinite_onset_or_duration_names_the_file_and_row(tmp_path, rows, column, row):
    path = tmp_path / "events.tsv"
    path.write_text("onset\tduration\ttrial_type\n0\t2\ta\n" + rows)
    with pytest.raises(DataError, match=rf"events\.tsv: {column} must be a finite .* row\(s\) below the header {row}"):
        read_events(path)
    (tmp_path / "cond001.txt").write_text("0\t2\t1\n10\tinf\t1\n")
    with pytest.raises(DataError, match=r"cond001\.txt: duration must be a finite number of seconds; row\(s\) 2"):
        read_fsl_onsets([tmp_path / "cond001.txt"])
    events = pd.DataFrame({"onset": [0.0, np.inf], "duration": [1.0, 1.0], "kind": ["a", "b"]})
    with pytest.raises(DataError, match=r"my events: onset must be a finite .* event\(s\) 2"):
        events_to_frames(events, 10, 2.0, where="my events")


# --------------------------------------------------------------------------- runs too short to use


def test_check_reports_a_run_too_short_for_any_window_as_unusable(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for frames in (2, MIN_USABLE_FRAMES):
        volumes = rng.standard_normal((3, 3, 3, frames)).astype(np.float32)
        nib.save(nib.Nifti1Image(volumes, np.eye(4)), tmp_path / f"sub-{frames:02d}.nii.gz")
    np.save(tmp_path / "sub-03.npy", rng.standard_normal((3, 2)))  # 3 frames of 2 ROIs
    report = check_data(tmp_path)
    failed = {Path(where).name: message for where, message in report.problems}
    assert set(failed) == {"sub-02.nii.gz", "sub-03.npy"}
    assert "2 frame(s): too short to use; a run needs at least 4" in failed["sub-02.nii.gz"]
    assert "two halves" in failed["sub-02.nii.gz"] and failed["sub-03.npy"].startswith("3 frame(s)")
    assert main(["data", "check", str(tmp_path)]) == 1
    assert "too short to use" in capsys.readouterr().out


# --------------------------------------------------------------------------- links out of a data folder


def _linked_study(tmp_path: Path, outside_text: str, follow_links: bool | None = None) -> tuple[Path, Path]:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "passwd.csv").write_text(outside_text)
    data = tmp_path / "study" / "data"
    data.mkdir(parents=True)
    np.save(data / "sub-01.npy", np.random.default_rng(0).standard_normal((20, 2)))
    (data / "sub-02.csv").symlink_to(outside / "passwd.csv")
    source = {"kind": "local", "glob": "data/sub-*"}
    if follow_links is not None:
        source["follow_links"] = follow_links
    entry = {"description": "d", "modality": "roi_timeseries", "tr": 1.0, "atlas": "none", "citation": "c"}
    entry.update(licence="l", read={"orientation": "time_roi", "header": False}, source=source)
    catalog = tmp_path / "study" / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({"datasets": {"linked": entry}}, sort_keys=False))
    return catalog, data


def test_a_link_out_of_a_local_data_folder_is_refused_and_never_echoed(tmp_path, capsys):
    catalog_path, data = _linked_study(tmp_path, f"{SECRET}\n1,2\n3,4\n")
    catalog = load_catalog(catalog_path)
    with pytest.raises(DataError, match=r"sub-02\.csv: a link to .*passwd\.csv, outside the data folder") as info:
        load_recordings("linked", catalog, progress=False)
    assert SECRET not in str(info.value) and "follow_links: true" in str(info.value)
    report = check_data("linked", catalog)
    assert not report.ok and not any(SECRET in message for _, message in report.problems)
    assert main(["data", "check", str(data)]) == 1
    assert main(["data", "info", str(data)]) == 0
    out = capsys.readouterr().out
    assert SECRET not in out and "outside the data folder" in out


def test_follow_links_reads_what_the_link_leads_to(tmp_path):
    table = np.random.default_rng(1).standard_normal((20, 2))
    catalog_path, _ = _linked_study(tmp_path, "\n".join(f"{a},{b}" for a, b in table), follow_links=True)
    recordings = load_recordings("linked", load_catalog(catalog_path), progress=False)
    assert [r.subject for r in recordings] == ["01", "02"]
    np.testing.assert_allclose(recordings[1].data, table.astype(np.float32), rtol=1e-6)


def test_a_data_folder_reached_through_a_link_is_inside_itself(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    rng = np.random.default_rng(0)
    for subject in ("01", "02"):
        np.save(real / f"sub-{subject}.npy", rng.standard_normal((20, 3)))
    (tmp_path / "alias").symlink_to(real, target_is_directory=True)
    (real / "sub-03.npy").symlink_to(real / "sub-01.npy")  # a link inside the folder is fine
    entry = {"description": "d", "modality": "roi_timeseries", "tr": 1.0, "atlas": "none", "citation": "c"}
    entry.update(licence="l", read={"orientation": "time_roi"}, source={"kind": "local", "glob": "alias/*.npy"})
    (tmp_path / "catalog.yaml").write_text(yaml.safe_dump({"datasets": {"aliased": entry}}))
    recordings = load_recordings("aliased", load_catalog(tmp_path / "catalog.yaml"), progress=False)
    assert [r.subject for r in recordings] == ["01", "02", "03"]
    assert check_data(tmp_path / "alias").ok and os.path.islink(tmp_path / "alias")


def test_follow_links_must_be_a_boolean(tmp_path):
    catalog_path, _ = _linked_study(tmp_path, "1,2\n", follow_links=True)
    text = catalog_path.read_text().replace("follow_links: true", "follow_links: 'yes'")
    catalog_path.write_text(text)
    with pytest.raises(WorkbenchError, match=r"field 'source.follow_links': Input should be a valid boolean"):
        load_catalog(catalog_path)
