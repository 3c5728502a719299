"""The CUDA path: generators, evaluation and latent diffusion training on a GPU agree with the CPU.

Skipped where CUDA is absent (CI); run on a GPU machine with `pytest tests/test_cuda.py`.
Without CUDA, only the test that `--device cuda` is refused clearly runs.
"""

import json

import pytest
import torch
from typer.testing import CliRunner

from weightspace.cli import _register, app
from weightspace.generators import load_generator

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
TINY_MODEL = dict(ae_channels=[8, 16], latent_channels=2, patch=2, width=32, depth=1, heads=2, cond_dim=8,
                  timesteps=50, sample_steps=3)


def _solid_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    sa, sb = a < 0, b < 0
    return float((sa & sb).sum()) / max(float((sa | sb).sum()), 1.0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
def test_cuda_asked_for_without_cuda_is_a_clear_error(tmp_path):
    _register()
    res = CliRunner().invoke(app, ["generate", "--family", "torus", "--out", str(tmp_path / "g"), "--device", "cuda"])
    assert res.exit_code != 0 and "CUDA is not available" in str(res.exception)
    assert not (tmp_path / "g").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
def test_neural_field_training_on_cuda_without_cuda_is_a_clear_error(tmp_path):
    _register()
    res = CliRunner().invoke(app, ["train", "neural-field", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "ck"),
                                   "--device", "cuda"])
    assert res.exit_code != 0 and "CUDA is not available" in str(res.exception)
    assert not (tmp_path / "ck").exists()


@needs_cuda
@pytest.mark.parametrize("name", ["default", "default-field"])
def test_shipped_generators_decode_on_cuda_like_on_cpu(name):
    cpu, gpu = load_generator(name, "cpu"), load_generator(name, "cuda")
    assert gpu.device.type == "cuda"
    seeds = [0, 1, 2, 3]
    with torch.no_grad():
        grid_cpu = cpu.sdf_grid(cpu.condition(family=["torus", "mug", "chair", "pair"], seeds=seeds), seeds)
        cond = gpu.condition(family=["torus", "mug", "chair", "pair"], seeds=seeds)
        grid_gpu = gpu.sdf_grid(cond, seeds)
        again = gpu.sdf_grid(cond, seeds)
    assert grid_gpu.device.type == "cuda"
    torch.testing.assert_close(grid_gpu, again, rtol=0, atol=1e-5)  # determinism on the device
    # the same start noise (drawn on the CPU) and weights: the shapes agree up to float round-off
    for a, b in zip(grid_cpu, grid_gpu.cpu()):
        assert _solid_iou(a, b) > 0.97


@needs_cuda
def test_latent_diffusion_trains_and_resumes_on_cuda(tmp_path):
    from weightspace.data.make import make_dataset
    from weightspace.generators.latent_diffusion.config import ModelConfig, TrainConfig
    from weightspace.generators.latent_diffusion.train import train_latent_diffusion

    data = tmp_path / "data"
    make_dataset(data, family="all", count=20, resolution=16, seed=0, n_points=256, progress=False)
    out = tmp_path / "ck"
    tc = TrainConfig(ae_steps=6, diffusion_steps=6, ae_batch=4, diffusion_batch=4, train_points=64, log_every=1)
    gen = train_latent_diffusion(data, out, model=ModelConfig(**TINY_MODEL), train=tc, device="cuda", echo=lambda s: None)
    assert gen.device.type == "cuda"
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["device"].startswith("cuda") and cfg["progress"]["diffusion_steps"] == 6
    record = json.loads((out / "training_record.json").read_text())
    assert record["device"].startswith("cuda")
    # resume on the GPU with a larger step budget; the saved files hold CPU tensors any machine can load
    tc2 = TrainConfig(ae_steps=6, diffusion_steps=9, ae_batch=4, diffusion_batch=4, train_points=64, log_every=1)
    train_latent_diffusion(data, out, train=tc2, device="cuda", echo=lambda s: None)
    assert json.loads((out / "config.json").read_text())["progress"]["diffusion_steps"] == 9
    loaded = load_generator(out, "cpu")
    with torch.no_grad():
        grid = loaded.sdf_grid(loaded.condition(family=["torus"]), [0])
    assert grid.shape == (1, 16, 16, 16) and torch.isfinite(grid).all()


@needs_cuda
def test_neural_field_trains_and_resumes_on_cuda(tmp_path):
    from weightspace.data.make import make_dataset
    from weightspace.generators.neural_field.config import FieldConfig
    from weightspace.generators.neural_field.config import TrainConfig as FieldTrainConfig
    from weightspace.generators.neural_field.train import train_neural_field

    data = tmp_path / "data"
    make_dataset(data, family="all", count=20, resolution=16, seed=0, n_points=256, progress=False)
    out = tmp_path / "ck"
    tiny = dict(d_z=8, width=16, depth=3, skip=1, recon_steps=5, recon_restarts=1, recon_queries=64)

    def train(steps: int, device: str):
        tc = FieldTrainConfig(minutes=2.0, steps=steps, points_per_shape=64, bank_size=512, log_every=5, warmup_steps=5,
                              ema_decay=0.9)
        return train_neural_field(data, out, model_cfg=FieldConfig(**tiny), train_cfg=tc, device=device, log=lambda s: None)

    gen = train(10, "cuda")
    assert json.loads((out / "training_record.json").read_text())["device"].startswith("cuda")
    assert gen.net.codes.device.type == "cpu"  # the checkpoint holds CPU tensors
    train(15, "cuda")  # resume on the GPU
    assert json.loads((out / "config.json").read_text())["train_state"]["step"] == 15
    train(20, "cpu")  # and go on on the CPU from the GPU's state
    assert json.loads((out / "config.json").read_text())["train_state"]["step"] == 20


@needs_cuda
def test_evaluate_and_generate_commands_on_cuda(tmp_path):
    from weightspace.data.make import make_dataset

    _register()
    data = tmp_path / "data"
    make_dataset(data, family="all", count=20, resolution=32, seed=4, n_points=2048, progress=False)
    res = CliRunner().invoke(app, ["evaluate", "generator", "default", "--data", str(data), "--json", "--max-shapes", "2",
                                   "--device", "cuda"])
    assert res.exit_code == 0, res.output
    figures = json.loads(res.output.strip().splitlines()[-1])
    assert all(0 <= figures[k] <= 1 for k in ("ae_iou", "points_iou", "points_betti_match", "family_betti_match"))
    res = CliRunner().invoke(app, ["generate", "--family", "torus", "--count", "2", "--out", str(tmp_path / "g"),
                                   "--device", "cuda"])
    assert res.exit_code == 0, res.output
    assert len(json.loads((tmp_path / "g" / "generate.json").read_text())["shapes"]) == 2
