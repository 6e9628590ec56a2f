"""Running the smoke child: scrubbed environment, limits, timeout, and no survivors.

The child (child.py) confines itself before any submission code runs: it joins a pids
cgroup when one can be made here, moves into a new network namespace and sets rlimits.
This side starts it in a new session, watches the process count and the wall clock, and
afterwards kills every process the run left: the cgroup's, the session's, and any process
carrying the run's marker variable (a process that called setsid() still has it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

GIB = 1024**3
SECRET_MARKERS = ("TOKEN", "KEY", "SECRET", "PASSWORD", "CREDENTIAL")
RUN_MARKER = "AUDITOR_SMOKE_RUN"
_CGROUP_V1_PIDS = Path("/sys/fs/cgroup/pids")
_CGROUP_V2 = Path("/sys/fs/cgroup")
_CHILD = Path(__file__).with_name("child.py")
_AUDITOR_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Limits:
    memory_bytes: int = 8 * GIB
    cpu_seconds: int = 120
    wall_seconds: float = 120.0
    max_processes: int = 256  # threads count too (torch starts a pool)
    file_bytes: int = 1 * GIB


@dataclass
class ChildOutcome:
    result: dict | None  # what child.py wrote, None when it died first
    returncode: int | None
    seconds: float
    stopped_by: str | None = None  # "timeout", "cpu", "processes" when a limit ended it
    stderr_tail: str = ""
    survivors_killed: int = 0
    notes: list[str] = field(default_factory=list)


def is_secret_name(name: str) -> bool:
    upper = name.upper()
    return any(marker in upper for marker in SECRET_MARKERS) or "PROXY" in upper


def scrubbed_environment(base: dict[str, str], run_env: dict[str, str]) -> dict[str, str]:
    """The inherited environment less secrets and proxies, plus the run configuration."""
    env = {k: v for k, v in base.items() if not is_secret_name(k)}
    for name in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "LD_PRELOAD", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(name, None)
    # The configuration the submission ran with comes from its own README and logs.
    env.update(run_env)
    env["CUDA_VISIBLE_DEVICES"] = ""
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


def _make_cgroup(max_processes: int) -> Path | None:
    """A pids cgroup for this run (v1 or v2), or None where this machine allows none."""
    name = f"auditor-smoke-{uuid.uuid4().hex[:12]}"
    for parent in (_CGROUP_V1_PIDS, _CGROUP_V2):
        if not (parent / "cgroup.procs").exists():
            continue
        group = parent / name
        try:
            group.mkdir()
        except OSError:
            continue
        try:
            (group / "pids.max").write_text(str(max_processes))
            return group
        except OSError:
            try:
                group.rmdir()
            except OSError:
                pass
    return None


def _cgroup_pids(group: Path) -> list[int]:
    try:
        return [int(p) for p in (group / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def _cgroup_hit_limit(group: Path) -> bool:
    try:
        return any(
            line.startswith("max ") and int(line.split()[1]) > 0
            for line in (group / "pids.events").read_text().splitlines()
        )
    except (OSError, ValueError, IndexError):
        return False


def _session_pids(session: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 3 and fields[3] == str(session) and fields[0] != "Z":
            pids.append(int(entry))
    return pids


def _marked_pids(marker: str) -> list[int]:
    needle = f"{RUN_MARKER}={marker}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if needle in Path(f"/proc/{entry}/environ").read_bytes():
                pids.append(int(entry))
        except OSError:
            continue
    return pids


def _kill_everything(session: int, group: Path | None, marker: str) -> int:
    """SIGKILL every process of the run until none is left; return how many were killed."""
    killed: set[int] = set()
    for _ in range(50):
        pids = set(_session_pids(session)) | set(_marked_pids(marker))
        if group is not None:
            pids |= set(_cgroup_pids(group))
        pids.discard(os.getpid())
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.05)
    return len(killed)


def run_child(spec: dict, run_dir: Path, env: dict[str, str], limits: Limits) -> ChildOutcome:
    """Run child.py on `spec` (workdir, script, source, candidates, ...) under `limits`."""
    marker = uuid.uuid4().hex
    group = _make_cgroup(limits.max_processes)
    result_path = run_dir / "result.json"
    spec = dict(spec)
    spec.update(
        result=str(result_path),
        auditor_root=str(_AUDITOR_ROOT),
        cgroup_procs=str(group / "cgroup.procs") if group else None,
        limits={
            "memory_bytes": limits.memory_bytes,
            "cpu_seconds": limits.cpu_seconds,
            "max_processes": limits.max_processes,
            "file_bytes": limits.file_bytes,
        },
    )
    spec_path = run_dir / "spec.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(env)
    env[RUN_MARKER] = marker
    env["HOME"] = str(run_dir)
    env["TMPDIR"] = str(run_dir)
    stderr_path = run_dir / "stderr.txt"
    started = time.monotonic()
    stopped_by = None
    with open(run_dir / "stdout.txt", "wb") as out, open(stderr_path, "wb") as err:
        child = subprocess.Popen(
            [sys.executable, "-B", str(_CHILD), str(spec_path)],
            cwd=spec["workdir"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        try:
            while child.poll() is None:
                elapsed = time.monotonic() - started
                if elapsed > limits.wall_seconds:
                    stopped_by = "timeout"
                    break
                if group is not None and _cgroup_hit_limit(group):
                    stopped_by = "processes"
                    break
                if group is None and len(_session_pids(child.pid)) > limits.max_processes // 4:
                    # No cgroup here: count the session's processes ourselves.
                    stopped_by = "processes"
                    break
                time.sleep(0.1)
        finally:
            survivors = _kill_everything(child.pid, group, marker)
            child.wait()
    seconds = time.monotonic() - started
    if group is not None:
        try:
            group.rmdir()
        except OSError:
            pass
    if stopped_by is None and child.returncode in (-signal.SIGXCPU, -signal.SIGKILL) and not result_path.exists():
        stopped_by = "cpu" if child.returncode == -signal.SIGXCPU else None
    result = None
    if result_path.exists() and stopped_by is None:
        try:
            result = json.loads(result_path.read_text())
        except (OSError, ValueError):
            result = None
    tail = ""
    try:
        tail = stderr_path.read_bytes()[-4000:].decode("utf-8", "replace")
    except OSError:
        pass
    notes = [] if group is not None else ["no pids cgroup here: process count watched from outside"]
    return ChildOutcome(
        result=result,
        returncode=child.returncode,
        seconds=seconds,
        stopped_by=stopped_by,
        stderr_tail=tail,
        survivors_killed=survivors,
        notes=notes,
    )
