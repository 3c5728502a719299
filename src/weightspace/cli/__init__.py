"""The `weightspace` command: one group, each command parses options, builds a config and calls one function."""

from __future__ import annotations

import os
import sys

import typer
from rich.console import Console
from rich.markup import escape

from weightspace.runtime.errors import WeightspaceError

app = typer.Typer(
    name="weightspace",
    help="Treat the weights of a 3D shape generator as data: interpolate, learn subspaces, "
    "sample, invert, and measure topology and geometry.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """weightspace: the weights of a 3D shape generator, treated as data."""


@app.command()
def version() -> None:
    """Print the weightspace version.

    Example: weightspace version
    """
    from weightspace import __version__

    typer.echo(__version__)


_REGISTERED = False


def _register() -> None:
    """Add every command group to `app`, once (a second call would add each group again, and
    every later invocation would rebuild the duplicated command tree)."""
    global _REGISTERED
    if _REGISTERED:
        return
    # Explicit list of command modules; each exposes `register(app)`.
    from weightspace.cli import analyze, convert, data, demo, evaluate, experiment, generate, report, train, weights

    for module in (data, analyze, train, generate, evaluate, weights, experiment, report, demo, convert):
        module.register(app)
    _reflow_help(app)
    _REGISTERED = True


def _reflow_help(group: typer.Typer) -> None:
    """Give every command of `group` (and of its subgroups) its docstring as help with each paragraph's lines
    joined (`reflow`). typer keeps the single line breaks of a docstring's later paragraphs, so at a terminal
    narrower than the source's lines every broken line wrapped again on its own, leaving ragged half lines."""
    for info in group.registered_commands:
        if info.help is None and info.callback is not None and info.callback.__doc__:
            info.help = reflow(info.callback.__doc__)
    for sub in group.registered_groups:
        if sub.typer_instance is not None:
            _reflow_help(sub.typer_instance)


def reflow(doc: str) -> str:
    """`doc` (dedented) with the lines of each paragraph joined by spaces, except lines that begin a list item
    ("- ", "* ") or are indented (a code or command line): those keep their line. A paragraph starting with
    click's \\b (no rewrapping) is kept as it is."""
    import inspect

    paragraphs = []
    for para in inspect.cleandoc(doc).split("\n\n"):
        if para.startswith("\b"):
            paragraphs.append(para)
            continue
        lines: list[str] = []
        for line in para.split("\n"):
            if lines and not line.startswith((" ", "\t", "- ", "* ")):
                lines[-1] += " " + line.strip()
            else:
                lines.append(line)
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


INTERNAL_ERROR = 70  # sysexits EX_SOFTWARE: distinct from 2 (bad input) and from small counts some commands return
SOME_FAILED = 3  # `data import`: some files failed (named in the summary), the others were imported


def _interrupt(e: BaseException) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt among the causes of `e`, if any."""
    seen: set[int] = set()
    cause: BaseException | None = e
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def _interrupted(err: Console, e: KeyboardInterrupt) -> None:
    """Exit 130 with one line: the interrupted command's own (`runtime.errors.Interrupted`, a trainer's
    `Stopped`: what was saved and how to resume), or the general one."""
    line = str(e).strip() or "interrupted; finished files are kept (re-running resumes where a command supports it)"
    err.print(escape(line), highlight=False)
    sys.exit(130)


def _refuse_copies_under_torchrun(args: list[str]) -> None:
    """Under torchrun (WORLD_SIZE > 1) only `train` shares one job across its processes; any other command
    would run whole in every process, N copies writing one --out. Refused in each before anything runs."""
    from weightspace.runtime.errors import InputError

    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return
    command = next((a for a in args if not a.startswith("-")), None)
    if world > 1 and command not in (None, "train"):
        raise InputError(f"{command}: runs whole in each of the {world} processes torchrun started (only `train` is "
                         "data-parallel); run it without torchrun, with --workers N or --executor ray to use more "
                         "cores or machines (docs/scaling.md)")


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the app; every failure becomes one line on stderr, never a traceback.

    Exit status 2: a `WeightspaceError` (bad input; the message names the file or field).
    Exit status 3: `data import` read some files but not all (each failure named, with its reason).
    Exit status 70 (EX_SOFTWARE): an unexpected exception, i.e. a bug in weightspace, or in a plug-in
    generator's code when a frame of it raised (the line names the kind, file and line); the line says
    which, and `WEIGHTSPACE_DEBUG=1` shows the traceback. Exit status 130: interrupted (Ctrl-C), with
    one line on what was kept (a command that saves as it goes, such as `population build`, says how
    much and how to resume).
    """
    _register()
    # the process is the command's own: it keeps freed pages (runtime.allocator), as pool and Ray workers
    # do, where a library caller of an in-process build keeps its allocator as it was
    from weightspace.runtime.allocator import retain_freed_memory

    retain_freed_memory()
    # messages hold file names and lists like ['a'], which rich would read as markup: escape them; and
    # addresses like host:1234, whose ":1234:" rich would print as an emoji: no emoji codes
    err = Console(stderr=True, soft_wrap=True, emoji=False)
    try:
        _refuse_copies_under_torchrun(sys.argv[1:] if argv is None else list(argv))
        app(args=argv)
    except SystemExit as e:  # typer turns Ctrl-C into a silent exit 130, keeping the KeyboardInterrupt as its cause
        interrupt = _interrupt(e) if e.code == 130 else None
        if interrupt is None:
            raise
        _interrupted(err, interrupt)
    except WeightspaceError as e:
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False)
        sys.exit(2)
    except MemoryError as e:
        err.print(f"[bold red]error:[/] out of memory ({escape(str(e)[:200])}); ask for a smaller resolution, count or batch",
                  highlight=False)
        sys.exit(2)
    except KeyboardInterrupt as e:
        _interrupted(err, e)
    except Exception as e:
        if os.environ.get("WEIGHTSPACE_DEBUG"):
            raise
        detail = " ".join(str(e).split())[:300]
        from weightspace.generators.registry import plugin_frame

        plugin = plugin_frame(e.__traceback__)
        if plugin is not None:  # the user's generator raised it: say so, and where, rather than blame weightspace
            err.print(f"[bold red]error in the generator plug-in[/] of {escape(plugin)}: {type(e).__name__}: {escape(detail)}",
                      highlight=False)
            err.print("the plug-in's own code raised this, not weightspace; rerun with WEIGHTSPACE_DEBUG=1 for the traceback",
                      highlight=False)
            sys.exit(INTERNAL_ERROR)
        err.print(f"[bold red]internal error:[/] {type(e).__name__}: {escape(detail)}", highlight=False)
        err.print("this is a bug in weightspace, not in your input; rerun with WEIGHTSPACE_DEBUG=1 for the traceback", highlight=False)
        sys.exit(INTERNAL_ERROR)
