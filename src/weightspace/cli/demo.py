"""CLI command `weightspace demo`: the main job on the embedded default."""

from pathlib import Path

import typer


def demo(
    out: Path = typer.Option(Path("results/demo"), help="Results folder (created; its shapes are remade)."),
    per_family: int = typer.Option(3, min=1, help="Procedural shapes made per family."),
    seed: int = typer.Option(0, help="Seed of the procedural shapes section (the shapes made and measured); the "
                             "studies run at their own fixed demo settings."),
    fresh: bool = typer.Option(False, "--fresh", help="Measure the studies again even where an earlier demo run "
                               "finished them with the same weights, settings and package version (else reused)."),
) -> None:
    """Run the main job on procedural shapes and the shipped checkpoints, and write a report.

    Example: weightspace demo --out results/demo
    """
    from weightspace.report.demo import DemoConfig, run_demo

    run_demo(DemoConfig(out=out, per_family=per_family, seed=seed, fresh=fresh))


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
