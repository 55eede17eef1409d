"""Where figures go: Jupyter output records for widgets, and the key figures a report shows.

* :func:`literal` — a name from the data (subject, ROI, category) as matplotlib draws it,
  verbatim: a ``$`` in it never starts mathtext;
* :func:`markdown_text` — the same for Markdown: no HTML, formatting, math or table cell
  boundary can come from a name;
* :func:`plotly_text` — the same for plotly's titles, legends and hover labels, which read
  a subset of HTML;
* :func:`png_output` — a ``display_data`` record that widgets assign to an ``Output``
  widget's ``outputs``;
* :func:`key_figure` — a PNG under ``out_dir/figures/`` with its caption in ``captions.json``,
  which the report's ``index.html`` shows in name order.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from workbench.errors import ConfigError
from workbench.files import atomic_path, write_json

FIGURES = "figures"
CAPTIONS = "captions.json"
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|#~$])")


def literal(text: object) -> str:
    """``text`` as matplotlib draws it verbatim: every ``$`` escaped, so mathtext never parses it."""
    return str(text).replace("$", r"\$")


def markdown_text(text: object) -> str:
    """``text`` as Markdown shows it verbatim, e.g. in a table cell.

    HTML is escaped, line breaks become spaces, and the characters that format, start math
    or end a cell (``\\ ` * _ [ ] | # ~ $``) are backslash-escaped.
    """
    one_line = " ".join(str(text).splitlines())
    return _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(one_line, quote=False))


def plotly_text(text: object) -> str:
    """``text`` as plotly shows it verbatim: ``&``, ``<`` and ``>`` as the entities plotly.js decodes."""
    return html.escape(str(text), quote=False)


def png_output(fig: Figure, dpi: int = 80) -> dict[str, Any]:
    """A ``display_data`` output holding ``fig`` as PNG (works with any matplotlib backend)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return {
        "output_type": "display_data",
        "data": {"image/png": base64.b64encode(buffer.getvalue()).decode("ascii"), "text/plain": "<figure>"},
        "metadata": {},
    }


def key_figure(out_dir: str | Path, name: str, caption: str, fig: Any = None, dpi: int = 110) -> Path:
    """Save (or register) a key figure that the report's index shows.

    Parameters
    ----------
    out_dir : path
        The notebook's ``out_dir``; the figure goes to ``out_dir/figures/<name>.png``.
    name : str
        File stem; figures are shown in sorted order, so start it with the notebook number.
    caption : str
        What the figure shows, stored in ``figures/captions.json``.
    fig : matplotlib Figure, optional
        Saved as PNG; when omitted the PNG must already exist (e.g. written by ``save_png``).
    """
    folder = Path(out_dir) / FIGURES
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    if fig is not None:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    elif not path.exists():
        raise ConfigError(f"key figure {path} does not exist; save it first or pass fig")
    captions_file = folder / CAPTIONS
    captions = json.loads(captions_file.read_text()) if captions_file.exists() else {}
    captions[path.name] = caption
    write_json(captions_file, dict(sorted(captions.items())), indent=1)
    return path


__all__ = ["CAPTIONS", "FIGURES", "key_figure", "literal", "markdown_text", "plotly_text", "png_output"]
