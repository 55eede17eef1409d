"""Training throughput of the ROI families (``fewshot``, ``jepa``, ``yaware``, ``lfr``) through the engine, per preset.

Each (family, preset) trains for a fixed number of optimiser steps on synthetic windows of
94 ROIs × 40 frames (``workbench.data.synthetic.continuous_y``: 12 subjects, 600 frames, a
continuous label ``y`` per subject, so ``yaware`` runs y-aware), with the family's own batch size
and optimiser, exactly as ``workbench train`` would: batches read from the window set, views,
forward, backward, optimiser step, hooks and the end-of-epoch checkpoints. ``prepare`` (bandwidth
fit, DPP selection) is timed apart. Samples/s counts training windows per second of wall time;
the CPU seconds per step (all threads of the process, ``time.process_time``) say what the step
costs when the machine is shared and wall time is not to be trusted (the load average is printed).

Usage::

    python bench/families_speed.py                      # CPU, 2 threads, every preset of each family
    python bench/families_speed.py --steps 100 --presets quick --rois 122
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from workbench.data.synthetic import continuous_y
from workbench.data.windows import WindowSet
from workbench.train import build_method, make_train_config, train


def run_one(family: str, preset: str | None, windows: WindowSet, steps: int, device: str) -> dict:
    """Train ``steps`` optimiser steps; return batch size, seconds and samples/s."""
    torch.manual_seed(0)
    method = build_method(family, windows.spec(), preset)
    config = make_train_config(method, max_steps=steps, device=device, seed=0)
    with tempfile.TemporaryDirectory() as out:
        start, cpu = time.perf_counter(), time.process_time()
        result = train(method, windows, config, out, progress=False)
        total, cpu = time.perf_counter() - start, time.process_time() - cpu
    n_params = sum(p.numel() for group in method.param_groups(0.0) for p in group["params"])  # trained ones
    return {
        "family": family,
        "preset": preset or "default",
        "batch": config.batch_size,
        "steps": result.steps,
        "train_s": result.seconds,
        "prepare_s": total - result.seconds,
        "samples_per_s": result.steps * config.batch_size / result.seconds,
        "cpu_s_per_step": cpu / result.steps,  # prepare included: small next to the steps
        "params": n_params,
    }


QUICK_PAIRS = (
    ("fewshot", "tiny"),
    ("fewshot", "default"),
    ("jepa", "tiny"),
    ("jepa", "small"),
    ("yaware", "tiny"),
    ("yaware", "quick"),
    ("lfr", "tiny"),
    ("lfr", "quick"),
)


def all_pairs(families: tuple[str, ...] = ("fewshot", "jepa", "yaware", "lfr")) -> list[tuple[str, str]]:
    """Every preset of each family, ``default`` first."""
    from workbench.methods import get_method

    return [(f, p) for f in families for p in ("default", *sorted(get_method(f).presets))]


def run(
    quick: bool = True,
    pairs: list[tuple[str, str]] | None = None,
    steps: int | None = None,
    rois: int = 94,
    frames: int = 40,
    threads: int = 2,
    device: str = "cpu",
) -> dict:
    """Rows of :func:`run_one` per (family, preset).

    Quick: :data:`QUICK_PAIRS` (the ROI families at ``tiny`` and their CPU-sized preset; ``jepa``'s
    default is ViT-Base), 3 steps each; full: every preset of ``fewshot``, ``jepa``, ``yaware`` and
    ``lfr`` at 30 steps (``recvae`` trains on volumes: ``bench/recvae_epoch.py``).
    """
    pairs = list(pairs or (QUICK_PAIRS if quick else all_pairs()))
    steps = steps or (3 if quick else 30)
    torch.set_num_threads(threads)
    # a warm-up run: the first switch to deterministic kernels imports torch's compiler stack (seconds)
    run_one(pairs[0][0], "tiny", WindowSet(continuous_y(3, rois, 120), frames, frames), 1, "cpu")
    recordings = continuous_y(n_subjects=12, n_rois=rois, n_timepoints=600)
    windows = WindowSet(recordings, length=frames, stride=frames // 4)
    rows = [
        run_one(family, None if preset == "default" else preset, windows, steps, device) for family, preset in pairs
    ]
    return {
        "rows": rows,
        "windows": len(windows),
        "shape": f"{frames} frames x {rois} ROIs",
        "threads": threads,
        "device": device,
        "load_average": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=["fewshot", "jepa", "yaware", "lfr"])
    parser.add_argument("--presets", nargs="+", default=None, help="default: every preset of each family")
    parser.add_argument("--steps", type=int, default=30, help="optimiser steps timed per configuration")
    parser.add_argument("--rois", type=int, default=94)
    parser.add_argument("--frames", type=int, default=40, help="window length W")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    pairs = (
        all_pairs(tuple(args.families))
        if args.presets is None
        else [(f, p) for f in args.families for p in args.presets]
    )
    result = run(False, pairs, args.steps, args.rois, args.frames, args.threads, args.device)
    print(
        f"{result['windows']} windows of {args.frames} frames × {args.rois} ROIs, {args.threads} threads on "
        f"{args.device}, {args.steps} steps each; load average {result['load_average']:.1f}"
    )
    print(
        f"{'family':8s} {'preset':8s} {'batch':>5s} {'params':>10s} {'prepare s':>9s} {'s/step':>7s} "
        f"{'samples/s':>9s} {'300 steps s':>11s} {'CPU s/step':>10s}"
    )
    for row in result["rows"]:
        per_step = row["train_s"] / row["steps"]
        print(
            f"{row['family']:8s} {row['preset']:8s} {row['batch']:5d} {row['params']:10,d} "
            f"{row['prepare_s']:9.2f} {per_step:7.3f} {row['samples_per_s']:9.0f} {300 * per_step:11.1f} "
            f"{row['cpu_s_per_step']:10.3f}"
        )


if __name__ == "__main__":
    main()
