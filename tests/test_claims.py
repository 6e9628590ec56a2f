"""`auditor claims` on synthetic record folders: each planted defect is caught, the clean one passes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auditor.claims.checks import check_claims
from auditor.cli import app

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "claims"
runner = CliRunner()


def violations(name: str, check: str | None = None) -> list:
    result = check_claims(FIXTURES / name)
    assert result.error is None
    return [f for f in result.findings if f.severity == "violation" and (check is None or f.check == check)]


def test_clean_fixture_has_no_violation_or_warning():
    result = check_claims(FIXTURES / "clean")
    assert [f for f in result.findings if f.severity != "info"] == []
    assert [s.seed for s in result.seeds] == [1337, 42, 7]
    assert result.measured["mean_val_bpb"] == pytest.approx(1.12843704)
    assert result.measured["max_eval_time_s"] == pytest.approx(81.0)


def test_code_edited_after_the_run():
    found = violations("code_edited", "code_size")
    assert len(found) == 1
    assert found[0].claimed == 93 and found[0].observed == 67


def test_a_trailing_newline_is_a_warning_not_an_edit(tmp_path):
    folder = tmp_path / "clean"
    shutil.copytree(FIXTURES / "clean", folder)
    script = folder / "train_gpt.py"
    script.write_bytes(script.read_bytes() + b"\n")
    result = check_claims(folder)
    [found] = [f for f in result.findings if f.check == "code_size"]
    assert found.severity == "warning"
    assert "(+1): likely only a trailing newline" in found.message


def test_artifact_one_byte_over_the_cap():
    found = violations("artifact_over_cap", "artifact_size")
    assert [f.observed for f in found] == [16_000_001]


def test_601_seconds_of_training():
    found = violations("train_601s", "train_time")
    assert [f.observed for f in found] == [pytest.approx(601.0)]


def test_missing_seed_log():
    found = violations("missing_seed_log", "seed_logs")
    assert len(found) == 1 and found[0].claimed == 7


def test_misreported_mean():
    found = violations("wrong_mean", "val_bpb")
    assert len(found) == 1 and found[0].claimed == "1.12000000"


def test_two_logs_of_the_same_seed():
    result = check_claims(FIXTURES / "duplicate_seed")
    duplicate = [f for f in result.findings if f.check == "duplicate_seed"]
    assert duplicate and duplicate[0].observed == 42
    assert any(f.check == "seed_logs" and f.claimed == 7 for f in result.violations)


def test_calibration_on_training_data_after_the_clock():
    assert len(violations("calibration_after_clock", "calibration_after_clock")) == 3


def test_messy_log_with_prefixes_code_and_three_runs():
    result = check_claims(FIXTURES / "messy_logs")
    assert result.violations == []
    assert [s.seed for s in result.seeds] == [1337, 42, 7]
    assert all(s.run.file.name == "train.log" for s in result.seeds)


def test_significance_against_a_sota_figure():
    passed = check_claims(FIXTURES / "clean", sota_bpb=1.14)
    failed = check_claims(FIXTURES / "clean", sota_bpb=1.13)
    assert [f.severity for f in passed.findings if f.check == "significance"] == ["info"]
    assert [f.severity for f in failed.findings if f.check == "significance"] == ["violation"]
    assert "val_loss in nats" in failed.findings[-1].message


def test_significance_against_a_sota_folder(tmp_path):
    result = check_claims(FIXTURES / "clean", sota_dir=FIXTURES / "clean")
    finding = [f for f in result.findings if f.check == "significance"][0]
    assert finding.severity == "violation" and "Welch" in finding.message


def test_cli_json_shape_and_exit_codes():
    clean = runner.invoke(app, ["claims", str(FIXTURES / "clean"), "--format", "json"])
    assert clean.exit_code == 0, clean.output
    data = json.loads(clean.output)
    entry = data["results"][0]
    assert set(entry) >= {"path", "seeds", "claimed", "measured", "findings"}
    assert set(entry["findings"][0]) == {"check", "severity", "path", "message", "claimed", "observed"}

    bad = runner.invoke(app, ["claims", str(FIXTURES / "wrong_mean")])
    assert bad.exit_code == 1 and "VIOLATION" in bad.output

    missing = runner.invoke(app, ["claims", str(FIXTURES / "no_such_folder")])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_unreadable_inputs_give_findings_not_tracebacks(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "submission.json").write_text("{not json")
    (folder / "train.log").write_bytes(b"\x00\x01binary")
    (folder / "notes.txt").write_text("nothing to see here\n")
    (folder / "train_gpt.py").write_text("print(1)\n")
    result = check_claims(folder)
    assert result.error is None
    messages = " ".join(f.message for f in result.findings if f.check == "could_not_read")
    assert "not valid JSON" in messages and "train.log" in messages
    # In a process of its own: CliRunner would catch a crash and report it as exit code 1.
    cli = subprocess.run([sys.executable, "-m", "auditor.cli", "claims", str(folder)], capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr  # warnings only: nothing could be checked, nothing violated
    assert "Traceback" not in cli.stdout + cli.stderr and "could not read" in cli.stdout


def test_importing_claims_does_not_import_torch():
    code = "import sys, auditor.claims.command, auditor.claims.checks; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
