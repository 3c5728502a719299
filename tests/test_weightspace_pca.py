"""PCA solvers and subspaces: agreement with NumPy's SVD, exact reconstruction, streaming, sampling, edits."""

import numpy as np
import pytest
import torch

from weightspace.runtime.errors import InputError
from weightspace.space.frame import Frame
from weightspace.space.layout import Layout
from weightspace.space.pca import choose_solver, pca
from weightspace.space.subspace import Subspace, fit_direction, fit_subspace_matrix


def _data(n=30, d=400, rank=12, seed=0):
    rng = np.random.default_rng(seed)
    scales = np.geomspace(10, 0.5, rank)
    x = (rng.standard_normal((n, rank)) * scales) @ np.linalg.qr(rng.standard_normal((d, rank)))[0].T
    return (x + 0.01 * rng.standard_normal((n, d)) + rng.standard_normal(d)).astype(np.float32)


def _svd(x):
    xc = x.astype(np.float64) - x.astype(np.float64).mean(0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    return s, vt


def _close_up_to_sign(basis, vt, atol):
    signs = np.sign(np.sum(basis * vt, axis=1))
    assert np.all(signs != 0)
    np.testing.assert_allclose(basis, signs[:, None] * vt, atol=atol)


@pytest.mark.parametrize("solver", ["exact", "gram", "randomized"])
def test_agrees_with_numpy_svd(solver):
    x = _data()
    s, vt = _svd(x)
    r = pca(x, 8, solver=solver, block_bytes=30 * 8 * 37)  # blocks of 37 columns: exercises the streaming path
    np.testing.assert_allclose(r.singular_values, s[:8], rtol=1e-5)
    _close_up_to_sign(r.basis, vt[:8], atol=1e-5)
    np.testing.assert_allclose(r.mean, x.astype(np.float64).mean(0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(r.explained_variance, s[:8] ** 2 / 29, rtol=1e-5)
    np.testing.assert_allclose(r.explained_variance_ratio, s[:8] ** 2 / np.sum(s**2), rtol=1e-5)


def test_k_equals_n_minus_1_reconstructs_centred_points():
    x = np.random.default_rng(1).standard_normal((20, 300)).astype(np.float32)
    for solver in ("exact", "gram"):
        r = pca(x, 19, solver=solver)
        xc = x - r.mean
        rec = (xc @ r.basis.T) @ r.basis
        np.testing.assert_allclose(rec, xc, atol=1e-5 * np.abs(xc).max())
        np.testing.assert_allclose(r.basis @ r.basis.T, np.eye(19), atol=1e-5)


def test_solvers_agree_and_standardize_is_consistent():
    x = _data(40, 120)
    outs = {s: pca(x, 5, solver=s, standardize=True) for s in ("exact", "gram", "randomized")}
    for s in ("gram", "randomized"):
        np.testing.assert_allclose(outs[s].singular_values, outs["exact"].singular_values, rtol=1e-5)
        _close_up_to_sign(outs[s].basis, outs["exact"].basis, atol=1e-4)
        np.testing.assert_allclose(outs[s].scale, outs["exact"].scale, rtol=1e-6)
    z = (x - outs["exact"].mean) / outs["exact"].scale
    s, _ = _svd(z)
    np.testing.assert_allclose(outs["exact"].singular_values, s[:5], rtol=1e-5)


def test_streams_from_a_memory_map(tmp_path):
    x = _data(16, 2000)
    path = tmp_path / "x.npy"
    np.save(path, x)
    mm = np.load(path, mmap_mode="r")
    r = pca(mm, 4, solver="gram", block_bytes=16 * 8 * 100)
    s, vt = _svd(x)
    np.testing.assert_allclose(r.singular_values, s[:4], rtol=1e-5)
    _close_up_to_sign(r.basis, vt[:4], atol=1e-5)


def test_auto_and_bad_inputs():
    assert choose_solver(10, 10_000, 5) == "gram"
    assert choose_solver(1000, 2000, 10) == "randomized"
    assert choose_solver(100, 120, 50) == "exact"
    with pytest.raises(InputError, match="min"):
        pca(np.zeros((5, 10), np.float32), 5)
    with pytest.raises(InputError, match="solver"):
        pca(np.zeros((5, 10), np.float32), 2, solver="svd")


def _subspace(x, k, **kw):
    layout = Layout.from_tensors([("w", (x.shape[1],))], base_hash="h", parameterisation="layers")
    frame = Frame(layout, {"name": "layers", "targets": "all"}, torch.zeros(1, 2), "toy")
    return fit_subspace_matrix(x, k, frame=frame, **kw)


def test_subspace_project_reconstruct_sample_and_save(tmp_path):
    x = _data(25, 60)
    sub = _subspace(x, 24)
    pts = torch.from_numpy(x)
    torch.testing.assert_close(sub.reconstruct(sub.project(pts)), pts, atol=2e-4, rtol=1e-5)
    z = sub.sample_coords(4000, seed=1)
    np.testing.assert_allclose(z.std(0).numpy()[:3], sub.sigma.numpy()[:3], rtol=0.08)
    assert torch.equal(sub.sample_coords(3, seed=1), z[:3])  # one generator per item
    assert torch.allclose(sub.sample_coords(2, seed=1, temperature=0.5), 0.5 * z[:2])
    for bad in (-1.0, float("nan"), float("inf")):  # refused by name, not found later as a NaN grid
        with pytest.raises(InputError, match=r"temperature \(--temperature\) a finite number >= 0"):
            sub.sample_coords(2, temperature=bad)
    sub.save(tmp_path / "sub")
    back = Subspace.load(tmp_path / "sub")
    assert torch.equal(back.basis, sub.basis) and back.frame == sub.frame and back.n == 25
    assert torch.equal(back.sample(2, seed=3), sub.sample(2, seed=3))


def test_edits_along_components_and_fitted_directions():
    x = _data(40, 50, rank=6)
    sub = _subspace(x, 6, standardize=True)
    p = torch.from_numpy(x[:1])
    moved = sub.edit(p, 2.0, component=1)
    dz = sub.project(moved) - sub.project(p)
    expect = torch.zeros(6)
    expect[1] = 2.0 * sub.sigma[1]
    torch.testing.assert_close(dz[0], expect, atol=1e-3, rtol=1e-4)
    coords = sub.project(torch.from_numpy(x))
    labels = (coords[:, 2] > 0).float()
    d = fit_direction(coords, labels)
    assert abs(float(d[2])) == pytest.approx(float(d.abs().max()))  # the label lives on component 2
    assert float(d[2]) > 0
    path = sub.edit(p, [0.0, 1.0, 2.0], coords=d)
    assert path.shape == (3, 50) and torch.equal(path[0], p[0])


@pytest.mark.parametrize("solver", ["exact", "gram", "randomized"])
def test_a_memory_map_leaves_no_file_open(tmp_path, solver):
    import os

    np.save(tmp_path / "x.npy", _data(20, 60))
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        pca(mm, 3, solver=solver)
    assert len(os.listdir("/proc/self/fd")) == before


def test_randomized_takes_any_integer_seed():
    x = _data()
    s, _ = _svd(x)
    for seed in (-1, 2**40):
        np.testing.assert_allclose(pca(x, 4, solver="randomized", seed=seed).singular_values, s[:4], rtol=1e-4)


@pytest.mark.parametrize("edit,match", [
    (lambda t, m: t.update(singular_values=t["singular_values"][:2]), r"singular_values has shape \(2,\).* needs \(3,\)"),
    (lambda t, m: t.update(scale=torch.ones(7)), r"scale has shape \(7,\).* needs \(50,\)"),
    (lambda t, m: m.update(n="1"), r"metadata n .* integer >= 2, got 1"),
    (lambda t, m: m.update(n="2.5"), r"metadata n .* integer >= 2, got 2.5"),
])
def test_a_subspace_file_with_a_spectrum_out_of_step_is_named(tmp_path, edit, match):
    """An edited or foreign subspace file loaded when its spectrum or scale had another length than its
    basis (they broadcast silently into every sample), or n < 2 (sigma = s / sqrt(n - 1) infinite)."""
    from safetensors.torch import load_file, save_file

    sub = _subspace(_data(20, 50), 3, standardize=True)
    sub.save(tmp_path / "sub")
    path = tmp_path / "sub" / "subspace.safetensors"
    from weightspace.space.store import read_metadata

    tensors, meta = load_file(path), dict(read_metadata(path))
    edit(tensors, meta)
    save_file(tensors, path, metadata=meta)
    with pytest.raises(InputError, match=match):
        Subspace.load(tmp_path / "sub")


def test_a_folder_of_another_kind_is_named_as_what_it_holds(tmp_path):
    """A population (or any other folder) given as a subspace was reported as 'SUB/subspace.safetensors: file not found'."""
    pop = tmp_path / "pop"
    pop.mkdir()
    (pop / "layout.json").write_text("{}")
    (pop / "config.json").write_text('{"kind": "population"}')
    with pytest.raises(InputError, match=r"pop: not a subspace folder \(no subspace.safetensors\); it holds a population"):
        Subspace.load(pop)
    with pytest.raises(InputError, match=r"not a subspace folder .*; `weightspace subspace fit` makes one"):
        Subspace.load(tmp_path)
