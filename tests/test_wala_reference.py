"""WaLa stage by stage against the reference fixtures (tests/fixtures/wala, trimmed by trim.py): relative error <= 1e-4.

Kinds: pc (point cloud, U-ViT, read from a Lightning checkpoint), vx16 (voxels), un (unconditional),
a2uvit (cosine / START_X / FIXED_LARGE, patch 3, l2-normalised codebook, odd wavelet edge) and a2dit
(DiT, PREVIOUS_X, T = 998). vx16 and un share pc's autoencoder, a2dit a2uvit's (as the fixtures do).
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from weightspace.generators.wala import WaLa
from weightspace.generators.wala.sampler import ddpm_step, guided
from weightspace.generators.wala.wavelet import inverse_dwt, shape_list, unpack
from weightspace.runtime.safe_load import load_lightning_checkpoint

FIX = Path(__file__).resolve().parent / "fixtures" / "wala"
KINDS = ["pc", "vx16", "un", "a2uvit", "a2dit"]
AE_FROM = {"vx16": "pc", "un": "pc", "a2dit": "a2uvit"}
TOL = 1e-4


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max absolute error relative to the reference's max magnitude."""
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30))


def _state(kind: str) -> dict[str, torch.Tensor]:
    if kind == "pc":
        return load_lightning_checkpoint(FIX / "pc" / "checkpoint.ckpt").state_dict
    return load_file(str(FIX / kind / "model.safetensors"))


@functools.lru_cache(maxsize=None)
def model(kind: str) -> WaLa:
    if kind in ("pc", "a2uvit"):
        return WaLa.from_pretrained(FIX / kind)
    state = _state(kind)
    state.update({k: v for k, v in _state(AE_FROM[kind]).items() if k.startswith("autoencoder.")})
    return WaLa.from_state(json.loads((FIX / kind / "args.json").read_text()), state)


@functools.lru_cache(maxsize=None)
def io(kind: str) -> dict[str, torch.Tensor]:
    return load_file(str(FIX / kind / "io.safetensors"))


def _cond(kind: str):
    m, d = model(kind), io(kind)
    if "cond_encoder.input_points" in d:
        return m.encode_condition(points=d["cond_encoder.input_points"])
    if "cond_encoder.input_voxels" in d:
        return m.encode_condition(voxels=d["cond_encoder.input_voxels"])
    return None


def _noises(kind: str) -> list[torch.Tensor]:
    d = io(kind)
    K = len(d["sample.timestep_map"])
    return [d["sample.noise_init"]] + [d[f"sample.noise_step{i:02d}"] for i in range(K)]


@pytest.mark.parametrize("kind", ["pc", "vx16", "a2dit"])
@torch.no_grad()
def test_condition_encoder_and_processing(kind):
    m, d = model(kind), io(kind)
    assert rel(_cond(kind), d["cond_encoder.output"]) <= TOL
    u, c = m.process_condition(d["cond_encoder.output"])
    assert rel(u, d["process_condition.output_uncond"]) <= TOL  # mapping(0) + pos_emb, not zeros
    assert rel(c, d["process_condition.output_cond"]) <= TOL


@pytest.mark.parametrize("kind", KINDS)
@torch.no_grad()
def test_denoiser_one_forward(kind):
    m, d = model(kind), io(kind)
    ctx = torch.cat([d["process_condition.output_uncond"], d["process_condition.output_cond"]]) if m.cfg.kind != "un" else None
    assert rel(m.net("denoise", d["denoiser.x"], d["denoiser.t"], ctx), d["denoiser.output"]) <= TOL


@pytest.mark.parametrize("kind", KINDS)
def test_schedule(kind):
    s, d = model(kind).schedule, io(kind)
    assert s.timestep_map.tolist() == d["sample.timestep_map"].tolist()  # round-half-to-even spacing
    np.testing.assert_allclose(s.betas, d["sample.betas_spaced"].numpy(), rtol=1e-12)
    np.testing.assert_allclose(s.alphas_cumprod, d["sample.alphas_cumprod_spaced"].numpy(), rtol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
@torch.no_grad()
def test_every_step_teacher_forced(kind):
    m, d = model(kind), io(kind)
    cond = _cond(kind)
    ctx = m.process_condition(cond) if cond is not None else (None, None)
    scale = 3.0 if m.cfg.guided else None
    assert float(d["sample.guidance_scale_used"]) == (scale or 1.0)
    fn = guided(lambda x, t, c: m.net("denoise", x, t, c), *ctx, scale)
    K = len(m.schedule.timestep_map)
    for i, j in enumerate(range(K - 1, -1, -1)):
        p = f"sample.step{i:02d}."
        assert int(d[p + "t_spaced"]) == j and int(d[p + "model_t"][0]) == m.schedule.timestep_map[j]
        x, x0, _ = ddpm_step(fn, d[p + "x_in"], j, m.schedule, mean_type=m.cfg.diffusion_model_mean_type, z=d[f"sample.noise_step{i:02d}"])
        assert rel(x, d[p + "x_out"]) <= 1e-5, (i, rel(x, d[p + "x_out"]))
        assert rel(x0, d[p + "pred_xstart"]) <= 1e-5


@pytest.mark.parametrize("kind", KINDS)
@torch.no_grad()
def test_whole_sampling_run_with_recorded_noises(kind):
    z = model(kind).sample(_cond(kind), noises=_noises(kind))
    assert rel(z, io(kind)["sample.final_latent"]) <= TOL


@pytest.mark.parametrize("kind", ["pc", "un"])
@torch.no_grad()
def test_seed_draws_in_wala_order(kind):
    """seed=s gives the draws of torch.manual_seed(s) followed by K + 1 randn calls (the last one masked)."""
    m = model(kind)
    K = len(m.schedule.timestep_map)
    torch.manual_seed(5)
    draws = [torch.randn(m.latent_shape(1)) for _ in range(K + 1)]
    cond = _cond(kind)
    assert torch.equal(m.sample(cond, seed=5), m.sample(cond, noises=draws))


@pytest.mark.parametrize("kind", KINDS)
@torch.no_grad()
def test_codebook_snap_and_decoder(kind):
    m, d = model(kind), io(kind)
    zq, idx = m.net.autoencoder.snap(d["vq.input"])
    assert torch.equal(idx, d["vq.indices"])
    assert rel(zq, d["vq.output"]) <= TOL
    volume = m.net.autoencoder.decoder(d["decoder.input"])  # (1, 8**Lv, 4g-2, ...)
    assert rel(volume.sum(dim=(2, 3, 4)), d["decoder.output_channel_sums"]) <= TOL


@torch.no_grad()
def test_unpack_of_decoded_volume():
    m, d = model("pc"), io("pc")
    low, highs = m.net.autoencoder.coefficients(d["decoder.input"])
    assert rel(low, d["unpack.low"]) <= TOL
    assert rel(highs[1], d["unpack.highs1"]) <= TOL and rel(highs[2], d["unpack.highs2"]) <= TOL
    assert not highs[0].any()  # max_training_level 2: the finest level is absent


@pytest.mark.parametrize("kind", ["pc", "vx16", "un", "a2uvit"])
@torch.no_grad()
def test_grid_from_latent(kind):
    m, d = model(kind), io(kind)
    grid = m.decode_latent(d["vq.input"])
    R = m.cfg.resolution
    assert grid.shape == (R, R, R) and grid.dtype == torch.float32
    if "idwt.output" in d:
        assert rel(grid, d["idwt.output"][0, 0]) <= TOL
    else:  # a2uvit keeps every 4th voxel per axis (odd wavelet edge 39: the ll crop)
        err = (grid[::4, ::4, ::4] - d["idwt.output_every4"][0, 0]).abs().max()
        assert float(err / d["idwt.output_maxabs"]) <= TOL


@pytest.mark.parametrize("kind", ["pc", "un"])
@torch.no_grad()
def test_mesh_counts_near_wala(kind):
    """skimage's marching cubes, not PyMCubes: counts agree within 2% (the two tile ambiguous cubes differently)."""
    m, d = model(kind), io(kind)
    verts, faces = m.mesh(m.decode_latent(d["vq.input"]))
    assert abs(len(faces) / int(d["mesh.num_faces"]) - 1) < 0.02
    assert abs(len(verts) / int(d["mesh.num_vertices"]) - 1) < 0.02
    assert verts.min() >= -1 and verts.max() < 1  # v / R * 2 - 1


def test_unpack_map_of_512_channels():
    """Every output value is its source index (exact integers), pinned by the reference's SHA-256."""
    V = torch.arange(512 * 18**3, dtype=torch.float32).reshape(1, 512, 18, 18, 18)
    low, highs = unpack(V, 32, 3)
    want = json.loads((FIX / "wavelet" / "unpack512.sha256.json").read_text())
    got = {"unpack512.low": low, **{f"unpack512.highs{j}": h for j, h in enumerate(highs)}}
    assert {k: hashlib.sha256(v.contiguous().numpy().tobytes()).hexdigest() for k, v in got.items()} == want


def test_inverse_dwt_against_reference_and_pywavelets():
    pywt = pytest.importorskip("pywt")
    d = load_file(str(FIX / "wavelet" / "io.safetensors"))
    w = pywt.Wavelet("bior6.8")
    assert torch.equal(d["filters.g0"], torch.tensor(w.rec_lo, dtype=torch.float32))
    assert torch.equal(d["filters.g1"], torch.tensor(w.rec_hi, dtype=torch.float32))
    out = inverse_dwt(d["idwt.low"], [d[f"idwt.highs{j}"] for j in range(3)], d["filters.g0"], d["filters.g1"])
    assert rel(out, d["idwt.output"]) <= TOL
    # PyWavelets' own 3-D reconstruction (mode zero) agrees to float64 rounding, odd edges included
    g0, g1 = torch.tensor(w.rec_lo, dtype=torch.float64), torch.tensor(w.rec_hi, dtype=torch.float64)
    names = ["daa", "ada", "dda", "aad", "dad", "add", "ddd"]  # hll, lhl, ... with the depth axis first
    for R in (32, 62):
        S, rng = shape_list(R), np.random.default_rng(R)
        low, highs = rng.standard_normal((S[3],) * 3), [rng.standard_normal((7,) + (S[j + 1],) * 3) for j in range(3)]
        ours = inverse_dwt(torch.from_numpy(low)[None, None], [torch.from_numpy(h)[None, None] for h in highs], g0, g1)[0, 0]
        ref = pywt.waverecn([low] + [dict(zip(names, highs[j])) for j in (2, 1, 0)], "bior6.8", mode="zero")
        assert ours.shape == (R, R, R)
        np.testing.assert_allclose(ours.numpy(), ref, atol=1e-12)


def test_shape_lists():
    assert shape_list(256) == [256, 136, 76, 46]
    assert shape_list(32) == [32, 24, 20, 18]
    assert shape_list(62) == [62, 39, 28, 22]


def test_an_unconditional_wala_generates_from_the_command_line(tmp_path):
    """WaLa-UN takes no condition: `weightspace generate` without --family, --points or --voxels
    samples it (it refused every such call before), and a conditional WaLa still asks for one."""
    from typer.testing import CliRunner

    from weightspace.cli import _register, app
    from weightspace.generators.wala.generator import WaLaGenerator

    _register()
    WaLaGenerator(model("un"), steps=2).save(tmp_path / "un")
    result = CliRunner().invoke(app, ["generate", "--checkpoint", str(tmp_path / "un"), "--out", str(tmp_path / "g")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "g" / "generate.json").read_text())["condition"] == {"unconditional": True}
    WaLaGenerator(model("pc"), steps=2).save(tmp_path / "pc")
    result = CliRunner().invoke(app, ["generate", "--checkpoint", str(tmp_path / "pc"), "--out", str(tmp_path / "h")])
    assert result.exit_code != 0 and "conditional wala model" in str(result.exception)
