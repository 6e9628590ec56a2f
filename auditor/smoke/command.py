import typer


def smoke(paths: list[str] = typer.Argument(..., help="Scripts or record folders.")) -> None:
    typer.echo("smoke: not implemented yet", err=True)
    raise typer.Exit(2)
