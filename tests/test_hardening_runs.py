"""Run folders, temporaries, checkpoints and widgets: names from the data, concurrent writers, damaged inputs."""

from __future__ import annotations

import errno
import html
import io
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from matplotlib import cbook
from matplotlib.figure import Figure

from workbench import files
from workbench.cli import EXIT_INPUT_ERROR, main
from workbench.data.recording import Recording
from workbench.data.sources import sweep_downloads
from workbench.data.spec import DataSpec
from workbench.data.synthetic import fingerprints
from workbench.errors import CheckpointError, ConfigError
from workbench.files import (
    RUN_LOCK,
    TEMP_PREFIX,
    atomic_path,
    run_folder_lock,
    sweep_temporaries,
    temporary_prefix,
    write_text,
)
from workbench.methods import available, get_method
from workbench.models.recvae import RunReadout
from workbench.report import run_report
from workbench.report.runner import _new_run_dir
from workbench.runs import training_windows
from workbench.train import build_method, load_method, make_train_config, read_checkpoint, train
from workbench.viz import data as vdata
from workbench.viz.decoding import markdown_table
from workbench.viz.embeddings import LatentInspector, umap_figure
from workbench.viz.fewshot import table_markdown
from workbench.viz.labels import plot_design_carpet
from workbench.viz.latents import RecVAEInspector
from workbench.viz.outputs import literal, markdown_text

HOSTILE = "<img src=x onerror=alert(1)>"
HOUR = 3600.0


# --------------------------------------------------------------------------- helpers


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def _windows():
    return training_windows(fingerprints(n_subjects=3, n_rois=6, n_timepoints=80, seed=2), 16)


def _train(out: Path, **options) -> Path:
    windows = _windows()
    torch.manual_seed(0)
    method = build_method("fewshot", windows.spec(), "tiny")
    config = make_train_config(method, epochs=1, batch_size=8, device="cpu", seed=0, **options)
    return train(method, windows, config, out, progress=False).checkpoint


def _rendered(fig: Figure) -> None:
    """Draw ``fig`` with Agg, as a notebook or ``savefig`` does (mathtext is parsed here)."""
    fig.savefig(io.BytesIO(), format="png", dpi=30)


MARKUP = ("text/html", "application/vnd.plotly.v1+json")  # outputs a browser reads as (a subset of) HTML


def _strings(state, markup: bool = False):
    """The strings of a nested widget state that lie inside an HTML or plotly output."""
    if isinstance(state, dict):
        for key, value in state.items():
            yield from _strings(value, markup or key in MARKUP)
    elif isinstance(state, list | tuple):
        for value in state:
            yield from _strings(value, markup)
    elif isinstance(state, str) and markup:
        yield state


def _markup(widget) -> list[str]:
    """What of a widget's saved state (as an executed notebook keeps it) a browser reads as markup.

    Labels of controls (a Dropdown's options, a description) are set as text by ipywidgets 8.
    """
    from ipywidgets.embed import dependency_state

    return list(_strings(dependency_state(widget)))


# --------------------------------------------------------------------------- 1. names from the data in HTML


def test_latent_inspector_escapes_a_hostile_subject_in_its_html_and_saved_state():
    rng = np.random.default_rng(0)
    subjects = np.array([HOSTILE, HOSTILE, "s2", "s2", "s3"])
    inspector = LatentInspector(rng.normal(size=(5, 4)), subjects, windows=rng.normal(size=(5, 6, 3)), k=2)
    page = inspector.output.outputs[0]["data"]["text/html"]
    assert html.escape(HOSTILE) in page and "<img" not in page
    saved = _markup(inspector.widget)
    assert any(html.escape(HOSTILE) in text for text in saved) and not any("<img" in text for text in saved)
    _rendered(inspector.figure)


def test_recvae_inspector_escapes_a_hostile_run_and_category_in_its_saved_state():
    rng = np.random.default_rng(1)
    mask = np.ones((3, 2, 4), dtype=bool)
    original = rng.normal(size=(6, int(mask.sum())))
    readout = RunReadout(rng.normal(size=(6, 3)), original, original + 0.1)
    categories = np.array([HOSTILE] * 3 + ["rest"] * 3, dtype=object)
    inspector = RecVAEInspector({HOSTILE: readout}, np.eye(3) * 0.5, mask, categories={HOSTILE: categories})
    assert inspector.trajectory.layout.title.text.startswith(html.escape(HOSTILE, quote=False))
    assert html.escape(HOSTILE, quote=False) in [trace.name for trace in inspector.trajectory.data]
    saved = _markup(inspector.widget)
    assert any(html.escape(HOSTILE, quote=False) in text for text in saved)
    assert not any("<img" in text for text in saved)


def test_umap_figure_shows_hostile_names_as_text():
    subjects = np.array([HOSTILE, "s2", HOSTILE, "s2"])
    fig = umap_figure(np.zeros((4, 2)), {HOSTILE: subjects}, hover={"subject": subjects}, title=HOSTILE)
    assert "<img" not in fig.to_json()
    assert html.escape(HOSTILE, quote=False) in [trace.name for trace in fig.data]


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_markdown_text_is_one_verbatim_line_without_markup(text):
    shown = markdown_text(text)
    assert "\n" not in shown and "\r" not in shown and "<" not in shown and ">" not in shown
    assert not re.search(r"(?<!\\)(?:\\\\)*[`*_\[\]|#~$]", shown)  # every special character escaped
    unescaped = html.unescape(re.sub(r"\\(.)", r"\1", shown))
    assert unescaped == " ".join(text.splitlines())


def test_markdown_tables_keep_hostile_names_inside_their_cells():
    table = pd.DataFrame({f"task|{HOSTILE}": ["0.50 ± 0.10"]}, index=pd.Index([f"m|{HOSTILE}"], name="method"))
    for line in markdown_table(table).splitlines():
        assert "<img" not in line and len(re.findall(r"(?<!\\)\|", line)) == 3
    rows = [("closed-set", 20, 3, f"x|{HOSTILE}", 1, "accuracy", 0.5, 0.1)]
    frame = pd.DataFrame(rows, columns=["protocol", "window", "n_way", "method", "k", "metric", "mean", "ci"])
    last = table_markdown(frame, ks=(1,)).splitlines()[-1]
    assert "<img" not in last and len(re.findall(r"(?<!\\)\|", last)) == 3


# --------------------------------------------------------------------------- 2. `$` in names drawn by matplotlib


def _run(subject: str, seed: int = 0) -> Recording:
    data = np.random.default_rng(seed).normal(size=(60, 4)).astype(np.float32)
    return Recording(subject, f"ses{subject}", data, 2.0, {"roi_names": [f"{subject}{r}" for r in range(4)]})


def _volumes(subject: str) -> Recording:
    data = np.zeros((6, 6, 4, 12), dtype=np.float32)
    data[1:5, 1:5, 1:3] = 100.0 + np.random.default_rng(0).normal(size=(4, 4, 2, 12))
    return Recording(subject, "1", data, 2.5, {"affine": np.eye(4)})


def _notebook_01_figures(subject: str) -> list[Figure]:
    runs = [_run(subject), _run(subject + "2", 1)]
    freqs, psd = vdata.power_spectra(runs)
    category = np.array(["rest"] * 20 + [subject] * 20 + ["b"] * 20, dtype=object)
    labelled = [Recording(subject, "r", runs[0].data, 2.0, {}, pd.DataFrame({"category": pd.Categorical(category)}))]
    return [
        vdata.plot_timeseries(runs[0]),
        vdata.plot_timeseries(runs[0], stacked=True),
        vdata.plot_carpet(runs[0]),
        vdata.plot_qc(vdata.roi_qc(runs)),
        vdata.plot_power_spectra(freqs, psd, labels=[subject, subject]),
        vdata.plot_fc_grid(runs),
        vdata.plot_fc(np.eye(4), labels=runs[0].meta["roi_names"], title=subject),
        plot_design_carpet(labelled),
    ]


@pytest.mark.parametrize("subject", ["a$b", "$x^$", "a$_b$ \\$c$"])
def test_notebook_01_figures_draw_a_dollar_in_a_subject_verbatim(subject):
    for fig in _notebook_01_figures(subject):
        _rendered(fig)
    title = vdata.plot_carpet(_run(subject)).axes[0].get_title()
    assert not cbook.is_math_text(title) and title.replace("\\$", "$").startswith(f"{subject}/ses{subject}")


def test_nifti_figures_draw_a_dollar_in_a_subject():
    for fig in (vdata.plot_mean_epi(_volumes("$x^$")), vdata.plot_nifti_carpet(_volumes("$x^$"))):
        _rendered(fig)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet="ab$^_\\{}% ", min_size=1, max_size=12))
def test_literal_text_is_never_mathtext_and_always_draws(text):
    fig = Figure(figsize=(2, 1))
    title = fig.add_subplot().set_title(literal(text))
    assert not cbook.is_math_text(title.get_text())
    _rendered(fig)


# --------------------------------------------------------------------------- 3. temporaries


def test_a_users_hidden_tmp_file_survives_training(tmp_path):
    notes = tmp_path / ".notes.tmp"
    notes.write_text("mine")
    _age(notes, 10 * HOUR)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = tmp_path / f"{temporary_prefix(int(dead.stdout))}x1.tmp"
    orphan.write_bytes(b"half")
    _train(tmp_path)
    assert notes.read_text() == "mine"
    assert not orphan.exists()  # the run folder is swept of this machine's dead writers


def test_owned_temporaries_of_other_hosts_go_by_age_only(tmp_path):
    young = tmp_path / f"{TEMP_PREFIX}node-17-1-abc.tmp"  # pid 1 runs here, 99999999 does not: both irrelevant
    young_dead_pid = tmp_path / f"{TEMP_PREFIX}node-17-99999999-def.tmp"
    old = tmp_path / f"{TEMP_PREFIX}node-17-99999999-ghi.tmp"
    for path in (young, young_dead_pid, old):
        path.write_bytes(b"x")
    _age(old, 2 * HOUR)
    assert sweep_temporaries(tmp_path) == [old]
    assert young.exists() and young_dead_pid.exists()


def test_a_live_local_writer_keeps_its_temporary_however_old(tmp_path):
    alive = tmp_path / f"{temporary_prefix()}slow.tmp"
    alive.write_bytes(b"writing")
    _age(alive, 5 * HOUR)
    assert sweep_temporaries(tmp_path) == [] and alive.exists()


def test_writes_sweep_only_the_workbenchs_own_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    user, cache = tmp_path / "figures", tmp_path / "cache" / "memmap"
    for folder in (user, cache):
        folder.mkdir(parents=True)
        stale = folder / f"{TEMP_PREFIX}elsewhere-5-old.tmp"
        stale.write_bytes(b"x")
        _age(stale, 2 * HOUR)
        write_text(folder / "out.txt", "new")
    assert (user / f"{TEMP_PREFIX}elsewhere-5-old.tmp").exists()
    assert not (cache / f"{TEMP_PREFIX}elsewhere-5-old.tmp").exists()


def test_atomic_temporaries_carry_the_owned_prefix(tmp_path):
    with atomic_path(tmp_path / "a.json") as tmp:
        assert tmp.name.startswith(temporary_prefix()) and tmp.name.endswith(".tmp")


def test_sweep_downloads_takes_only_folders_untouched_for_an_hour(tmp_path):
    live_elsewhere = tmp_path / ".download-node7-99999999-abc"  # another machine's live fetch
    growing = tmp_path / ".download-node7-99999999-def"
    abandoned = tmp_path / ".download-node7-99999999-ghi"
    for folder in (live_elsewhere, growing, abandoned):
        (folder / "pkg.whl").parent.mkdir()
        (folder / "pkg.whl").write_bytes(b"x")
    _age(growing, 2 * HOUR)  # the folder entry is old, but its file is still being written
    for path in (abandoned / "pkg.whl", abandoned):
        _age(path, 2 * HOUR)
    sweep_downloads(tmp_path)
    assert live_elsewhere.exists() and growing.exists() and not abandoned.exists()


# --------------------------------------------------------------------------- 4. one writer per run folder


def test_a_second_training_into_a_locked_folder_is_refused_naming_it(tmp_path):
    busy = "another training is writing in " + re.escape(str(tmp_path / "run"))
    with run_folder_lock(tmp_path / "run"), pytest.raises(ConfigError, match=busy):
        _train(tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    _train(tmp_path / "run")  # the lock went with its holder
    assert not (tmp_path / "run" / RUN_LOCK).exists()  # and so does its file, once a training ends


@pytest.mark.skipif(files.fcntl is None, reason="without flock a left lock file blocks")
def test_the_lock_file_of_a_killed_training_does_not_block_the_next(tmp_path):
    (tmp_path / RUN_LOCK).write_text("")  # left by a process killed outright: nobody holds it
    _train(tmp_path)
    assert (tmp_path / "checkpoint.pt").is_file()


def test_the_lock_is_held_by_another_process_for_the_whole_training(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from workbench.files import run_folder_lock\n"
            "with run_folder_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match="another training is writing"):
            _train(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    _train(tmp_path)


def test_reports_started_in_the_same_second_get_folders_of_their_own(tmp_path, monkeypatch):
    monkeypatch.setattr(time, "strftime", lambda *_: "20240101-120000")
    folders, start = [], threading.Barrier(6)

    def new_folder():
        start.wait()
        folders.append(_new_run_dir(tmp_path, "tiny", None))

    threads = [threading.Thread(target=new_folder) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(folders)) == 6 and all(f.name.startswith("20240101-120000-tiny") for f in folders)


def test_a_report_into_a_folder_another_report_writes_is_refused(tmp_path):
    with run_folder_lock(tmp_path / "shared"), pytest.raises(ConfigError, match="another report is writing"):
        run_report("tiny", out=tmp_path, run_id="shared", progress=False)
    assert not (tmp_path / "shared" / "manifest.json").exists()


# --------------------------------------------------------------------------- 5. --out that is a file


@pytest.mark.parametrize("inside", [False, True])
def test_train_out_that_is_a_file_fails_before_any_data_are_read(tmp_path, capsys, monkeypatch, inside):
    import workbench.data.catalog as catalog

    monkeypatch.setattr(catalog, "load_recordings", lambda *a, **k: pytest.fail("data were read"))
    blocker = tmp_path / "notes.txt"
    blocker.write_text("keep")
    out = blocker / "run" if inside else blocker
    assert main(["train", "fewshot", "--dataset", "toy", "--out", str(out), "--no-progress"]) == EXIT_INPUT_ERROR
    assert str(out) in capsys.readouterr().err and blocker.read_text() == "keep"


@pytest.mark.parametrize("task", ["identification", "decoding"])
def test_evaluate_out_that_is_a_file_fails_before_the_run_is_read(tmp_path, capsys, monkeypatch, task):
    import workbench.train as train_module

    monkeypatch.setattr(train_module, "load_method", lambda *a, **k: pytest.fail("the run was read"))
    blocker = tmp_path / "results.txt"
    blocker.write_text("keep")
    args = ["evaluate", str(tmp_path / "run"), "--task", task, "--dataset", "toy", "--out", str(blocker)]
    assert main([*args, "--label", "y"] if task == "decoding" else args) == EXIT_INPUT_ERROR
    assert str(blocker) in capsys.readouterr().err and blocker.read_text() == "keep"


# --------------------------------------------------------------------------- 6. checkpoints


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_checkpoint_that_is_a_pipe_is_refused_not_read(tmp_path):
    os.mkfifo(tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="not a regular file"):
        read_checkpoint(tmp_path)


@pytest.mark.parametrize(
    ("section", "field", "value"),
    [("method_config", "d_model", 2_000_000), ("method_config", "latent_dim", 3), ("spec", "n_features", 4_000_000)],
)
def test_sizes_edited_in_a_checkpoint_are_refused_before_anything_is_built(tmp_path, section, field, value):
    checkpoint = _train(tmp_path / "run")
    state = torch.load(checkpoint, weights_only=True)
    state[section][field] = value
    torch.save(state, tmp_path / "edited.pt")
    started = time.perf_counter()
    with pytest.raises(CheckpointError, match=rf"{'spec' if section == 'spec' else section}\.{field}"):
        load_method(tmp_path / "edited.pt")
    assert time.perf_counter() - started < 60.0  # nothing of 2e6 × 2e6 was allocated (that would swap for minutes)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", available())
def test_every_family_builds_the_same_tensors_on_the_meta_device(name):
    cls = get_method(name)
    grid = {"grid": (3, 4, 2), "n_features": 24} if name == "recvae" else {"n_features": 16}
    spec = DataSpec(n_timepoints=40, n_subjects=3, **grid)
    config = cls.make_config("tiny" if "tiny" in cls.presets else None)
    with torch.device("meta"):
        meta = cls(config, spec).state_dict()
    real = cls(config, spec).state_dict()
    assert {k: v.shape for k, v in meta.items()} == {k: v.shape for k, v in real.items()}


def _full_disk(kind: str):
    def save(obj, stream):
        stream.write(b"half a checkpoint")
        if kind == "oserror":
            raise OSError(errno.ENOSPC, "No space left on device")
        try:  # what torch.save does when the file object it writes to fails
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos") from None

    return save


@pytest.mark.parametrize("kind", ["oserror", "torch"])
def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch, kind):
    checkpoint = _train(tmp_path)
    before = checkpoint.read_bytes()
    monkeypatch.setattr(torch, "save", _full_disk(kind))
    with pytest.raises(CheckpointError, match=re.escape(str(tmp_path)) + r" is full"):
        windows = _windows()
        method = build_method("fewshot", windows.spec(), "tiny")
        config = make_train_config(method, epochs=1, batch_size=8, device="cpu", seed=0)
        train(method, windows, config, tmp_path, progress=False, resume=False)
    assert checkpoint.read_bytes() == before
    assert not list(tmp_path.glob(f"{TEMP_PREFIX}*"))


def test_other_write_errors_are_not_called_a_full_disk(tmp_path, monkeypatch):
    def broken(obj, stream):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError, match="Input/output"):
        _train(tmp_path)
