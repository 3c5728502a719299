"""The report page: verdicts with numbers, labelled mesh views with renders and badges, offline, under its size budget."""

import json
import re
import shutil

import numpy as np
import pytest
from report_fixtures import shared_studies
from typer.testing import CliRunner

from weightspace.analysis.shapes import ball, sdf_grid, torus
from weightspace.decode.mesh import grid_to_mesh
from weightspace.report.html import write_page, write_report
from weightspace.report.meshviews import MeshCard, cluster_vertices, decimate, view_data
from weightspace.report.verdicts import VERDICTS, read_finding
from weightspace.runtime.errors import InputError


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    root = tmp_path_factory.mktemp("studies")
    shutil.copytree(shared_studies(tmp_path_factory), root, dirs_exist_ok=True)
    return {"interpolate": root / "toy-a" / "interpolate", "subspace": root / "toy-a" / "subspace", "fit": root / "toy-a" / "fit",
            "other": root / "toy-b" / "subspace"}


def _ours(page: str) -> str:
    """The page without plotly.js's text (which holds URLs and markup-like code of its own)."""
    return re.sub(r'<script type="text/plain" id="ws-plotly">.*?</script>', "", page, flags=re.S)


def _no_fetch(page: str) -> None:
    """No element of the page points outside it (the browser test watches the requests themselves)."""
    page = _ours(page)
    assert not re.search(r"<script[^>]+src=", page) and not re.search(r"<link[^>]+href=", page)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)


@pytest.mark.parametrize("study", ["interpolate", "subspace", "fit"])
def test_study_page_says_what_was_found_and_labels_every_mesh(studies, study):
    folder = studies[study]
    page = write_report(folder).read_text()
    f = read_finding(folder)
    assert f.study == study and f.verdict and f.line
    assert 'class="verdict-line"' in page and f.line.split(":")[0][:30] in page.replace("&#x27;", "'")
    assert page.count('id="ws-plotly"') == 1 and page.count("plotly.js v") == 1  # inlined once
    _no_fetch(page)
    meshes = sorted(folder.rglob("meshes/*.ply"))
    assert meshes and page.count('class="mesh-view') >= len(meshes)
    for path in meshes:  # every mesh has its render file, for papers
        assert (path.parent.parent / "renders" / f"{path.stem}.png").is_file()
    labels = re.findall(r"<span class=mv-label>([^<]+)</span>", page)
    assert all(f"toy-a · {study} · " in lab for lab in labels)
    assert "robust (" in page and not re.search(r"<t[dh][^>]*>\w+\.\w+\.", _ours(page))  # readable tables, not flattened keys


def test_interpolation_page_shows_the_shapes_either_side_of_the_change(studies):
    page = write_report(studies["interpolate"]).read_text()
    res = json.loads((studies["interpolate"] / "results.json").read_text())
    assert len(res["transitions"]) == 1
    assert "change 1: (1, 0, 0) → (2, 0, 0)" in page
    assert page.count('class="mesh-view large"') == 2
    assert read_finding(studies["interpolate"]).verdict == "supported"


def test_located_changes_table_writes_betti_numbers_as_the_page_does(studies):
    page = write_report(studies["interpolate"]).read_text()
    located = page.split("<h4>located topology changes</h4>")[1].split("</table>")[0]
    assert "<td>(1, 0, 0)</td>" in located and "<td>(2, 0, 0)</td>" in located  # not the list's repr, [1, 0, 0]
    assert "[" not in located


def test_subspace_kinds_are_named_alike_in_figure_tables_and_captions(studies):
    """The figure and the by-kind table said 'full gaussian', the captions and the every-sample table 'full_gaussian'."""
    page = _ours(write_report(studies["subspace"]).read_text())
    labels = re.findall(r"<span class=mv-label>([^<]+)</span>", page)
    assert any(" · full gaussian #" in lab for lab in labels) and any(" · condition noise #" in lab for lab in labels)
    every = page.split("<h4>every sample</h4>")[1].split("</table>")[0]
    assert "<td>full gaussian</td>" in every
    assert "full_gaussian" not in every and not any("_" in lab for lab in labels)


def test_findings_are_numbers(studies):
    for folder in studies.values():
        f = read_finding(folder)
        assert f.verdict in VERDICTS or f.verdict in ("kept, not specific", "unclear at this size")
        text = json.dumps(f.headline)
        assert f.line not in text  # the sentence stays on the page and the console
    sub = read_finding(studies["subspace"]).headline
    r = sub["kept_and_valid"]["subspace"]
    assert 0 <= r["low"] <= r["rate"] <= r["high"] <= 1 and r["n"] == 3


def test_a_page_of_several_folders_puts_generators_side_by_side(studies, tmp_path):
    out, dec = write_page([studies["subspace"].parent, studies["other"]], tmp_path / "page.html")
    page = out.read_text()
    assert "Generators side by side" in page and "table class=glance" in page
    assert dec.meshes == page.count('class="mesh-view')
    assert out.stat().st_size < 10e6


def test_every_figure_makes_room_for_its_tick_labels(studies, tmp_path):
    """Side by side, the claim-2 figure is narrow: plotly turned its kind names on end and the fixed bottom margin
    cut 'condition noise' to 'condition nois'. Every axis of every figure grows its margin to fit its labels."""
    out, _ = write_page([studies["subspace"].parent, studies["other"]], tmp_path / "page.html")
    figs = json.loads(re.search(r'<script type="application/json" id="ws-figs">(.*?)</script>', out.read_text(), re.S).group(1))
    assert "cmp-subspace" in figs and len(figs) > 3
    for key, fig in figs.items():
        axes = {k: v for k, v in fig["layout"].items() if k.startswith(("xaxis", "yaxis"))}
        assert {"xaxis", "yaxis"} <= set(axes) and all(a.get("automargin") is True for a in axes.values()), (key, axes)


def test_two_studies_of_one_kind_on_one_generator_are_labelled(studies, tmp_path):
    """The glance table put two verdicts in one cell with nothing to tell them apart; each is now labelled
    with its folder's name, there and in the verdict lines."""
    for name in ("results-a", "results-b"):  # the default --out is results/<study>: the last names are the same
        shutil.copytree(studies["subspace"], tmp_path / name / "subspace")
    out, _ = write_page([tmp_path / "results-a" / "subspace", tmp_path / "results-b" / "subspace", studies["other"]],
                        tmp_path / "page.html")
    page = _ours(out.read_text())
    cell = re.search(r"<table class=glance>.*?</table>", page, flags=re.S).group(0)
    assert "<small>results-a/subspace</small>" in cell and "<small>results-b/subspace</small>" in cell
    assert "· results-a/subspace</b>" in page and "· results-b/subspace</b>" in page
    assert page.count("/subspace</b>") == 2  # the study alone on its generator needs no label
    # and so are their sections' headings, which read alike before
    headings = re.findall(r"<section class=study [^>]*><h2>([^<]*)<small>", page)
    assert [h for h in headings if "results-" in h] == ["Claim 2 · subspace · toy-a · results-a/subspace ",
                                                        "Claim 2 · subspace · toy-a · results-b/subspace "], headings
    # and so are their bars in the side-by-side figure, which both were named toy-a
    figs = json.loads(re.search(r'<script type="application/json" id="ws-figs">(.*?)</script>', page, flags=re.S).group(1))
    names = [trace["name"] for trace in figs["cmp-subspace"]["data"]]
    assert sorted(names) == ["toy-a · results-a/subspace", "toy-a · results-b/subspace", "toy-b"], names


def test_a_study_given_twice_is_shown_once(studies, tmp_path):
    """A folder given twice, or given and found again below another folder given, made two sections of one study."""
    out, _ = write_page([studies["subspace"], studies["subspace"].parent, studies["subspace"]], tmp_path / "page.html")
    page = _ours(out.read_text())
    assert page.count("<section class=study ") == 3  # toy-a's interpolate, subspace and fit, each once
    assert page.count("Claim 2 · subspace · toy-a") == 2  # its verdict line and its section, without a label


def test_cli_report_writes_one_page(studies, tmp_path):
    from weightspace.cli import _register, app

    _register()
    result = CliRunner().invoke(app, ["report", str(studies["fit"]), "--out", str(tmp_path / "fit.html")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "fit.html").is_file() and "faces" in result.output
    (tmp_path / "pages").mkdir()  # a folder as --out: the page goes inside it (it crashed in the final rename)
    result = CliRunner().invoke(app, ["report", str(studies["fit"]), "--out", str(tmp_path / "pages")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "pages" / "report.html").is_file()


def test_cli_report_out_ending_in_a_slash_is_a_folder(studies, tmp_path):
    """`--out new/` wrote the page as a file named `new` (Path drops the slash), not new/report.html."""
    from weightspace.cli import _register, app

    _register()
    result = CliRunner().invoke(app, ["report", str(studies["fit"]), "--out", f"{tmp_path / 'new'}/"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "new" / "report.html").is_file()


def test_report_refuses_to_write_over_a_file_that_is_not_a_page(studies, tmp_path):
    """`--out runs/ck/config.json` (a completion slip) replaced a checkpoint's config.json with the page."""
    config = tmp_path / "config.json"
    config.write_text('{"kind": "wala"}')
    with pytest.raises(InputError, match=rf"{re.escape(str(config))}: .*not an HTML page"):
        write_page([studies["fit"]], config)
    assert config.read_text() == '{"kind": "wala"}'
    (tmp_path / "old.html").write_text("old page")
    assert write_page([studies["fit"]], tmp_path / "old.html")[0].read_text() != "old page"  # a page is replaced


def test_report_of_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        write_report(tmp_path / "nope")
    with pytest.raises(InputError, match="no study results"):
        write_page([tmp_path], tmp_path / "x.html")



def test_a_folder_without_a_study_given_beside_one_is_named_not_left_off(studies, tmp_path):
    """`report STUDY DECODED` wrote a page of the study alone and said nothing of the folder it left off. (A subspace
    invert or edit folder gets a section of its own: tests/test_weightspace_cli.py; a damaged one is named.)"""
    decoded = tmp_path / "decoded"
    (decoded / "grids").mkdir(parents=True)
    (decoded / "decode.json").write_text("{}")
    with pytest.raises(InputError, match=rf"no study results .* in or below {re.escape(str(decoded))}"):
        write_page([studies["fit"], decoded], tmp_path / "page.html")
    inverted = tmp_path / "inverted"
    inverted.mkdir()
    (inverted / "invert.json").write_text("{}")
    with pytest.raises(InputError, match=rf"{re.escape(str(inverted / 'manifest.jsonl'))}"):
        write_page([studies["fit"], inverted], tmp_path / "page.html")
    assert not (tmp_path / "page.html").exists()


def test_decimation_keeps_the_shape_under_its_face_budget():
    mesh = grid_to_mesh(sdf_grid(torus(), 48))
    v, f = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    vd, fd = decimate(v, f, 800)
    assert len(fd) <= 800 < len(f)
    assert fd.max() < len(vd) and np.all(fd[:, 0] != fd[:, 1]) and np.all(fd[:, 1] != fd[:, 2])
    lo, hi = v.min(0), v.max(0)  # cluster means stay inside the mesh's bounding box
    assert np.all(vd >= lo - 1e-9) and np.all(vd <= hi + 1e-9)
    assert decimate(v, f, len(f))[1] is f  # under budget: the mesh itself
    vc, fc = cluster_vertices(v, f, 1000)  # cells far finer than the voxels merge only marching cubes' near-duplicates
    assert len(fc) > 0.97 * len(f)


def test_view_data_round_trips_within_quantisation():
    mesh = grid_to_mesh(sdf_grid(ball(), 20))
    v, f = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    d = view_data(v, f, "ok")
    import base64

    q = np.frombuffer(base64.b64decode(d["v"]), "<u2").reshape(-1, 3)
    back = q * (2 * d["box"] / 65535) - d["box"]
    assert np.abs(back - v).max() < 2 * d["box"] / 65535
    assert np.array_equal(np.frombuffer(base64.b64decode(d["f"]), "<u2").reshape(-1, 3), f)


def _eye(view):
    elev, azim = np.radians(view)
    return np.array([np.cos(elev) * np.cos(azim), np.cos(elev) * np.sin(azim), np.sin(elev)])  # (3,) towards the camera


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_the_families_figure_looks_at_a_flat_shape_s_face_so_its_hole_shows(axis):
    """The demo's ladder, yawed edge-on to the one fixed view, showed as a line, not as rails with three holes."""
    from weightspace.report.gallery import VIEW, facing_view

    ring = grid_to_mesh(sdf_grid(torus(major=0.55, minor=0.12, axis=axis), 32))
    normal = np.eye(3)[axis]
    assert abs(_eye(facing_view(ring.vertices, ring.faces)) @ normal) > 0.85  # within about 30 degrees of the face
    blob = grid_to_mesh(sdf_grid(ball(radius=0.5), 32))
    assert facing_view(blob.vertices, blob.faces) == VIEW  # a round shape has no face: the page's one view


def test_badge_marks_a_topology_other_than_intended(tmp_path):
    card = MeshCard(tmp_path / "a.ply", "g", "subspace", "random", "#0", (2, 0, 0), [(1, 0, 0)])
    assert card.differs and card.colour == "bad"
    assert not MeshCard(tmp_path / "a.ply", "g", "interpolate", "path", "t = 0.5", (2, 0, 0), [(1, 0, 0), (2, 0, 0)]).differs
    assert MeshCard(tmp_path / "a.ply", "g", "fit", "lora", "", (1, 0, 0), []).colour == "grey"


def test_a_results_json_of_another_version_is_named_on_the_page_not_fatal(studies, tmp_path):
    folder = tmp_path / "fit"
    shutil.copytree(studies["fit"], folder)
    res = json.loads((folder / "results.json").read_text())
    del res["by_method"]
    (folder / "results.json").write_text(json.dumps(res))
    assert read_finding(folder).verdict == "inconclusive"
    assert "does not read this fit study" in write_report(folder).read_text()


def test_a_refused_study_says_why_once_after_its_badge(studies, tmp_path):
    folder = tmp_path / "subspace"
    shutil.copytree(studies["subspace"], folder)
    why = "no cell ran: sphere K=3 s0: only 2 of 3 examples decode to their own shape's robust Betti numbers"
    (folder / "results.json").write_text(json.dumps({"checkpoint": "toy-a", "refused": why}))
    page = write_page([folder, studies["fit"]], tmp_path / "page.html")[0].read_text().replace("&#x27;", "'")
    line = re.search(r'<p class="verdict-line" data-verdict="refused">(.*?)</p>', page).group(1)
    assert ">refused</span>" in line and line.endswith(f"(toy): {why}")  # not "refused refused: no cell ran"
    assert "refused: " not in line


def test_a_results_json_holding_nan_or_infinity_is_refused_naming_file_and_field(studies, tmp_path, capsys):
    """Python's json reads NaN and Infinity; results.json never holds them (a missing figure is null), and a
    verdict compared against NaN comes out silently wrong, so the page is not written."""
    from weightspace.cli import main

    folder = tmp_path / "fit"
    shutil.copytree(studies["fit"], folder)
    res = json.loads((folder / "results.json").read_text())
    method = next(iter(res["by_method"]))
    res["by_method"][method]["chamfer_l1"] = float("nan")
    (folder / "results.json").write_text(json.dumps(res))  # json.dumps writes NaN
    with pytest.raises(InputError, match=rf"results\.json: by_method\.{method}\.chamfer_l1: NaN is not a finite number"):
        read_finding(folder)
    with pytest.raises(SystemExit) as ex:
        main(["report", str(folder), "--out", str(tmp_path / "page.html")])
    assert ex.value.code == 2 and not (tmp_path / "page.html").exists()
    err = capsys.readouterr().err
    assert f"{folder / 'results.json'}: by_method.{method}.chamfer_l1: NaN" in err, err


@pytest.mark.parametrize("content", [b"", b"x\n"], ids=["empty", "garbage"])
def test_a_damaged_mesh_file_is_refused_naming_it(studies, tmp_path, capsys, content):
    """A study's mesh cut short or overwritten crashed the page with trimesh's 'Not a ply file!' as an internal
    error (exit 70) that named no file."""
    from weightspace.cli import main

    folder = tmp_path / "fit"
    shutil.copytree(studies["fit"], folder)
    mesh = sorted((folder / "meshes").glob("*.ply"))[0]
    mesh.write_bytes(content)
    with pytest.raises(SystemExit) as ex:
        main(["report", str(folder), "--out", str(tmp_path / "page.html")])
    err = capsys.readouterr().err
    assert ex.value.code == 2 and f"{mesh}: not a readable mesh" in err, err
    assert not (tmp_path / "page.html").exists()
