"""``workbench report``: run the notebooks headlessly into an HTML report."""

from __future__ import annotations

import argparse
from pathlib import Path

from workbench.report import PROFILES, run_report
from workbench.report.params import parse_cli_params


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Declare ``workbench report``."""
    report = subparsers.add_parser("report", help="run the notebooks headlessly into an HTML report")
    report.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default="quick",
        help="quick (the README's main job, ~10 min on 2 CPU cores), full (the protocol), tiny (tests)",
    )
    report.add_argument("--dataset", default=None, help="catalog entry of ROI time series")
    report.add_argument("--methods", default=None, help="comma-separated families, e.g. fewshot,jepa")
    report.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    report.add_argument("--out", type=Path, default=Path("reports"), help="folder of report folders")
    report.add_argument("--run-id", default=None, help="report folder name (default: time stamp + profile)")
    report.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any notebook parameter, value read as YAML (e.g. -p k_shots=[1,4]); repeatable; unknown names fail",
    )
    report.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    report.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the report and print where its index is."""
    methods = None if args.methods is None else [m.strip() for m in args.methods.split(",") if m.strip()]
    folder = run_report(
        profile=args.profile,
        dataset=args.dataset,
        methods=methods,
        device=args.device,
        out=args.out,
        params=parse_cli_params(args.param),
        run_id=args.run_id,
        progress=not args.no_progress,
    )
    print(f"report: {folder / 'index.html'}")
    return 0
