"""Small results folders of every study, with meshes, for the report tests (seconds, on the toy and planted generators)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from test_experiments_interpolate import PlantedGenerator, _points
from toy_generator import ToyGenerator, make_toy_data

from weightspace.experiments.fit import FitConfig, run_fit
from weightspace.experiments.interpolate import InterpolateConfig, run_interpolate
from weightspace.experiments.subspace import SubspaceConfig, run_subspace


def make_studies(root: Path, checkpoint: str, *, data: Path, seed: int = 0, studies=("interpolate", "subspace", "fit")) -> dict[str, Path]:
    """Run the studies named into root/<checkpoint>/<study>, meshes on; returns study -> folder.

    interpolate runs on the planted generator (one located change, 1 -> 2 components); subspace and fit on the toy
    generator's spheres, which it reproduces."""
    out = {}
    base = root / checkpoint
    if "interpolate" in studies:
        gen = PlantedGenerator()
        a, b = _points(base, gen)
        out["interpolate"] = run_interpolate(InterpolateConfig(checkpoint=checkpoint, out=str(base / "interpolate"), endpoints="points",
                                                               a=a, b=b, tolerance=0.01), generator=gen)
    if "subspace" in studies:
        cfg = _config(SubspaceConfig, checkpoint=checkpoint, out=str(base / "subspace"), family="sphere", families=["sphere"],
                      examples=3, k=2, samples=3, data=str(data), seed=seed, seeds=[seed], parameterisation="condition")
        out["subspace"] = run_subspace(cfg, generator=ToyGenerator(seed=seed))
    if "fit" in studies:
        cfg = _config(FitConfig, checkpoint=checkpoint, out=str(base / "fit"), family="sphere", views=[1], sigmas=[0.01], steps=5,
                      budgets=[0, 5], eval_every=5, population_steps=2, lr_full=1e-2, subspace_examples=2, subspace_k=1,
                      forget_shapes=1, data=str(data), seed=seed)
        out["fit"] = run_fit(cfg, generator=ToyGenerator(seed=seed))
    return out


def _config(cls, **options):
    """The study's config from the options it has (the studies' configs grow; a test sets what each one takes)."""
    names = {f.name for f in dataclasses.fields(cls)}
    if "families" in names:  # K per cell, as a list, in the pooled study
        options["examples"] = [options["examples"]] if isinstance(options.get("examples"), int) else options.get("examples")
    return cls(**{k: v for k, v in options.items() if k in names})


def toy_data(root: Path) -> Path:
    return make_toy_data(root / "toy-data", count=8)


def shared_studies(tmp_path_factory) -> Path:
    """Studies made once per test session: root/toy-a/{interpolate, subspace, fit} and root/toy-b/subspace (another
    seed, a second generator for side-by-side pages). Tests that write into them copy them first."""
    root = tmp_path_factory.getbasetemp() / "report-studies"
    if not (root / "done").is_file():
        root.mkdir(exist_ok=True)
        data = toy_data(root)
        make_studies(root, "toy-a", data=data)
        make_studies(root, "toy-b", data=data, seed=1, studies=("subspace",))
        (root / "done").write_text("")
    return root
