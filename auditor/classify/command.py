"""`auditor classify`: the CLI over `auditor.classify.classify_paths` (thin; imports lazily)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer


class ClassifyFormat(str, Enum):
    text = "text"
    json = "json"
    sarif = "sarif"


def classify(
    paths: Annotated[list[str], typer.Argument(help="Scripts or record folders to analyze.")],
    format: Annotated[ClassifyFormat, typer.Option("--format", "-f", help="Output format.")] = ClassifyFormat.text,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Parallel worker processes.")] = 1,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Ignore and do not write the result cache.")] = False,
) -> None:
    """Static compliance analysis of submissions (scripts or record folders)."""
    from auditor.classify.runner import classify_paths
    from auditor.findings import exit_code

    results = classify_paths(paths, jobs=jobs, use_cache=not no_cache)
    if format == ClassifyFormat.sarif:
        from auditor.report.sarif import classify_sarif

        typer.echo(classify_sarif(results))
    elif format == ClassifyFormat.json:
        from auditor.report.json import results_json

        typer.echo(results_json(results))
    else:
        from auditor.report.text import classify_text

        typer.echo(classify_text(results))
    raise typer.Exit(exit_code(results))
