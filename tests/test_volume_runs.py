"""Volume runs for a volume family: cut, resample, mask rules, per-run scaling, frames <-> volumes, spec mask."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from workbench.data.recording import Recording
from workbench.data.spec import DataSpec, decode_mask, encode_mask
from workbench.data.volume_runs import (
    brain_mask,
    cut_run,
    field_of_view_affine,
    prepare_volume_runs,
    resample_run,
    scale_run,
)
from workbench.data.volumes import frames_to_volumes, volume_frames, volumes_to_frames, voxel_index
from workbench.data.windows import WindowSet
from workbench.errors import ConfigError, DataError

GRID = (4, 5, 3)


def _run(subject: str = "s0", frames: int = 12, seed: int = 0, offset: float = 100.0) -> Recording:
    """Signal inside a 2×3×3 block, exact zeros (constant background) elsewhere."""
    rng = np.random.default_rng(seed)
    data = np.zeros((*GRID, frames), dtype=np.float32)
    data[1:3, 1:4, :] = offset + rng.standard_normal((2, 3, 3, frames))
    labels = pd.DataFrame({"t": np.arange(frames, dtype=float)})
    return Recording(subject, "1", data, 2.0, {"source_file": f"/data/{subject}.nii.gz"}, labels)


def test_cut_keeps_the_first_frames_and_names_a_run_that_is_too_short():
    run = _run(frames=12)
    cut = cut_run(run, 5)
    np.testing.assert_array_equal(cut.data, run.data[..., :5])
    assert cut.frame_labels["t"].tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(DataError, match=r"run s0/1 \(/data/s0.nii.gz\) has 12 frames, fewer than tol_time=20"):
        cut_run(run, 20)
    with pytest.raises(DataError, match="tol_time=20"):
        prepare_volume_runs([_run("a", 30), _run("b", 12)], tol_time=20)
    with pytest.raises(ConfigError, match="tol_time"):
        cut_run(run, 0)


def test_scalings_by_hand_over_the_in_mask_voxels():
    run = _run()
    mask = np.zeros(GRID, dtype=bool)
    mask[1:3, 1:4, :] = True
    inside = run.data[mask].astype(np.float64)
    z = scale_run(run, mask, "zscore")
    np.testing.assert_allclose(z.data[mask], (inside - inside.mean()) / inside.std(), rtol=1e-5, atol=1e-5)
    assert z.meta["scaling"]["scale"] == pytest.approx(inside.std())
    mm = scale_run(run, mask, "minmax")
    assert mm.data[mask].min() == pytest.approx(-1.0) and mm.data[mask].max() == pytest.approx(1.0)
    lo, hi = inside.min(), inside.max()
    np.testing.assert_allclose(mm.data[mask], 2 * (inside - lo) / (hi - lo) - 1, rtol=1e-5, atol=1e-6)
    vz = scale_run(run, mask, "voxel-zscore")
    per_voxel = (inside - inside.mean(1, keepdims=True)) / inside.std(1, keepdims=True)
    np.testing.assert_allclose(vz.data[mask], per_voxel, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(scale_run(run, mask, "none").data, run.data)


def test_a_constant_run_is_a_clear_error():
    run = _run()
    run.data[1:3, 1:4, :] = 7.0
    mask = run.data.max(axis=3) > 0
    for scaling in ("zscore", "minmax", "voxel-zscore"):
        with pytest.raises(DataError, match=r"run s0/1 \(/data/s0.nii.gz\) is constant over time inside the brain"):
            scale_run(run, mask, scaling)
    # a volume that differs between voxels but never changes holds no signal either
    with pytest.raises(DataError, match="run s0/1 .* constant over time"):
        prepare_volume_runs([_run("a"), run], mask="all")
    with pytest.raises(ConfigError, match="scaling"):
        prepare_volume_runs([run], scaling="robust")


def test_variance_mask_leaves_out_constant_background_and_frames_follow_it():
    runs = prepare_volume_runs([_run("a", seed=1), _run("b", seed=2)], tol_time=10)
    expected = np.zeros(GRID, dtype=bool)
    expected[1:3, 1:4, :] = True
    for run in runs:
        assert run.meta["mask_rule"] == "variance" and run.data.shape == (10, 18)
        np.testing.assert_array_equal(run.meta["mask"], expected)
        assert abs(run.data.mean()) < 1e-5 and run.data.std() == pytest.approx(1.0, rel=1e-4)
        assert run.frame_labels is not None and len(run.frame_labels) == 10
    spec = WindowSet(runs, length=5, stride=5).spec()
    assert spec.grid == GRID and spec.n_features == 18
    np.testing.assert_array_equal(spec.mask_array(), expected)
    full = prepare_volume_runs([_run("a")], mask="all")[0]
    assert full.data.shape == (12, 60) and full.meta["mask_rule"] == "all"


def test_given_masks_dataset_masks_and_mni_masks(tmp_path):
    mask = np.zeros(GRID, dtype=bool)
    mask[1, 2, 1] = mask[2, 3, 2] = True
    run = _run()
    assert brain_mask([run], mask)[0].sum() == 2
    path = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), np.eye(4)), path)
    np.testing.assert_array_equal(brain_mask([run], path)[0], mask)
    run.meta["mask_img"] = str(path)
    selected, rule = brain_mask([run])
    assert rule == "dataset"
    np.testing.assert_array_equal(selected, mask)
    # MNI-space runs: the MNI152 brain mask; a 4x5x3 grid of 2 mm voxels at the origin lies inside the brain,
    # the same grid 200 mm away lies outside it
    mni = _run()
    mni.meta.update(space="MNI152NLin2009cAsym", affine=np.diag([2.0, 2.0, 2.0, 1.0]).tolist())
    selected, rule = brain_mask([mni])
    assert rule == "mni" and selected.all()
    far = np.diag([2.0, 2.0, 2.0, 1.0])
    far[:3, 3] = 200.0
    mni.meta["affine"] = far.tolist()
    with pytest.raises(DataError, match="mni brain mask selects no voxel"):
        brain_mask([mni])
    with pytest.raises(DataError, match="shape"):
        brain_mask([run], np.ones((3, 3, 3), bool))


def test_resampling_keeps_the_field_of_view_and_a_linear_ramp():
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    affine[:3, 3] = [-10.0, 5.0, 1.0]
    new = field_of_view_affine(affine, (8, 6, 4), (4, 3, 2))
    # the outer edges (voxel -0.5 and shape - 0.5) map to the same world points
    for old_edge, new_edge in (((-0.5, -0.5, -0.5), (-0.5, -0.5, -0.5)), ((7.5, 5.5, 3.5), (3.5, 2.5, 1.5))):
        np.testing.assert_allclose(affine @ [*old_edge, 1], new @ [*new_edge, 1])
    x = np.arange(8, dtype=np.float32)
    ramp = np.broadcast_to(x[:, None, None, None] * np.ones((1, 6, 4, 3), np.float32), (8, 6, 4, 3)).copy()
    ramp[..., 1] += 10.0
    run = Recording("s", "1", ramp, 2.0, {"affine": affine.tolist()})
    out = resample_run(run, grid=(4, 3, 2))
    assert out.data.shape == (4, 3, 2, 3)
    np.testing.assert_allclose(out.meta["affine"], new)
    # new voxel i sits at old x = 2 i + 0.5; the cubic spline follows the ramp up to its boundary effect
    np.testing.assert_allclose(out.data[1:3, 1, 0, 0], [2.5, 4.5], atol=0.02)
    np.testing.assert_allclose(out.data[1:3, 1, 0, 1], [12.5, 14.5], atol=0.02)
    prepared = prepare_volume_runs([run], grid=(4, 3, 2), mask="all", scaling="none")[0]
    assert prepared.meta["grid"] == (4, 3, 2) and prepared.data.shape == (3, 24)
    with pytest.raises(DataError, match="different grids"):
        prepare_volume_runs([run, _run()])


def test_frames_and_volumes_round_trip_with_zero_background_and_gradients():
    mask = torch.zeros(GRID, dtype=torch.bool)
    mask[1:3, 1:4, 1] = True
    index = voxel_index(mask)
    assert index.tolist() == [i for i, m in enumerate(mask.flatten().tolist()) if m]
    frames = torch.randn(2, 7, 6, dtype=torch.float64, requires_grad=True)
    vols = frames_to_volumes(frames, mask, index)
    assert vols.shape == (2, 7, *GRID) and vols.dtype == torch.float64
    assert bool((vols.detach()[:, :, ~mask] == 0).all())
    torch.testing.assert_close(vols.detach()[:, :, mask], frames.detach())
    torch.testing.assert_close(volumes_to_frames(vols, mask), frames)
    (vols * 3).sum().backward()
    torch.testing.assert_close(frames.grad, torch.full_like(frames, 3.0))
    with pytest.raises(DataError, match="voxels"):
        frames_to_volumes(torch.zeros(3, 7), mask)
    with pytest.raises(DataError, match="grid"):
        volumes_to_frames(torch.zeros(3, 4, 4, 4), mask)
    with pytest.raises(DataError, match="boolean"):
        voxel_index(mask.float())


def test_the_spec_carries_the_mask_packed_and_refuses_mismatches():
    rng = np.random.default_rng(0)
    mask = rng.random((7, 9, 5)) > 0.6
    assert np.array_equal(decode_mask(encode_mask(mask), (7, 9, 5)), mask)
    spec = DataSpec(int(mask.sum()), 10, grid=(7, 9, 5), n_subjects=2, mask=encode_mask(mask))
    assert DataSpec.from_dict(spec.to_dict()) == spec
    np.testing.assert_array_equal(spec.mask_array(), mask)
    assert DataSpec(315, 10, grid=(7, 9, 5)).mask_array().all()
    with pytest.raises(ConfigError, match="selects"):
        DataSpec(int(mask.sum()) + 1, 10, grid=(7, 9, 5), mask=encode_mask(mask))
    with pytest.raises(ConfigError, match="grid"):
        DataSpec(5, 10, mask=encode_mask(mask))
    with pytest.raises(ConfigError, match="corrupt"):
        decode_mask("not base64!", (7, 9, 5))
    # runs cut with different masks cannot share one spec
    a = volume_frames(_run("a"), np.ones(GRID, bool))
    b = volume_frames(_run("b"), np.ones(GRID, bool))
    b.meta["mask"] = b.meta["mask"].copy()
    b.meta["mask"][0, 0, 0] = False
    with pytest.raises(DataError, match="different brain masks"):
        WindowSet([a, b], length=4, stride=4).spec()


def test_masked_frame_recordings_come_back_on_their_grid_with_their_own_mask():
    """Frames (T, V) read through a mask image (haxby-slice) keep that mask and are scaled per run."""
    mask = np.zeros(GRID, dtype=bool)
    mask[1:3, 1:4, 1] = True
    raw = [volume_frames(_run(name, seed=i), mask) for i, name in enumerate("ab")]
    for rec in raw:
        del rec.meta["source_file"]  # identity affine
    runs = prepare_volume_runs(raw, tol_time=10)
    for before, after in zip(raw, runs):
        assert after.meta["mask_rule"] == "dataset" and after.data.shape == (10, 6)
        np.testing.assert_array_equal(after.meta["mask"], mask)
        inside = before.data[:10].astype(np.float64)
        np.testing.assert_allclose(after.data, (inside - inside.mean()) / inside.std(), rtol=1e-5, atol=1e-5)
        assert "mask_img" not in after.meta
    assert WindowSet(runs, 5, 5).spec().n_features == 6


def test_as_frames_scales_volumes_and_unscaled_volume_frames_and_leaves_roi_series_alone():
    from workbench.runs import as_frames

    volumes = [_run("s0"), _run("s1", seed=1)]
    frames = as_frames(volumes)
    assert all(rec.data.ndim == 2 and rec.meta["scaling"]["kind"] == "zscore" for rec in frames)
    unscaled = [volume_frames(rec) for rec in volumes]  # grid and mask, no per-run scaling yet
    rescaled = as_frames(unscaled)
    assert all("scaling" in rec.meta for rec in rescaled)
    assert abs(float(np.mean(rescaled[0].data))) < 1e-3  # the offset of 100 is gone
    roi = Recording("s0", "1", np.random.default_rng(0).normal(size=(20, 5)), 2.0, {})
    assert as_frames([roi])[0] is roi
