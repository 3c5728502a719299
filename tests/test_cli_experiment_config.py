"""`weightspace experiment <study> --config FILE`: the file's fields reach the study's config through the typed
loader, options typed on the command line override them, and a bad file is refused naming the file and field.

The studies themselves are replaced by a stub that records the config it was given, so nothing is decoded.
"""

import json

import pytest
from typer.testing import CliRunner

from weightspace.cli import _register, app
from weightspace.experiments import compare, fit, interpolate, subspace
from weightspace.runtime.errors import InputError

STUDIES = {  # command -> (module, name of its run function)
    "interpolate": (interpolate, "run_interpolate"),
    "subspace": (subspace, "run_subspace"),
    "fit": (fit, "run_fit"),
    "compare": (compare, "run_compare"),
}


class Ran(Exception):
    """Raised by the stub study once it has the config."""


@pytest.fixture
def ran(monkeypatch):
    """Each study replaced by a stub; returns the list of configs the stubs were called with."""
    _register()
    configs = []

    def stub(cfg, *args, **kwargs):
        configs.append(cfg)
        raise Ran

    for module, name in STUDIES.values():
        monkeypatch.setattr(module, name, stub)
    return configs


def invoke(*args: str):
    return CliRunner().invoke(app, ["experiment", *args])


def write(path, raw) -> str:
    path.write_text(json.dumps(raw))
    return str(path)


@pytest.mark.parametrize("study, raw, expected", [
    ("interpolate", {"steps": 4, "data_seed": 3, "path": "slerp", "attribute_margin": 1.5},
     {"steps": 4, "data_seed": 3, "path": "slerp", "attribute_margin": 1.5}),
    ("subspace", {"examples": 8, "k": 5, "lora_form": "factors", "lr": 0.01},
     {"examples": 8, "k": 5, "lora_form": "factors", "lr": 0.01}),
    ("fit", {"views": [2, 8], "sigmas": [0, 0.01], "methods": ["encode"], "subspace_k": 2},
     {"views": [2, 8], "sigmas": [0.0, 0.01], "methods": ["encode"], "subspace_k": 2}),
    ("compare", {"checkpoints": ["default"], "studies": ["fit"]}, {"checkpoints": ["default"], "studies": ["fit"]}),
])
def test_a_files_values_reach_the_study_config(ran, tmp_path, study, raw, expected):
    """Every field of the file arrives, also fields without an option (data_seed, lora_form, subspace_k)."""
    result = invoke(study, "--config", write(tmp_path / "c.json", raw))
    assert isinstance(result.exception, Ran), result.output
    (cfg,) = ran
    assert {name: getattr(cfg, name) for name in expected} == expected


def test_options_typed_on_the_command_line_override_the_file(ran, tmp_path):
    path = write(tmp_path / "fit.json", {"steps": 3, "seed": 5, "views": [2], "family": "mug"})
    result = invoke("fit", "--config", path, "--seed", "9", "--views", "1,8")
    assert isinstance(result.exception, Ran), result.output
    cfg = ran[0]
    assert (cfg.seed, cfg.views) == (9, [1, 8])  # typed: override
    assert (cfg.steps, cfg.family) == (3, "mug")  # left at their defaults: the file's values stand
    assert cfg.sigmas == fit.FitConfig().sigmas  # in neither: the config's default


def test_overrides_are_checked_together_with_the_file(ran, tmp_path):
    """k = 5 in the file is only valid with the K = 8 given on the command line: checked after the merge."""
    result = invoke("subspace", "--config", write(tmp_path / "s.json", {"k": 5}), "-K", "8")
    assert isinstance(result.exception, Ran), result.output
    assert (ran[0].k, ran[0].examples) == (5, [8])


def test_without_a_file_the_options_alone_build_the_config(ran):
    result = invoke("interpolate", "--a", "torus", "--steps", "5")
    assert isinstance(result.exception, Ran), result.output
    assert ran[0] == interpolate.InterpolateConfig(a="torus", steps=5)


@pytest.mark.parametrize("study, raw, field", [
    ("interpolate", {"stepz": 4}, "unknown field(s) ['stepz']"),
    ("interpolate", {"steps": "many"}, "steps: expected an integer"),
    ("interpolate", {"path": "spline"}, "path must be one of lerp, slerp"),
    ("subspace", {"temperature": float("nan")}, "temperature: must be a finite number"),
    ("subspace", {"k": 4}, "k must satisfy 1 <= k < K = 4"),
    ("fit", {"views": [1, "two"]}, "views[1]: expected an integer"),
    ("fit", {"methods": ["encode", "guess"]}, "methods must be one of"),
    ("compare", {"checkpoints": "default"}, "checkpoints: expected a list"),
])
def test_a_bad_file_is_refused_naming_the_file_and_field(ran, tmp_path, study, raw, field):
    path = write(tmp_path / f"{study}.json", raw)
    result = invoke(study, "--config", path)
    assert isinstance(result.exception, InputError), result.output
    message = str(result.exception)
    assert message.startswith(f"{path}: ") and field in message, message
    assert not ran


@pytest.mark.parametrize("text, why", [("[1, 2]", "expected a json object"), ("{oops", "json")])
def test_a_file_that_is_not_an_object_is_refused(ran, tmp_path, text, why):
    path = tmp_path / "c.json"
    path.write_text(text)
    result = invoke("fit", "--config", str(path))
    assert isinstance(result.exception, InputError) and str(path) in str(result.exception), result.output
    assert why in str(result.exception).lower()


def test_subspace_sizes_full_and_small(ran, tmp_path):
    """--full is the paper's grid and --small the demo size; options typed beside either override it."""
    assert isinstance(invoke("subspace", "--full", "--seeds", "0,1").exception, Ran)
    cfg = ran[-1]
    assert (cfg.examples, cfg.seeds, cfg.families, cfg.parameterisation) == ([2, 4, 8, 16], [0, 1], ["torus", "pretzel", "pair"], "lora")
    assert [cfg.k_for(K) for K in cfg.examples] == [1, 2, 4, 8]
    assert isinstance(invoke("subspace", "--small", "--families", "pair").exception, Ran)
    assert (ran[-1].examples, ran[-1].k, ran[-1].samples, ran[-1].families) == ([3], 2, 8, ["pair"])
    result = invoke("subspace", "--small", "--full")
    assert not isinstance(result.exception, Ran) and "two sizes" in str(result.exception) + result.output
    # a size preset and a config file both set a whole config: refused, not the file silently dropped
    path = write(tmp_path / "s.json", {"samples": 4})
    for size in ("--small", "--full"):
        result = invoke("subspace", size, "--config", path)
        assert not isinstance(result.exception, Ran) and "give one of them" in str(result.exception), result.output


def test_a_bad_option_is_named_as_the_option(tmp_path):
    """Without --config, a study's options are checked where the command reads them: a bad value names
    `--pairs`, not the config class's field (`InterpolateConfig.pairs`)."""
    import re

    from typer.testing import CliRunner

    from weightspace.cli import _register, app
    from weightspace.runtime.errors import InputError

    _register()
    for args, match in ((["experiment", "interpolate", "--pairs", "-1"], "--pairs: must be >= 0, got -1"),
                        (["experiment", "subspace", "--k", "-3"], "--k: must be >= 0, got -3"),
                        (["experiment", "interpolate", "--condition-paths"], r"needs endpoints 'population' \(--endpoints population\)")):
        result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "study")])
        assert isinstance(result.exception, InputError) and re.search(match, str(result.exception)), (args, result.exception)
        assert not (tmp_path / "study").exists()


@pytest.mark.parametrize("args, match", [
    (["subspace", "--seeds", "0,0"], "seeds (--seeds): 0 is given twice"),
    (["subspace", "-K", "2,4,2"], "examples (-K): 2 is given twice"),
    (["subspace", "--families", "torus,pair,torus"], "families (--families): 'torus' is given twice"),
    (["fit", "--views", "1,1"], "views (--views): 1 is given twice"),
    (["fit", "--sigmas", "0.01,0.010"], "sigmas (--sigmas): '0.01' is given twice"),
    (["fit", "--methods", "encode,lora,encode"], "methods (--methods): 'encode' is given twice"),
    (["compare", "--studies", "fit,fit"], "studies (--studies): 'fit' is given twice"),
    (["compare", "--checkpoints", "runs/a/model,runs/b/model"], "checkpoints (--checkpoints), by their folder names: 'model'"),
])
def test_a_value_given_twice_is_refused(ran, args, match):
    """A repeated cell or item ran (or was read back) twice and counted twice in every pooled rate, and two
    checkpoint folders of one name ran their studies into one folder."""
    result = invoke(*args)
    assert isinstance(result.exception, InputError) and match in str(result.exception), (args, result.exception)
    assert not ran


@pytest.mark.parametrize("args, match", [
    (["--pairs", "4"], "does not apply to pairs (--pairs)"),
    (["--endpoints", "population", "--population", "pop", "--condition-paths"], "does not apply to condition_paths"),
])
def test_attribute_with_many_paths_is_refused(ran, args, match):
    """Attribution reruns the transitions of one path; with --pairs or --condition-paths it was silently left out."""
    result = invoke("interpolate", "--attribute", *args)
    assert isinstance(result.exception, InputError) and match in str(result.exception), result.exception
    assert "--attribute" in str(result.exception)
    assert not ran


def test_a_population_without_population_endpoints_is_refused(ran):
    """`--population runs/pop --pairs 8` without `--endpoints population` ran the pairs between family conditions."""
    result = invoke("interpolate", "--population", "runs/pop", "--pairs", "8")
    assert isinstance(result.exception, InputError), result.exception
    assert "needs endpoints 'population' (--endpoints population), got 'family'" in str(result.exception)
    assert not ran


def test_subspace_data_beside_a_population_is_refused(ran):
    """The cells take the population's members and its own data folder: a --data beside it was silently unused."""
    result = invoke("subspace", "--population", "runs/pop", "--data", "runs/shapes")
    assert isinstance(result.exception, InputError) and "data (--data) is for the population the study builds" in str(
        result.exception), result.exception
    assert not ran


@pytest.mark.parametrize("args", [["subspace", "--small", "--workers", "2"], ["fit", "--small", "--workers", "2"],
                                  ["interpolate", "--pairs", "8", "--workers", "4"],
                                  ["subspace", "--executor", "inprocess", "--workers", "2"]])
def test_workers_on_the_in_process_executor_are_refused(ran, args):
    """--small runs in process, as does interpolate by default: --workers there ran one item at a time, silently."""
    result = invoke(*args)
    if not isinstance(result.exception, InputError):  # --small's config is checked where the study starts
        assert isinstance(result.exception, Ran), result.exception
        from weightspace.runtime.config import check_config

        with pytest.raises(InputError, match=r"workers \(--workers\) 2 needs executor 'process' or 'ray'"):
            check_config(ran[0], where="the command line")
        return
    assert "needs executor 'process' or 'ray' (--executor)" in str(result.exception) and not ran


@pytest.mark.parametrize("args, endpoints", [
    (["--data", "runs/shapes"], "family"),  # one path between two families' conditions
    (["--endpoints", "points", "--a", "a.safetensors", "--b", "b.safetensors", "--data", "runs/shapes"], "points"),
    (["--endpoints", "population", "--population", "runs/pop", "--a", "x", "--b", "y", "--data", "runs/shapes"], "population"),
    (["--endpoints", "population", "--population", "runs/pop", "--pairs", "4", "--data", "runs/shapes"], "population"),
])
def test_interpolate_data_its_endpoints_do_not_read_is_refused(ran, args, endpoints):
    """--data names shapes to encode: beside family conditions on one path, point files or population members it
    was silently unused."""
    result = invoke("interpolate", *args)
    assert isinstance(result.exception, InputError), result.exception
    assert f"data (--data) is not read with endpoints '{endpoints}' (--endpoints {endpoints})" in str(result.exception)
    assert not ran


@pytest.mark.parametrize("args", [["--endpoints", "data", "--data", "runs/shapes", "--a", "x", "--b", "y"],
                                  ["--endpoints", "data", "--data", "runs/shapes", "--pairs", "4"],
                                  ["--pairs", "4", "--data", "runs/shapes"]])  # family pairs may encode its shapes
def test_interpolate_data_where_it_is_read_is_accepted(ran, args):
    assert isinstance(invoke("interpolate", *args).exception, Ran)


@pytest.mark.parametrize("args, match", [
    (["--pairs", "4", "--a", "torus"], "a (--a) names the endpoints of one path; pairs (--pairs) choose theirs"),
    (["--pairs", "4", "--a", "dumbbell", "--b", "pair"], "a (--a) and b (--b) name the endpoints of one path"),
    (["--endpoints", "population", "--population", "runs/pop", "--pairs", "4", "--b", "m-1"], "b (--b) names"),
    (["--pairs", "4", "--meshes"], "meshes (--meshes): pairs (--pairs) write no meshes"),
    (["--endpoints", "population", "--population", "runs/pop", "--condition-paths", "--meshes"],
     "meshes (--meshes): condition_paths (--condition-paths) write no meshes"),
])
def test_interpolate_options_pairs_do_not_read_are_refused(ran, args, match):
    """Pairs choose their own endpoints and write no meshes (nor do condition paths): --a, --b and --meshes beside
    them were silently unused; typed at their defaults too, since a typed option says the user expects it used."""
    result = invoke("interpolate", *args)
    assert isinstance(result.exception, InputError) and match in str(result.exception), result.exception
    assert not ran


def test_interpolate_a_config_files_a_beside_pairs_is_refused(ran, tmp_path):
    result = invoke("interpolate", "--config", write(tmp_path / "i.json", {"a": "torus"}), "--pairs", "4")
    assert isinstance(result.exception, InputError) and "a (--a) names the endpoints of one path" in str(result.exception)
    assert not ran


@pytest.mark.parametrize("args", [["--pairs", "8", "--no-meshes"], ["--a", "torus", "--b", "pair", "--meshes"],
                                  ["--endpoints", "population", "--population", "runs/pop", "--pairs", "8",
                                   "--condition-paths", "--no-meshes"]])  # docs/findings.md's commands
def test_interpolate_options_the_run_reads_are_accepted(ran, args):
    assert isinstance(invoke("interpolate", *args).exception, Ran)


@pytest.mark.parametrize("args, raw, match", [
    (["--batch-members", "4"], None, "batch_members (--batch-members): how the study fits the members"),
    (["--batch-members", "1", "--executor", "ray"], None, "batch_members (--batch-members), executor (--executor): how"),
    (["--workers", "2"], None, "workers (--workers): how the study fits the members"),
    (["--small", "--batch-members", "2"], None, "batch_members (--batch-members): how"),
    ([], {"fit_steps": 100, "lr": 0.01}, "fit_steps, lr: how the study fits the members"),
    ([], {"fit_draws": 2}, "fit_draws: how"),
    ([], {"lora_rank": 4}, "lora_rank: how"),
])
def test_subspace_fitting_settings_beside_a_population_are_refused(ran, tmp_path, args, raw, match):
    """The members of --population are already fitted: fit_steps, lr, fit_draws, --batch-members, --executor,
    --workers, lora_rank and lora_targets beside it were silently unused."""
    config = ["--config", write(tmp_path / "s.json", raw)] if raw else []
    result = invoke("subspace", "--population", "runs/pop", *config, *args)
    assert isinstance(result.exception, InputError) and match in str(result.exception), result.exception
    assert "the members of population (--population) are already fitted" in str(result.exception)
    assert not ran


def test_subspace_fitting_settings_without_a_population_are_accepted(ran, tmp_path):
    """The findings' rerun pins its own population's fit_steps (docs/findings.md)."""
    path = write(tmp_path / "steps100.json", {"fit_steps": 100})
    assert isinstance(invoke("subspace", "--config", path, "--batch-members", "4", "--executor", "process").exception, Ran)
    assert isinstance(invoke("subspace", "--population", "runs/pop", "-K", "2,4", "--no-meshes").exception, Ran)


@pytest.mark.parametrize("K, ks", [("2", [1]), ("2,4", [1, 2]), ("4", [2]), ("3,8", [2, 2])])
def test_subspace_small_keeps_its_k_only_where_it_fits_the_K_given(ran, K, ks):
    """--small's k = 2 with -K 2 failed with "leave k unset" although no k was given: the preset's k stands where
    it is below every K, else k is unset (K // 2 in each cell), as without --small."""
    from weightspace.runtime.config import check_config

    result = invoke("subspace", "--small", "-K", K)
    assert isinstance(result.exception, Ran), result.exception
    cfg = check_config(ran[0], where="the command line")
    assert [cfg.k_for(k) for k in cfg.Ks] == ks


def test_subspace_small_with_a_k_that_does_not_fit_is_refused(ran):
    from weightspace.runtime.config import check_config

    assert isinstance(invoke("subspace", "--small", "-K", "2", "--k", "2").exception, Ran)
    with pytest.raises(InputError, match="k must satisfy 1 <= k < K = 2, got 2"):
        check_config(ran[0], where="the command line")
