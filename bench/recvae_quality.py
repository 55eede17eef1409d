"""What the ``recvae`` family learns on ``synthetic-volumes``: identification, reconstruction, dynamics.

Three measurements, printed as tables:

1. **Identification** (closed-set, ``docs/evaluation.md``): the encoder trains on the first half of
   every run, support windows come from the first half, queries from the second. ``closed_set``
   always adds FC fingerprinting and LDA on FC, whose ``V(V−1)/2`` voxel-pair features are only
   affordable on a coarse grid, so the runs are resampled to ``--eval-grid`` (default 4×5×4 = 80
   voxels, 3160 pairs) for that table; beside them: the same ``recvae`` untrained, and
   ``mean-image`` (a window's mean frame, which carries the subjects' static offset maps). A
   second table repeats ``recvae`` and ``mean-image`` on the full 16×20×16 grid with the same
   pools and episodes, without the FC baselines.
2. **Reconstruction, training vs held-out** (``--folds`` folds): leave one subject out on
   ``synthetic-volumes``, one run out on a one-subject ``--dataset`` (``haxby-25mm``,
   ``haxby-slice``); the model trains on all frames of the other runs; per-voxel MSE (units of
   the per-run scaled frames) on the training runs with their subject's ``z_s``, and on the
   second half of a held-out run with ``z_s = 0``, with a ``z_s`` fitted on its first half
   (network frozen) and, for a held-out run of a training subject, with that subject's ``z_s``.
3. **Dynamics**: sorted moduli of the eigenvalues of the learned ``F`` against the generator's.

Usage::

    python bench/recvae_quality.py                       # ~10 min on 2 CPU cores
    python bench/recvae_quality.py --epochs 20 --folds 1 --episodes 200   # quick look
    python bench/recvae_quality.py --parts reconstruct --dataset haxby-25mm --window 20 --folds 12
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from workbench.data.catalog import load_recordings
from workbench.data.volume_runs import prepare_volume_runs
from workbench.data.windows import WindowSet
from workbench.evaluation import closed_set, embed_windows, identification_pools, results_table, run_episodes
from workbench.models.recvae import fit_subject_noise, reconstruction_mse, subject_row
from workbench.runs import TrainedFactory, untrained_factory


def mean_image_factory(train_windows):
    """A window's mean frame: the static image of the run (no training)."""
    del train_windows
    return lambda windows: np.asarray(windows, dtype=np.float32).mean(axis=1)


def identification(runs, factories, window, ks, episodes, seed, title):
    results = closed_set(runs, window, factories, k_shots=ks, n_episodes=episodes, seed=seed)
    print(f"\n{title}\n" + results_table(results))


def identification_without_baselines(runs, factories, window, ks, episodes, seed, title):
    """The closed-set pools and episodes of ``closed_set``, for encoders only (no FC baselines)."""
    support, query = identification_pools(runs, window)
    train = WindowSet(runs, window, max(1, window // 4), part="first", subjects=support.subjects)
    print(f"\n{title}\n\n| method | " + " | ".join(f"K = {k}" for k in ks) + " |\n|---|" + "---|" * len(ks))
    for name, factory in factories.items():
        embed = factory(train)
        s_emb, q_emb = embed_windows(embed, support), embed_windows(embed, query)
        n_query = min(5, int(np.bincount(query.labels).min()))
        cells = []
        for k in ks:
            result = run_episodes(
                s_emb, support.labels, q_emb, query.labels, None, k, n_query=n_query, n_episodes=episodes, seed=seed
            )
            summary = result.summary()["accuracy"]
            cells.append(f"{summary['mean']:.2f} ± {summary['ci']:.2f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


def _run_name(rec) -> str:
    return f"{rec.subject}/{rec.session}"


def reconstruction(runs, args, train_overrides):
    """Leave one subject out (several subjects) or one run out (one subject); per-voxel MSE per run.

    Training runs use their subject's trained ``z_s``; a held-out run is scored on its second half
    with ``z_s = 0``, with a ``z_s`` fitted on its first half (network frozen) and, when its subject
    trained, with that subject's ``z_s``.
    """
    by_subject = len({r.subject for r in runs}) > 1
    unit = (lambda r: r.subject) if by_subject else _run_name
    held_units = sorted({unit(r) for r in runs})[: args.folds]
    rows, eigen = [], []
    for held in held_units:
        train_runs = [r for r in runs if unit(r) != held]
        windows = WindowSet(train_runs, args.window, max(1, args.window // 2))
        factory = TrainedFactory(
            "recvae", args.preset, {}, train_overrides, run_root=args.runs, device="cpu", progress=False
        )
        model, names = factory.fit(windows).method, list(windows.subjects)
        for rec in train_runs:
            z = subject_row(model, names, rec.subject)
            rows.append((held, "training", _run_name(rec), "trained z_s", reconstruction_mse(model, rec.data[None], z)))
        for rec in (r for r in runs if unit(r) == held):
            half = rec.n_timepoints // 2
            first, second = rec.data[None, :half], rec.data[None, half:]
            choices = {"z_s = 0": None, "fitted z_s": fit_subject_noise(model, first)}
            if (own := subject_row(model, names, rec.subject)) is not None:
                choices["trained z_s"] = own
            for label, z in choices.items():
                rows.append((held, "held-out", _run_name(rec), label, reconstruction_mse(model, second, z)))
        eigen.append(np.sort(np.abs(np.linalg.eigvals(model.transition.F.numpy()))))
    what = "subject" if by_subject else "run"
    print(f"\nReconstruction on {args.dataset}, per-voxel MSE of the scaled frames (leave one {what} out)\n")
    print("| held out | | run | z_s | MSE |\n|---|---|---|---|---|")
    for held, kind, name, z, mse in rows:
        print(f"| {held} | {kind} | {name} | {z} | {mse:.4g} |")
    for kind, z in sorted({(r[1], r[3]) for r in rows}, reverse=True):
        values = [r[4] for r in rows if r[1] == kind and r[3] == z]
        ci = 1.96 * np.std(values) / np.sqrt(len(values))
        print(f"mean {kind:9s} {z:12s}: {np.mean(values):.4g} ± {ci:.2g} (n = {len(values)})")
    return eigen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--eval-grid", default="4,5,4")
    parser.add_argument("--scaling", default="zscore")
    parser.add_argument("--k-shots", default="1,2,4,8")
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--folds", type=int, default=4, help="held-out subjects for the reconstruction table")
    parser.add_argument("--runs", default="runs/bench-recvae-quality")
    parser.add_argument("--parts", default="identify,reconstruct")
    parser.add_argument("--dataset", default="synthetic-volumes", help="for the reconstruction part (haxby-25mm, ...)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    args.runs = Path(args.runs)
    ks = [int(k) for k in args.k_shots.split(",")]
    parts = set(args.parts.split(","))
    raw = load_recordings("synthetic-volumes", progress=False)
    true = np.sort(np.abs(np.linalg.eigvals(np.array(raw[0].meta["F"]))))
    runs = prepare_volume_runs(raw, scaling=args.scaling)
    train_overrides = {"epochs": args.epochs}
    t0 = time.perf_counter()
    if "identify" in parts:
        eval_grid = tuple(int(g) for g in args.eval_grid.split(","))
        coarse = prepare_volume_runs(raw, grid=eval_grid, scaling=args.scaling)
        for grid_runs, name, with_baselines in (
            (coarse, "×".join(map(str, eval_grid)), True),
            (runs, "16×20×16", False),
        ):
            factories = {
                "recvae": TrainedFactory(
                    "recvae", args.preset, {}, train_overrides, run_root=args.runs, device="cpu", progress=False
                ),
                "recvae-untrained": untrained_factory("recvae", args.preset, device="cpu"),
                "mean-image": mean_image_factory,
            }
            title = f"synthetic-volumes at {name} ({grid_runs[0].data.shape[1]} voxels), W = {args.window}"
            run = identification if with_baselines else identification_without_baselines
            run(grid_runs, factories, args.window, ks, args.episodes, 0, title)
            print(f"[{time.perf_counter() - t0:.0f} s]", flush=True)
    if "reconstruct" in parts:
        if args.dataset != "synthetic-volumes":
            runs = prepare_volume_runs(load_recordings(args.dataset, progress=False), scaling=args.scaling)
        eigen = reconstruction(runs, args, train_overrides)
        if args.dataset == "synthetic-volumes":
            print(f"\neigenvalue moduli of F, generator: {np.round(true, 3).tolist()}")
        for e in eigen:
            error = f"  max |error| {np.abs(e - true).max():.3f}" if args.dataset == "synthetic-volumes" else ""
            print(f"  learned: {np.round(e, 3).tolist()}{error}")
        print(f"[{time.perf_counter() - t0:.0f} s]")


def run(quick: bool = True) -> dict:
    """The tables as printed. Quick: identification only, 5 epochs, 100 episodes, runs in a temporary
    folder; full: the script's defaults."""
    import tempfile

    from bench.script import script_output

    with tempfile.TemporaryDirectory(prefix="workbench-recvae-") as folder:
        arguments = ["--epochs", "5", "--episodes", "100", "--parts", "identify", "--k-shots", "1,4"] if quick else []
        return script_output(__file__, [*arguments, "--runs", folder])


if __name__ == "__main__":
    main()
