"""The lfr family: shapes, gradients, bad input, DPP targets, frozen projectors, phases, cap, resume."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from workbench.data.recording import Recording
from workbench.data.spec import DataSpec
from workbench.data.windows import WindowSet
from workbench.errors import ConfigError, DataError, LearningWarning
from workbench.losses.barlow_twins import (
    batchwise_barlow_twins_loss,
    batchwise_barlow_twins_minimum,
    constant_prediction_floor,
    mean_pairwise_cosine,
)
from workbench.methods import get_method
from workbench.models.lfr import LFR, dpp_selection_mask, projector_similarity_kernel
from workbench.train import load_method, make_train_config, read_checkpoint, train

N_ROIS, N_FRAMES = 6, 12
SPEC = DataSpec(N_ROIS, N_FRAMES, n_subjects=3)


def _tiny(**overrides) -> LFR:
    torch.manual_seed(0)
    return LFR(LFR.make_config("tiny", **overrides), SPEC)


def _windows_array(n: int = 32, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, N_FRAMES, N_ROIS)).astype(np.float32)


@pytest.fixture
def windows() -> WindowSet:
    """27 windows (3 subjects × 9): 3 optimiser steps per epoch at batch 8."""
    rng = np.random.default_rng(0)
    recs = [Recording(f"s{i}", "1", rng.standard_normal((60, N_ROIS)).astype(np.float32), 1.0) for i in range(3)]
    return WindowSet(recs, length=N_FRAMES, stride=6)


def _state(method: LFR) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in method.state_dict().items()}


def _backbone(method: LFR) -> list[torch.Tensor]:
    return [p.detach().clone() for p in method.backbone.parameters()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_registry_presets_and_config_errors() -> None:
    assert get_method("lfr") is LFR
    default = LFR.make_config()
    assert (default.pool_size, default.num_targets, default.off_diagonal_weight) == (60, 6, 0.01)
    assert (default.predictor_training_epochs, default.max_backbone_training_steps) == (0, None)
    # centred targets and a final norm: measured in docs/recipes-lfr-yaware.md (the reference has neither)
    assert default.center_targets and default.final_norm
    for preset in (None, *LFR.presets):
        LFR(LFR.make_config(preset), SPEC if preset is None else DataSpec(94, 40))
    with pytest.raises(ConfigError, match="num_targets"):
        LFR.make_config(pool_size=4, num_targets=5)
    with pytest.raises(ConfigError, match="predictor_training_epochs"):
        LFR.make_config(predictor_training_epochs=-1)
    with pytest.raises(ConfigError, match="max_backbone_training_steps"):
        LFR.make_config(max_backbone_training_steps=0)
    with pytest.raises(ConfigError, match="backbone"):
        LFR.make_config(backbone="vit")
    with pytest.raises(ConfigError, match="max_len"):
        LFR(LFR.make_config("tiny", max_len=8), SPEC)


@pytest.mark.parametrize("backbone", ["transformer", "connectome"])
def test_embed_is_the_backbone_representation(backbone: str) -> None:
    method = _tiny(backbone=backbone).eval()
    x = torch.randn(5, N_FRAMES, N_ROIS)
    z = method.embed(x)
    assert z.shape == (5, method.backbone.out_dim)
    torch.testing.assert_close(z, method.backbone(x))
    assert method.embed(torch.randn(2, 2 * N_FRAMES, N_ROIS)).shape == (2, method.backbone.out_dim)


def test_loss_is_the_mean_barlow_twins_loss_of_each_predictor_against_its_projector() -> None:
    method = _tiny(divide_by_batch=True, off_diagonal_weight=0.05)
    method.prepare(_windows_array())
    x = torch.randn(8, N_FRAMES, N_ROIS)
    loss = method.training_loss({"x": x})["loss"]
    z = method.backbone(x)
    terms = [
        batchwise_barlow_twins_loss(method.predictors[k](z), _centred(method.projectors.projectors[i](x)), 0.05, True)
        for k, i in enumerate(method.selected_targets)
    ]
    torch.testing.assert_close(loss, torch.stack(terms).mean())


def _centred(z: torch.Tensor) -> torch.Tensor:
    return z - z.mean(dim=0)


@pytest.mark.parametrize("centred", [True, False])
def test_targets_are_the_selected_projections_centred_over_the_batch_when_asked(centred: bool) -> None:
    method = _tiny(center_targets=centred)
    method.prepare(_windows_array())
    x = torch.randn(8, N_FRAMES, N_ROIS)
    targets = method.targets(x)
    for k, i in enumerate(method.selected_targets):
        raw = method.projectors.projectors[i](x)
        torch.testing.assert_close(targets[:, k], _centred(raw) if centred else raw)


@pytest.mark.parametrize("centred", [True, False])
def test_diagnostics_give_the_loss_beside_the_constant_floor_of_the_same_targets(centred: bool) -> None:
    method = _tiny(center_targets=centred, off_diagonal_weight=0.05)
    method.prepare(_windows_array())
    x = torch.randn(16, N_FRAMES, N_ROIS)
    record = method.eval().diagnostics({"x": x})
    assert set(record) == {"loss", "floor", "copy_loss", "target_cosine"}
    assert record["loss"] == pytest.approx(method.training_loss({"x": x})["loss"].item())
    projections = [method.projectors.projectors[i](x) for i in method.selected_targets]
    targets = [_centred(z) if centred else z for z in projections]
    floor = np.mean([constant_prediction_floor(z, 0.05).value.item() for z in targets])
    assert record["floor"] == pytest.approx(floor)
    assert record["copy_loss"] == pytest.approx(
        np.mean([batchwise_barlow_twins_loss(z, z, 0.05).item() for z in targets])
    )
    assert record["target_cosine"] == pytest.approx(np.mean([mean_pairwise_cosine(z).item() for z in targets]))
    assert method.learning_verdict({**record, "loss": floor}) is not None
    assert method.learning_verdict({**record, "loss": 0.5 * floor}) is None


def test_prepare_keeps_the_selection_floors_and_warns_when_a_constant_scores_like_a_copy() -> None:
    # random windows through the tiny projectors: uncentred targets share one direction (mean cosine ~0.9)
    windows = _windows_array()
    with pytest.warns(LearningWarning, match="center_targets: true"):
        aligned = _tiny(center_targets=False)
        aligned.prepare(windows)
    assert float(aligned.selection_copy) > 0.5 * float(aligned.selection_floor)
    method = _tiny()
    with warnings.catch_warnings():
        warnings.simplefilter("error", LearningWarning)
        method.prepare(windows)
    sample = torch.as_tensor(windows[np.unique(np.linspace(0, 31, 16).round().astype(int))])
    targets = method.targets(sample)
    expected = np.mean([constant_prediction_floor(targets[:, k], 0.01).value.item() for k in range(3)])
    assert float(method.selection_floor) == pytest.approx(expected)
    minimum = np.mean([batchwise_barlow_twins_minimum(targets[:, k], 0.01).item() for k in range(3)])
    assert float(method.selection_minimum) == pytest.approx(minimum)
    assert float(method.selection_minimum) <= float(method.selection_copy) < 0.5 * float(method.selection_floor)
    loaded = _tiny()
    loaded.load_state_dict(method.state_dict())
    assert float(loaded.selection_floor) == float(method.selection_floor)


def test_a_short_run_leaves_the_constant_floor(tmp_path) -> None:
    """150 steps of the tiny model on 390 random windows (a few seconds on one core)."""
    rng = np.random.default_rng(0)
    recs = [Recording(f"s{i}", "1", rng.standard_normal((400, N_ROIS)).astype(np.float32), 1.0) for i in range(3)]
    windows = WindowSet(recs, length=N_FRAMES, stride=3)
    method = _tiny()
    config = make_train_config(
        method, epochs=100, max_steps=150, batch_size=32, lr=3e-3, device="cpu", monitor_every=50, monitor_windows=64
    )
    result = train(method, windows, config, tmp_path, progress=False)
    first, last = result.history["monitor"][0], result.history["monitor"][-1]
    assert first["loss"] > first["floor"]  # untrained: worse than the best constant
    assert last["loss"] < 0.95 * last["floor"] and method.learning_verdict(last) is None


@pytest.mark.parametrize("options", [{}, {"adapter_dim": 7, "predictor_layers": 2}, {"flatten": True}])
def test_gradient_reaches_every_trainable_parameter_and_never_a_projector(options: dict) -> None:
    method = _tiny(**options).train()
    method.prepare(_windows_array())
    assert method.projectors.input_shape == ((N_FRAMES * N_ROIS,) if options.get("flatten") else (N_FRAMES, N_ROIS))
    method.training_loss({"x": torch.randn(8, N_FRAMES, N_ROIS)})["loss"].backward()
    trained = {id(p) for group in method.param_groups(0.0) for p in group["params"]}
    for name, p in method.named_parameters():
        if name.startswith("projectors."):
            assert p.grad is None and not p.requires_grad and id(p) not in trained, name
        else:
            assert id(p) in trained and p.grad is not None and p.grad.abs().sum() > 0, name


def test_bad_input_raises_errors_that_name_the_fix() -> None:
    method = _tiny()
    with pytest.raises(ConfigError, match="prepare"):
        method.training_loss({"x": torch.randn(4, N_FRAMES, N_ROIS)})
    method.prepare(_windows_array())
    with pytest.raises(DataError, match=f"built for {N_ROIS} ROIs"):
        method.embed(torch.randn(2, N_FRAMES, N_ROIS + 1))
    with pytest.raises(DataError, match=f"{N_FRAMES} frames of {N_ROIS} ROIs"):
        method.training_loss({"x": torch.randn(4, N_FRAMES + 1, N_ROIS)})
    with pytest.raises(DataError, match=f"{N_FRAMES} frames of {N_ROIS} ROIs"):
        _tiny().prepare(_windows_array()[:, :, :-1])


def test_dpp_in_prepare_never_picks_a_duplicated_projector() -> None:
    method = _tiny(num_targets=4)  # pool of 5; projector 1 becomes a copy of projector 0
    pool = method.projectors.projectors
    with torch.no_grad():
        for copy, original in zip(pool[1].parameters(), pool[0].parameters()):
            copy.copy_(original)
    method.prepare(_windows_array())
    mask = method.target_mask
    assert mask.dtype == torch.bool and mask.shape == (5,) and int(mask.sum()) == 4
    assert not (mask[0] and mask[1])  # the 4 distinct projectors are 0 or 1, and 2, 3, 4
    assert mask[2:].all()


@pytest.mark.parametrize("centred", [True, False])
def test_the_dpp_compares_the_projectors_on_the_targets_the_loss_sees(centred: bool) -> None:
    method = _tiny(num_targets=2, center_targets=centred)
    windows = _windows_array()
    method.prepare(windows)
    sample = torch.as_tensor(windows[np.unique(np.linspace(0, 31, 16).round().astype(int))])
    outputs = method.projectors(sample)  # (B, M, D)
    outputs = _centred(outputs) if centred else outputs
    kernel = projector_similarity_kernel(outputs.transpose(0, 1).double())
    assert torch.equal(method.target_mask, dpp_selection_mask(kernel, 2))


def test_fewer_targets_than_asked_warn_and_train_on_the_returned_set() -> None:
    method = _tiny(num_targets=3)
    pool = method.projectors.projectors
    with torch.no_grad():  # the whole pool is one projector
        for other in pool[1:]:
            for copy, original in zip(other.parameters(), pool[0].parameters()):
                copy.copy_(original)
    with pytest.warns(UserWarning, match="asked for 3 targets but returned 1"):
        method.prepare(_windows_array())
    assert method.selected_targets == [int(torch.nonzero(method.target_mask))]
    out = method.training_loss({"x": torch.randn(8, N_FRAMES, N_ROIS)})
    assert torch.isfinite(out["loss"])


def test_engine_run_reduces_the_loss_keeps_projectors_fixed_and_round_trips(tmp_path, windows) -> None:
    method = _tiny()
    pool_before = [p.clone() for p in method.projectors.parameters()]
    config = make_train_config(method, epochs=8, batch_size=8, lr=3e-3, device="cpu")
    result = train(method, windows, config, tmp_path, progress=False)
    losses = [h["loss"] for h in result.history["epoch"]]
    assert losses[-1] < losses[0]
    assert _same(pool_before, list(method.projectors.parameters()))
    method.train()
    assert not method.projectors.training and not any(m.training for m in method.projectors.modules())

    loaded, _, _ = load_method(tmp_path)
    assert torch.equal(loaded.target_mask, method.target_mask) and loaded.selected_targets == method.selected_targets
    assert int(loaded.backbone_steps) == int(method.backbone_steps) == result.steps
    x = torch.randn(3, N_FRAMES, N_ROIS)
    torch.testing.assert_close(loaded.embed(x), method.eval().embed(x), rtol=0, atol=0)


@pytest.mark.parametrize("optimizer", ["adamw", "adam", "sgd"])
def test_backbone_is_bit_identical_through_predictor_only_epochs(tmp_path, windows, optimizer: str) -> None:
    method = _tiny(predictor_training_epochs=2, dropout=0.2)
    snapshots: dict[str, list] = {"backbone": [], "predictors": [], "pool": []}
    modes = []

    def snapshot(_epoch: int) -> None:
        snapshots["backbone"].append(_backbone(method))
        snapshots["predictors"].append([p.detach().clone() for p in method.predictors.parameters()])
        snapshots["pool"].append([p.detach().clone() for p in method.projectors.parameters()])

    original_before, original_loss = method.before_epoch, method.training_loss

    def before_epoch(epoch: int) -> None:
        original_before(epoch)
        snapshot(epoch)

    def training_loss(batch):
        modes.append((int(method.trained_epoch), method.backbone.training))
        return original_loss(batch)

    method.before_epoch, method.training_loss = before_epoch, training_loss
    # weight decay and momentum on: they must not move a frozen backbone
    config = make_train_config(
        method, epochs=6, batch_size=8, lr=1e-2, weight_decay=0.1, optimizer=optimizer, device="cpu"
    )
    result = train(method, windows, config, tmp_path, progress=False)
    snapshot(6)
    backbone, predictors, pool = snapshots["backbone"], snapshots["predictors"], snapshots["pool"]
    for epoch in range(6):
        frozen = epoch % 3 != 0
        assert _same(backbone[epoch], backbone[epoch + 1]) == frozen, epoch
        assert not _same(predictors[epoch], predictors[epoch + 1]), epoch
        assert _same(pool[epoch], pool[epoch + 1]), epoch
    assert {(e, training) for e, training in modes} == {(e, e % 3 == 0) for e in range(6)}  # eval when frozen
    trains = [h["backbone_trains"] for h in result.history["step"]]
    assert trains == [1.0 if h["epoch"] % 3 == 0 else 0.0 for h in result.history["step"]]
    assert int(method.backbone_steps) == sum(trains) == 6
    if optimizer != "sgd":  # Adam's state of the backbone advanced in its 6 steps only, the predictors' in all 18
        saved = read_checkpoint(tmp_path)["optimizer"]
        matrices = saved["param_groups"][0]["params"]  # backbone matrices first, predictor matrices last
        assert saved["state"][matrices[0]]["step"] == 6 and saved["state"][matrices[-1]]["step"] == result.steps == 18


def test_unfreezing_restores_only_the_parameters_the_backbone_trains() -> None:
    method = _tiny(backbone="connectome", learn_mix=False, predictor_training_epochs=1).train()
    assert not method.backbone.mix.weight.requires_grad
    for epoch, trains in ((1, False), (2, True)):
        method.before_epoch(epoch)
        method.train()
        assert method.backbone.edge_weight.requires_grad is trains and method.backbone.training is trains
        assert not method.backbone.mix.weight.requires_grad  # learn_mix=False: fixed in every phase


def test_max_backbone_training_steps_holds_at_exactly_that_count(tmp_path, windows) -> None:
    method = _tiny(predictor_training_epochs=1, max_backbone_training_steps=5)
    changes = []
    before = [_backbone(method)]
    original = method.after_step

    def after_step(step: int, total: int):
        stop = original(step, total)
        now = _backbone(method)
        changes.append(not _same(before[0], now))
        before[0] = now
        return stop

    method.after_step = after_step
    config = make_train_config(method, epochs=10, batch_size=8, lr=1e-2, device="cpu")
    result = train(method, windows, config, tmp_path, progress=False)
    # 3 steps per epoch: epoch 0 trains the backbone (3), epoch 1 not, epoch 2 two more, then training ends
    assert result.steps == 8 and int(method.backbone_steps) == 5 and sum(changes) == 5
    assert changes == [True, True, True, False, False, False, True, True]
    assert read_checkpoint(tmp_path)["finished"]
    assert not method.backbone_trains()


@pytest.mark.parametrize(("crash_at", "checkpoint_at"), [(3, 2), (4, 3), (5, 4)])
def test_resume_across_a_phase_change_equals_the_uninterrupted_run(
    tmp_path, windows, crash_at: int, checkpoint_at: int
) -> None:
    """P = 1, 3 steps per epoch, checkpoints every 2 steps and at the end of every epoch.

    The last checkpoint before the crash is inside epoch 0 (step 2: the backbone trains, and the
    resumed run finishes the epoch then freezes it), at the end of epoch 0 (step 3: the resumed
    run begins epoch 1 frozen) or inside epoch 1 (step 4: the resumed run re-enters it frozen).
    """
    straight = _tiny(predictor_training_epochs=1, max_backbone_training_steps=5, dropout=0.2)
    init = _state(straight)
    config = make_train_config(
        straight, epochs=4, batch_size=8, lr=1e-2, weight_decay=0.1, checkpoint_every=2, device="cpu"
    )
    train(straight, windows, config, tmp_path / "straight", progress=False)

    class Crash(RuntimeError):
        pass

    interrupted = _tiny(predictor_training_epochs=1, max_backbone_training_steps=5, dropout=0.2)
    interrupted.load_state_dict(init)
    original = interrupted.after_step

    def crash(step: int, total: int):
        stop = original(step, total)
        if step == crash_at:
            raise Crash
        return stop

    interrupted.after_step = crash
    with pytest.raises(Crash):
        train(interrupted, windows, config, tmp_path / "resumed", progress=False)
    assert read_checkpoint(tmp_path / "resumed")["step"] == checkpoint_at

    resumed = _tiny(predictor_training_epochs=1, max_backbone_training_steps=5, dropout=0.2)
    resumed.load_state_dict(init)
    result = train(resumed, windows, config, tmp_path / "resumed", progress=False)
    final = _state(resumed)
    for key, value in _state(straight).items():
        assert torch.equal(final[key], value), key
    assert int(resumed.backbone_steps) == 5 and result.steps == 8


def test_bf16_autocast_gives_a_finite_float32_loss() -> None:
    method = _tiny()
    method.prepare(_windows_array())
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the engine's CUDA autocast, on the CPU
        loss = method.training_loss({"x": torch.randn(8, N_FRAMES, N_ROIS)})["loss"]
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
