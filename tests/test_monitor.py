"""Learning diagnostics while training: records on a fixed monitor batch, the floor, the verdict."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from workbench.data.recording import Recording
from workbench.data.windows import WindowSet
from workbench.errors import ConfigError, LearningWarning
from workbench.models.base import Method
from workbench.spectrum import rankme
from workbench.train import HISTORY_NAME, make_train_config, train
from workbench.train.monitor import MONITOR_POINTS, is_monitor_step, monitor_interval


@dataclass
class RegressConfig:
    floor: float = 1.0  # the floor the diagnostics report, in units of the loss


class Regress(Method):
    """Fits the window's mean to a fixed target: loss falls from ~1 to ~0; the floor is a setting."""

    name = "regress"
    Config = RegressConfig
    floor_description = "a set value"
    train_defaults = {"lr": 5e-2, "batch_size": 8, "clip_grad": None}

    def __init__(self, config, spec):
        super().__init__(config, spec)
        self.net = nn.Linear(spec.n_features, 3)
        self.seen: list[int] = []  # sizes of the batches diagnostics saw

    def training_loss(self, batch):
        return {"loss": (self.net(batch["x"].mean(1)) - 1.0).pow(2).mean()}

    def embed(self, x):
        return self.net(x.mean(1))

    def diagnostics(self, batch):
        self.seen.append(batch["x"].shape[0])
        return {
            "loss": float(self.training_loss(batch)["loss"]),
            "floor": self.config.floor,
            "draw": float(torch.rand(())),
        }


def _windows(n_subjects: int = 4, seed: int = 0) -> WindowSet:
    rng = np.random.default_rng(seed)
    runs = [Recording(f"s{i}", "1", rng.normal(size=(80, 5)).astype(np.float32), 1.0) for i in range(n_subjects)]
    return WindowSet(runs, length=8, stride=4)


def _train(tmp_path, floor: float, **engine):
    windows = _windows()
    torch.manual_seed(0)
    method = Regress(RegressConfig(floor=floor), windows.spec())
    config = make_train_config(method, device="cpu", normalization="none", **engine)
    return method, train(method, windows, config, tmp_path, progress=False)


def test_interval_gives_about_twenty_records_and_always_the_last_step():
    assert monitor_interval(400, None) == 400 // MONITOR_POINTS
    assert monitor_interval(7, None) == 1 and monitor_interval(7, 3) == 3 and monitor_interval(7, 0) == 0
    steps = [s for s in range(0, 51) if is_monitor_step(s, 50, 20)]
    assert steps == [0, 20, 40, 50]
    assert not any(is_monitor_step(s, 50, 0) for s in range(51))


def test_records_at_the_interval_with_rankme_of_the_monitor_batch(tmp_path):
    method, result = _train(tmp_path, floor=10.0, max_steps=12, monitor_every=5, monitor_windows=16)
    records = result.history["monitor"]
    assert [r["step"] for r in records] == [0, 5, 10, 12]
    assert set(method.seen) == {16}  # the fixed batch of monitor_windows windows
    # the seeded RNG: the same draws at every call, whatever training drew in between
    assert len({r["draw"] for r in records}) == 1
    assert all(0 < r["rankme"] <= 3 for r in records)
    assert records[-1]["loss"] < records[0]["loss"]  # the model learned on the monitor batch
    assert result.history["monitor_on"] == "training windows" and result.history["verdict"] is None
    on_disk = json.loads((tmp_path / HISTORY_NAME).read_text())
    assert on_disk["monitor"] == records


def test_rankme_record_is_the_centred_rankme_of_the_embeddings(tmp_path):
    method, result = _train(tmp_path, floor=10.0, max_steps=3, monitor_every=3, monitor_windows=16)
    windows = _windows()
    picks = np.unique(np.linspace(0, len(windows) - 1, 16).round().astype(int))
    with torch.no_grad():
        embeddings = method.embed(torch.from_numpy(windows.get(picks))).numpy()
    assert result.history["monitor"][-1]["rankme"] == pytest.approx(rankme(embeddings), rel=1e-5)


def test_a_run_that_ends_at_its_floor_warns_and_says_so(tmp_path):
    with pytest.warns(LearningWarning, match=r"regress after 6 steps: .*not below its trivial floor .*a set value"):
        _, result = _train(tmp_path, floor=0.0, max_steps=6)
    assert "not below its trivial floor" in result.history["verdict"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", LearningWarning)
        _train(tmp_path / "below", floor=10.0, max_steps=6)  # below its floor: no warning


def test_held_out_monitor_windows_are_used_and_named(tmp_path):
    windows, held_out = _windows(), _windows(n_subjects=2, seed=9)
    torch.manual_seed(0)
    method = Regress(RegressConfig(), windows.spec())
    config = make_train_config(method, device="cpu", max_steps=4, monitor_windows=1000, normalization="none")
    result = train(method, windows, config, tmp_path, progress=False, monitor=held_out)
    assert result.history["monitor_on"] == "held-out windows"
    assert set(method.seen) == {len(held_out)}  # capped at the windows there are


def test_resumed_run_has_the_records_of_an_uninterrupted_one(tmp_path):
    engine = dict(max_steps=20, monitor_every=4, checkpoint_every=6)
    _, whole = _train(tmp_path / "whole", floor=10.0, **engine)
    windows = _windows()
    torch.manual_seed(0)
    method = Regress(RegressConfig(floor=10.0), windows.spec())
    config = make_train_config(method, device="cpu", normalization="none", **engine)
    original = method.after_step

    def interrupt(step, total):  # the process dies after step 7; the checkpoint of step 6 survives
        if step == 7:
            raise KeyboardInterrupt
        return original(step, total)

    method.after_step = interrupt
    with pytest.raises(KeyboardInterrupt):
        train(method, windows, config, tmp_path / "cut", progress=False)
    torch.manual_seed(0)
    resumed = Regress(RegressConfig(floor=10.0), windows.spec())
    result = train(resumed, windows, config, tmp_path / "cut", progress=False)
    steps = [r["step"] for r in result.history["monitor"]]
    assert steps == [r["step"] for r in whole.history["monitor"]] == [0, 4, 8, 12, 16, 20]
    for a, b in zip(result.history["monitor"], whole.history["monitor"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)


def test_monitor_settings_are_checked():
    method = Regress(RegressConfig(), _windows().spec())
    with pytest.raises(ConfigError, match="monitor_every"):
        make_train_config(method, monitor_every=-1)
    with pytest.raises(ConfigError, match="monitor_windows"):
        make_train_config(method, monitor_windows=1)


def test_default_diagnostics_report_the_loss_without_a_floor():
    windows = _windows()
    method = Method.__new__(Regress)
    Regress.__init__(method, RegressConfig(), windows.spec())
    batch = {"x": torch.from_numpy(windows.get(np.arange(4)))}
    record = Method.diagnostics(method, batch)
    assert set(record) == {"loss"} and math.isfinite(record["loss"])
    assert method.learning_verdict(record) is None  # no floor, no verdict
    assert method.learning_verdict({"loss": 2.0, "floor": 1.0}) is not None
    assert method.learning_verdict({"loss": 0.5, "floor": 1.0}) is None


def test_held_out_windows_are_the_second_halves_a_closed_set_training_never_covers():
    from workbench.runs import held_out_windows, training_windows

    recordings = _windows().recordings
    train_windows = training_windows(recordings, 8, protocol="closed")
    held_out = held_out_windows(train_windows)
    assert held_out.part == "second" and held_out.stride == 8 and held_out.subjects == train_windows.subjects
    for r in range(len(recordings)):  # no frame of a held-out window lies in a training window's span
        seen = train_windows.starts[train_windows.rec_index == r].max() + train_windows.length
        assert held_out.starts[held_out.rec_index == r].min() >= seen
    assert held_out_windows(training_windows(recordings, 8, protocol="all")) is None


@pytest.mark.parametrize("family", ["jepa", "yaware"])
def test_monitoring_leaves_the_trained_weights_unchanged(tmp_path, family):
    # both families draw masks or views from torch's RNG inside their diagnostics
    from workbench.train import build_method

    rng = np.random.default_rng(3)
    runs = [Recording(f"s{i}", "1", rng.normal(size=(96, 8)).astype(np.float32), 1.0) for i in range(4)]
    windows = WindowSet(runs, length=24, stride=6)
    digests = []
    for every in (0, 2):
        torch.manual_seed(0)
        method = build_method(family, windows.spec(), "tiny")
        config = make_train_config(method, device="cpu", max_steps=5, batch_size=8, monitor_every=every)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LearningWarning)
            result = train(method, windows, config, tmp_path / f"{family}-{every}", progress=False)
        digests.append(result.meta["weights_sha256"])
        assert len(result.history["monitor"]) == (0 if every == 0 else 4)  # steps 0, 2, 4, 5
        assert result.history["monitor_on"] == ("off" if every == 0 else "training windows")
    assert digests[0] == digests[1]


def test_records_show_collapse_through_the_spread_and_the_offset():
    from workbench.train.monitor import embedding_spread

    rng = np.random.default_rng(0)
    collapsed = np.ones((64, 16)) * 3.0 + 1e-5 * rng.normal(size=(64, 16))
    record = embedding_spread(collapsed)
    assert record["rankme"] > 10  # a jitter has full centred rank ...
    assert record["spread"] < 1e-4 and record["offset_ratio"] > 1e4  # ... but no spread: collapse
    varied = rng.normal(size=(64, 16))
    record = embedding_spread(varied)
    assert record["spread"] > 0.9 and record["offset_ratio"] < 0.5
    assert math.isnan(embedding_spread(np.full((4, 2), np.nan))["rankme"])


def test_monitor_windows_without_the_training_labels_are_refused(tmp_path):
    from workbench.train.monitor import check_monitor_labels

    task = pd.DataFrame({"task": pd.Categorical(np.repeat(["a", "b"], 40))})
    runs = [
        Recording(
            f"s{i}", "1", np.random.default_rng(i).normal(size=(80, 5)).astype(np.float32), 1.0, frame_labels=task
        )
        for i in range(3)
    ]
    labelled = WindowSet(runs, 8, 4, label_names=["task"])
    unlabelled = WindowSet(runs, 8, 4, label_names=[])
    with pytest.raises(ConfigError, match="label columns"):
        check_monitor_labels(labelled, unlabelled)
    check_monitor_labels(labelled, WindowSet(runs, 8, 8, label_names=["task"]))  # the same columns: fine
    check_monitor_labels(unlabelled, labelled)  # a family without labels reads none


def test_learning_figure_draws_loss_against_floor_and_refuses_unmonitored_runs():
    from workbench.errors import DataError
    from workbench.viz.training import plot_learning

    records = [{"step": s, "loss": 1.0 / (s + 1), "floor": 0.5, "rankme": 3.0 + s} for s in (0, 5, 10)]
    jepa = [{**r, "content_cosine": 0.1 * i} for i, r in enumerate(records)]
    fig = plot_learning({"a": {"monitor": records}, "jepa": {"monitor": jepa}})
    loss, floor = fig.axes[0].lines[:2]
    np.testing.assert_allclose(loss.get_ydata(), [1.0, 1 / 6, 1 / 11])
    np.testing.assert_allclose(floor.get_ydata(), [0.5, 0.5, 0.5])
    assert len(fig.axes) == 6  # three rows: jepa logged a family scalar
    assert not fig.axes[4].lines and len(fig.axes[5].lines) == 1  # only the run that logged it draws it
    with pytest.raises(DataError, match="no learning diagnostics"):
        plot_learning({"a": {"monitor": []}})
