"""CLI glue for `auditor classify`."""

from __future__ import annotations

from enum import Enum

import typer


class Format(str, Enum):
    text = "text"
    json = "json"


def classify(
    paths: list[str] = typer.Argument(..., help="Scripts or record folders to analyze."),
    format: Format = typer.Option(Format.text, "--format", "-f", help="Output format."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Parallel worker processes."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Ignore and do not write the result cache."),
) -> None:
    from auditor.classify import classify_paths
    from auditor.findings import exit_code
    from auditor.report import classify_json, classify_text

    results = classify_paths(paths, jobs=jobs, use_cache=not no_cache)
    typer.echo(classify_json(results) if format == Format.json else classify_text(results))
    raise typer.Exit(exit_code(results))
