"""The training engine: schedules, seeding, resume, checkpoints."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from workbench.data.recording import Recording
from workbench.data.spec import DataSpec
from workbench.data.windows import WindowSet
from workbench.errors import CheckpointError, ConfigError
from workbench.models.base import Method
from workbench.train import (
    cosine_schedule,
    load_method,
    make_train_config,
    read_checkpoint,
    resolve_device,
    train,
)


@dataclass
class ToyConfig:
    width: int = 8
    dropout: float = 0.2


class Toy(Method):
    """A small stochastic (dropout) encoder trained to separate subjects."""

    name = "toy"
    Config = ToyConfig
    train_defaults = {"lr": 1e-2, "batch_size": 8}

    def __init__(self, config, spec):
        super().__init__(config, spec)
        self.net = nn.Sequential(nn.Linear(spec.n_features, config.width), nn.Dropout(config.dropout))
        self.head = nn.Linear(config.width, 3)
        self.epochs_seen: list[int] = []

    def embed(self, x):
        return self.net(x).mean(1)

    def training_loss(self, batch):
        logits = self.head(self.embed(batch["x"]))
        loss = nn.functional.cross_entropy(logits, batch["subject"])
        return {"loss": loss, "noise": torch.rand(())}

    def after_epoch(self, epoch):
        self.epochs_seen.append(epoch)


SPEC = DataSpec(5, 10, n_subjects=3)


@pytest.fixture
def windows():
    rng = np.random.default_rng(0)
    recs = [Recording(f"s{i}", "1", (rng.standard_normal((120, 5)) + i).astype(np.float32), 1.0) for i in range(3)]
    return WindowSet(recs, length=10, stride=5)


@pytest.fixture
def toy_registered(monkeypatch):
    import workbench.methods as methods

    monkeypatch.setitem(methods._FAMILIES, "toy", f"{__name__}:Toy")


def _params(m):
    return torch.cat([p.detach().flatten() for p in m.parameters()])


def test_cosine_schedule_values():
    assert cosine_schedule(0, 100, 1.0, 0.0, warmup=10, warmup_start=0.1) == pytest.approx(0.1)
    assert cosine_schedule(5, 100, 1.0, 0.0, warmup=10, warmup_start=0.0) == pytest.approx(0.5)
    assert cosine_schedule(10, 100, 1.0, 0.0, warmup=10) == pytest.approx(1.0)
    assert cosine_schedule(55, 100, 1.0, 0.0, warmup=10) == pytest.approx(0.5)
    assert cosine_schedule(100, 100, 1.0, 0.2, warmup=10) == pytest.approx(0.2)
    mid = cosine_schedule(25, 100, 0.04, 0.4)
    assert mid == pytest.approx(0.4 + 0.5 * (0.04 - 0.4) * (1 + math.cos(math.pi * 0.25)))


def test_train_config_layers_family_defaults_and_overrides():
    cfg = make_train_config(Toy, epochs=3)
    assert (cfg.lr, cfg.batch_size, cfg.epochs) == (1e-2, 8, 3)
    with pytest.raises(ConfigError, match="unknown key"):
        make_train_config(Toy, epochz=3)
    with pytest.raises(ConfigError, match="batch_size"):
        make_train_config(Toy, batch_size="big")


def test_resolve_device():
    assert resolve_device("auto").type in {"cpu", "cuda", "mps"}
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ConfigError):
        resolve_device("tpu:7")


def test_training_reduces_the_loss_and_writes_history(tmp_path, windows, toy_registered):
    torch.manual_seed(0)
    method = Toy(ToyConfig(), SPEC)
    cfg = make_train_config(method, epochs=6, device="cpu")
    result = train(method, windows, cfg, tmp_path, progress=False)
    losses = [h["loss"] for h in result.history["epoch"]]
    assert losses[-1] < losses[0]
    assert (tmp_path / "history.json").exists() and (tmp_path / "checkpoint.pt").exists()
    assert method.epochs_seen == list(range(6))
    assert result.history["step"][-1]["step"] == result.steps


def test_same_seed_same_weights(tmp_path, windows, toy_registered):
    runs = []
    for name in ("a", "b"):
        torch.manual_seed(123)  # identical init
        m = Toy(ToyConfig(), SPEC)
        train(m, windows, make_train_config(m, epochs=2, device="cpu", seed=4), tmp_path / name, progress=False)
        runs.append(_params(m))
    assert torch.equal(runs[0], runs[1])


def test_deterministic_kernels_during_training_only(tmp_path, windows, toy_registered):
    seen = []
    for deterministic in (True, False):
        torch.manual_seed(0)
        m = Toy(ToyConfig(), SPEC)
        original = m.training_loss

        def recording_loss(batch, original=original):
            seen.append(torch.are_deterministic_algorithms_enabled())
            return original(batch)

        m.training_loss = recording_loss
        cfg = make_train_config(m, epochs=1, device="cpu", deterministic=deterministic)
        train(m, windows, cfg, tmp_path / str(deterministic), progress=False)
        assert not torch.are_deterministic_algorithms_enabled()  # the caller's setting is restored
    assert seen[0] is True and seen[-1] is False


def test_resume_reproduces_the_uninterrupted_run(tmp_path, windows, toy_registered):
    torch.manual_seed(0)
    straight = Toy(ToyConfig(), SPEC)
    init = {k: v.clone() for k, v in straight.state_dict().items()}
    cfg = make_train_config(
        straight, epochs=4, device="cpu", checkpoint_every=3, warmup_steps=2, weight_decay=0.01, final_weight_decay=0.1
    )
    train(straight, windows, cfg, tmp_path / "straight", progress=False)

    class Crash(RuntimeError):
        pass

    interrupted = Toy(ToyConfig(), SPEC)
    interrupted.load_state_dict(init)
    original = interrupted.after_step

    def crash_after(step, total):
        original(step, total)
        if step == 7:  # after the step-6 checkpoint, mid-epoch
            raise Crash

    interrupted.after_step = crash_after
    with pytest.raises(Crash):
        train(interrupted, windows, cfg, tmp_path / "resumed", progress=False)
    assert read_checkpoint(tmp_path / "resumed")["step"] == 6

    resumed = Toy(ToyConfig(), SPEC)
    resumed.load_state_dict(init)
    result = train(resumed, windows, cfg, tmp_path / "resumed", progress=False)
    assert torch.allclose(_params(resumed), _params(straight), atol=1e-6)
    steps = [h["step"] for h in result.history["step"]]
    assert steps == list(range(1, result.steps + 1))


def test_checkpoint_round_trip_and_refusals(tmp_path, windows, toy_registered):
    m = Toy(ToyConfig(), SPEC)
    train(m, windows, make_train_config(m, epochs=1, device="cpu"), tmp_path, progress=False)
    loaded, standardizer, state = load_method(tmp_path)
    assert torch.equal(_params(loaded), _params(m))
    assert state["subjects"] == ["s0", "s1", "s2"]
    assert standardizer.mean_.shape == (5,)

    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    state["surprise"] = 1
    torch.save(state, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match="unexpected content"):
        read_checkpoint(tmp_path / "extra.pt")

    torch.save({"format": "workbench-checkpoint-2", "model": Toy}, tmp_path / "pickled.pt")
    with pytest.raises(CheckpointError, match="loaded safely"):
        read_checkpoint(tmp_path / "pickled.pt")

    (tmp_path / "trunc.pt").write_bytes((tmp_path / "checkpoint.pt").read_bytes()[:100])
    with pytest.raises(CheckpointError):
        read_checkpoint(tmp_path / "trunc.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "nothing.pt")


def test_no_partial_checkpoint_on_failed_write(tmp_path, windows, toy_registered, monkeypatch):
    m = Toy(ToyConfig(), SPEC)

    def broken_save(obj, stream):
        stream.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        train(m, windows, make_train_config(m, epochs=1, device="cpu"), tmp_path, progress=False)
    assert list(tmp_path.glob("*.pt")) == [] and list(tmp_path.glob(".*tmp")) == []


def test_too_few_windows_for_a_step(tmp_path, windows, toy_registered):
    m = Toy(ToyConfig(), SPEC)
    with pytest.raises(ConfigError, match="no optimiser step"):
        train(m, windows, make_train_config(m, batch_size=4, grad_accum=1000, device="cpu"), tmp_path, progress=False)


def test_non_finite_loss_names_the_likely_cause(tmp_path, windows, toy_registered):
    m = Toy(ToyConfig(), SPEC)
    m.training_loss = lambda batch: {"loss": torch.tensor(float("nan"), requires_grad=True)}
    with pytest.raises(ConfigError, match="look sound.*lower the learning rate"):
        train(m, windows, make_train_config(m, epochs=1, device="cpu"), tmp_path, progress=False)
    # a region without coverage in one run: the message names the run, the frames and the feature
    recs = [Recording(r.subject, r.session, r.data.copy(), r.tr) for r in windows.recordings]
    recs[1].data[:, 3] = 0.0
    flat = WindowSet(recs, length=10, stride=5)
    m = Toy(ToyConfig(), SPEC)
    m.training_loss = lambda batch: {"loss": batch["x"].sum() * torch.tensor(float("nan"), requires_grad=True)}
    with pytest.raises(ConfigError, match=r"run s1/1 frames \[\d+, \d+\) has constant feature\(s\) \[3\]"):
        train(
            m,
            flat,
            make_train_config(m, epochs=1, device="cpu", normalization="window"),
            tmp_path / "b",
            progress=False,
        )
