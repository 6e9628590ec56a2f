"""The `auditor` command line: a thin typer layer over the library.

Each command parses options (typer with `Annotated`, Enums for choices, `--format/-f`
everywhere), calls the library and prints through `auditor.report`; no analysis logic
here. Command modules import only typer and the standard library at module level, and
their work lazily, so that `auditor classify` never imports torch.
Exit codes, for every command: 0 clean, 1 a flag, 2 bad input, 3 an internal error.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from auditor.report import OutputFormat
from auditor.claims.command import claims
from auditor.classify.command import classify
from auditor.smoke.command import smoke
from auditor.review.command import review
from auditor.data.command import data_app
from auditor.reproduce.command import reproduce

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Compliance auditor and reproducibility checker for Parameter Golf submissions.",
)
app.command(help="Static compliance analysis of submissions (scripts or record folders).")(classify)
app.command(help="Check a record folder's claims against its logs and files.")(claims)
app.command(help="Import a submission on CPU in a sandbox and build its model.")(smoke)
app.add_typer(data_app, name="data")
app.command(help="The review comment (Markdown) for a submission or every PR; posting to GitHub.")(review)
app.command(help="Rerun a submission (or the reference) under torchrun and judge its claims.")(reproduce)


@app.command("rules")
def rules(
    rule_id: Annotated[Optional[str], typer.Argument(help="A rule id; all ids when omitted.")] = None,
    format: Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")] = OutputFormat.text,
) -> None:
    """A rule's documentation: what it flags, the ruling and why, a flagged and a legal example."""
    from auditor.report.json import rules_json
    from auditor.report.text import rule_list_text, rule_text
    from auditor.rules import rule_ids
    from auditor.rules._docs import rule_doc

    try:
        docs = [rule_doc(known) for known in ([rule_id] if rule_id is not None else rule_ids())]
    except KeyError:
        typer.echo(f"unknown rule {rule_id!r}; known: {', '.join(rule_ids())}", err=True)
        raise typer.Exit(2) from None
    if format == OutputFormat.json:
        typer.echo(rules_json(docs))
    else:
        typer.echo(rule_text(docs[0]) if rule_id is not None else rule_list_text(docs))


if __name__ == "__main__":
    app()
