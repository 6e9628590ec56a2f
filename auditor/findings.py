"""The result model every command shares: one Finding, one way to fail, one exit code.

A Finding is what a check found: the check's id, a severity from one vocabulary, where
(path, line, end line), a message for people, the code or log line behind it, and typed
fields for what a renderer or a later step needs (why code is dormant, the claimed and
the observed figure), so nothing is ever parsed back out of a message.

Each command's result (ClassifyResult here, ClaimsResult in auditor.claims.checks,
SmokeResult in auditor.smoke.runner) has an `outcome`, and `exit_code` reads only that.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal, Protocol

# One vocabulary for every command: `violation` breaks a rule; `warning` is a problem that
# is not a ruling (claims); `dormant` is rule-breaking code that does not run under the
# run configuration; `info` is context (a legal pattern, a figure).
Severity = Literal["violation", "warning", "dormant", "info"]
SEVERITIES: tuple[str, ...] = ("violation", "warning", "dormant", "info")
VerdictName = Literal["clean", "flag", "error"]
ErrorKind = Literal["input", "internal"]


class Outcome(enum.IntEnum):
    """A result's outcome; the process exit code is the worst outcome of a run."""

    CLEAN = 0
    FLAG = 1
    BAD_INPUT = 2
    INTERNAL_ERROR = 3


@dataclass(frozen=True)
class Dormancy:
    """Why code does not run under the run configuration.

    kind: "not-called" (nothing live calls the function), "flag-off" (a test on a setting
    of the run configuration is false), "condition-false" (a test on something else is
    false), "early-return" (a return above it is taken).
    """

    kind: str
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Finding:
    check: str  # a rule id (classify) or a check name (claims, smoke)
    severity: Severity
    message: str
    path: str | None = None  # the file the finding is in, as given on the command line
    line: int | None = None
    end_line: int | None = None
    evidence: str = ""  # the code or log line(s) behind the finding
    dormancy: Dormancy | None = None
    claimed: object = None
    observed: object = None
    # Why a dormant finding counts as run anyway (the submission's own claims say so).
    counted_as_run: str | None = None
    # How the file was packed (e.g. "lzma+b85") when the lines count lines of its decoded
    # source, not of the file on disk: no line anchor into the file fits them.
    packing: str | None = None

    @property
    def rule(self) -> str:
        return self.check

    def to_json(self, style: str = "classify") -> dict:
        """The JSON of a finding: classify's shape (`rule`, lines, dormancy) or claims' (`check`,
        claimed/observed), each as README documents it plus `path`."""
        if style == "claims":
            return {"check": self.check, "severity": self.severity, "path": self.path, "message": self.message,
                    "claimed": self.claimed, "observed": self.observed}
        data = {
            "rule": self.check,
            "severity": self.severity,
            "path": self.path,
            "line": self.line,
            "end_line": self.end_line,
            "message": self.message,
            "evidence": self.evidence,
            "dormancy": {"kind": self.dormancy.kind, "text": self.dormancy.text} if self.dormancy else None,
            "counted_as_run": self.counted_as_run,
        }
        if self.packing is not None:  # an extension: only findings in a packed file carry it
            data["packing"] = self.packing
        return data

    @classmethod
    def from_json(cls, data: dict) -> "Finding":
        """The inverse of to_json; raises (TypeError, ValueError, KeyError) on a wrong shape."""
        if not isinstance(data, dict):
            raise TypeError("a finding is not an object")
        severity = data["severity"]
        if severity not in SEVERITIES:
            raise ValueError(f"unknown severity {severity!r}")
        dormancy = data.get("dormancy")
        for key in ("line", "end_line"):
            if data.get(key) is not None and type(data[key]) is not int:
                raise TypeError(f"{key} is not an integer")
        for key in ("message", "evidence"):
            if not isinstance(data.get(key, ""), str):
                raise TypeError(f"{key} is not a string")
        if not isinstance(data.get("packing") or "", str):
            raise TypeError("packing is not a string")
        return cls(
            check=str(data.get("check") or data["rule"]),
            severity=severity,
            message=data["message"],
            path=data.get("path"),
            line=data.get("line"),
            end_line=data.get("end_line"),
            evidence=data.get("evidence", ""),
            dormancy=Dormancy(str(dormancy["kind"]), str(dormancy["text"])) if dormancy else None,
            counted_as_run=data.get("counted_as_run"),
            packing=data.get("packing"),
            claimed=data.get("claimed"),
            observed=data.get("observed"),
        )


class Result(Protocol):
    @property
    def outcome(self) -> Outcome: ...


@dataclass
class ClassifyResult:
    """classify's verdict on one submission."""

    path: str
    sha256: str
    verdict: VerdictName
    error: str | None = None
    findings: list[Finding] = field(default_factory=list)
    error_kind: ErrorKind | None = None  # set with verdict "error"
    # code the rules could not look into, said plainly (native code built at run time):
    # a clean verdict does not cover it
    not_analysed: list[str] = field(default_factory=list)

    @property
    def outcome(self) -> Outcome:
        if self.verdict == "error":
            return Outcome.INTERNAL_ERROR if self.error_kind == "internal" else Outcome.BAD_INPUT
        return Outcome.FLAG if self.verdict == "flag" else Outcome.CLEAN

    @property
    def violations(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "violation"]

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "verdict": self.verdict,
            "error": self.error,
            "error_kind": self.error_kind,
            "findings": [f.to_json() for f in self.findings],
            **({"not_analysed": list(self.not_analysed)} if self.not_analysed else {}),
        }

    @classmethod
    def from_json(cls, data: dict) -> "ClassifyResult":
        """The inverse of to_json; raises (TypeError, ValueError, KeyError) on a wrong shape."""
        if not isinstance(data, dict) or not isinstance(data.get("findings", []), list):
            raise TypeError("a result is not an object with a findings list")
        verdict = data["verdict"]
        findings = [Finding.from_json(f) for f in data.get("findings", [])]
        if verdict == "error":
            if data.get("error_kind") not in ("input", "internal") or not isinstance(data.get("error"), str):
                raise ValueError("an error result without its reason")
        elif verdict != verdict_for(findings):
            raise ValueError(f"verdict {verdict!r} does not follow from the findings")
        if not isinstance(data["path"], str) or not isinstance(data["sha256"], str):
            raise TypeError("path and sha256 are strings")
        not_analysed = data.get("not_analysed", [])
        if not isinstance(not_analysed, list) or not all(isinstance(n, str) for n in not_analysed):
            raise TypeError("not_analysed is a list of strings")
        return cls(path=data["path"], sha256=data["sha256"], verdict=verdict, error=data.get("error"),
                   findings=findings, error_kind=data.get("error_kind"), not_analysed=not_analysed)


FileResult = ClassifyResult  # the name this type had before claims and smoke shared it


def verdict_for(findings: list[Finding]) -> VerdictName:
    return "flag" if any(f.severity == "violation" for f in findings) else "clean"


def exit_code(results: list[Result]) -> int:
    """0 clean, 1 a flag (a violation), 2 bad input, 3 an internal error: the worst one."""
    return int(max((r.outcome for r in results), default=Outcome.CLEAN))
