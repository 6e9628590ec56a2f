"""`auditor claims`: the CLI over `auditor.claims.checks.check_claims` (thin; imports lazily)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from auditor.report import OutputFormat


class Track(str, Enum):
    auto = "auto"
    record = "record"
    non_record = "non-record"


def claims(
    paths: Annotated[list[Path], typer.Argument(help="Record folders.")],
    format: Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")] = OutputFormat.text,
    sota: Annotated[Optional[float], typer.Option("--sota", help="Current SOTA val_bpb, for the significance test.")
                    ] = None,
    sota_dir: Annotated[Optional[Path], typer.Option("--sota-dir", help="The SOTA record folder, for a Welch test "
                                                                        "on its logs.")] = None,
    track: Annotated[Track, typer.Option("--track", help="From the path or submission.json (auto), or forced.")
                     ] = Track.auto,
    show_info: Annotated[bool, typer.Option("--info", help="Also print info findings in the text output.")] = False,
) -> None:
    """Check a record folder's claims (submission.json, README table) against its logs and files."""
    from auditor.claims.checks import check_claims
    from auditor.findings import exit_code

    results = [check_claims(path, sota_bpb=sota, sota_dir=sota_dir, track=track.value) for path in paths]
    if format == OutputFormat.json:
        from auditor.report.json import results_json

        typer.echo(results_json(results))
    else:
        from auditor.report.text import claims_text

        typer.echo(claims_text(results, show_info))
    raise typer.Exit(exit_code(results))
