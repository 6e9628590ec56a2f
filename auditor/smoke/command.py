"""`auditor smoke`: sandboxed CPU import and instantiation of a submission's model."""

from __future__ import annotations

import json
from typing import Optional

import typer

from auditor.sandbox import SandboxUnavailable
from auditor.smoke.runner import SmokeOptions, UnreadablePath, smoke_path
from auditor.smoke.sandbox import GIB, Limits


def _parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"--env expects K=V, got {pair!r}")
        env[name] = value
    return env


def smoke(
    paths: list[str] = typer.Argument(..., help="Scripts or record folders."),
    defaults: bool = typer.Option(False, "--defaults", help="Use the script's defaults, not the run configuration."),
    env: Optional[list[str]] = typer.Option(None, "--env", help="Override an environment variable, K=V (repeatable)."),
    forward: bool = typer.Option(False, "--forward", help="Also build on CPU and run one forward pass."),
    output_format: str = typer.Option("text", "--format", help="text or json."),
    memory_gb: float = typer.Option(8.0, "--memory-gb", help="Address-space limit of the child, GiB."),
    cpu_seconds: int = typer.Option(120, "--cpu-seconds", help="CPU-time limit of the child, seconds."),
    timeout: float = typer.Option(120.0, "--timeout", help="Wall-clock limit per submission, seconds."),
    no_sandbox: bool = typer.Option(False, "--no-sandbox", help="Run the code WITHOUT bubblewrap (unsafe)."),
) -> None:
    if output_format not in ("text", "json"):
        raise typer.BadParameter("--format must be text or json")
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
    results = []
    unreadable = failed = False
    for path in paths:
        try:
            result = smoke_path(path, options)
        except SandboxUnavailable as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except UnreadablePath as exc:
            unreadable = True
            if output_format == "text":
                typer.echo(f"{path}: cannot read: {exc}", err=True)
            else:
                results.append({"path": path, "status": "fail", "seconds": 0.0, "config_source": None, "env": {},
                                "model": None, "code_bytes": None,
                                "error": {"kind": "unreadable", "message": str(exc)}})
            continue
        failed = failed or not result.ok
        if output_format == "text":
            typer.echo(result.line())
        else:
            results.append(result.to_json())
    if output_format == "json":
        typer.echo(json.dumps({"results": results}, indent=2))
    if unreadable:
        raise typer.Exit(2)
    if failed:
        raise typer.Exit(1)
