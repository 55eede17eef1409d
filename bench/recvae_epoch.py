"""Speed and memory of one RecVAE training epoch: batched over time versus frame by frame.

Synthetic data: ``--subjects`` sequences of ``--timepoints`` random volumes on ``--grid``
(default 4 × 120 × 91 × 109 × 91, the reference's ADNI layout). One epoch is
``subjects / batch`` optimiser steps (AdamW) of the full model: encoder, inference head
unrolled over time, decoder on ``h_t + z_s``, the RecVAE loss (reconstruction + temporal
+ z-sparsity) and the ridge statistics of ``F``, solved at the end of the epoch.

Modes, the same modules and the same loss:

- ``batched``: the encoder and the decoder run once on all ``S·T`` frames of the batch
  (:class:`workbench.models.recvae.RecurrentVAE`);
- ``chunk-N``: the same, at most ``N`` frames per encoder/decoder call (the family's
  ``frame_chunk`` option; ``--chunks`` lists the sizes);
- ``framewise``: the reference's loop, encoder → head → decoder called once per time
  step on the ``S`` volumes of that step.

Each (device, mode) runs in a fresh process, so the peak resident set (``ru_maxrss``) is
its own; on CUDA the peak of ``torch.cuda.max_memory_allocated`` is reported too. The
first ``--warmup`` steps (allocator, cuDNN autotuning) are not timed; each epoch is timed on its
own and the best (least disturbed by other load on the machine) and the median are reported.

On Linux, glibc serves tensors larger than ~32 MB with ``mmap`` and returns them to the
system when freed, so every step of the batched mode page-faults its activations anew
(visible as system time). Running with ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000``
(inherited by the child processes) keeps the heap and removes that cost.

Usage::

    python bench/recvae_epoch.py --quick                  # 31×37×31 grid, 4 × 24 frames, seconds
    python bench/recvae_epoch.py                          # full size on the CPU
    python bench/recvae_epoch.py --devices cpu cuda       # also on a GPU
    python bench/recvae_epoch.py --chunks 4 16 60         # also frame_chunk = 4, 16, 60
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from workbench.losses.recvae import NoiseScales, recvae_loss
from workbench.models.recvae import LinearTransition, RecurrentVAE, RecVAEOutput, reparameterize
from workbench.models.recvae.recurrence import PosteriorPath

QUICK = {"grid": (31, 37, 31), "timepoints": 24}


def framewise_forward(model: RecurrentVAE, volumes: torch.Tensor, h0: torch.Tensor, z_s: torch.Tensor) -> RecVAEOutput:
    """The reference's loop: encoder, head and decoder once per time step on ``(S, 1, X, Y, Z)``."""
    h = h0.expand(volumes.shape[0], -1)
    recon, states, means, log_vars, previous = [], [], [], [], []
    for t in range(volumes.shape[1]):
        mu, log_var = model.head(model.encoder(volumes[:, t]), h)
        previous.append(h)
        h = reparameterize(mu, log_var)
        states.append(h)
        means.append(mu)
        log_vars.append(log_var)
        recon.append(model.decoder(h + z_s))
    path = PosteriorPath(*(torch.stack(s, 1) for s in (states, means, log_vars, previous)))
    return RecVAEOutput(torch.stack(recon, 1), path)


def run_one(device: str, mode: str, args: argparse.Namespace) -> dict:
    """Train ``warmup`` untimed steps then ``epochs`` timed epochs; return the figures."""
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(device)
    grid, n_subj, n_time = tuple(args.grid), args.subjects, args.timepoints
    data = torch.randn(n_subj, n_time, *grid, device=dev)
    model = RecurrentVAE(grid, output="linear").to(dev).train()
    transition = LinearTransition(model.latent_dim, rho=0.1).to(dev)
    noise = NoiseScales().to(dev)
    z = torch.nn.Parameter(0.01 * torch.randn(n_subj, model.latent_dim, device=dev))
    optimiser = torch.optim.AdamW([*model.parameters(), z], lr=1e-4)
    h0 = torch.zeros(model.latent_dim, device=dev)
    if mode == "framewise":
        forward = lambda v, h, zs: framewise_forward(model, v, h, zs)  # noqa: E731
    else:
        chunk = None if mode == "batched" else int(mode.removeprefix("chunk-"))
        forward = lambda v, h, zs: model(v, h, zs, frame_chunk=chunk)  # noqa: E731
    batches = [torch.arange(i, min(i + args.batch, n_subj), device=dev) for i in range(0, n_subj, args.batch)]

    def step(idx: torch.Tensor) -> float:
        volumes = data[idx]
        out = forward(volumes, h0, z[idx])
        path = out.path
        terms = recvae_loss(
            volumes.flatten(0, 1).unsqueeze(1),
            out.reconstruction.flatten(0, 1),
            path.h.flatten(0, 1),
            path.mu.flatten(0, 1),
            path.log_var.flatten(0, 1),
            transition(path.h_prev).flatten(0, 1),
            z,
            transition.F,
            noise=noise,
        )
        optimiser.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimiser.step()
        transition.accumulate(path.h, h0)
        return float(terms["loss"])

    for i in range(args.warmup):
        step(batches[i % len(batches)])
    transition.reset_statistics()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    epoch_seconds, cpu_seconds = [], []
    for _ in range(args.epochs):
        start, cpu_start = time.perf_counter(), time.process_time()
        for idx in batches:
            loss = step(idx)
        transition.solve(noise.var_h)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        epoch_seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu_start)
    best, median = min(epoch_seconds), statistics.median(epoch_seconds)
    return {
        "device": device,
        "mode": mode,
        "best_s": best,
        "median_s": median,
        "volumes_per_s": n_subj * n_time / best,
        "median_volumes_per_s": n_subj * n_time / median,
        "cpu_s": min(cpu_seconds),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_cuda_mb": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None,
        "data_mb": data.numel() * data.element_size() / 2**20,
        "final_loss": loss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick", action="store_true", help=f"small check: grid {QUICK['grid']}, {QUICK['timepoints']} frames"
    )
    parser.add_argument("--devices", nargs="+", default=["cpu"], help="cpu and/or cuda (cuda skipped when absent)")
    parser.add_argument("--modes", nargs="+", default=["batched", "framewise"], choices=["batched", "framewise"])
    parser.add_argument("--chunks", nargs="*", type=int, default=[], help="also run frame_chunk = N (chunk-N modes)")
    parser.add_argument("--grid", nargs=3, type=int, default=[91, 109, 91])
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--timepoints", type=int, default=120)
    parser.add_argument("--batch", type=int, default=4, help="subjects per optimiser step (the reference's 4)")
    parser.add_argument("--epochs", type=int, help="timed epochs (best and median reported); 3 with --quick, else 1")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before timing")
    parser.add_argument("--threads", type=int, help="CPU threads (torch's default when omitted)")
    parser.add_argument("--child", nargs=2, metavar=("DEVICE", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.grid, args.timepoints = list(QUICK["grid"]), QUICK["timepoints"]
    if args.epochs is None:
        args.epochs = 3 if args.quick else 1
    if args.child:
        print(json.dumps(run_one(*args.child, args)))
        return

    rows = []
    modes = [*args.modes, *(f"chunk-{n}" for n in args.chunks)]
    for device in args.devices:
        if device == "cuda" and not torch.cuda.is_available():
            print("cuda: not available, skipped")
            continue
        for mode in modes:
            cmd = [sys.executable, __file__, *sys.argv[1:], "--child", device, mode]
            done = subprocess.run(cmd, check=False, capture_output=True, text=True)
            if done.returncode != 0:
                why = " (killed: out of memory?)" if done.returncode == -9 else ""
                print(f"{device}/{mode} failed with exit code {done.returncode}{why}:\n{done.stderr[-2000:]}")
                continue
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"{device}/{mode}: best epoch {rows[-1]['best_s']:.2f} s", flush=True)

    grid = "×".join(map(str, args.grid))
    print(f"\nRecVAE epoch: {args.subjects} subjects × {args.timepoints} volumes at {grid}, batch {args.batch}")
    print(f"torch {torch.__version__}, {args.threads or torch.get_num_threads()} CPU threads\n")
    header = f"{'device':<6} {'mode':<10} {'vol/s best':>10} {'vol/s median':>12} {'s/epoch best':>12} "
    header += f"{'CPU s/epoch':>11} {'peak RSS MB':>12} {'peak CUDA MB':>13}"
    print(header)
    print("-" * len(header))
    for r in rows:
        cuda = f"{r['peak_cuda_mb']:.0f}" if r["peak_cuda_mb"] is not None else "-"
        print(
            f"{r['device']:<6} {r['mode']:<10} {r['volumes_per_s']:>10.1f} {r['median_volumes_per_s']:>12.1f} "
            f"{r['best_s']:>12.2f} {r['cpu_s']:>11.2f} {r['peak_rss_mb']:>12.0f} {cuda:>13}"
        )
    for device in args.devices:
        speed = {r["mode"]: r["volumes_per_s"] for r in rows if r["device"] == device}
        if "framewise" in speed:
            for mode in (m for m in modes if m != "framewise" and m in speed):
                print(f"{device}: {mode} is {speed[mode] / speed['framewise']:.2f}× frame by frame")


def run(quick: bool = True) -> dict:
    """The epoch table as printed. Quick: the script's ``--quick`` (31×37×31, 4 × 24 frames); full:
    4 × 30 volumes at 91×109×91 with ``frame_chunk`` 16 (the full 4 × 120 needs more than 23 GB)."""
    from bench.script import script_output

    return script_output(__file__, ["--quick"] if quick else ["--timepoints", "30", "--chunks", "16"])


if __name__ == "__main__":
    main()
