"""Read named members out of a downloaded wheel (zip) or source distribution (tar.gz).

Both archive kinds answer the same three questions: which regular files they hold (member
paths with ``/`` separators), how large a member is, and a byte stream of it. Nothing is ever
extracted by the archive library itself: the caller streams each named member to a path it
chose (inside the cache), so an archive cannot write outside that folder through ``..``
paths, absolute paths or links.

Member paths of an sdist are relative to its single top-level folder (``pymvpa2-2.6.5/``,
the sdist convention), so ``mvpa2/data/bold.nii.gz`` names ``pymvpa2-2.6.5/mvpa2/data/bold.nii.gz``.
Symbolic and hard links, devices and folders are not members.
"""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path
from typing import IO, Literal

from workbench.errors import DataError

ArchiveKind = Literal["wheel", "sdist"]


def is_safe_member_path(member: str) -> bool:
    """Whether ``member`` is a relative ``/``-separated path that stays below its root."""
    parts = member.split("/")
    return bool(member) and not member.startswith("/") and "\\" not in member and ".." not in parts and "" not in parts


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

    def open(self, member: str) -> IO[bytes]:
        """A binary stream of the member's bytes."""
        if self.kind == "wheel":
            return self._zip.open(member)
        stream = self._tar.extractfile(self._members[member])
        if stream is None:  # only regular files are listed, so this means a corrupt header
            raise DataError(f"{self.path.name}: member {member} cannot be read")
        return stream

    def close(self) -> None:
        for archive in (self._zip, self._tar):
            if archive is not None:
                archive.close()

    def __enter__(self) -> MemberArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["ArchiveKind", "MemberArchive", "is_safe_member_path"]
