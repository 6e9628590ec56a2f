import typer


def claims(paths: list[str] = typer.Argument(..., help="Record folders.")) -> None:
    typer.echo("claims: not implemented yet", err=True)
    raise typer.Exit(2)
