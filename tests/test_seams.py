"""The seams every family plugs into: data spec, labels in batches, hooks, optimisers, volume frames."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from workbench.data.recording import Recording
from workbench.data.spec import DataSpec, LabelColumn
from workbench.data.volumes import frames_to_volumes, volume_frames
from workbench.data.windows import WindowSet
from workbench.errors import CheckpointError, ConfigError, DataError
from workbench.models.base import Method
from workbench.train import load_method, make_optimizer, make_train_config, read_checkpoint, train


@dataclass
class ProbeConfig:
    stop_at: int = 0  # after_step returns True at this step (0: never)
    subject_lr_scale: float = 1.0


class Probe(Method):
    """Records every call of the engine and what the batches hold."""

    name = "probe"
    Config = ProbeConfig
    train_defaults = {"lr": 1e-2, "batch_size": 4}

    def __init__(self, config, spec):
        super().__init__(config, spec)
        self.net = nn.Linear(spec.n_features, 2)
        self.subject_offset = nn.Parameter(torch.zeros(max(spec.n_subjects, 1), 2))
        self.register_buffer("epochs_begun", torch.zeros((), dtype=torch.long))
        self.calls: list[tuple] = []
        self.batches: list[dict] = []
        self.prepared = None

    def prepare(self, windows, labels=None):
        self.prepared = (windows.shape, None if labels is None else labels.copy())

    def before_epoch(self, epoch):
        self.calls.append(("before_epoch", epoch))
        self.epochs_begun += 1

    def training_loss(self, batch):
        self.batches.append({k: v.clone() for k, v in batch.items()})
        out = self.net(batch["x"].mean(1)) + self.subject_offset[batch["subject"]]
        return {"loss": out.pow(2).mean()}

    def after_step(self, step, total):
        self.calls.append(("after_step", step))
        return self.config.stop_at == step

    def after_epoch(self, epoch):
        self.calls.append(("after_epoch", epoch))

    def after_training(self):
        self.calls.append(("after_training",))

    def embed(self, x):
        return self.net(x.mean(1))

    def param_groups(self, weight_decay):
        shared = [p for n, p in self.named_parameters() if n != "subject_offset"]
        return [
            {"params": shared, "weight_decay": weight_decay, "apply_wd": True, "lr_scale": 1.0},
            {
                "params": [self.subject_offset],
                "weight_decay": 0.0,
                "apply_wd": False,
                "lr_scale": self.config.subject_lr_scale,
            },
        ]


@pytest.fixture(autouse=True)
def probe_registered(monkeypatch):
    import workbench.methods as methods

    monkeypatch.setitem(methods._FAMILIES, "probe", f"{__name__}:Probe")


def _labelled(n_subjects=3, frames=40, rois=4) -> list[Recording]:
    rng = np.random.default_rng(0)
    out = []
    for s in range(n_subjects):
        labels = pd.DataFrame(
            {
                "task": pd.Categorical(
                    np.where(np.arange(frames) % 10 < 5, "rest", "heat"), categories=["heat", "rest"]
                ),
                "rating": np.where(np.arange(frames) % 10 < 5, np.nan, 10.0 * s + np.arange(frames) % 10),
                "age": np.full(frames, 20.0 + s),
            }
        )
        out.append(Recording(f"s{s}", "1", rng.standard_normal((frames, rois)).astype(np.float32), 2.0, {}, labels))
    return out


def test_windows_build_the_data_spec_and_label_windows_by_the_documented_rules():
    windows = WindowSet(_labelled(), length=5, stride=5)
    spec = windows.spec()
    assert spec == DataSpec(
        n_features=4,
        n_timepoints=5,
        n_subjects=3,
        labels=(
            LabelColumn("task", "categorical", ("heat", "rest")),
            LabelColumn("rating", "continuous"),
            LabelColumn("age", "continuous"),
        ),
    )
    # window 0 covers frames 0-4 (rest), window 1 frames 5-9 (heat, ratings 5..9 of subject 0)
    np.testing.assert_array_equal(windows.y[0], [1.0, np.nan, 20.0])
    np.testing.assert_array_equal(windows.y[1], [0.0, 7.0, 20.0])
    straddling = WindowSet(_labelled(), length=6, stride=3, label_names=["task", "rating"], label_rule="pure")
    # start 3: frames 3-8, two rest and four heat frames -> not pure; the mean rating of the defined frames
    assert np.isnan(straddling.y[1, 0]) and straddling.y[1, 1] == pytest.approx(np.mean([5, 6, 7, 8]))
    majority = WindowSet(_labelled(), length=6, stride=3, label_names=["task"])
    assert majority.y[1, 0] == 0.0  # heat is the majority
    with pytest.raises(DataError, match="available"):
        WindowSet(_labelled(), 5, 5, label_names=["pain"])
    assert DataSpec.from_dict(spec.to_dict()) == spec


def test_batches_carry_labels_prepare_receives_them_and_the_spec_is_checkpointed(tmp_path):
    windows = WindowSet(_labelled(), length=5, stride=5)
    torch.manual_seed(0)
    probe = Probe(ProbeConfig(), windows.spec())
    # no learning diagnostics: they would call training_loss on the monitor batch first
    train(probe, windows, make_train_config(probe, epochs=1, device="cpu", monitor_every=0), tmp_path, progress=False)
    assert probe.prepared[0] == (len(windows), 5, 4)
    np.testing.assert_array_equal(probe.prepared[1], windows.y)
    batch = probe.batches[0]
    assert batch["y"].shape == (4, 3) and batch["y"].dtype == torch.float32
    np.testing.assert_array_equal(batch["y"].numpy(), windows.y[batch["index"].numpy()])
    loaded, _, state = load_method(tmp_path)
    assert loaded.spec == windows.spec() and tuple(state["spec"]["labels"][0]["categories"]) == ("heat", "rest")


def test_hooks_run_in_order_and_after_training_runs_when_max_steps_cuts_an_epoch(tmp_path):
    windows = WindowSet(_labelled(), length=5, stride=5)  # 24 windows: 6 steps per epoch
    probe = Probe(ProbeConfig(), windows.spec())
    train(probe, windows, make_train_config(probe, epochs=3, max_steps=8, device="cpu"), tmp_path, progress=False)
    assert probe.calls[:8] == [("before_epoch", 0), *[("after_step", s) for s in range(1, 7)], ("after_epoch", 0)]
    assert probe.calls[8:] == [("before_epoch", 1), ("after_step", 7), ("after_step", 8), ("after_training",)]


def test_after_step_can_end_training_and_a_finished_run_is_not_continued(tmp_path):
    windows = WindowSet(_labelled(), length=5, stride=5)
    probe = Probe(ProbeConfig(stop_at=3), windows.spec())
    cfg = make_train_config(probe, epochs=3, device="cpu")
    result = train(probe, windows, cfg, tmp_path, progress=False)
    assert result.steps == 3 and probe.calls[-1] == ("after_training",)
    assert read_checkpoint(tmp_path)["finished"] is True
    again = Probe(ProbeConfig(stop_at=3), windows.spec())
    assert train(again, windows, cfg, tmp_path, progress=False).steps == 3
    assert again.calls == []  # a finished run is loaded, not continued


def test_before_epoch_is_called_again_for_the_epoch_a_resumed_run_reenters(tmp_path):
    windows = WindowSet(_labelled(), length=5, stride=5)
    cfg = make_train_config(Probe, epochs=2, checkpoint_every=2, device="cpu")

    class Crash(RuntimeError):
        pass

    first = Probe(ProbeConfig(), windows.spec())
    original = first.after_step

    def crash(step, total):
        original(step, total)
        if step == 3:
            raise Crash

    first.after_step = crash
    with pytest.raises(Crash):
        train(first, windows, cfg, tmp_path, progress=False)
    resumed = Probe(ProbeConfig(), windows.spec())
    train(resumed, windows, cfg, tmp_path, progress=False)
    assert resumed.calls[0] == ("before_epoch", 0) and resumed.calls[1] == ("after_step", 3)
    assert int(resumed.epochs_begun) == 3  # the buffer came back from the step-2 checkpoint (1) + epochs 0 and 1


@pytest.mark.parametrize(
    "name, kind", [("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam), ("sgd", torch.optim.SGD)]
)
def test_optimizer_choice_and_per_group_learning_rate_scale(tmp_path, name, kind):
    windows = WindowSet(_labelled(), length=5, stride=5)
    probe = Probe(ProbeConfig(subject_lr_scale=10.0), windows.spec())
    cfg = make_train_config(probe, optimizer=name, lr=0.01, weight_decay=0.1, epochs=1, device="cpu")
    optimizer = make_optimizer(probe, cfg)
    assert isinstance(optimizer, kind)
    if name == "sgd":
        assert optimizer.param_groups[0]["momentum"] == cfg.momentum
    result = train(probe, windows, cfg, tmp_path / name, progress=False)
    assert result.history["step"][0]["lr"] == pytest.approx(0.01)
    state = read_checkpoint(tmp_path / name)["optimizer"]["param_groups"]
    shared, subject = state
    assert subject["lr"] == pytest.approx(10.0 * shared["lr"])  # the cosine reached its end, both scaled alike
    assert shared["weight_decay"] == pytest.approx(0.1) and subject["weight_decay"] == 0.0  # per-subject: no decay
    with pytest.raises(ConfigError, match="optimizer"):
        make_train_config(probe, optimizer="lamb")


def test_a_resumption_with_other_settings_is_refused(tmp_path):
    windows = WindowSet(_labelled(), length=5, stride=5)
    probe = Probe(ProbeConfig(), windows.spec())
    train(probe, windows, make_train_config(probe, epochs=1, device="cpu"), tmp_path, progress=False)
    other = Probe(ProbeConfig(subject_lr_scale=2.0), windows.spec())
    with pytest.raises(CheckpointError, match=r"subject_lr_scale \(1.0 -> 2.0\).*--force-new"):
        train(other, windows, make_train_config(other, epochs=1, device="cpu"), tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="seed"):
        train(probe, windows, make_train_config(probe, epochs=1, seed=5, device="cpu"), tmp_path, progress=False)
    fresh = train(
        other, windows, make_train_config(other, epochs=1, device="cpu"), tmp_path, progress=False, resume=False
    )
    assert fresh.steps == 6


def test_volumes_travel_as_frames_through_windows_and_the_engine(tmp_path):
    rng = np.random.default_rng(0)
    grid = (4, 5, 3)
    mask = np.zeros(grid, dtype=bool)
    mask[1:3, 1:4, :] = True
    runs = []
    for s in range(2):
        volumes = np.zeros((*grid, 30), dtype=np.float32)  # constant background outside the mask
        volumes[mask] = rng.standard_normal((int(mask.sum()), 30))
        volumes[1, 1, 0] = 5.0  # a constant voxel inside the mask
        runs.append(volume_frames(Recording(f"s{s}", "1", volumes, 2.0), mask))
    assert runs[0].data.shape == (30, 18) and runs[0].data.dtype == np.float32
    windows = WindowSet(runs, length=6, stride=3)
    spec = windows.spec()
    assert spec.grid == grid and spec.n_features == 18
    back = frames_to_volumes(torch.from_numpy(windows.get(0)), torch.from_numpy(mask))
    assert back.shape == (6, *grid) and torch.all(back[:, ~torch.from_numpy(mask)] == 0)
    probe = Probe(ProbeConfig(), spec)
    result = train(
        probe,
        windows,
        make_train_config(probe, epochs=1, normalization="global", device="cpu"),
        tmp_path,
        progress=False,
    )
    assert result.standardizer.mean_.shape == (1,) and np.isfinite(probe.batches[0]["x"].numpy()).all()
    with pytest.raises(DataError, match="constant"):  # per-voxel statistics would divide by zero
        train(
            Probe(ProbeConfig(), spec),
            windows,
            make_train_config(Probe, normalization="dataset", device="cpu"),
            tmp_path / "dataset",
            progress=False,
        )
    with pytest.raises(DataError, match="grid"):
        volume_frames(Recording("s", "1", np.zeros((*grid, 5), np.float32), 2.0), np.ones((4, 4, 4), bool))
