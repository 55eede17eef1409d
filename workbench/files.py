"""Atomic file writes, and the lock of a run folder.

Atomic writes: every file the workbench writes appears whole or not at all. A writer gets a
temporary path in the target's own folder (same file system, so the final ``os.replace`` is
atomic); when it returns, the data are flushed to disk (``fsync``), the file gets the mode of an
ordinary output (``0o644``: ``mkstemp`` creates ``0o600``), it is renamed onto the target and
the folder entry is flushed too. If the writer raises, or the process is interrupted, the
temporary file is removed; a process killed outright leaves at most a hidden
``.wb-tmp-<host>-<pid>-<random>.tmp`` file. :func:`sweep_temporaries` removes such files, and
only such files (a user's own ``.notes.tmp`` is never touched): one written on this machine once
its process is gone, one written on another machine of a shared file system once it is older
than an hour. Every write into a folder of the workbench's own (its cache; a run folder, while
its lock file is there) sweeps that folder first; other folders are never swept.

Run folders: :func:`run_folder_lock` holds an exclusive lock on ``.wb-lock`` in the folder for
as long as a training (or a report) writes there, so that a second one into the same folder is
refused instead of silently overwriting the first.

Example
-------
>>> import json, tempfile
>>> from pathlib import Path
>>> target = Path(tempfile.mkdtemp()) / "metrics.json"
>>> with atomic_path(target) as tmp:
...     tmp.write_text(json.dumps({"accuracy": 0.9}))
17
>>> json.loads(target.read_text())
{'accuracy': 0.9}
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from workbench.errors import ConfigError

CACHE_ENV = "WORKBENCH_CACHE"  # the folder of every cache


def cache_root() -> Path:
    """Cache folder: ``$WORKBENCH_CACHE`` or ``~/.cache/workbench``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "workbench").expanduser()


try:
    import fcntl
except ImportError:  # Windows: the lock file itself is the lock
    fcntl = None

TEMP_PREFIX = ".wb-tmp-"
TEMP_SUFFIX = ".tmp"
RUN_LOCK = ".wb-lock"
FILE_MODE = 0o644
STALE_AFTER_S = 3600.0  # a temporary of another machine untouched this long belongs to a dead writer


def _host() -> str:
    """This machine's name as it appears in temporary file names (letters, digits, '.', '-')."""
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())[:64] or "unknown"


def temporary_prefix(pid: int | None = None, kind: str = TEMP_PREFIX) -> str:
    """``<kind><host>-<pid>-``: how the temporaries of process ``pid`` (default: this one) on this machine begin.

    ``kind`` is :data:`TEMP_PREFIX` for files; download folders use their own (see :func:`owner_alive`).
    """
    return f"{kind}{_host()}-{os.getpid() if pid is None else pid}-"


def _fsync(path: Path, directory: bool = False) -> None:
    """Flush ``path`` to disk; a file's errors propagate, a folder's are ignored (not every system syncs them)."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike, mode: int = FILE_MODE) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    Parameters
    ----------
    path : path-like
        The file to write. Its folder is created if missing.
    mode : int
        Permission bits of the written file.

    Yields
    ------
    pathlib.Path
        Where to write (the file exists and is empty).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if _workbench_folder(path.parent):
        sweep_temporaries(path.parent)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=temporary_prefix(), suffix=TEMP_SUFFIX)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _fsync(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        _fsync(path.parent, directory=True)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, **dump_options: Any) -> Path:
    """Write ``obj`` as JSON (``indent=2`` unless given) with a final newline, atomically."""
    dump_options.setdefault("indent", 2)
    return write_text(path, json.dumps(obj, **dump_options) + "\n")


def _workbench_folder(folder: Path) -> bool:
    """Whether ``folder`` is the workbench's own: inside its cache, or a run folder (it holds the run lock)."""
    return (folder / RUN_LOCK).exists() or folder.resolve().is_relative_to(cache_root().resolve())


def owner_alive(name: str, kind: str = TEMP_PREFIX) -> bool | None:
    """Whether the process that made ``name`` (``<kind><host>-<pid>-<random>[.tmp]``) still runs.

    ``None`` when it was made on another machine (or its name does not say): no process table
    here can tell, so the caller decides by age alone.
    """
    tail = name[len(kind) :].removesuffix(TEMP_SUFFIX) if name.startswith(kind) else ""
    parts = tail.rsplit("-", 2)
    if len(parts) != 3 or parts[0] != _host() or not parts[1].isdigit():
        return None
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to another user
        return True
    return True


def _abandoned(temporary: Path, now: float, older_than_s: float) -> bool:
    alive = owner_alive(temporary.name)
    if alive is None:
        return now - temporary.stat().st_mtime > older_than_s
    return not alive


def sweep_temporaries(folder: str | os.PathLike, older_than_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove the temporary files that writers of :func:`atomic_path` left behind in ``folder``.

    Only files named ``.wb-tmp-<host>-<pid>-<random>.tmp`` are considered. One written on this
    machine is removed once process ``pid`` no longer runs (a writer killed outright); one written
    on another machine (a shared file system) once it is older than ``older_than_s`` seconds,
    never by its process number, which means nothing here.

    Returns
    -------
    list of pathlib.Path
        The files removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    now, removed = time.time(), []
    for candidate in folder.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
        try:
            if candidate.is_file() and _abandoned(candidate, now, older_than_s):
                candidate.unlink()
                removed.append(candidate)
        except OSError:  # raced with its writer or another sweeper
            continue
    return removed


def check_output_folder(folder: str | os.PathLike, what: str = "output folder") -> Path:
    """ConfigError unless ``folder`` is a folder or can be created as one; returns it as a Path.

    Nothing is created: the nearest existing path of ``folder`` and its parents must be a folder.
    """
    folder = Path(folder)
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        where = "is" if existing == folder else f"lies inside {existing}, which is"
        raise ConfigError(f"{what} {folder} {where} a file, not a folder; choose another path")
    return folder


def _take_flock(lock: Path, busy: str) -> int:
    """Open ``lock`` and ``flock`` it; the descriptor, once it holds the file that ``lock`` names.

    A holder removes the file before it lets go, so a lock taken on a file that has since left
    the folder is dropped and taken again on the new one.
    """
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, FILE_MODE)
        except OSError as exc:
            raise ConfigError(f"lock {lock} cannot be opened ({exc.strerror}); choose another folder") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.path.samestat(os.fstat(fd), os.stat(lock)):
                return fd
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(busy) from None
        except FileNotFoundError:
            pass
        except OSError as exc:
            os.close(fd)
            raise ConfigError(f"lock {lock} cannot be taken ({exc.strerror}); choose another folder") from None
        os.close(fd)


@contextmanager
def _flock(lock: Path, busy: str) -> Iterator[None]:
    """``fcntl.flock`` on ``lock`` while the block runs (or until the process dies); the file is removed after."""
    fd = _take_flock(lock, busy)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


@contextmanager
def _lock_file(lock: Path, busy: str) -> Iterator[None]:
    """The file ``lock`` itself, created with ``O_EXCL`` and removed when the block ends."""
    try:
        os.close(os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    except FileExistsError:
        raise ConfigError(f"{busy} (if none runs, {lock} is left from a crash: delete it)") from None
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


@contextmanager
def run_folder_lock(folder: str | os.PathLike, what: str = "training") -> Iterator[Path]:
    """Hold the exclusive lock of a run folder (created if missing) while the block runs.

    The lock is ``fcntl.flock`` on ``folder/.wb-lock``, released when the block ends (the file is
    removed) or the process dies (the file stays, unlocked). Where ``fcntl`` is missing the lock
    is the file itself, created with ``O_EXCL``.

    Raises
    ------
    ConfigError
        If ``folder`` is a file or cannot be created, or another ``what`` holds the lock.
    """
    folder = check_output_folder(folder, "run folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"run folder {folder} cannot be created ({exc.strerror}); choose another path") from None
    busy = f"another {what} is writing in {folder}; wait for it to finish or choose another folder"
    with (_flock if fcntl else _lock_file)(folder / RUN_LOCK, busy):
        yield folder


__all__ = [
    "RUN_LOCK",
    "TEMP_PREFIX",
    "atomic_path",
    "check_output_folder",
    "run_folder_lock",
    "sweep_temporaries",
    "temporary_prefix",
    "owner_alive",
    "write_json",
    "write_text",
]
