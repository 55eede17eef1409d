"""Data-parallel training under torchrun: 2 CPU processes (gloo) train fewshot, jepa, lfr and recvae.

Three launches of ``python -m torch.distributed.run --standalone --nproc_per_node 2`` share one
fixture: an uninterrupted run, a run whose processes are SIGKILLed mid-way through fewshot, and
its resumption. Each process writes the sha256 of its weights and buffers; every rank must hold
the same (so jepa's EMA target, lfr's phase counters and recvae's F too), rank 0 alone writes
one checkpoint per run, and the resumed run equals the uninterrupted one bit for bit. Unit tests
of the sharding and gradient averaging run in one process. About 3 × 25 s of CPU time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from workbench.errors import ConfigError
from workbench.train.distributed import Distributed, current, state_digest

CHILD = """
import os, signal, sys
from pathlib import Path
import numpy as np
import torch
torch.set_num_threads(1)
from workbench.data.recording import Recording
from workbench.data.synthetic import fingerprints
from workbench.data.volume_runs import prepare_volume_runs
from workbench.data.windows import WindowSet
from workbench.runs import training_windows
from workbench.train import build_method, make_train_config, train
from workbench.train.distributed import state_digest

out, kill_at = Path(sys.argv[1]), int(os.environ.get("KILL_AT_STEP", "0"))
rank = os.environ["RANK"]
rois = training_windows(fingerprints(n_subjects=4, n_rois=16, n_timepoints=160, seed=1), 32)
rng = np.random.default_rng(0)
volumes = np.zeros((3, 6, 7, 4, 24), dtype=np.float32)
volumes[:, 1:5, 1:6] = rng.standard_normal((3, 4, 5, 4, 24))
frames = WindowSet(prepare_volume_runs([Recording(f"s{s}", "1", v, 2.0, {}) for s, v in enumerate(volumes)]), 6, 6)
families = (
    ("fewshot", rois, {}),
    ("jepa", rois, {}),
    ("lfr", rois, {"predictor_training_epochs": 1}),  # backbone frozen every other epoch
    ("recvae", frames, {}),  # F solved in closed form every epoch
)
for family, windows, overrides in families:
    torch.manual_seed(0)
    method = build_method(family, windows.spec(), "tiny", overrides)
    if family == "fewshot" and kill_at:
        def die(step, total, original=method.after_step):
            if step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(step, total)
        method.after_step = die
    config = make_train_config(
        method, epochs=50, max_steps=6, batch_size=8, checkpoint_every=1, device="cpu", seed=3, warmup_steps=0
    )
    result = train(method, windows, config, out / family, progress=False)
    (out / f"digest-{family}-{rank}.txt").write_text(state_digest(result.method) + " " + result.meta["weights_sha256"])
"""


def _launch(out: Path, **env: str) -> subprocess.CompletedProcess:
    out.mkdir(parents=True, exist_ok=True)
    script = out / "child.py"
    script.write_text(CHILD)
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), str(out)],
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ddp")
    straight, interrupted = root / "straight", root / "interrupted"
    done = _launch(straight)
    assert done.returncode == 0, done.stderr[-3000:]
    killed = _launch(interrupted, KILL_AT_STEP="4")
    assert killed.returncode != 0
    resumed = _launch(interrupted)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return {"straight": straight, "interrupted": interrupted}


def _checkpoint(folder: Path) -> dict:
    return torch.load(folder / "checkpoint.pt", weights_only=True)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["fewshot", "jepa", "lfr", "recvae"])
def test_every_rank_holds_the_same_weights_and_rank_0_writes_one_checkpoint(runs, family: str) -> None:
    for key in ("straight", "interrupted"):
        digests = [(runs[key] / f"digest-{family}-{rank}.txt").read_text().split() for rank in (0, 1)]
        assert digests[0] == digests[1]
        assert digests[0][0] == digests[0][1]  # the engine's own cross-rank check agrees
        assert sorted(p.name for p in (runs[key] / family).iterdir()) == ["checkpoint.pt", "history.json"]
        state = _checkpoint(runs[key] / family)
        assert state["finished"] and state["step"] == 6
        assert [h["step"] for h in state["history"]["step"]] == [1, 2, 3, 4, 5, 6]
    if family == "recvae":  # F moved away from its start by the per-epoch solves, the same on both ranks
        assert not torch.equal(_checkpoint(runs["straight"] / family)["model"]["transition.F"], torch.eye(3))


@pytest.mark.slow
@pytest.mark.parametrize("family", ["fewshot", "jepa"])
def test_killed_and_resumed_run_equals_the_uninterrupted_one(runs, family: str) -> None:
    straight, resumed = _checkpoint(runs["straight"] / family), _checkpoint(runs["interrupted"] / family)
    for name, tensor in straight["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    assert straight["history"]["step"] == resumed["history"]["step"]
    if family == "jepa":  # the EMA target moved and is the same on every rank (digests above)
        online = {k[len("encoder.") :]: v for k, v in straight["model"].items() if k.startswith("encoder.")}
        target = {k[len("target_encoder.") :]: v for k, v in straight["model"].items() if k.startswith("target_")}
        assert any(not torch.equal(online[k], target[k]) for k in online)


def test_a_batch_is_cut_in_contiguous_slices_that_cover_it() -> None:
    batch = list(range(10, 17))  # 7 windows on 3 ranks
    slices = [Distributed(rank, 3).shard(batch) for rank in range(3)]
    assert slices == [[10, 11], [12, 13], [14, 15, 16]]
    assert Distributed().shard(batch) == batch


def test_a_batch_smaller_than_the_world_is_refused() -> None:
    with pytest.raises(ConfigError, match="raise batch_size to at least 4"):
        Distributed(0, 4).shard([1, 2, 3])


def test_one_process_is_a_world_of_one(monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    world = current("cpu")
    assert (world.rank, world.world_size, world.active, world.is_main) == (0, 1, False, True)
    model = nn.Linear(3, 2)
    model(torch.ones(1, 3)).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    world.average_gradients(list(model.parameters()))
    assert all(torch.equal(a, p.grad) for a, p in zip(grads, model.parameters(), strict=True))
    assert world.mean({"loss": 2.0}, torch.device("cpu")) == {"loss": 2.0}


def test_a_torchrun_environment_without_its_address_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    for key in ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ConfigError, match="torchrun --nproc_per_node"):
        current("cpu")


def test_the_weights_digest_sees_one_changed_bit_and_every_dtype() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)).to(torch.bfloat16)
    before = state_digest(model)
    assert before == state_digest(model)
    with torch.no_grad():
        first = model[0].weight.view(-1)
        first[0] = torch.nextafter(first[0], torch.tensor(1.0, dtype=torch.bfloat16))
    assert state_digest(model) != before
