"""Label-efficiency curves at a pre-training budget: what pre-training buys when labels are few.

Runs the decoding protocol of ``06_decoding`` (:func:`workbench.notebook.decoding_metrics`) on one
or more tasks with the families pre-trained for exactly ``--steps`` optimiser steps on each
training fold (``jepa`` tiny, ``yaware`` quick, ``lfr`` quick by default: the presets of the
learning curves), probes fitted on ``n`` labelled training subjects (runs for ``haxby-slice``) over
``--draws`` random draws, and, with ``--finetune``, every family fine-tuned end to end. Prints the
curves table of every task, then the headline (the smallest ``n`` at which each encoder's best
readout matches the best baseline trained on all labels), and writes the metrics to ``--out``.

Usage::

    python bench/label_efficiency.py --tasks heatpain/period --steps 1000 --finetune
    python bench/label_efficiency.py --tasks haxby-slice/category --steps 1000 --finetune
    python bench/label_efficiency.py --tasks --transfer --steps 1000  # only heatpain run 03 -> run 07
    python bench/label_efficiency.py --tasks heatpain/period --steps 20 --draws 1 --sizes 1   # smoke
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import torch

from workbench.evaluation.finetune import FinetuneSettings
from workbench.notebook import decoding_metrics, decoding_tasks, training_plan
from workbench.notebook.decoding import TRANSFER_TASKS
from workbench.viz.decoding import curves_table, markdown_table, matching_table

FAMILIES = {"jepa": "tiny", "yaware": "quick", "lfr": "quick"}


def _tasks(names: list[str], transfer: bool, haxby_folds: int) -> list[dict]:
    heatpain = [n.split("/", 1)[1] for n in names if n.startswith("heatpain/")]
    haxby = [n.split("/", 1)[1] for n in names if n.startswith("haxby-slice/")]
    return decoding_tasks(heatpain, haxby, haxby_folds=haxby_folds, transfer=list(TRANSFER_TASKS) if transfer else [])


def run(args: argparse.Namespace) -> dict:
    """The decoding metrics of the chosen tasks, with the seconds they took under ``"seconds"``."""
    families = dict(p.partition(":")[::2] for p in args.families)
    plan = training_plan(
        {
            "methods": list(families),
            "presets": {m: p or FAMILIES.get(m, "quick") for m, p in families.items()},
            "device": args.device,
            "steps": dict.fromkeys(families, args.steps),
        }
    )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as runs, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics, _ = decoding_metrics(
            _tasks(args.tasks, args.transfer, args.haxby_folds),
            plan,
            run_root=runs,
            attentive=False,
            folds=args.folds,
            sizes={"subject": args.sizes, "run": [n for n in args.sizes if n <= args.max_runs]},
            n_draws=args.draws,
            finetune=args.finetune,
            finetune_draws=args.finetune_draws,
            finetune_settings=FinetuneSettings(max_epochs=args.finetune_epochs),
            finetune_untrained=args.finetune_untrained,
            progress=args.progress,
        )
    metrics["seconds"] = round(time.perf_counter() - start, 1)
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="*", default=["heatpain/period"], help="dataset/label; none with --transfer")
    parser.add_argument("--transfer", action="store_true", help="also the transfer task (heatpain run 03 -> run 07)")
    parser.add_argument("--families", nargs="+", default=[f"{m}:{p}" for m, p in FAMILIES.items()])
    parser.add_argument("--steps", type=int, default=1000, help="exact optimiser steps of each per-fold pre-training")
    parser.add_argument("--folds", type=int, default=3, help="folds by subject (heatpain)")
    parser.add_argument("--haxby-folds", type=int, default=4, help="folds of whole runs (haxby-slice)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="labelled subjects (runs)")
    parser.add_argument("--max-runs", type=int, default=8, help="largest labelled-run size of haxby-slice")
    parser.add_argument("--draws", type=int, default=5, help="draws per size for the probes")
    parser.add_argument("--finetune", action="store_true", help="add the fine-tuned rows")
    parser.add_argument("--finetune-draws", type=int, default=1)
    parser.add_argument("--finetune-epochs", type=int, default=30)
    parser.add_argument("--finetune-untrained", action="store_true", help="also train the untrained twins from scratch")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--progress", action="store_true", help="progress bars")
    parser.add_argument("--out", type=Path, default=None, help="write the metrics as JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    metrics = run(args)
    for key, result in metrics["tasks"].items():
        if len(result["meta"]["sizes"]) > 1:
            print(f"\n### {key}\n\n{markdown_table(curves_table(result))}", flush=True)
    print(f"\n### headline\n\n{markdown_table(matching_table(metrics['tasks']))}")
    print(f"\n{metrics['seconds']} s")
    if args.out:
        args.out.write_text(json.dumps(metrics, indent=1, default=str))


if __name__ == "__main__":
    main()
