"""The recvae family through the Method seam: volumes from masked frames, losses, ridge F, z_s, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.data.recording import Recording
from workbench.data.spec import DataSpec
from workbench.data.volume_runs import prepare_volume_runs
from workbench.data.windows import WindowSet
from workbench.errors import ConfigError, DataError
from workbench.methods import get_method
from workbench.models.recvae import RecVAE
from workbench.train import build_method, load_method, make_optimizer, make_train_config, train
from workbench.train.settings import apply_schedules

GRID = (6, 7, 4)


def _runs(n_subjects: int = 3, frames: int = 24, seed: int = 0) -> list[Recording]:
    """Masked frame runs: signal in a 4×5×4 block, zeros around it (left out by the variance mask)."""
    rng = np.random.default_rng(seed)
    out = []
    for s in range(n_subjects):
        data = np.zeros((*GRID, frames), dtype=np.float32)
        data[1:5, 1:6, :] = s + rng.standard_normal((4, 5, 4, frames))
        out.append(Recording(f"s{s}", "1", data, 2.0, {}))
    return prepare_volume_runs(out)


@pytest.fixture(scope="module")
def windows() -> WindowSet:
    return WindowSet(_runs(), length=6, stride=6)


def _model(windows: WindowSet, **overrides) -> RecVAE:
    torch.manual_seed(0)
    return build_method("recvae", windows.spec(), "tiny", overrides)


def _batch(windows: WindowSet, rows=(0, 1, 5, 9)) -> dict[str, torch.Tensor]:
    rows = np.asarray(rows)
    return {"x": torch.from_numpy(windows.get(rows)), "subject": torch.from_numpy(windows.labels[rows])}


def _ridge(paths: list[np.ndarray], sigma_h: float, rho: float, fit: str = "centred"):
    """The closed form in float64 from the windows' paths: ``"reference"``, the seed's
    ``(XᵀX + 2σ_h²ρI)⁻¹XᵀY`` with h0 = 0 prepended to every window; ``"centred"``, the ridge of
    the centred pairs within each window (F) and the intercept that goes with it (b)."""
    prev, nxt = [], []
    for batch in paths:
        for seq in batch.astype(np.float64):
            if fit == "reference":
                seq = np.vstack([np.zeros(seq.shape[1]), seq])
            prev.append(seq[:-1])
            nxt.append(seq[1:])
    x, y = np.concatenate(prev), np.concatenate(nxt)
    penalty = 2 * sigma_h**2 * rho * np.eye(x.shape[1])
    if fit == "reference":
        return np.linalg.solve(x.T @ x + penalty, x.T @ y).T, np.zeros(x.shape[1])
    xc, yc = x - x.mean(0), y - y.mean(0)
    transition = np.linalg.solve(xc.T @ xc + penalty, xc.T @ yc).T
    return transition, y.mean(0) - transition @ x.mean(0)


def test_registered_and_built_from_the_spec(windows):
    spec = windows.spec()
    assert get_method("recvae") is RecVAE and spec.n_features == 80 and spec.grid == GRID
    model = _model(windows)
    assert model.subject_noise.shape == (3, 3) and int(model.mask.sum()) == 80
    x = _batch(windows)["x"]
    volumes = model.to_volumes(x)
    assert volumes.shape == (4, 6, *GRID)
    assert bool((volumes[:, :, ~model.mask] == 0).all())
    torch.testing.assert_close(volumes[:, :, model.mask], x)
    model.eval()
    with torch.no_grad():
        assert model.embed(x).shape == (4, 3)


def test_embedding_is_the_time_mean_of_the_posterior_means_computed_frame_by_frame(windows):
    model = _model(windows).eval()
    x = _batch(windows)["x"]
    with torch.no_grad():
        h, means = torch.zeros(4, 3), []
        for t in range(x.shape[1]):
            volumes = model.to_volumes(x[:, t : t + 1])[:, 0]
            mu, _ = model.vae.head(model.vae.encoder(volumes), h)
            means.append(mu)
            h = mu
        torch.testing.assert_close(model.embed(x), torch.stack(means, 1).mean(1), rtol=1e-5, atol=1e-6)


def test_losses_are_reported_separately_and_gradients_reach_every_part(windows):
    model = _model(windows).train()
    model.subject_noise.data.normal_()  # away from the kink of |z|
    terms = model.training_loss(_batch(windows))
    assert set(terms) == {"loss", "reconstruction", "temporal", "z_sparsity", "F_penalty"}
    torch.testing.assert_close(
        terms["loss"].detach(), terms["reconstruction"] + terms["temporal"] + terms["z_sparsity"]
    )
    terms["loss"].backward()
    for part in ("vae.encoder", "vae.head", "vae.decoder", "subject_noise"):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(part)]
        assert grads and all(g is not None and bool(torch.isfinite(g).all()) for g in grads), part
        assert sum(float(g.abs().sum()) for g in grads) > 0, part
    # only the subjects of the batch (0, 0, 1, 2 here: rows 0, 1, 5, 9) get a reconstruction gradient
    kl = _model(windows, temporal="kl", learn_noise=True).training_loss(_batch(windows))
    assert {"kl", "sigma_x", "sigma_h"} <= set(kl) and "temporal" not in kl


@pytest.mark.parametrize(("states", "fit"), [("sample", "centred"), ("mean", "centred"), ("sample", "reference")])
def test_after_epoch_solves_the_ridge_closed_form_of_the_epochs_paths(windows, states, fit):
    """F (and b) after the epoch = the closed form on the paths the batches produced."""
    model = _model(windows, transition_states=states, transition_fit=fit, sigma_h=0.8, rho=0.3).train()
    batches = [_batch(windows, (0, 3, 6)), _batch(windows, (1, 4, 7, 10))]
    paths = []
    for i, batch in enumerate(batches):
        torch.manual_seed(10 + i)  # the path is the first draw of training_loss: replay it
        with torch.no_grad():
            path = model.posterior(batch["x"], sample=True)
        paths.append((path.h if states == "sample" else path.mu).numpy())
        torch.manual_seed(10 + i)
        model.training_loss(batch)
    model.after_epoch(0)
    transition, intercept = _ridge(paths, 0.8, 0.3, fit)
    np.testing.assert_allclose(model.transition.F.numpy(), transition, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.transition.b.numpy(), intercept, rtol=1e-4, atol=1e-5)
    assert float(model.transition.n_pairs) == 0  # statistics reset for the next epoch
    model.eval()
    with torch.no_grad():
        model.training_loss(batches[0])  # evaluation passes add nothing
    assert float(model.transition.n_pairs) == 0


def test_after_training_solves_a_cut_epoch_and_keeps_F_after_a_full_one(windows):
    model = _model(windows).train()
    before = model.transition.F.clone()
    model.after_training()  # nothing accumulated since the last solve: F stays
    torch.testing.assert_close(model.transition.F, before)
    torch.manual_seed(3)
    with torch.no_grad():
        path = model.posterior(_batch(windows)["x"], sample=True).h.numpy()
    torch.manual_seed(3)
    model.training_loss(_batch(windows))
    model.after_training()
    np.testing.assert_allclose(model.transition.F.numpy(), _ridge([path], 1.0, 0.1)[0], rtol=1e-4, atol=1e-5)


def test_engine_run_cut_by_max_steps_then_checkpoint_restores_F_and_z_exactly(tmp_path, windows):
    model = _model(windows, z_init_std=0.5)
    config = make_train_config(model, epochs=3, batch_size=2, max_steps=4, device="cpu")  # cuts epoch 0 (6 steps)
    result = train(model, windows, config, tmp_path, progress=False)
    assert result.steps == 4 and float(model.transition.n_pairs) == 0  # the cut epoch was solved too
    loaded, standardizer, state = load_method(tmp_path)
    assert standardizer.mode == "none" and state["spec"]["mask"] == windows.spec().mask
    assert torch.equal(loaded.transition.F, model.transition.F)
    assert torch.equal(loaded.subject_noise, model.subject_noise)
    assert torch.equal(loaded.mask, model.mask)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = _batch(windows)["x"]
    with torch.no_grad():
        torch.testing.assert_close(loaded.embed(x), model.eval().embed(x))


def test_a_resumed_run_reproduces_the_uninterrupted_one(tmp_path, windows):
    """3 steps per epoch: the crash at step 5 falls mid-epoch 1, after the checkpoint of step 4."""
    config = make_train_config(RecVAE, epochs=2, batch_size=4, checkpoint_every=2, device="cpu")
    straight = train(_model(windows), windows, config, tmp_path / "a", progress=False).method
    crashing = _model(windows)

    def crash_at_step_5(step, total):
        if step == 5:
            raise KeyboardInterrupt

    crashing.after_step = crash_at_step_5
    with pytest.raises(KeyboardInterrupt):
        train(crashing, windows, config, tmp_path / "b", progress=False)
    resumed = train(_model(windows), windows, config, tmp_path / "b", progress=False).method
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_subject_vectors_get_no_weight_decay_and_presets_set_the_engine(windows):
    model = _model(windows)
    config = make_train_config(model, weight_decay=0.5)
    optimizer = make_optimizer(model, config)
    apply_schedules(optimizer, config, 0, 10)
    (z_group,) = [g for g in optimizer.param_groups if any(p is model.subject_noise for p in g["params"])]
    assert z_group["apply_wd"] is False and z_group["weight_decay"] == 0.0
    decayed = [g for g in optimizer.param_groups if g["apply_wd"]]
    assert all(g["weight_decay"] == 0.5 for g in decayed)
    assert decayed and all(p.ndim >= 2 for g in decayed for p in g["params"])
    assert make_train_config(model).optimizer == "adamw" and make_train_config(model).normalization == "none"
    seed = build_method("recvae", windows.spec(), "seed")
    engine = make_train_config(seed)
    assert (engine.optimizer, engine.lr, engine.momentum, engine.batch_size, engine.epochs) == (
        "sgd",
        1e-6,
        0.0,
        4,
        500,
    )
    assert seed.config.output == "tanh" and seed.config.temporal == "mse" and seed.config.transition_init == "uniform"
    assert seed.config.transition_fit == "reference"  # g(h) = h Fᵀ on the pairs after h_0
    assert float(seed.subject_noise.detach().abs().sum()) > 0  # the seed's randn subject vectors


def test_bad_data_and_settings_are_clear_errors(windows):
    with pytest.raises(ConfigError, match="voxel grid"):
        RecVAE(RecVAE.make_config("tiny"), DataSpec(10, 6, n_subjects=2))
    with pytest.raises(ConfigError, match="n_subjects"):
        RecVAE(RecVAE.make_config("tiny"), DataSpec(80, 6, grid=(4, 5, 4)))
    with pytest.raises(ConfigError, match="temporal"):
        RecVAE.make_config("tiny", temporal="l1")
    model = _model(windows)
    with pytest.raises(DataError, match="V=80"):
        model.embed(torch.zeros(2, 6, 79))
    tanh = _model(windows, output="tanh")
    with pytest.raises(ConfigError, match="scaling='minmax'"):
        tanh.prepare(windows.get(np.arange(4)) * 3)
    tanh.prepare(np.clip(windows.get(np.arange(4)), -1, 1))  # min-max data are fine


def test_frame_chunks_give_the_same_numbers_in_eval_mode_and_bf16_autocast_runs(windows):
    whole, chunked = _model(windows).eval(), _model(windows, frame_chunk=5).eval()
    x = _batch(windows)["x"]
    with torch.no_grad():
        torch.testing.assert_close(chunked.embed(x), whole.embed(x))
        torch.testing.assert_close(
            chunked.decode_frames(whole.posterior(x).mu), whole.decode_frames(whole.posterior(x).mu)
        )
    model = _model(windows).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = model.training_loss(_batch(windows))
    assert terms["loss"].dtype == torch.float32 and bool(torch.isfinite(terms["loss"]))


def test_diagnostics_give_the_reconstruction_beside_the_window_mean_reconstruction(windows):
    model = _model(windows, voxel_reduction="mean").eval()
    batch = _batch(windows)
    x = batch["x"]
    record = model.diagnostics(batch)
    assert set(record) == {"loss", "floor"}
    with torch.no_grad():
        recon = model.decode_frames(model.posterior(x).mu)  # posterior means, z_s = 0
    per_frame = (x - recon).square().mean(-1)  # voxel_reduction="mean", σ_x = 1: R = ½ mean over frames
    assert record["loss"] == pytest.approx(0.5 * per_frame.mean().item(), rel=1e-5)
    floor = 0.5 * (x - x.mean(dim=1, keepdim=True)).square().mean().item()
    assert record["floor"] == pytest.approx(floor, rel=1e-5)
    assert model.diagnostics(batch) == record  # no sampling: the same numbers at every call
