"""Options shared by the subcommands that read data or compute: declared once, resolved once.

``--catalog FILE``   the catalog to use instead of ``$WORKBENCH_CATALOG`` or the shipped one;
``--dataset NAME``   a catalog entry, or a file or folder of the user's own data (read as an
                     ad-hoc ``local`` entry: every supported file below it, subject/session/run
                     from BIDS names, else the file stem);
``--device DEVICE``  ``auto`` (``cuda``, then ``mps``, then ``cpu``), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``;
``--no-progress``    hide the progress bars.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import re
from pathlib import Path

from workbench.data.catalog_schema import Catalog, Entry, did_you_mean, load_catalog
from workbench.data.formats import NIFTI_SUFFIXES, file_suffix
from workbench.errors import CatalogError

DEVICES = ("auto", "cpu", "cuda", "mps")


def device_name(text: str) -> str:
    """An argparse type: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""
    if text in DEVICES or re.fullmatch(r"cuda:\d+", text):
        return text
    raise argparse.ArgumentTypeError(f"invalid device {text!r}: choose from {', '.join(DEVICES)} or cuda:N")


def add_common_options(
    parser: argparse.ArgumentParser,
    dataset: bool = True,
    dataset_required: bool = True,
    device: bool = True,
    device_default: str | None = "auto",
    progress: bool = True,
) -> None:
    """Add ``--catalog`` and, when asked, ``--dataset``, ``--device`` and ``--no-progress`` to ``parser``."""
    parser.add_argument(
        "--catalog",
        type=Path,
        default=None,
        metavar="FILE",
        help="catalog YAML to use instead of $WORKBENCH_CATALOG or the shipped data_catalog.yaml",
    )
    if dataset:
        parser.add_argument(
            "--dataset",
            required=dataset_required,
            default=None,
            metavar="NAME_OR_PATH",
            help="catalog entry, or a file/folder of your data",
        )
    if device:
        parser.add_argument(
            "--device",
            type=device_name,
            default=device_default,
            metavar="{auto,cpu,cuda,mps}",
            help="where to compute: auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps"
            + (
                " (default: the device setting, else auto)"
                if device_default is None
                else f" (default {device_default})"
            ),
        )
    if progress:
        parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def common_options(progress: bool = False) -> argparse.ArgumentParser:
    """A parent parser (``argparse`` ``parents=``) with ``--catalog`` and, when asked, ``--no-progress``."""
    parent = argparse.ArgumentParser(add_help=False)
    add_common_options(parent, dataset=False, device=False, progress=progress)
    return parent


def open_catalog(catalog: Path | None, target: str | None = None) -> Catalog | None:
    """The catalog ``--catalog`` names, else ``$WORKBENCH_CATALOG``, else the shipped one.

    ``None`` when the default catalog cannot be read but ``target`` is an existing path (its
    data need no catalog).
    """
    if catalog is not None:
        return load_catalog(catalog)
    try:
        return load_catalog()
    except CatalogError:
        if target is not None and Path(target).expanduser().exists():
            return None
        raise


def _local_entry(path: Path) -> Entry:
    """An ad-hoc ``local`` entry reading every supported file at or below ``path``."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and file_suffix(p))
    if not files or not file_suffix(files[0]):
        raise CatalogError(f"{path}: no .nii/.nii.gz/.npy/.csv/.tsv/.mat file found; give a folder of runs")
    volumes = file_suffix(files[0]) in NIFTI_SUFFIXES
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", path.name).strip("-._") or "data"
    return Entry.model_validate(
        {
            "name": f"{stem[:40]}-{digest}",
            "description": f"files of {path}",
            "modality": "nifti_4d" if volumes else "roi_timeseries",
            "atlas": None if volumes else "unknown",
            "space": "unknown" if volumes else None,
            "citation": "user data",
            "licence": "user data",
            "source": {"kind": "local", "glob": str(path if path.is_file() else path / "**" / "*")},
        }
    )


def require_dataset(target: str, catalog: Catalog | None, paths: bool = True) -> None:
    """Raise unless ``target`` is an entry of ``catalog`` or (when ``paths``) an existing file or folder.

    Raises
    ------
    CatalogError
        Naming the catalog, the closest entry and how to use another catalog (``--catalog FILE``
        or ``$WORKBENCH_CATALOG``).
    """
    if (catalog is not None and target in catalog.entries) or (paths and Path(target).expanduser().exists()):
        return
    where = f"a dataset of {catalog.path}{did_you_mean(target, catalog.entries)}"
    found = f"neither {where} nor an existing file or folder; give a folder of your data, or"
    raise CatalogError(
        f"{target!r} is {found if paths else f'not {where};'} choose another catalog with --catalog FILE or "
        "$WORKBENCH_CATALOG"
    )


def resolve_dataset(target: str, catalog: Path | None = None) -> tuple[str, Catalog]:
    """``--dataset`` as (entry name, catalog holding it): a catalog entry, or a file or folder of the user's data.

    A name of the catalog wins over a path of the same name.

    Raises
    ------
    CatalogError
        ``target`` is neither an entry of the catalog nor an existing file or folder; the message
        names the catalog and how to choose another (``--catalog FILE`` or ``$WORKBENCH_CATALOG``).
    """
    loaded = open_catalog(catalog, target)
    if loaded is not None and target in loaded.entries:
        return target, loaded
    require_dataset(target, loaded)
    path = Path(target).expanduser().resolve()
    entry = _local_entry(path)
    if loaded is None:
        return entry.name, Catalog(path=path, entries={entry.name: entry})
    return entry.name, dataclasses.replace(
        loaded, entries={**loaded.entries, entry.name: entry}, folders={**loaded.folders, entry.name: path}
    )


__all__ = [
    "DEVICES",
    "add_common_options",
    "common_options",
    "device_name",
    "open_catalog",
    "require_dataset",
    "resolve_dataset",
]
