"""``python -m bench``: run every benchmark, write ``bench/results.json`` and ``docs/benchmarks.md``.

Each module under ``bench/`` named in :data:`BENCHMARKS` exposes ``run(quick: bool) -> dict``.
A benchmark that raises is recorded with its error and the suite goes on; one whose module is
absent is recorded as skipped. ``--only`` runs a subset and
keeps the other entries of an existing ``results.json``, so the page always shows the latest
measurement of every benchmark. The machine (CPU model and flags, cores, GPU, versions) is
recorded with the results.

Usage::

    python -m bench --quick                       # every benchmark, small sizes (minutes)
    python -m bench                               # the full sizes (hours on 2 CPU cores)
    python -m bench --quick --only memory_scaling --only jepa_throughput
    python -m bench --docs-only                   # rewrite docs/benchmarks.md from results.json
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import platform
import resource
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from bench.docs import write_docs
from bench.machine import cpu_info

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.json"
DOCS = ROOT / "docs" / "benchmarks.md"
BENCHMARKS = (
    "families_speed",
    "jepa_throughput",
    "train_speed",
    "episodes_speed",
    "fetch_speed",
    "windows_memory",
    "memory_scaling",
    "recvae_epoch",
    "fewshot_quality",
    "recvae_quality",
    "haxby_probe",
    "heatpain_alignment",
    "learning_curves",
)
CPU_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "amx_int8")


def machine() -> dict:
    """CPU model and the flags that matter for torch, cores, GPUs, versions, load."""
    import numpy
    import torch

    model, flags = cpu_info()
    gpus = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    )
    return {
        "cpu": model,
        "cpu_flags": [f for f in CPU_FLAGS if f in flags],
        "cores": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "gpus": gpus,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "os": platform.platform(),
        "load_average": os.getloadavg()[0],
    }


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished child processes (benchmarks run some in children)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def run_benchmark(name: str, quick: bool) -> dict:
    """``bench.<name>.run(quick)`` timed (wall and CPU s); an exception becomes ``{"ok": False, "error": ...}``."""
    if importlib.util.find_spec(f"bench.{name}") is None:
        return {"ok": False, "skipped": True, "error": f"bench/{name}.py is not in this tree"}
    begin, cpu = time.perf_counter(), _cpu_seconds()
    try:
        result = importlib.import_module(f"bench.{name}").run(quick)
    except Exception as exc:  # a failing benchmark must not stop the suite
        return {
            "ok": False,
            "seconds": time.perf_counter() - begin,
            "cpu_s": _cpu_seconds() - cpu,
            "error": f"{type(exc).__name__}: {exc}"[-4000:],
            "traceback": traceback.format_exc()[-4000:],
        }
    return {"ok": True, "seconds": time.perf_counter() - begin, "cpu_s": _cpu_seconds() - cpu, "result": result}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: the whole suite in minutes")
    parser.add_argument("--only", action="append", default=[], metavar="NAME", help=f"one of {', '.join(BENCHMARKS)}")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the JSON written (default bench/results.json)")
    parser.add_argument("--docs", type=Path, default=DOCS, help="the page written (default docs/benchmarks.md)")
    parser.add_argument("--docs-only", action="store_true", help="only rewrite the page from --results")
    args = parser.parse_args(argv)
    names = [n for item in args.only for n in item.split(",") if n]
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose among {', '.join(BENCHMARKS)}")
    previous = json.loads(args.results.read_text()) if args.results.exists() else {}
    if args.docs_only:
        write_docs(previous, args.docs)
        print(f"wrote {args.docs}")
        return 0

    from workbench.files import write_json

    suite_begin = time.perf_counter()
    results = {
        "machine": machine(),
        "quick": args.quick,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "benchmarks": dict(previous.get("benchmarks", {})) if names else {},
    }
    for name in names or BENCHMARKS:
        print(f"[bench] {name} ...", flush=True)
        entry = run_benchmark(name, args.quick)
        entry["quick"] = args.quick
        results["benchmarks"][name] = entry
        state = "ok" if entry["ok"] else ("skipped" if entry.get("skipped") else "FAILED")
        print(
            f"[bench] {name}: {state} in {entry.get('seconds', 0.0):.0f} s ({entry.get('cpu_s', 0.0):.0f} CPU s)",
            flush=True,
        )
        if not entry["ok"] and not entry.get("skipped"):
            print(entry["error"], file=sys.stderr)
        results["suite_seconds"] = time.perf_counter() - suite_begin
        results["suite_cpu_s"] = sum(e.get("cpu_s", 0.0) for e in results["benchmarks"].values())
        write_json(args.results, results, default=str)  # every finished benchmark is kept,
        write_docs(results, args.docs)  # and shown, should the suite be stopped
    print(f"[bench] {time.perf_counter() - suite_begin:.0f} s; wrote {args.results} and {args.docs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
