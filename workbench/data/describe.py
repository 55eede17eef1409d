"""``workbench data info``: what a dataset or a folder holds, from file headers (nothing is read whole).

Registry members are not downloaded: their status is ``verified``, ``missing`` or ``mismatch``;
other files are ``present`` (headers read, not validated: :mod:`workbench.data.check` reads and
validates every file), ``invalid`` (a header of the wrong dimensionality) or ``unreadable`` (so is
a file of a folder that links outside it: it is not read).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from workbench.data.bids import sidecar_tr
from workbench.data.catalog import bids_runs, load_recordings, local_files
from workbench.data.catalog_schema import (
    BidsSource,
    Catalog,
    Entry,
    LocalSource,
    NilearnSource,
    RegistrySource,
    SyntheticSource,
    UnionSource,
    did_you_mean,
    load_catalog,
)
from workbench.data.formats import check_inside, file_suffix
from workbench.data.sources import (
    file_info,
    member_status,
    parse_ids,
    registry_dir,
    session_label,
)
from workbench.errors import CatalogError, DataError


def _source_text(entry: Entry) -> str:
    match entry.source:
        case RegistrySource(package=package, version=version, archive=archive):
            return f"registry {package}=={version} ({archive})"
        case LocalSource(glob=glob):
            return f"local {glob}"
        case BidsSource(root=root, task=task, space=space, confounds=confounds):
            return f"bids {root} task-{task} space-{space} (confounds: {confounds})"
        case NilearnSource(fetcher=fetcher):
            return f"nilearn fetch_{fetcher} (online)"
        case SyntheticSource(generator=generator):
            return f"synthetic {generator}"
        case UnionSource(entries=members):
            return f"union of {', '.join(members)}"
    raise AssertionError(entry.source)


def _entry_files(catalog: Catalog, entry: Entry) -> list[dict[str, Any]]:
    source, options = entry.source, entry.read
    if source.kind == "registry":
        root = registry_dir(source.package, source.version)
        return [
            file_info(
                root / member,
                parse_ids(member, source.pattern, source.subject),
                member_status(root / member, digest),
                key=options.key,
                orientation=options.orientation,
            )
            for member, digest in ((m, source.sha256[m]) for m in source.data_members())
        ]
    if source.kind == "local":
        return [
            file_info(
                path,
                parse_ids(path, source.pattern, source.subject),
                "present",
                key=options.key,
                orientation=options.orientation,
            )
            for path in local_files(catalog, entry)
        ]
    if source.kind == "bids":
        return [_bold_file_info(path, ids) for path, ids in bids_runs(catalog, entry)]
    if source.kind == "synthetic":
        return [
            {
                "file": None,
                "subject": r.subject,
                "session": r.session,
                "status": "generated",
                "bytes": 0,
                "shape": tuple(r.data.shape),
                "header_tr": r.tr,
            }
            for r in load_recordings(entry.name, catalog, progress=False)
        ]
    if source.kind == "union":
        return [f for member in source.entries for f in _entry_files(catalog, catalog.entries[member])]
    return []  # nilearn: nothing is known before the (online) download


def _bold_file_info(path: Path, ids: dict[str, str]) -> dict[str, Any]:
    """:func:`file_info` of an fMRIPrep BOLD run, its TR from the JSON sidecar when that can be read."""
    info = file_info(path, ids, "present")
    with contextlib.suppress(DataError):  # `data check` names a missing sidecar; a catalog `tr` may stand in
        info["header_tr"] = sidecar_tr(path)
    return info


def _folder_file_info(file: Path, path: Path) -> dict[str, Any]:
    """:func:`file_info` of a file of the folder ``path``; a link out of the folder is ``unreadable``, never read."""
    ids = parse_ids(file.relative_to(path) if path.is_dir() else file)
    if path.is_dir():
        try:
            check_inside(file, path, "Describe the file itself (data info FILE), or copy it into the folder")
        except DataError as exc:
            info = {"file": str(file), "subject": ids["subject"], "session": session_label(ids)}
            return {**info, "status": "unreadable", "bytes": 0, "error": str(exc)}
    return file_info(file, ids, "present")


def _summary(files: list[dict[str, Any]]) -> dict[str, Any]:
    statuses = [f["status"] for f in files]
    return {
        "subjects": sorted({f["subject"] for f in files}),
        "sessions": sorted({f["session"] for f in files}),
        "n_files": len(files),
        "shapes": sorted({tuple(f["shape"]) for f in files if "shape" in f}),
        "bytes_on_disk": sum(f["bytes"] for f in files),
        "status_counts": {s: statuses.count(s) for s in dict.fromkeys(statuses)},
        "files": files,
    }


def describe(name_or_path: str | Path, catalog: Catalog | None = None) -> dict[str, Any]:
    """What a dataset or a folder of files holds, from file headers (synthetic data are generated).

    ``name_or_path`` is a catalog entry name, or a file or folder of the user's own data
    (every supported file below it; subject/session/run from BIDS names, else the stem).
    Registry members are not downloaded: their status is ``verified``, ``missing`` or
    ``mismatch`` (see :func:`workbench.data.sources.file_info` for the per-file fields).

    Returns
    -------
    dict
        ``name``, ``source``, ``modality``, ``tr`` (s, ``None`` if from headers),
        ``subjects``, ``sessions``, ``n_files``, ``shapes``, ``bytes_on_disk``,
        ``status_counts``, ``files`` and, for entries, the catalog's descriptive fields.
    """
    target = str(name_or_path)
    path = Path(target).expanduser()
    if catalog is None:
        try:
            catalog = load_catalog()
        except CatalogError:
            if not path.exists():
                raise
    if catalog is not None and target in catalog.entries:
        entry = catalog.entries[target]
        fields = entry.model_dump(
            include={"name", "description", "modality", "tr", "atlas", "space", "citation", "licence"}
        )
        return {**fields, "source": _source_text(entry), **_summary(_entry_files(catalog, entry))}
    if not path.exists():
        known = "a dataset"
        if catalog is not None:
            known = f"a dataset of {catalog.path}{did_you_mean(target, catalog.entries)}"
        raise CatalogError(f"{target!r} is neither {known} nor an existing file or folder")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and file_suffix(p))
    if not files or not file_suffix(files[0]):
        raise DataError(f"{path}: no .nii/.nii.gz/.npy/.csv/.tsv/.mat file found")
    infos = [_folder_file_info(f, path) for f in files]
    shapes = [i["shape"] for i in infos if "shape" in i]
    kinds = {2: "roi_timeseries", 4: "nifti_4d"}
    modalities = sorted({kinds.get(len(shape), f"unsupported {len(shape)}-D") for shape in shapes})
    modality = ", ".join(modalities) or "unknown"
    return {"name": str(path), "source": "local files", "modality": modality, "tr": None, **_summary(infos)}


__all__ = ["describe"]
