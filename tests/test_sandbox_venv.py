"""The sandbox runs an interpreter that lives in a virtualenv under /tmp (issue 12).

The sandbox mounts its own tmpfs on /tmp, so a venv there (pytest's tmp_path is) was
invisible inside it: reproduce could not start its interpreter, and smoke ran the base
interpreter without the venv's site-packages. Each venv here holds a marker module in its
own site-packages that only that venv can import, so a run that loses the venv fails.
(The venvs are under /tmp as long as pytest's base temp folder is, its default.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import uuid
from pathlib import Path

import pytest

from auditor.reproduce import reproduce
from auditor.reproduce.result import REPRODUCED
from auditor.reproduce.synthetic import write_tiny_dataset
from auditor.sandbox import SandboxSpec, allowlisted_environment, find_bwrap, python_binds, run_sandboxed

REPO = Path(__file__).resolve().parents[1]
LEGIT_SMOKE = REPO / "fixtures" / "smoke" / "legit" / "train_gpt.py"
TINY_RECORD = REPO / "fixtures" / "reproduce" / "tiny_record"
MARKER_IMPORT = "import auditor_venv_marker\n"

pytestmark = pytest.mark.skipif(find_bwrap() is None, reason="no working bubblewrap (bwrap) on this machine")


def make_venv(folder: Path, system_site_packages: bool) -> Path:
    """A venv (no pip: fast, no network) whose own site-packages holds the marker module."""
    options = ["--system-site-packages"] if system_site_packages else []
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", *options, str(folder)], check=True)
    purelib = sysconfig.get_path("purelib", vars={"base": str(folder), "platbase": str(folder)})
    Path(purelib, "auditor_venv_marker.py").write_text(f"VALUE = {str(folder)!r}\nVOCAB = 96\n")
    return folder / "bin" / "python"


@pytest.fixture(scope="module")
def system_venv(tmp_path_factory) -> Path:
    return make_venv(tmp_path_factory.mktemp("venvs") / "system-site", system_site_packages=True)


def test_plain_venv_own_site_packages_under_tmp(tmp_path):
    python = make_venv(tmp_path / "plain", system_site_packages=False)
    for module in (tmp_path / "plain").rglob("auditor_venv_marker.py"):
        module.chmod(0o666)  # writable by anyone: only the read-only bind keeps the sandbox out
    (tmp_path / "beside-the-venv.txt").write_text("not for the sandbox")
    probe = (
        "import os, sys, auditor_venv_marker\n"
        "print('marker', auditor_venv_marker.VALUE)\n"
        "print('prefix', sys.prefix, sys.base_prefix != sys.prefix)\n"
        "print('sibling', os.path.exists(%r))\n"
        "open('/tmp/scratch', 'w').write('ok'); print('tmp writable')\n"
        "try:\n    open(auditor_venv_marker.__file__, 'a')\nexcept OSError as exc:\n    print('venv read-only', exc.errno)\n"
    ) % str(tmp_path / "beside-the-venv.txt")
    env, _dropped = allowlisted_environment({})
    spec = SandboxSpec(argv=[str(python), "-E", "-s", "-c", probe], workdir="/tmp",
                       readonly_binds=python_binds(str(python)), env=env, timeout_s=60, result_channel=False)
    outcome = run_sandboxed(spec, tmp_path / "out.txt", tmp_path / "err.txt")
    out = (tmp_path / "out.txt").read_text()
    assert outcome.returncode == 0, outcome.stderr_tail
    assert outcome.tool_version.startswith("bwrap ")
    assert f"marker {tmp_path / 'plain'}\n" in out
    assert f"prefix {tmp_path / 'plain'} True\n" in out
    assert "sibling False\n" in out  # only the venv is bound, not the folder around it
    assert "tmp writable\n" in out
    assert "venv read-only 30\n" in out  # EROFS


def test_smoke_run_by_a_venv_interpreter_under_tmp(system_venv, tmp_path):
    record = tmp_path / "record"
    record.mkdir()
    # The model's vocabulary comes from the venv's module (a shim for a missing module gives no int).
    source = LEGIT_SMOKE.read_text().replace('"VOCAB_SIZE", 64', '"VOCAB_SIZE", auditor_venv_marker.VOCAB')
    assert "auditor_venv_marker.VOCAB" in source
    (record / "train_gpt.py").write_text(MARKER_IMPORT + source)
    # The reviewer's auditor runs from the venv, torch from the system site-packages.
    run = subprocess.run([str(system_venv), "-c", "from auditor.cli import app; app()", "smoke", str(record),
                          "--format", "json"], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.returncode == 0, run.stdout + run.stderr
    entry = json.loads(run.stdout)["results"][0]
    assert entry["status"] == "ok", entry["error"]
    assert entry["model"]["vocab"] == 96 and entry["shimmed"] == {}
    assert entry["isolation"]["sandbox"].startswith("bwrap ")


def test_reproduce_on_cpu_with_a_venv_interpreter_under_tmp(system_venv, tmp_path):
    data = tmp_path / "data"
    write_tiny_dataset(data)
    record = tmp_path / "tiny"
    shutil.copytree(TINY_RECORD, record)
    script = record / "train_gpt.py"
    original = script.read_text()
    # The same byte count, so the record's claims (code bytes, artifact size) still hold.
    docstring_end = original.index('"""', 3)
    changed = MARKER_IMPORT + original[:docstring_end - len(MARKER_IMPORT)] + original[docstring_end:]
    assert len(changed.encode()) == len(original.encode())
    script.write_text(changed)
    marker = f"VENV_TEST_{uuid.uuid4().hex}"
    result = reproduce(record, gpus=2, seeds=[42], data=data, run_dir=tmp_path / "run", sandbox="bwrap",
                       fingerprint=False, progress=None, python=str(system_venv),
                       env={"OMP_NUM_THREADS": "1", "AUDITOR_TEST_MARKER": marker})
    assert result.verdict == REPRODUCED, result.to_text()
    assert any(reason.startswith("sandbox: bwrap") for reason in result.seeds[0].reasons)
