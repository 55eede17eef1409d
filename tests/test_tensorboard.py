"""TensorBoard logging of a training: what the event files hold, read back with TensorBoard's own reader."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from workbench.cli import main
from workbench.data.recording import Recording
from workbench.data.windows import WindowSet
from workbench.errors import ConfigError
from workbench.models.base import Method
from workbench.notebook import method_factories, training_plan
from workbench.train import make_train_config, read_checkpoint, train
from workbench.train.tensorboard import TENSORBOARD_DIR

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class FitConfig:
    width: int = 4


class Fit(Method):
    """A linear encoder pulled towards 1 with a small penalty: a loss with one named term."""

    name = "fit"
    Config = FitConfig
    train_defaults = {"lr": 1e-2, "batch_size": 8}
    crash_at = 0  # raise in after_step of this step (0: never)

    def __init__(self, config, spec):
        super().__init__(config, spec)
        self.net = nn.Linear(spec.n_features, config.width)

    def embed(self, x):
        return self.net(x).mean(1)

    def training_loss(self, batch):
        z = self.embed(batch["x"])
        fit = (z - 1.0).pow(2).mean()
        return {"loss": fit + 0.1 * z.pow(2).mean(), "fit": fit}

    def after_step(self, step, total):
        if step == self.crash_at:
            raise RuntimeError("stopped on purpose")


def _windows() -> WindowSet:
    task = pd.DataFrame({"task": pd.Categorical(np.repeat(["rest", "motor"], 40))})
    runs = [
        Recording(
            f"sub-{i}", "1", np.random.default_rng(i).normal(size=(80, 5)).astype(np.float32), 1.0, frame_labels=task
        )
        for i in range(3)
    ]
    return WindowSet(runs, length=10, stride=5)


def _train(folder: Path, crash_at: int = 0, **settings):
    windows = _windows()
    torch.manual_seed(0)
    method = Fit(FitConfig(), windows.spec())
    method.crash_at = crash_at
    config = make_train_config(method, epochs=5, max_steps=6, **settings)
    return train(method, windows, config, folder, progress=False)


def _events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder / TENSORBOARD_DIR))
    events.Reload()
    return events


def _hparams(events) -> tuple[dict, list[str]]:
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    content = events.PluginTagToContent("hparams")
    start = HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    values = {key: getattr(value, value.WhichOneof("kind")) for key, value in start.hparams.items()}
    return values, [info.name.tag for info in experiment.metric_infos]


def test_tensorboard_holds_the_history_the_monitor_the_projector_and_the_hparams(tmp_path, one_thread):
    result = _train(tmp_path, log=["tensorboard"])
    events = _events(tmp_path)
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "train/fit", "train/lr", "monitor/rankme", "monitor/spread", "hparams/final_loss"} <= scalars

    steps = result.history["step"]
    logged = events.Scalars("train/loss")
    assert [e.step for e in logged] == [h["step"] for h in steps] == [1, 2, 3, 4, 5, 6]
    assert [e.value for e in logged] == pytest.approx([h["loss"] for h in steps], rel=1e-6)
    assert [e.value for e in events.Scalars("train/fit")] == pytest.approx([h["fit"] for h in steps], rel=1e-6)
    assert [e.value for e in events.Scalars("train/lr")] == pytest.approx([h["lr"] for h in steps], rel=1e-6)

    records = result.history["monitor"]
    rankme = events.Scalars("monitor/rankme")
    assert [e.step for e in rankme] == [int(r["step"]) for r in records] and len(records) > 2
    assert [e.value for e in rankme] == pytest.approx([r["rankme"] for r in records], rel=1e-6)

    board = tmp_path / TENSORBOARD_DIR
    config = (board / "projector_config.pbtxt").read_text()
    assert 'tensor_name: "monitor:00006"' in config
    metadata = (board / "00006" / "monitor" / "metadata.tsv").read_text().splitlines()
    assert metadata[0] == "subject\ttask"
    assert {row.split("\t")[0] for row in metadata[1:]} == {"sub-0", "sub-1", "sub-2"}
    assert {row.split("\t")[1] for row in metadata[1:]} == {"rest", "motor"}
    tensors = (board / "00006" / "monitor" / "tensors.tsv").read_text().splitlines()
    assert len(tensors) == len(metadata) - 1 and len(tensors[0].split("\t")) == 4  # one row per window, width 4

    hparams, metrics = _hparams(events)
    assert hparams["family"] == "fit" and hparams["fit.width"] == 4 and hparams["train.lr"] == pytest.approx(1e-2)
    assert {"hparams/final_loss", "hparams/monitor_loss", "hparams/rankme"} <= set(metrics)
    assert events.Scalars("hparams/final_loss")[-1].value == pytest.approx(steps[-1]["loss"], rel=1e-6)


def test_a_resumed_run_shows_every_step_once_with_the_resumed_values(tmp_path, one_thread):
    with pytest.raises(RuntimeError, match="on purpose"):
        _train(tmp_path, crash_at=4, checkpoint_every=2, log=["tensorboard"])  # logged steps 1-3, checkpoint at 2
    assert [e.step for e in _events(tmp_path).Scalars("train/loss")] == [1, 2, 3]  # flushed although it failed

    result = _train(tmp_path, checkpoint_every=2, log=["tensorboard"])
    logged = _events(tmp_path).Scalars("train/loss")
    assert [e.step for e in logged] == [1, 2, 3, 4, 5, 6]  # step 3 of the failed process is hidden, not doubled
    assert [e.value for e in logged] == pytest.approx([h["loss"] for h in result.history["step"]], rel=1e-6)
    assert "log" not in read_checkpoint(tmp_path)["train_config"]  # logging is no part of the run's identity
    assert _train(tmp_path, checkpoint_every=2).steps == 6  # so the finished run resumes without the log too


def test_logging_off_imports_no_tensorboard_and_writes_no_events(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(ROOT / "tests")!r})
        from pathlib import Path
        from test_tensorboard import _train
        _train(Path({str(tmp_path)!r}))
        print([name for name in ("tensorboard", "torch.utils.tensorboard") if name in sys.modules])
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "history.json").is_file() and not (tmp_path / TENSORBOARD_DIR).exists()


def test_unknown_log_names_and_a_missing_tensorboard_are_config_errors(tmp_path, monkeypatch, one_thread):
    with pytest.raises(ConfigError, match=r"log=\['tensorbord'\].*choose from \['tensorboard'\]"):
        make_train_config(Fit, log=["tensorbord"])
    with pytest.raises(ConfigError, match="log.*choose from"):
        method_factories(training_plan({"methods": ["fewshot"], "log": ["wandb"]}), tmp_path)

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if TensorBoard were not installed
    with pytest.raises(ConfigError, match=r"pip install fmri-workbench\[tensorboard\]"):
        _train(tmp_path / "run", log=["tensorboard"])
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_the_training_plan_passes_its_log_to_every_training_and_leaves_other_plans_alone():
    plan = training_plan({"methods": ["fewshot", "jepa"], "steps": {"jepa": 3}, "log": ["tensorboard"]})
    assert plan.engine("fewshot")["log"] == ["tensorboard"] and plan.engine("jepa")["log"] == ["tensorboard"]
    assert "log" not in training_plan({"methods": ["fewshot"]}).engine("fewshot")  # runs cached before keep their key


@pytest.mark.filterwarnings("ignore::workbench.errors.LearningWarning")  # two steps learn little
def test_workbench_train_log_tensorboard(tmp_path, monkeypatch, capsys, one_thread, write_toy_catalog):
    write_toy_catalog(tmp_path)
    monkeypatch.setenv("WORKBENCH_CATALOG", str(tmp_path / "catalog.yaml"))
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    argv = ["train", "fewshot", "--dataset", "toy", "--window", "16", "--preset", "tiny", "--out", str(run)]
    argv += ["--set", "max_steps=2", "--set", "batch_size=24", "--no-progress"]

    assert main([*argv, "--log", "tensorbord"]) == 2
    assert "choose from ['tensorboard']" in capsys.readouterr().err

    assert main([*argv, "--log", "tensorboard"]) == 0, capsys.readouterr().err
    history = json.loads((run / "history.json").read_text())
    logged = _events(run).Scalars("train/loss")
    assert [e.value for e in logged] == pytest.approx([h["loss"] for h in history["step"]], rel=1e-6)
    subjects = read_checkpoint(run)["subjects"]
    metadata = (run / TENSORBOARD_DIR / "00002" / "monitor" / "metadata.tsv").read_text().split()
    assert set(metadata) == set(subjects)  # the only column, so no header row
