"""Hostile inputs to classify and claims (issue 12): each is a clean error or a verdict, in
bounded time and memory, never a hang, a crash of the batch, a traceback or a false clean.

Fixtures are generated here in tmp_path (FIFOs and device links cannot live in git).
Anything that could hang on a regression runs in a subprocess with a timeout.
"""

from __future__ import annotations

import base64
import faulthandler
import json
import lzma
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auditor.classify.cache import cache_key, cache_dir
from auditor.classify.runner import classify_paths
from auditor.cli import app
from auditor.submission import load_submission

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "fixtures" / "classify"
ILLEGAL = (FIX / "ttt_pre_eval.py").read_text()
runner = CliRunner()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDITOR_CACHE_DIR", str(tmp_path / "cache"))


def _auditor(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """The real CLI in a process of its own, with a deadline (a hang fails, not blocks)."""
    env = dict(os.environ, AUDITOR_CACHE_DIR=os.environ["AUDITOR_CACHE_DIR"])
    return subprocess.run([sys.executable, "-m", "auditor.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def _record(folder: Path, script: str = ILLEGAL, readme: str = "# record\n") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train_gpt.py").write_text(script)
    (folder / "README.md").write_text(readme)
    return folder


def _b85_lzma(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return base64.b85encode(lzma.compress(data)).decode()


def _packed(text: str, layers: int) -> str:
    for _ in range(layers):
        text = f'import lzma, base64\nexec(lzma.decompress(base64.b85decode("{_b85_lzma(text)}")))\n'
    return text


# --- files that are not files ---------------------------------------------------------


def test_fifo_sibling_does_not_hang(tmp_path):
    record = _record(tmp_path / "rec", "import helper\n" + ILLEGAL)
    os.mkfifo(record / "helper.py")
    os.mkfifo(record / "train.log")
    out = _auditor("classify", "-f", "json", str(record), timeout=60)
    result = json.loads(out.stdout)["results"][0]
    assert result["verdict"] == "flag", out.stdout + out.stderr
    assert out.returncode == 1


def test_dev_zero_sibling_is_not_read(tmp_path):
    record = _record(tmp_path / "rec", "import helper\n" + ILLEGAL)
    (record / "helper.py").symlink_to("/dev/zero")
    (record / "seed1.log").symlink_to("/dev/zero")
    started = time.monotonic()
    out = _auditor("classify", "-f", "json", str(record), timeout=60)
    assert json.loads(out.stdout)["results"][0]["verdict"] == "flag", out.stderr
    assert time.monotonic() - started < 30


def test_link_out_of_the_folder_is_refused(tmp_path):
    outside = tmp_path / "secret.py"
    outside.write_text(ILLEGAL)
    folder = tmp_path / "rec"
    folder.mkdir()
    (folder / "train_gpt.py").symlink_to(outside)
    out = _auditor("classify", "-f", "json", str(folder))
    result = json.loads(out.stdout)["results"][0]
    assert result["verdict"] == "error" and "leads out of its folder" in result["error"]
    assert out.returncode == 2


# --- code that crashes parsers ----------------------------------------------------------


def test_deep_nesting_is_an_error_not_a_segfault(tmp_path):
    deep = tmp_path / "deep.py"
    deep.write_text("x = " + "(" * 5000 + "1" + ")" * 5000 + "\n")
    out = _auditor("classify", "-f", "json", str(deep), str(FIX / "ttt_pre_eval.py"))
    results = json.loads(out.stdout)["results"]
    assert [r["verdict"] for r in results] == ["error", "flag"], out.stderr
    assert "nested too deeply" in results[0]["error"]
    assert out.returncode == 2


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_crashing_worker_costs_one_verdict(tmp_path, monkeypatch, jobs):
    """A worker killed by SIGSEGV (as libcst dies on hostile code) loses only its own file."""
    import auditor.classify.runner as runner_module

    real = runner_module.classify_one
    doomed = str(FIX / "slot_scored.py")

    def crash_on_doomed(path, use_cache=True):
        if str(path) == doomed:
            faulthandler.disable()  # pytest's handler would print the worker's stack
            os.kill(os.getpid(), signal.SIGSEGV)
        return real(path, use_cache)

    monkeypatch.setattr(runner_module, "classify_one", crash_on_doomed)  # workers are forked: they see it
    paths = [str(FIX / "ttt_pre_eval.py"), doomed, str(FIX / "clean_baseline.py")]
    results = classify_paths(paths, jobs=jobs, use_cache=False)
    assert [r.verdict for r in results] == ["flag", "error", "clean"]
    assert "SIGSEGV" in results[1].error and results[1].error_kind == "internal"


def test_a_hanging_worker_costs_one_verdict(monkeypatch):
    import auditor.classify.runner as runner_module

    real = runner_module.classify_one
    stuck = str(FIX / "slot_scored.py")

    def hang_on_stuck(path, use_cache=True):
        if str(path) == stuck:
            time.sleep(600)
        return real(path, use_cache)

    monkeypatch.setattr(runner_module, "classify_one", hang_on_stuck)
    started = time.monotonic()
    results = classify_paths([stuck, str(FIX / "ttt_pre_eval.py")], jobs=2, use_cache=False, timeout=5)
    assert [r.verdict for r in results] == ["error", "flag"]
    assert "took over 5 s" in results[0].error and time.monotonic() - started < 30


# --- quadratic text ------------------------------------------------------------------------


def test_megabyte_readme_line_is_linear(tmp_path):
    record = _record(tmp_path / "rec", readme="# run\n\n```bash\npython " + "a" * 1_000_000 + "\n```\n")
    (record / "train.log").write_text("python " + "b" * 1_000_000 + "\nval_bpb: 1.2\n")
    (record / "submission.json").write_text('{"val_bpb": 1.2}')
    for command in (["classify", "--no-cache"], ["claims"]):
        started = time.monotonic()
        out = _auditor(*command, "-f", "json", str(record), timeout=60)
        assert json.loads(out.stdout)["results"], out.stderr
        assert time.monotonic() - started < 20, command
    started = time.monotonic()
    submission = load_submission(record)  # what smoke reads its run configuration from
    assert submission.script.name == "train_gpt.py" and time.monotonic() - started < 5


# --- packing ---------------------------------------------------------------------------------


def test_lzma_bomb_stops_at_the_limit(tmp_path):
    bomb = "# padding\n" * 2_000_000  # 20 MB of source in a few KB
    stub = tmp_path / "train_gpt.py"
    stub.write_text(_packed(bomb, 1))
    assert stub.stat().st_size < 20_000
    started = time.monotonic()
    out = _auditor("classify", "--no-cache", "-f", "json", str(stub), timeout=60)
    result = json.loads(out.stdout)["results"][0]
    assert result["verdict"] == "error" and "limit" in result["error"], result
    assert time.monotonic() - started < 30


def test_five_layers_of_packing_are_unpacked(tmp_path):
    stub = tmp_path / "train_gpt.py"
    stub.write_text(_packed(ILLEGAL, 5))
    out = _auditor("classify", "--no-cache", "-f", "json", str(stub))
    result = json.loads(out.stdout)["results"][0]
    assert result["verdict"] == "flag", result
    assert out.returncode == 1


def test_too_deep_packing_is_an_error(tmp_path):
    stub = tmp_path / "train_gpt.py"
    stub.write_text(_packed(ILLEGAL, 10))
    out = _auditor("classify", "--no-cache", "-f", "json", str(stub))
    result = json.loads(out.stdout)["results"][0]
    assert result["verdict"] == "error" and "layers deep" in result["error"]


@pytest.mark.parametrize("spelling", [
    'import lzma, base64\nrun = exec\nrun(lzma.decompress(base64.b85decode("{blob}")))\n',
    'import lzma, base64\nif True:\n    exec(lzma.decompress(base64.b85decode("{blob}")))\n',
    'import lzma, base64, builtins\nbuiltins.exec(lzma.decompress(base64.b85decode("{blob}")))\n',
    'import lzma, base64\nfrom builtins import exec as go\ngo(lzma.decompress(base64.b85decode("{blob}")))\n',
    'import lzma, base64\ndef main():\n    exec(lzma.decompress(base64.b85decode("{blob}")))\nmain()\n',
])
def test_aliased_exec_is_unpacked(tmp_path, spelling):
    stub = tmp_path / "train_gpt.py"
    stub.write_text(spelling.replace("{blob}", _b85_lzma(ILLEGAL)))
    out = _auditor("classify", "--no-cache", "-f", "json", str(stub))
    assert json.loads(out.stdout)["results"][0]["verdict"] == "flag", out.stdout


@pytest.mark.parametrize("payload", [os.urandom(4096), b"\xff\xfe not text \x00" * 100])
def test_garbage_payload_is_an_error(tmp_path, payload):
    stub = tmp_path / "train_gpt.py"
    stub.write_text(f'import lzma, base64\nexec(lzma.decompress(base64.b85decode("{_b85_lzma(payload)}")))\n')
    out = _auditor("classify", "--no-cache", "-f", "json", str(stub))
    result = json.loads(out.stdout)["results"][0]
    assert result["verdict"] == "error" and "cannot be unpacked" in result["error"], result
    assert out.returncode == 2


# --- claims ------------------------------------------------------------------------------------


def test_huge_integer_in_submission_json(tmp_path):
    record = _record(tmp_path / "rec")
    (record / "submission.json").write_text('{"val_bpb": 1.2, "bytes_total": ' + "9" * 5000 + "}")
    (record / "train.log").write_text("step:1/1 val_loss:2.0 val_bpb:1.2\nfinal val_loss:2.0 val_bpb:1.2\n")
    out = _auditor("claims", "-f", "json", str(record))
    assert "Traceback" not in out.stderr
    result = json.loads(out.stdout)["results"][0]
    assert result["error"] is None
    assert any("5,000 digits" in f["message"] for f in result["findings"]), result["findings"]
    assert out.returncode == 0
    classified = _auditor("classify", "--no-cache", "-f", "json", str(record))
    assert json.loads(classified.stdout)["results"][0]["verdict"] == "flag"


def test_internal_errors_exit_3_not_1(tmp_path, monkeypatch):
    import auditor.claims.checks as checks
    import auditor.classify.analyze as analyze

    def broken(*args, **kwargs):
        raise KeyError("a bug of ours")

    monkeypatch.setattr(checks, "_check_scores", broken)
    out = runner.invoke(app, ["claims", "-f", "json", str(ROOT / "fixtures" / "claims" / "clean")])
    assert out.exit_code == 3 and json.loads(out.stdout)["results"][0]["error_kind"] == "internal"
    monkeypatch.setattr(analyze, "run_rules", broken)
    out = runner.invoke(app, ["classify", "--no-cache", str(FIX / "ttt_pre_eval.py")])
    assert out.exit_code == 3 and "internal error" in out.stdout


# --- output --------------------------------------------------------------------------------------


def test_escape_sequences_are_escaped_in_text(tmp_path):
    script = tmp_path / "train_gpt.py"
    script.write_text(ILLEGAL.replace("loss.backward()", "loss.backward()  # \x1b[2J\x1b]0;owned\x07 \u202e"))
    out = runner.invoke(app, ["classify", "--no-cache", str(script)])
    assert out.exit_code == 1
    assert "\x1b" not in out.stdout and "\x07" not in out.stdout and "\u202e" not in out.stdout
    assert "\\x1b[2J" in out.stdout
    as_json = runner.invoke(app, ["classify", "--no-cache", "-f", "json", str(script)])
    assert "\x1b[2J" in json.loads(as_json.stdout)["results"][0]["findings"][0]["evidence"]


# --- the cache -------------------------------------------------------------------------------------


@pytest.mark.parametrize("planted", [
    "{}", "null", '"clean"', "[1, 2", '{"verdict": "clean", "path": "x", "sha256": "", "findings": []}',
    '{"schema": 2, "key": "another key", "result": {"verdict": "clean", "path": "x", "sha256": "", "findings": []}}',
])
def test_poisoned_cache_entries_are_recomputed(tmp_path, planted):
    script = tmp_path / "train_gpt.py"
    script.write_text(ILLEGAL)
    key = cache_key(script, load_submission(script))
    cache_dir().mkdir(parents=True)
    (cache_dir() / f"{key}.json").write_text(planted)
    assert classify_paths([script])[0].verdict == "flag"
    entry = json.loads((cache_dir() / f"{key}.json").read_text())
    assert entry["key"] == key and entry["result"]["verdict"] == "flag"  # rewritten with the real result


def test_cache_entry_whose_verdict_contradicts_its_findings_is_recomputed(tmp_path):
    script = tmp_path / "train_gpt.py"
    script.write_text(ILLEGAL)
    assert classify_paths([script])[0].verdict == "flag"
    [entry] = cache_dir().glob("*.json")
    data = json.loads(entry.read_text())
    data["result"]["verdict"] = "clean"  # findings still hold the violation
    entry.write_text(json.dumps(data))
    assert classify_paths([script])[0].verdict == "flag"


@pytest.mark.parametrize("change", ["submission.json", "README.md", "train.log"])
def test_cache_key_follows_every_file_the_verdict_reads(tmp_path, change):
    record = _record(tmp_path / "rec", textwrap.dedent("""\
        import os
        if os.environ.get("X", "0") == "1":
            pass
        """))
    (record / "submission.json").write_text('{"val_bpb": 1.2}')
    (record / "train.log").write_text("val_bpb: 1.2\n")
    before = cache_key(record, load_submission(record))
    (record / change).write_text((record / change).read_text() + "\n ")
    assert cache_key(record, load_submission(record)) != before
