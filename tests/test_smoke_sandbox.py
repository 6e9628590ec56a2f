"""`auditor smoke` end to end: real child processes and real torch, on fixtures/smoke/."""

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auditor.cli import app
from auditor.smoke import Limits, SmokeOptions, smoke_path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "smoke"


def smoke(name: str, **options):
    limits = options.pop("limits", Limits(wall_seconds=60))
    return smoke_path(FIXTURES / name / "train_gpt.py", SmokeOptions(limits=limits, **options))


def marked_processes(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                if marker.encode() in Path(f"/proc/{entry}/environ").read_bytes():
                    found.append(int(entry))
            except OSError:
                pass
    return found


def test_legit_submission_builds_and_runs_forward():
    result = smoke("legit", forward=True)
    assert result.ok, result.error
    assert result.model == {"class": "GPT", "params": 26944, "dim": 32, "layers": 2, "unique_layers": 2,
                            "vocab": 64, "tied_embeddings": True}
    assert result.code_bytes == (FIXTURES / "legit" / "train_gpt.py").stat().st_size
    assert result.forward["ok"] is True
    assert result.config_source == "defaults"
    assert result.isolation["sandbox"].startswith("bwrap ")
    assert result.isolation["computed_by_auditor"]["code_bytes"] == result.code_bytes


def test_env_override_changes_the_model_and_names_the_source():
    result = smoke("legit", env={"NUM_LAYERS": "3", "VOCAB_SIZE": "128"})
    assert result.ok, result.error
    assert (result.model["layers"], result.model["vocab"]) == (3, 128)
    assert result.config_source == "env"


def test_gpu_only_modules_are_shimmed_and_their_use_is_reported():
    result = smoke("gpu_only", forward=True)
    assert result.ok, result.error
    assert result.shimmed == {"flash_attn_interface": "gpu-only", "triton": "gpu-only"}
    assert result.model["class"] == "TinyModel" and result.model["vocab"] == 96
    assert result.forward["ok"] is False and result.forward["kind"] == "missing-module"
    assert "GPU-only" in result.forward["message"]


@pytest.mark.parametrize(
    "name, kind, text",
    [
        ("broken_syntax", "syntax", "line 2"),
        ("cuda_at_import", "cuda-required", "CUDA"),
        ("no_model", "model-not-found", "no model"),
        ("raises", "exception", "width 3 is not supported"),
        ("hostile_memory", "memory", "allocate"),
    ],
)
def test_failures_are_classified(name, kind, text):
    result = smoke(name)
    assert result.status == "fail"
    assert result.error["kind"] == kind
    assert text in result.error["message"]


def test_raises_reports_the_submissions_last_frame():
    assert smoke("raises").error["frame"] == "line 11 in check"


def test_secrets_are_not_visible(monkeypatch):
    monkeypatch.setenv("SMOKE_FIXTURE_TOKEN", "do-not-leak")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:1")
    result = smoke("hostile_token")
    assert "SECRETS-NONE" in result.error["message"]


def test_network_is_unreachable(monkeypatch):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    try:
        # A plain setting passes to the child like a README's NUM_LAYERS=11 would.
        result = smoke("hostile_socket", env={"SMOKE_TEST_PORT": str(server.getsockname()[1])})
        server.setblocking(False)
        with pytest.raises(BlockingIOError):  # a connection would wait in the backlog: none came
            server.accept()
    finally:
        server.close()
    assert result.isolation["sandbox"].startswith("bwrap ")
    assert "NETWORK-BLOCKED" in result.error["message"]


def test_infinite_loop_hits_the_timeout_and_nothing_survives(monkeypatch):
    marker = f"SMOKE_TEST_MARK_{uuid.uuid4().hex}"
    monkeypatch.setenv(marker, "1")
    result = smoke("hostile_loop", limits=Limits(wall_seconds=3))
    assert result.error["kind"] == "timeout"
    assert result.seconds < 20
    assert marked_processes(marker) == []


def test_fork_loop_is_stopped_and_nothing_survives(monkeypatch):
    marker = f"SMOKE_TEST_MARK_{uuid.uuid4().hex}"
    monkeypatch.setenv(marker, "1")
    result = smoke("hostile_fork", limits=Limits(wall_seconds=30, max_processes=64))
    assert result.status == "fail"
    assert result.error["kind"] == "exception"
    assert "process limit (64) reached" in result.error["message"]
    assert result.seconds < 30
    assert marked_processes(marker) == []


def test_cli_json_and_exit_codes(tmp_path):
    runner = CliRunner()
    ok = runner.invoke(app, ["smoke", str(FIXTURES / "legit"), "--format", "json"])
    assert ok.exit_code == 0, ok.output
    entry = json.loads(ok.output)["results"][0]
    assert set(entry) >= {"path", "status", "seconds", "config_source", "env", "model", "code_bytes", "error"}
    assert entry["status"] == "ok" and entry["error"] is None and entry["model"]["params"] == 26944

    text = runner.invoke(app, ["smoke", str(FIXTURES / "legit" / "train_gpt.py"), str(FIXTURES / "no_model")])
    assert text.exit_code == 1
    assert "import OK in" in text.output and "params=26,944" in text.output and "[config: defaults]" in text.output
    assert "FAIL model-not-found" in text.output

    missing = runner.invoke(app, ["smoke", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2


def test_folder_with_only_a_log_smokes_the_source_the_log_starts_with(tmp_path):
    source = (FIXTURES / "legit" / "train_gpt.py").read_text()
    (tmp_path / "train.log").write_text(source + "=" * 100 + "\nnum_layers:3\nmodel_params:12345\n")
    result = smoke_path(tmp_path)
    assert result.ok, result.error
    assert result.model["layers"] == 3 and result.config_source == "log"
    assert any("train.log" in note for note in result.notes)
    assert list(tmp_path.iterdir()) == [tmp_path / "train.log"]


def test_meta_build_does_not_import_dynamo():
    """A meta build's Python kernels would import torch._dynamo (1.2 s of CPU, as much as
    torch itself) only to disable it: the child tells their wrappers that nothing runs under
    dynamo, and the model still has its parameters."""
    probe = ("import sys, torch\n"
             "from auditor.smoke.child import skip_dynamo_disable\n"
             "told = skip_dynamo_disable(torch)\n"
             "with torch.device('meta'):\n"
             "    model = torch.nn.Sequential(torch.nn.Embedding(64, 8), torch.nn.Linear(8, 8))\n"
             "    torch.arange(8), torch.nn.init.eye_(torch.empty(4, 4))\n"
             "print(told > 0, 'torch._dynamo' in sys.modules, sum(p.numel() for p in model.parameters()))\n")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert run.stdout.split() == ["True", "False", "584"], run.stderr
