"""CLI group `weightspace train`: one command per generator architecture."""

import typer


def register(app: typer.Typer) -> None:
    from weightspace.cli import train_latent_diffusion, train_neural_field

    train_app = typer.Typer(help="Train a shape generator on a data folder.", no_args_is_help=True)
    train_latent_diffusion.register(train_app)
    train_neural_field.register(train_app)
    app.add_typer(train_app, name="train")
