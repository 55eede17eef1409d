"""Property-based tests of the readers and the catalog loader: any input gives a result or a WorkbenchError.

Hypothesis settings: 200 examples per property for arbitrary bytes, arrays and NIfTI headers, 300 for catalogs
(derandomized, so CI runs the same examples; no deadline, file I/O varies in speed).
"""

from __future__ import annotations

import contextlib
import tempfile
import warnings
from pathlib import Path

import numpy as np
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from workbench.data.catalog import load_catalog
from workbench.data.readers import read_recording
from workbench.errors import WorkbenchError

FILES = settings(
    max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
CATALOGS = settings(max_examples=300, deadline=None, derandomize=True)
SUFFIXES = [".npy", ".csv", ".tsv", ".mat", ".nii", ".nii.gz"]


def _read(path: Path) -> None:
    modality = "nifti_4d" if path.name.endswith((".nii", ".nii.gz")) else "roi_timeseries"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # layouts the reader had to guess are announced, not failures
        with contextlib.suppress(WorkbenchError):  # any other exception fails the property
            recording = read_recording(path, subject="s", modality=modality)
            assert np.isfinite(recording.data).all()  # what passes is clean
            assert recording.data.dtype == np.float32


@FILES
@given(suffix=st.sampled_from(SUFFIXES), payload=st.binary(max_size=600))
def test_arbitrary_bytes_never_crash_a_reader(suffix, payload):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"run{suffix}"
        path.write_bytes(payload)
        _read(path)


@FILES
@given(
    suffix=st.sampled_from([".npy", ".csv"]),
    table=arrays(
        st.sampled_from([np.float32, np.float64, np.int16, np.complex64, np.bool_]),
        st.tuples(st.integers(0, 12), st.integers(0, 6)),
    ),
)
def test_arbitrary_tables_give_a_clean_run_or_a_clear_error(suffix, table):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"run{suffix}"
        if suffix == ".npy":
            np.save(path, table)
        else:
            np.savetxt(path, np.real(table).astype(np.float64), delimiter=",")
        _read(path)


@FILES
@given(
    shape=st.lists(st.integers(1, 2000), min_size=1, max_size=5),
    dtype=st.sampled_from([np.uint8, np.int16, np.float32, np.float64, np.complex64]),
    payload=st.integers(0, 4000),
    gzip=st.booleans(),
)
def test_arbitrary_nifti_headers_give_a_clean_run_or_a_clear_error(shape, dtype, payload, gzip):
    """A valid header of any shape and type (up to 2000⁵ voxels) over too few or enough bytes."""
    import gzip as gz

    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_data_offset(352)
    raw = header.binaryblock + b"\0" * 4 + np.arange(payload, dtype=np.uint8).tobytes()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / ("run.nii.gz" if gzip else "run.nii")
        path.write_bytes(gz.compress(raw) if gzip else raw)
        _read(path)


VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.lists(st.text(max_size=8), max_size=3),
    st.dictionaries(st.text(max_size=8), st.integers(), max_size=2),
)
FIELDS = [
    "description",
    "modality",
    "tr",
    "atlas",
    "space",
    "citation",
    "licence",
    "read",
    "source",
    "labels",
    "roi_names",
    "nme",
]
SOURCE_FIELDS = [
    "kind",
    "package",
    "version",
    "members",
    "sha256",
    "glob",
    "generator",
    "params",
    "entries",
    "fetcher",
    "archive",
    "max_member_mb",
]


def _entry() -> dict:
    return {
        "description": "d",
        "modality": "roi_timeseries",
        "tr": 1.0,
        "atlas": "a",
        "citation": "c",
        "licence": "l",
        "source": {"kind": "synthetic", "generator": "fingerprints", "params": {"n_subjects": 2}},
    }


@CATALOGS
@given(
    edits=st.lists(st.tuples(st.sampled_from(FIELDS), VALUES), max_size=3),
    source_edits=st.lists(st.tuples(st.sampled_from(SOURCE_FIELDS), VALUES), max_size=3),
    name=st.text(max_size=10),
)
def test_arbitrary_catalog_entries_validate_or_name_the_problem(edits, source_edits, name):
    entry = _entry()
    for key, value in edits:
        entry[key] = value
    if isinstance(entry.get("source"), dict):
        for key, value in source_edits:
            entry["source"][key] = value
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "catalog.yaml"
        path.write_text(yaml.safe_dump({"datasets": {name: entry}}, allow_unicode=True))
        with contextlib.suppress(WorkbenchError):
            catalog = load_catalog(path)
            assert str(name) in catalog.entries


@CATALOGS
@given(text=st.text(max_size=200))
def test_arbitrary_catalog_text_is_a_catalog_or_a_catalog_error(text):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "catalog.yaml"
        path.write_text(text)
        with contextlib.suppress(WorkbenchError):
            load_catalog(path)
