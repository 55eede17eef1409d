"""Memory benchmark: stream a cohort larger than it is wise to load through WindowDataset.

Synthesises ``--subjects`` runs of ``--timepoints`` x ``--rois`` float32 one subject at a
time into a memmap cache (:func:`workbench.data.cache.memmap_recordings` consuming a
generator), fits a :class:`Standardizer` on the first half of every run, then iterates
a shuffled DataLoader over all windows (W=40, stride 40) and prints throughput and
memory. The default size is 2,000 x 400 x 1,200 (3.84 GB on disk).

Memory figures, all for this process (from ``/proc/self/status`` and ``getrusage``):

- ``VmHWM`` / ``ru_maxrss``: peak resident set, anonymous memory *plus* file-backed
  pages mapped into the process (memory-mapped cache files that were touched).
- ``RssAnon``: memory the process owns (heap: arrays, tensors, interpreter, libraries'
  allocations). Its peak is sampled after every batch.
- ``RssFile``: mapped file pages currently resident; they belong to the kernel's page
  cache, are shared and reclaimable, and are not the process's own memory.

Reads release the mapped pages again (``madvise(MADV_DONTNEED)``), so ``VmHWM`` stays
bounded by a batch rather than growing with every file touched.

Usage::

    python bench/windows_memory.py                      # full size, temp cache removed afterwards
    python bench/windows_memory.py --subjects 50 --max-batches 20
    python bench/windows_memory.py --direct-batches     # batches as dataset[indices], no collation
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from workbench.data.cache import memmap_recordings
from workbench.data.dataset import WindowDataset
from workbench.data.normalize import Standardizer
from workbench.data.recording import Recording
from workbench.data.windows import WindowSet

WINDOW = 40  # frames per window; stride equals the window (no overlap)


def _status_mb() -> dict[str, float]:
    """Memory lines of /proc/self/status in MB (Linux); empty elsewhere."""
    out = {}
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                name, _, value = line.partition(":")
                if name in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                    out[name] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return out


def _cohort(n_subjects: int, n_timepoints: int, n_rois: int, seed: int) -> Iterator[Recording]:
    """One random run at a time, with per-ROI offsets and scales for the Standardizer to undo."""
    roi_rng = np.random.default_rng(seed)
    offset = roi_rng.uniform(-5, 5, n_rois).astype(np.float32)
    scale = roi_rng.uniform(0.5, 3, n_rois).astype(np.float32)
    for s, child in enumerate(np.random.SeedSequence(seed).spawn(n_subjects)):
        data = np.random.default_rng(child).standard_normal((n_timepoints, n_rois), dtype=np.float32)
        data *= scale
        data += offset
        yield Recording(f"bench-{s + 1:05d}", "1", data, 0.72)


def measure(args: argparse.Namespace, cache_dir: Path) -> dict:
    """Write, fit and iterate as the module says; print the figures and return them."""
    need = args.subjects * args.timepoints * args.rois * 4
    free = shutil.disk_usage(cache_dir).free
    if free < 1.1 * need:
        raise SystemExit(f"{cache_dir} has {free / 1e9:.2f} GB free, the cohort needs {need / 1e9:.2f} GB")
    print(f"start: {_status_mb()}")

    tic = time.perf_counter()
    cohort = tqdm(
        _cohort(args.subjects, args.timepoints, args.rois, args.seed),
        total=args.subjects,
        desc="write",
        disable=args.quiet,
    )
    recordings = memmap_recordings(cohort, cache_dir, key=lambda rec: f"seed{args.seed}")
    write_s = time.perf_counter() - tic
    on_disk = sum(Path(rec.meta["cache_file"]).stat().st_size for rec in recordings)
    print(
        f"cohort: {args.subjects} x {args.timepoints} TRs x {args.rois} ROIs, {on_disk / 1e9:.2f} GB on disk, "
        f"written in {write_s:.1f} s; memory after writing: {_status_mb()}"
    )

    tic = time.perf_counter()
    standardizer = Standardizer("dataset").fit(WindowSet(recordings, WINDOW, WINDOW, part="first"))
    print(f"standardizer fitted on the first halves in {time.perf_counter() - tic:.1f} s")

    windows = WindowSet(recordings, WINDOW, WINDOW, part="all")
    dataset = WindowDataset(windows, standardizer)
    generator = torch.Generator().manual_seed(args.seed)
    if args.direct_batches:  # dataset[indices] returns the batch: no per-item collation
        sampler = torch.utils.data.BatchSampler(
            torch.utils.data.RandomSampler(dataset, generator=generator), args.batch_size, drop_last=False
        )
        loader = torch.utils.data.DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=args.workers)
    else:
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=args.batch_size, shuffle=True, generator=generator, num_workers=args.workers
        )
    n_batches = len(loader) if args.max_batches is None else min(args.max_batches, len(loader))
    peak_anon, seen, checksum = 0.0, 0, 0.0
    tic, cpu = time.perf_counter(), time.process_time()
    for batch in tqdm(loader, total=n_batches, desc="iterate", disable=args.quiet):
        checksum += float(batch["x"].sum())  # consume the batch
        seen += batch["x"].shape[0]
        peak_anon = max(peak_anon, _status_mb().get("RssAnon", 0.0))
        if seen >= n_batches * args.batch_size:
            break
    loop_s, cpu_s = time.perf_counter() - tic, time.process_time() - cpu

    status = _status_mb()
    print(
        f"windows: {len(windows)} in the set, {seen} read in {loop_s:.1f} s = {seen / loop_s:,.0f} windows/s "
        f"({seen * WINDOW * args.rois * 4 / loop_s / 1e6:,.0f} MB/s); {seen / cpu_s:,.0f} windows per CPU-second "
        f"(process CPU time, robust to a busy machine); mean of z-scored values "
        f"{checksum / (seen * WINDOW * args.rois):+.4f}"
    )
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"peak RSS: ru_maxrss {maxrss:.0f} MB, "
        f"VmHWM {status.get('VmHWM', float('nan')):.0f} MB (anonymous + mapped file pages); "
        f"peak RssAnon {peak_anon:.0f} MB (owned memory, sampled per batch); "
        f"now RssFile {status.get('RssFile', float('nan')):.0f} MB; cohort {on_disk / 1e6:,.0f} MB"
    )
    return {
        "cohort": f"{args.subjects} x {args.timepoints} TRs x {args.rois} ROIs",
        "cohort_mb": on_disk / 1e6,
        "write_s": write_s,
        "write_mb_per_s": on_disk / 1e6 / write_s,
        "windows_read": seen,
        "windows_per_s": seen / loop_s,
        "mb_per_s": seen * WINDOW * args.rois * 4 / loop_s / 1e6,
        "windows_per_cpu_s": seen / cpu_s,
        "peak_rss_mb": status.get("VmHWM", maxrss),  # ru_maxrss keeps the peak of the parent across exec
        "peak_rss_anon_mb": peak_anon,
    }


def run(quick: bool = True) -> dict:
    """In a fresh process (its peak RSS is its own). Quick: 100 runs (192 MB); full: 2,000 runs (3.84 GB).

    Batches are read as ``dataset[indices]``, from a temporary cache.
    """
    subjects = "100" if quick else "2000"
    command = [sys.executable, __file__, "--subjects", subjects, "--direct-batches", "--json", "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"windows_memory exited with {done.returncode}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=2000)
    parser.add_argument("--rois", type=int, default=400)
    parser.add_argument("--timepoints", type=int, default=1200)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--max-batches", type=int, default=None, help="stop after this many batches (default: all)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (memory is measured in-process)")
    parser.add_argument(
        "--direct-batches",
        action="store_true",
        help="read batches as dataset[indices] (batch_size=None) instead of collating items",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, default=None, help="kept if given; default a temp dir, removed")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line at the end")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args()
    if args.cache_dir is not None:
        args.cache_dir.mkdir(parents=True, exist_ok=True)
        result = measure(args, args.cache_dir)
    else:
        cache_dir = Path(tempfile.mkdtemp(prefix="workbench-bench-"))
        try:
            result = measure(args, cache_dir)
        finally:
            shutil.rmtree(cache_dir, ignore_errors=True)
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
