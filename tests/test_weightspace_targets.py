"""Target selection by module group (`group:a,b`) for LoRA modules and raw layers."""

import pytest
from toy_generator import make_toy

from weightspace.runtime.errors import InputError
from weightspace.space.layers import resolve_parameters
from weightspace.space.parameterisation import resolve_targets


def test_group_targets_pick_modules_and_parameters_under_their_prefixes():
    gen = make_toy(seed=0)
    modules = resolve_targets(gen, "group:mlp")
    assert modules and all(m.split(".")[0] in {"inp", "mid", "out"} for m in modules)
    params = resolve_parameters(gen, "group:mlp,film")
    assert {p.split(".")[0] for p in params} == {"inp", "mid", "out", "film"}
    assert all(p.split(".")[0] not in {"enc", "feat", "vol"} for p in params)


def test_unknown_group_names_the_valid_ones():
    with pytest.raises(InputError, match="unknown module group.*valid: encoder"):
        resolve_parameters(make_toy(seed=0), "group:nope")


@pytest.mark.parametrize("dot", ["", "."])
def test_group_prefixes_select_the_same_with_or_without_a_trailing_dot(monkeypatch, dot):
    """WaLa's and the latent diffusion model's groups spell prefixes `ae.decoder.`: they chose nothing."""
    gen = make_toy(seed=0)
    monkeypatch.setattr(gen, "module_groups", lambda: {"mlp": [f"inp{dot}", f"mid{dot}", f"out{dot}"], "film": [f"film{dot}"]})
    modules = resolve_targets(gen, "group:mlp")
    assert "mid" in modules and all(m.split(".")[0] in {"inp", "mid", "out"} for m in modules)
    assert {p.split(".")[0] for p in resolve_parameters(gen, "group:mlp,film")} == {"inp", "mid", "out", "film"}
