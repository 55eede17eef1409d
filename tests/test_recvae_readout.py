"""Reading a trained recvae: reconstructions, per-voxel errors in the data's units, held-out subject vectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.data.normalize import Standardizer
from workbench.data.recording import Recording
from workbench.data.volume_runs import prepare_volume_runs
from workbench.data.windows import WindowSet
from workbench.errors import ConfigError, DataError
from workbench.models.recvae import fit_subject_noise, reconstruct, reconstruction_mse, subject_row
from workbench.train import build_method


@pytest.fixture(scope="module")
def windows() -> WindowSet:
    rng = np.random.default_rng(0)
    runs = []
    for s in range(2):
        data = np.zeros((5, 6, 4, 16), dtype=np.float32)
        data[1:4, 1:5, :] = rng.standard_normal((3, 4, 4, 16))
        runs.append(Recording(f"s{s}", "1", data, 2.0, {}))
    return WindowSet(prepare_volume_runs(runs), length=8, stride=8)


def _model(windows: WindowSet, **overrides):
    torch.manual_seed(0)
    return build_method("recvae", windows.spec(), "tiny", overrides).eval()


def test_reconstruction_mse_is_the_mean_squared_error_over_voxels_and_frames(windows):
    model = _model(windows)
    x = windows.get(np.arange(4))
    z = torch.tensor([0.3, -0.2, 0.1])
    _, recon = reconstruct(model, x, z)
    expected = np.mean((recon.numpy().astype(np.float64) - x) ** 2)
    assert reconstruction_mse(model, x, z) == pytest.approx(expected, rel=1e-6)
    assert reconstruction_mse(model, x) != pytest.approx(expected, rel=1e-6)  # z_s = 0 decodes differently


def test_errors_come_back_in_the_units_of_the_data(windows):
    """Frames stored at scale 5 around 100 with a global standardizer: the MSE is 25 times the scaled one."""
    model = _model(windows)
    scaled = windows.get(np.arange(4))
    raw = 100.0 + 5.0 * scaled
    standardizer = Standardizer("global")
    standardizer.mean_, standardizer.std_, standardizer._fitted = np.array([100.0]), np.array([5.0]), True
    assert reconstruction_mse(model, raw, standardizer=standardizer) == pytest.approx(
        25.0 * reconstruction_mse(model, scaled), rel=1e-4
    )
    with pytest.raises(ConfigError, match="cannot give back"):
        reconstruction_mse(model, raw, standardizer=Standardizer("window").fit(windows))


def test_a_held_out_subject_vector_is_fitted_with_the_network_frozen(windows):
    """Frames decoded with a known z: fitting z from 0 explains them and moves towards the known z."""
    model = _model(windows, lambda_z=0.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.from_numpy(windows.get(np.arange(1)))
    z_true = torch.tensor([0.8, -0.5, 0.3])
    with torch.no_grad():
        target = model.decode_frames(model.posterior(x).mu, z_true.expand(1, -1))
    fitted = fit_subject_noise(model, target, steps=40, lr=0.15)
    assert reconstruction_mse(model, target.numpy(), fitted) < 0.1 * reconstruction_mse(model, target.numpy())
    assert float((fitted - z_true).norm()) < 0.5 * float(z_true.norm())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in model.parameters())
    # the L1 weight pulls the fitted vector towards zero
    sparse = fit_subject_noise(_model(windows, lambda_z=50.0), target, steps=40, lr=0.15)
    assert float(sparse.abs().sum()) < float(fitted.abs().sum())
    with pytest.raises(ConfigError, match="steps"):
        fit_subject_noise(model, target, steps=0)


def test_subject_rows_come_from_the_training_subjects(windows):
    model = _model(windows, z_init_std=1.0)
    torch.testing.assert_close(subject_row(model, ["s0", "s1"], "s1"), model.subject_noise.detach()[1])
    assert subject_row(model, ["s0", "s1"], "s9") is None
    with pytest.raises(DataError, match="2 subject vectors"):
        subject_row(model, ["s0"], "s0")
    with pytest.raises(DataError, match=r"\(B, T, V\)"):
        reconstruct(model, np.zeros((1, 2, 3, 4)))
