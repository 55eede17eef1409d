"""RecVAE networks: conv geometry for any grid, shapes, gradients, time batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from workbench.errors import ConfigError, DataError
from workbench.models.recvae import (
    InferenceHead,
    RecurrentVAE,
    VolumeDecoder,
    VolumeEncoder,
    conv_plan,
    flat_size,
    reparameterize,
)

ODD_GRIDS = [(91, 109, 91), (40, 20, 1), (6, 10, 10), (16, 20, 16), (7, 9, 5)]
SMALL_GRIDS = ODD_GRIDS[1:]


def _spatial_shapes(module: nn.Module, layer_type: type, run) -> list[tuple[int, ...]]:
    """Spatial output shapes of every ``layer_type`` inside ``module`` during ``run()``."""
    shapes: list[tuple[int, ...]] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape[2:])))
        for m in module.modules()
        if isinstance(m, layer_type)
    ]
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    return shapes


def test_conv_plan_reproduces_the_reference_layout_for_91x109x91():
    plan = conv_plan((91, 109, 91))
    assert [s.out_size for s in plan] == [(45, 54, 45), (22, 27, 22), (11, 13, 11), (5, 6, 5)]
    assert all(s.kernel == (4, 4, 4) and s.stride == (2, 2, 2) and s.padding == (1, 1, 1) for s in plan)
    # the reference decoder, bottom to top: 32->16 op 1, 16->8 op (0,1,0), 8->4 op (1,0,1), 4->1 op 1
    assert [s.output_padding for s in reversed(plan)] == [(1, 1, 1), (0, 1, 0), (1, 0, 1), (1, 1, 1)]
    assert flat_size((91, 109, 91), (4, 8, 16, 32)) == 4800


@pytest.mark.parametrize("grid", ODD_GRIDS + [(2, 3, 1), (1, 1, 1), (128, 33, 64)])
def test_transposed_conv_formula_restores_every_stage(grid):
    """Each stage's ConvTranspose3d output size ``(m-1)s - 2p + k + op`` equals the stage input."""
    for stage in conv_plan(grid):
        for n, m, k, s, p, op in zip(
            stage.in_size, stage.out_size, stage.kernel, stage.stride, stage.padding, stage.output_padding
        ):
            assert m >= 1
            assert (n + 2 * p - k) // s + 1 == m
            assert (m - 1) * s - 2 * p + k + op == n
            assert 0 <= op < s or (op == 0 and s == 1)


def test_an_axis_of_one_voxel_is_never_strided():
    plan = conv_plan((40, 20, 1))
    assert all(s.kernel[2] == 1 and s.stride[2] == 1 and s.padding[2] == 0 for s in plan)
    assert [s.out_size[:2] for s in plan] == [(20, 10), (10, 5), (5, 2), (2, 1)]
    # an axis halved down to one voxel stops striding at the next stage
    plan = conv_plan((7, 9, 5))
    assert [s.out_size for s in plan] == [(3, 4, 2), (1, 2, 1), (1, 1, 1), (1, 1, 1)]
    assert plan[2].stride == (1, 2, 1) and plan[3].stride == (1, 1, 1)


@pytest.mark.parametrize("grid", ODD_GRIDS)
def test_encoder_decoder_round_trip_shapes(grid):
    torch.manual_seed(0)
    model = RecurrentVAE(grid).eval()
    plan = model.encoder.plan
    x = torch.randn(1, 1, 1, *grid)
    with torch.no_grad():
        enc_shapes = _spatial_shapes(model.encoder, nn.Conv3d, lambda: model.encoder(x[0]))
        dec_shapes = _spatial_shapes(model.decoder, nn.ConvTranspose3d, lambda: model(x, torch.zeros(10)))
        out = model(x, torch.zeros(10))
        code = model.encoder(x[0])
    assert enc_shapes == [s.out_size for s in plan]
    assert dec_shapes == [s.in_size for s in reversed(plan)]
    assert out.reconstruction.shape == (1, 1, 1, *grid)
    assert code.shape == (1, 100) and bool((code.abs() < 1).all())
    assert out.path.h.shape == (1, 1, 10)


def test_modules_of_91x109x91_match_the_reference_numbers():
    encoder = VolumeEncoder((91, 109, 91))
    decoder = VolumeDecoder((91, 109, 91), latent_dim=10)
    convs = [m for m in encoder.modules() if isinstance(m, nn.Conv3d)]
    deconvs = [m for m in decoder.modules() if isinstance(m, nn.ConvTranspose3d)]
    assert [(m.in_channels, m.out_channels) for m in convs] == [(1, 4), (4, 8), (8, 16), (16, 32)]
    assert [(m.in_channels, m.out_channels) for m in deconvs] == [(32, 16), (16, 8), (8, 4), (4, 1)]
    assert [m.output_padding for m in deconvs] == [(1, 1, 1), (0, 1, 0), (1, 0, 1), (1, 1, 1)]
    assert encoder.head[1].in_features == 4800 and encoder.head[1].out_features == 100
    assert decoder.project[0].out_features == 4800
    assert sum(isinstance(m, nn.BatchNorm3d) for m in decoder.modules()) == 4  # after the linear and 3 deconvs


@pytest.mark.parametrize("grid", SMALL_GRIDS)
def test_gradients_reach_encoder_head_decoder_and_subject_noise(grid):
    torch.manual_seed(1)
    model = RecurrentVAE(grid, enc_out_dim=12, latent_dim=3, channels=(2, 3, 4, 5)).train()
    z_s = torch.randn(2, 3, requires_grad=True)
    volumes = torch.randn(2, 3, *grid)
    out = model(volumes, torch.zeros(3), subject_noise=z_s)
    loss = (out.reconstruction.squeeze(2) - volumes).square().mean() + out.path.h.square().mean()
    loss.backward()
    for part in (model.encoder, model.head, model.decoder):
        for name, p in part.named_parameters():
            assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name
            assert float(p.grad.abs().sum()) > 0, name
    assert z_s.grad is not None and float(z_s.grad.abs().sum()) > 0


@pytest.mark.parametrize("sample", [False, True])
def test_batched_over_time_equals_frame_by_frame(sample):
    """Eval mode (BatchNorm on running statistics): one call on S·T frames = T calls on S frames."""
    grid, latent = (7, 9, 5), 4
    torch.manual_seed(2)
    model = RecurrentVAE(grid, enc_out_dim=8, latent_dim=latent, channels=(2, 3, 4, 5)).eval()
    volumes, h0, z_s = torch.randn(3, 5, *grid), torch.randn(latent), torch.randn(3, latent)
    with torch.no_grad():
        torch.manual_seed(3)
        batched = model(volumes, h0, z_s, sample=sample)
        torch.manual_seed(3)
        h, recon, states = h0.expand(3, latent), [], []
        for t in range(volumes.shape[1]):
            mu, log_var = model.head(model.encoder(volumes[:, t]), h)
            h = reparameterize(mu, log_var) if sample else mu
            states.append(h)
            recon.append(model.decoder(h + z_s))
    torch.testing.assert_close(batched.path.h, torch.stack(states, 1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(batched.reconstruction, torch.stack(recon, 1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(batched.path.h_prev[:, 1:], batched.path.h[:, :-1])
    torch.testing.assert_close(batched.path.h_prev[:, 0], h0.expand(3, latent))


def test_inference_head_is_two_linear_maps_of_the_concatenation():
    torch.manual_seed(4)
    head = InferenceHead(enc_out_dim=5, latent_dim=3)
    e, h = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    head = head.double()
    mu, log_var = head(e, h)
    joint = np.concatenate([e.numpy(), h.numpy()], axis=1)
    w_mu, b_mu = head.to_mu.weight.detach().numpy(), head.to_mu.bias.detach().numpy()
    w_lv, b_lv = head.to_log_var.weight.detach().numpy(), head.to_log_var.bias.detach().numpy()
    np.testing.assert_allclose(mu.detach().numpy(), joint @ w_mu.T + b_mu, rtol=1e-12)
    np.testing.assert_allclose(log_var.detach().numpy(), joint @ w_lv.T + b_lv, rtol=1e-12)


def test_reparameterize_keeps_dtype_and_has_the_posterior_moments():
    torch.manual_seed(5)
    mu = torch.tensor([[1.5, -2.0]], dtype=torch.float64).expand(20000, 2)
    log_var = torch.log(torch.tensor([[0.25, 4.0]], dtype=torch.float64)).expand(20000, 2)
    h = reparameterize(mu, log_var)
    assert h.dtype == torch.float64 and h.device == mu.device
    np.testing.assert_allclose(h.mean(0).numpy(), [1.5, -2.0], atol=0.05)
    np.testing.assert_allclose(h.var(0).numpy(), [0.25, 4.0], rtol=0.05)


def test_decoder_output_activation():
    torch.manual_seed(6)
    big = torch.full((2, 3), 50.0)
    tanh = VolumeDecoder((6, 10, 10), latent_dim=3, channels=(2, 3), output="tanh").eval()
    linear = VolumeDecoder((6, 10, 10), latent_dim=3, channels=(2, 3), output="linear").eval()
    with torch.no_grad():
        assert float(tanh(big).abs().max()) <= 1.0
        assert float(linear(big).abs().max()) > 1.0
    assert isinstance(linear.features[-1], nn.ConvTranspose3d) and linear.features[-1].bias is not None


def test_runs_under_bf16_autocast():
    torch.manual_seed(7)
    model = RecurrentVAE((6, 10, 10), enc_out_dim=8, latent_dim=3, channels=(2, 3)).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(2, 3, 6, 10, 10), torch.zeros(3), torch.zeros(2, 3))
    assert out.reconstruction.shape == (2, 3, 1, 6, 10, 10)
    assert bool(torch.isfinite(out.reconstruction.float()).all())


def test_bad_configuration_and_input_raise():
    with pytest.raises(ConfigError, match="grid"):
        conv_plan((0, 5, 5))
    with pytest.raises(ConfigError, match="grid"):
        conv_plan((5, 5))
    with pytest.raises(ConfigError, match="channels"):
        VolumeEncoder((8, 8, 8), channels=())
    with pytest.raises(ConfigError, match="output"):
        VolumeDecoder((8, 8, 8), output="relu")
    with pytest.raises(DataError, match=r"\(N, 1, 8, 8, 8\)"):
        VolumeEncoder((8, 8, 8), channels=(2,))(torch.randn(2, 1, 8, 8, 7))
    with pytest.raises(DataError, match="sequences"):
        RecurrentVAE((8, 8, 8), channels=(2,))(torch.randn(8, 8, 8), torch.zeros(10))
