"""The review comment: Markdown rendered from the result objects of classify, claims, smoke
and reproduce. Nothing is analysed here; the renderer reads the results (through the views
of auditor.review.results) and, for excerpts, the lines of the files they cite.

Text that comes from a submission (code, file names, log names) is neutralised: excerpts sit
in a fence longer than any backtick run they contain, inline text cannot open HTML comments
(the review's marker), mention people or break a table.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from auditor.review.results import (
    REPRODUCE_FLAGS,
    ClaimsView,
    ClassifyView,
    FindingView,
    ReproduceView,
    SmokeView,
    all_rule_ids,
    claims_view,
    classify_view,
    repo_relative,
    reproduce_view,
    review_verdict,
    rule_doc,
    smoke_view,
)

MARKER = "<!-- auditor-review -->"
MAX_EXCERPT_LINES = 5
MAX_VIOLATIONS_CHARS = 40_000  # of a comment GitHub caps at 65,536 characters
MAX_SHORT_LIST = 10  # dormant constructs and legal patterns: a short list, the rest counted
NOT_A_RULING = "Automated review by auditor {version}, a community tool; not a maintainer ruling."


def _read_file_lines(path: str) -> list[str] | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None


@dataclass
class ReviewContext:
    """Where the reviewed code lives, for paths, permalinks and the reproduce command."""

    subject: str = ""  # what is reviewed, e.g. the record folder's path in the repository
    github_repo: str | None = None  # OWNER/REPO
    sha: str | None = None  # the commit the files come from
    pr: int | None = None
    root: str | None = None  # local folder that corresponds to the repository root
    repo_prefix: str = ""  # the root's own path inside the repository
    command: str = ""  # the command that reproduces this review
    not_checked: list[str] = field(default_factory=list)  # extra notes from the source
    repo_paths: dict[str, str] = field(default_factory=dict)  # local file -> its path in the repository
    read_lines: Callable[[str], list[str] | None] = _read_file_lines


# --- neutralising submission text ---------------------------------------------------------


def _fence(text: str) -> str:
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def fenced(text: str, language: str = "python") -> str:
    """A code block that the text inside cannot close (nor carry the review's marker)."""
    text = text.replace("<!--", "<!\u200b--")
    fence = _fence(text)
    return f"{fence}{language}\n{text}\n{fence}"


def code_span(text: str) -> str:
    """Inline code that survives backticks in the text."""
    text = " ".join(text.split())
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    ticks = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)


def _plain(text: str) -> str:
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"@(?=\w)", "@\u200b", text)


def inline(text: str, table: bool = False) -> str:
    """One line of Markdown from text with `code spans` that a submission may have shaped."""
    text = " ".join(str(text).split())
    out, last = [], 0
    for match in _CODE_SPAN.finditer(text):
        out.append(_plain(text[last:match.start()]))
        out.append(code_span(match.group(2)))
        last = match.end()
    out.append(_plain(text[last:]))
    result = "".join(out).replace("<!--", "&lt;!--")
    return result.replace("|", "\\|") if table else result


# --- pieces -------------------------------------------------------------------------------


def permalink(context: ReviewContext, path: str, start: int | None, end: int | None) -> str | None:
    if not context.github_repo or not context.sha or path.startswith("/"):
        return None
    url = f"https://github.com/{context.github_repo}/blob/{context.sha}/{quote(path, safe='/')}"
    if start:
        url += f"#L{start}" + (f"-L{end}" if end and end > start else "")
    return url


def _repo_path(context: ReviewContext, path: str) -> str:
    if path in context.repo_paths:
        return context.repo_paths[path]
    return repo_relative(path, context.root, context.repo_prefix)


def scrub_paths(text: str, context: ReviewContext) -> str:
    """Local (temporary) paths in messages become paths in the repository."""
    for local, repo in context.repo_paths.items():
        text = text.replace(local, repo)
    if context.root:
        root = str(Path(context.root))
        text = text.replace(root + "/", context.repo_prefix.rstrip("/") + "/" if context.repo_prefix else "")
        text = text.replace(root, context.repo_prefix or ".")
    return text


def excerpt(finding: FindingView, context: ReviewContext) -> tuple[str, int, int] | None:
    """At most five lines of the cited code, with the line numbers they cover."""
    if finding.decoded or finding.line <= 0:
        return (finding.evidence, finding.line, finding.line) if finding.evidence else None
    lines = context.read_lines(finding.path)
    if not lines or finding.line > len(lines):
        return (finding.evidence, finding.line, finding.line) if finding.evidence else None
    last = min(finding.end_line, finding.line + MAX_EXCERPT_LINES - 1, len(lines))
    first = finding.line
    # A short finding gets a line of context on each side, within the five lines.
    if last - first + 1 <= MAX_EXCERPT_LINES - 2:
        first, last = max(1, first - 1), min(len(lines), last + 1)
    width = len(str(last))
    text = "\n".join(
        f"{'>' if finding.line <= n <= finding.end_line else ' '} {n:>{width}} | {lines[n - 1].rstrip()[:200]}"
        for n in range(first, last + 1)
    )
    return text, first, last


def _location(finding: FindingView, context: ReviewContext) -> str:
    path = _repo_path(context, finding.path)
    end = finding.end_line if finding.end_line > finding.line else None
    label = code_span(f"{path}:{finding.line}" + (f"-{end}" if end else ""))
    link = None if finding.decoded else permalink(context, path, finding.line, finding.end_line)
    if finding.decoded:
        link = permalink(context, path, None, None)
        return f"[{label}]({link}) (line of the decoded source; the file is packed)" if link else \
            f"{label} (line of the decoded source; the file is packed)"
    return f"[{label}]({link})" if link else label


def _ruling_line(rule_id: str) -> str:
    doc = rule_doc(rule_id)
    parts = []
    if doc.issues:
        parts.append("Issue " + ", ".join(f"#{n}" for n in doc.issues))
    if doc.prs:
        parts.append("PRs " + ", ".join(f"#{n}" if "-" not in n else f"#{n.split('-')[0]}-#{n.split('-')[1]}"
                                         for n in doc.prs))
    return "Rulings cited: " + ("; ".join(parts) if parts else "see the rule text") + " (openai/parameter-golf)."


def _violation(index: int, finding: FindingView, context: ReviewContext, with_rule_text: bool = True) -> list[str]:
    doc = rule_doc(finding.rule)
    message = inline(finding.message)
    if finding.counted_as_run:
        message += f" Counted as run: {inline(finding.counted_as_run)}."
    out = [f"#### {index}. `{finding.rule}` at {_location(finding, context)}", "", message, ""]
    shown = excerpt(finding, context)
    if shown is not None:
        text, start, end = shown
        out += [fenced(text), ""]
        if end < finding.end_line:
            out += [f"(lines {start}-{end} of {finding.line}-{finding.end_line} shown)", ""]
    if with_rule_text:
        out += [
            f"<details><summary>Rule <code>{finding.rule}</code>: {inline(doc.summary)}</summary>",
            "",
            fenced(doc.text, "text"),  # verbatim, as `auditor rules ID` prints it
            "",
            "</details>",
            "",
        ]
    else:
        out += [f"Rule <code>{finding.rule}</code>: {inline(doc.summary)} (its text is shown above)", ""]
    out += [_ruling_line(finding.rule), ""]
    return out


def _short(finding: FindingView, context: ReviewContext) -> str:
    why = f" (not run: {inline(finding.dormancy)})" if finding.dormancy else ""
    return f"- `{finding.rule}` at {_location(finding, context)}: {inline(finding.message)}{why}"


def _short_list(findings: list[FindingView], context: ReviewContext) -> list[str]:
    shown = [_short(f, context) for f in findings[:MAX_SHORT_LIST]]
    if len(findings) > MAX_SHORT_LIST:
        shown.append(f"- and {len(findings) - MAX_SHORT_LIST} more")
    return shown + [""]


def _claims_table(claims: ClaimsView) -> list[str]:
    if not claims.seeds:
        return ["No seed runs were found in the logs."]
    out = ["| seed | log | val_bpb (log) | claimed | artifact bytes | train s | eval s |",
           "|---|---|---|---|---|---|---|"]
    for row in claims.seeds:
        cells = [
            row.seed, row.log or "(no log)", row.val_bpb or "-", row.claimed or "-",
            f"{row.artifact_bytes:,}" if isinstance(row.artifact_bytes, int) else "-",
            f"{row.train_s:.1f}" if isinstance(row.train_s, (int, float)) else "-",
            f"{row.eval_s:.1f}" if isinstance(row.eval_s, (int, float)) else "-",
        ]
        out.append("| " + " | ".join(inline(c, table=True) for c in cells) + " |")
    return out


def _analysis_error(classify: ClassifyView, context: ReviewContext) -> str:
    """Why the code could not be analysed, naming the file when the message does not."""
    error = inline(classify.error or "unknown error")
    if classify.path and Path(classify.path).name not in (classify.error or ""):
        return f"{code_span(_repo_path(context, classify.path))}: {error}"
    return error


def _header(verdict: str, classify: ClassifyView, claims: ClaimsView | None, reproduce: ReproduceView | None,
            context: ReviewContext) -> str:
    bpb = claims.claimed_bpb if claims is not None and claims.claimed_bpb else None
    claimed = f"claimed val_bpb **{inline(bpb)}**" if bpb else "claimed val_bpb: none found in submission.json"
    if verdict == "flag":
        parts = []
        if classify.violations:
            parts.append(f"{len(classify.violations)} rule violation(s): "
                         + ", ".join(f"`{r}`" for r in classify.rules))
        if claims is not None and claims.violations:
            parts.append(f"{len(claims.violations)} claims violation(s)")
        if reproduce is not None and reproduce.verdict.upper() in REPRODUCE_FLAGS:
            parts.append(f"the rerun {inline(reproduce.verdict)}")
        word = "**flagged** (" + "; ".join(parts) + ")"
    elif verdict == "error":
        word = f"**not analysed**: {_analysis_error(classify, context)}"
    else:
        word = "**no violation found** by the checks listed below"
    rerun = f" · rerun: **{inline(reproduce.verdict)}**" if reproduce is not None else ""
    return f"**Verdict:** {word} · {claimed}{rerun}"


def _not_checked(classify: ClassifyView, claims: ClaimsView | None, smoke: SmokeView | None,
                 reproduce: ReproduceView | None, context: ReviewContext) -> list[str]:
    out = []
    if classify.verdict == "error":
        out.append(f"The compliance rules were not checked: the code could not be analysed "
                   f"({_analysis_error(classify, context)}).")
    else:
        out.append("Static analysis covers only these rules: " + ", ".join(f"`{r}`" for r in all_rule_ids())
                   + ". Anything else (tokenizer or dataset changes, downloads at evaluation time, "
                   "what the logs do not show) was not checked.")
    if claims is None:
        out.append("Claims (submission.json, README table, logs) were not checked.")
    elif claims.error:
        out.append(f"Claims were not checked: {inline(claims.error)}.")
    if smoke is None:
        out.append("The code was not imported or run (smoke was not requested; `--smoke` runs it in a sandbox).")
    if reproduce is None:
        out.append("Training was not repeated: the score comes from the submission's own logs, not reproduced.")
    out.extend(inline(note) for note in context.not_checked)
    return out


# --- the comment ---------------------------------------------------------------------------


def review_markdown(
    classify: Any,
    claims: Any = None,
    smoke: Any = None,
    reproduce: dict | None = None,
    context: ReviewContext | None = None,
    reproduce_source: str = "",
    version: str | None = None,
) -> str:
    """The review comment for one submission, from the result objects (or their JSON)."""
    from auditor import __version__

    version = version or __version__
    context = context or ReviewContext()
    classify_v = classify_view(classify)
    claims_v = claims_view(claims)
    smoke_v = smoke_view(smoke)
    reproduce_v = reproduce_view(reproduce, reproduce_source)
    verdict = review_verdict(classify_v, claims_v, reproduce_v)

    subject = context.subject or _repo_path(context, str(Path(classify_v.path).parent))
    where = [code_span(subject)]
    if context.pr is not None:
        where.append(f"PR #{context.pr}")
    if context.sha:
        where.append(f"head `{context.sha[:12]}`")
    out = [
        MARKER,
        f"## Automated compliance review: {', '.join(where)}",
        "",
        _header(verdict, classify_v, claims_v, reproduce_v, context),
        "",
        f"> {NOT_A_RULING.format(version=version)} It reports what the checks below found; "
        "the maintainers decide.",
        "",
    ]

    violations = classify_v.violations
    if violations:
        out += [f"### Rule violations ({len(violations)})", ""]
        explained: set[str] = set()
        size = 0
        for index, finding in enumerate(violations, 1):
            block = _violation(index, finding, context, with_rule_text=finding.rule not in explained)
            size += sum(len(line) + 1 for line in block)
            if size > MAX_VIOLATIONS_CHARS and index > 1:
                # GitHub refuses comments over 65,536 characters: the rest are counted, not shown.
                out += [f"... and {len(violations) - index + 1} more violation(s), not shown here to keep the "
                        "comment under GitHub's size limit; the command below lists them all.", ""]
                break
            explained.add(finding.rule)
            out += block
    elif classify_v.verdict != "error":
        out += ["### Rule violations", "", "None found on the code that runs under the run configuration.", ""]

    if classify_v.dormant:
        out += [f"### Dormant constructs ({len(classify_v.dormant)}, not counted)", "",
                "Present in the code but not run under the submission's run configuration; "
                "not counted as violations.", ""]
        out += _short_list(classify_v.dormant, context)
    if classify_v.info:
        out += ["### Legal patterns recognised", ""]
        out += _short_list(classify_v.info, context)

    out += ["### Smoke", ""]
    if smoke_v is None:
        out.append("Not run.")
    else:
        status = "passed" if smoke_v.status == "ok" else "**failed**"
        out.append(f"Smoke {status}: {inline(smoke_v.line)}")
    out.append("")

    if reproduce_v is not None:
        out += ["### Reproduction", "", f"Report {code_span(reproduce_v.source or 'given')}: "
                f"verdict **{inline(reproduce_v.verdict)}**", ""]
        out += [f"- {inline(line)}" for line in reproduce_v.lines] + ([""] if reproduce_v.lines else [])

    out += ["### Claims", ""]
    if claims_v is None or claims_v.error:
        out += ["Not checked (see below).", ""]
    else:
        measured = f"{claims_v.measured_bpb:.8f}" if isinstance(claims_v.measured_bpb, (int, float)) else "-"
        out += [f"Track: {inline(claims_v.track)} · mean val_bpb from the logs: {measured}", ""]
        out += _claims_table(claims_v) + [""]
        shown = [f for f in claims_v.findings if f.severity in ("violation", "warning")]
        if shown:
            out += [f"- **{f.severity}** `{f.check}`: {inline(f.message)}" for f in shown] + [""]
        else:
            out += ["No claims violations or warnings.", ""]

    out += ["### Not checked", ""]
    out += [f"- {line}" for line in _not_checked(classify_v, claims_v, smoke_v, reproduce_v, context)] + [""]

    out += ["---", f"<sub>auditor {version} · reproduce with: {code_span(context.command or 'auditor review ' + subject)}"
            + (f" at commit `{context.sha}`" if context.sha else "") + "</sub>", ""]
    return scrub_paths("\n".join(out), context)
