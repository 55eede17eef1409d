"""Run a benchmark script in a fresh process and keep what it printed (for ``run(quick)`` of scripts
whose numbers are tables in their output)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def script_output(path: str | Path, arguments: list[str], timeout_s: float | None = None) -> dict:
    """``python path *arguments``; its stdout, wall seconds and arguments.

    Raises
    ------
    RuntimeError
        On a non-zero exit, with the end of its stderr.
    """
    begin = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(path), *arguments], capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{Path(path).name} {' '.join(arguments)} exited with {done.returncode}: {done.stderr[-3000:]}"
        )
    return {"arguments": arguments, "seconds": time.perf_counter() - begin, "output": done.stdout}
