"""Atomic file writes: every file the workbench writes appears whole or not at all.

A writer gets a temporary path in the target's own folder (same file system, so the final
``os.replace`` is atomic); when it returns, the data are flushed to disk (``fsync``), the file
gets the mode of an ordinary output (``0o644``: ``mkstemp`` creates ``0o600``), it is renamed
onto the target and the folder entry is flushed too. If the writer raises, or the process is
interrupted, the temporary file is removed; a process killed outright leaves at most a hidden
``.<name>.<pid>.<random>.tmp`` file, which :func:`sweep_temporaries` removes on the next write into
that folder once its writer is gone (no such process on this machine) or the file is stale.

Example
-------
>>> import json, tempfile
>>> from pathlib import Path
>>> target = Path(tempfile.mkdtemp()) / "metrics.json"
>>> with atomic_path(target) as tmp:
...     tmp.write_text(json.dumps({"accuracy": 0.9}))
15
>>> json.loads(target.read_text())
{'accuracy': 0.9}
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TEMP_SUFFIX = ".tmp"
FILE_MODE = 0o644
STALE_AFTER_S = 3600.0  # a temporary file untouched this long belongs to a dead writer


def _fsync(path: Path, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:  # e.g. folders cannot be opened on some platforms
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
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
    sweep_temporaries(path.parent)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=TEMP_SUFFIX)
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


def _writer_alive(temporary: Path) -> bool:
    """Whether the process named in ``.<name>.<pid>.<random>.tmp`` still runs on this machine."""
    parts = temporary.name[: -len(TEMP_SUFFIX)].rsplit(".", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return True  # not ours to judge: only age removes it
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to another user
        return True
    return True


def sweep_temporaries(folder: str | os.PathLike, older_than_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove the temporary files of writers that died.

    A hidden ``.<name>.<pid>.<random>.tmp`` file of :func:`atomic_path` is removed when no process
    ``pid`` runs on this machine any more (a writer killed outright) or when it is older than
    ``older_than_s`` seconds (a writer on another machine of a shared file system).

    Returns
    -------
    list of pathlib.Path
        The files removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    now, removed = time.time(), []
    for candidate in folder.glob(f".*{TEMP_SUFFIX}"):
        try:
            stale = now - candidate.stat().st_mtime > older_than_s
            if candidate.is_file() and (stale or not _writer_alive(candidate)):
                candidate.unlink()
                removed.append(candidate)
        except OSError:  # raced with its writer or another sweeper
            continue
    return removed


__all__ = ["atomic_path", "sweep_temporaries", "write_json", "write_text"]
