"""The decoding tables of ``heatpain`` and ``haxby-slice``: baselines, untrained and trained families.

Runs :func:`workbench.notebook.decoding_metrics` on the tasks of ``06_decoding`` (each label's
windows of :data:`workbench.notebook.DECODING_TASKS`, per-run standardisation; ``heatpain`` 5 folds
by subject, ``haxby-slice`` one fold per run, rest excluded) with the ``tiny`` presets of ``fewshot``,
``jepa``, ``yaware`` and ``lfr`` (jepa's patch shrinks to 2 frames, 3 time patches; ``--families`` and
``--preset`` choose others, e.g. ``recvae`` on the slice), untrained and, with ``--steps N``, trained for N steps on
each training fold. Prints one table per task.

Usage::

    python bench/decoding_tables.py                 # baselines + untrained encoders
    python bench/decoding_tables.py --steps 200     # + trained encoders (one training per fold)
    python bench/decoding_tables.py --quick         # period and category only
    python bench/decoding_tables.py --only category --families recvae --preset small --steps 400
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings

import torch

from workbench.evaluation.decoding import decoding_table
from workbench.notebook import decoding_metrics, decoding_tasks, training_plan

FAMILIES = ("fewshot", "jepa", "yaware", "lfr")
TASKS = decoding_tasks(["period", "temperature", "rating", "regulation"], ["category"])


def run(
    quick: bool = False,
    steps: int | None = None,
    only: list[str] | None = None,
    stride: int | None = None,
    verbose: bool = False,
    families: tuple[str, ...] = FAMILIES,
    preset: str = "tiny",
) -> dict:
    """Decoding results per task (``{"dataset/label": results}``) and the seconds each took.

    ``only`` keeps the tasks of these labels; ``stride`` replaces the ``heatpain`` stride;
    ``verbose`` prints each task's table as soon as it is done; ``families`` are decoded with
    their ``preset``.
    """
    tasks = [t for t in TASKS if t["label"] in ("period", "category")] if quick else TASKS
    tasks = [t for t in tasks if only is None or t["label"] in only]
    if stride is not None:
        tasks = [t | {"stride": max(stride, t["stride"])} if t["dataset"] == "heatpain" else t for t in tasks]
    plan = training_plan(
        {"methods": list(families), "presets": dict.fromkeys(families, preset), "device": "cpu"}
        | ({"max_steps": steps} if steps else {})
    )
    out, seconds = {}, {}
    with tempfile.TemporaryDirectory() as runs, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for task in tasks:
            start = time.perf_counter()
            metrics, _ = decoding_metrics([task], plan, run_root=runs if steps else None, progress=False)
            out.update(metrics["tasks"])
            key = task["key"]
            seconds[key] = round(time.perf_counter() - start, 1)
            if verbose:
                print(f"\n{key} ({seconds[key]} s)\n{decoding_table(out[key])}", flush=True)
    return {"tasks": out, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="period and category only")
    parser.add_argument("--steps", type=int, default=None, help="also train each family for this many steps per fold")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--only", nargs="+", default=None, metavar="LABEL", help="only the tasks of these labels")
    parser.add_argument("--stride", type=int, default=None, help="step between heatpain windows (default 2)")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), help="families to decode with")
    parser.add_argument("--preset", default="tiny", help="preset of every family (default tiny)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    run(args.quick, args.steps, args.only, args.stride, True, tuple(args.families), args.preset)


if __name__ == "__main__":
    main()
