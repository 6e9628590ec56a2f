"""Hostile submissions against `auditor smoke` under bubblewrap (issue 12).

Each test smokes one fixtures/hostile/<case>/train_gpt.py, copied with a hostile.json (its
targets: paths, ports, a marker) into a temporary record folder, and checks from OUTSIDE
that the attack did not work: files unchanged, listeners unconnected, the terminal
untouched, no process left, the auditor not hung. Attacks that stop or hang the auditor
itself (SIGSTOP, FIFO, /dev/zero, /proc/<ppid>, the terminal) run the auditor in a
subprocess with a deadline. After every test: no process carrying the test's marker, and
no watched file changed outside the temporary folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from auditor.sandbox import find_bwrap, python_binds, seccomp_filter
from auditor.smoke import Limits, SmokeOptions, smoke_path
import auditor.smoke.runner as smoke_runner

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "fixtures" / "hostile"
GIB = 1024**3
# Files outside the temporary folder that a hostile child aims at (the installed auditor's
# source; only files that no one else edits while the tests run, so the check is not flaky).
WATCHED = [REPO / "auditor" / "sandbox.py", *(REPO / "auditor" / "smoke" / name for name in ("child.py", "shims.py")),
           *sorted(FIXTURES.rglob("*"))]

pytestmark = pytest.mark.skipif(find_bwrap() is None, reason="no working bubblewrap (bwrap) on this machine")


# --- harness ----------------------------------------------------------------------------

def _digest(paths: list[Path]) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths if p.is_file()}


def _marked_pids(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            comm = Path(f"/proc/{entry}/comm").read_text().strip()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and (marker.encode() in cmdline or comm == marker[:15]):
            found.append(int(entry))
    return found


@pytest.fixture
def marker():
    """A marker hostile processes carry (argv or process name); none may be left afterwards."""
    value = f"hstl{uuid.uuid4().hex[:11]}"
    before = _digest(WATCHED)
    yield value
    deadline = time.monotonic() + 3
    while _marked_pids(value) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = _marked_pids(value)
    for pid in left:  # keep the machine clean, then fail
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    assert left == [], f"processes survived the run: {left}"
    assert _digest(WATCHED) == before, "a file outside the temporary folder changed"


def make_record(tmp_path: Path, case: str, **config) -> Path:
    record = tmp_path / "record"
    record.mkdir()
    shutil.copyfile(FIXTURES / case / "train_gpt.py", record / "train_gpt.py")
    (record / "hostile.json").write_text(json.dumps(config))
    (record / "README.md").write_text("# A hostile record (synthetic)\n")  # a record folder: all files copied
    return record


def smoke(record: Path, **overrides) -> object:
    limits = Limits(wall_seconds=30, memory_bytes=4 * GIB)
    for name, value in overrides.items():
        setattr(limits, name, value)
    return smoke_path(record, SmokeOptions(limits=limits))


def report(result) -> dict:
    message = (result.error or {}).get("message", "")
    assert "HOSTILE-REPORT " in message, result
    return json.loads(message.split("HOSTILE-REPORT ", 1)[1])


_RUNNER = """
import json, sys
from auditor.smoke import Limits, SmokeOptions, smoke_path
result = smoke_path(sys.argv[1], SmokeOptions(limits=Limits(wall_seconds=20, memory_bytes=4 * 2**30)))
with open(sys.argv[2], "w") as handle:
    json.dump(result.to_json(), handle)
"""


def smoke_in_subprocess(record: Path, tmp_path: Path, env: dict | None = None, tty: int | None = None,
                        deadline: float = 50) -> dict | None:
    """Smoke `record` in a separate auditor process; its JSON result, or None when it hung or crashed."""
    out = tmp_path / "result-of-runner.json"

    def prepare():
        import resource

        # A parent that reads /dev/zero must fail fast here, not eat the machine's memory.
        resource.setrlimit(resource.RLIMIT_AS, (3 * GIB, resource.getrlimit(resource.RLIMIT_AS)[1]))
        os.setsid()
        if tty is not None:
            import fcntl
            import termios

            fcntl.ioctl(tty, termios.TIOCSCTTY, 0)

    stdio = tty if tty is not None else subprocess.DEVNULL
    process = subprocess.Popen([sys.executable, "-c", _RUNNER, str(record), str(out)], cwd=REPO,
                               env={**os.environ, **(env or {})}, stdin=stdio, stdout=stdio,
                               stderr=stdio, preexec_fn=prepare)
    try:
        process.wait(timeout=deadline)
    except subprocess.TimeoutExpired:
        for sig in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
            except OSError:
                pass
        process.wait()
        return None
    if process.returncode != 0 or not out.exists():
        return None
    return json.loads(out.read_text())


def report_of(entry: dict) -> dict:
    message = (entry.get("error") or {}).get("message", "")
    assert "HOSTILE-REPORT " in message, entry
    return json.loads(message.split("HOSTILE-REPORT ", 1)[1])


def listing(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --- files --------------------------------------------------------------------------------

def test_writes_outside_the_copy_are_refused(tmp_path, marker):
    record = make_record(tmp_path, "write_outside", marker=marker, original_record="",
                         auditor_source=str(REPO / "auditor" / "smoke" / "shims.py"))
    config = json.loads((record / "hostile.json").read_text())
    config["original_record"] = str(record)
    (record / "hostile.json").write_text(json.dumps(config))
    before = listing(record)
    result = smoke(record)
    assert report(result) == {"escaped": []}
    assert listing(record) == before


def test_host_secrets_files_are_invisible(tmp_path, marker):
    result = smoke(make_record(tmp_path, "read_host_secrets", marker=marker))
    seen = report(result)
    assert "shadow_bytes" not in seen and seen["shadow_error"] == "No such file or directory"
    # /root shows at most the folders on the way to the interpreter that had to be bound.
    needed = {Path(host).relative_to("/root").parts[0] for host, _ in python_binds() if host.startswith("/root/")}
    assert set(seen.get("root_entries", [])) <= needed
    host_root = set(os.listdir("/root")) if os.access("/root", os.R_OK) else set()
    assert not (set(seen.get("root_entries", [])) & (host_root - needed))


def test_kernel_settings_are_read_only(tmp_path, marker):
    # As root, the sandbox's uid is the host's uid 0 underneath: /proc/sys must be read-only.
    assert report(smoke(make_record(tmp_path, "sysctl_write", marker=marker))) == {"opened": []}


def test_classify_cache_cannot_be_poisoned(tmp_path, marker, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("AUDITOR_CACHE_DIR", str(cache))
    result = smoke(make_record(tmp_path, "cache_poison", marker=marker, cache_dir=str(cache)))
    assert report(result) == {"written": 0}
    assert list(cache.iterdir()) == []


def test_the_record_copy_is_bounded_in_total(tmp_path, marker, monkeypatch):
    record = make_record(tmp_path, "huge_copy", marker=marker)
    for index in range(12):  # 12 sparse files of 8 MB: each under the per-file cap
        with open(record / f"blob{index:02d}.bin", "wb") as handle:
            handle.truncate(8 * 1024**2)
    with open(record / "huge.bin", "wb") as handle:
        handle.truncate(2 * GIB)
    monkeypatch.setattr(smoke_runner, "_MAX_COPIED_TOTAL", 40 * 1024**2, raising=False)
    result = smoke(record, tmpfs_bytes=96 * 1024**2)
    seen = report(result)
    assert seen["copy_bytes"] <= 40 * 1024**2
    assert seen["written_bytes"] <= 96 * 1024**2
    assert any("not copied" in note for note in result.notes)


# --- network ----------------------------------------------------------------------------

def test_setns_into_the_parents_network_fails(tmp_path, marker):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.settimeout(0.2)
    accepted = []
    done = threading.Event()

    def accept():
        while not done.is_set():
            try:
                accepted.append(server.accept())
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        result = smoke(make_record(tmp_path, "setns_network", marker=marker, port=server.getsockname()[1]))
    finally:
        done.set()
        thread.join()
        server.close()
    seen = report(result)
    assert seen["setns"] != True  # noqa: E712 - True means it joined
    assert seen["connected"] != True  # noqa: E712
    assert accepted == []


def test_unix_socket_on_the_host_is_unreachable(tmp_path, marker):
    path = str(tmp_path / "host.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(4)
    server.settimeout(0.2)
    accepted = []
    done = threading.Event()

    def accept():
        while not done.is_set():
            try:
                accepted.append(server.accept())
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        result = smoke(make_record(tmp_path, "unix_socket", marker=marker, socket_path=path))
    finally:
        done.set()
        thread.join()
        server.close()
    assert report(result)["connected"] != True  # noqa: E712
    assert accepted == []


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler (cc) to build evil.so")
def test_ld_preload_from_the_readme_never_loads(tmp_path, marker):
    record = make_record(tmp_path, "ld_preload", marker=marker)
    ran = tmp_path / "evil-ran"
    source = tmp_path / "evil.c"
    source.write_text('#include <stdio.h>\n__attribute__((constructor)) static void evil(void) {\n'
                      f'  FILE *f = fopen("{ran}", "w"); if (f) {{ fputs("ran", f); fclose(f); }}\n}}\n')
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(record / "evil.so"), str(source)], check=True)
    (record / "README.md").write_text("# Record\n\n```bash\nLD_PRELOAD=./evil.so NUM_LAYERS=2 torchrun "
                                      "--standalone --nproc_per_node=8 train_gpt.py\n```\n")
    result = smoke(record)
    assert not ran.exists()
    assert report(result) == {"ld_preload": ""}
    assert any("LD_PRELOAD" in note and "not passed" in note for note in result.notes)


# --- the auditor's own process and terminal ----------------------------------------------

def test_parent_environ_and_memory_are_out_of_reach(tmp_path, marker):
    token = f"ghp_fake{uuid.uuid4().hex}"
    record = make_record(tmp_path, "proc_parent", marker=marker, token=token[::-1])
    config = json.loads((record / "hostile.json").read_text())
    # The fixture needs the token to look for; it gets it reversed on disk so that copying the
    # folder does not put the plain token into the auditor's memory.
    (record / "train_gpt.py").write_text((record / "train_gpt.py").read_text().replace(
        'cfg["token"].encode()', 'cfg["token"][::-1].encode()'))
    (record / "hostile.json").write_text(json.dumps(config))
    entry = smoke_in_subprocess(record, tmp_path, env={"GITHUB_TOKEN": token})
    assert entry is not None, "the auditor hung or crashed"
    assert report_of(entry) == {"ppid_environ": False, "ppid_mem_found": False, "ppid_mem_writable": False,
                                "any_environ": False}
    assert token not in json.dumps(entry)


def test_tiocsti_cannot_type_into_the_auditors_terminal(tmp_path, marker):
    master, slave = os.openpty()
    try:
        entry = smoke_in_subprocess(make_record(tmp_path, "tiocsti", marker=marker), tmp_path, tty=slave)
        typed = b""
        os.set_blocking(master, False)
        os.set_blocking(slave, False)
        for fd in (master, slave):  # the echo on the master side, pending input on the slave side
            try:
                while True:
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        break
                    typed += chunk
            except OSError:
                pass
    finally:
        os.close(master)
        os.close(slave)
    assert entry is not None, "the auditor hung or crashed"
    assert b"HOSTILE-TYPED" not in typed
    assert report_of(entry) == {"typed": []}


def test_sigstop_of_the_parent_does_not_hang_the_auditor(tmp_path, marker):
    started = time.monotonic()
    entry = smoke_in_subprocess(make_record(tmp_path, "sigstop_parent", marker=marker), tmp_path)
    assert entry is not None, "the auditor was stopped (or crashed)"
    assert time.monotonic() - started < 45
    assert report_of(entry)["sigstop_sent"] in (True, "No such process", "Operation not permitted")


# --- processes ----------------------------------------------------------------------------

def test_daemon_does_not_outlive_the_run(tmp_path, marker):
    result = smoke(make_record(tmp_path, "daemon", marker=marker))
    assert report(result) == {"daemon": "started"}
    # The marker fixture checks that no process with the marker in its argv is left.


def test_fork_loop_is_stopped_by_the_process_limit(tmp_path, marker):
    result = smoke(make_record(tmp_path, "fork_loop", marker=marker, forks=150), max_processes=64)
    assert result.status == "fail"
    assert "process limit (64) reached" in result.error["message"]


# --- what the parent reads ------------------------------------------------------------------

def test_result_made_a_fifo_does_not_hang_the_auditor(tmp_path, marker):
    entry = smoke_in_subprocess(make_record(tmp_path, "result_fifo", marker=marker), tmp_path)
    assert entry is not None, "the auditor hung on a FIFO (or crashed)"
    assert entry["status"] == "fail"
    assert entry["error"]["message"].startswith("child exited with 0 and no result")


def test_stderr_linked_to_dev_zero_is_not_read(tmp_path, marker):
    entry = smoke_in_subprocess(make_record(tmp_path, "stderr_devzero", marker=marker), tmp_path)
    assert entry is not None, "the auditor read /dev/zero (or hung)"
    assert entry["status"] == "fail"
    assert entry["error"]["message"].startswith("child exited with 1 and no result")


# --- the sandbox itself -------------------------------------------------------------------

def test_isolation_names_the_binary_and_marks_reported_fields(tmp_path, marker):
    result = smoke(make_record(tmp_path, "read_host_secrets", marker=marker))
    tool = find_bwrap()
    assert result.isolation["sandbox"] == tool.describe()
    assert result.isolation["computed_by_auditor"]["code_bytes"] == (tmp_path / "record" / "train_gpt.py").stat().st_size
    assert "model" in result.isolation["reported_by_submission_code"]
    assert result.isolation["seccomp"] == ("filter applied" if seccomp_filter() else
                                           "not available on this architecture")


def test_no_sandbox_is_refused_unless_asked(tmp_path, marker, monkeypatch):
    from typer.testing import CliRunner

    from auditor.cli import app

    record = make_record(tmp_path, "read_host_secrets", marker=marker)
    monkeypatch.setattr(smoke_runner, "_TOOL", [None])
    refused = CliRunner().invoke(app, ["smoke", str(record)])
    assert refused.exit_code == 2
    assert "refusing to run" in refused.output and "bubblewrap" in refused.output
    allowed = CliRunner().invoke(app, ["smoke", str(record), "--no-sandbox", "--timeout", "30"])
    assert allowed.exit_code == 1  # the fixture raises: it ran
    assert "WARNING: --no-sandbox" in allowed.output


def test_seccomp_filter_blocks_what_an_unprivileged_process_may_otherwise_do(tmp_path):
    """ptrace(TRACEME), add_key and process_vm_readv on itself need no privilege: only the filter stops them."""
    from auditor.sandbox import SandboxSpec, allowlisted_environment, run_sandboxed

    if seccomp_filter() is None:
        pytest.skip("no seccomp filter for this architecture")
    import platform

    numbers = {"x86_64": (101, 248, 310), "aarch64": (117, 217, 270)}[platform.machine()]
    code = (
        "import ctypes, json, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "out = {}\n"
        f"ptrace, add_key, vm_readv = {numbers}\n"
        "for name, args in (('ptrace', (ptrace, 0, 0, 0, 0)), ('add_key', (add_key, b'user', b'k', b'v', 1, -2)),\n"
        "                   ('process_vm_readv', (vm_readv, os.getpid(), 0, 0, 0, 0, 0))):\n"
        "    ctypes.set_errno(0)\n"
        "    rc = libc.syscall(*args)\n"
        "    out[name] = os.strerror(ctypes.get_errno()) if rc == -1 else 'allowed'\n"
        "os.write(int(os.environ['AUDITOR_RESULT_FD']), json.dumps(out).encode())\n"
    )
    env, _ = allowlisted_environment({})
    spec = SandboxSpec(argv=[os.path.realpath(sys.executable), "-c", code], workdir="/tmp", env=env,
                       readonly_binds=python_binds(), timeout_s=30)
    outcome = run_sandboxed(spec, tmp_path / "out.txt", tmp_path / "err.txt")
    assert json.loads(outcome.result) == {"ptrace": "Operation not permitted", "add_key": "Operation not permitted",
                                          "process_vm_readv": "Operation not permitted"}
    assert outcome.tool_version == find_bwrap().describe()


def test_concurrent_runs_keep_their_own_descriptors(tmp_path):
    """Runs in threads (bench, batch) each close only their own fds: outputs never cross."""
    from concurrent.futures import ThreadPoolExecutor

    from auditor.sandbox import SandboxSpec, allowlisted_environment, run_sandboxed

    env, _ = allowlisted_environment({})

    def one(index: int) -> tuple[bytes | None, str]:
        code = f"import os, sys; print('out-{index}'); os.write(int(os.environ['AUDITOR_RESULT_FD']), b'result-{index}')"
        spec = SandboxSpec(argv=[os.path.realpath(sys.executable), "-S", "-c", code], workdir="/tmp", env=env,
                           readonly_binds=python_binds(), timeout_s=30)
        outcome = run_sandboxed(spec, tmp_path / f"out{index}.txt", tmp_path / f"err{index}.txt")
        return outcome.result, (tmp_path / f"out{index}.txt").read_text()

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(one, range(12)))
    assert results == [(f"result-{i}".encode(), f"out-{i}\n") for i in range(12)]


def test_the_sandbox_is_not_root_on_the_host(tmp_path):
    """A file the sandbox makes in a writable bind belongs to an unprivileged host user, even
    when the auditor runs as root (bwrap alone would map the sandbox onto host uid 0)."""
    from auditor.sandbox import HOST_UID, SandboxSpec, allowlisted_environment, run_sandboxed

    shared = tmp_path / "shared"
    shared.mkdir()
    env, _ = allowlisted_environment({})
    spec = SandboxSpec(argv=[os.path.realpath(sys.executable), "-S", "-c", "open('/w/made', 'w').write('x')"],
                       workdir="/tmp", env=env, readonly_binds=python_binds(), writable_binds=[(str(shared), "/w")],
                       timeout_s=30, result_channel=False)
    outcome = run_sandboxed(spec, tmp_path / "out.txt", tmp_path / "err.txt")
    assert outcome.returncode == 0, outcome.stderr_tail
    expected = HOST_UID if os.geteuid() == 0 else os.geteuid()
    assert (shared / "made").stat().st_uid == expected
    assert expected != 0
