"""Finding and Verdict types, and the JSON shape `classify` prints."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

Severity = Literal["violation", "dormant", "info"]
VerdictName = Literal["clean", "flag", "error"]


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: Severity
    line: int
    end_line: int
    message: str
    evidence: str = ""  # the code line(s) behind the finding

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class FileResult:
    path: str
    sha256: str
    verdict: VerdictName
    error: str | None = None
    findings: list[Finding] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "verdict": self.verdict,
            "error": self.error,
            "findings": [f.to_json() for f in self.findings],
        }

    @classmethod
    def from_json(cls, data: dict) -> "FileResult":
        return cls(
            path=data["path"],
            sha256=data["sha256"],
            verdict=data["verdict"],
            error=data.get("error"),
            findings=[Finding(**f) for f in data.get("findings", [])],
        )

    @property
    def violations(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "violation"]


def verdict_for(findings: list[Finding]) -> VerdictName:
    return "flag" if any(f.severity == "violation" for f in findings) else "clean"


def exit_code(results: list[FileResult]) -> int:
    """2 if any error, else 1 if any flag, else 0."""
    if any(r.verdict == "error" for r in results):
        return 2
    if any(r.verdict == "flag" for r in results):
        return 1
    return 0
