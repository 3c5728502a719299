"""CLI command `weightspace report`: one self-contained page from one or more results folders."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List

import typer


def report(
    results: List[Path] = typer.Argument(..., help="Results folders: a study's, a compare run's or a demo's (searched 3 levels down), or a subspace invert or edit folder (a section each)."),
    out: str = typer.Option("report.html", "--out", help="The page to write, or a folder to write report.html into (an existing one, or a name ending in /; renders go to each study's renders/)."),
    title: str = typer.Option("", "--title", help="Page title (default: the studies and generators it shows)."),
) -> None:
    """Build one page, readable offline, from any studies on any generators: verdicts, figures, shapes, tables.

    Example: weightspace report results/demo/default results/demo/default-field --out both.html
    """
    from weightspace.report.demo import demo_extras
    from weightspace.report.html import write_page

    page_path = Path(out)  # drops a trailing /, which names a folder as well
    if page_path.is_dir() or out.endswith(("/", os.sep)):  # a folder: the page goes inside it, as report.html
        page_path = page_path / "report.html"
    extra, notes = demo_extras(results)
    page, dec = write_page(results, page_path, title=title or None, extra=extra, notes=notes)
    typer.echo(f"wrote {page} ({page.stat().st_size / 1e6:.1f} MB); {dec.text()}")


def register(app: typer.Typer) -> None:
    app.command("report")(report)
