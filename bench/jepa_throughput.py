"""Brain-JEPA training throughput and peak memory per preset and grid size.

One training step = masks + target-encoder forward + context-encoder and predictor
forward/backward + AdamW step + EMA update, exactly what the engine runs. Every
configuration runs in its own subprocess so that peak memory is per configuration:
on the CPU the peak resident set (``VmHWM`` of ``/proc/self/status``, which includes
the interpreter and torch, about 0.3 GB), on CUDA ``torch.cuda.max_memory_allocated``
with bf16 autocast.

Usage::

    python bench/jepa_throughput.py                       # CPU, 2 threads, all presets and grids
    python bench/jepa_throughput.py --devices cpu cuda    # and the GPU when there is one
    python bench/jepa_throughput.py --presets tiny small --grids 94x160
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

# per device and preset: (batch size, timed steps); one untimed warm-up step precedes them
SETTINGS = {
    "cpu": {"tiny": (8, 4), "small": (4, 2), "base": (2, 1)},
    "cuda": {"tiny": (64, 20), "small": (32, 20), "base": (16, 10)},
}


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def run_one(
    device: str,
    preset: str,
    n_rois: int,
    n_frames: int,
    batch: int,
    steps: int,
    threads: int,
    overrides: dict | None = None,
    options: dict | None = None,
) -> dict:
    """Time ``steps`` training steps after one warm-up step; return the measurements.

    ``overrides`` change the preset's model config; ``options`` are engine settings
    (:class:`~workbench.train.TrainConfig` keys such as ``cpu_amp``, ``optimizer_impl``,
    ``compile``), applied as the engine applies them. The masks of step ``i`` come from seed
    ``i`` whatever the options, so the returned losses compare across options.
    """
    import numpy as np
    import torch

    from workbench.data.spec import DataSpec
    from workbench.models.jepa import BrainJEPA
    from workbench.train.settings import TrainConfig, autocast_context, make_optimizer

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    method = BrainJEPA(BrainJEPA.make_config(preset, **(overrides or {})), DataSpec(n_rois, n_frames))
    rng = np.random.default_rng(0)
    windows = rng.standard_normal((16, n_frames, 4)) @ rng.standard_normal((4, n_rois))
    method.prepare((windows + rng.standard_normal((16, n_frames, n_rois))).astype(np.float32))
    method.to(device).train()
    settings = TrainConfig(lr=1e-4, weight_decay=0.04, **(options or {}))
    optimizer = make_optimizer(method, settings)
    x = torch.randn(batch, n_frames, n_rois, device=device)
    autocast = autocast_context(torch.device(device), settings)
    loss_fn = torch.compile(method.training_loss) if settings.compile else method.training_loss
    losses = []

    def step(i: int) -> None:
        torch.manual_seed(i)
        with autocast:
            loss = loss_fn({"x": x})["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        method.after_step(i + 1, steps + 1)
        losses.append(float(loss))

    warmup = time.perf_counter()
    step(0)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start, cpu = time.perf_counter(), time.process_time()
    warmup = start - warmup
    for i in range(1, steps + 1):
        step(i)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    cpu = (time.process_time() - cpu) / steps
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else _peak_rss_mb()
    return {
        "device": device,
        "preset": preset,
        "grid": f"{n_rois}x{n_frames}",
        "tokens": n_rois * method.n_time_patches,
        "batch": batch,
        "steps": steps,
        "s_per_step": seconds,
        "cpu_s_per_step": cpu,
        "warmup_s": warmup,
        "losses": losses,
        "samples_per_s": batch / seconds,
        "peak_mb": peak,
        "params_m": sum(p.numel() for p in method.encoder.parameters()) / 1e6,
    }


def measure(spec: dict) -> dict:
    """:func:`run_one` with the keyword arguments ``spec`` in a fresh process (its own peak memory).

    Raises
    ------
    RuntimeError
        With the end of the child's stderr when it failed (e.g. killed for memory).
    """
    done = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    if done.returncode != 0:
        raise RuntimeError(f"exit code {done.returncode}:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_grid(devices: list[str], presets: list[str], grids: list[str], threads: int = 2) -> list[dict]:
    """One fresh process per (device, grid, preset); a failed one is a row with its ``error``."""
    import torch

    rows = []
    for device in devices:
        if device == "cuda" and not torch.cuda.is_available():
            print("cuda: no GPU visible, skipped", file=sys.stderr)
            continue
        for grid in grids:
            n_rois, n_frames = (int(v) for v in grid.split("x"))
            for preset in presets:
                batch, steps = SETTINGS[device][preset]
                spec = dict(
                    device=device,
                    preset=preset,
                    n_rois=n_rois,
                    n_frames=n_frames,
                    batch=batch,
                    steps=steps,
                    threads=threads,
                )
                try:
                    rows.append(measure(spec))
                except RuntimeError as exc:
                    rows.append({"device": device, "preset": preset, "grid": grid, "error": str(exc)})
                    print(f"{device} {preset} {grid} failed: {exc}", file=sys.stderr)
                    continue
                print(f"  done {device} {preset} {grid}: {rows[-1]['samples_per_s']:.2f} samples/s", file=sys.stderr)
    return rows


def run(quick: bool = True) -> dict:
    """Samples/s as the tokens ``R x T/p`` grow.

    Quick: ``tiny`` on 94, 200 and 450 ROIs x 160 frames (CPU); full: ``tiny``, ``small`` and
    ``base`` on the same grids, and on CUDA too when a GPU is visible.
    """
    grids = ["94x160", "200x160", "450x160"]
    if quick:
        return {"rows": measure_grid(["cpu"], ["tiny"], grids), "threads": 2}
    return {"rows": measure_grid(["cpu", "cuda"], ["tiny", "small", "base"], grids), "threads": 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", nargs="+", default=["cpu"], choices=["cpu", "cuda"])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small", "base"])
    parser.add_argument("--grids", nargs="+", default=["94x160", "450x160"], help="ROIsxFRAMES")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_one(**json.loads(args.worker))))
        return
    rows = [r for r in measure_grid(args.devices, args.presets, args.grids, args.threads) if "error" not in r]
    load = os.getloadavg()[0]
    print(
        f"\nBrain-JEPA training throughput (CPU threads {args.threads}, load average {load:.1f}; "
        "memory: CPU peak RSS, CUDA max allocated)"
    )
    header = (
        f"{'device':6} {'preset':6} {'grid':8} {'tokens':>6} {'enc M':>6} {'batch':>5} {'s/step':>8} "
        f"{'samples/s':>9} {'peak MB':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['device']:6} {r['preset']:6} {r['grid']:8} {r['tokens']:6d} {r['params_m']:6.2f} {r['batch']:5d} "
            f"{r['s_per_step']:8.2f} {r['samples_per_s']:9.2f} {r['peak_mb']:8.0f}"
        )


if __name__ == "__main__":
    main()
