"""LoRA points: PEFT agreement (unmerged, merged, saved folders), scale 0, exact Delta W sums."""

import copy
import json

import pytest
import torch
from peft import PeftModel, inject_adapter_in_model, set_peft_model_state_dict
from toy_generator import make_toy

from weightspace.runtime.errors import InputError
from weightspace.space.layout import LayoutMismatchError
from weightspace.space.parameterisations import make_parameterisation

TARGETS = "inp|mid|vol"  # two Linear layers and the Conv3d


@pytest.fixture(scope="module")
def gen():
    return make_toy(seed=3)


def _inputs(gen, b=2, p=64):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(b, p, 3, generator=g) * 2 - 1
    cond = torch.randn(b, *gen.condition_shape, generator=g)
    return x, cond, torch.zeros(b, gen.net.dim)


def _random_point(param, seed=0):
    return 0.3 * torch.randn(param.layout.size, generator=torch.Generator().manual_seed(seed))


def _peft_state(param, point):
    t = param.layout.from_vector(point)
    return {f"{m}.{ab}.weight": t[f"{m}.{ab}"] for m in param.modules for ab in ("lora_A", "lora_B")}


def test_targets_cover_linear_and_conv3d(gen):
    param = make_parameterisation(gen, "lora", rank=2, alpha=4.0, targets=TARGETS)
    assert param.modules == ["inp", "mid", "vol"]
    assert param.factor_shapes["vol"] == ((2, 4, 3, 3, 3), (4, 2, 1, 1, 1))
    with pytest.raises(InputError, match="matches no module"):
        make_parameterisation(gen, "lora", targets="nothing")
    with pytest.raises(InputError, match="form"):
        make_parameterisation(gen, "lora", form="bad")


def test_scale_zero_reproduces_the_base_model_exactly(gen):
    param = make_parameterisation(gen, "lora", rank=2, alpha=0.0, targets=TARGETS)
    x, cond, noise = _inputs(gen)
    base = gen.net(x, cond, noise)
    out = torch.func.functional_call(gen.net, param.params(_random_point(param)), (x, cond, noise))
    assert torch.equal(out, base)
    assert torch.equal(gen.sdf_grid(cond, [1, 2], params=param.params(param.base_point())), gen.sdf_grid(cond, [1, 2]))


def test_merged_params_match_peft_unmerged_and_merged_forward(gen):
    param = make_parameterisation(gen, "lora", rank=3, alpha=5.0, targets=TARGETS)
    point = _random_point(param, 1)
    x, cond, noise = _inputs(gen)
    ours = torch.func.functional_call(gen.net, param.params(point), (x, cond, noise))
    assert not torch.allclose(ours, gen.net(x, cond, noise), atol=1e-3)  # the adapter does something
    net = copy.deepcopy(gen.net)
    inject_adapter_in_model(param.peft_config, net)
    result = set_peft_model_state_dict(net, _peft_state(param, point))
    assert not [k for k in result.unexpected_keys if "lora" in k]
    with torch.no_grad():
        unmerged = net(x, cond, noise)
        for m in param.modules:
            net.get_submodule(m).merge()
        merged = net(x, cond, noise)
    torch.testing.assert_close(ours, unmerged, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(merged, unmerged, rtol=1e-5, atol=1e-5)


def test_saved_adapter_folder_loads_with_peft(gen, tmp_path):
    param = make_parameterisation(gen, "lora", rank=2, alpha=4.0, targets=TARGETS)
    point = _random_point(param, 2)
    param.save_adapter(point, tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    model = PeftModel.from_pretrained(copy.deepcopy(gen.net), str(tmp_path / "adapter"))
    x, cond, noise = _inputs(gen)
    with torch.no_grad():
        theirs = model(x, cond, noise)
    ours = torch.func.functional_call(gen.net, param.params(point), (x, cond, noise))
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    back_param, back = type(param).load_adapter(gen, tmp_path / "adapter")
    back_param.layout.check_same(param.layout)
    assert torch.equal(back, point)


def test_weighted_sums_are_exact_in_delta_w(gen):
    param = make_parameterisation(gen, "lora", rank=2, alpha=4.0, targets=TARGETS)
    pts = torch.stack([_random_point(param, s) for s in range(3)])
    w = [0.5, -1.25, 2.0]
    combined = param.combine(pts, w)  # delta point
    deltas = param.deltas_batch(pts)
    d = param.delta_parameterisation()
    got = d.layout.from_vector(combined)
    for m in param.modules:
        expect = sum(wi * deltas[m][i].double() for i, wi in enumerate(w))
        torch.testing.assert_close(got[f"{m}.weight"].double(), expect, rtol=1e-6, atol=1e-6)
    big, big_point = param.combine_factors(pts, w)
    assert big.rank == 6
    torch.testing.assert_close(big.to_delta(big_point), combined, rtol=1e-5, atol=1e-6)
    x, cond, noise = _inputs(gen)
    a = torch.func.functional_call(gen.net, d.params(combined), (x, cond, noise))
    b = torch.func.functional_call(gen.net, big.params(big_point), (x, cond, noise))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_delta_is_invariant_to_refactorisation(gen):
    param = make_parameterisation(gen, "lora", rank=2, alpha=4.0, targets="mid|vol")
    point = _random_point(param, 5)
    t = {k: v.clone() for k, v in param.layout.from_vector(point).items()}
    M = torch.tensor([[2.0, 1.0], [0.5, 3.0]])
    for m in param.modules:
        a, b = t[f"{m}.lora_A"], t[f"{m}.lora_B"]
        t[f"{m}.lora_A"] = torch.einsum("rs,s...->r...", M, a)
        t[f"{m}.lora_B"] = torch.einsum("os...,sr->or...", b, torch.linalg.inv(M))
    other = param.layout.to_vector(t)
    assert not torch.allclose(other, point)
    torch.testing.assert_close(param.to_delta(other), param.to_delta(point), rtol=1e-5, atol=1e-6)


def test_an_adapter_saved_on_other_base_weights_is_refused(gen, tmp_path):
    param = make_parameterisation(gen, "lora", rank=2, alpha=4.0, targets=TARGETS)
    param.save_adapter(_random_point(param, 2), tmp_path / "adapter")
    with pytest.raises(LayoutMismatchError, match="base checkpoints differ"):
        type(param).load_adapter(make_toy(seed=4), tmp_path / "adapter")


def _edit_config(folder, **changes):
    path = folder / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_an_rslora_adapter_decodes_as_peft_runs_it(gen, tmp_path):
    param = make_parameterisation(gen, "lora", rank=4, alpha=4.0, targets=TARGETS)
    param.save_adapter(_random_point(param, 2), tmp_path / "adapter")
    _edit_config(tmp_path / "adapter", use_rslora=True)  # scaling alpha / sqrt(r), not alpha / r
    model = PeftModel.from_pretrained(copy.deepcopy(gen.net), str(tmp_path / "adapter"))
    back_param, back = type(param).load_adapter(gen, tmp_path / "adapter")
    x, cond, noise = _inputs(gen)
    with torch.no_grad():
        theirs = model(x, cond, noise)
        ours = torch.func.functional_call(gen.net, back_param.params(back), (x, cond, noise))
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("changes", [{"use_dora": True}, {"bias": "lora_only"}, {"rank_pattern": {"mid": 2}},
                                     {"alpha_pattern": {"mid": 1.0}}])
def test_adapter_settings_a_point_cannot_hold_are_refused(gen, tmp_path, changes):
    param = make_parameterisation(gen, "lora", rank=2, alpha=4.0, targets=TARGETS)
    param.save_adapter(_random_point(param, 2), tmp_path / "adapter")
    _edit_config(tmp_path / "adapter", **changes)
    with pytest.raises(InputError, match=next(iter(changes))):
        type(param).load_adapter(gen, tmp_path / "adapter")


def test_an_adapter_naming_its_targets_in_a_list_loads(gen, tmp_path):
    param = make_parameterisation(gen, "lora", rank=2, alpha=4.0, targets=TARGETS)
    point = _random_point(param, 2)
    param.save_adapter(point, tmp_path / "adapter")
    _edit_config(tmp_path / "adapter", target_modules=["vol", "inp", "mid"])  # as PEFT saves a list: module-name suffixes
    back_param, back = type(param).load_adapter(gen, tmp_path / "adapter")
    assert back_param.modules == param.modules
    assert torch.equal(back, point)


@pytest.mark.parametrize("weights", [[1.0, 1.0, 1.0], [1.0]])
def test_combine_factors_needs_one_weight_per_point(gen, weights):
    param = make_parameterisation(gen, "lora", rank=2, alpha=4.0, targets=TARGETS)
    pts = torch.stack([_random_point(param, s) for s in range(2)])
    with pytest.raises(InputError, match="n weights"):
        param.combine_factors(pts, weights)
