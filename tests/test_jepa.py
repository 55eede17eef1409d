"""Brain-JEPA: tokens, gradient positional embedding, objective, EMA, errors, downstream."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from workbench.data.spec import DataSpec
from workbench.errors import ConfigError, DataError
from workbench.methods import get_method
from workbench.models.blocks import sincos_1d
from workbench.models.jepa.masks import SpatiotemporalMaskCollator
from workbench.models.jepa.model import (
    BrainJEPA,
    GridPositionalEmbedding,
    ema_momentum,
    gather_tokens,
    windows_to_image,
)

R, T = 10, 32  # tiny preset: patch 8 -> 4 time patches, 40 tokens


def _windows(n: int = 24, t: int = T, r: int = R, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal((n, t, 3)) @ rng.standard_normal((3, r))
    return (shared + rng.standard_normal((n, t, r))).astype(np.float32)


def _method(preset: str = "tiny", r: int = R, t: int = T, **overrides) -> BrainJEPA:
    """A prepared method; 10 ROIs keep 2 FC entries per row (sparsity 0.8) for a connected graph."""
    torch.manual_seed(0)
    overrides.setdefault("gradient_sparsity", 0.8)
    method = BrainJEPA(BrainJEPA.make_config(preset, **overrides), DataSpec(r, t))
    method.prepare(_windows(t=t, r=r))
    return method


def _batch(b: int = 4, t: int = T, r: int = R) -> dict[str, torch.Tensor]:
    return {"x": torch.as_tensor(_windows(b, t, r, seed=7)), "subject": torch.zeros(b, dtype=torch.long)}


# -- tokens ----------------------------------------------------------------------------------


def test_tokens_are_roi_major_and_trailing_frames_are_cropped():
    p, t, r = 8, 45, 3  # 45 frames -> 5 patches, the last 5 frames dropped
    x = torch.zeros(2, t, r)
    x += 1000 * torch.arange(r).view(1, 1, r) + torch.arange(t).view(1, t, 1).float()  # roi*1000 + frame
    image, n_patches = windows_to_image(x, p, crop=True)
    assert n_patches == 5 and image.shape == (2, 1, r, 40)
    method = BrainJEPA(BrainJEPA.make_config("tiny", pos_embed="sincos2d", patch_norm=False), DataSpec(r, t))
    conv = method.encoder.patch_embed
    with torch.no_grad():  # channel 0 reads the first frame of a patch, channel 1 its last
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[0, 0, 0, 0] = 1.0
        conv.weight[1, 0, 0, p - 1] = 1.0
    tokens = conv(image).flatten(2).transpose(1, 2)  # what the encoder does
    assert tokens.shape == (2, r * n_patches, 32)
    token = torch.arange(r * n_patches)
    roi, patch = token // n_patches, token % n_patches
    torch.testing.assert_close(tokens[0, :, 0], (1000 * roi + p * patch).float())
    torch.testing.assert_close(tokens[1, :, 1], (1000 * roi + p * patch + p - 1).float())


def test_window_length_errors():
    with pytest.raises(ConfigError, match="crop=True to drop the last 5 frames"):
        BrainJEPA(BrainJEPA.make_config("tiny", crop=False), DataSpec(R, 45))
    with pytest.raises(ConfigError, match="at least 2: use windows of at least 16 frames"):
        BrainJEPA(BrainJEPA.make_config("tiny"), DataSpec(R, 12))
    method = _method()
    with pytest.raises(ConfigError, match="at least 2"):
        method.embed(torch.zeros(2, 15, R))
    with pytest.raises(DataError, match="windows have 7 ROIs but the model was built for 10"):
        method.embed(torch.zeros(2, T, 7))


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="pos_embed"):
        BrainJEPA.make_config("tiny", pos_embed="learned")
    with pytest.raises(ConfigError, match="embed_dim=30 must be a positive multiple of 4"):
        BrainJEPA.make_config("tiny", embed_dim=30)
    with pytest.raises(ConfigError, match="unknown preset"):
        BrainJEPA.make_config("huge")
    assert get_method("jepa") is BrainJEPA


# -- positional embedding ----------------------------------------------------------------------


def test_gradient_embedding_shape_halves_and_roi_permutation():
    torch.manual_seed(0)
    r, p, dim, k = 7, 5, 16, 4
    pe = GridPositionalEmbedding(dim, k, "gradient")
    gradients = torch.randn(r, k)
    out = pe(gradients, r, p)
    assert out.shape == (r * p, dim)
    grid = out.view(r, p, dim)
    # time half: the sin-cos code of the patch index, the same for every ROI
    torch.testing.assert_close(grid[:, :, : dim // 2], sincos_1d(torch.arange(p), dim // 2).expand(r, p, -1))
    # gradient half: constant over time, min-max scaled to [-1, 1] over the whole tensor
    torch.testing.assert_close(grid[:, :, dim // 2 :], grid[:, :1, dim // 2 :].expand(r, p, -1))
    assert grid[..., dim // 2 :].min() == -1.0 and grid[..., dim // 2 :].max() == 1.0
    # permuting the ROIs' gradients permutes the ROI blocks of tokens (min-max is permutation-invariant)
    perm = torch.randperm(r)
    torch.testing.assert_close(pe(gradients[perm], r, p).view(r, p, dim), grid[perm])


def test_sincos2d_ablation_has_no_parameters_and_codes_the_roi():
    pe = GridPositionalEmbedding(16, 4, "sincos2d")
    assert not list(pe.parameters())
    grid = pe(torch.empty(6, 0), 6, 3).view(6, 3, 16)
    torch.testing.assert_close(grid[:, 0, 8:], sincos_1d(torch.arange(6), 8))
    method = BrainJEPA(BrainJEPA.make_config("tiny", pos_embed="sincos2d"), DataSpec(R, T))
    assert method.embed(torch.as_tensor(_windows(3))).shape == (3, 32)  # no prepare needed


# -- gradients in the method ---------------------------------------------------------------------


def test_prepare_fits_a_buffer_that_checkpoints_carry():
    fresh = BrainJEPA(BrainJEPA.make_config("tiny"), DataSpec(R, T))
    with pytest.raises(ConfigError, match="call method.prepare"):
        fresh.embed(torch.zeros(2, T, R))
    method = _method()
    assert method.gradients.shape == (R, 8) and torch.isfinite(method.gradients).all()
    assert "gradients" in method.state_dict()
    fresh.load_state_dict(method.state_dict())
    x = torch.as_tensor(_windows(3))
    torch.testing.assert_close(fresh.embed(x), method.embed(x))
    with pytest.raises(DataError, match=r"expected training windows \(N, T, 10\)"):
        fresh.prepare(_windows(r=9))


def test_gradients_csv_replaces_the_computation(tmp_path):
    table = np.random.default_rng(0).standard_normal((R, 12))
    path = tmp_path / "g.csv"
    np.savetxt(path, table, delimiter=",")
    method = BrainJEPA(BrainJEPA.make_config("tiny", gradients_csv=str(path)), DataSpec(R, T))
    method.prepare(_windows())
    np.testing.assert_allclose(method.gradients.numpy(), table[:, :8], rtol=1e-6)
    with pytest.warns(UserWarning):  # 20 > R - 1: lowered to 9, still fine
        narrow = BrainJEPA(BrainJEPA.make_config("tiny", gradients_csv=str(path), n_gradients=20), DataSpec(R, 48))
    np.savetxt(path, table[:, :5], delimiter=",")
    with pytest.raises(DataError, match="has 5 columns but n_gradients=9"):
        narrow.prepare(_windows())


def test_disconnected_affinity_lowers_the_sparsity_with_a_warning():
    method = BrainJEPA(BrainJEPA.make_config("tiny", gradient_sparsity=0.9), DataSpec(R, T))
    with pytest.warns(UserWarning, match="disconnected at gradient_sparsity=0.9; retrying with 0.8"):
        method.prepare(_windows())
    assert torch.isfinite(method.gradients).all()


def test_too_many_gradients_for_the_rois_warns():
    with pytest.warns(UserWarning, match="using n_gradients=9 instead of 30"):
        method = BrainJEPA(BrainJEPA.make_config("tiny", n_gradients=30), DataSpec(R, T))
    assert method.gradients.shape == (R, 9)


# -- objective -------------------------------------------------------------------------------


def test_predictor_output_matches_the_target_shape():
    method = _method()
    x = _batch(5)["x"]
    image, n_patches = windows_to_image(x, 8)
    masks = SpatiotemporalMaskCollator(R, n_patches)(5, torch.Generator().manual_seed(0))
    target_index = torch.cat(masks.targets, dim=1)
    h = method.target_encoder(image, method.gradients)
    target = gather_tokens(h, target_index)
    z = method.encoder(image, method.gradients, keep=masks.context)
    assert z.shape == (5, masks.context.shape[1], 32)
    pred = method.predictor(z, masks.context, target_index, method.gradients, R, n_patches)
    assert pred.shape == target.shape == (5, target_index.shape[1], 32)
    # the context encoder sees only the context tokens: the transformer on the gathered rows, whose patch
    # embeddings are layer-normed (patch_norm) and whose positional code is scaled by pos_scale (tiny preset)
    tokens = method.encoder.patch_embed(image).flatten(2).transpose(1, 2)
    tokens = torch.nn.functional.layer_norm(tokens, (32,))
    pos = method.config.pos_scale * method.encoder.pos_embed(method.gradients, R, n_patches)
    torch.testing.assert_close(z, method.encoder.transformer(gather_tokens(tokens + pos, masks.context)))
    assert method.encoder.patch_embed.bias is None  # a bias before the LayerNorm could only drown the content


def test_loss_is_finite_and_reaches_encoder_and_predictor_only():
    method = _method()
    out = method.training_loss(_batch())
    assert torch.isfinite(out["loss"]) and out["loss"] > 0
    assert out["context_tokens"] >= 4 and out["target_tokens"] >= 1
    out["loss"].backward()
    for name, p in [*method.encoder.named_parameters(), *method.predictor.named_parameters()]:
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert method.encoder.patch_embed.weight.grad.abs().sum() > 0
    assert method.encoder.pos_embed.gradient_proj.weight.grad.abs().sum() > 0
    assert method.predictor.mask_token.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in method.target_encoder.parameters())
    assert not any(p is q for p in method.param_groups(0.1)[0]["params"] for q in method.target_encoder.parameters())


def test_masks_follow_the_global_seed():
    method = _method()
    batch = _batch()
    torch.manual_seed(3)
    a = method.training_loss(batch)
    torch.manual_seed(3)
    b = method.training_loss(batch)
    torch.manual_seed(4)
    c = method.training_loss(batch)
    assert a["loss"] == b["loss"] and a["target_tokens"] == b["target_tokens"]
    assert a["loss"] != c["loss"]


def test_loss_is_float32_under_bf16_autocast():
    method = _method()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = method.training_loss(_batch())
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])


# -- EMA -------------------------------------------------------------------------------------


def test_ema_schedule_values():
    assert ema_momentum(0, 100) == 0.996
    assert ema_momentum(50, 100) == pytest.approx(0.998)
    assert ema_momentum(100, 100) == 1.0
    assert ema_momentum(250, 100) == 1.0  # clamped
    assert ema_momentum(10, 40, start=0.9, end=0.98) == pytest.approx(0.92)


def test_one_step_moves_the_target_by_exactly_one_minus_m():
    method = _method(ema_init_share=None)  # the paper's schedule (the automatic start: test_jepa_learning)
    with torch.no_grad():  # online and target apart by O(0.1), so (1 - m) * difference >> rounding
        for p in method.encoder.parameters():
            p.add_(0.1 * torch.randn_like(p))
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.5)
    before = [p.detach().clone() for p in method.target_encoder.parameters()]
    method.training_loss(_batch())["loss"].backward()
    optimizer.step()
    method.after_step(1, 10)  # first step: m = m(0) = 0.996
    m = 0.996
    moved = 0.0
    for (name, target), old, online in zip(
        method.target_encoder.named_parameters(), before, method.encoder.parameters(), strict=True
    ):
        torch.testing.assert_close(target, m * old + (1 - m) * online, rtol=0, atol=1e-7, msg=name)
        moved += float((target - old).abs().mean())
    assert moved > 0.004 * 0.05  # moved by about (1 - m) * 0.08 per entry, far above rounding
    before = [p.detach().clone() for p in method.target_encoder.parameters()]
    method.after_step(10, 10)  # last step uses m(9) = 0.9996
    for target, old, online in zip(method.target_encoder.parameters(), before, method.encoder.parameters()):
        torch.testing.assert_close(target, 0.9996 * old + 0.0004 * online, rtol=0, atol=1e-7)


# -- embeddings, presets, fine-tuning ------------------------------------------------------------


def test_embed_is_layer_normed_mean_of_target_tokens():
    method = _method()
    x = _batch(3)["x"]
    emb = method.embed(x)
    assert emb.shape == (3, 32) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.mean(dim=1), torch.zeros(3), atol=1e-5, rtol=0)
    image, _ = windows_to_image(x, 8)
    pooled = method.target_encoder(image, method.gradients).mean(dim=1)
    torch.testing.assert_close(emb, torch.nn.functional.layer_norm(pooled, (32,)))
    # windows of another length embed too (positions come from the input)
    assert method.embed(torch.as_tensor(_windows(2, t=48))).shape == (2, 32)


def test_small_preset_handles_40_and_80_frame_windows():
    for t in (40, 80):
        method = BrainJEPA(BrainJEPA.make_config("small", n_gradients=5, depth=1, predictor_depth=1), DataSpec(R, t))
        assert method.n_time_patches == t // 8


@pytest.mark.slow  # 10-40 s on 2 CPU cores
def test_base_preset_builds_and_takes_one_training_step():
    start = time.perf_counter()
    method = _method("base", r=94, t=32)
    assert method.config.embed_dim == 768 and len(method.encoder.transformer.blocks) == 12
    assert 80e6 < sum(p.numel() for p in method.encoder.parameters()) < 90e6
    optimizer = torch.optim.AdamW(method.param_groups(0.04), lr=1e-4)
    loss = method.training_loss(_batch(1, t=32, r=94))["loss"]
    loss.backward()
    optimizer.step()
    method.after_step(1, 100)
    assert torch.isfinite(loss)
    assert time.perf_counter() - start < 120


def test_gradient_checkpointing_gives_the_same_gradients():
    plain, ckpt = _method(), _method(gradient_checkpointing=True)
    ckpt.load_state_dict(plain.state_dict())
    batch = _batch()
    for method in (plain, ckpt):
        torch.manual_seed(1)
        method.training_loss(batch)["loss"].backward()
    for p, q in zip(plain.encoder.parameters(), ckpt.encoder.parameters()):
        torch.testing.assert_close(p.grad, q.grad)


def test_a_resumed_training_run_reproduces_the_uninterrupted_one(tmp_path, monkeypatch):
    """Masks come from the engine-seeded global RNG and the EMA momentum is a function of the step."""
    from workbench.data.recording import Recording
    from workbench.data.windows import WindowSet
    from workbench.train import make_train_config, train

    data = _windows(4, t=120, seed=2)
    windows = WindowSet([Recording(f"s{i}", "1", data[i], 0.72, {}) for i in range(4)], length=T, stride=16)
    config = make_train_config(
        BrainJEPA, batch_size=8, max_steps=4, epochs=50, checkpoint_every=2, device="cpu", warmup_steps=1
    )

    def fresh() -> BrainJEPA:
        torch.manual_seed(0)
        return BrainJEPA(BrainJEPA.make_config("tiny", gradient_sparsity=0.8), DataSpec(R, T))

    straight = train(fresh(), windows, config, tmp_path / "a", progress=False).method

    crashing = fresh()
    original = BrainJEPA.after_step

    def crash_at_step_3(self, step, total):
        if step == 3:
            raise KeyboardInterrupt
        original(self, step, total)

    monkeypatch.setattr(BrainJEPA, "after_step", crash_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        train(crashing, windows, config, tmp_path / "b", progress=False)
    monkeypatch.setattr(BrainJEPA, "after_step", original)
    resumed = train(fresh(), windows, config, tmp_path / "b", progress=False).method
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=0, atol=0, msg=key)
