"""The console command starts and answers --help."""

from typer.testing import CliRunner

from weightspace.cli import _register, app


def test_help_lists_commands():
    _register()
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "version" in result.output


def test_help_texts_survive_rich_markup():
    """Help is rendered by rich, which takes `[word ...]` for a style tag and drops it: `--samples`'s
    "[default: 8]" once vanished from its help. Every command's and option's text must render as written."""
    import click
    import typer
    from rich.markup import render

    _register()
    eaten = []

    def walk(command, path):
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(sub, [*path, name])
            return
        for name, text in [("(command)", command.help or ""), *((p.name, getattr(p, "help", None) or "") for p in command.params)]:
            if render(text).plain != text:
                eaten.append((" ".join(path), name, text))

    walk(typer.main.get_command(app), [])
    assert not eaten
