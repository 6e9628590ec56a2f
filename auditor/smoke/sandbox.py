"""Running the smoke child under auditor.sandbox (bubblewrap): layout, limits, the result.

Inside the sandbox the child sees:
    /sandbox/record/...        a copy of the record folder in a size-limited tmpfs (writable)
    /sandbox/prepared.py       the unpacked source, /sandbox/spec.json (read-only data)
    /sandbox/auditor/          child.py and the shims (read-only data), nothing else of ours
    /tmp                       a size-limited tmpfs (HOME and TMPDIR)
    the interpreter, its stdlib and site-packages, /usr (read-only)
and nothing of the host's home, /etc, the auditor's source, caches or the parent's processes.
The result comes back on a pipe; stdout and stderr through pipes into files the parent made.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from auditor.sandbox import (
    GIB,
    MIB,
    ResourceLimits,
    SandboxSpec,
    SandboxTool,
    allowlisted_environment,
    python_binds,
    run_sandboxed,
)

SECRET_MARKERS = ("TOKEN", "KEY", "SECRET", "PASSWORD", "CREDENTIAL")
_CHILD = Path(__file__).with_name("child.py")
_SHIMS = Path(__file__).with_name("shims.py")
SANDBOX_ROOT = "/sandbox"
SANDBOX_RECORD = "/sandbox/record"
MAX_RESULT_BYTES = 4 * MIB


@dataclass
class Limits:
    memory_bytes: int = 8 * GIB
    cpu_seconds: int = 120
    wall_seconds: float = 120.0
    max_processes: int = 256  # threads count too (torch starts a pool)
    file_bytes: int = 1 * GIB
    tmpfs_bytes: int = 768 * 1024**2  # the writable record copy and /tmp, each


@dataclass
class ChildOutcome:
    result: dict | None  # what child.py reported (the submission's code could forge it), None when nothing valid
    returncode: int | None
    seconds: float
    stopped_by: str | None = None  # "timeout", "cpu", "processes" when a limit ended it
    stderr_tail: str = ""
    survivors_killed: int = 0
    notes: list[str] = field(default_factory=list)
    sandbox: str | None = None  # "bwrap 0.8.0 (/usr/bin/bwrap, system)", None when unsandboxed


def is_secret_name(name: str) -> bool:
    upper = name.upper()
    return any(marker in upper for marker in SECRET_MARKERS) or "PROXY" in upper


def scrubbed_environment(base: dict[str, str], run_env: dict[str, str]) -> dict[str, str]:
    """The child's environment: an allowlist (nothing inherited but locale and time zone)
    plus the run configuration's plain settings (never LD_*/PYTHON* and the like)."""
    env, _dropped = allowlisted_environment(run_env, inherited=base)
    return env


def run_child(spec: dict, run_dir: Path, env: dict[str, str], limits: Limits,
              record_files: list[tuple[Path | bytes, str]], tool: Optional[SandboxTool],
              host_workdir: Optional[Path] = None) -> ChildOutcome:
    """Run child.py on `spec` under bwrap (tool) or, with tool None, unsandboxed.

    record_files: (host file or its contents, path relative to the record) to copy into
    the sandbox's record folder. Unsandboxed, the caller has copied them into host_workdir already.
    spec's paths are filled in here (they differ inside and outside the sandbox).
    """
    spec = dict(spec)
    resource_limits = ResourceLimits(memory_bytes=limits.memory_bytes, cpu_seconds=limits.cpu_seconds,
                                     file_bytes=limits.file_bytes, max_processes=limits.max_processes)
    spec["limits"] = {"memory_bytes": limits.memory_bytes, "cpu_seconds": limits.cpu_seconds,
                      "max_processes": limits.max_processes, "file_bytes": limits.file_bytes}
    prepared = Path(spec.pop("prepared_path"))
    if tool is not None:
        rel_workdir = spec.pop("workdir_rel")
        spec.update(
            workdir=os.path.normpath(f"{SANDBOX_RECORD}/{rel_workdir}"),
            script=f"{SANDBOX_RECORD}/{spec.pop('script_rel')}",
            source=f"{SANDBOX_ROOT}/prepared.py",
            shims=f"{SANDBOX_ROOT}/auditor/auditor_smoke_shims.py",
        )
        sandbox_spec = SandboxSpec(
            # The interpreter as named: a venv's bin/python finds the venv (pyvenv.cfg) from it.
            argv=[sys.executable, "-B", "-E", "-s", f"{SANDBOX_ROOT}/auditor/child.py", f"{SANDBOX_ROOT}/spec.json"],
            workdir=spec["workdir"],
            readonly_binds=python_binds(sys.executable),
            copied_files=[(source if isinstance(source, bytes) else str(source), f"{SANDBOX_RECORD}/{rel}")
                          for source, rel in record_files],
            data_files=[
                (json.dumps(spec).encode(), f"{SANDBOX_ROOT}/spec.json"),
                (prepared.read_bytes(), f"{SANDBOX_ROOT}/prepared.py"),
                (_CHILD.read_bytes(), f"{SANDBOX_ROOT}/auditor/child.py"),
                (_SHIMS.read_bytes(), f"{SANDBOX_ROOT}/auditor/auditor_smoke_shims.py"),
            ],
            tmpfs=["/tmp", SANDBOX_ROOT],
            tmpfs_size=limits.tmpfs_bytes,
            env=env,
            limits=resource_limits,
            timeout_s=limits.wall_seconds,
            max_result_bytes=MAX_RESULT_BYTES,
        )
    else:
        assert host_workdir is not None
        rel_workdir = spec.pop("workdir_rel")
        spec.update(
            workdir=os.path.normpath(str(host_workdir / rel_workdir)),
            script=str(host_workdir / spec.pop("script_rel")),
            source=str(prepared),
            shims=str(_SHIMS),
        )
        spec_path = run_dir / "spec.json"
        spec_path.write_text(json.dumps(spec))
        env = dict(env, HOME=str(run_dir), TMPDIR=str(run_dir))
        sandbox_spec = SandboxSpec(
            argv=[sys.executable, "-B", "-E", "-s", str(_CHILD), str(spec_path)],
            workdir=spec["workdir"],
            env=env,
            limits=resource_limits,
            timeout_s=limits.wall_seconds,
            max_result_bytes=MAX_RESULT_BYTES,
        )
    outcome = run_sandboxed(sandbox_spec, run_dir / "stdout.txt", run_dir / "stderr.txt", tool=tool,
                            allow_unsandboxed=tool is None)
    result = None
    notes = list(outcome.notes)
    if outcome.result is not None and outcome.stopped_by is None:
        if outcome.result_truncated:
            notes.append(f"result over {MAX_RESULT_BYTES} bytes: ignored")
        else:
            try:
                parsed = json.loads(outcome.result.decode("utf-8", "replace"))
                result = parsed if isinstance(parsed, dict) else None
            except ValueError:
                result = None
            if result is None:
                notes.append("result on the channel was not a JSON object: ignored")
    stopped_by = outcome.stopped_by
    return ChildOutcome(
        result=result,
        returncode=outcome.returncode,
        seconds=outcome.seconds,
        stopped_by=stopped_by,
        stderr_tail=outcome.stderr_tail,
        survivors_killed=outcome.killed,
        notes=notes,
        sandbox=outcome.tool_version,
    )
