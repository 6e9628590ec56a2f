"""The `auditor` command line: a thin typer layer over the library.

Each command parses options, calls the library and prints; no analysis logic here.
Commands import their modules lazily so that `auditor classify` never imports torch.
"""

from __future__ import annotations

import typer

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


if __name__ == "__main__":
    app()
