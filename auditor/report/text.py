"""Text output for a terminal, one renderer per command.

Everything that comes from a submission (paths, messages, code lines, log lines) passes
through `printable`, so escape sequences in a submission cannot reach the terminal.
"""

from __future__ import annotations

import re
import textwrap

from auditor.findings import ClassifyResult

# C0 and C1 control characters, DEL, and the bidirectional overrides that reorder text.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: object) -> str:
    """`text` with control characters written as escapes (`\\x1b`), tabs and newlines kept."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], str(text))


def classify_text(results: list[ClassifyResult]) -> str:
    out: list[str] = []
    for result in results:
        if result.verdict == "error":
            out.append(f"{result.path}: ERROR {result.error}")
            continue
        live = [f for f in result.findings if f.severity == "violation"]
        dormant = [f for f in result.findings if f.severity == "dormant"]
        info = [f for f in result.findings if f.severity == "info"]
        counts = f"{len(live)} violation(s), {len(dormant)} dormant"
        out.append(f"{result.path}: {result.verdict.upper()} ({counts})")
        for finding in live + info:
            tag = "" if finding.severity == "violation" else "[info] "
            out.append(f"  {finding.path or result.path}:{finding.line} {finding.rule} {tag}{finding.message}")
            if finding.evidence:
                out.append(f"      | {finding.evidence}")
        if dormant:
            out.append("  dormant (present but not run under the run configuration; not a violation):")
            for finding in dormant:
                out.append(f"  {finding.path or result.path}:{finding.line} {finding.rule} {finding.message}")
        if result.not_analysed:
            out.append("  not analysed (the verdict does not cover it):")
            out.extend(f"  {note}" for note in result.not_analysed)
    flagged = sum(r.verdict == "flag" for r in results)
    errors = sum(r.verdict == "error" for r in results)
    if len(results) > 1:
        out.append(f"{len(results)} submission(s): {flagged} flagged, {errors} error(s), "
                   f"{len(results) - flagged - errors} clean")
    return "\n".join(printable(line) for line in out)


_SEVERITY_ORDER = {"violation": 0, "warning": 1, "info": 2}


def claims_text(results, show_info: bool = False) -> str:
    """Per folder: the seeds table, the mean, then the findings (info ones with show_info)."""
    lines = [line for result in results for line in _claims_one(result, show_info)]
    return "\n".join(printable(line) for line in lines)


def _claims_one(result, show_info: bool = False) -> list[str]:
    lines = [f"{result.path}  [{result.track} track]"]
    if result.error:
        lines.append(f"  error: {result.error}")
        return lines
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
    return lines


def smoke_text(results) -> str:
    return "\n".join(printable(smoke_line(result)) for result in results)


def smoke_line(result) -> str:
    """One line per submission, e.g. 'import OK in 0.41s, dim=768, ... [config: log]'."""
    config = f"[config: {result.config_source}]" if result.config_source else ""
    if result.ok and result.model:
        m = result.model
        layers = f"{m.get('layers') if m.get('layers') is not None else '?'}"
        if m.get("unique_layers") is not None and m.get("unique_layers") != m.get("layers"):
            layers += f" ({m['unique_layers']} unique)"
        parts = [
            f"import OK in {result.import_seconds or 0:.2f}s",
            f"class={m.get('class')}",
            f"dim={m.get('dim') if m.get('dim') is not None else '?'}",
            f"layers={layers}",
            f"vocab={m.get('vocab')}",
            f"params={m['params']:,}",
            f"tied={'yes' if m.get('tied_embeddings') else 'no'}",
            f"code={result.code_bytes:,} B" if result.code_bytes is not None else "code=?",
        ]
        text = ", ".join(parts)
        if result.forward is not None:
            if result.forward.get("ok"):
                text += f", forward loss={result.forward['loss']:.3f} (finite)"
            elif "loss" in result.forward:
                text += f", forward loss={result.forward['loss']} (NOT finite)"
            else:
                text += f", forward failed ({result.forward.get('kind', 'exception')}: {result.forward.get('message')})"
    else:
        error = result.error or {"kind": "exception", "message": "unknown failure"}
        text = f"FAIL {error['kind']}: {error['message']}"
        if error.get("frame"):
            text += f" ({error['frame']})"
    extras = []
    if result.shimmed:
        shown = ", ".join(f"{name} ({kind})" for name, kind in sorted(result.shimmed.items()))
        extras.append(f"shimmed: {shown}")
    extras.extend(result.notes)
    suffix = f" ({'; '.join(extras)})" if extras else ""
    return f"{result.path}: {text} {config}".rstrip() + suffix


def rule_list_text(docs) -> str:
    """One line a rule: its id and what it flags."""
    return "\n".join(f"{doc.id:24} {doc.flags}" for doc in docs)


def rule_text(doc) -> str:
    """A rule's documentation for a terminal, like `ruff rule`."""
    wrap = lambda text: textwrap.fill(text, 88)  # noqa: E731
    parts = [f"# {doc.id}", "", "## What it flags", wrap(doc.flags)]
    if doc.ruling:
        parts += ["", "## Ruling and why", "\n\n".join(wrap(p) for p in doc.ruling.split("\n\n"))]
    if doc.notes:
        parts += ["", "\n\n".join(wrap(p) for p in doc.notes.split("\n\n"))]
    if doc.illegal_example:
        parts += ["", "## Flagged (illegal)", textwrap.indent(doc.illegal_example, "    ")]
    if doc.legal_example:
        parts += ["", "## Not flagged (legal)", textwrap.indent(doc.legal_example, "    ")]
    return "\n".join(parts)
