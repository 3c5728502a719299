"""Shapes of every latent diffusion module, the Haar transform, the schedule, and pinned sampler values."""

import math

import pytest
import torch

from weightspace.generators.latent_diffusion.autoencoder import ShapeAutoencoder
from weightspace.generators.latent_diffusion.conditioning import (
    AttentionPool,
    GridPointEncoder,
    PointEncoder,
    VoxelEncoder,
    fourier_features,
    scatter_to_grid,
)
from weightspace.generators.latent_diffusion.denoiser import Denoiser, timestep_embedding
from weightspace.generators.latent_diffusion.haar import haar3d, ihaar3d
from weightspace.generators.latent_diffusion.losses import diffusion_loss, snr_weights, voxels_from_grids
from weightspace.generators.latent_diffusion.samplers import get_sampler, sample_ddim, sample_ddpm, sample_eta
from weightspace.generators.latent_diffusion.schedule import cosine_alphas_cumprod, ddim_timesteps, q_sample
from weightspace.runtime.errors import InputError


def test_haar_is_orthonormal_and_invertible():
    x = torch.randn(2, 3, 8, 8, 8, generator=torch.Generator().manual_seed(0))  # (B, C, D, D, D)
    y = haar3d(x)  # (B, 8C, 4, 4, 4)
    assert y.shape == (2, 24, 4, 4, 4)
    assert torch.allclose(ihaar3d(y), x, atol=1e-5)
    assert torch.allclose(y.pow(2).sum(), x.pow(2).sum(), rtol=1e-5)  # energy preserved
    # the low-pass band of a constant grid is the constant times 2^(3/2); details vanish
    c = haar3d(torch.ones(1, 1, 2, 2, 2))  # (1, 8, 1, 1, 1)
    assert c[0, 0].item() == pytest.approx(2 ** 1.5, rel=1e-6)
    assert c[0, 1:].abs().max().item() < 1e-6
    with pytest.raises(ValueError):
        haar3d(torch.zeros(1, 1, 3, 4, 4))


@pytest.mark.parametrize("front,blocks", [("haar", 1), ("plain", 1), ("haar", 3)])
def test_autoencoder_shapes(front, blocks):
    ae = ShapeAutoencoder(front=front, channels=(8, 16), latent_channels=3, blocks=blocks)
    # one block keeps the layout of every checkpoint saved before `ae_blocks` (no `more` keys)
    assert any(".more." in k for k in ae.state_dict()) == (blocks > 1)
    x = torch.randn(2, 16, 16, 16)  # (B, R, R, R)
    z = ae.encode(x)  # (B, C, R/4, R/4, R/4)
    assert z.shape == (2, 3, 4, 4, 4)
    y = ae.decode(z)  # (B, R, R, R)
    assert y.shape == (2, 16, 16, 16)
    y.sum().backward()
    assert all(p.grad is not None for p in ae.parameters())


def test_condition_encoders_shapes():
    assert fourier_features(torch.zeros(5, 7, 3), 2).shape == (5, 7, 15)
    pool = AttentionPool(feat_dim=16, n_tokens=3, token_dim=8, heads=2)
    assert pool(torch.randn(2, 11, 16)).shape == (2, 3, 8)  # (B, M, d)
    pe = PointEncoder(n_tokens=4, token_dim=8, width=16)
    assert pe(torch.rand(2, 50, 3)).shape == (2, 4, 8)  # (B, M, d)
    ve = VoxelEncoder(n_tokens=4, token_dim=8, width=16)
    for V in (8, 16):
        assert ve((torch.rand(3, V, V, V) > 0.5).float()).shape == (3, 4, 8)  # (B, M, d)


def test_grid_condition_encoders_shapes():
    pe = GridPointEncoder(cells=2, token_dim=8, grid=8, width=16)
    assert pe(torch.rand(2, 50, 3) * 2 - 1).shape == (2, 8, 8)  # (B, n^3, d)
    ve = VoxelEncoder(n_tokens=8, token_dim=8, width=16, cells=2)
    for V in (8, 16):
        assert ve((torch.rand(3, V, V, V) > 0.5).float()).shape == (3, 8, 8)  # (B, n^3, d)
    den = Denoiser(latent_channels=2, latent_res=4, patch=2, width=32, depth=1, heads=2, cond_dim=8, cond_add=True)
    assert den(torch.randn(2, 2, 4, 4, 4), torch.tensor([1, 9]), pe(torch.rand(2, 50, 3))).shape == (2, 2, 4, 4, 4)


@pytest.mark.parametrize("resolution, patch", [(16, 2), (32, 2), (48, 2), (64, 1)])
def test_grid_layout_gives_one_token_per_latent_token_at_any_resolution(resolution, patch):
    from weightspace.generators.latent_diffusion.config import ModelConfig
    from weightspace.generators.latent_diffusion.network import LatentDiffusionNet

    cfg = ModelConfig(resolution=resolution, patch=patch, ae_channels=[8, 8], latent_channels=2, width=16, depth=1, heads=1,
                      cond_dim=8, families=["a"]).validate()
    net = LatentDiffusionNet(cfg)
    M = (resolution // 4 // patch) ** 3
    assert cfg.n_cond_tokens == M
    assert net("points", torch.rand(2, 64, 3) * 2 - 1).shape == (2, M, 8)
    assert net("voxels", (torch.rand(2, 8, 8, 8) > 0.5).float()).shape == (2, M, 8)


def test_scattered_points_land_in_the_cells_of_the_voxels_they_bound():
    """Points on a small ball fall in the coarse cells the ball's grid occupies (same axis order as the grids)."""
    R, G = 32, 8
    c = torch.linspace(-1, 1, R)
    x, y, z = torch.meshgrid(c, c, c, indexing="ij")
    centre = torch.tensor([0.55, -0.6, 0.3])
    sdf = ((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2).sqrt() - 0.2  # (R, R, R)
    occ = voxels_from_grids(sdf.unsqueeze(0), G)[0] > 0  # (G, G, G) lattice points inside
    d = torch.nn.functional.normalize(torch.randn(400, 3, generator=torch.Generator().manual_seed(0)), dim=1)
    pts = (centre + 0.2 * d).unsqueeze(0)  # (1, P, 3) on the ball's surface
    vol = scatter_to_grid(pts, torch.ones(1, 400, 2), G)  # (1, 3, G, G, G)
    hit = vol[0, -1] > 0  # (G, G, G)
    expected = (centre + 1) * G / 2 - 0.5  # the ball's centre in cell-index units: (5.7, 1.1, 4.7)
    assert hit.sum() < 30
    assert hit.nonzero().float().mean(0).sub(expected).abs().max() < 0.4
    # every lattice point inside the ball sits at a corner of a hit cell
    for i, j, k in occ.nonzero().tolist():
        assert hit[max(i - 1, 0):i + 1, max(j - 1, 0):j + 1, max(k - 1, 0):k + 1].any()
    torch.testing.assert_close(vol[0, 0][hit], torch.ones(int(hit.sum())))  # the mean of ones is one


def test_denoiser_shapes_and_patchify_roundtrip():
    den = Denoiser(latent_channels=2, latent_res=4, patch=2, width=32, depth=2, heads=2, cond_dim=8)
    z = torch.randn(3, 2, 4, 4, 4)  # (B, C, r, r, r)
    tokens = den.patchify(z)  # (B, T, C p^3)
    assert tokens.shape == (3, 8, 16)
    assert torch.equal(den.unpatchify(tokens), z)
    out = den(z, torch.tensor([0, 5, 99]), torch.randn(3, 5, 8))  # (B, C, r, r, r)
    assert out.shape == z.shape
    assert torch.count_nonzero(out) == 0  # adaLN-Zero: the final layer starts at zero
    assert timestep_embedding(torch.tensor([0, 1]), 6).shape == (2, 6)


def test_self_conditioned_denoiser_starts_as_the_plain_one():
    torch.manual_seed(0)
    plain = Denoiser(latent_channels=2, latent_res=4, patch=2, width=32, depth=2, heads=2, cond_dim=8)
    torch.manual_seed(0)
    sc = Denoiser(latent_channels=2, latent_res=4, patch=2, width=32, depth=2, heads=2, cond_dim=8, self_condition=True)
    with torch.no_grad():
        for p in list(plain.parameters()):
            p.add_(0.05 * torch.randn_like(p))
        sc.load_state_dict({**plain.state_dict(), **{k: v for k, v in sc.state_dict().items() if "self_cond_in" in k}})
    z, t, c, prev = torch.randn(3, 2, 4, 4, 4), torch.tensor([0, 5, 99]), torch.randn(3, 5, 8), torch.randn(3, 2, 4, 4, 4)
    with torch.no_grad():
        out = plain(z, t, c)
        torch.testing.assert_close(sc(z, t, c, prev), out)  # zero projection: the estimate adds nothing yet
        torch.testing.assert_close(sc(z, t, c), out)
        sc.self_cond_in.weight.normal_(0, 0.1)
        assert not torch.allclose(sc(z, t, c, prev), out)
        torch.testing.assert_close(sc(z, t, c), out)  # no estimate: the plain call


def test_cosine_schedule_properties():
    ab = cosine_alphas_cumprod(1000)  # (T,)
    assert ab.shape == (1000,)
    assert torch.all(ab[1:] < ab[:-1])  # strictly decreasing
    assert 0.999 < ab[0].item() < 1.0 and ab[-1].item() < 1e-3
    # the closed form at the middle: cos^2(((0.5 + s) / (1 + s)) pi / 2) / cos^2(s / (1 + s) pi / 2)
    s = 0.008
    f = lambda t: math.cos(((t + s) / (1 + s)) * math.pi / 2) ** 2
    assert ab[499].item() == pytest.approx(f(0.5) / f(0.0), rel=1e-6)
    ts = ddim_timesteps(1000, 16)
    assert ts[0].item() == 999 and ts[-1].item() == 0 and len(ts) == 16
    with pytest.raises(ValueError):
        ddim_timesteps(10, 11)
    x0, noise = torch.ones(2, 3), torch.zeros(2, 3)
    assert torch.allclose(q_sample(x0, torch.tensor([0, 999]), noise, ab), ab[[0, 999]].sqrt().float().view(2, 1).expand(2, 3))


def _tiny_denoise():
    lin = torch.nn.Linear(4, 4)
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        lin.weight.copy_(torch.randn(4, 4, generator=g) * 0.3)
        lin.bias.copy_(torch.randn(4, generator=g) * 0.1)
    return lambda x, t: torch.tanh(lin(x) * (1 + t.float().view(-1, 1) / 100))


def test_ddim_pinned_regression():
    """A tiny seeded 'model' and 5 DDIM steps over T = 100: values pinned when first written."""
    denoise = _tiny_denoise()
    ab = cosine_alphas_cumprod(100).float()
    x_T = torch.randn(2, 4, generator=torch.Generator().manual_seed(1))  # (B, 4)
    seen = []
    with torch.no_grad():
        x0 = sample_ddim(denoise, x_T, ddim_timesteps(100, 5), ab, callback=lambda d: seen.append(d["t"]))
    assert seen == [99, 74, 50, 25, 0]
    expected = torch.tensor(PINNED_DDIM)
    assert torch.allclose(x0, expected, atol=1e-5), x0.tolist()


def test_ddpm_uses_per_item_generators_and_shares_signature():
    denoise = _tiny_denoise()
    ab = cosine_alphas_cumprod(100).float()
    x_T = torch.randn(2, 4, generator=torch.Generator().manual_seed(1))
    ts = ddim_timesteps(100, 5)
    gens = lambda: [torch.Generator().manual_seed(7), torch.Generator().manual_seed(8)]
    a = sample_ddpm(denoise, x_T, ts, ab, generators=gens())
    b = sample_ddpm(denoise, x_T, ts, ab, generators=gens())
    assert torch.equal(a, b)
    # item 0 alone with its own generator gives the same result as inside the batch
    solo = sample_ddpm(denoise, x_T[:1], ts, ab, generators=gens()[:1])
    assert torch.allclose(solo, a[:1], atol=1e-6)
    assert not torch.allclose(a, sample_ddim(denoise, x_T, ts, ab))
    with pytest.raises(InputError):
        sample_ddpm(denoise, x_T, ts, ab)
    with pytest.raises(InputError, match="ddim"):
        get_sampler("euler")


def test_eta_schedule_mixes_ddim_and_ddpm_step_by_step():
    denoise = _tiny_denoise()
    ab = cosine_alphas_cumprod(100).float()
    x_T = torch.randn(2, 4, generator=torch.Generator().manual_seed(1))
    ts = ddim_timesteps(100, 5)  # 99, 74, 50, 25, 0
    gens = lambda: [torch.Generator().manual_seed(7), torch.Generator().manual_seed(8)]
    assert torch.equal(sample_eta(denoise, x_T, ts, ab, eta=lambda t: 0.0), sample_ddim(denoise, x_T, ts, ab))
    assert torch.equal(sample_eta(denoise, x_T, ts, ab, eta=lambda t: 1.0, generators=gens()),
                       sample_ddpm(denoise, x_T, ts, ab, generators=gens()))
    # deterministic at t = 99, 74 and 50, stochastic below: the first three steps follow DDIM exactly
    mixed, plain = [], []
    sample_eta(denoise, x_T, ts, ab, eta=lambda t: 0.0 if t >= 50 else 1.0, generators=gens(), callback=lambda d: mixed.append(d["x"]))
    sample_ddim(denoise, x_T, ts, ab, callback=lambda d: plain.append(d["x"]))
    assert torch.equal(mixed[2], plain[2]) and not torch.allclose(mixed[3], plain[3])
    with pytest.raises(InputError, match="t = 50"):
        sample_eta(denoise, x_T, ts, ab, eta=lambda t: 0.0 if t > 50 else 1.0)


PINNED_DDIM = [[0.044028, -0.038517, 0.078872, -0.061151], [-0.168991, 0.251272, -0.25629, 0.111059]]


@pytest.mark.parametrize("weighting", ["min-snr", "truncated-v"])
def test_snr_weightings_have_mean_one_and_favour_low_noise(weighting):
    a = cosine_alphas_cumprod(1000)
    w = snr_weights(a, weighting, 5.0)  # (T,)
    assert w.shape == (1000,) and abs(float(w.mean()) - 1) < 1e-9
    assert bool((w[1:] <= w[:-1] + 1e-12).all())  # never heavier at more noise
    snr = a / (1 - a)
    capped = int((snr >= 5).sum())  # every step at SNR >= gamma carries the same, largest weight
    assert torch.allclose(w[:capped], w[0].expand(capped))
    if weighting == "truncated-v":  # 1 + min(SNR, 5): pure noise keeps a sixth of the weight of a clean step
        assert float(w[-1] / w[0]) == pytest.approx(1 / 6, rel=1e-3)
    else:
        assert float(w[-1]) < 1e-3


def test_weighted_diffusion_loss_is_the_per_item_weighted_mean():
    a = cosine_alphas_cumprod(100)
    z0, noise = torch.randn(4, 2, 2, 2, 2), torch.randn(4, 2, 2, 2, 2)
    t = torch.tensor([0, 30, 60, 99])
    zero = lambda z, tt, c: torch.zeros_like(z)  # noqa: E731 (x0_hat = 0, so the error is z0^2)
    assert float(diffusion_loss(zero, z0, None, t, noise, a)) == pytest.approx(float(z0.pow(2).mean()))
    w = snr_weights(a, "truncated-v", 5.0)[t]  # (4,)
    expect = (w.view(4, 1, 1, 1, 1) * z0.pow(2)).mean()
    got = diffusion_loss(zero, z0, None, t, noise, a, weighting="truncated-v", gamma=5.0)
    assert float(got) == pytest.approx(float(expect))
    with pytest.raises(ValueError, match="weighting"):
        diffusion_loss(zero, z0, None, t, noise, a, weighting="snr")
