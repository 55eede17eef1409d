"""The ``workbench`` command.

Each subcommand lives in its own module with ``add_parser(subparsers)``, which declares its
arguments and sets the handler ``(args) -> exit status``. An error caused by input
(:class:`~workbench.errors.WorkbenchError`) is printed as ``error: <message>`` on stderr with
exit status 2, never as a traceback.

============  ===========================================================  =======================
command       what                                                         module
============  ===========================================================  =======================
``data``      list, describe and fetch the datasets of a catalog           :mod:`workbench.cli.data`
``train``     train a family on a dataset; resumes a run folder            :mod:`workbench.cli.train`
``evaluate``  identification (default) or task decoding of a trained run  :mod:`workbench.cli.train`
``embed``     every window's embedding and labels as a parquet table       :mod:`workbench.cli.export`
``export``    a run's encoder as config.json + model.safetensors           :mod:`workbench.cli.export`
``report``    run the notebooks headlessly into an HTML report             :mod:`workbench.cli.report`
============  ===========================================================  =======================
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from workbench.cli import data, export, report, train
from workbench.errors import WorkbenchError

EXIT_INPUT_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="workbench", description="fMRI Representation Workbench")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (data, train, export, report):
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``workbench`` command; return its exit status (2 for input errors)."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except WorkbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT_ERROR


__all__ = ["EXIT_INPUT_ERROR", "build_parser", "main"]
