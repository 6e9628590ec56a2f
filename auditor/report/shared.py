"""What the Markdown and SARIF renderers share: where a finding is (its file, its lines, its
path in the repository) and a rule's documentation with the rulings it cites.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from auditor.findings import Finding


def finding_file(result_path: str, finding: Finding) -> str:
    """The file a finding is in: classify names a sibling of the main script relative to the
    record folder, so it is joined to the main script's folder."""
    path = finding.path or result_path
    main_dir = PurePosixPath(Path(result_path).parent.as_posix())
    if (not PurePosixPath(path).is_absolute() and str(main_dir) != "."
            and not str(path).startswith(str(main_dir) + "/")):
        return str(Path(result_path).parent / path)
    return str(path)


def lines_of(finding: Finding) -> tuple[int, int]:
    """(first, last) line of a finding; (0, 0) when it has none."""
    first = finding.line or 0
    return first, max(finding.end_line or first, first)


def repo_relative(path: str, root: str | Path | None, prefix: str = "") -> str:
    """`path` relative to the materialized root, under `prefix` (POSIX), for links and SARIF."""
    posix = PurePosixPath(Path(path).as_posix())
    if root is not None:
        try:
            posix = PurePosixPath(Path(path).resolve().relative_to(Path(root).resolve()).as_posix())
        except ValueError:
            pass
    if posix.is_absolute():
        return str(posix)  # outside the repository: no path in it, so no permalink either
    text = str(posix)
    if prefix:
        text = str(PurePosixPath(prefix) / text)
    return text.lstrip("/")


# --- rule docs ---------------------------------------------------------------------------


def rule_doc_or_none(rule_id: str):
    """The rule's documentation (auditor.rules._docs.RuleDoc), None for an id no rule has."""
    from auditor.rules._docs import rule_doc

    try:
        return rule_doc(rule_id)
    except KeyError:
        return None


def rule_summary(rule_id: str) -> str:
    """What the rule flags, one sentence (the id itself for an unknown rule)."""
    doc = rule_doc_or_none(rule_id)
    return (doc.flags if doc is not None else "") or rule_id


def rule_full_text(rule_id: str) -> str:
    """The rule's documentation as `auditor rules ID` prints it ("" for an unknown rule)."""
    from auditor.report.text import rule_text

    doc = rule_doc_or_none(rule_id)
    return rule_text(doc) if doc is not None else ""


_ISSUE = re.compile(r"Issue #(\d+)")
_NUMBER = re.compile(r"(?<![\w.#-])(\d{2,5}(?:-\d{2,5})?)(?!\w|\.\d|\s*(?:s\b|PRs|seconds|MB))")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def cited_rulings(rule_id: str) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """(Issue numbers, PR numbers or ranges) that the rule's ruling paragraph cites."""
    doc = rule_doc_or_none(rule_id)
    ruling = _DATE.sub(" ", " ".join(doc.ruling.split()) if doc is not None else "")
    issues = tuple(dict.fromkeys(int(n) for n in _ISSUE.findall(ruling)))
    without_issues = _ISSUE.sub(" ", ruling).replace("600 s", " ").replace("600s", " ")
    prs = tuple(dict.fromkeys(n for n in _NUMBER.findall(without_issues) if n not in {"600", "16"}))
    return issues, prs
