"""Synthetic generators: shapes, determinism, and the ground truth each one promises."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.data.synthetic import GENERATORS, continuous_y, fingerprints, generate, planted, volumes
from workbench.errors import ConfigError


def _fc_edges(x: np.ndarray) -> np.ndarray:
    """Fisher-z of the upper-triangle ROI-ROI correlations of a (T, R) series."""
    corr = np.corrcoef(x.T)
    return np.arctanh(np.clip(corr[np.triu_indices_from(corr, 1)], -0.999, 0.999))


def _half_split_similarity(recordings) -> tuple[np.ndarray, np.ndarray, float]:
    """FC similarity of first vs second halves: within-subject, across-subject, identification rate."""
    half = recordings[0].data.shape[0] // 2
    first = np.array([_fc_edges(r.data[:half]) for r in recordings])
    second = np.array([_fc_edges(r.data[half:]) for r in recordings])
    n = len(recordings)
    sim = np.corrcoef(first, second)[:n, n:]
    off_diagonal = ~np.eye(n, dtype=bool)
    return np.diag(sim), sim[off_diagonal], float((sim.argmax(axis=1) == np.arange(n)).mean())


def test_fingerprints_shapes_ids_and_meta():
    recs = fingerprints(n_subjects=3, n_rois=7, n_timepoints=50, n_sessions=2, seed=1)
    assert len(recs) == 6
    assert [r.subject for r in recs] == ["synth-001"] * 2 + ["synth-002"] * 2 + ["synth-003"] * 2
    assert [r.session for r in recs] == ["1", "2"] * 3
    for r in recs:
        assert r.data.shape == (50, 7) and r.data.dtype == np.float32 and r.tr == 0.72
        assert np.isfinite(r.data).all()
    assert [r.meta["subject_index"] for r in recs] == [0, 0, 1, 1, 2, 2]
    assert not np.array_equal(recs[0].data, recs[1].data)  # sessions differ in noise


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_same_seed_same_arrays_different_seed_different(name):
    small = {
        "fingerprints": dict(n_subjects=2, n_rois=5, n_timepoints=40),
        "continuous_y": dict(n_subjects=2, n_rois=5, n_timepoints=40),
        "volumes": dict(n_subjects=2, n_timepoints=6, grid=(4, 5, 3), latent_dim=2),
        "planted": dict(n_subjects=2, n_rois=5, n_timepoints=40),
    }[name]
    a, b, c = (generate(name, seed=s, **small) for s in (3, 3, 4))
    for ra, rb, rc in zip(a, b, c):
        np.testing.assert_array_equal(ra.data, rb.data)
        assert not np.allclose(ra.data, rc.data)


def test_subject_data_do_not_depend_on_cohort_size():
    few = fingerprints(n_subjects=2, n_rois=6, n_timepoints=30, seed=5)
    many = fingerprints(n_subjects=5, n_rois=6, n_timepoints=30, seed=5)
    for a, b in zip(few, many):
        np.testing.assert_array_equal(a.data, b.data)


def test_difficulty_zero_separates_subjects():
    within, across, accuracy = _half_split_similarity(fingerprints(difficulty=0.0, seed=2))
    assert accuracy == 1.0
    assert within.min() > across.max()
    assert within.mean() - across.mean() > 10 * across.std()


def test_difficulty_one_has_no_subject_structure():
    within, across, accuracy = _half_split_similarity(fingerprints(difficulty=1.0, seed=2))
    # Identically distributed subjects: own-half similarity is no higher than
    # another subject's, and identification is at chance level (1/12).
    assert abs(within.mean() - across.mean()) < across.std()
    assert accuracy <= 3 / 12


def test_continuous_y_shapes_and_label_drives_connectivity():
    recs = continuous_y(seed=0)
    assert len(recs) == 40 and recs[0].data.shape == (300, 32) and recs[0].data.dtype == np.float32
    y = np.array([r.meta["y"] for r in recs])
    assert y.min() >= 20 and y.max() <= 80 and y.std() > 5
    np.testing.assert_allclose([r.meta["mix"] for r in recs], (y - 20) / 60)
    # The leading principal component of the FC profiles, found without y, tracks y.
    edges = np.array([_fc_edges(r.data) for r in recs])
    scores = np.linalg.svd(edges - edges.mean(axis=0), full_matrices=False)[0][:, 0]
    assert abs(np.corrcoef(scores, y)[0, 1]) > 0.5


def test_volumes_shapes_and_latent_obeys_stored_transition():
    recs = volumes(n_subjects=3, n_timepoints=200, grid=(6, 7, 5), latent_dim=3, seed=1)
    transition = np.array(recs[0].meta["F"])
    assert transition.shape == (3, 3)
    assert np.abs(np.linalg.eigvals(transition)).max() == pytest.approx(0.9)
    for r in recs:
        assert r.data.shape == (6, 7, 5, 200) and r.data.dtype == np.float32 and r.n_timepoints == 200
        assert np.array(r.meta["latent"]).shape == (200, 3)
        np.testing.assert_array_equal(np.array(r.meta["F"]), transition)  # one F for all subjects
    previous = np.concatenate([np.array(r.meta["latent"])[:-1] for r in recs])
    current = np.concatenate([np.array(r.meta["latent"])[1:] for r in recs])
    estimate = np.linalg.lstsq(previous, current, rcond=None)[0].T
    assert np.abs(estimate - transition).max() < 0.15


def test_volumes_are_the_latent_seen_through_smooth_maps():
    recs = volumes(n_subjects=2, n_timepoints=80, grid=(6, 6, 6), latent_dim=2, seed=3)
    for r in recs:
        voxels = r.data.reshape(-1, r.n_timepoints).T  # (T, V)
        design = np.column_stack([np.array(r.meta["latent"]), np.ones(r.n_timepoints)])
        residual = voxels - design @ np.linalg.lstsq(design, voxels, rcond=None)[0]
        assert residual.std() == pytest.approx(0.1, rel=0.15)  # only the voxel noise is left


def test_planted_every_roi_is_the_runs_source_through_its_loading():
    recs = planted(seed=0)
    assert len(recs) == 8 and {r.data.shape for r in recs} == {(600, 32)} and recs[0].data.dtype == np.float32
    loadings = np.array(recs[0].meta["loadings"])
    assert loadings.shape == (32,) and loadings.min() >= 0.5 and loadings.max() <= 1.5
    sources = []
    for r in recs:
        np.testing.assert_array_equal(r.meta["loadings"], loadings)  # one set of loadings for the cohort
        source = np.array(r.meta["source"])
        sources.append(source)
        assert source.std() == pytest.approx(1.0, abs=0.3)  # unit-variance AR(1) (0.9: slow, so a wide margin)
        assert np.corrcoef(source[:-1], source[1:])[0, 1] == pytest.approx(0.9, abs=0.06)
        fitted, *_ = np.linalg.lstsq(source[:, None], r.data, rcond=None)  # (1, R): each ROI on the source
        np.testing.assert_allclose(fitted[0], loadings, atol=0.1)
        residual = r.data - source[:, None] * fitted
        assert residual.std() == pytest.approx(0.5, rel=0.05)  # only the white noise is left
        assert abs(np.corrcoef(residual[:-1].ravel(), residual[1:].ravel())[0, 1]) < 0.05
    assert abs(np.corrcoef(sources[0], sources[1])[0, 1]) < 0.3  # every run has its own source


def test_planted_catalog_entry_and_parameter_errors():
    from workbench.data.catalog import load_recordings

    recs = load_recordings("synthetic-planted", progress=False)
    assert len(recs) == 8 and {r.data.shape for r in recs} == {(600, 32)} and recs[0].tr == 1.0
    np.testing.assert_array_equal(recs[3].data, planted(seed=0)[3].data)
    with pytest.raises(ConfigError, match="ar_coef must lie in"):
        planted(ar_coef=1.0)
    with pytest.raises(ConfigError, match="noise_std must be >= 0"):
        generate("planted", noise_std=-0.1)
    assert planted(n_subjects=1, n_rois=3, n_timepoints=20, noise_std=0.0)[0].data.std() > 0


def test_generate_rejects_unknown_names_and_parameters():
    with pytest.raises(ConfigError, match="choose one of .*fingerprints"):
        generate("fingerprint")
    with pytest.raises(ConfigError, match="n_roi"):
        generate("fingerprints", n_roi=10)
    with pytest.raises(ConfigError, match="difficulty"):
        generate("fingerprints", difficulty=1.5)
    with pytest.raises(ConfigError, match="n_subjects"):
        generate("continuous_y", n_subjects=0)
    with pytest.raises(ConfigError, match="grid"):
        generate("volumes", grid=(4, 4))
    with pytest.raises(ConfigError, match="tr must be > 0"):
        fingerprints(tr=0.0)  # direct calls are checked too
    recs = generate("volumes", n_subjects=1, n_timepoints=3, grid=[3, 4, 5], latent_dim=1, seed=0)
    assert recs[0].data.shape == (3, 4, 5, 3)
