"""The engine's speed options, each on and off, on the ``jepa`` step at the paper's ViT-Small shapes.

ViT-Small encoder (384 wide, 12 blocks, 6 heads), predictor 384 × 6, 94 ROIs × 160 frames in
patches of 16 frames (940 tokens), batch 8 — one step of masks, target forward, context and
predictor forward/backward, AdamW and the EMA update (``bench/jepa_throughput.py``'s worker, each
option in a fresh process). The options are :class:`~workbench.train.TrainConfig` settings:

=====================  ===============================================================
``cpu_amp``            bf16 autocast on the CPU (fast only with AVX512-BF16 / AMX)
``optimizer_impl``     ``foreach`` (multi-tensor) or ``fused`` AdamW instead of the loop
``compile``            ``torch.compile`` of the family's ``training_loss``
=====================  ===============================================================

The masks of step ``i`` are drawn from seed ``i`` under every option, so the losses compare:
bf16 must match float32 within bf16's tolerance. The mask collator is timed apart (its share of
a step says whether collation matters). Wall time on a shared machine is noisy: the CPU seconds
per step and the load average are printed beside it.

Usage::

    python bench/train_speed.py            # 3 timed steps per option
    python bench/train_speed.py --quick    # 1 timed step; no torch.compile, and no bf16 on a CPU without
                                           # bf16 instructions (emulated there: minutes per step)
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from jepa_throughput import measure  # noqa: E402
from machine import BF16_FLAGS, cpu_info  # noqa: E402

VIT_SMALL = dict(
    embed_dim=384,
    depth=12,
    num_heads=6,
    predictor_embed_dim=384,
    predictor_depth=6,
    predictor_num_heads=6,
    patch_size=16,
)
SHAPES = dict(preset="base", n_rois=94, n_frames=160, batch=8, overrides=VIT_SMALL)
OPTIONS = {
    "float32 (today)": {},
    "foreach AdamW": {"optimizer_impl": "foreach"},
    "fused AdamW": {"optimizer_impl": "fused"},
    "bf16 autocast": {"cpu_amp": True},
    "bf16 + fused": {"cpu_amp": True, "optimizer_impl": "fused"},
    "torch.compile": {"compile": True},
}
BF16_RTOL = 2e-2  # relative loss difference allowed after a few steps (bf16 keeps 8 mantissa bits)


def mask_seconds(repeats: int = 20) -> float:
    """Seconds per call of the jepa mask collator for one batch of the shapes above."""
    import torch

    from workbench.models.jepa.masks import SpatiotemporalMaskCollator
    from workbench.models.jepa.model import BrainJEPAConfig, time_patches

    config = BrainJEPAConfig(**VIT_SMALL)
    collator = SpatiotemporalMaskCollator(
        SHAPES["n_rois"], time_patches(SHAPES["n_frames"], config.patch_size), config.mask_config()
    )
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(repeats):
        collator(SHAPES["batch"], generator=generator)
    return (time.perf_counter() - start) / repeats


def run(quick: bool = False, device: str = "cpu", threads: int = 2) -> dict:
    """Measure every option; return rows with speed-ups against float32 and the bf16 check."""
    steps = 1 if quick else 3
    emulated_bf16 = device == "cpu" and not BF16_FLAGS & cpu_info()[1]
    rows = []
    for name, options in OPTIONS.items():
        if quick and options.get("compile"):
            continue
        if quick and emulated_bf16 and options.get("cpu_amp"):
            reason = "this CPU has no AVX512-BF16 or AMX, so bf16 is emulated; run without --quick to time it"
            rows.append({"option": name, "options": options, "skipped": reason})
            continue
        spec = dict(SHAPES, device=device, steps=steps, threads=threads, options=options)
        try:
            row = measure(spec)
        except RuntimeError as exc:
            rows.append({"option": name, "options": options, "error": str(exc)[-500:]})
            continue
        rows.append({"option": name, "options": options, **row})
        print(f"  done {name}: {row['s_per_step']:.2f} s/step, {row['cpu_s_per_step']:.2f} CPU s", file=sys.stderr)
    base = rows[0]
    for row in rows:
        if "s_per_step" in row and "s_per_step" in base:
            row["speedup"] = base["s_per_step"] / row["s_per_step"]
            row["cpu_speedup"] = base["cpu_s_per_step"] / row["cpu_s_per_step"]
            row["max_rel_loss_diff"] = max(
                abs(a - b) / abs(b) for a, b in zip(row["losses"], base["losses"], strict=True)
            )
    bf16 = [r for r in rows if r.get("options", {}).get("cpu_amp") and "max_rel_loss_diff" in r]
    return {
        "benchmark": "train_speed",
        "shapes": {**SHAPES, "tokens": 94 * 10},
        "steps": steps,
        "device": device,
        "threads": threads,
        "cpu": platform.processor() or platform.machine(),
        "load_average": os.getloadavg()[0],
        "mask_s_per_batch": mask_seconds(),
        "rows": rows,
        "bf16_matches_fp32": all(r["max_rel_loss_diff"] <= BF16_RTOL for r in bf16) if bf16 else None,
        "bf16_rtol": BF16_RTOL,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 timed step per option, no torch.compile")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    result = run(args.quick, args.device, args.threads)
    print(
        f"jepa step, ViT-Small encoder + predictor 384x6, 94 ROIs x 160 frames (940 tokens), batch 8, "
        f"{args.device}, {args.threads} threads, {result['steps']} timed step(s), load average "
        f"{result['load_average']:.1f}"
    )
    header = (
        f"{'option':18} {'s/step':>7} {'samples/s':>9} {'speed-up':>8} {'CPU s/step':>10} {'CPU x':>6} "
        f"{'warm-up s':>9} {'loss diff':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in result["rows"]:
        if "error" in r or "skipped" in r:
            why = r.get("skipped") or (r["error"].splitlines()[-1] if r["error"] else "")
            print(f"{r['option']:18} {'skipped' if 'skipped' in r else 'failed'}: {why}")
            continue
        print(
            f"{r['option']:18} {r['s_per_step']:7.2f} {r['samples_per_s']:9.2f} {r['speedup']:7.2f}x "
            f"{r['cpu_s_per_step']:10.2f} {r['cpu_speedup']:5.2f}x {r['warmup_s']:9.1f} {r['max_rel_loss_diff']:9.1e}"
        )
    matches = result["bf16_matches_fp32"]
    print(
        f"\nmask collator: {result['mask_s_per_batch'] * 1e3:.1f} ms per batch of 8; bf16 losses within "
        f"{result['bf16_rtol']:.0e} of float32: {'not measured' if matches is None else matches}"
    )


if __name__ == "__main__":
    main()
