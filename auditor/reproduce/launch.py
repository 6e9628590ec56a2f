"""Launching a seed under torchrun: the command, a clean environment, a log, a wall limit.

One node runs `python -m torch.distributed.run --standalone`; several nodes meet through
a c10d rendezvous (`--rdzv-backend c10d --rdzv-endpoint HOST:PORT --nnodes N`), so every
node of a cluster or a Slurm allocation runs the same `auditor reproduce` line. The child
gets an allowlisted environment (no credentials, no proxies), a temporary copy of the
record as its working directory, and its own session. torchrun starts each worker in a
session of its own too, so stopping a run signals torchrun's process group, every process
that carries this run's marker variable and, where this machine lets us make one (root),
every process in the run's cgroup (a daemon that left its session and cleared its
environment is still there): SIGTERM first, SIGKILL after a grace period.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TextIO

RUN_MARKER = "AUDITOR_REPRODUCE_RUN"
# Variables a training run may need from the host; everything else is dropped.
SAFE_ENV_NAMES = frozenset({
    "PATH", "LANG", "LANGUAGE", "TERM", "TZ", "TMPDIR", "USER", "LOGNAME", "SHELL",
    "LD_LIBRARY_PATH", "LIBRARY_PATH", "CPATH", "VIRTUAL_ENV", "CONDA_PREFIX", "CONDA_DEFAULT_ENV",
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "PYTORCH_CUDA_ALLOC_CONF",
    "CUDA_HOME", "CUDA_PATH", "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER",
})
SAFE_ENV_PREFIXES = ("LC_", "NCCL_", "CUDA_", "NVIDIA_", "GLOO_", "TORCH_", "TORCHINDUCTOR_", "TRITON_",
                     "UCX_", "FI_", "CUDNN_")
# Words of a variable name that mark a credential (HF_TOKEN, AWS_SECRET_ACCESS_KEY, https_proxy).
# Whole words only: TRAIN_BATCH_TOKENS and TOKENIZER_PATH are settings.
SECRET_WORDS = frozenset({"TOKEN", "KEY", "APIKEY", "SECRET", "PASSWORD", "PASSWD", "PASS", "CREDENTIAL",
                          "CREDENTIALS", "AUTH", "PROXY", "COOKIE", "SESSION", "PAT", "PRIVATE", "SIGNATURE"})
# Set by the launcher (or torchrun) for each run; a README's value never wins over them.
CONTROLLED_ENV = frozenset({"SEED", "DATA_PATH", "TOKENIZER_PATH", "RUN_ID", "HOME", RUN_MARKER,
                            "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                            "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "LD_PRELOAD", "PYTHONUNBUFFERED"})


def is_secret_name(name: str) -> bool:
    words = set(name.upper().replace("-", "_").split("_"))
    return bool(words & SECRET_WORDS)


def allowed_host_env(base: dict[str, str]) -> dict[str, str]:
    """The host variables a run keeps: the allowlist, less anything that looks like a secret."""
    return {
        name: value for name, value in base.items()
        if (name in SAFE_ENV_NAMES or name.startswith(SAFE_ENV_PREFIXES)) and not is_secret_name(name)
    }


def seed_environment(
    base: dict[str, str],
    run_env: dict[str, str],
    overrides: dict[str, str],
    seed: int,
    data_dir: str | None,
    tokenizer: str | None,
    home: str,
    marker: str,
) -> dict[str, str]:
    """Host allowlist + the submission's run configuration + --env overrides + what we control."""
    env = allowed_host_env(base)
    for source in (run_env, overrides):
        for name, value in source.items():
            if name in CONTROLLED_ENV or is_secret_name(name):
                continue
            env[name] = value
    env.update({
        "SEED": str(seed),
        "RUN_ID": f"reproduce_seed{seed}",
        "HOME": home,
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        RUN_MARKER: marker,
    })
    if data_dir:
        env["DATA_PATH"] = data_dir
    if tokenizer:
        env["TOKENIZER_PATH"] = tokenizer
    return env


@dataclass
class Topology:
    gpus: int = 8  # processes per node
    nodes: int = 1
    node_rank: int = 0
    rdzv: str | None = None  # HOST:PORT of the c10d rendezvous (multi-node)

    def validate(self) -> str | None:
        if self.gpus < 1:
            return "--gpus must be at least 1"
        if self.nodes < 1:
            return "--nodes must be at least 1"
        if not 0 <= self.node_rank < self.nodes:
            return f"--node-rank must be between 0 and {self.nodes - 1}"
        if self.nodes > 1:
            if not self.rdzv:
                return "several nodes need --rdzv HOST:PORT (the rendezvous on the first node)"
            if not re.fullmatch(r"[\w.\-]+:\d{1,5}|\[[0-9a-fA-F:]+\]:\d{1,5}", self.rdzv):
                return f"--rdzv must be HOST:PORT, not {self.rdzv!r}"
        return None

    @property
    def world_size(self) -> int:
        return self.gpus * self.nodes

    def to_json(self) -> dict:
        return {"gpus_per_node": self.gpus, "nodes": self.nodes, "node_rank": self.node_rank, "rdzv": self.rdzv,
                "world_size": self.world_size}


def torchrun_command(script: str, topology: Topology, run_name: str, seed: int,
                     python: str = sys.executable) -> list[str]:
    """The torchrun line for one seed (the same on every node of a multi-node run)."""
    command = [python, "-m", "torch.distributed.run"]
    if topology.nodes == 1:
        command += ["--standalone", "--nnodes=1"]
    else:
        rdzv_id = re.sub(r"[^\w-]", "-", f"auditor-{run_name}-seed{seed}")[:60]
        command += [
            f"--nnodes={topology.nodes}", f"--node-rank={topology.node_rank}",
            "--rdzv-backend=c10d", f"--rdzv-endpoint={topology.rdzv}", f"--rdzv-id={rdzv_id}",
        ]
    command += [f"--nproc-per-node={topology.gpus}", script]
    return command


def shell_line(command: list[str], env: dict[str, str], cwd: str) -> str:
    """The command as one copyable shell line: `cd DIR && env -i K=V ... python -m ...`."""
    assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))
    return f"cd {shlex.quote(cwd)} && env -i {assignments} {shlex.join(command)}"


# --- following the log --------------------------------------------------------------

_STEP = re.compile(r"\bstep:(\d+)/(\d+)\s+train_loss:\s*(\S+)\s+train_time:\s*(\d+(?:\.\d+)?)ms"
                   r"(?:\s+step_avg:\s*(\d+(?:\.\d+)?)ms)?")
_FINAL = re.compile(r"val_bpb\s*[:=]\s*\S+")


@dataclass
class ProgressState:
    seed: int
    step: int = 0
    total: int = 0
    train_ms: float = 0.0
    step_avg_ms: float | None = None
    loss: str | None = None
    phase: str = "starting"
    started: float = field(default_factory=time.monotonic)

    def eta_seconds(self, max_train_seconds: float | None) -> float | None:
        if not self.total or not self.step_avg_ms:
            return None
        remaining = (self.total - self.step) * self.step_avg_ms / 1000.0
        if max_train_seconds and max_train_seconds > 0:
            remaining = min(remaining, max(0.0, max_train_seconds - self.train_ms / 1000.0))
        return remaining

    def line(self, max_train_seconds: float | None) -> str:
        elapsed = time.monotonic() - self.started
        if self.step == 0:
            return f"[seed {self.seed}] {self.phase}, {elapsed:.0f}s elapsed"
        eta = self.eta_seconds(max_train_seconds)
        eta_text = f" ETA(train) {_duration(eta)}" if eta is not None else ""
        return (f"[seed {self.seed}] {self.phase} step {self.step}/{self.total} train_time {self.train_ms / 1000:.1f}s "
                f"loss {self.loss}{eta_text} ({elapsed:.0f}s elapsed)")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """A one-line live display on a terminal; plain lines, at most every `interval` s, otherwise."""

    def __init__(self, seed: int, stream: TextIO | None = None, max_train_seconds: float | None = 600.0,
                 interval: float = 10.0):
        self.state = ProgressState(seed=seed)
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.max_train_seconds = max_train_seconds
        self.interval = interval
        self._last_print: float | None = None

    def feed(self, line: str) -> None:
        match = _STEP.search(line)
        if match:
            state = self.state
            state.phase = "training"
            state.step, state.total = int(match.group(1)), int(match.group(2))
            state.loss, state.train_ms = match.group(3), float(match.group(4))
            state.step_avg_ms = float(match.group(5)) if match.group(5) else state.train_ms / max(1, state.step)
            self._show()
        elif _FINAL.search(line) and "train_time" not in line:
            self.state.phase = "evaluated"
            self._show(force=True)
        elif "Serialized model" in line:
            self.state.phase = "serializing/evaluating"
            self._show(force=True)

    def _show(self, force: bool = False) -> None:
        now = time.monotonic()
        text = self.state.line(self.max_train_seconds)
        try:
            if self.tty:
                self.stream.write("\r\x1b[2K" + text)
                self.stream.flush()
            elif force or self._last_print is None or now - self._last_print >= self.interval:
                self.stream.write(text + "\n")
                self.stream.flush()
                self._last_print = now
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        if self.tty:
            try:
                self.stream.write("\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass


# --- running ------------------------------------------------------------------------


@dataclass
class LaunchOutcome:
    returncode: int | None
    seconds: float
    stopped_by: str | None = None  # "wall-limit", "interrupt", "stop-condition", "launch-error"
    survivors_killed: int = 0
    error: str | None = None


def new_marker() -> str:
    return uuid.uuid4().hex


_CGROUP_PARENTS = (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup"))


def make_cgroup(marker: str) -> Path | None:
    """A cgroup for one run where this machine lets us make one (root, v1 pids or v2): every
    process the run starts stays in it, even one that leaves its session and clears its
    environment, so the run's end can find them all."""
    for parent in _CGROUP_PARENTS:
        if not (parent / "cgroup.procs").exists() or not os.access(parent, os.W_OK):
            continue
        group = parent / f"auditor-reproduce-{marker[:16]}"
        try:
            group.mkdir()
            return group
        except OSError:
            continue
    return None


def cgroup_pids(group: Path | None) -> set[int]:
    if group is None:
        return set()
    try:
        return {int(line) for line in (group / "cgroup.procs").read_text().split()}
    except (OSError, ValueError):
        return set()


def remove_cgroup(group: Path | None) -> None:
    if group is None:
        return
    for _ in range(50):
        try:
            group.rmdir()
            return
        except OSError:
            time.sleep(0.1)


def processes_with_marker(marker: str, group: Path | None = None) -> list[int]:
    """Pids (not ours) whose environment carries RUN_MARKER=marker, or that are in the run's cgroup."""
    needle = f"{RUN_MARKER}={marker}".encode()
    found = cgroup_pids(group)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.add(int(entry.name))
    found.discard(os.getpid())
    return sorted(pid for pid in found if _alive(pid))


def _alive(pid: int) -> bool:
    """Running (a zombie only waits for its parent to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _join_cgroup(group: Path | None):
    """preexec_fn: move the child into the run's cgroup before it execs (plain syscalls only)."""
    if group is None:
        return None
    procs = str(group / "cgroup.procs")

    def join() -> None:
        fd = os.open(procs, os.O_WRONLY)
        try:
            os.write(fd, str(os.getpid()).encode())
        finally:
            os.close(fd)
    return join


def _signal_all(pgid: int | None, pids: list[int], sig: int) -> None:
    if pgid is not None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def stop_run(proc: subprocess.Popen, marker: str, grace: float, group: Path | None = None) -> int:
    """SIGTERM torchrun's group and every process of the run; SIGKILL what is left after `grace` s."""
    pgid = proc.pid
    _signal_all(pgid, processes_with_marker(marker, group), signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if proc.poll() is not None and not processes_with_marker(marker, group):
            break
        time.sleep(0.1)
    left = processes_with_marker(marker, group)
    _signal_all(pgid, left, signal.SIGKILL)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    return len(left)


def reap_survivors(marker: str, grace: float = 2.0, group: Path | None = None) -> int:
    """Kill what a finished run left behind (a worker that outlived torchrun, a daemon it started)."""
    left = processes_with_marker(marker, group)
    if not left:
        return 0
    _signal_all(None, left, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and processes_with_marker(marker, group):
        time.sleep(0.1)
    for _ in range(50):  # SIGKILL until nothing is left (a fork between scans is caught next round)
        stubborn = processes_with_marker(marker, group)
        if not stubborn:
            break
        _signal_all(None, stubborn, signal.SIGKILL)
        time.sleep(0.05)
    return len(left)


def run_logged(
    command: list[str],
    env: dict[str, str],
    cwd: Path,
    log_path: Path,
    wall_limit_s: float,
    marker: str,
    progress: Progress | None = None,
    grace_s: float = 10.0,
    stop_when: Callable[[str], bool] | None = None,
) -> LaunchOutcome:
    """Run `command` in its own session, its output teed into `log_path` and `progress`.

    The wall limit (and `stop_when`, a predicate on each output line) stop the whole
    run: torchrun's process group and every worker carrying the marker.
    """
    started = time.monotonic()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    stop_requested = threading.Event()
    group = make_cgroup(marker)
    try:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_join_cgroup(group))
    except (OSError, subprocess.SubprocessError) as exc:
        remove_cgroup(group)
        return LaunchOutcome(None, 0.0, "launch-error", error=f"cannot start {command[0]}: {exc}")

    def pump() -> None:
        with open(log_path, "wb") as log:
            for raw in iter(proc.stdout.readline, b""):
                log.write(raw)
                log.flush()
                line = raw.decode("utf-8", "replace")
                if progress is not None:
                    progress.feed(line)
                if stop_when is not None and not stop_requested.is_set() and stop_when(line):
                    stop_requested.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    stopped_by = None
    killed = 0
    try:
        while proc.poll() is None:
            if time.monotonic() - started > wall_limit_s:
                stopped_by = "wall-limit"
            elif stop_requested.is_set():
                stopped_by = "stop-condition"
            if stopped_by:
                killed = stop_run(proc, marker, grace_s, group)
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        stop_run(proc, marker, min(grace_s, 5.0), group)
        reap_survivors(marker, 1.0, group)
        reader.join(timeout=5)
        remove_cgroup(group)
        raise
    finally:
        if progress is not None:
            progress.close()
    # Reap first: a surviving worker would hold the pipe open and block the reader.
    killed += reap_survivors(marker, group=group)
    reader.join(timeout=10)  # a process we could not find may hold the pipe: do not wait for it
    remove_cgroup(group)
    return LaunchOutcome(proc.returncode, time.monotonic() - started, stopped_by, killed)


# --- under bubblewrap (auditor/sandbox.py) ------------------------------------------

SANDBOX_WORKDIR = "/work/record"
SANDBOX_DATA = "/data/dataset"
SANDBOX_TOKENIZERS = "/data/tokenizers"


def sandbox_available() -> str | None:
    """A description of the usable bwrap, or None (no sandbox module or no working bwrap)."""
    try:
        from auditor.sandbox import find_bwrap
    except ImportError:
        return None
    tool = find_bwrap()
    return tool.describe() if tool is not None else None


def sandbox_environment(run_env: dict[str, str], overrides: dict[str, str], seed: int, tokenizer_name: str | None,
                        marker: str, threads: str | None) -> tuple[dict[str, str], list[str]]:
    """The child's environment inside the sandbox (auditor.sandbox's allowlist) and the dropped names."""
    from auditor.sandbox import allowlisted_environment

    settings = {k: v for k, v in {**run_env, **overrides}.items() if k not in CONTROLLED_ENV and not is_secret_name(k)}
    extra = {
        "SEED": str(seed),
        "RUN_ID": f"reproduce_seed{seed}",
        "DATA_PATH": SANDBOX_DATA,
        "PYTHONUNBUFFERED": "1",
        "GLOO_SOCKET_IFNAME": "lo",  # the sandbox's only network device
        RUN_MARKER: marker,
    }
    if tokenizer_name:
        extra["TOKENIZER_PATH"] = f"{SANDBOX_TOKENIZERS}/{tokenizer_name}"
    if threads:
        extra["OMP_NUM_THREADS"] = threads
    return allowlisted_environment(settings, extra)


def _within_hard_limit(name: str, wanted: int) -> int:
    """`wanted`, lowered to this process's hard rlimit (a child cannot raise it)."""
    import resource

    hard = resource.getrlimit(getattr(resource, name))[1]
    return wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)


def run_in_sandbox(
    command: list[str],
    env: dict[str, str],
    workdir: Path,
    data_dir: Path,
    tokenizer: Path | None,
    log_path: Path,
    wall_limit_s: float,
    marker: str,
    progress: Progress | None = None,
) -> tuple[LaunchOutcome, list[str]]:
    """Run torchrun under bwrap: new namespaces (network: loopback only), the record copy
    writable at /work/record, the dataset and tokenizer read-only under /data."""
    import socket

    from auditor.sandbox import GIB, InterpreterUnusable, ResourceLimits, SandboxSpec, python_binds, run_sandboxed

    try:
        binds = python_binds(command[0]) + [(str(data_dir), SANDBOX_DATA)]
    except InterpreterUnusable as exc:
        return LaunchOutcome(None, 0.0, "launch-error", error=f"sandbox failed to start: {exc}"), []
    if tokenizer is not None:
        binds.append((str(tokenizer), f"{SANDBOX_TOKENIZERS}/{tokenizer.name}"))
    # torchrun --standalone rendezvouses on localhost and this host's name: both resolve to loopback.
    hosts = f"127.0.0.1 localhost {socket.gethostname()}\n".encode()
    spec = SandboxSpec(
        argv=command,
        workdir=SANDBOX_WORKDIR,
        readonly_binds=binds,
        writable_binds=[(str(workdir), SANDBOX_WORKDIR)],
        data_files=[(hosts, "/etc/hosts"), (b"hosts: files\n", "/etc/nsswitch.conf")],
        env=env,
        limits=ResourceLimits(memory_bytes=_within_hard_limit("RLIMIT_AS", 1024 * GIB),
                              cpu_seconds=_within_hard_limit("RLIMIT_CPU", int(wall_limit_s * 64) + 60),
                              file_bytes=_within_hard_limit("RLIMIT_FSIZE", 16 * GIB),
                              open_files=_within_hard_limit("RLIMIT_NOFILE", 65536), max_processes=4096),
        network=False,
        timeout_s=wall_limit_s,
        result_channel=False,
        max_output_bytes=256 * 1024 * 1024,
    )
    log_path.parent.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()
    with open(log_path, "w", encoding="utf-8") as log:
        def on_line(stream: str, line: str) -> None:
            with lock:
                log.write(line + "\n")
                log.flush()
            if progress is not None:
                progress.feed(line)

        try:
            outcome = run_sandboxed(spec, log_path.with_name("stdout.txt"), log_path.with_name("stderr.txt"),
                                    on_line=on_line)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - a sandbox that cannot start is a launch error
            return LaunchOutcome(None, 0.0, "launch-error", error=f"sandbox failed to start: {exc}"), []
        finally:
            if progress is not None:
                progress.close()
    stopped_by = {"timeout": "wall-limit"}.get(outcome.stopped_by or "", outcome.stopped_by)
    survivors = reap_survivors(marker)
    notes = [f"sandbox: {outcome.tool_version}"] + list(outcome.notes)
    return LaunchOutcome(outcome.returncode, outcome.seconds, stopped_by, outcome.killed + survivors), notes
