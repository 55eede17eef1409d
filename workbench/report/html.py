"""HTML of the report: offline notebook pages and the ``index.html`` of a run.

Every page opens without network access: the notebook pages are rendered with a template
that drops the CDN scripts of nbconvert's ``lab`` template (require.js, MathJax, mermaid,
the widget manager), images are embedded, widget outputs (progress bars, inspectors) are
left out and remote ``<script src>`` tags are removed from HTML outputs. The index links to
its figures by relative paths inside the run folder.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.errors import DataError
from workbench.files import write_text
from workbench.viz.decoding import headline_table, matching_table
from workbench.viz.outputs import CAPTIONS, FIGURES

COLLAPSE_TABLE = Path("04_embeddings") / "collapse.csv"  # written by the embeddings notebook
LEARNING_TABLE = Path("03_train") / "learning.csv"  # written by the training notebook
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
_REMOTE_SCRIPT = re.compile(r"<script\b[^>]*\bsrc=[\"']?(?:https?:)?//[^>]*>\s*</script>", re.IGNORECASE)
_OFFLINE_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""


def _offline_copy(nb: Any) -> Any:
    """A copy of ``nb`` that renders without network access.

    Widget outputs and widget state are dropped: a widget's text fallback is frozen at display
    time (a progress bar would read 0 %), and the notebooks display the static result of every
    inspector beside it; the executed ``.ipynb`` keeps the widgets with their final state.
    ``<script src="http...">`` tags are removed from HTML outputs (plotly's notebook output
    asks a CDN for MathJax, which no figure here needs).
    """
    import copy

    nb = copy.deepcopy(nb)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if "outputs" not in cell:
            continue
        cell.outputs = [o for o in cell.outputs if WIDGET_VIEW not in o.get("data", {})]
        for output in cell.outputs:
            if "text/html" in output.get("data", {}):
                text = output.data["text/html"]
                text = "".join(text) if isinstance(text, list) else text
                output.data["text/html"] = _REMOTE_SCRIPT.sub("", text)
    return nb


def write_notebook_html(notebook: str | Path, target: str | Path) -> Path:
    """Render an executed notebook as one self-contained offline HTML page.

    Parameters
    ----------
    notebook : path
        ``.ipynb`` file (outputs included).
    target : path
        HTML file to write.
    """
    import jinja2
    import nbformat
    from nbconvert import HTMLExporter

    nb = _offline_copy(nbformat.read(str(notebook), as_version=4))
    exporter = HTMLExporter(
        template_name="lab",
        embed_images=True,
        extra_loaders=[jinja2.DictLoader({"offline.html.j2": _OFFLINE_TEMPLATE})],
        template_file="offline.html.j2",
    )
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": Path(notebook).stem}})
    return write_text(target, body)


# --------------------------------------------------------------------------- index.html

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 1100px;
       color: #222; line-height: 1.45; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .6rem 0 1.2rem; font-size: .92rem; }
th, td { border: 1px solid #ccc; padding: .25rem .6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; } thead th { background: #f3f5f8; }
td.best { font-weight: 700; background: #eef7ee; }
.meta td, .meta th { text-align: left; } .muted { color: #666; font-size: .9rem; }
.status-ok { color: #1b7a1b; font-weight: 600; } .status-failed { color: #b00020; font-weight: 600; }
.status-skipped { color: #888; }
.error { border: 2px solid #b00020; background: #fff3f4; padding: .8rem 1rem; border-radius: 6px; }
.error pre { white-space: pre-wrap; background: #fff; padding: .5rem; border: 1px solid #eee; }
figure { margin: 1rem 0 2rem; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #444; font-size: .92rem; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(results: dict[str, Any], metric: str = "accuracy") -> str:
    """One results dict of :func:`workbench.evaluation.closed_set` / ``open_set`` as an HTML table."""
    meta = results["meta"]
    ks = [str(k) for k in meta["k_shots"]]
    rows = results["methods"]
    best = {k: max((r[k][metric]["mean"] for n, r in rows.items() if n != "chance"), default=None) for k in ks}
    head = "".join(f"<th>K = {_e(k)}</th>" for k in ks)
    body = []
    for name, per_k in rows.items():
        cells = []
        for k in ks:
            mean, ci = per_k[k][metric]["mean"], per_k[k][metric]["ci"]
            cls = ' class="best"' if name != "chance" and mean == best[k] else ""
            cells.append(f"<td{cls}>{mean:.3f} ± {ci:.3f}</td>")
        body.append(f"<tr><td>{_e(name)}</td>{''.join(cells)}</tr>")
    caption = (
        f"{meta['protocol']} {meta['n_way']}-way, W = {meta['window']} TRs — {metric}, mean ± 95% CI over "
        f"{meta['n_episodes']} episodes, {meta['n_query']} queries per class"
    )
    if meta.get("n_splits"):
        caption += f", {meta['n_splits']} subject splits"
    skipped = meta.get("k_shots_skipped") or {}
    if skipped:
        caption += "; skipped " + "; ".join(f"K = {k}: {why}" for k, why in skipped.items())
    return (
        f"<table><caption class='muted'>{_e(caption)}</caption><thead><tr><th>method</th>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _metrics_section(run_dir: Path) -> str:
    path = run_dir / "metrics.json"
    if not path.exists():
        return "<p class='muted'>No metrics.json: the few-shot notebook did not finish.</p>"
    metrics = json.loads(path.read_text())
    parts = []
    for protocol in ("closed-set", "open-set"):
        parts.extend(_table(results) for results in metrics.get(protocol, {}).values())
    training = run_dir / "03_training.json"
    steps = json.loads(training.read_text()) if training.exists() else {}
    took = ", ".join(f"{name} {row['steps']}" for name, row in steps.items())
    note = (
        "Nearest-prototype subject identification (support: first half of each run, stride W/4; query: second "
        "half, stride W). Bold: best non-chance method per K. Baselines: FC fingerprinting (Finn et al. 2015), "
        "shrinkage LDA on FC, the untrained encoders, chance."
        + (f" Optimiser steps each encoder took (every training of the tables): {took}." if took else "")
    )
    return f"<p class='muted'>{_e(note)}</p>" + "".join(parts)


def _decoding_section(run_dir: Path) -> str:
    path = run_dir / "decoding_metrics.json"
    if not path.exists():
        return "<p class='muted'>No decoding_metrics.json: the decoding notebook did not run or did not finish.</p>"
    tasks = json.loads(path.read_text())["tasks"]
    if not tasks:
        return "<p class='muted'>No decoding task was run (every label list of the profile is empty).</p>"
    folds = "; ".join(f"{_e(t)}: {r['meta']['n_folds']} folds by {_e(r['meta']['grouping'])}" for t, r in tasks.items())
    trained = "; ".join(
        f"{t}: " + ", ".join(f"{name} {_steps(per_fold)}" for name, per_fold in r["meta"]["training_steps"].items())
        for t, r in tasks.items()
        if r["meta"].get("training_steps")
    )
    note = (
        "Every labelled training window: a linear probe (penalty chosen by inner cross-validation over the training "
        "subjects or runs) on frozen features of windows chosen per label (event labels: short windows inside the "
        "event, labels moved later for the haemodynamic delay; run-level states: long windows); fine-tuned rows "
        f"train the encoder itself. Group-wise cross-validation ({folds}), mean ± 95% CI over folds. Balanced "
        "accuracy for categories, R² for values (0: the training mean). Baselines: per-ROI mean activation, FC "
        "edges, the raw window, the mean-activation probe on permuted labels. "
        + (
            f"Trained families were pre-trained without labels on each fold's training windows: {trained}. "
            if trained
            else "Every family is untrained here. "
        )
    )
    table = headline_table(tasks).to_html(classes="decoding", escape=True, border=0)
    return f"<p class='muted'>{_e(note)}</p>{table}"


def _buys_section(run_dir: Path) -> str:
    """The headline of the label-efficiency curves: the smallest n matching the best baseline on all labels."""
    path = run_dir / "decoding_metrics.json"
    if not path.exists():
        return "<p class='muted'>No decoding_metrics.json: the decoding notebook did not run or did not finish.</p>"
    metrics = json.loads(path.read_text())
    try:
        table = matching_table(metrics["tasks"])
    except DataError:
        return "<p class='muted'>No decoding task ran label-efficiency curves (the profile's sizes are empty).</p>"
    modes = sorted({r["meta"].get("pretraining", "inductive") for r in metrics["tasks"].values()})
    note = (
        "For each task, the smallest number of labelled training subjects (heatpain) or runs (haxby-slice) at which "
        "an encoder's best readout — linear probe, attentive probe or fine-tuned — is within the 95% CI of the best "
        "feature baseline fitted on every labelled training window (column header: that baseline and its mean less "
        "its CI), or 'never'. Pre-training used every training subject's windows without labels"
        + (
            "; TRANSDUCTIVE tasks also let it see the test subjects' unlabelled windows"
            if "transductive" in modes
            else ""
        )
        + ". The curves are in 06_decoding."
    )
    return f"<p class='muted'>{_e(note)}</p>" + table.to_html(classes="decoding", escape=True, border=0)


def _steps(per_fold: list[int]) -> str:
    """``"50 steps per fold"``, or the range when folds differ."""
    low, high = min(per_fold), max(per_fold)
    return f"{low} steps per fold" if low == high else f"{low}–{high} steps per fold"


def _learning_section(run_dir: Path) -> str:
    path = run_dir / LEARNING_TABLE
    if not path.exists():
        return "<p class='muted'>No learning table: the training notebook did not run or did not finish.</p>"
    table = pd.read_csv(path, index_col=0)
    note = (
        "Each family's objective on a fixed monitor batch before and after training, beside its trivial floor on "
        "the same batch (jepa: predicting each position's mean target; lfr: the best input-independent "
        "prediction; yaware: collapsed projections; recvae: each voxel's window mean; fewshot: collapsed "
        "embeddings), with the optimiser steps each encoder actually took and the centred RankMe of its "
        "embeddings. A ratio loss / floor below 1 means the family learned something about the windows' "
        "content; at or above 1 it has not, whatever its loss curve shows."
    )
    words = "".join(
        f"<li><b>{_e(name)}</b> ({int(row['steps'])} steps): {_e(row['verdict'])}</li>"
        for name, row in table.iterrows()
    )
    return f"<p class='muted'>{_e(note)}</p><ul>{words}</ul>{table.round(4).to_html(escape=True, border=0)}"


def _collapse_section(run_dir: Path) -> str:
    path = run_dir / COLLAPSE_TABLE
    if not path.exists():
        return "<p class='muted'>No collapse table: the embeddings notebook did not run or did not finish.</p>"
    table = pd.read_csv(path, index_col=0).round(3)
    note = (
        "On the windows the embeddings notebook maps (whole runs, stride W/2; the first halves were seen in "
        "training). RankMe (Garrido et al. 2023) of the centred embeddings: about 1 when every "
        "embedding lies on one line through their mean, up to the dimension for a flat spectrum; of the "
        "standardised ones (each dimension scaled to unit spread); and the paper's uncentred value for reference. "
        "The offset (norm of the mean embedding) is reported apart, as its ratio to the spread (mean distance "
        "from the mean): a shared offset is invisible to every probe and is not collapse, and it alone drives "
        "the uncentred RankMe and the cosine with the mean direction towards 1."
    )
    return f"<p class='muted'>{_e(note)}</p>{table.to_html(escape=True, border=0)}"


def _figures_section(run_dir: Path) -> str:
    folder = run_dir / FIGURES
    if not folder.is_dir():
        return "<p class='muted'>No figures were written.</p>"
    captions_file = folder / CAPTIONS
    captions = json.loads(captions_file.read_text()) if captions_file.exists() else {}
    parts = []
    for png in sorted(folder.glob("*.png")):
        caption = captions.get(png.name, png.stem.replace("_", " "))
        parts.append(
            f"<figure><img src='figures/{_e(png.name)}' alt='{_e(caption)}'>"
            f"<figcaption><b>{_e(png.stem)}</b> — {_e(caption)}</figcaption></figure>"
        )
    return "".join(parts)


def _notebooks_section(manifest: dict[str, Any]) -> str:
    rows = []
    for nb, record in manifest["notebooks"].items():
        status = record["status"]
        links = []
        if record.get("html"):
            links.append(f"<a href='{_e(record['html'])}'>HTML</a>")
            links.append(f"<a href='notebooks/{_e(nb)}.ipynb'>ipynb</a>")
        wall = f"{record['wall_time_s']:.1f} s" if record.get("wall_time_s") is not None else "–"
        rows.append(
            f"<tr><td>{_e(nb)}</td><td class='status-{_e(status)}'>{_e(status)}</td><td>{wall}</td>"
            f"<td>{' · '.join(links) or '–'}</td></tr>"
        )
    return (
        "<table><thead><tr><th>notebook</th><th>status</th><th>wall time</th><th>pages</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _error_section(manifest: dict[str, Any]) -> str:
    error = manifest.get("error")
    if not error:
        return ""
    nb = error["notebook"]
    cell = error["cell_index"]
    where = f"cell {cell}" if cell is not None else "an unknown cell"
    if error.get("execution_count") is not None:
        where += f" (execution count {error['execution_count']})"
    source = f"<pre>{_e(error['source'])}</pre>" if error.get("source") else ""
    return (
        f"<div class='error'><h2>Failed: notebook {_e(nb)}, {_e(where)}</h2>"
        f"<p><b>{_e(error['ename'])}</b>: {_e(error['evalue'])}</p>{source}"
        f"<p>The executed notebook keeps every output up to the failure: "
        f"<a href='notebooks/{_e(nb)}.html'>{_e(nb)}.html</a> · "
        f"<a href='notebooks/{_e(nb)}.ipynb'>{_e(nb)}.ipynb</a>. "
        "Later notebooks were skipped.</p></div>"
    )


def write_index(run_dir: str | Path, manifest: dict[str, Any]) -> Path:
    """Write ``run_dir/index.html`` from the manifest and what the notebooks left in ``run_dir``."""
    run_dir = Path(run_dir)
    params = manifest["parameters"]
    dataset = next((p["dataset"] for p in params.values() if "dataset" in p), "–")
    umaps = sorted(run_dir.glob("umap*.html"))
    umap_links = " · ".join(f"<a href='{_e(p.name)}'>{_e(p.stem)}</a>" for p in umaps) or "none"
    status = manifest["status"]
    commit = manifest["git_commit"] + (" (uncommitted changes)" if manifest.get("git_dirty") else "")
    wall = manifest.get("wall_time_s")
    meta_rows = [
        ("status", f"<span class='status-{_e(status)}'>{_e(status)}</span>"),
        ("profile", _e(manifest["profile_description"])),
        ("dataset", _e(dataset)),
        ("device", _e(manifest["device"])),
        ("git commit", _e(commit)),
        ("wall time", f"{wall:.0f} s" if wall is not None else "–"),
        ("started", _e(manifest["started"])),
        ("interactive UMAP", umap_links),
        (
            "files",
            "<a href='manifest.json'>manifest.json</a> · <a href='metrics.json'>metrics.json</a> · "
            "<a href='decoding_metrics.json'>decoding_metrics.json</a>",
        ),
    ]
    meta = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in meta_rows)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Report {_e(manifest["run_id"])}</title><style>{_STYLE}</style></head>
<body>
<h1>fMRI Representation Workbench — report {_e(manifest["run_id"])}</h1>
<table class="meta">{meta}</table>
{_error_section(manifest)}
<h2>Did the encoders learn?</h2>
{_learning_section(run_dir)}
<h2>Few-shot subject identification</h2>
{_metrics_section(run_dir)}
<h2>Task decoding</h2>
{_decoding_section(run_dir)}
<h2>What pre-training buys</h2>
{_buys_section(run_dir)}
<h2>Collapse check</h2>
{_collapse_section(run_dir)}
<h2>Notebooks</h2>
{_notebooks_section(manifest)}
<h2>Key figures</h2>
{_figures_section(run_dir)}
</body></html>
"""
    return write_text(run_dir / "index.html", page)


__all__ = ["write_index", "write_notebook_html"]
