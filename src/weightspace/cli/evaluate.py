"""CLI group `weightspace evaluate`: `evaluate generator CKPT --data DIR` for any generator kind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

import typer

from weightspace.runtime.errors import InputError


def _latent_diffusion_evaluator() -> Callable:
    from weightspace.generators.latent_diffusion.evaluate import evaluate_generator

    return evaluate_generator


def _neural_field_evaluator() -> Callable:
    from weightspace.generators.neural_field.evaluate import evaluate_generator

    return evaluate_generator


# An explicit kind-to-evaluator table; each entry imports its module only when used.
EVALUATORS: dict[str, Callable[[], Callable]] = {
    "latent-diffusion": _latent_diffusion_evaluator,
    "neural-field": _neural_field_evaluator,
}


def training_data_hash(folder: Path, config: dict) -> str | None:
    """The manifest hash of a checkpoint's training data: from its config.json, else its training_record.json."""
    for record in (config, _read_record(folder / "training_record.json")):
        data = record.get("data") if isinstance(record, dict) else None
        if isinstance(data, dict) and (data.get("manifest_hash") or data.get("manifest_sha256")):
            return str(data.get("manifest_hash") or data.get("manifest_sha256"))
    return None


def _read_record(path: Path) -> dict:
    from weightspace.runtime.io import read_json

    if not path.is_file():
        return {}
    try:
        record = read_json(path)
    except (InputError, ValueError):
        return {}  # a damaged record only costs the training-fit figure
    return record if isinstance(record, dict) else {}


def pose_mismatch(gen_config: object, data: Path) -> str | None:
    """A warning when the data's shapes come in another pose than the one the checkpoint was trained
    in (its config's data.pose against the data folder's summary.json): every figure then measures
    the pose gap as well (a `default` on random-pose shapes reconstructs at IoU 0.50, not 0.75). Only
    procedural poses are compared: imported meshes are "as given", in an orientation no `--pose` remakes."""
    from weightspace.data.families import POSES

    recorded = gen_config.get("data") if isinstance(gen_config, dict) else None
    trained = recorded.get("pose") if isinstance(recorded, dict) else None
    given = _read_record(Path(data) / "summary.json").get("pose")
    if trained in POSES and given in POSES and trained != given:
        return (f"warning: {data} holds shapes in the {given!r} pose, but this checkpoint was trained in the {trained!r} "
                f"pose; its figures here include that gap (make the data with --pose {trained} to compare with its record)")
    return None


def evaluate_checkpoint(checkpoint: str, data: Path, *, max_shapes: int, seed: int, device: str = "cpu", executor=None) -> dict:
    """Load a generator (a folder or a shipped name) on `device` and return its figures on `data`.

    The training folder is recognised by the data hash the checkpoint records: a neural field
    reports its training fit only there, and on any other folder every shape counts as held out.
    `executor`: the decodes (latent diffusion) or the held-out reconstructions and family samples (neural
    field) run there, each worker loading the checkpoint itself.
    """
    from weightspace.generators import load_generator
    from weightspace.generators.registry import resolve_checkpoint
    from weightspace.runtime.device import pick_device

    gen = load_generator(checkpoint, pick_device(device))
    kind = gen.kind
    if kind not in EVALUATORS:
        raise InputError(f"no evaluator for generator kind {kind!r}; known kinds: {sorted(EVALUATORS)}")
    training_hash = training_data_hash(resolve_checkpoint(checkpoint), gen.config)
    if executor is None:
        return EVALUATORS[kind]()(gen, data, max_shapes=max_shapes, seed=seed, training_hash=training_hash)
    import functools

    from weightspace.cli.weights import _load

    loader = functools.partial(_load, checkpoint, "cuda") if getattr(executor, "num_gpus", 0) else functools.partial(_load, checkpoint)
    return EVALUATORS[kind]()(gen, data, max_shapes=max_shapes, seed=seed, training_hash=training_hash, executor=executor, loader=loader)


def figure_lines(figures: dict) -> list[str]:
    """The text table of `evaluate generator`: a rate with its Wilson 95% interval and n on one line
    (`<key>_n`, `<key>_low`, `<key>_high` folded in), an unmeasured figure (None) as "not measured (why)"
    from its `<key>_not_measured`."""
    folded = {f"{key}{end}" for key in figures if f"{key}_n" in figures for end in ("_n", "_low", "_high", "_not_measured")}
    folded |= {f"{key}_not_measured" for key, value in figures.items() if value is None}
    lines = []
    for key, value in figures.items():
        if key in folded:
            continue
        if value is None:
            text = f"not measured ({figures.get(f'{key}_not_measured', 'nothing to measure')})"
        elif f"{key}_n" in figures and f"{key}_low" in figures:
            text = f"{value:.4f} [{figures[f'{key}_low']:.4f}, {figures[f'{key}_high']:.4f}] (n={figures[f'{key}_n']})"
        else:
            text = f"{value:.4f}" if isinstance(value, float) else str(value)
        lines.append(f"{key:22s} {text}")
    return lines


def register(app: typer.Typer) -> None:
    evaluate_app = typer.Typer(help="Measure generators against held-out data.", no_args_is_help=True)

    @evaluate_app.command("generator")
    def generator(
        checkpoint: str = typer.Argument(..., help="Checkpoint folder, or a shipped name: default, default-field, default-64, default-points."),
        data: Path = typer.Option(..., "--data", help="Data folder: the training folder's test split is held out; every shape of any other folder is."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
        max_shapes: int = typer.Option(64, "--max-shapes", help="Evaluate at most this many held-out shapes. "
                                       "1-NNA and COV depend on the count (1-NNA separates two different sets better the "
                                       "more shapes it has): compare them at one count, and quote the whole test split."),
        seed: int = typer.Option(0, "--seed", help="Seed of every observation and sample."),
        threads: int = typer.Option(0, "--threads", help="torch threads (0 = torch's default)."),
        device: str = typer.Option("auto", "--device", help="auto (CUDA when present) | cpu | cuda | cuda:N."),
        workers: int = typer.Option(1, "--workers", help="Parallel workers for the decodes and reconstructions (1: in this process)."),
        executor: Optional[str] = typer.Option(None, "--executor", help="inprocess | process | ray (see `population build`)."),
        address: Optional[str] = typer.Option(None, "--address", help="--executor ray: join the cluster at auto or HOST:PORT."),
        gpus_per_task: float = typer.Option(0.0, "--gpus-per-task", help="--executor ray: GPUs each task asks for."),
    ) -> None:
        """Evaluate a generator: autoencoder / point-cloud / family figures and MMD, COV, 1-NNA.

        MMD, COV and 1-NNA use Chamfer-L2 on 1,024 surface samples a shape: the mean of the two directed mean
        squared distances (world units squared, half of PointFlow's sum), with no per-shape rescaling.

        Imported shapes count in the autoencoder and point-cloud figures; the family figures are over families with a declared topology only, as in `evaluate families`.

        Example: weightspace evaluate generator default --data runs/data32 --json

        On a Ray cluster (latent diffusion): ... --executor ray --address auto (docs/scaling.md).
        """
        import torch

        if max_shapes < 1:
            raise InputError(f"--max-shapes must be >= 1, got {max_shapes}")
        if threads < 0:
            raise InputError(f"--threads must be >= 0, got {threads}")
        if threads:
            torch.set_num_threads(threads)
        if executor is None and address is None and workers == 1:
            figures = evaluate_checkpoint(checkpoint, data, max_shapes=max_shapes, seed=seed, device=device)
        else:
            from weightspace.cli.weights import executor_from_options

            with executor_from_options(executor, workers, address, gpus_per_task) as ex:
                figures = evaluate_checkpoint(checkpoint, data, max_shapes=max_shapes, seed=seed, device=device, executor=ex)
        from weightspace.generators.registry import resolve_checkpoint
        from weightspace.runtime.io import read_json

        folder = resolve_checkpoint(checkpoint)
        warning = pose_mismatch(read_json(folder / "config.json") if (folder / "config.json").is_file() else {}, data)
        if warning:
            typer.echo(warning, err=True)
        if as_json:
            typer.echo(json.dumps(figures, sort_keys=False))
        else:
            for line in figure_lines(figures):
                typer.echo(line)

    @evaluate_app.command("families")
    def families(
        checkpoint: str = typer.Argument(..., help="A checkpoint folder or shipped name with families (default, default-field, default-64, ...)."),
        per_family: int = typer.Option(8, "--per-family", help="Samples per family (one seed each)."),
        seed: int = typer.Option(0, "--seed", help="Base seed of the samples."),
        steps: Optional[int] = typer.Option(None, "--steps", help="Latent diffusion: DDIM steps (default: the checkpoint's sample_steps)."),
        guidance: Optional[float] = typer.Option(None, "--guidance", help="Latent diffusion: classifier-free guidance (default: the checkpoint's)."),
        gallery: Optional[Path] = typer.Option(None, "--gallery", help="Write a PNG of every sample, a row per family."),
        out: Optional[Path] = typer.Option(None, "--out", help="Write the figures and every sample's Betti numbers as JSON."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
        threads: int = typer.Option(0, "--threads", help="torch threads (0 = torch's default)."),
        device: str = typer.Option("auto", "--device", help="auto (CUDA when present) | cpu | cuda | cuda:N."),
    ) -> None:
        """Sample every family and check each sample's robust (b0, b1) against the family's declaration.

        A family without a declared topology (`imported`) is refused, as `evaluate generator` leaves it out of its family figures.

        Example: weightspace evaluate families default --per-family 8 --gallery runs/default-families.png
        """
        import torch

        from weightspace.analysis.rates import format_rate
        from weightspace.generators import load_generator
        from weightspace.generators.latent_diffusion.evaluate import family_samples
        from weightspace.runtime.device import pick_device
        from weightspace.runtime.io import atomic_write_json

        if threads < 0:
            raise InputError(f"--threads must be >= 0, got {threads}")
        if gallery is not None and (gallery.is_dir() or gallery.suffix.lower() != ".png"):  # checked before the sampling
            raise InputError(f"--gallery: {gallery} " + ("is a folder" if gallery.is_dir() else "does not end in .png")
                             + "; give the PNG file to write, e.g. runs/families.png")
        if threads:
            torch.set_num_threads(threads)
        gen = load_generator(checkpoint, pick_device(device))
        if gen.kind == "latent-diffusion":
            sampler = gen.sampler_settings(steps, guidance)
        elif steps is not None or guidance is not None:
            raise InputError(f"--steps and --guidance set a latent diffusion sampler; {checkpoint} is a {gen.kind} checkpoint")
        else:
            sampler = {}
        res = family_samples(gen, per_family=per_family, seed=seed, **sampler)
        figures = {"checkpoint": checkpoint, "rate": res["rate"], "per_family": res["per_family"],
                   "seconds_per_shape": res["seconds_per_shape"], "per_family_samples": per_family, "seed": seed, **sampler}
        if gallery is not None:
            from weightspace.report.gallery import render_gallery

            fams = list(res["grids"])
            settings = f" ({sampler['steps']} steps, guidance {sampler['guidance']:g})" if sampler else ""
            by = {f: [r for r in res["samples"] if r["family"] == f] for f in fams}
            render_gallery([res["grids"][f] for f in fams], gallery, row_labels=fams,
                           titles=[[f"rb {tuple(r['robust'][:2])}" for r in by[f]] for f in fams],
                           ok=[[r["match"] for r in by[f]] for f in fams], cell=1.1,
                           title=f"{checkpoint}{settings}: family samples, blue = robust (b0, b1) of the family "
                                 f"({format_rate(res['rate'])})")
            typer.echo(f"wrote {gallery}", err=True)  # stderr: --json keeps stdout to the figures
        if out is not None:
            atomic_write_json(out, {**figures, "samples": res["samples"]})
        if as_json:
            typer.echo(json.dumps(figures))
        else:
            for fam, r in res["per_family"].items():
                typer.echo(f"{fam:10s} {format_rate(r)}")
            typer.echo(f"{'all':10s} {format_rate(res['rate'])}   {res['seconds_per_shape']:.3f} s per shape")

    app.add_typer(evaluate_app, name="evaluate")
