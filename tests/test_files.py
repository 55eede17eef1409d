"""Atomic writes: whole files or none, ordinary permissions, stale temporaries swept."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import pytest

from workbench.files import (
    RUN_LOCK,
    TEMP_PREFIX,
    atomic_path,
    sweep_temporaries,
    temporary_prefix,
    write_json,
    write_text,
)


def test_a_write_appears_whole_with_ordinary_permissions(tmp_path):
    target = write_json(tmp_path / "sub" / "metrics.json", {"a": 1})
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # not the 0600 of mkstemp
    assert list(target.parent.iterdir()) == [target]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    target = write_text(tmp_path / "x.txt", "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


def test_temporaries_of_dead_writers_are_swept_and_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = tmp_path / f"{temporary_prefix(int(dead.stdout))}abc123.tmp"
    orphan.write_bytes(b"partial")
    alive = tmp_path / f"{temporary_prefix()}def456.tmp"
    alive.write_bytes(b"being written")
    foreign = tmp_path / f"{TEMP_PREFIX}elsewhere-1-ghi789.tmp"  # another machine: only age removes it
    foreign.write_bytes(b"?")
    assert sweep_temporaries(tmp_path) == [orphan]
    old = time.time() - 7200
    os.utime(foreign, (old, old))
    assert sweep_temporaries(tmp_path) == [foreign]
    assert alive.exists()
    (tmp_path / RUN_LOCK).touch()  # a run folder: the next write into it sweeps too
    orphan.write_bytes(b"partial")
    write_text(tmp_path / "history.json", "{}")
    assert not orphan.exists()
