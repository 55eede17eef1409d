"""Embeddings as a table: one parquet row per window, with what the window knows beside its embedding.

Columns, in order: ``subject``, ``session``, ``run`` (only when a recording names its run in
``meta["run"]``), ``start`` (the window's first frame), one column per frame label aggregated
over the window as :class:`~workbench.data.windows.WindowSet` does (categorical: a pandas
category, the majority or, with ``label_rule="pure"``, the label only when constant; continuous:
the mean), then the embedding as ``e0 .. e{D-1}`` (float32).

The table is written chunk by chunk: each chunk of windows is read, embedded and written as one
parquet row group (:class:`pyarrow.parquet.ParquetWriter`), so neither the windows nor the
embeddings of a cohort larger than memory are ever held whole. The file appears only once every
chunk is in (:func:`workbench.files.atomic_path`); an error leaves neither the target nor a
temporary. ``pandas.read_parquet`` reads it back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from workbench.data.labels import CategoricalRule
from workbench.data.recording import Recording
from workbench.data.windows import WindowSet
from workbench.errors import ConfigError, DataError
from workbench.evaluation import EmbedFn
from workbench.export import CONFIG_NAME, WEIGHTS_NAME, load_encoder
from workbench.files import atomic_path, check_output_folder
from workbench.runs import as_frames, embed_function
from workbench.train import load_method

CHUNK_WINDOWS = 4096
META_COLUMNS = ("subject", "session", "run", "start")


def _has_run(windows: WindowSet) -> bool:
    return any("run" in rec.meta for rec in windows.recordings)


def _label_array(values: np.ndarray, column: Any) -> pa.Array:
    """One label column of a chunk: categories as a dictionary column, continuous values as float32."""
    undefined = np.isnan(values)
    if column.kind == "continuous":
        return pa.array(values.astype(np.float32), mask=undefined)
    codes = pa.array(np.where(undefined, 0, values).astype(np.int32), mask=undefined)
    return pa.DictionaryArray.from_arrays(codes, pa.array(list(column.categories), pa.string()))


def check_column_names(windows: WindowSet) -> None:
    """ConfigError when a frame label is named like a metadata or embedding column."""
    for column in windows.label_columns:
        if column.name in META_COLUMNS or (column.name[:1] == "e" and column.name[1:].isdigit()):
            raise ConfigError(
                f"frame label {column.name!r} has the name of a table column ({', '.join(META_COLUMNS)}, e0, e1 ...); "
                "rename it in the dataset's labels"
            )


def chunk_table(windows: WindowSet, index: np.ndarray, embeddings: np.ndarray) -> pa.Table:
    """The rows of windows ``index`` with their ``(len(index), D)`` embeddings."""
    recordings = [windows.recordings[r] for r in windows.rec_index[index]]
    columns: dict[str, pa.Array] = {
        "subject": pa.array([rec.subject for rec in recordings], pa.string()),
        "session": pa.array([rec.session for rec in recordings], pa.string()),
    }
    if _has_run(windows):
        runs = [rec.meta.get("run") for rec in recordings]
        columns["run"] = pa.array([None if r is None else str(r) for r in runs], pa.string())
    columns["start"] = pa.array(windows.starts[index], pa.int64())
    for j, column in enumerate(windows.label_columns):
        columns[column.name] = _label_array(windows.y[index, j], column)
    embeddings = np.asarray(embeddings, dtype=np.float32)
    for d in range(embeddings.shape[1]):
        columns[f"e{d}"] = pa.array(embeddings[:, d])
    return pa.table(columns)


def write_embedding_table(
    embed_fn: EmbedFn,
    windows: WindowSet,
    out: str | Path,
    chunk_size: int = CHUNK_WINDOWS,
    progress: bool = True,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Embed every window of ``windows`` and write the table to ``out``, one row group per chunk.

    Parameters
    ----------
    embed_fn : callable
        ``(n, W, F) float32 -> (n, D)``, e.g. :func:`workbench.runs.embed_function`.
    windows : WindowSet
        The windows, in row order.
    out : path
        The parquet file; replaced atomically once every chunk is written.
    chunk_size : int
        Windows read, embedded and written at a time (one row group each).
    progress : bool
        Show a ``tqdm`` bar over windows.
    metadata : dict, optional
        Stored as JSON in the file's schema metadata under ``workbench``.

    Returns
    -------
    pathlib.Path
        ``out``.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ConfigError(f"chunk_size={chunk_size!r} must be a whole number >= 1")
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"embedding table {out} is a folder; give a file name such as {out / 'embeddings.parquet'}")
    check_output_folder(out.parent, "folder of the embedding table (--out)")
    check_column_names(windows)
    schema_metadata = {"workbench": json.dumps(metadata or {})}
    with atomic_path(out) as tmp, tqdm(total=len(windows), desc="embed", unit="window", disable=not progress) as bar:
        writer = None
        try:
            for lo in range(0, len(windows), chunk_size):
                index = np.arange(lo, min(lo + chunk_size, len(windows)))
                embeddings = np.asarray(embed_fn(windows.get(index)))
                if embeddings.ndim != 2 or embeddings.shape[0] != len(index):
                    raise DataError(f"the encoder returned shape {embeddings.shape} for {len(index)} windows")
                table = chunk_table(windows, index, embeddings)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema.with_metadata(schema_metadata))
                writer.write_table(table, row_group_size=len(index))
                bar.update(len(index))
        finally:
            if writer is not None:
                writer.close()
    return out


def load_encoder_function(run: str | Path, device: str = "auto") -> tuple[EmbedFn, int, int, dict[str, Any]]:
    """A run folder (or its checkpoint) or an export folder as an embedding function.

    Returns
    -------
    embed_fn, n_features, window, info
        The function, the features and window length it was trained on, and ``{"family", "run"}``.
    """
    run = Path(run)
    if (run / CONFIG_NAME).is_file() and (run / WEIGHTS_NAME).is_file():
        encoder = load_encoder(run, device=device)
        method, embed_fn = encoder.method, encoder.embed
    else:
        method, standardizer, _ = load_method(run, device=device)
        embed_fn = embed_function(method, standardizer)
    return embed_fn, method.spec.n_features, method.spec.n_timepoints, {"family": method.name, "run": str(run)}


def embed_table(
    run: str | Path,
    recordings: str | Sequence[Recording],
    window: int | None,
    stride: int | None,
    out: str | Path,
    chunk_size: int = CHUNK_WINDOWS,
    label_rule: CategoricalRule = "majority",
    device: str = "auto",
    progress: bool = True,
    stream: bool | None = None,
) -> Path:
    """Embed every window of a dataset with a trained run into a parquet table (``workbench embed``).

    Parameters
    ----------
    run : path
        A run folder, its ``checkpoint.pt``, or a folder written by ``workbench export``.
    recordings : str or sequence of Recording
        A catalog entry, or runs of ``(T, F)`` frames (volumes are turned into frames as for training).
    window : int or None
        Window length in frames (``None``: the run's).
    stride : int or None
        Step between window starts (``None``: ``window``, windows that touch but do not overlap).
    out : path
        The parquet file.
    chunk_size : int
        Windows embedded and written at a time (one row group each).
    label_rule : {"majority", "pure"}
        How a categorical frame label becomes the window's.
    device : str
        Where the encoder runs.
    progress : bool
        Progress bars for reading the dataset and embedding.
    stream : bool, optional
        Memory-map a catalog dataset's runs (see :func:`workbench.data.catalog.load_recordings`).

    Returns
    -------
    pathlib.Path
        ``out``.

    Raises
    ------
    ConfigError
        The data have other features than the run was trained on, or ``out`` is a folder.
    """
    from workbench.data.catalog import load_recordings

    check_output_folder(Path(out).parent, "folder of the embedding table (--out)")
    embed_fn, n_features, trained_window, info = load_encoder_function(run, device)
    if isinstance(recordings, str):
        info["dataset"] = recordings
        recordings = load_recordings(recordings, progress=progress, stream=stream)
    recordings = as_frames(recordings)
    if recordings and recordings[0].data.shape[1] != n_features:
        raise ConfigError(
            f"{run} was trained on {n_features} features but the data have {recordings[0].data.shape[1]}; "
            "embed a dataset with the run's parcellation"
        )
    window = trained_window if window is None else window
    stride = window if stride is None else stride
    windows = WindowSet(recordings, window, stride, part="all", label_rule=label_rule)
    metadata = {**info, "window": window, "stride": stride, "label_rule": label_rule}
    return write_embedding_table(embed_fn, windows, out, chunk_size, progress, metadata)


__all__ = [
    "CHUNK_WINDOWS",
    "META_COLUMNS",
    "chunk_table",
    "embed_table",
    "load_encoder_function",
    "write_embedding_table",
]
