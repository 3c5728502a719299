"""Layouts: exact round trips, JSON, and errors that name what differs."""

import pytest
import torch
from toy_generator import make_toy

from weightspace.runtime.errors import InputError
from weightspace.space.layout import Layout, LayoutMismatchError, check_all_same
from weightspace.space.parameterisations import make_parameterisation


def _layout(**kw):
    tensors = [("a.weight", torch.randn(3, 4)), ("a.bias", torch.randn(3)), ("b", torch.randn(2, 1, 5))]
    args = dict(base_hash="abc", parameterisation="layers") | kw
    return Layout.from_tensors(tensors, **args), dict(tensors)


def test_round_trip_is_exact_and_json_serialisable():
    layout, tensors = _layout()
    v = layout.to_vector(tensors)
    assert v.shape == (layout.size,) == (12 + 3 + 10,)
    back = layout.from_vector(v)
    for k in tensors:
        assert torch.equal(back[k], tensors[k])
    again = Layout.from_json(layout.to_json())
    assert again == layout
    assert torch.equal(again.to_vector(back), v)
    batch = layout.from_vector(torch.stack([v, 2 * v]))
    assert torch.equal(batch["b"][1], 2 * tensors["b"])


def test_mismatches_name_what_differs():
    layout, _ = _layout()
    with pytest.raises(LayoutMismatchError, match="base checkpoints differ"):
        layout.check_same(_layout(base_hash="xyz")[0])
    with pytest.raises(LayoutMismatchError, match="parameterisations differ"):
        layout.check_same(_layout(parameterisation="lora")[0])
    other = Layout.from_tensors([("a.weight", (3, 4)), ("a.bias", (3,)), ("c", (2, 1, 5))], base_hash="abc", parameterisation="layers")
    with pytest.raises(LayoutMismatchError, match="'c'"):
        check_all_same([layout, layout, other])
    with pytest.raises(LayoutMismatchError, match="rank"):
        layout.check_same(_layout(extra={"rank": 2})[0])


def test_bad_inputs_raise_input_errors():
    layout, tensors = _layout()
    with pytest.raises(InputError, match="length"):
        layout.from_vector(torch.zeros(layout.size + 1))
    with pytest.raises(InputError, match="shape"):
        layout.to_vector({**tensors, "b": torch.zeros(5)})
    with pytest.raises(InputError, match="offset"):
        d = layout.to_dict()
        d["entries"][1][3] = 99
        Layout.from_dict(d)


def test_generators_with_different_weights_have_different_base_hashes():
    p0 = make_parameterisation(make_toy(seed=0), "layers", targets="mid")
    p1 = make_parameterisation(make_toy(seed=1), "layers", targets="mid")
    with pytest.raises(LayoutMismatchError, match="base checkpoints differ"):
        p0.layout.check_same(p1.layout)
    p0.layout.check_same(make_parameterisation(make_toy(seed=0), "layers", targets="mid").layout)
