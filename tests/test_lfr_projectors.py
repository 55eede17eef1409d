"""Frozen random projectors of LFR: frozen under training, eval mode, determinism, initialisations."""

from __future__ import annotations

import math

import pytest
import scipy.stats
import torch
from torch import nn

from workbench.errors import ConfigError
from workbench.losses.barlow_twins import BatchWiseBarlowTwinsLoss
from workbench.models.lfr import ProjectorPool

SMALL = {"hidden_dim": 16, "channels": (4, 8), "kernel_size": 3}


def _window_pool(**kwargs: object) -> ProjectorPool:
    settings = {"input_shape": (10, 5), "out_dim": 6, "size": 3, "seed": 0, **SMALL, **kwargs}
    return ProjectorPool(**settings)


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _weights(module: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in module.modules() if isinstance(m, nn.Linear | nn.Conv1d)]


def test_shapes() -> None:
    pool = _window_pool()
    x = torch.randn(7, 10, 5)
    assert pool(x).shape == (7, 3, 6)
    assert pool(x, indices=[2, 0]).shape == (7, 2, 6)
    torch.testing.assert_close(pool(x, indices=[2, 0]), pool(x)[:, [2, 0]])
    flat = ProjectorPool((12,), out_dim=4, size=2, hidden_dim=8)
    assert flat(torch.randn(3, 12)).shape == (3, 2, 4)
    for frames in (1, 2, 3):  # short windows still fit the two poolings
        assert _window_pool(input_shape=(frames, 5))(torch.randn(2, frames, 5)).shape == (2, 3, 6)


@pytest.mark.parametrize("init", ["default", "beta", "dropout"])
def test_projectors_never_change_under_training(init: str) -> None:
    pool = _window_pool(init=init)
    predictor = nn.Linear(10 * 5, 3 * 6)
    model = nn.ModuleDict({"pool": pool, "predictor": predictor})
    model.train()
    before = _snapshot(pool)
    # every parameter handed to the optimiser, weight decay on: only requires_grad keeps the pool fixed
    optimiser = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.5)
    x = torch.randn(8, 10, 5)
    for _ in range(3):
        targets = pool(x)
        predictions = predictor(x.flatten(1)).view(8, 3, 6)
        loss = sum(BatchWiseBarlowTwinsLoss()(predictions[:, k], targets[:, k]) for k in range(3))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after = _snapshot(pool)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(not p.requires_grad and p.grad is None for p in pool.parameters())


def test_requires_grad_cannot_be_turned_back_on() -> None:
    pool = _window_pool()
    parent = nn.ModuleDict({"pool": pool, "head": nn.Linear(2, 2)})
    parent.requires_grad_(True)
    pool.requires_grad_(True)
    assert not any(p.requires_grad for p in pool.parameters())
    assert all(p.requires_grad for p in parent["head"].parameters())


def test_train_leaves_the_pool_in_eval_mode() -> None:
    pool = _window_pool()
    parent = nn.ModuleDict({"pool": pool, "head": nn.Linear(2, 2)})
    for call in (lambda: pool.train(), lambda: pool.train(True), lambda: parent.train(), lambda: parent.train(True)):
        call()
        assert not pool.training
        assert not any(m.training for m in pool.modules())
    assert parent.training and parent["head"].training


@pytest.mark.parametrize("init", ["default", "beta", "dropout"])
def test_same_seed_same_pool(init: str) -> None:
    a, b, c = _window_pool(init=init), _window_pool(init=init), _window_pool(init=init, seed=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    # building a pool does not touch the global RNG
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _window_pool(init=init)
    torch.testing.assert_close(torch.rand(3), expected)


def test_projectors_of_a_pool_differ() -> None:
    x = torch.randn(4, 10, 5)
    out = _window_pool(size=3)(x)
    assert not torch.allclose(out[:, 0], out[:, 1]) and not torch.allclose(out[:, 1], out[:, 2])


def test_default_init_is_pytorch_uniform() -> None:
    pool = ProjectorPool((40,), out_dim=30, size=2, hidden_dim=50)
    for layer in (m for m in pool.modules() if isinstance(m, nn.Linear)):
        bound = 1 / math.sqrt(layer.in_features)
        for tensor in (layer.weight, layer.bias):
            assert tensor.abs().max().item() <= bound
        result = scipy.stats.kstest(layer.weight.flatten().numpy(), scipy.stats.uniform(-bound, 2 * bound).cdf)
        assert result.pvalue > 1e-3


def test_beta_init_is_arcsine_on_minus_one_one() -> None:
    pool = ProjectorPool((40,), out_dim=30, size=2, hidden_dim=50, init="beta")
    weights = torch.cat([w.flatten() for w in _weights(pool)])
    assert weights.min().item() >= -1.0 and weights.max().item() <= 1.0
    # 2·Beta(1/2, 1/2) − 1: Beta(1/2, 1/2) rescaled to [-1, 1]
    result = scipy.stats.kstest(weights.numpy(), scipy.stats.beta(0.5, 0.5, loc=-1.0, scale=2.0).cdf)
    assert result.pvalue > 1e-3
    # U-shaped: P(|w| > 0.9) = 1 - (2/π) asin(0.9) ≈ 0.287 (a uniform law would give 0.1)
    assert (weights.abs() > 0.9).float().mean().item() == pytest.approx(1 - 2 / math.pi * math.asin(0.9), abs=0.02)
    # biases keep the default init
    for layer in (m for m in pool.modules() if isinstance(m, nn.Linear)):
        assert layer.bias.abs().max().item() <= 1 / math.sqrt(layer.in_features)


def test_dropout_init_zeroes_a_fixed_fraction_per_layer() -> None:
    pool = _window_pool(init="dropout", size=2)
    weights = _weights(pool)
    for w in weights:
        assert (w == 0).sum().item() == round(0.4 * w.numel())
    masks = [[w == 0 for w in _weights(projector)] for projector in pool.projectors]
    assert any(not torch.equal(m0, m1) for m0, m1 in zip(*masks, strict=True))
    custom = _window_pool(init="dropout", dropout_rate=0.25)
    for w in _weights(custom):
        assert (w == 0).sum().item() == round(0.25 * w.numel())


def test_state_dict_round_trip_reproduces_the_targets() -> None:
    x = torch.randn(4, 10, 5)
    source, target = _window_pool(init="beta", seed=3), _window_pool(init="beta", seed=4)
    target.load_state_dict(source.state_dict())
    torch.testing.assert_close(target(x), source(x))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"init": "orthogonal"}, "init"),
        ({"size": 0}, "size"),
        ({"out_dim": 0}, "out_dim"),
        ({"input_shape": (2, 3, 4)}, "input_shape"),
        ({"input_shape": (0, 3)}, "input_shape"),
        ({"dropout_rate": 1.0}, "dropout_rate"),
        ({"channels": (4,)}, "channels"),
    ],
)
def test_bad_settings_are_rejected(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _window_pool(**kwargs)


def test_wrong_input_shape_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"\(B, 10, 5\)"):
        _window_pool()(torch.randn(2, 5, 10))
