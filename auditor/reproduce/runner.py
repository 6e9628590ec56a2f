"""`reproduce()`: prepare, run every seed under torchrun, judge, report.

Preparation reads the record with the same Submission reader as classify and smoke
(its run configuration is the environment the rerun gets), checks the dataset, and copies
the record to a run directory. Each seed then runs in a fresh temporary copy of it (with
several nodes: one copy under RUN_DIR that all nodes share, since the scripts read back
rank 0's artifact on every rank); the files it wrote (the compressed model, the script's
own log) are kept under RUN_DIR/seed_N/ next to the captured log, and the verdict is
judged from those. `judge_run_dir()` judges an earlier run directory again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

from auditor.reproduce import launch
from auditor.reproduce.dataset import (
    LEAK_FRACTION, DatasetError, DatasetReport, check_dataset, find_tokenizer, resolve_data_dir, script_vocab_size,
)
from auditor.reproduce.hardware import CALIBRATION_STEPS, REFERENCE_DIR, calibration_from_log, detect_hardware
from auditor.reproduce.result import (
    DRY_RUN, FAILED, NOT_JUDGED, Calibration, ReproduceResult, SeedOutcome,
)
from auditor.reproduce.verdict import Claimed, Limits, compare_mean, judge_seed, overall_verdict, read_claimed

TRAIN_S, EVAL_S, MARGIN_S = 600.0, 600.0, 300.0
DEFAULT_WALL_LIMIT_S = TRAIN_S + EVAL_S + MARGIN_S  # per seed
DEFAULT_SEEDS = (42, 1337, 2024)
KEEP_FILE_BYTES = 256 * 1024 * 1024  # larger files a run writes (raw checkpoints) are not kept
_STDERR = object()


def reproduce(
    path: str | Path | None = None,
    *,
    gpus: int = 8,
    nodes: int = 1,
    node_rank: int = 0,
    rdzv: str | None = None,
    seeds: list[int] | None = None,
    data: str | Path | None = None,
    tokenizer: str | Path | None = None,
    dry_run: bool = False,
    reference: bool = False,
    wall_limit_s: float | None = None,
    run_dir: str | Path | None = None,
    env: dict[str, str] | None = None,
    calibrate: bool = False,
    fingerprint: bool = True,
    leak_fraction: float = LEAK_FRACTION,
    sandbox: str = "auto",
    limits: Limits | None = None,
    grace_s: float = 10.0,
    progress: TextIO | None | object = _STDERR,
    python: str = sys.executable,
) -> ReproduceResult:
    """Rerun a record folder (or, with reference=True, reference_model/) and judge its claims.

    sandbox: "auto" runs under bubblewrap where auditor.sandbox can (one node, no GPU),
    else with the process-group launcher; "bwrap" insists on the sandbox; "none" never uses it.
    progress: a stream for the live progress display (stderr by default, None for none).
    """
    stream: TextIO | None = sys.stderr if progress is _STDERR else progress  # type: ignore[assignment]
    if wall_limit_s is None:
        wall_limit_s = default_wall_limit(gpus * nodes)
    limits = limits or Limits()
    overrides = dict(env or {})
    folder = REFERENCE_DIR if reference and path is None else Path(path) if path is not None else None
    result = ReproduceResult(path=str(folder) if folder else "", verdict=FAILED, reference=reference,
                             limits={**limits.to_json(), "wall_s_per_seed": wall_limit_s})
    if folder is None:
        return _error(result, "give a record folder, or --reference for reference_model/")
    topology = launch.Topology(gpus, nodes, node_rank, rdzv)
    problem = topology.validate()
    if problem:
        return _error(result, problem)
    if sandbox not in ("auto", "bwrap", "none"):
        return _error(result, f"sandbox must be auto, bwrap or none, not {sandbox!r}")
    if wall_limit_s <= 0:
        return _error(result, "the wall limit must be positive")
    result.topology = topology.to_json()

    from auditor.source import SourceError
    from auditor.submission import load_submission

    try:
        submission = load_submission(folder)
    except SourceError as exc:
        return _error(result, str(exc))
    script = submission.script
    result.script = script.name if script else None
    run_env = dict(submission.run_config.env)
    result.config_source = submission.run_config.source
    result.run_env = run_env
    try:
        claimed = read_claimed(submission)
    except Exception as exc:  # noqa: BLE001 - unreadable claims never stop a rerun
        claimed = Claimed(notes=[f"claims not read: {exc}"])
    result.notes.extend(claimed.notes)
    result.claims = claimed.to_json()
    seed_list = list(seeds) if seeds else (list(claimed.seeds) or list(DEFAULT_SEEDS))

    # The dataset and the tokenizer.
    script_text = script.read_text(encoding="utf-8", errors="replace") if script else ""
    # The README's (or log's) path where it exists here, else the script's default.
    data_settings = [v for v in (run_env.get("DATA_PATH"), _script_default(script_text, "DATA_PATH")) if v]
    data_setting = next((v for v in data_settings if _existing(v, want_dir=True)), data_settings[0] if data_settings else None)
    tokenizer_settings = [v for v in (run_env.get("TOKENIZER_PATH"), _script_default(script_text, "TOKENIZER_PATH")) if v]
    tokenizer_setting = next((v for v in tokenizer_settings if _existing(v, want_dir=False)),
                             tokenizer_settings[0] if tokenizer_settings else None)
    data_source = data or _existing(data_setting, want_dir=True)
    if data_source is None:
        return _error(result, "no dataset: pass --data DIR (the folder with fineweb_train_*.bin and fineweb_val_*.bin)"
                      + (f"; the script's {data_setting} is not here" if data_setting else ""))
    try:
        data_dir = resolve_data_dir(data_source, Path(data_setting).name if data_setting else None)
    except DatasetError as exc:
        return _error(result, str(exc))
    tokenizer_path = Path(tokenizer).expanduser().resolve() if tokenizer else (
        _existing(tokenizer_setting, want_dir=False)
        or find_tokenizer(data_dir, Path(tokenizer_setting).name if tokenizer_setting else None))
    vocab = script_vocab_size(script_text, {**run_env, **overrides})
    say = (lambda message: print(message, file=stream, flush=True)) if stream is not None else None
    dataset = check_dataset(data_dir, tokenizer_path, vocab, fingerprint=fingerprint and not dry_run,
                            leak_fraction=leak_fraction, progress=say)
    if dry_run and fingerprint:
        dataset.checks[-1].message = "not run in a dry run (it reads every training token)"
    result.dataset = dataset

    run_root = Path(run_dir).resolve() if run_dir else (
        Path.cwd() / "reproduce-runs" / f"{submission.root.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    result.run_dir = str(run_root)
    threads = overrides.get("OMP_NUM_THREADS") or run_env.get("OMP_NUM_THREADS")

    if not dry_run and not dataset.ok:
        return _error(result, "dataset: " + "; ".join(c.message for c in dataset.failures))

    hardware = detect_hardware(gpus, nodes)
    result.hardware = hardware
    mode, why = _launch_mode(sandbox, topology, hardware.device_count)
    if mode is None:
        return _error(result, why)
    result.notes.append(why)

    if dry_run:
        for seed in seed_list:
            if mode == "bwrap":
                seed_env, _dropped = launch.sandbox_environment(
                    run_env, overrides, seed, tokenizer_path.name if tokenizer_path else None, "<marker>", threads)
                line = (f"bwrap [namespaces; {data_dir} at {launch.SANDBOX_DATA}; the record copy at "
                        f"{launch.SANDBOX_WORKDIR}] -- ")
                cwd = launch.SANDBOX_WORKDIR
            else:
                seed_env = launch.seed_environment(os.environ, run_env, overrides, seed, str(data_dir),
                                                   str(tokenizer_path) if tokenizer_path else None,
                                                   str(run_root / "home"), "<marker>")
                line, cwd = "", str(run_root / "record")
            command = launch.torchrun_command(str(script.relative_to(submission.root)), topology,
                                              submission.root.name, seed, python)
            result.commands.append(f"# seed {seed}\n    " + line + launch.shell_line(command, seed_env, cwd))
        result.notes.append("each seed runs in a fresh temporary copy of RUN_DIR/record; nothing was started")
        result.verdict = DRY_RUN if dataset.ok else FAILED
        if not dataset.ok:
            result.error = "dataset: " + "; ".join(c.message for c in dataset.failures)
        return result

    # Several nodes share RUN_DIR (the same --run-dir on shared storage); each keeps its
    # logs and report under RUN_DIR/nodeR.
    shared_root = run_root if nodes > 1 else None
    node_root = run_root / f"node{node_rank}" if nodes > 1 else run_root
    node_root.mkdir(parents=True, exist_ok=True)
    record = node_root / "record"
    if not record.exists():
        shutil.copytree(submission.root, record, symlinks=True,
                        ignore=shutil.ignore_patterns("reproduce-runs", "__pycache__", "node[0-9]*", "work-seed*"))
    home = node_root / "home"
    home.mkdir(exist_ok=True)
    script_bytes = (record / script.relative_to(submission.root)).stat().st_size

    factor = None
    if not hardware.is_reference:
        if calibrate:
            result.calibration = _calibrate(node_root, topology, data_dir, tokenizer_path, overrides, mode, wall_limit_s,
                                            grace_s, stream, python)
            factor = result.calibration.factor
        else:
            result.calibration = Calibration(False, None, "not on 8xH100 and not calibrated (--calibrate runs the "
                                                          "reference's short calibration first)")

    context = _SeedContext(record, script.relative_to(submission.root), topology, data_dir, tokenizer_path, run_env,
                           overrides, home, mode, wall_limit_s, grace_s, stream, python, submission.root.name, threads)
    for seed in seed_list:
        if shared_root is not None and node_rank == 0:
            _forget_other_nodes(shared_root, nodes, seed)
        outcome, log_text, log_path, written, launch_error = _run_seed(context, node_root / f"seed_{seed}", seed,
                                                                       shared_root, node_rank)
        result.commands.append(outcome.command)
        if node_rank > 0:
            outcome.verdict = NOT_JUDGED if outcome.returncode == 0 else FAILED
            outcome.failure_kind = None if outcome.returncode == 0 else "launch-error" if launch_error else "crash"
            if launch_error:
                outcome.reasons.append(launch_error)
            outcome.reasons.append(f"node rank {node_rank}: judged on node 0")
            outcome.log_tail = "\n".join(log_text.splitlines()[-40:])
            (node_root / f"seed_{seed}" / NODE_DONE).write_text(f"{outcome.returncode}\n")
        else:
            if shared_root is not None and outcome.returncode == 0 and not _has_score(log_text, log_path):
                log_text, log_path = _score_from_other_nodes(shared_root, nodes, seed, log_text, log_path,
                                                             outcome.reasons)
            judge_seed(outcome, log_text, log_path, script_bytes, written, claimed.for_seed(seed), claimed.tolerance,
                       limits, hardware, factor, launch_error)
        result.seeds.append(outcome)
    result.mean = compare_mean(result.seeds, claimed) if node_rank == 0 else None
    result.verdict = overall_verdict(result.seeds, result.mean)
    result.run_dir = str(node_root)
    _write_reports(result, node_root)
    return result


def default_wall_limit(world_size: int) -> float:
    """600 s training + 600 s evaluation + 300 s margin, scaled up for fewer than 8 processes
    (evaluation on 1 GPU takes about 8 times as long; the script caps training itself)."""
    return DEFAULT_WALL_LIMIT_S * max(1.0, 8 / max(1, world_size))


def judge_run_dir(run_dir: str | Path, claims_path: str | Path, limits: Limits | None = None) -> ReproduceResult:
    """Judge the logs and files of an earlier run directory against a record folder's claims.

    Nothing is rerun: RUN_DIR/seed_N/train.log and RUN_DIR/seed_N/outputs/ are read again,
    with the hardware and calibration factor of RUN_DIR/report.json. Used to re-check a
    rerun against corrected (or planted) claims.
    """
    from auditor.reproduce.result import Hardware
    from auditor.source import SourceError
    from auditor.submission import load_submission

    limits = limits or Limits()
    run_root = Path(run_dir).resolve()
    result = ReproduceResult(path=str(claims_path), verdict=FAILED, run_dir=str(run_root), limits=limits.to_json())
    try:
        report = json.loads((run_root / "report.json").read_text(encoding="utf-8"))
        submission = load_submission(claims_path)
    except (OSError, ValueError) as exc:
        return _error(result, f"no readable report.json in {run_root}: {exc}")
    except SourceError as exc:
        return _error(result, str(exc))
    claimed = read_claimed(submission)
    result.claims = claimed.to_json()
    hardware_json = report.get("hardware") or {}
    hardware = Hardware(hardware_json.get("description", "unknown"), hardware_json.get("device_count", 0),
                        bool(hardware_json.get("is_8xh100")))
    result.hardware, result.topology = hardware, report.get("topology") or {}
    factor = (report.get("calibration") or {}).get("factor")
    script_name = report.get("script") or "train_gpt.py"
    script = run_root / "record" / script_name
    script_bytes = script.stat().st_size if script.is_file() else None
    for previous in report.get("seeds", []):
        seed = int(previous["seed"])
        seed_dir = run_root / f"seed_{seed}"
        log_path = seed_dir / "train.log"
        log_text = log_path.read_text(encoding="utf-8", errors="replace") if log_path.exists() else ""
        written = sorted(p for p in (seed_dir / "outputs").rglob("*") if p.is_file())
        outcome = SeedOutcome(seed=seed, verdict=FAILED, command=previous.get("command", ""), log=str(log_path),
                              returncode=previous.get("returncode"), wall_s=previous.get("wall_s"),
                              stopped_by=previous.get("stopped_by"),
                              survivors_killed=previous.get("survivors_killed", 0))
        judge_seed(outcome, log_text, log_path, script_bytes, written, claimed.for_seed(seed), claimed.tolerance,
                   limits, hardware, factor)
        result.seeds.append(outcome)
    result.mean = compare_mean(result.seeds, claimed)
    result.verdict = overall_verdict(result.seeds, result.mean)
    result.notes.append(f"judged from the logs and files of {run_root}; nothing was rerun")
    return result


def _error(result: ReproduceResult, message: str) -> ReproduceResult:
    result.verdict = FAILED
    result.error = message
    return result


def _existing(value: str | None, want_dir: bool) -> Path | None:
    """The setting's path when it exists (absolute, or relative to the current directory)."""
    if not value:
        return None
    path = Path(value).expanduser().resolve()
    return path if (path.is_dir() if want_dir else path.is_file()) else None


def _script_default(script_text: str, name: str) -> str | None:
    """The default of `os.environ.get("NAME", "...")` (or a config field of that name) in the script."""
    match = re.search(r"""["']%s["']\s*,\s*["']([^"'\n]+)["']""" % name, script_text)
    if match is None:
        match = re.search(r"""^\s*%s\s*:\s*str\s*=\s*["']([^"'\n]+)["']""" % name.lower(), script_text, re.M)
    return match.group(1) if match else None


def _launch_mode(sandbox: str, topology: launch.Topology, devices: int) -> tuple[str | None, str]:
    """("bwrap" | "process-group" | None, why)."""
    if sandbox == "none":
        return "process-group", "launcher: process group with an allowlisted environment (--sandbox none)"
    blockers = []
    if topology.nodes > 1:
        blockers.append("a multi-node rendezvous needs the host network")
    if devices > 0:
        blockers.append("auditor.sandbox does not pass GPU devices (/dev/nvidia*) into the sandbox yet")
    tool = None if blockers else launch.sandbox_available()
    if tool is None and not blockers:
        blockers.append("no working bubblewrap here")
    if not blockers:
        return "bwrap", f"launcher: {tool}, network namespace with loopback only"
    if sandbox == "bwrap":
        return None, "--sandbox bwrap: cannot sandbox this run: " + "; ".join(blockers)
    copy = "a working copy under RUN_DIR shared by the nodes" if topology.nodes > 1 else "a temporary copy"
    return "process-group", (f"launcher: process group with an allowlisted environment and {copy}, "
                             "not sandboxed: " + "; ".join(blockers))


class _SeedContext:
    def __init__(self, record, script_rel, topology, data_dir, tokenizer, run_env, overrides, home, mode,
                 wall_limit_s, grace_s, stream, python, run_name, threads):
        self.record, self.script_rel, self.topology = record, script_rel, topology
        self.data_dir, self.tokenizer, self.run_env, self.overrides = data_dir, tokenizer, run_env, overrides
        self.home, self.mode, self.wall_limit_s, self.grace_s = home, mode, wall_limit_s, grace_s
        self.stream, self.python, self.run_name, self.threads = stream, python, run_name, threads


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    state = {}
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            info = path.stat()
            state[str(path.relative_to(folder))] = (info.st_size, info.st_mtime_ns)
    return state


def _launch_seed(context: _SeedContext, work: Path, seed_dir: Path, seed: int, extra_env: dict[str, str] | None = None,
                 stop_when=None, progress: launch.Progress | None = None) -> tuple[launch.LaunchOutcome, str, list[str]]:
    """Start one torchrun in `work` (a copy of the record); (outcome, shell line, notes)."""
    marker = launch.new_marker()
    overrides = {**context.overrides, **(extra_env or {})}
    command = launch.torchrun_command(str(context.script_rel), context.topology, context.run_name, seed, context.python)
    log_path = seed_dir / "train.log"
    if context.mode == "bwrap":
        env, dropped = launch.sandbox_environment(context.run_env, overrides, seed,
                                                  context.tokenizer.name if context.tokenizer else None,
                                                  marker, context.threads)
        line = "bwrap ... -- " + launch.shell_line(command, env, launch.SANDBOX_WORKDIR)
        outcome, notes = launch.run_in_sandbox(command, env, work, context.data_dir, context.tokenizer, log_path,
                                               context.wall_limit_s, marker, progress)
        if dropped:
            notes.append("not passed into the sandbox: " + ", ".join(sorted(dropped)))
        return outcome, line, notes
    env = launch.seed_environment(os.environ, context.run_env, overrides, seed, str(context.data_dir),
                                  str(context.tokenizer) if context.tokenizer else None, str(context.home), marker)
    line = launch.shell_line(command, env, str(work))
    outcome = launch.run_logged(command, env, work, log_path, context.wall_limit_s, marker, progress,
                                context.grace_s, stop_when)
    return outcome, line, []


SHARED_WAIT_S = 300.0  # how long another node waits for node 0's copy of the record


def _shared_work_dir(shared_root: Path, node_rank: int, seed: int, record: Path) -> Path:
    """The seed's working directory on storage all nodes share (multi-node).

    The records' scripts write the artifact on rank 0 and read it back on every rank, so
    every node must run in the same folder: node 0 copies the record there and marks it
    ready; the other nodes wait for the mark.
    """
    work = shared_root / f"work-seed{seed}"
    ready = shared_root / f"work-seed{seed}.ready"
    if node_rank == 0:
        ready.unlink(missing_ok=True)
        if work.exists():
            shutil.rmtree(work)
        shutil.copytree(record, work, symlinks=True)
        ready.write_text("ready\n")
        return work
    deadline = time.monotonic() + SHARED_WAIT_S
    while not ready.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"node 0 did not prepare {work} within {SHARED_WAIT_S:.0f} s: every node needs the "
                               "same --run-dir on storage they share")
        time.sleep(1.0)
    return work


NODE_DONE = "node-finished"  # written by a node > 0 once its seed's log is complete


def _has_score(log_text: str, log_path: Path) -> bool:
    from auditor.claims.logs import parse_log_text

    return any(run.has_final_metrics for run in parse_log_text(log_text, log_path))


def _forget_other_nodes(shared_root: Path, nodes: int, seed: int) -> None:
    """Node 0, before a seed: remove the other nodes' finished marks of an earlier run."""
    for rank in range(1, nodes):
        (shared_root / f"node{rank}" / f"seed_{seed}" / NODE_DONE).unlink(missing_ok=True)


def _score_from_other_nodes(shared_root: Path, nodes: int, seed: int, log_text: str, log_path: Path,
                            reasons: list[str], wait_s: float = SHARED_WAIT_S) -> tuple[str, Path]:
    """(log text, log path) of the node whose torchrun hosted global rank 0, which prints the score.

    A c10d rendezvous numbers the nodes in its own order (torchrun ignores --node-rank
    there), so global rank 0 may run on any node. Node 0 finished cleanly without a
    score: it waits for the other nodes' logs (RUN_DIR/nodeR/seed_N/, shared storage) and
    takes the one with the score; without one, its own log stays.
    """
    deadline = time.monotonic() + wait_s
    for rank in range(1, nodes):
        seed_dir = shared_root / f"node{rank}" / f"seed_{seed}"
        while not (seed_dir / NODE_DONE).exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        other = seed_dir / "train.log"
        if not other.is_file():
            continue
        text = other.read_text(encoding="utf-8", errors="replace")
        if _has_score(text, other):
            reasons.append(f"global rank 0 ran on node {rank} (c10d orders the nodes itself): score read from {other}")
            return text, other
    return log_text, log_path


def _run_seed(context: _SeedContext, seed_dir: Path, seed: int, shared_root: Path | None = None, node_rank: int = 0
              ) -> tuple[SeedOutcome, str, Path, list[Path], str | None]:
    """(outcome with the launch facts, log text, log path, files the run wrote, launch error).

    One node: a fresh temporary copy of the record. Several nodes: a copy under
    `shared_root` that every node uses (see _shared_work_dir).
    """
    if seed_dir.exists():
        shutil.rmtree(seed_dir)
    seed_dir.mkdir(parents=True)
    temp = None
    written: list[Path] = []
    try:
        if shared_root is None:
            temp = Path(tempfile.mkdtemp(prefix=f"auditor-reproduce-seed{seed}-"))
            work = temp / "record"
            shutil.copytree(context.record, work, symlinks=True)
            os.chmod(temp, 0o755)
        else:
            try:
                work = _shared_work_dir(shared_root, node_rank, seed, context.record)
            except (OSError, TimeoutError) as exc:
                outcome = launch.LaunchOutcome(None, 0.0, "launch-error", error=str(exc))
                return (SeedOutcome(seed=seed, verdict=FAILED, log=str(seed_dir / "train.log")), "",
                        seed_dir / "train.log", [], outcome.error)
        before = _snapshot(work)
        progress = None
        if context.stream is not None:
            limit = context.overrides.get("MAX_WALLCLOCK_SECONDS") or context.run_env.get("MAX_WALLCLOCK_SECONDS")
            progress = launch.Progress(seed, context.stream, _float(limit, 600.0))
        outcome, line, notes = _launch_seed(context, work, seed_dir, seed, progress=progress)
        if node_rank == 0:
            written = _keep_outputs(work, before, seed_dir / "outputs", notes)
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    log_path = seed_dir / "train.log"
    log_text = log_path.read_text(encoding="utf-8", errors="replace") if log_path.exists() else ""
    seed_outcome = SeedOutcome(seed=seed, verdict=FAILED, command=line, log=str(log_path),
                               returncode=outcome.returncode, wall_s=outcome.seconds, stopped_by=outcome.stopped_by,
                               survivors_killed=outcome.survivors_killed, reasons=list(notes))
    return seed_outcome, log_text, log_path, written, outcome.error


def _keep_outputs(work: Path, before: dict[str, tuple[int, int]], outputs: Path, notes: list[str]) -> list[Path]:
    """Move the files the run wrote or changed into `outputs`; the kept paths."""
    kept = []
    for relative, state in sorted(_snapshot(work).items()):
        if before.get(relative) == state:
            continue
        source = work / relative
        if state[0] > KEEP_FILE_BYTES:
            notes.append(f"not kept: {relative} ({state[0]:,} bytes)")
            continue
        target = outputs / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(source), target)
        kept.append(target)
    return kept


def _float(value: str | None, default: float) -> float:
    try:
        return float(value) if value is not None else default
    except ValueError:
        return default


def _calibrate(run_root: Path, topology, data_dir: Path, tokenizer: Path | None, overrides: dict[str, str], mode: str,
               wall_limit_s: float, grace_s: float, stream, python: str) -> Calibration:
    """A few training steps of the reference model on this machine; the ms/step gives the factor."""
    from auditor.submission import load_submission

    try:
        reference = load_submission(REFERENCE_DIR)
    except Exception as exc:  # noqa: BLE001 - no reference model: the factor stays unknown
        return Calibration(False, None, f"the reference model could not be read ({exc}), so the factor is unknown")
    calibration_dir = run_root / "calibration"
    if calibration_dir.exists():
        shutil.rmtree(calibration_dir)
    shutil.copytree(REFERENCE_DIR, calibration_dir / "record", ignore=shutil.ignore_patterns("__pycache__"))
    threads = overrides.get("OMP_NUM_THREADS")
    # The reference's own configuration (the one its 8xH100 figure was measured with), cut
    # to a few logged steps; the submission's --env settings are not the reference's.
    steps = {"ITERATIONS": str(CALIBRATION_STEPS), "TRAIN_LOG_EVERY": "10", "VAL_LOSS_EVERY": "0"}
    if threads:
        steps["OMP_NUM_THREADS"] = threads
    context = _SeedContext(calibration_dir / "record", reference.script.relative_to(reference.root), topology,
                           data_dir, tokenizer, dict(reference.run_config.env), steps,
                           run_root / "home", mode, wall_limit_s, grace_s, stream, python, "calibration", threads)

    def reached_last_step(line: str) -> bool:
        return f"step:{CALIBRATION_STEPS}/" in line and "step_avg" in line

    temp = Path(tempfile.mkdtemp(prefix="auditor-reproduce-calibration-"))
    try:
        shutil.copytree(context.record, temp / "record")
        _launch_seed(context, temp / "record", calibration_dir, 1337, stop_when=reached_last_step)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    log = calibration_dir / "train.log"
    text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
    return calibration_from_log(text, str(log))


def _write_reports(result: ReproduceResult, run_root: Path) -> None:
    try:
        (run_root / "report.json").write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
        (run_root / "summary.txt").write_text(result.to_text() + "\n", encoding="utf-8")
    except OSError as exc:
        result.notes.append(f"reports not written to {run_root}: {exc.strerror}")


__all__ = ["reproduce", "judge_run_dir", "default_wall_limit", "DEFAULT_WALL_LIMIT_S", "DatasetReport"]
