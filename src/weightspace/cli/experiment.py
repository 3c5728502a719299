"""CLI group `weightspace experiment`: the studies (interpolate, subspace, fit, compare), each one config and one call."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

experiment_app = typer.Typer(help="The studies: measured versions of the paper's claims, on any generator. Each reads "
                             "--config FILE, a JSON object of its config's fields; options typed on the command line "
                             "override the file.", no_args_is_help=True)

CHECKPOINT_HELP = ("Generator: default (latent diffusion), default-field (neural field), default-64, default-points, "
                   "or a checkpoint folder.")
CONFIG_HELP = ("JSON object of the study's config fields (every field, also those without an option); "
               "options given on the command line override it.")


def _floats(text: str, name: str) -> list[float]:
    from weightspace.runtime.errors import InputError

    try:
        return [float(x) for x in _items(text, name)]
    except ValueError:
        raise InputError(f"--{name}: expected comma-separated numbers, got {text!r}") from None


def _ints(text: str, name: str) -> list[int]:
    from weightspace.runtime.errors import InputError

    try:
        return [int(x) for x in _items(text, name)]
    except ValueError:
        raise InputError(f"--{name}: expected comma-separated integers, got {text!r}") from None


def _items(text: str, name: str) -> list[str]:
    """The comma-separated values of an option; an empty one between commas (`1,,2`) is a typo, not nothing."""
    from weightspace.runtime.errors import InputError

    items = [x.strip() for x in text.split(",")]
    if any(not x for x in items):
        raise InputError(f"--{name}: an empty value in {text!r} (comma-separated values, e.g. 1,2,4)")
    return items


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def study_config(ctx: typer.Context, cls: type, config: Path | None, options: dict[str, Any]) -> Any:
    """The study's config `cls`: from the options alone, or with --config from the file's fields over
    the config's defaults and the options typed on the command line over the file's (an option left
    at its default does not hide the file's value). `options` is keyed by config field and parameter name.
    """
    from weightspace.runtime.config import COMMAND_LINE, check_config, load_config
    from weightspace.runtime.io import read_json

    typed = _typed(ctx, options)
    if config is None:  # checked here, so that a bad value is named by its option (--pairs), not its field
        cfg = check_config(cls(**options), where=COMMAND_LINE)
    else:
        cfg = load_config(cls, config, overrides=typed)
    _refuse_unused(cfg, set(typed) | (set(read_json(config)) if config is not None else set()))
    return cfg


def _typed(ctx: typer.Context, options: dict[str, Any]) -> dict[str, Any]:
    """The options typed on the command line (an option left at its default is not one of them)."""
    # the source's class is typer's own copy of click's ParameterSource: compare by name
    return {name: value for name, value in options.items()
            if ctx.get_parameter_source(name).name not in ("DEFAULT", "DEFAULT_MAP")}


def _refuse_unused(cfg: Any, given: set[str]) -> None:
    """A config's `refuse_unused(given)`, where it has one: fields the user set (typed options, keys of the
    --config file) that the run would not read. A field at its default does not say whether it was given,
    so the config's `validate` cannot tell these."""
    refuse = getattr(cfg, "refuse_unused", None)
    if callable(refuse):
        refuse(given)


def _page(folder: Path) -> None:
    """The study's page, `report.html` in its folder (the same builder as `weightspace report` and the demo's)."""
    from weightspace.report.html import write_page

    page, _ = write_page([folder], folder / "report.html")
    typer.echo(f"page: {page}")


@experiment_app.command("interpolate")
def interpolate_cmd(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(None, "--config", help=CONFIG_HELP),
    checkpoint: str = typer.Option("default", "--checkpoint", help=CHECKPOINT_HELP),
    out: str = typer.Option("results/interpolate", "--out", help="Results folder."),
    endpoints: str = typer.Option("family", "--endpoints", help="family | data | population | points: what --a / --b name."),
    a: str = typer.Option("dumbbell", "--a", help="Start: family name, shape id, member id or point file."),
    b: str = typer.Option("pair", "--b", help="End: family name, shape id, member id or point file."),
    data: Optional[str] = typer.Option(None, "--data", help="Data folder for --endpoints data / --pairs (default: made procedurally)."),
    population: Optional[str] = typer.Option(None, "--population", help="Population folder for --endpoints population."),
    path: str = typer.Option("lerp", "--path", help="lerp | slerp."),
    steps: int = typer.Option(16, "--steps", help="Uniform intervals before bisection."),
    tolerance: float = typer.Option(1e-3, "--tolerance", help="Width in t to which each transition is located."),
    seed: int = typer.Option(0, "--seed", help="Sampler noise seed, fixed along the path."),
    attribute: bool = typer.Option(False, "--attribute", help="Rerun each transition moving one part (module group / token) at a time."),
    pairs: int = typer.Option(0, "--pairs", help="Run this many pairs within and across families instead of one path."),
    condition_paths: bool = typer.Option(False, "--condition-paths", help="With --endpoints population: run every path "
                                         "again between the encoded conditions of the same two shapes and compare."),
    meshes: bool = typer.Option(True, "--meshes/--no-meshes", help="Write meshes at the ends and across each transition."),
    executor: str = typer.Option("inprocess", "--executor", help="Where the --pairs paths run: inprocess | process | ray."),
    workers: int = typer.Option(1, "--workers", help="--pairs on --executor process or ray: parallel workers."),
    address: Optional[str] = typer.Option(None, "--address", help="--executor ray: join the cluster at auto or HOST:PORT."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier run with other settings in --out "
                                   "(without it, such a folder is refused and left as it is)."),
) -> None:
    """Locate sharp topology transitions along a path in weight space (paper claim 1).

    Example: weightspace experiment interpolate --checkpoint default --a dumbbell --b pair --attribute

    Many pairs on a Ray cluster: ... --pairs 64 --executor ray --address auto (docs/scaling.md).
    """
    from weightspace.experiments.interpolate import InterpolateConfig, run_interpolate
    from weightspace.experiments.summary import summarize

    cfg = study_config(ctx, InterpolateConfig, config, dict(
        checkpoint=checkpoint, out=out, endpoints=endpoints, a=a, b=b, data=data, population=population, path=path,
        steps=steps, tolerance=tolerance, seed=seed, attribute=attribute, pairs=pairs, condition_paths=condition_paths,
        meshes=meshes, executor=executor, workers=workers, address=address, overwrite=overwrite))
    folder = run_interpolate(cfg)
    _page(folder)
    typer.echo(f"{summarize(folder)} -> {folder}")


@experiment_app.command("subspace")
def subspace_cmd(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(None, "--config", help=CONFIG_HELP),
    checkpoint: str = typer.Option("default", "--checkpoint", help=CHECKPOINT_HELP),
    out: str = typer.Option("results/subspace", "--out", help="Results folder (re-running resumes it, cell by cell)."),
    families: str = typer.Option("torus,pretzel,pair", "--families", "--family", help="Families, comma-separated."),
    examples: str = typer.Option("4", "--examples", "-K", help="K examples per cell, comma-separated (the grid: 2,4,8,16)."),
    k: Optional[int] = typer.Option(None, "--k", help="PCA components, k < K (default: K // 2; --small: 2 where below every K)."),
    seeds: str = typer.Option("0", "--seeds", help="Seeds, comma-separated (member choice, sampling, sampler noise)."),
    samples: int = typer.Option(16, "--samples", help="Samples per kind (subspace and each baseline) per cell."),
    parameterisation: str = typer.Option("lora", "--parameterisation", help="lora (population members) | condition."),
    population: Optional[str] = typer.Option(None, "--population", help="An existing lora population to take members from."),
    temperature: float = typer.Option(1.0, "--temperature", help="Scale of the subspace's Gaussian."),
    data: Optional[str] = typer.Option(None, "--data", help="Data folder (default: made procedurally)."),
    batch_members: int = typer.Option(1, "--batch-members", help="Members fitted together when the study builds its population."),
    executor: str = typer.Option("process", "--executor", help="Where the population's members are fitted: inprocess | process | ray."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Workers of the process or ray executor (default: every usable core)."),
    full: bool = typer.Option(False, "--full", help="The paper's grid: K 2,4,8,16 x seeds 0,1,2 (options given override it)."),
    small: bool = typer.Option(False, "--small", help="The demo size: torus, K 3, k 2, 8 samples (options given override it; "
                               "a -K that k 2 does not fit leaves k at K // 2)."),
    meshes: bool = typer.Option(True, "--meshes/--no-meshes", help="Write every decoded mesh."),
) -> None:
    """Sample PCA subspaces of K population members per family; measure topology kept vs baselines at the same distance (claim 2).

    Example: weightspace experiment subspace --checkpoint default --full --no-meshes --out results/subspace-grid
    """
    from weightspace.experiments.subspace import SubspaceConfig, run_subspace
    from weightspace.experiments.summary import summarize
    from weightspace.runtime.errors import InputError

    if full and small:
        raise InputError("--full and --small are two sizes; give one")
    options = dict(checkpoint=checkpoint, out=out, families=_names(families), examples=_ints(examples, "examples"), k=k,
                   seeds=_ints(seeds, "seeds"), samples=samples, parameterisation=parameterisation, population=population,
                   temperature=temperature, data=data, batch_members=batch_members, executor=executor, workers=workers,
                   meshes=meshes)
    if (full or small) and config is not None:
        raise InputError(f"--{'full' if full else 'small'} and --config both set a whole config; give one of them")
    if full or small:
        given = {n: v for n, v in options.items() if ctx.get_parameter_source(n).name not in ("DEFAULT", "DEFAULT_MAP")}
        cfg = (SubspaceConfig.full if full else SubspaceConfig.small)(**{"checkpoint": checkpoint, "out": out, **given})
        _refuse_unused(cfg, set(given))
    else:
        cfg = study_config(ctx, SubspaceConfig, config, options)
    folder = run_subspace(cfg)
    _page(folder)
    typer.echo(f"{summarize(folder)} -> {folder}")


@experiment_app.command("fit")
def fit_cmd(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(None, "--config", help=CONFIG_HELP),
    checkpoint: str = typer.Option("default", "--checkpoint", help=CHECKPOINT_HELP),
    out: str = typer.Option("results/fit", "--out", help="Results folder (a rerun resumes the items it holds)."),
    family: str = typer.Option("torus", "--family", help="Family of the held-out shape and of both subspaces' members."),
    views: str = typer.Option("2", "--views", help="Numbers of partial views, comma-separated (full grid: 1,2,4)."),
    sigmas: str = typer.Option("0.01", "--sigmas", help="Noise levels in world units, comma-separated (full grid: 0,0.01,0.03)."),
    methods: str = typer.Option("encode,optimise,condition_subspace,lora,full,weight_subspace", "--methods",
                                help="Comma-separated methods."),
    steps: int = typer.Option(300, "--steps", help="Step budget: most Adam steps per optimised method (early stopping may end sooner)."),
    subspace_examples: int = typer.Option(32, "--members", help="N: members of the family in each subspace's population."),
    subspace_k: int = typer.Option(8, "--k", help="Dimension of the weight and condition subspaces."),
    small: bool = typer.Option(False, "--small", help="The demo-sized run (1 view, 20 steps, populations of 4)."),
    executor: str = typer.Option("process", "--executor", help="Where population members and the study's items are fitted: "
                                 "inprocess | process | ray."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Workers of the process or ray executor (default: every usable core)."),
    batch_members: Optional[int] = typer.Option(None, "--batch-members", help="LoRA members fitted together in one pass "
                                                "(default: 8 where the generator batches them, else 1)."),
    data: Optional[str] = typer.Option(None, "--data", help="Data folder (default: made procedurally)."),
    seed: int = typer.Option(0, "--seed", help="Observation, fitting and sampler seed."),
    meshes: bool = typer.Option(True, "--meshes/--no-meshes", help="Write each fitted mesh."),
) -> None:
    """Fit a held-out shape from few noisy partial views by six methods, with early stopping on held-out views;
    measure fit and forgetting over step budgets (paper claim 3).

    Example: weightspace experiment fit --checkpoint default --views 1,2,4 --sigmas 0,0.01,0.03
    """
    import dataclasses

    from weightspace.experiments.fit import FitConfig, run_fit
    from weightspace.experiments.summary import summarize
    from weightspace.runtime.errors import InputError

    options = dict(checkpoint=checkpoint, out=out, family=family, views=_ints(views, "views"), sigmas=_floats(sigmas, "sigmas"),
                   methods=_names(methods), steps=steps, subspace_examples=subspace_examples, subspace_k=subspace_k, data=data,
                   seed=seed, meshes=meshes, executor=executor, workers=workers, batch_members=batch_members)
    if small:
        if config is not None:
            raise InputError("--small and --config both set a whole config; give one of them")
        typed = {n: v for n, v in options.items() if ctx.get_parameter_source(n).name not in ("DEFAULT", "DEFAULT_MAP")}
        cfg = dataclasses.replace(FitConfig.small(checkpoint, out), **typed)
    else:
        cfg = study_config(ctx, FitConfig, config, options)
    folder = run_fit(cfg)
    _page(folder)
    typer.echo((folder / "table.csv").read_text())
    typer.echo(f"{summarize(folder)} -> {folder}")


@experiment_app.command("compare")
def compare_cmd(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(None, "--config", help=CONFIG_HELP),
    checkpoints: str = typer.Option("default,default-field", "--checkpoints", help="Comma-separated generators."),
    out: str = typer.Option("results/compare", "--out", help="Results folder."),
    studies: str = typer.Option("interpolate,subspace,fit", "--studies", help="Comma-separated studies."),
) -> None:
    """Run the three studies small on several generators and write one side-by-side table (compare.csv, compare.md).

    Example: weightspace experiment compare --checkpoints default,default-field --out results/compare
    """
    from weightspace.experiments.compare import CompareConfig, run_compare, write_compare_page

    cfg = study_config(ctx, CompareConfig, config, dict(checkpoints=_names(checkpoints), out=out, studies=_names(studies)))
    folder = run_compare(cfg)
    typer.echo(f"page: {write_compare_page(folder)}")
    typer.echo((folder / "compare.md").read_text())
    typer.echo(f"-> {folder}")


def register(app: typer.Typer) -> None:
    app.add_typer(experiment_app, name="experiment")
