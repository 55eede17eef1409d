"""Peak memory as a synthetic cohort grows 1x -> 10x: streamed from the cache, and held in memory.

Each (size, mode) runs in a fresh Python process, so every peak is its own. The process
synthesises the cohort one run at a time into a :class:`~workbench.data.cache.RunCollector`
(``stream=True``: each run is written to the cache and memory-mapped, the path
``load_recordings(..., stream=True)`` takes; ``stream=False``: every run kept in memory),
trains ``fewshot`` (``tiny`` preset) for a few optimiser steps on the closed-protocol training
windows, then embeds every window (stride W) with :func:`~workbench.evaluation.embed_windows`
writing into an ``.npy`` memory map. It reports the peak resident set (anonymous memory plus
mapped file pages that were resident: ``VmHWM`` on Linux, ``getrusage(RUSAGE_SELF).ru_maxrss``
elsewhere; on Linux ``ru_maxrss`` would carry over the peak of the process that started it) and
the cohort's size. Streamed, the peak should not grow with the cohort
(within 20 %); in memory, it grows by the cohort's bytes.

Usage::

    python bench/memory_scaling.py                 # 1x, 2x, 5x, 10x of 40 runs x 1200 TRs x 200 ROIs, both modes
    python bench/memory_scaling.py --quick         # 100 ROIs; streamed at 1x, 3x, 10x, in memory at 10x
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

WINDOW = 40
TIMEPOINTS = 1200
BASE_RUNS = (
    40  # 2,280 training windows at 1x: above the engine's 2,048 prepare windows, so 1x already reads a full sample
)


def peak_rss_mb() -> float:
    """Peak resident set of this process in MB: ``VmHWM`` of ``/proc/self/status`` on Linux.

    ``getrusage(RUSAGE_SELF).ru_maxrss`` is the fallback elsewhere: on Linux it survives ``execve``,
    so a child started by a large parent reports at least the parent's peak.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cohort(n_runs: int, n_rois: int, seed: int = 0) -> Iterator:
    from workbench.data.recording import Recording

    for s, child in enumerate(np.random.SeedSequence(seed).spawn(n_runs)):
        data = np.random.default_rng(child).standard_normal((TIMEPOINTS, n_rois), dtype=np.float32)
        yield Recording(f"sub-{s:05d}", "1", data, 0.72)


def worker(n_runs: int, n_rois: int, stream: bool, steps: int) -> dict:
    """One measurement, in this process: build, train a few steps, embed; return the numbers."""
    import torch

    from workbench.data.cache import RunCollector
    from workbench.data.windows import WindowSet
    from workbench.evaluation import embed_windows
    from workbench.runs import embed_function, training_windows
    from workbench.train import build_method, make_train_config, train

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="workbench-memory-") as folder:
        tic = time.perf_counter()
        collector = RunCollector(Path(folder) / "runs", stream=stream)
        collector.add(_cohort(n_runs, n_rois))
        recordings = collector.runs
        build_s = time.perf_counter() - tic
        windows = training_windows(recordings, WINDOW)
        torch.manual_seed(0)
        method = build_method("fewshot", windows.spec(), "tiny")
        config = make_train_config(method, max_steps=steps, batch_size=32, seed=0, device="cpu")
        result = train(method, windows, config, Path(folder) / "run", progress=False)
        every = WindowSet(recordings, WINDOW, WINDOW)
        tic = time.perf_counter()
        embeddings = embed_windows(
            embed_function(result.method, result.standardizer), every, batch_size=256, out=Path(folder) / "emb.npy"
        )
        embed_s = time.perf_counter() - tic
        out = {
            "runs": n_runs,
            "mode": "stream" if stream else "memory",
            "rois": n_rois,
            "cohort_mb": n_runs * TIMEPOINTS * n_rois * 4 / 1e6,
            "peak_rss_mb": peak_rss_mb(),
            "build_s": build_s,
            "train_s": result.seconds,
            "train_windows": len(windows),
            "embedded_windows": int(embeddings.shape[0]),
            "embed_windows_per_s": embeddings.shape[0] / embed_s,
        }
        del embeddings
    return out


def run(quick: bool = True) -> dict:
    """Every (scale, mode) in a fresh process; ``flat`` says whether streamed peaks stay within 20 %.

    Quick: 100 ROIs, streamed at 1x, 3x and 10x, in memory at 10x only; full: 200 ROIs, both
    modes at 1x, 2x, 5x and 10x.
    """
    if quick:
        rois, plan = 100, [("stream", 1), ("stream", 3), ("stream", 10), ("memory", 10)]
    else:
        rois, plan = 200, [(mode, scale) for mode in ("stream", "memory") for scale in (1, 2, 5, 10)]
    rows = []
    for mode, scale in plan:
        command = [sys.executable, __file__, "--worker", str(BASE_RUNS * scale), "--rois", str(rois), "--mode", mode]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{mode} x{scale} exited with {done.returncode}: {done.stderr[-2000:]}")
        rows.append({"scale": scale, **json.loads(done.stdout.strip().splitlines()[-1])})
    streamed = [r["peak_rss_mb"] for r in rows if r["mode"] == "stream"]
    spread = max(streamed) / min(streamed) - 1.0
    return {
        "rows": rows,
        "stream_peak_spread": spread,
        "flat": spread <= 0.20,
        "note": f"{BASE_RUNS} runs x {TIMEPOINTS} TRs x {rois} ROIs at 1x; fewshot tiny, 3 steps; all windows embedded",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", type=int, metavar="RUNS", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("stream", "memory"), default="stream", help=argparse.SUPPRESS)
    parser.add_argument("--rois", type=int, default=200, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.rois, args.mode == "stream", args.steps)))
        return
    result = run(args.quick)
    print(f"{'scale':>5s} {'mode':7s} {'cohort MB':>9s} {'peak RSS MB':>11s} {'train s':>7s} {'embed win/s':>11s}")
    for r in result["rows"]:
        print(
            f"{r['scale']:5d} {r['mode']:7s} {r['cohort_mb']:9.0f} {r['peak_rss_mb']:11.0f} {r['train_s']:7.1f} "
            f"{r['embed_windows_per_s']:11.0f}"
        )
    print(f"streamed peak RSS spread {100 * result['stream_peak_spread']:.1f} % (flat: {result['flat']})")


if __name__ == "__main__":
    main()
