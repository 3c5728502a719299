"""A frame (layout, parameterisation, anchor, checkpoint) round-trips through every store and builds only on its base."""

import dataclasses
import functools

import pytest
import torch
from toy_generator import make_toy, make_toy_data

from weightspace.decode.points import decode_points
from weightspace.runtime.errors import InputError
from weightspace.space.frame import Frame
from weightspace.space.layout import LayoutMismatchError
from weightspace.space.parameterisations import make_parameterisation
from weightspace.space.population import PopulationConfig, build_population
from weightspace.space.store import Population, load_point, save_point
from weightspace.space.subspace import Subspace, fit_subspace_matrix


def _frame(gen, checkpoint="toy"):
    param = make_parameterisation(gen, "lora", rank=2, targets="mid")
    anchor = torch.randn(1, *gen.condition_shape, generator=torch.Generator().manual_seed(1))  # (1, *condition_shape)
    return Frame(param.layout, param.config(), anchor, checkpoint), param


def _same(a: Frame, b: Frame) -> None:
    assert a.layout == b.layout and a.parameterisation == b.parameterisation and a.checkpoint == b.checkpoint
    assert torch.equal(a.anchor, b.anchor)
    assert a == b


def test_frame_round_trips_through_a_point_file_and_a_subspace(tmp_path):
    gen = make_toy(seed=0)
    frame, param = _frame(gen)
    x = torch.stack([param.initial_point(s) for s in range(4)])  # (4, D)
    pf = load_point(save_point(tmp_path / "p.safetensors", x[0], frame))
    _same(pf.frame, frame)
    assert torch.equal(pf.point, x[0])
    sub = fit_subspace_matrix(x, 2, frame=frame)
    sub.save(tmp_path / "sub")
    _same(Subspace.load(tmp_path / "sub").frame, frame)


def test_frame_round_trips_through_a_population(tmp_path):
    data = make_toy_data(tmp_path / "data", count=2, resolution=8, points=64)
    cfg = PopulationConfig(checkpoint="toy", parameterisation="lora", data=str(data), out=str(tmp_path / "pop"),
                           options={"rank": 1, "targets": "mid"}, steps=1, anchor="mean", fit="points", observations=32)
    pop = build_population(cfg, generator=functools.partial(make_toy, seed=0))
    frame = pop.frame
    assert frame.checkpoint == "toy" and frame.parameterisation["name"] == "lora"
    assert frame.anchor.abs().sum() > 0  # the mean anchor, not zeros
    _same(Population(tmp_path / "pop").frame, frame)


def test_build_sets_the_anchor_and_refuses_other_weights():
    gen = make_toy(seed=0)
    frame, param = _frame(gen)
    built = frame.build(gen)
    assert built.config() == frame.parameterisation and torch.equal(built.anchor.cpu(), frame.anchor)
    param.set_anchor(frame.anchor)
    point = param.initial_point(0)[None]
    torch.testing.assert_close(decode_points(gen, built, point, [3]), decode_points(gen, param, point, [3]))
    with pytest.raises(LayoutMismatchError, match="base checkpoints differ"):
        frame.build(make_toy(seed=1), what="points")


def test_frame_is_immutable_and_checked():
    gen = make_toy(seed=0)
    frame, _ = _frame(gen)
    with pytest.raises(dataclasses.FrozenInstanceError):
        frame.checkpoint = "other"  # type: ignore[misc]
    with pytest.raises(InputError, match="anchor"):
        Frame(frame.layout, frame.parameterisation, torch.zeros(2, *gen.condition_shape))
    with pytest.raises(InputError, match="name"):
        Frame(frame.layout, {"rank": 2}, frame.anchor)
    config = dict(frame.parameterisation)
    copy = Frame(frame.layout, config, frame.anchor)
    config["rank"] = 99  # the frame keeps its own copy
    assert copy.parameterisation["rank"] == 2
    assert dataclasses.replace(frame, checkpoint="elsewhere") != frame
