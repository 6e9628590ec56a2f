"""`auditor reproduce`: the typer command, a thin layer over auditor.reproduce.reproduce().

Only typer and the standard library are imported here: the library (numpy, torch for the
hardware check) loads when the command runs, so `auditor classify` never pays for it.
"""

from __future__ import annotations

import json
import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from auditor.report import OutputFormat


class SandboxChoice(str, Enum):
    auto = "auto"
    bwrap = "bwrap"
    none = "none"


def _seed_list(text: str | None) -> list[int] | None:
    if text is None:
        return None
    if not re.fullmatch(r"\s*\d+(\s*,\s*\d+)*\s*", text):
        raise typer.BadParameter("seeds are integers separated by commas, e.g. 42,1337,2024")
    return [int(part) for part in text.split(",")]


def _env_pairs(pairs: list[str] | None) -> dict[str, str]:
    env = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise typer.BadParameter(f"--env takes NAME=VALUE, not {pair!r}")
        env[name] = value
    return env


def reproduce(
    path: Annotated[Optional[Path], typer.Argument(help="Record folder to rerun (omit with --reference).")] = None,
    gpus: Annotated[int, typer.Option("--gpus", help="Processes (GPUs) per node.")] = 8,
    nodes: Annotated[int, typer.Option("--nodes", help="Nodes of a multi-node run.")] = 1,
    node_rank: Annotated[int, typer.Option("--node-rank", help="This node's rank (0 = the one that judges).")] = 0,
    rdzv: Annotated[Optional[str], typer.Option("--rdzv", help="HOST:PORT of the c10d rendezvous (multi-node).")] = None,
    seeds: Annotated[Optional[str], typer.Option("--seeds", help="Seeds, e.g. 42,1337,2024 (default: the claimed ones).")] = None,
    data: Annotated[Optional[Path], typer.Option("--data", help="Dataset folder (fineweb_*.bin) or a data root.")] = None,
    tokenizer: Annotated[Optional[Path], typer.Option("--tokenizer", help="SentencePiece .model (default: found near the data).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check the dataset, print the torchrun commands and stop.")] = False,
    reference: Annotated[bool, typer.Option("--reference", help="Rerun reference_model/, the known-good baseline.")] = False,
    wall_limit: Annotated[Optional[float], typer.Option("--wall-limit", help="Seconds per seed before the run is stopped (default 1500, x 8/processes below 8).")] = None,
    run_dir: Annotated[Optional[Path], typer.Option("--run-dir", help="Where logs, outputs and reports go.")] = None,
    env: Annotated[Optional[list[str]], typer.Option("--env", help="NAME=VALUE over the run configuration (repeatable).")] = None,
    calibrate: Annotated[bool, typer.Option("--calibrate", help="Off 8xH100: time the reference first, for 8xH100 estimates.")] = False,
    no_fingerprint: Annotated[bool, typer.Option("--no-fingerprint", help="Skip the val-in-train fingerprint scan.")] = False,
    leak_threshold: Annotated[float, typer.Option("--leak-threshold", help="Share of validation documents found in train that fails the dataset.")] = 0.01,
    sandbox: Annotated[SandboxChoice, typer.Option("--sandbox", help="auto, bwrap or none.")] = SandboxChoice.auto,
    output_format: Annotated[OutputFormat, typer.Option("-f", "--format", help="text or json.")] = OutputFormat.text,
) -> None:
    """Rerun a submission (or the reference) under torchrun, each seed in turn, and judge its claims."""
    if path is None and not reference:
        typer.echo("give a record folder, or --reference", err=True)
        raise typer.Exit(2)
    try:
        seed_list = _seed_list(seeds)
        overrides = _env_pairs(env)
    except typer.BadParameter as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    from auditor.reproduce.runner import reproduce as run_reproduce

    try:
        result = run_reproduce(
            path, gpus=gpus, nodes=nodes, node_rank=node_rank, rdzv=rdzv, seeds=seed_list, data=data,
            tokenizer=tokenizer, dry_run=dry_run, reference=reference, wall_limit_s=wall_limit, run_dir=run_dir,
            env=overrides, calibrate=calibrate, fingerprint=not no_fingerprint, leak_fraction=leak_threshold,
            sandbox=sandbox.value,
        )
    except KeyboardInterrupt:
        typer.echo("interrupted: every process of the run was stopped", err=True)
        raise typer.Exit(130) from None
    if output_format is OutputFormat.json:
        typer.echo(json.dumps(result.to_json(), indent=2))
    else:
        typer.echo(result.to_text())
    from auditor.findings import exit_code

    raise typer.Exit(exit_code([result]))
