"""CLI commands of the weight-space stage: `weightspace population build|import|export|check`, `subspace fit|invert|edit` and `decode`."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Optional

import typer

population_app = typer.Typer(help="Populations: one fitted weight-space point per shape.", no_args_is_help=True)
subspace_app = typer.Typer(help="PCA subspaces of populations.", no_args_is_help=True)


def _load(checkpoint: str, device: str = "cpu"):
    """The generator, on CUDA when `device` is cuda and this process sees a GPU (a Ray task that asked
    for one does; the driver on a head node without one loads on the CPU)."""
    import torch

    from weightspace.generators.registry import load_generator  # torch: imported when a command runs

    return load_generator(checkpoint, "cuda" if device == "cuda" and torch.cuda.is_available() else "cpu")


EXECUTOR_HELP = "inprocess | process | ray (default: process when --workers > 1, else inprocess)."
ADDRESS_HELP = "--executor ray: join the Ray cluster at `auto` or HOST:PORT (default: start a local instance with --workers CPUs)."
GPUS_HELP = "--executor ray: GPUs each task asks for (e.g. 1, or 0.25 to share one); its worker then decodes/fits on CUDA."


def executor_from_options(executor: Optional[str], workers: int, address: Optional[str], gpus_per_task: float):
    """The executor the options name (see `weightspace.runtime.executors.make_executor`)."""
    from weightspace.runtime.executors import make_executor

    name = executor or ("ray" if address else "process" if workers > 1 else "inprocess")
    return make_executor(name, workers=workers, address=address, num_gpus=gpus_per_task)


@population_app.command("build")
def population_build(
    ctx: typer.Context,
    checkpoint: str = typer.Option("default", "--checkpoint", help="Generator: `default`, `default-field`, `default-64`, `default-points` or a checkpoint folder."),
    parameterisation: str = typer.Option("lora", "--parameterisation", help="condition | lora | layers."),
    data: Path = typer.Option(..., "--data", help="Data folder with manifest.jsonl (from `weightspace data make`)."),
    out: Path = typer.Option(..., "--out", help="Population folder (re-running resumes it)."),
    members: Optional[int] = typer.Option(None, "--members", help="Fit the first N shapes (default: all)."),
    split: Optional[str] = typer.Option(None, "--split", help="Only shapes of this split (train, val, test)."),
    workers: int = typer.Option(1, "--workers", help="Parallel worker processes (1: in this process)."),
    executor: Optional[str] = typer.Option(None, "--executor", help=EXECUTOR_HELP),
    address: Optional[str] = typer.Option(None, "--address", help=ADDRESS_HELP),
    gpus_per_task: float = typer.Option(0.0, "--gpus-per-task", help=GPUS_HELP),
    batch_members: Optional[int] = typer.Option(None, "--batch-members", help="Fit B lora/layers members to grids in one forward/backward pass (same members to float rounding; see benchmarks/batched_members.py). Default: 8 for LoRA members of a latent diffusion generator (about 2x members/s; fewer when workers would sit idle), else 1."),
    rank: int = typer.Option(4, "--rank", help="LoRA rank."),
    alpha: float = typer.Option(8.0, "--alpha", help="LoRA alpha (scaling = alpha / rank)."),
    targets: str = typer.Option("all", "--targets", help="Modules: regex on names, `group:a,b` or `all`."),
    form: str = typer.Option("factors", "--form", help="LoRA point form: factors (A, B) or delta (B A)."),
    fit: str = typer.Option("grid", "--fit", help="grid (training loss on the SDF grid) or points (observation loss)."),
    observation: str = typer.Option("clean", "--observation", help="clean | noisy | partial | subsampled (fit=points)."),
    observations: int = typer.Option(512, "--observations", help="Observed surface points per member (fit=points)."),
    noise: float = typer.Option(0.0, "--noise", help="Noise sigma on observed points (world units)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Optimiser steps per member (default: the generator's)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Adam learning rate (default: the generator's)."),
    seed: int = typer.Option(0, "--seed", help="Base seed (one derived seed per member)."),
    draws: Optional[int] = typer.Option(None, "--draws", help="Loss draws averaged per step: time steps and noise, or point samples (default: the generator's)."),
    anchor: str = typer.Option("auto", "--anchor", help="Condition for lora/layers members: auto (the generator's) | zeros | mean (of encodings)."),
    condition_fit: str = typer.Option("auto", "--condition-fit", help="condition members: auto | encode | optimise."),
) -> None:
    """Fit one weight-space point per shape and store them (manifest.jsonl + safetensors shards + layout.json).

    Example: weightspace population build --checkpoint default --parameterisation lora --data runs/data32 --out runs/pop --members 16 --workers 2

    On a Ray cluster: ... --executor ray --address auto (see docs/scaling.md). A member whose task keeps
    failing there is listed in failures.jsonl and the build goes on; a rerun tries it again.
    """
    from weightspace.space.parameterisations import OPTIONS
    from weightspace.space.population import PopulationConfig, build_population, fidelity_summary

    if parameterisation not in OPTIONS:
        from weightspace.runtime.errors import InputError

        raise InputError(f"--parameterisation must be one of {', '.join(OPTIONS)}, got {parameterisation!r}")
    given = {"rank": rank, "alpha": alpha, "targets": targets, "form": form}
    # an option typed for another parameterisation would do nothing: say so instead of dropping it
    typed = [k for k in given if ctx.get_parameter_source(k).name not in ("DEFAULT", "DEFAULT_MAP")]
    unused = [k for k in typed if k not in OPTIONS[parameterisation]]
    if unused:
        from weightspace.runtime.errors import InputError

        raise InputError(f"{', '.join('--' + k for k in unused)}: not an option of --parameterisation {parameterisation} "
                         f"(it takes {', '.join('--' + k for k in OPTIONS[parameterisation]) or 'none'})")
    options = {k: v for k, v in given.items() if k in OPTIONS[parameterisation]}
    config = PopulationConfig(
        checkpoint=checkpoint, parameterisation=parameterisation, data=str(data), out=str(out), options=options,
        members=members, split=split, fit=fit, observation=observation, observations=observations, noise=noise,
        steps=steps, lr=lr, draws=draws, seed=seed, anchor=anchor, condition_fit=condition_fit,
        executor="process" if workers > 1 else "inprocess", workers=workers, batch_members=batch_members,
    )
    from weightspace.space.population import read_failures

    def echo(r: dict) -> None:
        m = r["metrics"]
        typer.echo(f"{r['id']}: loss {r['loss']:.5f}, decode IoU {m['fidelity_iou']:.3f}, robust Betti "
                   f"{tuple(m['fidelity_robust_betti'])} (target {tuple(m['target_robust_betti'])}) ({r['seconds']:.1f} s)")

    loader = functools.partial(_load, checkpoint, "cuda") if gpus_per_task > 0 else functools.partial(_load, checkpoint)
    with executor_from_options(executor, workers, address, gpus_per_task) as ex:
        pop = build_population(config, generator=loader, executor=ex, on_member=echo)
    typer.echo(f"{out}: {len(pop)} members, D = {pop.frame.layout.size}")
    _print_fidelity(fidelity_summary(pop))
    failed = read_failures(out)
    for f in failed:
        typer.echo(f"failed {f['id']}: {f['error']}", err=True)
    if failed:
        typer.echo(f"{out}: {len(failed)} member(s) failed (failures.jsonl); run the same command again to retry them", err=True)
        raise typer.Exit(code=1)


def _print_fidelity(summary: dict) -> None:
    """The fidelity table (per family and all) and the flagged members."""
    from rich.console import Console
    from rich.table import Table

    from weightspace.analysis.rates import format_rate

    table = Table("family", "n", "IoU", "Betti ok [95%]", "empty", "base IoU", "s/member",
                  title=f"fidelity of {summary['population']}")
    rows = [*summary["per_family"].items(), ("all", summary["all"])]
    for name, t in rows:
        if not t["n"]:
            continue
        base = "" if t["base_iou"] is None else f"{t['base_iou']:.3f}"
        table.add_row(name, str(t["n"]), f"{t['iou']:.3f}", format_rate(t["betti"]), str(t["empty"]), base,
                      f"{t['seconds_per_member']:.1f}")
    if summary["all"]["n"]:  # imported members only: no member has a target, no table
        Console().print(table)
    for f in summary["flagged"]:
        typer.echo(f"flagged {f['id']}: {'; '.join(f['reasons'])}")
    if summary["unchecked"]:
        typer.echo(f"{len(summary['unchecked'])} members were built before fidelity was recorded (no figures): "
                   f"{', '.join(summary['unchecked'][:5])}{'...' if len(summary['unchecked']) > 5 else ''}")
    if summary.get("imported"):
        typer.echo(f"{len(summary['imported'])} members were imported (`population import`) and have no target shape "
                   f"to check against: {', '.join(summary['imported'][:5])}{'...' if len(summary['imported']) > 5 else ''}")


@population_app.command("import")
def population_import(
    sources: list[Path] = typer.Argument(..., help="PEFT LoRA adapter folders (adapter_config.json + adapter_model.safetensors), "
                                         "or fine-tuned checkpoint folders / .safetensors state dicts of the base's net."),
    checkpoint: str = typer.Option("default", "--checkpoint", help="The base generator they fine-tune: a shipped name or a checkpoint folder."),
    out: Path = typer.Option(..., "--out", help="Population folder (created, or added to: a rerun adds only new files)."),
    parameterisation: str = typer.Option("auto", "--parameterisation", help="auto (adapters: lora; full weights: layers) | lora | layers."),
    targets: Optional[str] = typer.Option(None, "--targets", help="layers: the tensors a point holds (regex, `group:a,b` or `all`, the default); "
                                          "lora: override the adapters' target_modules."),
    form: str = typer.Option("factors", "--form", help="Adapters as factors (A, B; one rank for all) or delta (B A per layer; any ranks)."),
    anchor: str = typer.Option("auto", "--anchor", help="Condition the points decode under: auto (the sources' anchor.safetensors "
                               "when exported by weightspace, else zeros where the generator fits there) | zeros."),
    anchor_from: Optional[Path] = typer.Option(None, "--anchor-from", help="Take the anchor of this population, point file or exported member."),
) -> None:
    """Make a population of fine-tunes made elsewhere: PEFT adapters or fine-tuned weights of one base.

    Each source becomes one member, named by its folder (or file); every file is checked before the
    first member is written, and weights are read from safetensors only. Imported members have no
    target shape: `population check` lists them as imported.

    Example: weightspace population import adapters/* --checkpoint default --anchor-from runs/pop --out runs/imported
    """
    from weightspace.space.population_import import import_population

    pop = import_population(sources, checkpoint=checkpoint, out=out, parameterisation=parameterisation, targets=targets,
                            form=form, anchor=anchor, anchor_from=anchor_from, generator=functools.partial(_load, checkpoint))
    typer.echo(f"{out}: {len(pop)} members ({pop.frame.parameterisation['name']}), D = {pop.frame.layout.size}")


@population_app.command("export")
def population_export(
    population: Path = typer.Argument(..., help="Population folder, point file, or folder of point files (a decode's "
                                      "subspace samples, a subspace invert's results: their points/)."),
    out: Path = typer.Option(..., "--out", help="Folder for one folder per member (out/<member id>/)."),
    as_: str = typer.Option("adapter", "--as", help="adapter (a PEFT LoRA adapter folder; lora factor points) | checkpoint "
                            "(the base with the member's weights in place; lora or layers)."),
    members: Optional[str] = typer.Option(None, "--members", help="Comma-separated member ids (default: all)."),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", help="The base generator (default: the one the population names)."),
) -> None:
    """Write members out as PEFT adapters or standalone checkpoints, with the anchor they decode under.

    An adapter folder loads with `PeftModel.from_pretrained`; a checkpoint folder with `generate
    --checkpoint`. `population import` reads either back into the same points. Subspace samples are
    exported from the folder `weightspace decode SUB --samples N --out DIR` wrote (DIR/points).

    Example: weightspace population export runs/pop --as adapter --members torus-00000 --out runs/adapters
    """
    from weightspace.space.population_import import export_population

    ids = [m.strip() for m in members.split(",") if m.strip()] if members else None
    named = checkpoint
    written = export_population(population, out, as_=as_, members=ids,
                                generator=None if named is None else functools.partial(_load, named))
    typer.echo(f"{out}: {len(written)} member(s) written as {'PEFT adapters' if as_ == 'adapter' else 'checkpoints'}")


@population_app.command("check")
def population_check(
    population: Path = typer.Argument(..., help="Population folder."),
    min_iou: float = typer.Option(0.5, "--min-iou", min=0.0, max=1.0, help="Flag members whose decode IoU to their target is below this."),
    as_json: bool = typer.Option(False, "--json", help="Print the fidelity summary as one JSON object."),
    strict: bool = typer.Option(False, "--strict", help="Exit with status 1 when any member is flagged."),
) -> None:
    """Print a population's fidelity: how well its members decode to their target shapes.

    Every member's decode IoU and robust Betti numbers against its target are recorded when it
    is built; a population whose members do not reproduce their shapes is not data. The check
    also reads every member's weights file: a missing or damaged one is an error (exit 1).

    Example: weightspace population check runs/pop --min-iou 0.5
    """
    from weightspace.runtime.errors import InputError
    from weightspace.space.population import fidelity_summary
    from weightspace.space.store import MANIFEST, Population

    pop = Population(population)
    if not len(pop):
        raise InputError(f"{population}: no finished members ({MANIFEST} missing or empty); nothing to check")
    summary = {**fidelity_summary(pop, min_iou=min_iou), "unreadable": pop.unreadable()}
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        _print_fidelity(summary)
    for u in summary["unreadable"]:
        typer.echo(f"error: member {u['id']}: {u['error']}", err=True)
    if summary["unreadable"]:
        raise typer.Exit(code=1)
    if strict and summary["flagged"]:
        raise typer.Exit(code=1)


@subspace_app.command("fit")
def subspace_fit(
    population: Path = typer.Argument(..., help="Population folder."),
    components: int = typer.Option(..., "--components", "-k", help="Number of components k."),
    solver: str = typer.Option("auto", "--solver", help="auto | exact | gram | randomized."),
    standardize: bool = typer.Option(False, "--standardize", help="Scale every coordinate to unit variance first."),
    seed: int = typer.Option(0, "--seed", help="Seed of the randomized solver."),
    form: Optional[str] = typer.Option(None, "--form", help="LoRA populations: delta (default; Delta W = B A per layer, "
                                       "converted exactly from stored factors) or factors (the stored A, B, for comparison)."),
    out: Path = typer.Option(..., "--out", help="Subspace folder (subspace.safetensors + summary.json)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a subspace already in --out."),
) -> None:
    """Fit a PCA subspace to a population: mean, basis, singular values, explained variance.

    LoRA factors are not identifiable (BA = (BR)(R^-1 A), and each member starts from its own random A),
    so a LoRA population's subspace is learned on Delta W unless --form factors is given.

    Example: weightspace subspace fit runs/pop --components 8 --solver auto --out runs/sub
    """
    from weightspace.space.population import fidelity_summary
    from weightspace.space.store import Population
    from weightspace.space.subspace import fit_subspace

    pop = Population(population)
    sub = fit_subspace(pop, components, form=form, solver=solver, standardize=standardize, seed=seed, out=out,
                       overwrite=overwrite)
    ratio = [round(float(v), 4) for v in sub.explained_variance_ratio]
    pconf = sub.frame.parameterisation
    shown = f", form {pconf['form']}" if "form" in pconf else ""
    typer.echo(f"{out}: k = {sub.k} of N = {sub.n}, D = {sub.frame.layout.size}{shown}, solver {sub.solver}, explained {json.dumps(ratio)}")
    flagged = [f["id"] for f in fidelity_summary(pop)["flagged"]]
    if flagged:  # `population check`'s flags: the subspace spans members that are not their shapes
        typer.echo(f"warning: {len(flagged)} of {sub.n} members do not reproduce their shapes ({', '.join(flagged[:5])}"
                   f"{', ...' if len(flagged) > 5 else ''}) and span this subspace too; `weightspace population check "
                   f"{population}` says why", err=True)


@subspace_app.command("invert")
def subspace_invert(
    subspace: Path = typer.Argument(..., help="Subspace folder (`weightspace subspace fit`)."),
    scans: Optional[list[Path]] = typer.Argument(None, help="Scans to invert: meshes (.obj .ply .stl .off .glb) or point clouds "
                                                 "(.npy (P,3), .npz, .ply, .xyz), at any scale and position: centred and scaled as `data import` does, never "
                                                 "turned, so a scan must face the way the subspace's shapes do."),
    observations: Optional[Path] = typer.Option(None, "--observations", help="Invert every observation of a `weightspace data observe` "
                                                "folder instead; with its source dataset at hand, each is also scored against its shape."),
    out: Path = typer.Option(..., "--out", help="Output folder: points/ID.safetensors, grids/, meshes/, manifest.jsonl, invert.json."),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", help="Generator (default: the one the subspace records)."),
    steps: int = typer.Option(300, "--steps", help="Most Adam steps per scan (early stopping on held-out points ends most sooner)."),
    lr: float = typer.Option(0.05, "--lr", help="Adam step on the coordinates, in units of the members' spread (sigma)."),
    prior: float = typer.Option(0.01, "--prior", help="Weight of the Gaussian prior of the subspace's members."),
    holdout: float = typer.Option(0.2, "--holdout", help="Share of each scan's points held out for early stopping."),
    starts: int = typer.Option(16, "--starts", help="Draws from the prior scored as starting points, beside the mean."),
    resolution: Optional[int] = typer.Option(None, "--resolution", help="Decode resolution (default: the generator's)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the held-out split, the starts and the decode."),
    meshes: bool = typer.Option(True, "--meshes/--no-meshes", help="Also write PLY meshes."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a finished inversion in --out (a killed one is taken up again without it)."),
    as_json: bool = typer.Option(False, "--json", help="Print invert.json's summary as JSON."),
) -> None:
    """Invert scans into a subspace: the point of the subspace whose shape fits each scan best.

    As weights2weights inverts an image into its space: Adam on the subspace coordinates under the
    Gaussian prior of its members, on the observed points' distance to the surface plus a free-space
    term, early-stopped on held-out points. Each scan gives a point file (`weightspace decode` reads
    it), its grid and mesh, and in manifest.jsonl its robust Betti numbers and the distance from the
    observed points to the decoded surface, before (the start) and after the fit.

    Example: weightspace subspace invert runs/sub scan.ply --out runs/inverted
    """
    from weightspace.data.grid import check_resolution
    from weightspace.experiments.invert import InvertConfig, invert_scans

    if resolution is not None:
        check_resolution(resolution, "--resolution")
    cfg = InvertConfig(subspace=str(subspace), out=str(out), scans=[str(s) for s in scans or []],
                       observations=str(observations) if observations is not None else None, checkpoint=checkpoint,
                       steps=steps, lr=lr, prior=prior, holdout=holdout, starts=starts, resolution=resolution, seed=seed,
                       meshes=meshes, overwrite=overwrite)
    result = invert_scans(cfg)
    summary = result["summary"]
    if as_json:
        typer.echo(json.dumps(summary))
        return
    typer.echo(f"{out}: {summary['scans']} scan(s) inverted into {subspace}; {summary['empty']} decode empty")
    _print_inversion(summary)
    if summary.get("members_of_subspace"):
        typer.echo(f"of which {summary['members_of_subspace']} are the subspace's own shapes; the unseen ones alone:")
        if summary.get("unseen"):
            _print_inversion(summary["unseen"])


@subspace_app.command("edit")
def subspace_edit(
    subspace: Path = typer.Argument(..., help="Subspace folder (`weightspace subspace fit`)."),
    by: str = typer.Option(..., "--by", help="The attribute whose direction to edit along: params.NAME (a generation parameter "
                           "of the members' shapes, e.g. params.minor), b0 | b1 | b2 (robust Betti numbers), volume, or family:NAME."),
    out: Path = typer.Option(..., "--out", help="Output folder: grids/, meshes/, points/, manifest.jsonl, edit.json, gallery.png."),
    population: Optional[Path] = typer.Option(None, "--population", help="The population the subspace was fitted to (default: "
                                              "the one its summary.json records)."),
    start: str = typer.Option("mean", "--start", help="mean (the subspace mean), a member id, or a point .safetensors file."),
    amounts: str = typer.Option("-2,-1,0,1,2", "--amounts", help="Steps along the direction, in the members' spread (standard "
                                "deviation) along it, comma separated."),
    seed: int = typer.Option(0, "--seed", help="Decode seed base (as `weightspace decode --seed`)."),
    resolution: Optional[int] = typer.Option(None, "--resolution", help="Decode resolution (default: the generator's)."),
    meshes: bool = typer.Option(True, "--meshes/--no-meshes", help="Also write PLY meshes."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier edit in --out."),
    as_json: bool = typer.Option(False, "--json", help="Print edit.json as JSON."),
) -> None:
    """Edit shapes along an attribute's direction in a subspace, and measure what the edit changed.

    As weights2weights edits identities: the members are labelled by an attribute of their shapes, the
    direction along which it grows is fitted by least squares (its R^2 in-sample and leave-one-out say
    how much it explains), and points along it from --start are decoded and measured (robust Betti
    numbers, volume). "predicted" is the fitted linear model's value of the attribute at each point, not a
    measurement of its shape; for b0, b1, b2 and volume the shapes are measured too, and Spearman's rho of
    the measured attribute against the amounts says whether the decoded shapes follow the direction.

    Example: weightspace subspace edit runs/sub --by params.minor --out runs/thicker
    """
    from weightspace.data.grid import check_resolution
    from weightspace.experiments.edit import edit_subspace
    from weightspace.runtime.errors import InputError

    if resolution is not None:
        check_resolution(resolution, "--resolution")
    try:
        steps = [float(a) for a in amounts.split(",") if a.strip()]
    except ValueError:
        raise InputError(f"--amounts must be numbers separated by commas, got {amounts!r}") from None
    r = edit_subspace(subspace, out, attribute=by, population=population, start=start, amounts=steps, seed=seed,
                      resolution=resolution, meshes=meshes, overwrite=overwrite)
    if as_json:
        typer.echo(json.dumps(r))
        return
    fit = r["fit"]
    loo = "n/a (too few members)" if fit["r2_leave_one_out"] is None else f"{fit['r2_leave_one_out']:.2f}"
    typer.echo(f"{out}: direction of {by} over {fit['n']} members: R^2 {fit['r2']:.2f}, leave-one-out {loo}")
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    for row in rows:
        measured = f", measured {row['measured']:g}" if "measured" in row else ""
        typer.echo(f"  {row['amount']:+g}: robust Betti {tuple(row['robust'])}, volume {row['volume']:.3f}, predicted "
                   f"{by} {row['predicted']:.3g}{measured}")
    if "measured_vs_amount_spearman" in r:
        rho = r["measured_vs_amount_spearman"]
        typer.echo(f"  measured {by} against the amounts: Spearman rho {'n/a (constant)' if rho is None else f'{rho:.2f}'}")


def _print_inversion(summary: dict) -> None:
    def fmt(value: Optional[float]) -> str:
        return "none (no surface)" if value is None else f"{value:.4g}"

    for key, what in (("seen_distance", "observed points to the surface"), ("chamfer_l1", "Chamfer-L1 to the observed shape"),
                      ("iou", "IoU with the observed shape")):
        if key in summary:
            fig, start = summary[key], summary.get(f"{key}_start", {})
            typer.echo(f"  {what}: median {fmt(fig['median'])} (at the start {fmt(start.get('median'))}), n = {fig['n']}")
    if "topology_correct" in summary:
        r = summary["topology_correct"]
        typer.echo(f"  robust Betti numbers of the observed shape: {r['successes']}/{r['n']} = {r['rate']:.2f} "
                   f"[{r['low']:.2f}, {r['high']:.2f}]")


def decode(
    source: Path = typer.Argument(..., help="A point .safetensors file, a population folder or a subspace folder."),
    out: Path = typer.Option(..., "--out", help="Output folder: grids/, meshes/ (PLY), manifest.jsonl and decode.json (source, checkpoint, seed); "
                           "for subspace samples also points/ (each sample's point: decode it again, or `population export` it)."),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", help="Generator (default: the one the source records)."),
    samples: Optional[int] = typer.Option(None, "--samples", help="Samples to draw from a subspace (default 8)."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="Scale of subspace samples (1: training spread) (default 1)."),
    seed: int = typer.Option(0, "--seed", help="Base seed: per-item sample and decode seeds derive from it (a population member's from its index, as its fidelity check decoded it at seed 0)."),
    resolution: Optional[int] = typer.Option(None, "--resolution", help="Grid resolution (default: the generator's)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Points decoded per call."),
    meshes: bool = typer.Option(True, "--meshes/--no-meshes", help="Also write PLY meshes."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a finished decode already in --out (a killed one is taken up again without it)."),
    workers: int = typer.Option(1, "--workers", help="Parallel workers decoding chunks of --batch-size points (1: in this process)."),
    executor: Optional[str] = typer.Option(None, "--executor", help=EXECUTOR_HELP),
    address: Optional[str] = typer.Option(None, "--address", help=ADDRESS_HELP),
    gpus_per_task: float = typer.Option(0.0, "--gpus-per-task", help=GPUS_HELP),
) -> None:
    """Decode weight-space points into SDF grids and meshes.

    Example: weightspace decode runs/sub --samples 16 --out runs/samples

    On a Ray cluster: weightspace decode runs/pop --out runs/decoded --executor ray --address auto (docs/scaling.md).
    """
    from weightspace.data.grid import check_resolution
    from weightspace.decode.sources import DecodeConfig, check_decode_out, decode_source, recorded_checkpoint, source_kind
    from weightspace.runtime.errors import InputError

    if resolution is not None:  # 0 too: it is no resolution, not "the generator's"
        check_resolution(resolution, "--resolution")
    check_decode_out(out, overwrite)  # before the generator loads
    kind = source_kind(source)
    given = [name for name, value in (("--samples", samples), ("--temperature", temperature)) if value is not None]
    if given and kind != "subspace":  # a population or point decodes as stored: nothing is drawn
        raise InputError(f"{' and '.join(given)}: {source} is a {kind}, which decodes as stored; only a subspace draws samples")
    cfg = DecodeConfig(source=str(source), out=str(out), checkpoint=checkpoint, samples=8 if samples is None else samples,
                       temperature=1.0 if temperature is None else temperature, seed=seed, resolution=resolution,
                       batch_size=batch_size, meshes=meshes, overwrite=overwrite)
    name = checkpoint or recorded_checkpoint(source)
    if not name:
        raise InputError(f"{source}: records no checkpoint; pass --checkpoint")
    if executor is None and address is None and workers == 1:
        rows = decode_source(cfg, generator=_load(name))
    else:
        loader = functools.partial(_load, name, "cuda") if gpus_per_task > 0 else functools.partial(_load, name)
        with executor_from_options(executor, workers, address, gpus_per_task) as ex:
            rows = decode_source(cfg, generator=loader, executor=ex)
    typer.echo(f"{out}: decoded {len(rows)} item(s)")


def register(app: typer.Typer) -> None:
    app.add_typer(population_app, name="population")
    app.add_typer(subspace_app, name="subspace")
    app.command("decode")(decode)
