"""One house: one Finding and one exit_code in the package, no regex over finding
messages, each submission file read once per command run, dormancy typed."""

from __future__ import annotations

import ast
import builtins
import collections
import io
import json
import os
import re
from pathlib import Path

import pytest

from auditor.claims.checks import check_claims
from auditor.classify.runner import classify_paths

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "auditor"
ILLEGAL = (ROOT / "fixtures" / "classify" / "ttt_pre_eval.py").read_text()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDITOR_CACHE_DIR", str(tmp_path / "cache"))


def _record(folder: Path) -> Path:
    folder.mkdir()
    (folder / "train_gpt.py").write_text("import helper\n" + ILLEGAL)
    (folder / "helper.py").write_text("def helper():\n    return 1\n")
    (folder / "prep_data.py").write_text("import shutil\nshutil.copy('a', 'b')\n")
    (folder / "README.md").write_text("# r\n\n```bash\nTTT=1 torchrun --nproc_per_node=8 train_gpt.py\n```\n")
    (folder / "submission.json").write_text(json.dumps({"val_bpb": 1.2, "seeds": [1]}))
    (folder / "train_seed1.log").write_text("Code size: 100 bytes\nseed: 1\nstep:1/1 val_loss:2.0 val_bpb:1.2\n"
                                           "final_int8_zlib_roundtrip_exact val_loss:2.0 val_bpb:1.2\n")
    (folder / "train_seed2.log").write_text("seed: 2\nfinal_int8_zlib_roundtrip_exact val_loss:2.0 val_bpb:1.2\n")
    return folder


@pytest.fixture
def opens(monkeypatch):
    """Every open of a file, by path (os.open and the builtin open, which pathlib uses)."""
    counted: collections.Counter = collections.Counter()
    real_os_open, real_open = os.open, builtins.open

    def os_open(path, *args, **kwargs):
        counted[os.path.abspath(path)] += 1
        return real_os_open(path, *args, **kwargs)

    def py_open(file, *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)):
            counted[os.path.abspath(file)] += 1
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(builtins, "open", py_open)
    monkeypatch.setattr(io, "open", py_open)
    return counted


def _in(folder: Path, counted) -> dict[str, int]:
    return {Path(p).name: n for p, n in counted.items() if Path(p).parent == folder.resolve()}


def test_classify_reads_each_file_once_with_the_cache_on(tmp_path, opens):
    record = _record(tmp_path / "rec")
    opens.clear()  # writing the fixture opened each file once
    [result] = classify_paths([record])  # one path: in this process, through the cache
    assert result.verdict == "flag"
    counts = _in(record, opens)
    assert set(counts) == {"train_gpt.py", "helper.py", "prep_data.py", "README.md", "submission.json",
                           "train_seed1.log", "train_seed2.log"}
    assert set(counts.values()) == {1}, counts
    opens.clear()
    [again] = classify_paths([record])  # a cache hit: the files are read once, for the key
    assert again.to_json() == result.to_json()
    assert set(_in(record, opens).values()) == {1}, _in(record, opens)


def test_claims_reads_each_file_once(tmp_path, opens):
    record = _record(tmp_path / "rec")
    opens.clear()
    result = check_claims(record)
    assert result.error is None
    counts = _in(record, opens)
    assert {"README.md", "submission.json", "train_seed1.log", "train_seed2.log", "train_gpt.py"} <= set(counts)
    assert set(counts.values()) == {1}, counts


SMOKE_LEGIT = ROOT / "fixtures" / "smoke" / "legit" / "train_gpt.py"


def _smoke_record(folder: Path) -> Path:
    """A record folder around the smoke fixture: a helper module, a data file, a README that
    sets a hyperparameter, submission.json and two logs (the first one with a logged setting)."""
    folder.mkdir()
    (folder / "train_gpt.py").write_text("import helper\n" + SMOKE_LEGIT.read_text())
    (folder / "helper.py").write_text("SCALE = 1\n")
    (folder / "vocab.bin").write_bytes(bytes(range(256)))
    (folder / "README.md").write_text("# r\n\n```bash\nMODEL_DIM=16 torchrun --nproc_per_node=8 train_gpt.py\n```\n")
    (folder / "submission.json").write_text(json.dumps({"val_bpb": 1.2, "seeds": [1]}))
    (folder / "train_seed1.log").write_text("num_layers: 3\nseed: 1\nfinal_int8_zlib_roundtrip_exact val_bpb:1.2\n")
    (folder / "train_seed2.log").write_text("seed: 2\nfinal_int8_zlib_roundtrip_exact val_bpb:1.2\n")
    return folder


def test_smoke_reads_each_file_once(tmp_path, opens):
    """The auditor's side of a smoke run: the static work and the copy into the child's
    record folder read each file once (the child's own reads happen in its process)."""
    from auditor.smoke import Limits, SmokeOptions, smoke_path

    record = _smoke_record(tmp_path / "rec")
    opens.clear()
    result = smoke_path(record, SmokeOptions(limits=Limits(wall_seconds=60)))
    assert result.ok, result.error
    assert (result.env["MODEL_DIM"], result.env["NUM_LAYERS"]) == ("16", "3")  # README and log were read
    counts = _in(record, opens)
    assert set(counts) == {"train_gpt.py", "helper.py", "vocab.bin", "README.md", "submission.json",
                           "train_seed1.log", "train_seed2.log"}
    assert set(counts.values()) == {1}, counts


def _package_sources() -> dict[str, str]:
    return {str(p.relative_to(ROOT)): p.read_text() for p in PACKAGE.rglob("*.py")}


def test_one_finding_class_and_one_exit_code():
    sources = _package_sources()
    # Nested or indented too: a method or property counts as another exit_code.
    finding_classes = [p for p, text in sources.items() if re.search(r"^\s*class \w*Finding\b", text, re.M)]
    exit_codes = [p for p, text in sources.items() if re.search(r"^\s*def exit_code\b", text, re.M)]
    assert finding_classes == ["auditor/findings.py"]
    assert exit_codes == ["auditor/findings.py"]


_PATTERN_CALLS = {"search", "match", "fullmatch", "findall", "finditer", "sub", "subn"}
_SUBSTRING_CALLS = {"startswith", "endswith", "find", "rfind", "index", "count"}
# A GitHub API response's message (rate limits) is not a finding's.
_NOT_FINDING_MESSAGES = {"auditor/review/github.py"}


def _reads_message(expr: ast.AST) -> bool:
    """`x.message`, `x["message"]` or `x.get("message")` somewhere in `expr`."""
    for node in ast.walk(expr):
        if isinstance(node, ast.Attribute) and node.attr == "message":
            return True
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and node.slice.value == "message":
            return True
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value == "message"):
            return True
    return False


def message_tests(source: str) -> list[int]:
    """Lines where a regex, an `in` test or a substring method reads a message, directly or
    through a name a function assigned from one."""
    hits = []
    for function in ast.walk(ast.parse(source)):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        names = {target.id for node in ast.walk(function) if isinstance(node, ast.Assign) and _reads_message(node.value)
                 for target in node.targets if isinstance(target, ast.Name)}

        def carries(expr: ast.AST) -> bool:
            return _reads_message(expr) or any(isinstance(n, ast.Name) and n.id in names for n in ast.walk(expr))

        for node in ast.walk(function):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if node.func.attr in _PATTERN_CALLS and any(carries(arg) for arg in node.args):
                    hits.append(node.lineno)
                elif node.func.attr in _SUBSTRING_CALLS and carries(node.func.value):
                    hits.append(node.lineno)
            elif isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops):
                if any(carries(side) for side in node.comparators):
                    hits.append(node.lineno)
    return sorted(set(hits))


def test_no_regex_over_finding_messages():
    """Nothing decides or renders by searching a finding's message."""
    found = {path: lines for path, text in _package_sources().items()
             if path not in _NOT_FINDING_MESSAGES and (lines := message_tests(text))}
    assert found == {}


@pytest.mark.parametrize("code", [
    "def f(raw):\n    message = str(raw.get('message', ''))\n    return bool(_PACKED.search(message))\n",
    "def f(finding):\n    return re.match(r'in (\\w+)', finding.message)\n",
    "def f(raw, why):\n    message = raw['message']\n    return why if why not in message else ''\n",
    "def f(finding):\n    return finding.message.startswith('in ')\n",
])
def test_the_message_scan_sees_each_shape(code):
    """The shapes the scan must see, e.g. review's old packed-file test (`_PACKED.search(message)`)."""
    assert message_tests(code) != []


@pytest.mark.parametrize("kind,message,promoted", [
    ("flag-off", "TTT pass [dormant: `h.ttt` is false (TTT_ENABLED=0 default)]", True),
    ("flag-off", "TTT pass, reworded without the words the old code searched for", True),
    ("not-called", "TTT pass [dormant: `x` is false (y)]", False),
    ("early-return", "TTT pass", False),
])
def test_declared_feature_promotion_reads_the_typed_dormancy(tmp_path, kind, message, promoted):
    """With no run command or log, a feature submission.json names counts as run when its
    code is behind a setting that is off: decided from Dormancy.kind, whatever the message says."""
    from auditor.classify.evidence import promote_declared_features
    from auditor.findings import Dormancy, Finding
    from auditor.submission import load_submission

    folder = tmp_path / "rec"
    folder.mkdir()
    (folder / "train_gpt.py").write_text("print(1)\n")
    (folder / "submission.json").write_text(json.dumps({"name": "TTT record", "val_bpb": 1.1}))
    finding = Finding("ttt-train-before-score", "dormant", message, path="train_gpt.py", line=3, end_line=3,
                      dormancy=Dormancy(kind, "why"))
    findings = {("ttt-train-before-score", 3): finding}
    promote_declared_features(load_submission(folder), findings)
    after = findings[("ttt-train-before-score", 3)]
    assert (after.severity, after.counted_as_run is not None) == (("violation", True) if promoted else ("dormant", False))


def test_json_output_is_valid_whatever_the_results_hold():
    from auditor.claims.checks import ClaimsResult
    from auditor.report.json import results_json

    result = ClaimsResult("rec", measured={"mean_val_bpb": float("nan"), "inf": float("inf")})
    result.add("val_bpb", "warning", "a log says nan", claimed=float("nan"), observed=10**5000)
    text = results_json([result])
    data = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in the JSON"))
    [entry] = data["results"]
    assert entry["measured"] == {"mean_val_bpb": "nan", "inf": "inf"}
    assert entry["findings"][0]["claimed"] == "nan"
    assert entry["findings"][0]["observed"] == "a number too long to print"


def test_claims_text_escapes_control_characters(tmp_path):
    from auditor.report.text import claims_text

    folder = tmp_path / "rec\x1b[31m"
    folder.mkdir()
    (folder / "submission.json").write_text(json.dumps({"val_bpb": "1.2\x1b]0;title\x07"}))
    text = claims_text([check_claims(folder)])
    assert "\x1b" not in text and "\x07" not in text and "rec\\x1b[31m" in text


def test_a_failed_smoke_build_is_a_finding(tmp_path):
    """Smoke's result is built on Finding too: a build that fails is one violation (exit 1),
    an unreadable path none (exit 2)."""
    from auditor.findings import Finding, exit_code
    from auditor.smoke import smoke_path
    from auditor.smoke.batch import smoke_paths

    broken = smoke_path(ROOT / "fixtures" / "smoke" / "broken_syntax" / "train_gpt.py")
    [finding] = broken.findings
    assert isinstance(finding, Finding) and (finding.check, finding.severity) == ("smoke-build", "violation")
    assert finding.message.startswith("syntax: ") and broken.to_json()["findings"][0]["check"] == "smoke-build"
    [missing] = smoke_paths([tmp_path / "missing"])
    assert missing.findings == [] and exit_code([missing]) == 2 and exit_code([broken, missing]) == 2
    assert exit_code([broken]) == 1


def test_a_packed_files_findings_carry_the_packing_typed():
    """Lines of a packed script count lines of its decoded source: the finding says so in a
    typed field (in JSON only when set, so classify's JSON only grows), not only in its message."""
    from auditor.findings import Finding

    [packed, plain] = classify_paths([ROOT / "fixtures" / "classify" / "packed_ttt_pre_eval.py",
                                      ROOT / "fixtures" / "classify" / "ttt_pre_eval.py"], use_cache=False)
    assert packed.findings and {f.packing for f in packed.findings} == {"lzma+b85"}
    assert plain.findings and {f.packing for f in plain.findings} == {None}
    assert all(f.to_json()["packing"] == "lzma+b85" for f in packed.findings)
    assert all("packing" not in f.to_json() for f in plain.findings)
    assert [Finding.from_json(f.to_json()) for f in packed.findings + plain.findings] == packed.findings + plain.findings
