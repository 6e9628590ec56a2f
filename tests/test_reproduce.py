"""`auditor reproduce` end to end on CPU: torchrun with gloo and 2 processes, real shards.

Two records run on the tiny synthetic dataset: the tiny record (fixtures/reproduce/tiny_record,
a ~10k-parameter model with two seeds of claims and logs) and the reference model
(reference_model/train_gpt.py, PR #341's architecture) in its tiny configuration, whose
claims are fixtures/reproduce/reference_tiny. The reference gives the four verdicts:
REPRODUCED against its own claims, DIVERGED when the same run is judged against planted
wrong claims, OVER-LIMIT under a tiny wall limit, FAILED with a planted crash. Every test
that starts processes gives them a unique marker variable (a plain setting name, which the
sandbox passes too) and checks afterwards that no process carrying it is left.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from auditor.findings import exit_code
from auditor.reproduce import judge_run_dir, reproduce
from auditor.reproduce import launch
from auditor.reproduce.dataset import (
    DatasetError, check_dataset, find_val_in_train, protobuf_piece_count, script_vocab_size, shard_token_count,
    tokenizer_vocab_size, write_shard,
)
from auditor.reproduce.result import DIVERGED, DRY_RUN, FAILED, OVER_LIMIT, REPRODUCED
from auditor.reproduce.synthetic import write_tiny_dataset

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "fixtures" / "reproduce" / "tiny_record"
REFERENCE_SCRIPT = ROOT / "reference_model" / "train_gpt.py"
REFERENCE_TINY_CLAIMS = ROOT / "fixtures" / "reproduce" / "reference_tiny"
THREADS = {"OMP_NUM_THREADS": "1"}


def survivors(marker: str) -> list[int]:
    """Processes whose environment or command line carries `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            blob = (entry / "environ").read_bytes() + (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in blob and int(entry.name) != os.getpid():
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny-data")
    write_tiny_dataset(root)
    return root


@pytest.fixture(scope="module")
def reproduced(data_root, tmp_path_factory):
    marker = f"REPRO_TEST_{uuid.uuid4().hex}"
    run_dir = tmp_path_factory.mktemp("run") / "tiny"
    result = reproduce(TINY, gpus=2, seeds=[42], data=data_root, run_dir=run_dir, sandbox="none",
                       env={**THREADS, "REPRO_TEST_MARKER": marker}, progress=None)
    return result, marker


def reference_record(folder: Path) -> Path:
    """The reference script beside its tiny configuration's README command and claims."""
    shutil.copytree(REFERENCE_TINY_CLAIMS, folder)
    shutil.copy(REFERENCE_SCRIPT, folder / "train_gpt.py")
    return folder


@pytest.fixture(scope="module")
def reference_reproduced(data_root, tmp_path_factory):
    marker = f"REPRO_TEST_{uuid.uuid4().hex}"
    record = reference_record(tmp_path_factory.mktemp("reference") / "reference_tiny")
    run_dir = tmp_path_factory.mktemp("run") / "reference"
    result = reproduce(record, gpus=2, data=data_root, run_dir=run_dir, sandbox="none", fingerprint=False,
                       env={**THREADS, "REPRO_TEST_MARKER": marker}, progress=None)
    return result, marker


# --- end to end ---------------------------------------------------------------------


def test_tiny_record_reproduces_its_own_claims(reproduced):
    result, marker = reproduced
    assert result.verdict == REPRODUCED, result.to_text()
    assert [s.seed for s in result.seeds] == [42]
    for seed in result.seeds:
        assert seed.verdict == REPRODUCED
        assert seed.metric == "final_int8_zlib_roundtrip_exact"
        assert abs(seed.val_bpb - seed.claimed_val_bpb) <= 0.002
        # The artifact is recomputed from the files the run wrote and agrees with the log.
        assert seed.model_file == "final_model.int8.ptz"
        assert seed.artifact_bytes == seed.code_bytes + seed.model_bytes == seed.logged_artifact_bytes
        assert seed.code_bytes == (TINY / "train_gpt.py").stat().st_size
        assert seed.train.measured_s is not None and seed.eval.measured_s is not None
    assert result.mean.within is True
    assert result.mean.claimed_source == "per-seed claims of the same seeds"
    assert exit_code([result]) == 0
    assert survivors(marker) == []


def test_reports_written_and_json_matches_text(reproduced):
    result, _ = reproduced
    run_dir = Path(result.run_dir)
    report = json.loads((run_dir / "report.json").read_text())
    assert report["verdict"] == REPRODUCED
    assert [s["seed"] for s in report["seeds"]] == [42]
    assert report["claims"]["per_seed"]["1337"]["val_bpb"] == 4.31560694
    assert report["seeds"][0]["val_bpb"] == result.seeds[0].val_bpb
    assert report["dataset"]["ok"] is True
    assert "seed 42: REPRODUCED" in (run_dir / "summary.txt").read_text()
    assert (run_dir / "seed_42" / "outputs" / "final_model.int8.ptz").is_file()
    assert (run_dir / "record" / "train_gpt.py").read_bytes() == (TINY / "train_gpt.py").read_bytes()


def test_child_environment_has_no_credentials(reproduced, monkeypatch):
    result, _ = reproduced
    command = result.seeds[0].command
    assert "SEED=42" in command and "DATA_PATH=" in command
    env = launch.seed_environment(
        {"PATH": "/usr/bin", "GITHUB_TOKEN": "ghp_x", "AWS_SECRET_ACCESS_KEY": "k", "HF_TOKEN": "h",
         "https_proxy": "http://p", "NCCL_DEBUG": "INFO", "SSH_AUTH_SOCK": "/tmp/s", "MY_API_KEY": "z"},
        {"MATRIX_LR": "0.03", "WANDB_API_KEY": "w", "SEED": "7", "TRAIN_BATCH_TOKENS": "2048"}, {"ITERATIONS": "5"},
        42, "/d", "/t.model", "/home", "m")
    assert env["PATH"] == "/usr/bin" and env["NCCL_DEBUG"] == "INFO"
    assert env["TRAIN_BATCH_TOKENS"] == "2048" and env["TOKENIZER_PATH"] == "/t.model"
    assert env["MATRIX_LR"] == "0.03" and env["ITERATIONS"] == "5" and env["SEED"] == "42"
    for secret in ("GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "HF_TOKEN", "https_proxy", "SSH_AUTH_SOCK",
                   "MY_API_KEY", "WANDB_API_KEY"):
        assert secret not in env


def test_planted_wrong_claims_diverge(reproduced, tmp_path):
    result, _ = reproduced
    planted = tmp_path / "planted"
    shutil.copytree(TINY, planted)
    claims = json.loads((planted / "submission.json").read_text())
    claims["seed_results"]["42"]["val_bpb"] = 4.20
    claims["seed_results"]["1337"]["val_bpb"] = 4.21
    claims["mean_val_bpb"] = 4.205
    (planted / "submission.json").write_text(json.dumps(claims))
    judged = judge_run_dir(result.run_dir, planted)
    assert judged.verdict == DIVERGED, judged.to_text()
    assert [s.verdict for s in judged.seeds] == [DIVERGED]
    assert judged.seeds[0].claimed_val_bpb == 4.20
    assert judged.seeds[0].val_bpb == result.seeds[0].val_bpb
    assert judged.mean.within is False
    assert exit_code([judged]) == 1
    text = judged.to_text()
    assert "claimed 4.20000" in text and "beyond the tolerance" in text
    # The same logs against the true claims: reproduced again.
    assert judge_run_dir(result.run_dir, TINY).verdict == REPRODUCED


def test_mean_and_welch_test_of_rerun_against_claims():
    from auditor.reproduce.result import SeedOutcome
    from auditor.reproduce.verdict import Claimed, SeedClaimed, compare_mean, overall_verdict

    claimed = Claimed(per_seed={1: SeedClaimed(1.100), 2: SeedClaimed(1.102), 3: SeedClaimed(1.101)}, seeds=[1, 2, 3])
    assert claimed.tolerance == pytest.approx(0.003)  # 3 x the claims' standard deviation (0.001), above 0.002
    close = [SeedOutcome(seed, REPRODUCED, val_bpb=v) for seed, v in ((1, 1.1005), (2, 1.1015), (3, 1.1012))]
    mean = compare_mean(close, claimed)
    assert mean.within is True and mean.welch_p > 0.05 and "no significant difference" in mean.welch_note
    far = [SeedOutcome(seed, REPRODUCED, val_bpb=v) for seed, v in ((1, 1.1100), (2, 1.1110), (3, 1.1105))]
    mean = compare_mean(far, claimed)
    assert mean.within is False and mean.welch_p < 0.01
    # Seeds that passed on their own, a mean outside the tolerance: the overall verdict diverges.
    assert overall_verdict(far, mean) == DIVERGED


def test_oversized_artifact_is_over_limit(reproduced):
    result, _ = reproduced
    from auditor.reproduce.verdict import Limits

    judged = judge_run_dir(result.run_dir, TINY, limits=Limits(artifact_bytes=10_000))
    assert judged.verdict == OVER_LIMIT
    assert any("artifact 19,5" in reason for reason in judged.seeds[0].reasons)


def test_wall_limit_stops_every_process(data_root, tmp_path):
    """The reference under a tiny wall limit, through the process-group launcher: SIGTERM to
    torchrun's group and every marked worker, then SIGKILL."""
    marker = f"REPRO_TEST_{uuid.uuid4().hex}"
    record = reference_record(tmp_path / "reference_tiny")
    result = reproduce(record, gpus=2, seeds=[1337], data=data_root, run_dir=tmp_path / "run", sandbox="none",
                       wall_limit_s=25, grace_s=3, fingerprint=False, progress=None,
                       env={**THREADS, "ITERATIONS": "100000000", "TRAIN_LOG_EVERY": "50",
                            "REPRO_TEST_MARKER": marker})
    seed = result.seeds[0]
    assert result.verdict == OVER_LIMIT, result.to_text()
    assert seed.failure_kind == "timeout" and seed.stopped_by == "wall-limit"
    log = Path(seed.log).read_text()
    assert "world_size:2 grad_accum_steps:4" in log  # the workers were running when stopped
    assert "final_int8_zlib_roundtrip" not in log
    assert exit_code([result]) == 1
    assert survivors(marker) == []


def test_daemon_that_leaves_session_and_environment_is_killed(data_root, tmp_path):
    """A worker's grandchild that calls setsid() and execs with an empty environment: only the
    run's cgroup still knows it (made where this machine allows: root, cgroup v1 pids or v2)."""
    probe = launch.make_cgroup(uuid.uuid4().hex)
    if probe is None:
        pytest.skip("no cgroup can be made here (not root, or cgroups read-only)")
    launch.remove_cgroup(probe)
    hostile = tmp_path / "hostile"
    shutil.copytree(TINY, hostile)
    script = hostile / "train_gpt.py"
    script.write_text(script.read_text().replace(
        "def main():\n",
        "def main():\n"
        "    if os.environ.get('RANK') == '0' and os.fork() == 0:\n"
        "        os.setsid()\n"
        "        if os.fork() == 0:\n"
        "            import sys\n"
        "            os.execve(sys.executable, [sys.executable, '-c', 'import time; time.sleep(120)',\n"
        "                      os.environ['REPRO_TEST_MARKER']], {})\n"
        "        os._exit(0)\n", 1))
    marker = f"REPRO_TEST_{uuid.uuid4().hex}"
    result = reproduce(hostile, gpus=2, seeds=[42], data=data_root, run_dir=tmp_path / "run", sandbox="none",
                       fingerprint=False, progress=None, env={**THREADS, "REPRO_TEST_MARKER": marker})
    assert result.seeds[0].val_bpb is not None, result.to_text()
    assert result.seeds[0].survivors_killed >= 1
    assert survivors(marker) == []


def test_crashing_script_fails_with_its_log_tail(data_root, tmp_path):
    crashing = reference_record(tmp_path / "crashing")
    script = crashing / "train_gpt.py"
    text = script.read_text()
    assert text.count("        step += 1\n") == 1
    script.write_text(text.replace(
        "        step += 1\n", "        step += 1\n        if step == 3:\n            raise RuntimeError('planted crash')\n"))
    marker = f"REPRO_TEST_{uuid.uuid4().hex}"
    # Under bubblewrap (where this machine has it): the data and tokenizer binds work up to the crash.
    result = reproduce(crashing, gpus=2, seeds=[1337], data=data_root, run_dir=tmp_path / "run", fingerprint=False,
                       progress=None, env={**THREADS, "REPRO_TEST_MARKER": marker})
    seed = result.seeds[0]
    assert result.verdict == FAILED and seed.verdict == FAILED, result.to_text()
    assert seed.failure_kind == "crash"
    assert "worker error: RuntimeError: planted crash" in seed.reasons
    assert "ChildFailedError" in seed.log_tail  # torchrun's own report ends the log
    assert "step:2/4 train_loss" in Path(seed.log).read_text()  # it trained up to the crash
    assert "final_int8_zlib_roundtrip" not in Path(seed.log).read_text()
    if launch.sandbox_available():
        assert any(reason.startswith("sandbox: bwrap") for reason in seed.reasons)
    assert not any("REPRO_TEST_MARKER" in reason for reason in seed.reasons)  # the marker reached the workers
    assert exit_code([result]) == 2
    assert "planted crash" in result.to_text()
    assert survivors(marker) == []


def test_two_nodes_meet_through_c10d_and_node0_judges(data_root, tmp_path):
    """Two torchrun agents on this machine, one process each, rendezvous on 127.0.0.1 (c10d)."""
    import socket
    import threading

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    marker = f"REPRO_TEST_{uuid.uuid4().hex}"
    results = {}

    def node(rank: int) -> None:
        results[rank] = reproduce(TINY, gpus=1, nodes=2, node_rank=rank, rdzv=f"127.0.0.1:{port}", seeds=[42],
                                  data=data_root, run_dir=tmp_path / "shared", fingerprint=False, progress=None,
                                  wall_limit_s=120, env={**THREADS, "REPRO_TEST_MARKER": marker})

    threads = [threading.Thread(target=node, args=(rank,)) for rank in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    first, second = results[0], results[1]
    assert first.verdict == REPRODUCED, first.to_text()
    # World size 2 over two nodes gives the claims of world size 2 on one node, to the digit.
    assert first.seeds[0].val_bpb == first.seeds[0].claimed_val_bpb == 4.30758336
    assert second.verdict == "NOT-JUDGED" and second.seeds[0].returncode == 0
    assert "--rdzv-backend=c10d" in first.seeds[0].command and "--node-rank=1" in second.seeds[0].command
    assert Path(first.run_dir) == tmp_path / "shared" / "node0"
    assert survivors(marker) == []


def test_node0_takes_the_score_from_the_node_that_hosted_rank_0(tmp_path):
    """c10d numbers the nodes in its own order: global rank 0 (the one that prints) may be on node 1."""
    from auditor.reproduce.runner import NODE_DONE, _forget_other_nodes, _score_from_other_nodes

    scored = (TINY / "train_seed42.log").read_text()
    own = tmp_path / "node0" / "seed_42" / "train.log"
    own.parent.mkdir(parents=True)
    own.write_text("world_size:2\n")
    other = tmp_path / "node1" / "seed_42"
    other.mkdir(parents=True)
    (other / "train.log").write_text(scored)
    (other / NODE_DONE).write_text("0\n")
    reasons = []
    text, path = _score_from_other_nodes(tmp_path, 2, 42, "world_size:2\n", own, reasons, wait_s=5)
    assert (text, path) == (scored, other / "train.log")
    assert reasons == [f"global rank 0 ran on node 1 (c10d orders the nodes itself): score read from {other / 'train.log'}"]
    # A finished mark left by an earlier run is removed before the seed starts; a log without a score is not taken.
    _forget_other_nodes(tmp_path, 2, 42)
    assert not (other / NODE_DONE).exists()
    (other / "train.log").write_text("world_size:2\n")
    assert _score_from_other_nodes(tmp_path, 2, 42, "own", own, [], wait_s=0.5) == ("own", own)


def test_reference_reproduces_its_own_claims(reference_reproduced):
    result, marker = reference_reproduced
    seed = result.seeds[0]
    assert result.verdict == REPRODUCED, result.to_text()
    assert result.config_source == "readme" and result.run_env["MODEL_DIM"] == "32"
    assert [s.seed for s in result.seeds] == [1337]  # the claimed seed
    assert seed.metric == "final_int8_zlib_roundtrip_exact"
    assert seed.claimed_val_bpb == 4.67267119 and abs(seed.val_bpb - seed.claimed_val_bpb) <= 0.002
    # The reference logs two compressed sizes (zlib, zstd); the artifact is the file it wrote.
    assert seed.model_file == "final_model.int8.ptz"
    assert seed.artifact_bytes == seed.code_bytes + seed.model_bytes == seed.logged_artifact_bytes
    assert seed.code_bytes == REFERENCE_SCRIPT.stat().st_size
    assert "TRAIN_BATCH_TOKENS=1024" in seed.command and "--nproc-per-node=2" in seed.command
    assert "world_size:2 grad_accum_steps:4" in Path(seed.log).read_text()
    assert exit_code([result]) == 0
    assert survivors(marker) == []


def test_reference_against_planted_wrong_claims_diverges(reference_reproduced, tmp_path):
    result, _ = reference_reproduced
    planted = reference_record(tmp_path / "planted")
    claims = json.loads((planted / "submission.json").read_text())
    claims["seed_results"]["1337"]["val_bpb"] = round(result.seeds[0].val_bpb - 0.01, 8)
    claims["mean_val_bpb"] = claims["seed_results"]["1337"]["val_bpb"]
    (planted / "submission.json").write_text(json.dumps(claims))
    judged = judge_run_dir(result.run_dir, planted)
    assert judged.verdict == DIVERGED, judged.to_text()
    assert [s.verdict for s in judged.seeds] == [DIVERGED]
    assert judged.seeds[0].val_bpb == result.seeds[0].val_bpb
    assert judged.mean.within is False and exit_code([judged]) == 1
    assert "beyond the tolerance 0.0020" in judged.to_text()


def test_reference_flag_reruns_reference_model(data_root, tmp_path):
    result = reproduce(reference=True, gpus=2, seeds=[1337], data=data_root, run_dir=tmp_path / "run", dry_run=True,
                       sandbox="none", progress=None, env={"VOCAB_SIZE": "128"})
    assert result.verdict == DRY_RUN, result.to_text()
    assert result.reference and Path(result.path) == ROOT / "reference_model"
    assert result.script == "train_gpt.py" and result.claims["per_seed"] == {}
    assert "VOCAB_SIZE=128" in result.commands[0] and "--nproc-per-node=2 train_gpt.py" in result.commands[0]
    assert not (tmp_path / "run").exists()


# --- dataset checks -----------------------------------------------------------------


def test_val_documents_in_train_are_caught(tmp_path):
    data_dir, tokenizer = write_tiny_dataset(tmp_path / "leaky", leak_documents=20)
    report = check_dataset(data_dir, tokenizer, 128)
    failed = {check.name: check for check in report.failures}
    assert list(failed) == ["val-in-train"]
    assert "validation documents in the training data" in failed["val-in-train"].message
    details = failed["val-in-train"].details
    assert details["copied_documents"] == 20 and details["judged_documents"] == 150
    assert "20 of 150 validation documents (13.3%) have half or more" in failed["val-in-train"].message
    assert details["matched_windows"] > 0.05 * details["val_windows"]
    # reproduce() stops before starting anything, with the reason.
    result = reproduce(TINY, gpus=2, data=tmp_path / "leaky", run_dir=tmp_path / "run", progress=None)
    assert result.verdict == FAILED and result.seeds == []
    assert "validation documents in the training data" in result.error


def test_clean_dataset_has_no_overlap(data_root):
    report = check_dataset(data_root / "datasets" / "tiny", data_root / "tokenizers" / "tiny.model", 128)
    assert report.ok, [c.message for c in report.failures]
    overlap = report.checks[-1].details
    assert overlap["matched_windows"] == 0 and overlap["val_windows"] > 1000
    assert overlap["documents"] == 150 and overlap["copied_documents"] == 0


def test_fingerprint_finds_a_copied_span_exactly(tmp_path):
    rng = np.random.default_rng(1)
    val = rng.integers(0, 1024, 50_000)
    train = rng.integers(0, 1024, 300_000)
    train[7_000:17_000] = val[20_000:30_000]  # a fifth of val, copied
    write_shard(tmp_path / "fineweb_val_000000.bin", val)
    write_shard(tmp_path / "fineweb_train_000000.bin", train)
    overlap = find_val_in_train([tmp_path / "fineweb_train_000000.bin"], [tmp_path / "fineweb_val_000000.bin"])
    assert 0.18 < overlap.fraction < 0.21
    first = overlap.examples[0]
    assert first["train_offset"] - 7_000 == first["val_offset"] - 20_000


def test_bad_shards_get_clear_messages(tmp_path):
    good = write_shard(tmp_path / "fineweb_train_000000.bin", np.arange(100))
    assert shard_token_count(good) == 100
    truncated = tmp_path / "fineweb_train_000001.bin"
    truncated.write_bytes(good.read_bytes()[:-10])
    with pytest.raises(DatasetError, match="header's 100 tokens need 1224"):
        shard_token_count(truncated)
    bad_magic = tmp_path / "fineweb_train_000002.bin"
    raw = bytearray(good.read_bytes())
    raw[0:4] = (12345).to_bytes(4, "little")
    bad_magic.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match="magic 12345, expected 20240520"):
        shard_token_count(bad_magic)
    report = check_dataset(tmp_path, None, None)
    messages = {check.name: check.message for check in report.failures}
    assert "magic 12345" in messages["shards"] and "no validation shards" in messages["val-split"]
    assert "pass --tokenizer" in messages["vocab"]


def test_vocab_mismatch_and_protobuf_count(data_root):
    tokenizer = data_root / "tokenizers" / "tiny.model"
    assert protobuf_piece_count(tokenizer.read_bytes()) == tokenizer_vocab_size(tokenizer) == 128
    report = check_dataset(data_root, tokenizer, 1024, fingerprint=False)
    vocab = next(c for c in report.checks if c.name == "vocab")
    assert not vocab.ok
    assert vocab.message == "the script's vocabulary is 1024 but the tokenizer tiny.model has 128 pieces"
    script = (TINY / "train_gpt.py").read_text()
    assert script_vocab_size(script, {}) == 128
    assert script_vocab_size(script, {"VOCAB_SIZE": "256"}) == 256
    # The reference's dataclass config reads VOCAB_SIZE generically (os.environ.get(f.name.upper())).
    assert script_vocab_size((ROOT / "reference_model" / "train_gpt.py").read_text(), {}) == 1024


def test_calibration_factor_from_the_reference_figure(tmp_path):
    from auditor.reproduce.hardware import calibration_from_log, estimate

    log = "step:10/30 train_loss:5.0 train_time:4000ms step_avg:400.00ms\nstep:30/30 train_loss:4.0 " \
          "train_time:12000ms step_avg:200.00ms\n"
    unknown = calibration_from_log(log, "cal.log", reference_dir=tmp_path)
    assert unknown.factor is None and unknown.local_step_ms == 200.0
    assert "factor is unknown" in unknown.how
    (tmp_path / "calibration.json").write_text(json.dumps({"step_avg_ms_8xh100": 50.0, "source": "a measured run"}))
    known = calibration_from_log(log, "cal.log", reference_dir=tmp_path)
    assert known.factor == 0.25 and "50 ms/step on 8xH100 (a measured run)" in known.how
    figure = estimate(800.0, known.factor)
    assert figure.estimated_8xh100_s == 200.0 and figure.to_json()["is_estimate"] is True


# --- commands, CLI ------------------------------------------------------------------


def test_torchrun_commands_single_and_multi_node():
    single = launch.torchrun_command("train_gpt.py", launch.Topology(gpus=8), "rec", 42, python="python")
    assert single == ["python", "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc-per-node=8",
                      "train_gpt.py"]
    multi = launch.torchrun_command("train_gpt.py", launch.Topology(8, 2, 1, "node0:29500"), "rec", 42,
                                    python="python")
    assert "--rdzv-backend=c10d" in multi and "--rdzv-endpoint=node0:29500" in multi
    assert "--nnodes=2" in multi and "--node-rank=1" in multi and "--rdzv-id=auditor-rec-seed42" in multi
    assert launch.Topology(8, 2, 0, None).validate() == "several nodes need --rdzv HOST:PORT (the rendezvous on the first node)"
    assert launch.Topology(8, 2, 2, "h:1").validate() == "--node-rank must be between 0 and 1"


def test_progress_display_plain_and_tty():
    import io

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    plain, terminal = io.StringIO(), Terminal()
    for stream in (plain, terminal):
        progress = launch.Progress(42, stream, max_train_seconds=600.0, interval=3600.0)
        progress.feed("step:100/20000 train_loss:3.2100 train_time:60000ms step_avg:600.00ms\n")
        progress.feed("step:200/20000 train_loss:3.1000 train_time:120000ms step_avg:600.00ms\n")
        progress.feed("final_int8_zlib_roundtrip_exact val_loss:2.1 val_bpb:1.25\n")
        progress.close()
    # Plain: the first step line, then only forced lines (the interval has not passed).
    lines = plain.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("[seed 42] training step 100/20000 train_time 60.0s loss 3.2100 ETA(train) 9m00s")
    assert lines[1].startswith("[seed 42] evaluated step 200/20000")
    # A terminal: one line redrawn in place.
    assert terminal.getvalue().count("\r\x1b[2K") == 3 and terminal.getvalue().endswith("\n")


def test_cli_dry_run_prints_commands_and_starts_nothing(data_root, tmp_path):
    from auditor.cli import app

    run_dir = tmp_path / "run"
    out = CliRunner().invoke(app, ["reproduce", str(TINY), "--gpus", "2", "--data", str(data_root),
                                   "--seeds", "42,7", "--dry-run", "--run-dir", str(run_dir), "-f", "json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert report["verdict"] == DRY_RUN
    assert len(report["commands"]) == 2
    assert "SEED=7" in report["commands"][1] and "--nproc-per-node=2" in report["commands"][1]
    assert "torch.distributed.run --standalone" in report["commands"][0]
    assert not run_dir.exists()


def test_data_found_at_the_scripts_default_path(data_root, tmp_path, monkeypatch):
    (tmp_path / "data").symlink_to(data_root)  # ./data/datasets/tiny, ./data/tokenizers/tiny.model
    monkeypatch.chdir(tmp_path)
    result = reproduce(TINY, gpus=2, seeds=[42], dry_run=True, progress=None)
    assert result.verdict == DRY_RUN, result.to_text()
    assert Path(result.dataset.data_dir) == (data_root / "datasets" / "tiny").resolve()
    assert Path(result.dataset.tokenizer) == (data_root / "tokenizers" / "tiny.model").resolve()


def test_cli_bad_input_exits_2_without_traceback(tmp_path):
    from auditor.cli import app

    runner = CliRunner()
    missing = runner.invoke(app, ["reproduce", str(tmp_path / "nope"), "--data", str(tmp_path)])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    assert "Traceback" not in missing.output
    seeds = runner.invoke(app, ["reproduce", str(TINY), "--seeds", "4x"])
    assert seeds.exit_code == 2 and "seeds are integers" in seeds.output
    no_data = runner.invoke(app, ["reproduce", str(TINY), "--data", str(tmp_path)])
    assert no_data.exit_code == 2 and "no shards" in no_data.output


def test_command_module_imports_no_heavy_modules():
    import subprocess

    code = ("import sys, auditor.reproduce.command; "
            "print(sorted(m for m in ('torch', 'numpy', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
