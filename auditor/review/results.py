"""The one place that reads the other commands' result types, for review and SARIF.

classify, claims, smoke and reproduce each have their own result object; the renderers under
auditor/report/ (markdown, sarif) and the batch store read them only through the plain views
built here. Every reader goes through the object's `to_json()` (or an already-decoded dict,
as the batch workers and the SQLite store pass them), so a change of those shapes is absorbed
in this file alone.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

# --- classify ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FindingView:
    rule: str
    severity: str  # violation | dormant | info
    path: str  # as classify reported it (filesystem path)
    line: int
    end_line: int
    message: str
    evidence: str = ""
    # Line numbers of a packed script count lines of the decoded source, not of the file.
    decoded: bool = False
    dormancy: str = ""  # why it does not run (dormant findings)
    counted_as_run: str = ""  # why a dormant construct counts as run anyway


@dataclass(frozen=True)
class ClassifyView:
    path: str  # the main script, as classify reported it
    verdict: str  # clean | flag | error
    error: str | None
    findings: tuple[FindingView, ...]

    @property
    def violations(self) -> list[FindingView]:
        return [f for f in self.findings if f.severity == "violation"]

    @property
    def dormant(self) -> list[FindingView]:
        return [f for f in self.findings if f.severity == "dormant"]

    @property
    def info(self) -> list[FindingView]:
        return [f for f in self.findings if f.severity == "info"]

    @property
    def rules(self) -> list[str]:
        return sorted({f.rule for f in self.violations})


_OTHER_FILE = re.compile(r"in ([\w.-]+\.py): ")
_PACKED = re.compile(r"of the decoded source; the file is packed")


def _as_dict(result: Any) -> dict:
    if result is None:
        return {}
    if isinstance(result, dict):
        return result
    return result.to_json()


def _results_list(data: dict) -> list[dict]:
    """A per-command result, or the {"results": [...]} envelope of a batch."""
    if "results" in data and isinstance(data["results"], list):
        return data["results"]
    return [data]


def classify_view(result: Any) -> ClassifyView:
    """One classify result (FileResult, its JSON, or a one-result envelope)."""
    data = _results_list(_as_dict(result))[0]
    main_path = str(data.get("path", ""))
    findings = []
    for raw in data.get("findings", []) or []:
        message = str(raw.get("message", ""))
        path = raw.get("path")
        main_dir = PurePosixPath(Path(main_path).parent.as_posix())
        if not path:
            # Before findings carried their own path, a sibling file was named in the message.
            match = _OTHER_FILE.match(message)
            path = str(Path(main_path).parent / match.group(1)) if match else main_path
        elif (not PurePosixPath(path).is_absolute() and str(main_dir) != "."
              and not str(path).startswith(str(main_dir) + "/")):
            path = str(Path(main_path).parent / path)  # a sibling named relative to the folder
        line = int(raw.get("line") or raw.get("start_line") or 0)
        end_line = int(raw.get("end_line") or line)
        extras = raw.get("extras") or {}
        decoded = bool(_PACKED.search(message) or raw.get("packing") or raw.get("decoded")
                       or (isinstance(extras, dict) and extras.get("packing")))
        dormancy = raw.get("dormancy")
        dormancy_text = str(dormancy.get("text", "")) if isinstance(dormancy, dict) else str(dormancy or "")
        findings.append(FindingView(
            rule=str(raw.get("rule") or raw.get("check") or "?"),
            severity=str(raw.get("severity", "violation")),
            path=str(path),
            line=line,
            end_line=max(end_line, line),
            message=message,
            evidence=str(raw.get("evidence") or ""),
            decoded=decoded,
            dormancy=dormancy_text if dormancy_text not in message else "",
            counted_as_run=str(raw.get("counted_as_run") or "") if str(raw.get("counted_as_run") or "") not in message
            else "",
        ))
    return ClassifyView(main_path, str(data.get("verdict", "error")), data.get("error"), tuple(findings))


# --- claims -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimFindingView:
    check: str
    severity: str  # violation | warning | info
    message: str
    claimed: Any = None
    observed: Any = None


@dataclass(frozen=True)
class SeedRow:
    seed: str
    log: str
    val_bpb: str
    claimed: str
    artifact_bytes: int | None
    train_s: float | None
    eval_s: float | None


@dataclass(frozen=True)
class ClaimsView:
    track: str
    error: str | None
    claimed_bpb: str | None  # as printed by the submission
    measured_bpb: float | None
    seeds: tuple[SeedRow, ...]
    findings: tuple[ClaimFindingView, ...]

    @property
    def violations(self) -> list[ClaimFindingView]:
        return [f for f in self.findings if f.severity == "violation"]

    @property
    def warnings(self) -> list[ClaimFindingView]:
        return [f for f in self.findings if f.severity == "warning"]


def claims_view(result: Any) -> ClaimsView | None:
    if result is None:
        return None
    data = _results_list(_as_dict(result))[0]
    claimed = data.get("claimed") or {}
    measured = data.get("measured") or {}
    seeds = []
    for seed in data.get("seeds", []) or []:
        seeds.append(SeedRow(
            seed=str(seed.get("seed") if seed.get("seed") is not None else "?"),
            log=str(seed.get("log") or ""),
            val_bpb=str(seed.get("val_bpb") or ""),
            claimed=str(seed.get("claimed_val_bpb") or ""),
            artifact_bytes=seed.get("artifact_bytes"),
            train_s=seed.get("train_time_s"),
            eval_s=seed.get("eval_time_s"),
        ))
    findings = tuple(
        ClaimFindingView(str(f.get("check") or f.get("rule") or "?"), str(f.get("severity", "info")),
                         str(f.get("message", "")), f.get("claimed"), f.get("observed"))
        for f in data.get("findings", []) or []
    )
    bpb = claimed.get("mean_val_bpb") or claimed.get("val_bpb")
    return ClaimsView(
        track=str(data.get("track") or "unknown"),
        error=data.get("error"),
        claimed_bpb=str(bpb) if bpb not in (None, "") else None,
        measured_bpb=measured.get("mean_val_bpb"),
        seeds=tuple(seeds),
        findings=findings,
    )


# --- smoke --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmokeView:
    status: str  # ok | fail
    line: str  # one human-readable line


def smoke_view(result: Any) -> SmokeView | None:
    if result is None:
        return None
    line = result.line() if hasattr(result, "line") else None
    data = _results_list(_as_dict(result))[0]
    status = str(data.get("status", "fail"))
    if line is None:
        error = data.get("error") or {}
        model = data.get("model") or {}
        if status == "ok":
            line = f"import OK, class={model.get('class')}, params={model.get('params')}"
        else:
            line = f"FAIL {error.get('kind', 'exception')}: {error.get('message', 'unknown failure')}"
    # The line starts with the (temporary) path it ran on; the review names the folder itself.
    path = str(data.get("path") or "")
    if path and line.startswith(path + ": "):
        line = line[len(path) + 2:]
    return SmokeView(status, line)


# --- reproduce ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ReproduceView:
    source: str  # the report file it came from
    verdict: str
    lines: tuple[str, ...] = field(default_factory=tuple)


def _fmt(value: Any, digits: int = 5) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def reproduce_view(report: dict | None, source: str = "") -> ReproduceView | None:
    """A reproduce report (ReproduceResult.to_json()); read defensively, the shape is reproduce's."""
    if report is None:
        return None
    data = _results_list(report)[0] if isinstance(report, dict) else {}
    verdict = str(data.get("verdict") or data.get("status") or "unknown")
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
    return ReproduceView(source, verdict, tuple(lines))


# --- rules --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleDoc:
    id: str
    summary: str  # what it flags, one sentence
    text: str  # the whole doc, as `auditor rules ID` prints it
    ruling: str  # the ruling paragraph: Issue/PR numbers and why
    issues: tuple[int, ...]  # Issue numbers the ruling cites
    prs: tuple[str, ...]  # PR numbers (or ranges) the ruling cites


def _module_doc(rule_id: str) -> str:
    from auditor.rules import all_rules

    for rule in all_rules():
        if rule.id == rule_id:
            module = sys.modules.get(type(rule).__module__)
            return (getattr(module, "__doc__", None) or "").strip()
    return ""


def _doc_text(rule_id: str) -> tuple[str, str, str]:
    """(what it flags, the ruling paragraph, the text `auditor rules ID` prints).

    From auditor.rules._docs and the text renderer; the rule module's docstring when those
    are not there (or do not know the id).
    """
    try:
        from auditor.report.text import rule_text
        from auditor.rules._docs import rule_doc as house_rule_doc

        doc = house_rule_doc(rule_id)
        return doc.flags, doc.ruling, rule_text(doc)
    except (ImportError, KeyError, AttributeError):
        text = _module_doc(rule_id)
        first = text.splitlines()[0] if text else rule_id
        flags = first.split(":", 1)[1].strip() if first.startswith(rule_id + ":") else first
        start = text.find("Ruling:")
        return flags, text[start:] if start >= 0 else "", text


_ISSUE = re.compile(r"Issue #(\d+)")
_NUMBER = re.compile(r"(?<![\w.#-])(\d{2,5}(?:-\d{2,5})?)(?!\w|\.\d|\s*(?:s\b|PRs|seconds|MB))")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _rulings(ruling: str) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Issue and PR numbers cited by a rule's ruling paragraph."""
    ruling = _DATE.sub(" ", ruling)
    issues = tuple(dict.fromkeys(int(n) for n in _ISSUE.findall(ruling)))
    without_issues = _ISSUE.sub(" ", ruling).replace("600 s", " ").replace("600s", " ")
    prs = tuple(dict.fromkeys(n for n in _NUMBER.findall(without_issues) if n not in {"600", "16"}))
    return issues, prs


@lru_cache(maxsize=None)
def rule_doc(rule_id: str) -> RuleDoc:
    flags, ruling, text = _doc_text(rule_id)
    issues, prs = _rulings(ruling)
    return RuleDoc(rule_id, flags or rule_id, text, " ".join(ruling.split()), issues, prs)


def all_rule_ids() -> list[str]:
    from auditor.rules import all_rules

    return [rule.id for rule in all_rules()]


# --- paths --------------------------------------------------------------------------------


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


# --- the review's one verdict ------------------------------------------------------------


REPRODUCE_FLAGS = ("DIVERGED", "OVER-LIMIT")  # a rerun that contradicts the claim


def review_verdict(classify: ClassifyView, claims: ClaimsView | None, reproduce: ReproduceView | None = None) -> str:
    """flag: a rule or claims violation, or a rerun that diverged or ran over the limits;
    error: the code could not be analysed; else clean.

    One verdict from the same views the comment shows, so the header never contradicts them.
    """
    if classify.violations or (claims is not None and claims.violations):
        return "flag"
    if reproduce is not None and reproduce.verdict.upper() in REPRODUCE_FLAGS:
        return "flag"
    if classify.verdict == "error":
        return "error"
    return "clean"
