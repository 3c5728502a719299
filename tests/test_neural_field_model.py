"""The Generator protocol of NeuralFieldGenerator on a tiny seeded model: conditions, determinism,
chunking, weight swapping, batched decoding, weight views, code optimisation and checkpoints."""

import json

import numpy as np
import pytest
import torch

from weightspace.generators import MissingCapability, load_generator
from weightspace.generators.neural_field.batched import batched_sdf_grid
from weightspace.generators.neural_field.config import FieldConfig, TrainConfig
from weightspace.generators.neural_field.model import NeuralFieldGenerator
from weightspace.generators.neural_field.reconstruct import outside_queries, outside_region, reconstruct_codes
from weightspace.runtime.config import config_from_dict
from weightspace.runtime.errors import InputError

FAMS = ["torus", "mug", "shell"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny_generator(seed: int = 0, **kw) -> NeuralFieldGenerator:
    cfg = FieldConfig(n_codes=6, d_z=8, width=16, depth=3, skip=1, resolution=12, families=FAMS,
                      recon_steps=10, recon_restarts=2, recon_queries=64, chunk=300, **kw)
    torch.manual_seed(seed)
    gen = NeuralFieldGenerator(cfg)
    with torch.no_grad():  # undo the small output init so the random field has surfaces inside the clamp band
        gen.net.out.weight.mul_(10.0)
    gen.fit_code_priors(torch.tensor([0, 0, 1, 1, 2, 2]))
    gen.net.eval()
    return gen


@pytest.fixture(scope="module")
def gen():
    return tiny_generator()


def test_condition_kinds_and_errors(gen):
    assert gen.condition_shape == (8,)
    z = gen.condition(family=["torus", "shell"], seeds=[1, 2])
    assert z.shape == (2, 8)
    pts = torch.rand(2, 50, 3) * 2 - 1
    assert gen.condition(points=pts, seeds=[0, 1]).shape == (2, 8)
    with pytest.raises(InputError, match="exactly one"):
        gen.condition(family=["torus"], points=pts[:1])
    with pytest.raises(MissingCapability, match="lacks EncodesVoxels"):  # the field has no voxel encoder
        gen.condition(voxels=torch.zeros(1, 4, 4, 4))
    with pytest.raises(InputError, match="teapot"):
        gen.condition(family=["teapot"])
    with pytest.raises(InputError, match=r"\(B, P, 3\)"):
        gen.condition(points=torch.zeros(2, 4, 2))
    with pytest.raises(InputError, match="one seed per item"):
        gen.condition(family=["torus"], seeds=[1, 2])


def test_family_sampling_is_seeded_per_item(gen):
    a = gen.condition(family=["torus", "mug", "shell"], seeds=[4, 5, 6])
    b = gen.condition(family=["mug"], seeds=[5])
    c = gen.condition(family=["mug"], seeds=[7])
    assert torch.equal(a[1:2], b)  # the same seed gives the same code whatever the batch
    assert not torch.allclose(b, c)
    # codes of one family scatter around that family's fitted mean
    many = gen.condition(family=["shell"] * 400, seeds=list(range(400)))
    assert torch.allclose(many.mean(0), gen.net.family_mean[2], atol=0.1 * float(gen.net.family_chol[2].diag().max()) + 0.05)


def test_determinism_chunking_and_batch_independence(gen):
    z = gen.condition(family=["torus", "mug"], seeds=[1, 2])
    with torch.no_grad():
        a = gen.sdf_grid(z, [1, 2], adaptive=False)
        b = gen.sdf_grid(z, [1, 2], chunk=10**6, adaptive=False)  # one chunk
        solo = gen.sdf_grid(z[1:], [2], chunk=77, adaptive=False)
    assert a.shape == (2, 12, 12, 12) and a.dtype == torch.float32
    assert torch.allclose(a, b, atol=1e-6)  # chunked decoding equals unchunked
    assert torch.allclose(solo, a[1:], atol=1e-6)
    assert a.abs().max() <= gen.cfg.clamp + 1e-7  # truncated to the training clamp


def test_sdf_points_matches_grid_and_params_swap(gen):
    from weightspace.data.grid import grid_points

    z = gen.net.codes[:2].detach()
    pts = torch.from_numpy(grid_points(12)).reshape(1, -1, 3).expand(2, -1, -1)
    with torch.no_grad():
        grid = gen.sdf_grid(z, [0, 1])
        vals = gen.sdf_points(pts, z, [0, 1]).clamp(-gen.cfg.clamp, gen.cfg.clamp)
    assert torch.allclose(vals.reshape(2, 12, 12, 12), grid, atol=1e-6)
    w = gen.net.layers[1].weight
    new = (w.detach() * 1.5).requires_grad_(True)
    out = gen.sdf_points(pts[:, :64], z, [0, 1], params={"layers.1.weight": new})
    base = gen.sdf_points(pts[:, :64], z, [0, 1])
    assert not torch.allclose(out, base)
    out.sum().backward()
    assert new.grad is not None and new.grad.abs().sum() > 0
    assert torch.equal(gen.net.layers[1].weight, w)  # the base weights are untouched


def test_effective_weights_reproduce_the_code(gen):
    """The code acts only through the bias shifts it induces: zero code plus effective biases = the code."""
    z = gen.net.codes[:3].detach()
    eff = gen.effective_weights(z)
    assert set(eff) == {"layers.0.bias", "layers.1.bias"} and eff["layers.0.bias"].shape == (3, 16)
    pts = torch.rand(1, 40, 3) * 2 - 1
    for b in range(3):
        direct = gen.sdf_points(pts, z[b : b + 1], [0])
        swapped = gen.sdf_points(pts, torch.zeros(1, 8), [0], params={k: v[b] for k, v in eff.items()})
        assert torch.allclose(direct, swapped, atol=1e-5)


def test_batched_decoding_equals_loop(gen):
    K = 3
    g = torch.Generator().manual_seed(0)
    pb = {n: p.detach() + 0.05 * torch.randn((K, *p.shape), generator=g)
          for n, p in gen.net.named_parameters() if n.startswith(("layers.", "norms.0", "out."))}
    z = torch.randn(K, 8, generator=g)
    with torch.no_grad():
        loop = torch.cat([gen.sdf_grid(z[k : k + 1], [k], params={n: v[k] for n, v in pb.items()}) for k in range(K)])
        for method in ("grouped", "vmap", "loop", "loop_dense"):
            got = batched_sdf_grid(gen, pb, z, 12, method=method)
            assert torch.allclose(got, loop, atol=1e-5), method
        assert torch.allclose(gen.sdf_grid_batched(z, [0, 1, 2], pb), loop, atol=1e-5)
    with pytest.raises(InputError, match="expected shape"):
        batched_sdf_grid(gen, {"out.bias": torch.zeros(2, 1)}, z, 12)
    with pytest.raises(InputError, match="not a parameter"):
        batched_sdf_grid(gen, {"nope": torch.zeros(3, 1)}, z, 12)


def test_training_loss_is_seeded_and_differentiable(gen):
    grids = gen.sdf_grid(gen.net.codes[:2].detach(), [0, 1]).detach()
    z = gen.net.codes[:2].detach().clone().requires_grad_(True)
    a = gen.training_loss(grids, z, [3, 4])
    assert torch.equal(a, gen.training_loss(grids, z, [3, 4]))
    a.backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    # the grids were decoded from these very codes, so the loss is small next to a wrong code's
    assert float(a.detach()) < float(gen.training_loss(grids, z.detach().flip(0) + 1.0, [3, 4]).detach())


def test_code_optimisation_reduces_the_loss():
    gen = tiny_generator(seed=1)
    target = gen.net.codes[3:4].detach() + 0.3
    with torch.no_grad():
        # surface points of the target shape: grid vertices where its field is near zero
        from weightspace.data.grid import grid_points

        x = torch.from_numpy(grid_points(24)).reshape(1, -1, 3)
        v = gen.sdf_points(x, target, [0])[0]
        pts = x[:, v.abs().argsort()[:200]]  # (1, 200, 3)
    losses = []
    net = gen.net
    reconstruct_codes(lambda a, b: net(a, b), pts, seeds=[0], candidates=net.codes.detach(), prior_mean=net.global_mean,
                      prior_chol=net.global_chol, steps=40, lr=0.02, restarts=2, prior_weight=1e-3, free_weight=1.0,
                      clamp=gen.cfg.clamp, n_queries=128, callback=lambda step, loss: losses.append(float(loss.min())))
    assert len(losses) == 40
    assert losses[-1] < 0.8 * losses[0]

    # explore: 2 + 3 starts per item, pruned to the 2 with the lowest loss after a fifth of the steps
    shapes = []
    z = reconstruct_codes(lambda a, b: net(a, b), pts.expand(2, -1, -1), seeds=[0, 1], candidates=net.codes.detach(),
                          prior_mean=net.global_mean, prior_chol=net.global_chol, steps=40, lr=0.02, restarts=2,
                          explore=3, prior_weight=1e-3, free_weight=1.0, clamp=gen.cfg.clamp, n_queries=128,
                          callback=lambda step, loss: shapes.append((step, tuple(loss.shape))))
    assert z.shape == (2, gen.cfg.d_z)
    assert [sh for st, sh in shapes if st <= 8] == [(2, 5)] * 9 and [sh for st, sh in shapes if st > 8] == [(2, 2)] * 31


def _sphere_cloud(n: int, radius: float, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, 3))
    return radius * v / np.linalg.norm(v, axis=1, keepdims=True)  # (n, 3) on the sphere


def test_outside_region_labels_only_outside_and_only_closed_clouds():
    cloud = _sphere_cloud(2048, 0.6)
    outside, dist, closed = outside_region(cloud)
    R = outside.shape[0]
    axis = np.linspace(-1, 1, R)
    r = np.linalg.norm(np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1), axis=-1)  # (R, R, R)
    assert closed
    assert outside.any() and not (outside & (r < 0.6)).any()  # nothing inside the sphere is called outside
    assert outside[r > 0.85].all()  # the far field is
    assert (dist >= np.abs(r - 0.6) - 1e-4).all() and (dist <= np.abs(r - 0.6) + 0.1).all()  # distance to the cloud
    # a hollow shell (two concentric spheres): its cavity is enclosed, yet never labelled inside or outside
    shell = np.concatenate([cloud, _sphere_cloud(2048, 0.3, seed=1)])
    outside, _, closed = outside_region(shell)
    assert closed and not (outside & (r < 0.6)).any()
    # an open cap (a one-sided scan): the fill runs round it, so nothing is labelled
    cap = cloud[cloud[:, 2] > 0.2]
    outside, _, closed = outside_region(cap)
    assert not closed and not outside.any()


def test_outside_queries_are_seeded_outside_and_masked():
    closed = torch.from_numpy(_sphere_cloud(2048, 0.6)).float()
    cap = closed[closed[:, 2] > 0.2][:600]
    pts = torch.stack([closed[:600], cap])  # (2, 600, 3)
    q, d, mask = outside_queries(pts, [3, 4], 64, band=0.2)
    assert q.shape == (2, 64, 3) and d.shape == (2, 64) and mask.tolist() == [1.0, 0.0]
    radius = q[0].norm(dim=-1)
    assert (radius > 0.6 + 0.5 * float(d[0].min())).all() and (radius < 1.1).all()  # outside, near the sphere
    assert torch.allclose(d[0], (radius - 0.6).abs(), atol=0.03)
    q2, _, _ = outside_queries(pts, [3, 4], 64, band=0.2)
    assert torch.equal(q, q2)


def test_outside_term_turns_a_sign_flipped_code_right():
    """On a field whose code flips the sign of a sphere, the unsigned terms alone are indifferent
    between the two codes; with the outside term the code with the sphere's true sign wins."""
    from weightspace.generators.neural_field.reconstruct import outside_term

    def field(x, z):  # z (B, 1) = +1 a solid sphere of radius 0.6, -1 its inverse
        return z * (x.norm(dim=-1) - 0.6)

    cloud = torch.from_numpy(_sphere_cloud(2048, 0.6)).float()[None]
    q, d, mask = outside_queries(cloud, [0], 256, band=0.2)
    right, flipped = torch.ones(1, 1), -torch.ones(1, 1)
    assert float(outside_term(field, q, d, right, 0.1)) < 1e-3  # only where the cloud is sparser than the sphere
    assert float(outside_term(field, q, d, flipped, 0.1)) > 0.05
    assert mask.item() == 1.0


def test_effective_module_groups_match_parameters(gen):
    names = [n for n, _ in gen.net.named_parameters()]
    for group, prefixes in gen.module_groups().items():
        for p in prefixes:
            assert any(n == p or n.startswith(p + ".") for n in names), (group, p)


def test_save_load_roundtrip(gen, tmp_path):
    gen.save(tmp_path / "ck", extra_config={"note": "x"})
    back = load_generator(tmp_path / "ck")
    assert isinstance(back, NeuralFieldGenerator) and back.config["note"] == "x"
    z = gen.condition(family=["mug"], seeds=[3])
    assert torch.equal(back.condition(family=["mug"], seeds=[3]), z)
    with torch.no_grad():
        assert torch.equal(back.sdf_grid(z, [3]), gen.sdf_grid(z, [3]))


def test_wrong_config_and_truncated_weights(gen, tmp_path):
    folder = gen.save(tmp_path / "ck")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model"]["width"] = 32
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="layers.0.weight"):
        load_generator(folder)
    cfg["model"]["width"] = "wide"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="width"):
        load_generator(folder)
    cfg["model"]["width"] = 16
    cfg["model"]["colour"] = 1
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="colour"):
        load_generator(folder)
    gen.save(folder)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="model.safetensors"):
        load_generator(folder)


def test_config_validation_names_fields():
    with pytest.raises(InputError, match="skip"):
        config_from_dict(FieldConfig, {"depth": 3, "skip": 3}, where="model")
    with pytest.raises(InputError, match="train.lr"):
        config_from_dict(TrainConfig, {"lr": "fast"}, where="train")
    with pytest.raises(InputError, match="unknown field"):
        config_from_dict(TrainConfig, {"epochs": 3}, where="train")
    assert config_from_dict(TrainConfig, {"lr": 1}, where="train").lr == 1.0
    with pytest.raises(InputError, match="model.recon_explore: must be >= 0"):
        config_from_dict(FieldConfig, {"recon_explore": -1}, where="model")
    with pytest.raises(InputError, match="model.recon_outside_weight: must be >= 0"):
        config_from_dict(FieldConfig, {"recon_outside_weight": -0.5}, where="model")


def test_differentiable_decode_matches_direct_gradients(gen):
    """The checkpointed chunked decode gives the same gradients as one direct evaluation."""
    from weightspace.data.grid import grid_points

    z = gen.net.codes[:1].detach().clone().requires_grad_(True)
    grid = gen.sdf_grid(z, [0])  # chunked, recomputed in backward
    (g1,) = torch.autograd.grad(grid.pow(2).sum(), [z])
    z2 = z.detach().clone().requires_grad_(True)
    pts = torch.from_numpy(grid_points(12)).reshape(1, -1, 3)
    direct = gen.net(pts, z2).clamp(-gen.cfg.clamp, gen.cfg.clamp)
    (g2,) = torch.autograd.grad(direct.pow(2).sum(), [z2])
    assert torch.allclose(g1, g2, atol=1e-5, rtol=1e-4)


def test_adaptive_decode_equals_dense_for_a_true_sdf():
    """Coarse to fine is exact for a 1-Lipschitz field: a torus SDF through the same decoder."""
    from weightspace.data.grid import grid_points
    from weightspace.generators.neural_field.decode import adaptive_grid

    def torus(x, z):  # (1, P, 3) -> (1, P); z (1, 2) holds the radii
        q = torch.stack([torch.linalg.norm(x[..., :2], dim=-1) - z[:, :1], x[..., 2]], -1)
        return torch.linalg.norm(q, dim=-1) - z[:, 1:]

    z = torch.tensor([[0.5, 0.15]])
    for R in (17, 40):
        dense = torus(torch.from_numpy(grid_points(R)).reshape(1, -1, 3), z).clamp(-0.1, 0.1).reshape(1, R, R, R)
        fast = adaptive_grid(torus, z, R, clamp=0.1, chunk=500)
        assert torch.allclose(fast, dense, atol=1e-6)


def test_adaptive_decode_of_the_generator(gen):
    z = gen.condition(family=["torus", "mug"], seeds=[1, 2])
    with torch.no_grad():
        dense = gen.sdf_grid(z, [1, 2], resolution=20, adaptive=False)
        fast = gen.sdf_grid(z, [1, 2], resolution=20)  # the default under no_grad
    near = dense.abs() < gen.cfg.clamp  # where the field is inside the band the fast path evaluated f exactly
    assert torch.allclose(fast[near], dense[near], atol=1e-6)
    assert ((fast < 0) == (dense < 0)).float().mean() > 0.99


def test_observation_loss_does_not_reward_a_field_that_is_zero_everywhere():
    """Fitting to points with |f| at the points alone is met by f = 0 everywhere (members decoded near-empty,
    IoU 0.05 on default-field); the field's own loss also asks free space to sit at its distance from the cloud."""
    from weightspace.generators.neural_field.config import FieldConfig
    from weightspace.generators.neural_field.model import NeuralFieldGenerator
    from weightspace.generators.protocol import Generator

    gen = NeuralFieldGenerator(FieldConfig(d_z=8, width=16, depth=3, skip=1, n_codes=2, families=["torus"], recon_queries=256))
    zero = {n: torch.zeros_like(p) if n.startswith("out.") else p for n, p in gen.net.named_parameters()}
    u = torch.linspace(0, 2 * np.pi, 40)
    ring = torch.stack(torch.meshgrid(u, u, indexing="ij"), -1).reshape(-1, 2)
    pts = torch.stack([(0.5 + 0.2 * ring[:, 1].cos()) * ring[:, 0].cos(), (0.5 + 0.2 * ring[:, 1].cos()) * ring[:, 0].sin(),
                       0.2 * ring[:, 1].sin()], -1)[None]  # (1, 1600, 3) a torus's surface
    cond = torch.zeros(1, 8)
    with torch.no_grad():
        assert float(Generator.observation_loss(gen, pts, cond, [0], params=zero)) == 0.0  # the protocol default's hole
        assert float(gen.observation_loss(pts, cond, [0], params=zero)) > 0.02
