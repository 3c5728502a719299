"""Populations of fine-tunes made elsewhere: PEFT adapters and fine-tuned checkpoints in, members out."""

import json

import pytest
import torch
from toy_generator import ToyGenerator, make_toy, make_toy_data
from typer.testing import CliRunner

from weightspace.cli import _register, app
from weightspace.generators import register, unregister
from weightspace.runtime.errors import InputError
from weightspace.space.lora import LoraParameterisation
from weightspace.space.population_import import export_population, import_population
from weightspace.space.store import Population


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A saved toy checkpoint (loaded as a user's generator is) and a small LoRA population fitted on it."""
    _register()
    register("toy", ToyGenerator, replace=True)
    root = tmp_path_factory.mktemp("import")
    make_toy(seed=0).save(root / "toy")
    data = make_toy_data(root / "data", count=3, resolution=10)
    r = CliRunner().invoke(app, ["population", "build", "--checkpoint", str(root / "toy"), "--parameterisation", "lora",
                                 "--data", str(data), "--out", str(root / "pop"), "--rank", "2", "--targets", "mid|vol",
                                 "--steps", "3", "--anchor", "mean"])
    assert r.exit_code == 0, r.output
    yield root
    unregister("toy")


def _points(folder):
    pop = Population(folder)
    return {str(r["id"]): pop.point(i) for i, r in enumerate(pop.rows)}


def test_exported_adapters_import_back_as_the_same_points_and_anchor(toy, tmp_path):
    r = CliRunner().invoke(app, ["population", "export", str(toy / "pop"), "--as", "adapter", "--out", str(tmp_path / "ad")])
    assert r.exit_code == 0, r.output
    folders = sorted((tmp_path / "ad").iterdir())
    assert len(folders) == 3 and all((f / "adapter_config.json").is_file() and (f / "anchor.safetensors").is_file() for f in folders)
    r = CliRunner().invoke(app, ["population", "import", *map(str, folders), "--checkpoint", str(toy / "toy"),
                                 "--out", str(tmp_path / "back")])
    assert r.exit_code == 0, r.output
    before, after = Population(toy / "pop"), Population(tmp_path / "back")
    assert after.frame.layout == before.frame.layout and torch.equal(after.frame.anchor, before.frame.anchor)
    assert after.frame.parameterisation == before.frame.parameterisation
    a, b = _points(toy / "pop"), _points(tmp_path / "back")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # fidelity: imported members have no target and are said to be imported, not "built before fidelity"
    r = CliRunner().invoke(app, ["population", "check", str(tmp_path / "back")])
    assert r.exit_code == 0 and "3 members were imported" in r.output, r.output
    # a rerun adds nothing; a subspace fits on the imported population
    r = CliRunner().invoke(app, ["population", "import", *map(str, folders), "--checkpoint", str(toy / "toy"),
                                 "--out", str(tmp_path / "back")])
    assert r.exit_code == 0 and len(Population(tmp_path / "back")) == 3, r.output
    r = CliRunner().invoke(app, ["subspace", "fit", str(tmp_path / "back"), "--components", "2", "--out", str(tmp_path / "sub")])
    assert r.exit_code == 0, r.output


def test_adapters_of_another_alpha_are_rescaled_and_of_another_rank_need_delta_form(toy, tmp_path):
    gen = make_toy(seed=0)
    export_population(toy / "pop", tmp_path / "ad", generator=gen)
    first, second = sorted((tmp_path / "ad").iterdir())[:2]
    cfg = json.loads((second / "adapter_config.json").read_text())
    cfg["lora_alpha"] = 2 * cfg["lora_alpha"]  # the same B A needs B halved at the first adapter's alpha
    (second / "adapter_config.json").write_text(json.dumps(cfg))
    pop = import_population([first, second], checkpoint="toy", out=tmp_path / "p1", generator=gen, log=lambda s: None)
    param = Population(tmp_path / "p1").frame.build(gen)
    want, got = LoraParameterisation.load_adapter(gen, second), pop.point(1)
    assert torch.allclose(param.to_delta(got), want[0].to_delta(want[1]), atol=1e-6)

    third = tmp_path / "rank1"
    lo = LoraParameterisation(gen, rank=1, alpha=4.0, targets="mid|vol")
    lo.save_adapter(torch.randn(lo.layout.size), third)
    (third / "anchor.safetensors").write_bytes((first / "anchor.safetensors").read_bytes())  # made under the same anchor
    with pytest.raises(InputError, match="rank 1.*--form delta"):
        import_population([first, third], checkpoint="toy", out=tmp_path / "p2", generator=gen)
    assert not (tmp_path / "p2" / "manifest.jsonl").exists()  # refused before anything was written
    pop = import_population([first, third], checkpoint="toy", out=tmp_path / "p3", form="delta", generator=gen)
    assert pop.frame.parameterisation["form"] == "delta"
    assert torch.allclose(pop.point(1), lo.to_delta(LoraParameterisation.load_adapter(gen, third)[1]), atol=1e-6)


def test_members_exported_as_checkpoints_import_as_layers_points_and_decode_alike(toy, tmp_path):
    gen = make_toy(seed=0)
    export_population(toy / "pop", tmp_path / "ck", as_="checkpoint", generator=gen)
    folders = sorted((tmp_path / "ck").iterdir())
    assert torch.equal(gen.net.state_dict()["mid.weight"], make_toy(seed=0).net.state_dict()["mid.weight"])  # base restored
    pop = import_population(folders, checkpoint="toy", out=tmp_path / "layers", targets="mid|vol", generator=gen)
    assert pop.frame.parameterisation == {"name": "layers", "targets": "mid|vol"}
    lora = Population(toy / "pop")
    lp, yp = lora.frame.build(gen), pop.frame.build(make_toy(seed=0))
    mine = _points(tmp_path / "layers")
    for i, row in enumerate(lora.rows):
        x, y = lora.point(i), mine[str(row["id"])]
        a = gen.sdf_grid(lp.conditions(x[None]), [0], params=lp.params(x), resolution=8)
        b = gen.sdf_grid(yp.conditions(y[None]), [0], params=yp.params(y), resolution=8)
        assert torch.allclose(a, b, atol=1e-5)
    # the exported checkpoint is a generator of its own: the base with the member's weights in place
    from weightspace.generators.registry import load_generator

    own = load_generator(folders[0])
    x = lora.point([str(r["id"]) for r in lora.rows].index(folders[0].name))
    for name, w in lp.params(x).items():
        assert torch.allclose(own.net.state_dict()[name], w, atol=1e-6)


def test_bad_sources_are_refused_by_name_before_anything_is_written(toy, tmp_path):
    gen = make_toy(seed=0)
    pickle = tmp_path / "ft.safetensors"
    torch.save(gen.net.state_dict(), pickle)  # a PyTorch pickle wearing a safetensors name
    with pytest.raises(InputError, match="ft.safetensors: is a Python pickle"):
        import_population([pickle], checkpoint="toy", out=tmp_path / "a", generator=gen)
    with pytest.raises(InputError, match=r"\.pt: not a \.safetensors file"):
        (tmp_path / "w.pt").write_bytes(b"x")
        import_population([tmp_path / "w.pt"], checkpoint="toy", out=tmp_path / "a", generator=gen)
    from safetensors.torch import save_file

    state = {k: v.clone() for k, v in gen.net.state_dict().items()}
    save_file({k: v for k, v in state.items() if k != "mid.weight"}, str(tmp_path / "short.safetensors"))
    with pytest.raises(InputError, match="short.safetensors: lacks tensor 'mid.weight'"):
        import_population([tmp_path / "short.safetensors"], checkpoint="toy", out=tmp_path / "a", generator=gen)
    save_file({**state, "mid.weight": torch.zeros(3, 3)}, str(tmp_path / "wide.safetensors"))
    with pytest.raises(InputError, match=r"wide.safetensors: tensor 'mid.weight' has shape \(3, 3\)"):
        import_population([tmp_path / "wide.safetensors"], checkpoint="toy", out=tmp_path / "a", generator=gen)
    (tmp_path / "x").mkdir()
    save_file(state, str(tmp_path / "x" / "ft.safetensors"))
    with pytest.raises(InputError, match="would both be member 'ft'"):
        import_population([tmp_path / "x" / "ft.safetensors", pickle], checkpoint="toy", out=tmp_path / "a", generator=gen)
    assert not (tmp_path / "a").exists()

    # a fine-tune that changed tensors outside the targets: kept out, and said so
    save_file({**state, "out.weight": state["out.weight"] + 1}, str(tmp_path / "x" / "ft.safetensors"))
    heard = []
    import_population([tmp_path / "x" / "ft.safetensors"], checkpoint="toy", out=tmp_path / "b", targets="mid",
                      generator=gen, log=heard.append)
    assert any("outside the targets differ" in h and "out.weight" in h for h in heard)
    # the same member id from other bytes is refused; the population keeps what it had
    save_file({**state, "mid.weight": state["mid.weight"] * 2}, str(tmp_path / "x" / "ft.safetensors"))
    with pytest.raises(InputError, match="member 'ft' is already in"):
        import_population([tmp_path / "x" / "ft.safetensors"], checkpoint="toy", out=tmp_path / "b", targets="mid", generator=gen)
    assert len(Population(tmp_path / "b")) == 1


def test_an_anchor_is_required_where_the_generator_fits_under_another(toy, tmp_path, monkeypatch):
    """Foreign adapters carry no anchor; a generator whose members are fitted under the mean encoding (latent
    diffusion) would decode them under zeros, somewhere they were never fitted: say so and ask."""
    gen = make_toy(seed=0)
    export_population(toy / "pop", tmp_path / "ad", generator=gen)
    one = sorted((tmp_path / "ad").iterdir())[0]
    (one / "anchor.safetensors").unlink()
    monkeypatch.setattr(ToyGenerator, "fit_anchor", "mean", raising=False)
    with pytest.raises(InputError, match="--anchor-from"):
        import_population([one], checkpoint="toy", out=tmp_path / "a", generator=gen)
    pop = import_population([one], checkpoint="toy", out=tmp_path / "a", anchor_from=toy / "pop", generator=gen)
    assert torch.equal(pop.frame.anchor, Population(toy / "pop").frame.anchor)
    with pytest.raises(InputError, match="is not a member"):
        export_population(toy / "pop", tmp_path / "e", members=["nope"], generator=gen)


def test_subspace_samples_keep_their_points_and_export_as_adapters(toy, tmp_path):
    """A sample exists only in the decode that drew it: its point is kept (points/), decodes again to the
    same grid at its seed, and goes out as a PEFT adapter that imports back as the same point."""
    import numpy as np

    r = CliRunner().invoke(app, ["subspace", "fit", str(toy / "pop"), "--components", "2", "--out", str(tmp_path / "sub")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["decode", str(tmp_path / "sub"), "--samples", "2", "--out", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in (tmp_path / "s" / "manifest.jsonl").read_text().splitlines()]
    assert [row["point"] for row in rows] == ["points/sample-0000.safetensors", "points/sample-0001.safetensors"]
    r = CliRunner().invoke(app, ["decode", str(tmp_path / "s" / rows[0]["point"]), "--out", str(tmp_path / "again")])
    assert r.exit_code == 0, r.output
    again, first = np.load(tmp_path / "again" / "grids" / "sample-0000.npy"), np.load(tmp_path / "s" / rows[0]["grid"])
    assert np.allclose(again, first, atol=1e-6)  # decoded alone, not in a batch of 2: float rounding apart

    r = CliRunner().invoke(app, ["population", "export", str(tmp_path / "s"), "--as", "adapter", "--out", str(tmp_path / "ad")])
    assert r.exit_code == 0, r.output
    # the subspace is in delta form (B A per layer); a sample is a sum of adapters, so it goes out at the
    # lowest rank that holds every layer's B A, and comes back as the same B A
    ranks = {json.loads((f / "adapter_config.json").read_text())["r"] for f in (tmp_path / "ad").iterdir()}
    assert ranks and all(r > 2 for r in ranks)  # above the members' rank 2
    pop = import_population(sorted((tmp_path / "ad").iterdir()), checkpoint="toy", out=tmp_path / "back", form="delta",
                            generator=make_toy(seed=0))
    from weightspace.space.store import load_point

    for i, row in enumerate(pop.rows):
        want = load_point(tmp_path / "s" / "points" / f"{row['id']}.safetensors").point
        assert torch.allclose(pop.point(i), want, atol=1e-5), (pop.point(i) - want).abs().max()
    # a rerun of the decode replaces its points with the rest of its files
    r = CliRunner().invoke(app, ["decode", str(tmp_path / "sub"), "--samples", "1", "--out", str(tmp_path / "s"), "--overwrite"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "s" / "points").iterdir()) == ["sample-0000.safetensors"]


def _peft_adapter(gen, folder, seed=0, **config):
    """An adapter PEFT itself trains and saves on the toy net (random factors, as after training)."""
    import copy

    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(copy.deepcopy(gen.net), LoraConfig(init_lora_weights=False, **{"r": 2, "lora_alpha": 4, **config}))
    model.save_pretrained(str(folder))
    return model


@pytest.mark.parametrize("setting", [{"modules_to_save": ["film"]}, {"exclude_modules": ["mid"]}])
def test_peft_settings_that_a_point_cannot_hold_are_refused_by_name(toy, tmp_path, setting):
    """modules_to_save stores whole weights beside the factors (they were dropped without a word: a point
    PEFT merges to other weights), exclude_modules takes modules out of target_modules (it was read as a
    missing tensor): both name the config field."""
    gen = make_toy(seed=0)
    _peft_adapter(gen, tmp_path / "a", target_modules=["mid", "inp"], **setting)
    with pytest.raises(InputError, match=f"adapter_config.json: settings \\['{next(iter(setting))}'\\]"):
        import_population([tmp_path / "a"], checkpoint="toy", out=tmp_path / "p", anchor="zeros", generator=gen)
    if "modules_to_save" not in setting:
        return
    # the config field taken out: the file still holds the module's weights, and says so
    cfg = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps({**cfg, "modules_to_save": None}))
    with pytest.raises(InputError, match="adapter_model.safetensors: holds .* besides the LoRA factors"):
        import_population([tmp_path / "a"], checkpoint="toy", out=tmp_path / "p", anchor="zeros", generator=gen)
    assert not (tmp_path / "p").exists()


def test_adapters_saved_from_an_injected_net_are_read(toy, tmp_path):
    """`inject_adapter_in_model` + `get_peft_model_state_dict` (PEFT's way without a PeftModel) names the
    factors without the `base_model.model.` prefix; they were refused as missing tensors."""
    import copy

    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
    from safetensors.torch import save_file

    gen = make_toy(seed=0)
    config = LoraConfig(r=2, lora_alpha=4, target_modules=["mid", "vol"], init_lora_weights=False)
    torch.manual_seed(0)
    state = get_peft_model_state_dict(inject_adapter_in_model(config, copy.deepcopy(gen.net)))
    assert not any(k.startswith("base_model.") for k in state)
    for folder, prefix in (("bare", ""), ("prefixed", "base_model.model.")):
        config.save_pretrained(str(tmp_path / folder))
        save_file({prefix + k: v.contiguous() for k, v in state.items()}, str(tmp_path / folder / "adapter_model.safetensors"))
    pop = import_population([tmp_path / "bare", tmp_path / "prefixed"], checkpoint="toy", out=tmp_path / "p",
                            anchor="zeros", generator=gen)
    assert torch.equal(pop.point(0), pop.point(1)) and pop.point(0).abs().sum() > 0


def test_an_adapter_of_another_base_is_refused_naming_its_file(toy, tmp_path):
    """An adapter trained on another net: its target_modules match nothing here, or its factors have other
    shapes; both errors named neither the adapter nor what to check."""
    gen, wide = make_toy(seed=0), make_toy(seed=0, hidden=16)
    _peft_adapter(wide, tmp_path / "wide", target_modules=["mid"])
    with pytest.raises(InputError, match=r"wide/adapter_model.safetensors: tensor 'base_model.model.mid.lora_A.weight' "
                                         r"has shape \(2, 16\).*\(2, 32\).*another base"):
        import_population([tmp_path / "wide"], checkpoint="toy", out=tmp_path / "p", anchor="zeros", generator=gen)
    cfg = json.loads((tmp_path / "wide" / "adapter_config.json").read_text())
    (tmp_path / "wide" / "adapter_config.json").write_text(json.dumps({**cfg, "target_modules": ["attn.q"]}))
    with pytest.raises(InputError, match=r"wide/adapter_config.json: target_modules \['attn.q'\] name no module.*another base"):
        import_population([tmp_path / "wide"], checkpoint="toy", out=tmp_path / "p", anchor="zeros", generator=gen)


def test_a_source_named_dot_is_the_member_of_its_folder_name(toy, tmp_path, monkeypatch):
    """`population import .` inside an adapter folder made member '' (and `export` then wrote into --out itself)."""
    gen = make_toy(seed=0)
    export_population(toy / "pop", tmp_path / "ad", generator=gen)
    one = sorted((tmp_path / "ad").iterdir())[0]
    monkeypatch.chdir(one)
    pop = import_population(["."], checkpoint="toy", out=tmp_path / "p", generator=gen)
    assert [r["id"] for r in pop.rows] == [one.name]


def test_an_adapter_added_to_a_population_is_rescaled_into_its_alpha(toy, tmp_path):
    """Adding to a fitted population: an adapter of its rank and modules but another lora_alpha (or a
    target_modules list naming the same modules) was refused as another layout; the docs promise the
    same B A at the population's alpha."""
    import shutil

    gen = make_toy(seed=0)
    shutil.copytree(toy / "pop", tmp_path / "pop")
    _peft_adapter(gen, tmp_path / "mine", target_modules=["mid", "vol"], lora_alpha=3)
    pop = import_population([tmp_path / "mine"], checkpoint="toy", out=tmp_path / "pop", anchor_from=toy / "pop",
                            generator=gen, log=lambda s: None)
    assert len(pop) == 4 and pop.frame == Population(toy / "pop").frame
    want_param, want = LoraParameterisation.load_adapter(gen, tmp_path / "mine")
    assert torch.allclose(pop.frame.build(gen).to_delta(pop.point(3)), want_param.to_delta(want), atol=1e-6)


def test_editing_an_imported_population_says_its_members_have_no_shapes(toy, tmp_path):
    """`subspace edit --by` labels members by their shapes; an imported population has none, and the error
    named 'None/manifest.jsonl' as its data folder."""
    gen = make_toy(seed=0)
    export_population(toy / "pop", tmp_path / "ad", generator=gen)
    import_population(sorted((tmp_path / "ad").iterdir()), checkpoint="toy", out=tmp_path / "p", generator=gen)
    r = CliRunner().invoke(app, ["subspace", "fit", str(tmp_path / "p"), "--components", "2", "--out", str(tmp_path / "sub")])
    assert r.exit_code == 0, r.output
    for by in ("b1", "params.minor", "family:torus"):
        r = CliRunner().invoke(app, ["subspace", "edit", str(tmp_path / "sub"), "--by", by, "--out", str(tmp_path / "e")])
        assert isinstance(r.exception, InputError) and "was imported" in str(r.exception), r.output
        assert "None" not in str(r.exception)
