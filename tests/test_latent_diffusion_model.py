"""The Generator protocol of LatentDiffusionGenerator on a tiny seeded random model: determinism,
batch independence, weight swapping, point queries, weight views, and checkpoint round trips."""

import json

import pytest
import torch

from weightspace.generators import load_generator
from weightspace.generators.latent_diffusion.config import ModelConfig, TrainConfig
from weightspace.generators.latent_diffusion.model import LatentDiffusionGenerator
from weightspace.runtime.config import config_from_dict
from weightspace.runtime.errors import InputError

FAMS = ["torus", "mug", "shell"]


def tiny_generator(seed: int = 0, layout: str = "grid", self_condition: bool = False, prediction: str = "x0",
                   refine: int = 0) -> LatentDiffusionGenerator:
    cfg = ModelConfig(resolution=16, ae_channels=[8, 16], latent_channels=2, patch=2, width=32, depth=2, heads=2,
                      cond_layout=layout, cond_tokens=3 if layout == "pooled" else 0, cond_dim=8, families=FAMS,
                      timesteps=100, sample_steps=4, guidance=2.0, self_condition=self_condition,
                      prediction=prediction, refine=refine)
    torch.manual_seed(seed)
    gen = LatentDiffusionGenerator(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # move every weight off its initial value so zero-initialised layers matter
        for p in gen.net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    gen.net.eval()
    return gen


@pytest.fixture(scope="module", params=["grid", "pooled"])
def gen(request):
    return tiny_generator(layout=request.param)


def test_condition_kinds_and_errors(gen):
    M = 3 if gen.cfg.cond_layout == "pooled" else 8  # grid: one token per latent token, (16 / 4 / 2)^3
    assert gen.condition_shape == (M, 8)
    assert gen.condition(family=["torus", "shell"]).shape == (2, M, 8)  # (B, M, d)
    assert gen.condition(points=torch.rand(2, 40, 3) * 2 - 1).shape == (2, M, 8)
    assert gen.condition(voxels=(torch.rand(2, 8, 8, 8) > 0.5).float()).shape == (2, M, 8)
    with pytest.raises(InputError, match="exactly one"):
        gen.condition(family=["torus"], points=torch.zeros(1, 4, 3))
    with pytest.raises(InputError, match="knows"):
        gen.condition(family=["teapot"])
    with pytest.raises(InputError, match=r"\(B, P, 3\)"):
        gen.condition(points=torch.zeros(2, 4, 2))
    with pytest.raises(InputError, match="voxels"):
        gen.condition(voxels=torch.zeros(2, 4, 4, 5))


def test_determinism_and_batch_independence(gen):
    with torch.no_grad():
        c = gen.condition(family=["torus", "mug", "shell"])
        a = gen.sdf_grid(c, [5, 6, 7])  # (B, R, R, R)
        b = gen.sdf_grid(c, [5, 6, 7])
        solo = gen.sdf_grid(c[1:2], [6])
        other_seed = gen.sdf_grid(c[1:2], [8])
    assert a.shape == (3, 16, 16, 16) and a.dtype == torch.float32
    assert torch.equal(a, b)  # same checkpoint, condition and seed: identical grid
    assert torch.allclose(solo, a[1:2], atol=1e-5)  # independent of the batch it is in
    assert not torch.allclose(other_seed, solo)  # the seed matters
    assert a.abs().max() <= gen.cfg.truncation + 1e-6


def test_params_swap_and_differentiability(gen):
    c = gen.condition(family=["torus"]).detach().requires_grad_(True)
    base = {n: p for n, p in gen.net.named_parameters()}
    same = gen.sdf_grid(c, [1], params=base)
    plain = gen.sdf_grid(c, [1])
    assert torch.allclose(same, plain)
    name = "ae.decoder.stem.weight"
    changed = gen.sdf_grid(c, [1], params={name: base[name] * 0.5})
    assert not torch.allclose(changed, plain)
    assert torch.equal(gen.net.get_parameter(name), base[name])  # base weights untouched
    w = base["denoiser.blocks.0.cross_attn.k.weight"].detach().clone().requires_grad_(True)
    out = gen.sdf_grid(c, [1], params={"denoiser.blocks.0.cross_attn.k.weight": w})
    out.sum().backward()
    assert c.grad is not None and c.grad.abs().sum() > 0
    assert w.grad is not None and w.grad.abs().sum() > 0


def test_sdf_points_matches_grid_vertices(gen):
    with torch.no_grad():
        c = gen.condition(family=["mug", "shell"])
        grid = gen.sdf_grid(c, [3, 4])  # (B, R, R, R) indexed [x, y, z]
        R = grid.shape[-1]
        lin = torch.linspace(-1, 1, R)
        ijk = torch.tensor([[0, 5, 9], [15, 2, 7], [3, 3, 12]])  # (P, 3) vertex indices
        pts = lin[ijk].unsqueeze(0).expand(2, -1, -1)  # (B, P, 3) world coordinates
        vals = gen.sdf_points(pts, c, [3, 4])  # (B, P)
    expected = torch.stack([grid[b, ijk[:, 0], ijk[:, 1], ijk[:, 2]] for b in range(2)])
    assert torch.allclose(vals, expected, atol=1e-5)
    assert gen.observation_loss(pts, c, [3, 4]).ndim == 0


def test_training_loss_is_seeded_and_differentiable(gen):
    grids = torch.randn(2, 16, 16, 16) * 0.1
    c = gen.condition(family=["torus", "mug"])
    l1 = gen.training_loss(grids, c, [0, 1])
    l2 = gen.training_loss(grids, c, [0, 1])
    assert l1.ndim == 0 and torch.equal(l1, l2)
    l1.backward()
    assert gen.net.denoiser.final.weight.grad is not None
    gen.net.zero_grad(set_to_none=True)
    with pytest.raises(InputError):
        gen.training_loss(torch.zeros(2, 8, 8, 8), c, [0, 1])


def test_effective_weights_and_module_groups(gen):
    c = gen.condition(family=["torus", "mug"])
    ew = gen.effective_weights(c)
    W, S, M = gen.cfg.width, gen.cfg.sample_steps, gen.cfg.n_cond_tokens
    assert ew["denoiser.blocks.0.adaln"].shape == (2, S, 9 * W)
    assert ew["denoiser.blocks.1.cross_attn.k"].shape == (2, M, W)
    assert ew["denoiser.blocks.1.cross_attn.v"].shape == (2, M, W)
    assert all(v.shape[0] == 2 for v in ew.values())
    names = [n for n, _ in gen.net.named_parameters()]
    groups = gen.module_groups()
    for group, prefixes in groups.items():
        assert any(n.startswith(p) for p in prefixes for n in names), group
    covered = {n for n in names for ps in groups.values() for p in ps if n.startswith(p)}
    assert covered == set(names)  # every parameter belongs to some group


def test_save_load_roundtrip(gen, tmp_path):
    gen.save(tmp_path / "ck", extra_config={"note": "test"})
    loaded = load_generator(tmp_path / "ck")
    assert isinstance(loaded, LatentDiffusionGenerator) and loaded.config["note"] == "test"
    with torch.no_grad():
        c = gen.condition(family=["shell"])
        assert torch.equal(gen.sdf_grid(c, [2]), loaded.sdf_grid(loaded.condition(family=["shell"]), [2]))


def test_wrong_config_and_truncated_weights(gen, tmp_path):
    folder = gen.save(tmp_path / "ck")
    cfg = json.loads((folder / "config.json").read_text())
    bad = dict(cfg, model=dict(cfg["model"], width=64))
    (folder / "config.json").write_text(json.dumps(bad))
    with pytest.raises(InputError, match="shape"):
        load_generator(folder)
    (folder / "config.json").write_text(json.dumps(dict(cfg, model=dict(cfg["model"], front="fourier"))))
    with pytest.raises(InputError, match="front"):
        load_generator(folder)
    (folder / "config.json").write_text(json.dumps(dict(cfg, model=dict(cfg["model"], colour=1))))
    with pytest.raises(InputError, match="colour"):
        load_generator(folder)
    (folder / "config.json").write_text(json.dumps(dict(cfg, model=dict(cfg["model"], depth="4"))))
    with pytest.raises(InputError, match="depth") as bad:
        load_generator(folder)
    assert str(bad.value).startswith(f"{folder}/config.json")  # named by its folder, not a bare config.json
    (folder / "config.json").write_text(json.dumps(cfg))
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="model.safetensors"):
        load_generator(folder)


def test_config_validation_names_fields():
    with pytest.raises(InputError, match="train.minutes"):
        config_from_dict(TrainConfig, {"minutes": -1}, where="train")
    with pytest.raises(InputError, match="unknown field"):
        config_from_dict(TrainConfig, {"epochs": 3}, where="train")
    with pytest.raises(InputError, match="model.resolution"):
        config_from_dict(ModelConfig, {"resolution": 30}, where="model")
    with pytest.raises(InputError, match="model.sampler"):
        config_from_dict(ModelConfig, {"sampler": "euler"}, where="model")
    assert config_from_dict(TrainConfig, {"minutes": 2}, where="train").minutes == 2.0


@pytest.mark.parametrize("field, value", [("patch", 0), ("heads", 0), ("patch", -1), ("timesteps", 0), ("width", 0),
                                          ("cond_tokens", -3), ("cond_tokens", 5), ("cond_layout", "spatial"), ("guidance", -1.0)])
def test_model_config_rejects_bad_sizes_naming_the_field(field, value):
    """Zero sizes once divided by zero inside validation; every bad size now names its field."""
    with pytest.raises(InputError, match=f"model.{field}"):
        config_from_dict(ModelConfig, {field: value}, where="model")


@pytest.mark.parametrize("field", ["ae_steps", "diffusion_steps", "near_surface_weight", "sign_weight", "point_sigma_max"])
def test_train_config_rejects_negative_counts_and_weights(field):
    with pytest.raises(InputError, match=f"train.{field}"):
        config_from_dict(TrainConfig, {field: -1 if "steps" in field else -1.0}, where="train")


def test_checkpoints_saved_before_condition_layouts_load_as_pooled(tmp_path):
    """A config.json without `cond_layout` (the first shipped checkpoint's) is the pooled layout, weights and all."""
    from weightspace.runtime.checkpoint import save_checkpoint

    gen = tiny_generator(layout="pooled")
    config = json.loads(json.dumps(gen.config))
    del config["model"]["cond_layout"]
    save_checkpoint(tmp_path / "ck", gen.net.state_dict(), config)  # config.json and the copy in the weights lack the field
    loaded = load_generator(tmp_path / "ck")
    assert loaded.cfg.cond_layout == "pooled" and loaded.condition_shape == gen.condition_shape
    c = gen.condition(family=["mug"])
    torch.testing.assert_close(loaded.sdf_grid(loaded.condition(family=["mug"]), [3]), gen.sdf_grid(c, [3]))


def test_grid_token_count_follows_the_resolution_it_is_trained_at():
    """The CLI validates the config before the trainer sets the data's resolution: the count must not be fixed early."""
    import dataclasses

    cfg = config_from_dict(ModelConfig, {}, where="model")  # as `train latent-diffusion --config` reads a file without model fields
    assert cfg.cond_tokens == 0 and cfg.n_cond_tokens == (32 // 4 // 2) ** 3
    small = dataclasses.replace(cfg, resolution=16).validate()
    assert small.n_cond_tokens == (16 // 4 // 2) ** 3
    assert config_from_dict(ModelConfig, {"cond_layout": "pooled"}, where="model").n_cond_tokens == 8


@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_self_conditioned_sampling_feeds_each_branch_its_previous_estimate(guidance):
    gen = tiny_generator(self_condition=True)
    den = gen.net.denoiser
    calls = []
    hook = den.register_forward_hook(lambda m, args, out: calls.append((len(args), args[3] if len(args) > 3 else None, out)))
    c = gen.condition(family=["torus", "mug"])
    with torch.no_grad():
        z = gen.sample_latents(c, [0, 1], guidance=guidance)
        again = gen.sample_latents(c, [0, 1], guidance=guidance)
    hook.remove()
    assert torch.equal(z, again)  # seeded and stateless across calls
    steps = gen.cfg.sample_steps
    first, rest = calls[0], calls[1:steps]
    assert first[0] == 3  # no estimate before the first step
    for (n, prev, _), (_, _, before) in zip(rest, calls[:steps - 1]):
        assert n == 4 and torch.equal(prev, before)  # each step reads the raw (unguided) output of the one before
    assert calls[steps][0] == 3  # the second sampling starts afresh
    # the estimate matters: without it (the same weights, option off) the samples differ
    plain = tiny_generator(self_condition=False)
    plain.net.load_state_dict({k: v for k, v in gen.net.state_dict().items() if "self_cond_in" not in k})
    with torch.no_grad():
        assert not torch.allclose(plain.sample_latents(plain.condition(family=["torus", "mug"]), [0, 1], guidance=guidance), z)


def test_self_conditioned_training_loss_trains_the_estimate_path():
    gen = tiny_generator(self_condition=True)
    grids = torch.randn(2, 16, 16, 16) * 0.1
    c = gen.condition(family=["torus", "mug"])
    loss = gen.training_loss(grids, c, [0, 1])
    assert torch.equal(loss, gen.training_loss(grids, c, [0, 1]))
    loss.backward()
    assert gen.net.denoiser.self_cond_in.weight.grad.abs().sum() > 0
    gen.net.zero_grad(set_to_none=True)


def test_checkpoints_saved_before_self_conditioning_load_without_it(tmp_path):
    gen = tiny_generator()
    gen.save(tmp_path / "ck")
    raw = json.loads((tmp_path / "ck" / "config.json").read_text())
    del raw["model"]["self_condition"]
    (tmp_path / "ck" / "config.json").write_text(json.dumps(raw))
    loaded = load_generator(tmp_path / "ck")
    assert loaded.cfg.self_condition is False and loaded.net.denoiser.self_cond_in is None


def test_v_prediction_returns_x0_and_recovers_it_from_the_true_v():
    from weightspace.generators.latent_diffusion.schedule import q_sample

    gen = tiny_generator(prediction="v")
    net = gen.net
    z0, noise, t = torch.randn(3, 2, 4, 4, 4), torch.randn(3, 2, 4, 4, 4), torch.tensor([0, 40, 99])
    z_t = q_sample(z0, t, noise, net.alphas_cumprod)
    ab = net.alphas_cumprod[t].view(-1, 1, 1, 1, 1)
    v = ab.sqrt() * noise - (1 - ab).sqrt() * z0  # the v target (Salimans & Ho 2022)
    torch.testing.assert_close(net.x0_from_output(v, z_t, t), z0, rtol=1e-4, atol=1e-4)
    c = gen.condition(family=["torus", "mug", "shell"])
    with torch.no_grad():
        raw = net.denoiser(z_t, t, c)
        torch.testing.assert_close(net("denoise", z_t, t, c), ab.sqrt() * z_t - (1 - ab).sqrt() * raw)
    plain = tiny_generator(prediction="x0")
    with torch.no_grad():
        torch.testing.assert_close(plain.net("denoise", z_t, t, c), plain.net.denoiser(z_t, t, c))  # x0: the output itself


@pytest.mark.parametrize("self_condition", [False, True])
def test_guidance_schedule_is_a_function_of_the_step(self_condition):
    gen = tiny_generator(self_condition=self_condition)
    c = gen.condition(family=["torus", "mug"])
    x_T, _ = gen.start_noise([0, 1])
    ts = torch.tensor([99, 66, 33, 0])

    def run(guidance):
        from weightspace.generators.latent_diffusion.samplers import sample_ddim

        with torch.no_grad():
            return sample_ddim(gen.guided_denoiser(c, guidance=guidance), x_T, ts, gen.net.alphas_cumprod)

    assert torch.equal(run(lambda t: 2.0), run(2.0))  # a constant schedule is the constant
    assert torch.allclose(run(lambda t: 1.0), run(1.0), atol=1e-5)  # both branches at w = 1 give the conditioned one
    seen = []
    interval = run(lambda t: seen.append(t) or (4.0 if t >= 50 else 2.0))
    assert seen == ts.tolist() and not torch.allclose(interval, run(2.0))
