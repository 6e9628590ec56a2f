"""`auditor smoke`: the CLI over `auditor.smoke.runner.smoke_path` (thin; imports lazily)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from auditor.report import OutputFormat


def _parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"--env expects K=V, got {pair!r}")
        env[name] = value
    return env


def smoke(
    paths: Annotated[list[str], typer.Argument(help="Scripts or record folders.")],
    defaults: Annotated[bool, typer.Option("--defaults", help="Use the script's defaults, not the run "
                                                              "configuration.")] = False,
    env: Annotated[Optional[list[str]], typer.Option("--env", help="Override an environment variable, K=V "
                                                                   "(repeatable).")] = None,
    forward: Annotated[bool, typer.Option("--forward", help="Also build on CPU and run one forward pass.")] = False,
    format: Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")] = OutputFormat.text,
    memory_gb: Annotated[float, typer.Option("--memory-gb", help="Address-space limit of the child, GiB.")] = 8.0,
    cpu_seconds: Annotated[int, typer.Option("--cpu-seconds", help="CPU-time limit of the child, seconds.")] = 120,
    timeout: Annotated[float, typer.Option("--timeout", help="Wall-clock limit per submission, seconds.")] = 120.0,
    no_sandbox: Annotated[bool, typer.Option("--no-sandbox", help="Run the code WITHOUT bubblewrap "
                                                                  "(unsafe).")] = False,
) -> None:
    """Import a submission on CPU in a sandbox and build its model."""
    from auditor.findings import exit_code
    from auditor.smoke.batch import smoke_paths
    from auditor.smoke.runner import SmokeOptions
    from auditor.smoke.sandbox import GIB, Limits

    options = SmokeOptions(
        defaults=defaults,
        env=_parse_env(env or []),
        forward=forward,
        limits=Limits(memory_bytes=int(memory_gb * GIB), cpu_seconds=cpu_seconds, wall_seconds=timeout),
        sandbox=not no_sandbox,
    )
    if no_sandbox:
        typer.echo("WARNING: --no-sandbox: the submissions' code runs with your user's files, network and "
                   "processes in reach (only rlimits and a scrubbed environment)", err=True)
    else:
        from auditor.smoke.runner import NO_SANDBOX_MESSAGE, sandbox_tool

        if sandbox_tool() is None:  # refuse before running anything (exit 2: cannot run as asked)
            typer.echo(f"error: {NO_SANDBOX_MESSAGE}", err=True)
            raise typer.Exit(2)
    results = smoke_paths(paths, options)
    if format == OutputFormat.json:
        from auditor.report.json import results_json

        typer.echo(results_json(results))
    else:
        from auditor.report.text import smoke_text

        typer.echo(smoke_text(results))
    raise typer.Exit(exit_code(results))
