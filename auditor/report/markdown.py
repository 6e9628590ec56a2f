"""The review comment: Markdown rendered from the result objects of classify, claims, smoke
and reproduce (auditor.review.results). Nothing is analysed here; the renderer reads the
results' typed fields and, for excerpts, the lines of the files they cite.

Text that comes from a submission (code, file names, log names) is neutralised: excerpts sit
in a fence longer than any backtick run they contain, inline text cannot open HTML comments
(the review's marker), mention people or break a table.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from auditor.findings import ClassifyResult, Finding
from auditor.report.shared import (
    cited_rulings,
    finding_file,
    lines_of,
    repo_relative,
    rule_full_text,
    rule_summary,
)
from auditor.review.results import (
    REPRODUCE_FLAGS,
    as_classify_result,
    claimed_bpb,
    first_result,
    reproduce_verdict,
    review_verdict,
)

if TYPE_CHECKING:
    from auditor.claims.checks import ClaimsResult
    from auditor.smoke.runner import SmokeResult

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


def excerpt(finding: Finding, context: ReviewContext) -> tuple[str, int, int] | None:
    """At most five lines of the cited code, with the line numbers they cover."""
    line, end_line = lines_of(finding)
    if finding.packing or line <= 0:
        return (finding.evidence, line, line) if finding.evidence else None
    lines = context.read_lines(finding.path)
    if not lines or line > len(lines):
        return (finding.evidence, line, line) if finding.evidence else None
    last = min(end_line, line + MAX_EXCERPT_LINES - 1, len(lines))
    first = line
    # A short finding gets a line of context on each side, within the five lines.
    if last - first + 1 <= MAX_EXCERPT_LINES - 2:
        first, last = max(1, first - 1), min(len(lines), last + 1)
    width = len(str(last))
    text = "\n".join(
        f"{'>' if line <= n <= end_line else ' '} {n:>{width}} | {lines[n - 1].rstrip()[:200]}"
        for n in range(first, last + 1)
    )
    return text, first, last


def _location(finding: Finding, context: ReviewContext) -> str:
    path = _repo_path(context, finding.path)
    line, end_line = lines_of(finding)
    label = code_span(f"{path}:{line}" + (f"-{end_line}" if end_line > line else ""))
    if finding.packing:  # lines of the decoded source: a link to the file, no line anchor
        link = permalink(context, path, None, None)
        return f"[{label}]({link}) (line of the decoded source; the file is packed)" if link else \
            f"{label} (line of the decoded source; the file is packed)"
    link = permalink(context, path, line, end_line)
    return f"[{label}]({link})" if link else label


def _ruling_line(rule_id: str) -> str:
    issues, prs = cited_rulings(rule_id)
    parts = []
    if issues:
        parts.append("Issue " + ", ".join(f"#{n}" for n in issues))
    if prs:
        parts.append("PRs " + ", ".join(f"#{n}" if "-" not in n else f"#{n.split('-')[0]}-#{n.split('-')[1]}"
                                         for n in prs))
    return "Rulings cited: " + ("; ".join(parts) if parts else "see the rule text") + " (openai/parameter-golf)."


def _violation(index: int, finding: Finding, context: ReviewContext, with_rule_text: bool = True) -> list[str]:
    # The message already says why a dormant construct counts as run ("[counted as run: ...]").
    summary = inline(rule_summary(finding.rule))
    out = [f"#### {index}. `{finding.rule}` at {_location(finding, context)}", "", inline(finding.message), ""]
    shown = excerpt(finding, context)
    if shown is not None:
        text, start, end = shown
        line, end_line = lines_of(finding)
        out += [fenced(text), ""]
        if end < end_line:
            out += [f"(lines {start}-{end} of {line}-{end_line} shown)", ""]
    if with_rule_text:
        out += [
            f"<details><summary>Rule <code>{finding.rule}</code>: {summary}</summary>",
            "",
            fenced(rule_full_text(finding.rule), "text"),  # verbatim, as `auditor rules ID` prints it
            "",
            "</details>",
            "",
        ]
    else:
        out += [f"Rule <code>{finding.rule}</code>: {summary} (its text is shown above)", ""]
    out += [_ruling_line(finding.rule), ""]
    return out


def _short(finding: Finding, context: ReviewContext) -> str:
    # The message already says why the code does not run ("[dormant: ...]").
    return f"- `{finding.rule}` at {_location(finding, context)}: {inline(finding.message)}"


def _short_list(findings: list[Finding], context: ReviewContext) -> list[str]:
    shown = [_short(f, context) for f in findings[:MAX_SHORT_LIST]]
    if len(findings) > MAX_SHORT_LIST:
        shown.append(f"- and {len(findings) - MAX_SHORT_LIST} more")
    return shown + [""]


def _claims_table(claims: ClaimsResult) -> list[str]:
    if not claims.seeds:
        return ["No seed runs were found in the logs."]
    out = ["| seed | log | val_bpb (log) | claimed | artifact bytes | train s | eval s |",
           "|---|---|---|---|---|---|---|"]
    for seed in claims.seeds:
        row = seed.to_json()  # the figures as printed in the logs
        cells = [
            str(row["seed"] if row["seed"] is not None else "?"), row["log"] or "(no log)", row["val_bpb"] or "-",
            row["claimed_val_bpb"] or "-",
            f"{row['artifact_bytes']:,}" if isinstance(row["artifact_bytes"], int) else "-",
            f"{row['train_time_s']:.1f}" if isinstance(row["train_time_s"], (int, float)) else "-",
            f"{row['eval_time_s']:.1f}" if isinstance(row["eval_time_s"], (int, float)) else "-",
        ]
        out.append("| " + " | ".join(inline(c, table=True) for c in cells) + " |")
    return out


def _smoke_line(smoke: SmokeResult) -> str:
    """Smoke's own line, without the (temporary) path it ran on: the review names the folder."""
    line = smoke.line()
    return line[len(smoke.path) + 2:] if smoke.path and line.startswith(smoke.path + ": ") else line


def _fmt(value: Any, digits: int = 5) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _reproduce_lines(report: dict) -> list[str]:
    """A reproduce report (ReproduceResult.to_json(), read from a file): read defensively."""
    data = first_result(report)
    lines = []
    if data.get("error"):
        lines.append(f"error: {data['error']}")
    hardware = data.get("hardware") or {}
    if isinstance(hardware, dict) and hardware.get("description"):
        lines.append(f"hardware: {hardware['description']}" + ("" if hardware.get("is_8xh100") else
                                                                   " (not 8xH100: times are estimates)"))
    mean = data.get("mean") or {}
    if isinstance(mean, dict) and mean.get("rerun_mean_bpb") is not None:
        text = f"mean val_bpb of the rerun {_fmt(mean['rerun_mean_bpb'])}"
        if mean.get("claimed_mean_bpb") is not None:
            text += f", claimed {_fmt(mean['claimed_mean_bpb'])}, delta {_fmt(mean.get('delta_bpb'))}"
        if mean.get("within_tolerance") is not None:
            text += " (within tolerance)" if mean["within_tolerance"] else " (**outside tolerance**)"
        lines.append(text)
    for seed in data.get("seeds") or data.get("runs") or []:
        if not isinstance(seed, dict):
            continue
        parts = [f"seed {seed.get('seed', '?')}: {seed.get('verdict') or seed.get('status') or '?'}"]
        if seed.get("val_bpb") is not None:
            parts.append(f"val_bpb {_fmt(seed['val_bpb'])}")
        if seed.get("claimed_val_bpb") is not None:
            parts.append(f"claimed {_fmt(seed['claimed_val_bpb'])}")
        train = seed.get("train_time") or {}
        if isinstance(train, dict) and train.get("measured_s") is not None:
            parts.append(f"train {_fmt(train['measured_s'], 1)} s" + (
                f" (~{_fmt(train['estimated_8xh100_s'], 1)} s on 8xH100, estimated)"
                if train.get("estimated_8xh100_s") is not None else ""))
        if seed.get("failure_kind"):
            parts.append(f"failure: {seed['failure_kind']}")
        parts.extend(str(reason) for reason in seed.get("reasons") or [])
        lines.append(", ".join(parts))
    dataset = data.get("dataset") or {}
    if isinstance(dataset, dict) and dataset.get("ok") is False:
        failed = [c.get("message", c.get("check", "")) for c in dataset.get("checks", []) if not c.get("ok")]
        lines.append("dataset checks failed: " + "; ".join(str(f) for f in failed))
    for note in data.get("notes") or []:
        text = note.get("message") if isinstance(note, dict) else note
        if text:
            lines.append(str(text))
    return lines


def _analysis_error(classify: ClassifyResult, context: ReviewContext) -> str:
    """Why the code could not be analysed, naming the file when the message does not."""
    error = inline(classify.error or "unknown error")
    if classify.path and Path(classify.path).name not in (classify.error or ""):
        return f"{code_span(_repo_path(context, classify.path))}: {error}"
    return error


def _header(verdict: str, classify: ClassifyResult, claims: ClaimsResult | None, rerun: str | None,
            context: ReviewContext) -> str:
    bpb = claimed_bpb(claims)
    claimed = f"claimed val_bpb **{inline(bpb)}**" if bpb else "claimed val_bpb: none found in submission.json"
    if verdict == "flag":
        parts = []
        if classify.violations:
            parts.append(f"{len(classify.violations)} rule violation(s): "
                         + ", ".join(f"`{r}`" for r in sorted({f.rule for f in classify.violations})))
        if claims is not None and claims.violations:
            parts.append(f"{len(claims.violations)} claims violation(s)")
        if rerun is not None and rerun.upper() in REPRODUCE_FLAGS:
            parts.append(f"the rerun {inline(rerun)}")
        word = "**flagged** (" + "; ".join(parts) + ")"
    elif verdict == "error":
        word = f"**not analysed**: {_analysis_error(classify, context)}"
    else:
        word = "**no violation found** by the checks listed below"
    shown_rerun = f" · rerun: **{inline(rerun)}**" if rerun is not None else ""
    return f"**Verdict:** {word} · {claimed}{shown_rerun}"


def _not_checked(classify: ClassifyResult, claims: ClaimsResult | None, smoke: SmokeResult | None,
                 reproduce: dict | None, context: ReviewContext) -> list[str]:
    from auditor.rules import rule_ids

    out = []
    if classify.verdict == "error":
        out.append(f"The compliance rules were not checked: the code could not be analysed "
                   f"({_analysis_error(classify, context)}).")
    else:
        out.append("Static analysis covers only these rules: " + ", ".join(f"`{r}`" for r in rule_ids())
                   + ". Anything else (tokenizer or dataset changes, downloads at evaluation time, "
                   "what the logs do not show) was not checked.")
        out.extend(inline(note) for note in classify.not_analysed)
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
    classify: ClassifyResult | dict,
    claims: ClaimsResult | None = None,
    smoke: SmokeResult | None = None,
    reproduce: dict | None = None,
    context: ReviewContext | None = None,
    reproduce_source: str = "",
    version: str | None = None,
) -> str:
    """The review comment for one submission, from the result objects (classify's may be its
    JSON) and a reproduce report as JSON."""
    from auditor import __version__

    version = version or __version__
    context = context or ReviewContext()
    classify = as_classify_result(classify)
    verdict = review_verdict(classify, claims, reproduce)
    rerun = reproduce_verdict(reproduce)
    # Each finding with the file it is in (a sibling of the main script is named from its folder).
    findings = [replace(f, path=finding_file(classify.path, f)) for f in classify.findings]

    subject = context.subject or _repo_path(context, str(Path(classify.path).parent))
    where = [code_span(subject)]
    if context.pr is not None:
        where.append(f"PR #{context.pr}")
    if context.sha:
        where.append(f"head `{context.sha[:12]}`")
    out = [
        MARKER,
        f"## Automated compliance review: {', '.join(where)}",
        "",
        _header(verdict, classify, claims, rerun, context),
        "",
        f"> {NOT_A_RULING.format(version=version)} It reports what the checks below found; "
        "the maintainers decide.",
        "",
    ]

    violations = [f for f in findings if f.severity == "violation"]
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
    elif classify.verdict != "error":
        out += ["### Rule violations", "", "None found on the code that runs under the run configuration.", ""]

    dormant = [f for f in findings if f.severity == "dormant"]
    if dormant:
        out += [f"### Dormant constructs ({len(dormant)}, not counted)", "",
                "Present in the code but not run under the submission's run configuration; "
                "not counted as violations.", ""]
        out += _short_list(dormant, context)
    info = [f for f in findings if f.severity == "info"]
    if info:
        out += ["### Legal patterns recognised", ""]
        out += _short_list(info, context)

    out += ["### Smoke", ""]
    if smoke is None:
        out.append("Not run.")
    else:
        status = "passed" if smoke.ok else "**failed**"
        out.append(f"Smoke {status}: {inline(_smoke_line(smoke))}")
    out.append("")

    if reproduce is not None:
        lines = _reproduce_lines(reproduce)
        out += ["### Reproduction", "", f"Report {code_span(reproduce_source or 'given')}: "
                f"verdict **{inline(rerun)}**", ""]
        out += [f"- {inline(line)}" for line in lines] + ([""] if lines else [])

    out += ["### Claims", ""]
    if claims is None or claims.error:
        out += ["Not checked (see below).", ""]
    else:
        mean = claims.measured.get("mean_val_bpb")
        measured = f"{mean:.8f}" if isinstance(mean, (int, float)) else "-"
        out += [f"Track: {inline(claims.track or 'unknown')} · mean val_bpb from the logs: {measured}", ""]
        out += _claims_table(claims) + [""]
        shown = [f for f in claims.findings if f.severity in ("violation", "warning")]
        if shown:
            out += [f"- **{f.severity}** `{f.check}`: {inline(f.message)}" for f in shown] + [""]
        else:
            out += ["No claims violations or warnings.", ""]

    out += ["### Not checked", ""]
    out += [f"- {line}" for line in _not_checked(classify, claims, smoke, reproduce, context)] + [""]

    out += ["---", f"<sub>auditor {version} · reproduce with: {code_span(context.command or 'auditor review ' + subject)}"
            + (f" at commit `{context.sha}`" if context.sha else "") + "</sub>", ""]
    return scrub_paths("\n".join(out), context)
