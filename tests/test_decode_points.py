"""Decoding points: the base point reproduces the base model; batched and looped decodes agree; files."""

import functools

import numpy as np
import pytest
import torch
import trimesh
from toy_generator import ToyGenerator, make_toy, make_toy_data

from weightspace.decode.points import decode_points, point_seeds, write_decoded
from weightspace.decode.sources import DecodeConfig, decode_source
from weightspace.space.parameterisations import make_parameterisation
from weightspace.space.population import PopulationConfig, build_population
from weightspace.space.store import load_point, save_point
from weightspace.space.subspace import fit_subspace

CASES = [("condition", {}), ("lora", {"rank": 2, "targets": "mid|vol"}), ("layers", {"targets": "all"})]


class Unbatched(ToyGenerator):
    sdf_grid_batched = None  # a generator without per-item batching: decode must loop


@pytest.mark.parametrize("name,options", CASES)
def test_base_point_reproduces_the_base_model(name, options):
    for gen in (Unbatched(seed=1), make_toy(seed=1)):
        param = make_parameterisation(gen, name, **options)
        param.set_anchor(torch.randn(1, *gen.condition_shape, generator=torch.Generator().manual_seed(0)))
        seeds = [4, 5]
        grids = decode_points(gen, param, param.base_point().expand(2, -1), seeds)
        with torch.no_grad():
            ref = gen.sdf_grid(param.anchor.expand(2, -1, -1), seeds)
            ref1 = torch.cat([gen.sdf_grid(param.anchor, [s]) for s in seeds])
        if isinstance(gen, Unbatched):
            # item by item through params= is bit for bit the base model at the same batch size
            assert torch.equal(grids, ref if name == "condition" else ref1)
        else:
            torch.testing.assert_close(grids, ref, atol=1e-6, rtol=0)  # vmap may reorder float sums


@pytest.mark.parametrize("name,options", CASES)
def test_batched_and_looped_decodes_agree(name, options):
    gen, plain = make_toy(seed=2), Unbatched(seed=2)
    p1, p2 = make_parameterisation(gen, name, **options), make_parameterisation(plain, name, **options)
    pts = p1.base_point() + 0.05 * torch.randn(3, p1.layout.size, generator=torch.Generator().manual_seed(1))
    a = decode_points(gen, p1, pts, [1, 2, 3], batch_size=2)
    b = decode_points(plain, p2, pts, [1, 2, 3], batch_size=2)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(a[0], a[1])
    c = decode_points(gen, p1, pts[:1], [9])
    assert not torch.equal(c[0], a[0])  # seeds matter


def test_written_grids_and_meshes(tmp_path):
    grid = np.linalg.norm(np.stack(np.meshgrid(*[np.linspace(-1, 1, 16)] * 3, indexing="ij"), -1), axis=-1) - 0.5
    rows = write_decoded(tmp_path, grid[None].astype(np.float32), ["ball"], [7])
    assert rows[0]["seed"] == 7 and rows[0]["vertices"] > 0
    assert np.array_equal(np.load(tmp_path / rows[0]["grid"], allow_pickle=False), grid.astype(np.float32))
    mesh = trimesh.load(tmp_path / rows[0]["mesh"])
    assert mesh.is_watertight and abs(mesh.volume - 4 / 3 * np.pi * 0.125) < 0.05


def test_decode_point_population_and_subspace_sources(tmp_path):
    loader = functools.partial(make_toy, seed=0)
    data = make_toy_data(tmp_path / "data", count=4, resolution=10)
    cfg = PopulationConfig(checkpoint="toy", parameterisation="lora", data=str(data), out=str(tmp_path / "pop"),
                           options={"rank": 2, "targets": "mid"}, steps=3)
    pop = build_population(cfg, generator=loader)
    fit_subspace(pop, 2, out=tmp_path / "sub")
    gen = loader()
    rows = decode_source(DecodeConfig(source=str(tmp_path / "pop"), out=str(tmp_path / "d1")), generator=gen)
    assert [r["id"] for r in rows] == [r["id"] for r in pop.rows]
    rows = decode_source(DecodeConfig(source=str(tmp_path / "sub"), out=str(tmp_path / "d2"), samples=3, seed=5), generator=gen)
    assert len(rows) == 3 and rows[0]["seed"] == point_seeds(5, 3)[0]
    save_point(tmp_path / "p.safetensors", pop.point(0), pop.frame)
    assert load_point(tmp_path / "p.safetensors").frame == pop.frame
    rows = decode_source(DecodeConfig(source=str(tmp_path / "p.safetensors"), out=str(tmp_path / "d3"), meshes=False), generator=gen)
    g_pop = np.load(tmp_path / "d1" / "grids" / f"{pop.rows[0]['id']}.npy")
    g_pt = np.load(tmp_path / "d3" / "grids" / "p.npy")
    assert rows[0]["seed"] == point_seeds(0, 1)[0]
    np.testing.assert_allclose(g_pop, g_pt, atol=1e-6)  # batch of 4 (vmap) vs batch of 1
    from weightspace.runtime.errors import InputError

    with pytest.raises(InputError, match=r"pop \(made on toy; decoding with toy\) vs generator: base checkpoints differ"):
        decode_source(DecodeConfig(source=str(tmp_path / "pop"), out=str(tmp_path / "d4")), generator=make_toy(seed=5))
    with pytest.raises(InputError, match="nowhere: not found"):
        decode_source(DecodeConfig(source=str(tmp_path / "nowhere"), out=str(tmp_path / "d5")), generator=gen)
    with pytest.raises(InputError, match="names no kind .a population's member shard"):
        decode_source(DecodeConfig(source=str(tmp_path / "pop" / pop.rows[0]["shard"]), out=str(tmp_path / "d6")), generator=gen)
    # a subspace file by its path decodes as its folder does
    from weightspace.decode.sources import recorded_checkpoint

    assert recorded_checkpoint(tmp_path / "sub" / "subspace.safetensors") == recorded_checkpoint(tmp_path / "sub") == "toy"
    rows = decode_source(DecodeConfig(source=str(tmp_path / "sub" / "subspace.safetensors"), out=str(tmp_path / "d7"),
                                      samples=3, seed=5, meshes=False), generator=gen)
    np.testing.assert_array_equal(np.load(tmp_path / "d7" / "grids" / "sample-0000.npy"),
                                  np.load(tmp_path / "d2" / "grids" / "sample-0000.npy"))
    # decoding into a data folder or a population would replace their manifest and grids: refused, nothing written
    before = (data / "manifest.jsonl").read_bytes()
    for out, what in ((data, "a shape dataset"), (tmp_path / "pop", "a population")):
        with pytest.raises(InputError, match=f"holds {what}.*, not an earlier decode"):
            decode_source(DecodeConfig(source=str(tmp_path / "p.safetensors"), out=str(out)), generator=gen)
    assert (data / "manifest.jsonl").read_bytes() == before
    # a finished decode is replaced only when asked
    with pytest.raises(InputError, match="already holds an earlier decode .decode.json.; pass --overwrite"):
        decode_source(DecodeConfig(source=str(tmp_path / "p.safetensors"), out=str(tmp_path / "d3"), meshes=False), generator=gen)
    (tmp_path / "d3" / "meshes").mkdir(exist_ok=True)
    (tmp_path / "d3" / "meshes" / ".sample-0028.ply.k3j9.tmp").write_text("half a mesh")  # what a killed decode leaves
    decode_source(DecodeConfig(source=str(tmp_path / "p.safetensors"), out=str(tmp_path / "d3"), meshes=False, overwrite=True),
                  generator=gen)
    assert not (tmp_path / "d3" / "meshes" / ".sample-0028.ply.k3j9.tmp").exists()
    # observing into a population is refused the same way
    from weightspace.data.observe import observe_folder

    with pytest.raises(InputError, match="holds a population .*, not an observations set"):
        observe_folder(data, tmp_path / "pop", kind="clean", n=16)

    # every folder made above is told apart by runtime.folders.folder_kind
    from weightspace.runtime.folders import folder_kind

    observe_folder(data, tmp_path / "obs", kind="clean", n=16)
    kinds = {name: folder_kind(tmp_path / name) for name in ("data", "pop", "sub", "d1", "obs", "nowhere")}
    assert kinds == {"data": "data", "pop": "population", "sub": "subspace", "d1": "decode", "obs": "observations", "nowhere": None}
    # a decode killed before its decode.json is still an earlier decode (decoding there again is allowed)
    (tmp_path / "d3" / "decode.json").unlink()
    assert folder_kind(tmp_path / "d3") == "decode"
    decode_source(DecodeConfig(source=str(tmp_path / "p.safetensors"), out=str(tmp_path / "d3"), meshes=False), generator=gen)
    # a subspace written into the data folder would replace its summary.json; into the population, sit in it
    (data / "summary.json").write_text('{"count": 4}')  # as `data make` writes (the toy data has none)
    summary = (data / "summary.json").read_bytes()
    for out, what in ((data, "a shape dataset"), (tmp_path / "pop", "a population"), (tmp_path / "d1", "an earlier decode")):
        with pytest.raises(InputError, match=f"--out: .* holds {what}.*, not a subspace"):
            fit_subspace(pop, 2, out=out)
        assert not (out / "subspace.safetensors").exists()
    assert (data / "summary.json").read_bytes() == summary
    with pytest.raises(InputError, match="already holds a subspace .* pass --overwrite"):
        fit_subspace(pop, 1, out=tmp_path / "sub")
    fit_subspace(pop, 1, out=tmp_path / "sub", overwrite=True)


def test_every_output_folder_refuses_another_kind(tmp_path):
    """data make, population build, subspace fit, decode and data observe each refuse a folder of another
    kind by name, before writing (data make once rewrote a subspace's summary.json; an --overwrite of it
    deleted a decode's grids), and a file given as --out."""
    from weightspace.data.make import make_dataset
    from weightspace.data.observe import observe_folder
    from weightspace.runtime.errors import InputError

    loader = functools.partial(make_toy, seed=0)
    data = make_toy_data(tmp_path / "data", count=3, resolution=10)
    (data / "summary.json").write_text("{}")
    pop = build_population(PopulationConfig(checkpoint="toy", parameterisation="lora", data=str(data), out=str(tmp_path / "pop"),
                                            options={"rank": 2, "targets": "mid"}, steps=2), generator=loader)
    fit_subspace(pop, 1, out=tmp_path / "sub")
    decode_source(DecodeConfig(source=str(tmp_path / "sub"), out=str(tmp_path / "dec"), samples=2, meshes=False), generator=loader())
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    for folder in ("sub", "dec", "pop"):
        with pytest.raises(InputError, match=f"{folder} holds .*, not a shape dataset"):
            make_dataset(tmp_path / folder, family="torus", count=1, resolution=16, n_points=8, progress=False, overwrite=True)
    for folder in ("sub", "dec", "data"):
        with pytest.raises(InputError, match=f"{folder} holds .*, not a population"):
            build_population(PopulationConfig(checkpoint="toy", parameterisation="lora", data=str(data), out=str(tmp_path / folder),
                                              options={"rank": 2, "targets": "mid"}, steps=2), generator=loader)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match="afile is a file"):
        observe_folder(data, tmp_path / "afile", kind="clean", n=8)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p.name != "afile"} == before


def test_a_decode_killed_while_writing_leaves_no_item_to_a_later_smaller_decode(tmp_path, monkeypatch):
    """A decode killed before its manifest left the grids it had written with nothing naming them. A later,
    smaller decode into the same folder then left them beside its own, to pass as its items: now the files a
    decode is about to write stay on record (.replacing.json) until its manifest is written."""
    from weightspace.decode import points as points_module
    from weightspace.decode import sources as sources_module
    from weightspace.runtime.folders import REPLACING

    gen = make_toy(seed=0)
    data = make_toy_data(tmp_path / "data", count=4, resolution=10)
    pop = build_population(PopulationConfig(checkpoint="toy", parameterisation="lora", data=str(data), out=str(tmp_path / "pop"),
                                            options={"rank": 2, "targets": "mid"}, steps=2), generator=lambda: gen)
    fit_subspace(pop, 2, out=tmp_path / "sub")
    out = tmp_path / "d"
    real = points_module.grid_to_mesh
    written = []

    def dies_on_the_third_mesh(grid):
        written.append(1)
        if len(written) == 3:
            raise KeyboardInterrupt  # a Ctrl-C between two items, before the manifest
        return real(grid)

    monkeypatch.setattr(points_module, "grid_to_mesh", dies_on_the_third_mesh)
    with pytest.raises(KeyboardInterrupt):
        decode_source(DecodeConfig(source=str(tmp_path / "sub"), out=str(out), samples=5), generator=gen)
    assert len(list((out / "grids").iterdir())) == 3 and not (out / "manifest.jsonl").exists() and (out / REPLACING).is_file()
    monkeypatch.setattr(points_module, "grid_to_mesh", real)
    assert sources_module.write_decoded is points_module.write_decoded
    rows = decode_source(DecodeConfig(source=str(tmp_path / "sub"), out=str(out), samples=1, meshes=False), generator=gen)
    assert sorted(p.name for p in (out / "grids").iterdir()) == [rows[0]["grid"].split("/")[1]] == ["sample-0000.npy"]
    assert list((out / "meshes").iterdir()) == [] and not (out / REPLACING).exists()


def test_a_replacement_record_names_nothing_outside_its_own_subfolders(tmp_path):
    """.replacing.json is read back after a kill: what it lists is removed only when it is a plain file in one
    of the command's own subfolders, so an edited or foreign record cannot remove anything else."""
    from weightspace.runtime.folders import REPLACING, finish_replacing, start_replacing

    out = tmp_path / "d"
    (out / "grids").mkdir(parents=True)
    (tmp_path / "keep.npy").write_text("not ours")
    (out / "notes.txt").write_text("not ours")
    (out / "grids" / "old.npy").write_text("an earlier item")
    (out / REPLACING).write_text('["../keep.npy", "notes.txt", "grids/../notes.txt", "grids/old.npy", 7, "grids/.hidden"]')
    recorded = start_replacing(out, ["grids/new.npy", "/abs/path.npy"], {"grid": "grids"})
    assert recorded == {"grids/old.npy", "grids/new.npy"}
    finish_replacing(out, recorded, [{"grid": "grids/new.npy"}], {"grid": "grids"})
    assert not (out / "grids" / "old.npy").exists() and not (out / REPLACING).exists()
    assert (tmp_path / "keep.npy").exists() and (out / "notes.txt").exists()


def test_a_population_with_a_gap_decodes_each_member_with_its_fidelity_seed(tmp_path):
    """`decode` seeded a population's members by their position in the manifest, while the build's fidelity
    check decodes member i with decode_seed(0, i). Once a member is missing (recorded as failed on Ray, say)
    every later member decoded with another seed than the one its fidelity was measured with."""
    gen = make_toy(seed=0)
    data = make_toy_data(tmp_path / "data", count=4, resolution=10)
    build_population(PopulationConfig(checkpoint="toy", parameterisation="lora", data=str(data), out=str(tmp_path / "pop"),
                                      options={"rank": 2, "targets": "mid"}, steps=2), generator=lambda: gen)
    manifest = tmp_path / "pop" / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join(line for line in lines if '"index": 1,' not in line) + "\n")  # member 1 failed
    from weightspace.space.store import Population

    pop = Population(tmp_path / "pop")
    assert [r["index"] for r in pop.rows] == [0, 2, 3]
    rows = decode_source(DecodeConfig(source=str(tmp_path / "pop"), out=str(tmp_path / "d"), meshes=False), generator=gen)
    assert [r["seed"] for r in rows] == [r["metrics"]["decode_seed"] for r in pop.rows]
