"""The engine's speed options (bench/train_speed.py measures them): same maths, other kernels."""

from __future__ import annotations

import pytest
import torch

from workbench.data.synthetic import fingerprints
from workbench.errors import ConfigError
from workbench.runs import training_windows
from workbench.train import TrainConfig, build_method, make_optimizer, make_train_config, train
from workbench.train.settings import autocast_context


def _fewshot():
    windows = training_windows(fingerprints(n_subjects=4, n_rois=8, n_timepoints=120, seed=1), 16)
    torch.manual_seed(0)
    return build_method("fewshot", windows.spec(), "tiny"), windows


def test_an_unknown_optimizer_impl_is_refused_with_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"optimizer_impl='fast'.*'foreach', 'fused'"):
        TrainConfig(optimizer_impl="fast")


@pytest.mark.parametrize("optimizer", ["adamw", "adam", "sgd"])
def test_loop_foreach_and_fused_steps_agree(optimizer: str) -> None:
    method, _ = _fewshot()
    start = {k: v.clone() for k, v in method.state_dict().items()}
    after = {}
    for impl in ("loop", "foreach", "fused"):
        method.load_state_dict(start)
        opt = make_optimizer(method, TrainConfig(optimizer=optimizer, optimizer_impl=impl, weight_decay=0.1, lr=1e-2))
        for step in range(3):
            torch.manual_seed(step)
            for p in method.parameters():
                p.grad = torch.randn_like(p)
            opt.step()
        after[impl] = [p.detach().clone() for p in method.parameters()]
    for impl in ("foreach", "fused"):
        for a, b in zip(after["loop"], after[impl], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(a, start[k]) for k, a in zip(start, after["loop"], strict=False))


def test_cpu_autocast_only_when_asked() -> None:
    cpu = torch.device("cpu")
    a = torch.randn(4, 4)
    with autocast_context(cpu, TrainConfig()):
        assert (a @ a).dtype == torch.float32
    with autocast_context(cpu, TrainConfig(cpu_amp=True)):
        assert (a @ a).dtype == torch.bfloat16
    with autocast_context(cpu, TrainConfig(amp=True)):  # amp is CUDA's switch
        assert (a @ a).dtype == torch.float32


def test_bf16_training_on_the_cpu_follows_float32_within_bf16_tolerance(tmp_path) -> None:
    losses = {}
    for cpu_amp in (False, True):
        method, windows = _fewshot()
        config = make_train_config(method, max_steps=3, batch_size=16, device="cpu", seed=0, cpu_amp=cpu_amp)
        result = train(method, windows, config, tmp_path / str(cpu_amp), progress=False)
        losses[cpu_amp] = [h["loss"] for h in result.history["step"]]
    torch.testing.assert_close(torch.tensor(losses[True]), torch.tensor(losses[False]), rtol=5e-2, atol=1e-3)
    assert losses[True] != losses[False]  # bf16 really ran


def test_loader_workers_read_the_same_batches(tmp_path) -> None:
    weights = {}
    for workers in (0, 2):
        method, windows = _fewshot()
        config = make_train_config(method, max_steps=4, batch_size=16, device="cpu", seed=0, loader_workers=workers)
        result = train(method, windows, config, tmp_path / str(workers), progress=False)
        weights[workers] = result.meta["weights_sha256"]
    assert weights[0] == weights[2]
    with pytest.raises(ConfigError, match="loader_workers=-1"):
        TrainConfig(loader_workers=-1)
