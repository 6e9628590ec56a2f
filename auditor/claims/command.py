"""`auditor claims`: what a submission claims, checked against its own logs and files."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from auditor.claims.checks import VIOLATION, ClaimsResult, check_claims

_SEVERITY_ORDER = {"violation": 0, "warning": 1, "info": 2}


def claims(
    paths: list[Path] = typer.Argument(..., help="Record folders."),
    output_format: str = typer.Option("text", "--format", help="text or json."),
    sota: float = typer.Option(None, "--sota", help="Current SOTA val_bpb, for the significance test."),
    sota_dir: Path = typer.Option(None, "--sota-dir", help="The SOTA record folder, for a Welch test on its logs."),
    track: str = typer.Option("auto", "--track", help="auto (from the path or submission.json), record or non-record."),
    show_info: bool = typer.Option(False, "--info", help="Also print info findings in the text output."),
) -> None:
    """Check a record folder's claims (submission.json, README table) against its logs and files."""
    if output_format not in ("text", "json"):
        typer.echo(f"unknown --format {output_format!r}: use text or json", err=True)
        raise typer.Exit(2)
    if track not in ("auto", "record", "non-record"):
        typer.echo(f"unknown --track {track!r}: use auto, record or non-record", err=True)
        raise typer.Exit(2)
    results = [check_claims(path, sota_bpb=sota, sota_dir=sota_dir, track=track) for path in paths]
    if output_format == "json":
        typer.echo(json.dumps({"results": [r.to_json() for r in results]}, indent=2, default=str))
    else:
        for result in results:
            typer.echo(render_text(result, show_info))
    raise typer.Exit(exit_code(results))


def exit_code(results: list[ClaimsResult]) -> int:
    if any(r.error for r in results):
        return 2
    if any(f.severity == VIOLATION for r in results for f in r.findings):
        return 1
    return 0


def render_text(result: ClaimsResult, show_info: bool = False) -> str:
    lines = [f"{result.path}  [{result.track} track]"]
    if result.error:
        lines.append(f"  error: {result.error}")
        return "\n".join(lines)
    header = ("seed", "log", "val_bpb", "claimed", "val_loss", "artifact", "train_s", "eval_s", "ws")
    rows = []
    for seed in result.seeds:
        data = seed.to_json()
        rows.append((
            str(seed.seed if seed.seed is not None else "?"),
            data["log"] or "(no log)",
            data["val_bpb"] or "-",
            data["claimed_val_bpb"] or "-",
            data["val_loss"] or "-",
            f"{data['artifact_bytes']:,}" if data["artifact_bytes"] is not None else "-",
            f"{data['train_time_s']:.1f}" if data["train_time_s"] is not None else "-",
            f"{data['eval_time_s']:.1f}" if data["eval_time_s"] is not None else "-",
            str(data["world_size"]) if data["world_size"] is not None else "-",
        ))
    if rows:
        widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
        for row in [header] + rows:
            lines.append("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    measured = result.measured
    if measured.get("mean_val_bpb") is not None:
        claimed = result.claimed.get("mean_val_bpb") or result.claimed.get("val_bpb")
        lines.append(f"  mean val_bpb {measured['mean_val_bpb']:.8f} (claimed {claimed or '-'})")
    findings = sorted(result.findings, key=lambda f: _SEVERITY_ORDER.get(f.severity, 3))
    shown = [f for f in findings if show_info or f.severity != "info"]
    for finding in shown:
        lines.append(f"  {finding.severity.upper():9} {finding.check}: {finding.message}")
    hidden = len(findings) - len(shown)
    counts = {s: sum(1 for f in findings if f.severity == s) for s in ("violation", "warning", "info")}
    lines.append(
        f"  {counts['violation']} violation(s), {counts['warning']} warning(s), {counts['info']} info"
        + (f" (--info to show {hidden})" if hidden else "")
    )
    return "\n".join(lines)
