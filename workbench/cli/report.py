"""``workbench report``: run the notebooks headlessly into an HTML report.

``--catalog FILE`` reaches the notebooks as ``$WORKBENCH_CATALOG``; ``--dataset`` is an entry of
that catalog (the notebooks read datasets by name, so a folder of files needs an entry).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from unittest import mock

from workbench.cli.options import add_common_options, open_catalog, require_dataset
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
    add_common_options(report, dataset=False)
    report.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the report and print where its index is."""
    methods = None if args.methods is None else [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.dataset is not None:
        require_dataset(args.dataset, open_catalog(args.catalog), paths=False)
    catalog = {} if args.catalog is None else {"WORKBENCH_CATALOG": str(args.catalog.expanduser().resolve())}
    with mock.patch.dict(os.environ, catalog):
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
