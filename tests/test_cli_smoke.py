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


def test_natural_mistakes_are_named_before_any_work(tmp_path):
    """A file given as an output folder, options that do not apply to what was asked, a misspelt split:
    each is one named error, raised before anything is computed or written."""
    from weightspace.data.make import make_dataset
    from weightspace.runtime.errors import InputError

    _register()
    runner = CliRunner()
    afile = tmp_path / "f.txt"
    afile.write_text("hi")
    data = tmp_path / "d"
    make_dataset(data, family="torus", count=2, resolution=16, n_points=32, progress=False)
    cases = [
        (["data", "make", "--family", "torus", "--count", "2", "--out", str(afile)], "--out: .*f.txt is a file"),
        (["generate", "--family", "torus", "--out", str(afile)], "--out: .*f.txt is a file"),
        (["generate", "--family", "torus", "--margin", "0.3", "--out", str(tmp_path / "g")], "--margin sizes the box a scan"),
        (["data", "observe", str(data), "--kind", "clean", "--partial-mode", "view", "--out", str(tmp_path / "o")],
         "--partial-mode chooses how a partial observation is cut; --kind is 'clean'"),
        (["data", "observe", str(data), "--split", "tst", "--out", str(tmp_path / "o")], r"--split must be one of train \| val \| test"),
        (["evaluate", "families", "default", "--per-family", "1", "--gallery", str(tmp_path)], "--gallery: .* is a folder"),
        (["evaluate", "families", "default", "--per-family", "1", "--gallery", str(tmp_path / "g.jpg")], "does not end in .png"),
    ]
    import re

    for args, match in cases:
        result = runner.invoke(app, args)
        assert isinstance(result.exception, InputError) and re.search(match, str(result.exception)), (args, result.exception)
    assert afile.read_text() == "hi" and not (tmp_path / "g").exists() and not (tmp_path / "o").exists()


def test_evaluating_on_shapes_of_another_pose_warns(tmp_path):
    import json

    from weightspace.cli.evaluate import pose_mismatch

    (tmp_path / "summary.json").write_text(json.dumps({"pose": "random"}))
    warning = pose_mismatch({"data": {"pose": "canonical"}}, tmp_path)
    assert warning is not None and "'random' pose" in warning and "--pose canonical" in warning
    assert pose_mismatch({"data": {"pose": "random"}}, tmp_path) is None
    assert pose_mismatch({}, tmp_path) is None and pose_mismatch({"data": {"pose": "canonical"}}, tmp_path / "nowhere") is None
    # imported meshes are "as given": no --pose remakes them, so there is no procedural pose to compare
    assert pose_mismatch({"data": {"pose": "as given"}}, tmp_path) is None
    (tmp_path / "summary.json").write_text(json.dumps({"pose": "as given"}))
    assert pose_mismatch({"data": {"pose": "canonical"}}, tmp_path) is None


def test_help_paragraphs_are_reflowed_to_the_terminal():
    """typer kept the single line breaks of a docstring's later paragraphs, so at 80 columns every broken source
    line wrapped again on its own ('... A' / 'member whose task keeps' / 'failing there ...')."""
    from weightspace.cli import _register, app, reflow

    assert reflow("Head.\n\n    Joined\n    here.\n\n    - one\n    - two\n      more\n\n    Example: x") == \
        "Head.\n\nJoined here.\n\n- one\n- two\n  more\n\nExample: x"
    _register()
    r = CliRunner().invoke(app, ["population", "build", "--help"], env={"COLUMNS": "80"})
    text = " ".join(r.output.split())
    assert r.exit_code == 0 and "A member whose task keeps failing there is listed in failures.jsonl" in text
    lines = [line.strip() for line in r.output.splitlines()]
    assert not any(line.endswith("keeps") for line in lines)  # the source's break no longer shows
