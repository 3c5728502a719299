"""The console command starts and answers --help."""

from typer.testing import CliRunner

from weightspace.cli import _register, app


def test_help_lists_commands():
    _register()
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "version" in result.output
