"""One CLI shape: every command takes --format/-f, importing the CLI and classifying never
imports torch, the public API loads lazily, and `auditor rules` documents each rule."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auditor.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_classify_through_the_cli_never_imports_torch(tmp_path):
    code = (
        "import sys\n"
        "from auditor.cli import app\n"
        "from typer.testing import CliRunner\n"
        f"out = CliRunner().invoke(app, ['classify', '--no-cache', '-f', 'json', {str(ROOT / 'fixtures/classify/ttt_pre_eval.py')!r}])\n"
        "assert out.exit_code == 1, out.output\n"
        "print('torch' in sys.modules, 'auditor.analysis' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"AUDITOR_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert out.stdout.split() == ["False", "True"], out.stderr


def test_loading_the_cli_loads_only_the_command_modules():
    """The work of each command is imported when it runs (lazy packages, lazy imports)."""
    code = "import sys, auditor.cli; print(' '.join(sorted(m for m in sys.modules if m.startswith('auditor.'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    loaded = out.stdout.split()
    assert "auditor.smoke.command" in loaded
    assert [m for m in loaded if m.count(".") > 1 and not m.endswith(".command")] == []


def test_public_api_is_typed_and_lazy():
    code = ("import sys, auditor\n"
            "print('auditor.classify.runner' in sys.modules, 'auditor.claims.checks' in sys.modules)\n"
            "from auditor import classify_paths, check_claims, smoke_paths, ClassifyResult, ClaimsResult, SmokeResult\n"
            "print(classify_paths.__module__, check_claims.__module__, smoke_paths.__module__)\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.splitlines() == [
        "False False", "auditor.classify.runner auditor.claims.checks auditor.smoke.batch", "False"]


# review's formats are its comment (markdown, the default) and json.
@pytest.mark.parametrize("command,choices", [
    *[(command, "'text', 'json'") for command in ("classify", "claims", "smoke", "reproduce", "data synth", "rules")],
    ("review", "'markdown', 'json'"),
])
def test_every_command_takes_format_short_and_long(command, choices):
    words = command.split()
    help_text = runner.invoke(app, [*words, "--help"], terminal_width=200).output
    assert "--format" in help_text and "-f" in help_text
    bad = runner.invoke(app, [*words, "-f", "yaml", "x"])
    message = " ".join(re.sub("[│╭╮╰╯─]", " ", bad.output).split())  # rich's error box, unwrapped
    assert bad.exit_code == 2 and f"'yaml' is not one of {choices}" in message, message  # an Enum's error


def test_unreadable_paths_exit_2_with_json(tmp_path):
    for command in ("classify", "claims", "smoke"):
        out = runner.invoke(app, [command, "-f", "json", str(tmp_path / "missing")])
        assert out.exit_code == 2, (command, out.output)
        assert json.loads(out.stdout)["results"][0]["path"] == str(tmp_path / "missing")


def test_rules_lists_and_documents_each_rule():
    listing = runner.invoke(app, ["rules"])
    assert listing.exit_code == 0
    ids = [line.split()[0] for line in listing.stdout.splitlines()]
    assert "ngram-target-in-key" in ids and "ttt-score-first" in ids
    for rule_id in ids:
        doc = runner.invoke(app, ["rules", rule_id]).stdout
        assert doc.startswith(f"# {rule_id}\n")
        assert "## What it flags" in doc and "## Ruling and why" in doc
        assert "## Flagged (illegal)" in doc and "## Not flagged (legal)" in doc
    unknown = runner.invoke(app, ["rules", "no-such-rule"])
    assert unknown.exit_code == 2 and "ngram-target-in-key" in unknown.output


def test_rule_doc_reads_the_rule_module():
    from auditor import rule_doc
    from auditor.rules import all_rules

    rule = next(r for r in all_rules() if r.id == "ngram-target-in-key")
    doc = rule_doc("ngram-target-in-key")
    assert doc.flags == "an eval-time n-gram cache whose lookup key contains the target."
    assert "779" in doc.ruling
    assert doc.illegal_example == textwrap.dedent(rule.INVALID[0]).strip()
    assert doc.legal_example == textwrap.dedent(rule.VALID[0]).strip()


def test_classify_sarif_is_json_with_the_finding():
    out = runner.invoke(app, ["classify", "--no-cache", "-f", "sarif", str(ROOT / "fixtures/classify/slot_scored.py")])
    log = json.loads(out.stdout)
    assert out.exit_code == 1 and log["version"] == "2.1.0"
    assert [r["ruleId"] for r in log["runs"][0]["results"]] == ["slot-scored-region"]


def test_check_claims_takes_a_loaded_submission():
    from auditor import check_claims, load_submission

    folder = ROOT / "fixtures" / "claims" / "wrong_mean"
    loaded = check_claims(load_submission(folder, mode="folder"))
    assert loaded.to_json() == check_claims(folder).to_json()
    assert loaded.violations
