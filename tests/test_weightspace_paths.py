"""Paths hit their end points; masked paths move only their masks."""

import pytest
import torch
from toy_generator import make_toy

from weightspace.runtime.errors import InputError
from weightspace.space import paths
from weightspace.space.parameterisations import make_parameterisation


def _ab(d=50):
    g = torch.Generator().manual_seed(0)
    return torch.randn(d, generator=g), torch.randn(d, generator=g) * 3


def test_lerp_and_slerp_hit_their_end_points():
    a, b = _ab()
    for fn in (paths.lerp, paths.slerp):
        p = fn(a, b, 7)
        assert p.shape == (7, 50)
        assert torch.equal(p[0], a) and torch.equal(p[-1], b)
    mid = paths.slerp(a, b, [0.5])[0]
    assert float(mid.norm()) == pytest.approx(0.5 * float(a.norm() + b.norm()), rel=1e-5)  # norms interpolate
    center = torch.ones(50)
    p = paths.slerp(a, b, 5, center=center)
    assert torch.equal(p[0], a) and torch.equal(p[-1], b)


def test_piecewise_passes_through_every_knot():
    pts = torch.randn(4, 10, generator=torch.Generator().manual_seed(1))
    seg = (pts[1:] - pts[:-1]).norm(dim=1)
    knots = torch.cat([torch.zeros(1), seg.cumsum(0) / seg.sum()])
    p = paths.piecewise(pts, knots.tolist())
    torch.testing.assert_close(p, pts, atol=1e-6, rtol=0)
    u = paths.piecewise(pts, [0.0, 1 / 3, 2 / 3, 1.0], by="uniform")
    torch.testing.assert_close(u, pts, atol=1e-6, rtol=0)


def test_masked_paths_move_only_their_groups():
    gen = make_toy()
    param = make_parameterisation(gen, "layers", targets="all")
    a = param.base_point()
    b = a + torch.randn(a.shape, generator=torch.Generator().manual_seed(2))
    mask = param.group_mask(["mlp"])
    p = paths.masked(a, b, 5, mask)
    assert torch.equal(p[:, ~mask], a[~mask].expand(5, -1))
    assert torch.equal(p[-1, mask], b[mask]) and torch.equal(p[0], a)
    names = {e.name for e in param.layout.entries if mask[e.offset]}
    assert names == {"inp.weight", "inp.bias", "mid.weight", "mid.bias", "out.weight", "out.bias"}
    ps = paths.masked(a, b, 4, mask, kind="slerp")
    assert torch.equal(ps[-1, mask], b[mask]) and torch.equal(ps[:, ~mask], a[~mask].expand(4, -1))


def test_condition_masks_are_token_subsets():
    gen = make_toy()
    param = make_parameterisation(gen, "condition")
    mask = param.token_mask([0, 2])
    assert int(mask.sum()) == 2 * gen.net.dim
    with pytest.raises(InputError, match="token"):
        param.group_mask(["mlp"])
    with pytest.raises(InputError, match="out of range"):
        param.token_mask([9])
    a, b = torch.zeros(param.layout.size), torch.ones(param.layout.size)
    p = paths.masked(a, b, 3, mask).reshape(3, *gen.condition_shape)
    assert torch.equal(p[-1, 0], torch.ones(gen.net.dim)) and torch.equal(p[-1, 1], torch.zeros(gen.net.dim))


def test_condition_path_is_measured_in_weight_space():
    gen = make_toy()
    param = make_parameterisation(gen, "condition")
    a, b = _ab(param.layout.size)
    m = param.effective_path(paths.lerp(a, b, 9))
    assert set(m["layers"]) == {"mid.scale", "mid.shift"}
    for layer in m["layers"].values():
        assert layer["length"] >= layer["displacement"] - 1e-9 > 0
        assert len(layer["step"]) == 8
    # FiLM is affine in the pooled condition, so a straight condition path is straight in weight space
    assert m["length"] == pytest.approx(sum(v["displacement"] for v in m["layers"].values()), rel=1e-6)
