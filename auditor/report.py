"""Text and JSON renderers shared by the commands."""

from __future__ import annotations

import json
import re
from pathlib import PurePath

from auditor.findings import FileResult


def classify_json(results: list[FileResult]) -> str:
    return json.dumps({"results": [r.to_json() for r in results]}, indent=2)


def _finding_path(result: FileResult, message: str) -> str:
    """Findings in a helper module or sibling script say so ('in helper.py: ...'): cite that file."""
    match = _OTHER_FILE.match(message)
    if not match:
        return result.path
    return str(PurePath(result.path).parent / match.group(1))


_OTHER_FILE = re.compile(r"in ([\w.-]+\.py): ")


def classify_text(results: list[FileResult]) -> str:
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
            out.append(f"  {_finding_path(result, finding.message)}:{finding.line} {finding.rule} {tag}{finding.message}")
            if finding.evidence:
                out.append(f"      | {finding.evidence}")
        if dormant:
            out.append("  dormant (present but not run under the run configuration; not a violation):")
            for finding in dormant:
                out.append(f"  {_finding_path(result, finding.message)}:{finding.line} {finding.rule} {finding.message}")
    flagged = sum(r.verdict == "flag" for r in results)
    errors = sum(r.verdict == "error" for r in results)
    if len(results) > 1:
        out.append(f"{len(results)} submission(s): {flagged} flagged, {errors} error(s), "
                   f"{len(results) - flagged - errors} clean")
    return "\n".join(out)
