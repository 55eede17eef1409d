"""A training process killed outright (SIGKILL), mid-run or inside a checkpoint write, resumes exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

CHILD = """
import os, sys, time
import torch
torch.set_num_threads(1)
from workbench.data.synthetic import fingerprints
from workbench.runs import training_windows
from workbench.train import build_method, make_train_config, train

out, pause_at = sys.argv[1], int(os.environ.get("PAUSE_IN_SAVE_AT", "0"))
if pause_at:  # write half a checkpoint, say so, then hang until killed
    original, calls = torch.save, [0]
    def slow_save(obj, stream):
        calls[0] += 1
        if obj.get("step") == pause_at:
            stream.write(b"half a checkpoint")
            stream.flush()
            open(os.path.join(out, "in-save"), "w").close()
            time.sleep(600)
        original(obj, stream)
    torch.save = slow_save
windows = training_windows(fingerprints(n_subjects=4, n_rois=8, n_timepoints=120, seed=1), 16)
torch.manual_seed(0)
method = build_method("fewshot", windows.spec(), "tiny")
config = make_train_config(method, epochs=6, batch_size=16, checkpoint_every=1, device="cpu", seed=3)
train(method, windows, config, out, progress=False)
"""


def _start(out: Path, **env: str) -> subprocess.Popen:
    out.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(out)],
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _finish(out: Path) -> dict:
    child = _start(out)
    _, err = child.communicate(timeout=300)
    assert child.returncode == 0, err.decode()[-2000:]
    return torch.load(out / "checkpoint.pt", weights_only=True)


def _wait_for(condition, child: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert child.poll() is None, child.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the child never reached the point to kill it"
        time.sleep(0.05)


def _steps_done(out: Path) -> int:
    try:
        return len(json.loads((out / "history.json").read_text())["step"])
    except (OSError, ValueError, KeyError):
        return 0


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a["step"] == b["step"] and a["finished"] and b["finished"]
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_equals_the_uninterrupted_run(tmp_path: Path) -> None:
    straight = _finish(tmp_path / "straight")
    killed = tmp_path / "killed"
    child = _start(killed)
    _wait_for(lambda: _steps_done(killed) >= 5, child)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert 5 <= torch.load(killed / "checkpoint.pt", weights_only=True)["step"] < straight["step"]
    _assert_same_weights(_finish(killed), straight)


@pytest.mark.slow
def test_sigkill_inside_a_checkpoint_write_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    straight = _finish(tmp_path / "straight")
    killed = tmp_path / "killed"
    child = _start(killed, PAUSE_IN_SAVE_AT="7")
    _wait_for(lambda: (killed / "in-save").exists(), child)
    child.send_signal(signal.SIGKILL)
    child.wait()
    (killed / "in-save").unlink()
    assert torch.load(killed / "checkpoint.pt", weights_only=True)["step"] == 6  # the half-written one never landed
    assert len(list(killed.glob(".wb-tmp-*.tmp"))) == 1
    _assert_same_weights(_finish(killed), straight)
    assert not list(killed.glob(".*.tmp"))  # the dead writer's temporary was swept
