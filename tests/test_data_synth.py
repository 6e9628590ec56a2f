"""`auditor data synth`: shards in the challenge's format and a real SentencePiece tokenizer,
made from local text only."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auditor.cli import app
from auditor.data.synth import BOS_ID, SynthError, read_shard, synthesize

spm = pytest.importorskip("sentencepiece")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("synth"), train_tokens=30_000, val_tokens=5_000)


def _documents(tokens) -> list[tuple[int, ...]]:
    docs, current = [], None
    for token in tokens:
        if token == BOS_ID:
            if current:
                docs.append(tuple(current))
            current = []
        elif current is not None:
            current.append(token)
    if current:
        docs.append(tuple(current))
    return docs


def test_shards_have_the_challenge_header_and_exact_counts(made):
    for path, count in ((made.train_files[0], 30_000), (made.val_files[0], 5_000)):
        data = Path(path).read_bytes()
        magic, version, tokens = struct.unpack("<3i", data[:12])
        assert (magic, version, tokens) == (20240520, 1, count)
        assert data[12:1024] == bytes(1012)  # the rest of the 256 x int32 header is zero
        assert len(data) == 1024 + 2 * count
    assert Path(made.train_files[0]).name == "fineweb_train_000000.bin"
    assert Path(made.val_files[0]).name == "fineweb_val_000000.bin"


def test_tokenizer_is_a_1024_piece_bpe_with_the_challenge_ids(made):
    sp = spm.SentencePieceProcessor(model_file=made.tokenizer_path)
    assert sp.vocab_size() == 1024
    assert (sp.pad_id(), sp.bos_id(), sp.eos_id(), sp.unk_id()) == (0, 1, 2, 3)
    assert sum(sp.is_byte(i) for i in range(1024)) == 256  # byte fallback
    val = read_shard(Path(made.val_files[0]))
    assert val[0] == BOS_ID and max(val) < 1024
    text = sp.decode(_documents(val)[0][:50])
    assert len(text) > 50 and text.isprintable()


def test_validation_documents_are_not_in_training(made):
    train_docs = set(_documents(read_shard(Path(made.train_files[0]))))
    val_docs = _documents(read_shard(Path(made.val_files[0])))
    assert len(val_docs) >= 2
    assert all(doc not in train_docs for doc in val_docs[:-1])  # the last one is cut at the count
    manifest = json.loads((Path(made.out_dir) / "manifest.json").read_text())
    assert manifest["val_tokens"] == 5_000 and manifest["train_tokens"] == 30_000


def test_read_shard_rejects_a_bad_header(tmp_path):
    bad = tmp_path / "fineweb_val_000000.bin"
    bad.write_bytes(struct.pack("<3i", 1, 1, 0) + bytes(1012))
    with pytest.raises(SynthError, match="bad header"):
        read_shard(bad)


def test_cli_reports_bad_input_without_a_traceback(tmp_path):
    result = CliRunner().invoke(app, ["data", "synth", str(tmp_path / "out"), "--vocab", "100"])
    assert result.exit_code == 2
    assert "--vocab must be between" in result.output
    assert "Traceback" not in result.output


def test_cli_writes_a_dataset(tmp_path):
    result = CliRunner().invoke(app, ["data", "synth", str(tmp_path), "--train-tokens", "4000", "--val-tokens",
                                      "1000", "-f", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["train_tokens"] == 4000 and report["vocab_size"] == 1024
    assert (tmp_path / "fineweb_1024_bpe.model").is_file()


def test_cli_module_imports_no_heavy_packages():
    code = ("import sys, auditor.cli; heavy = {'torch', 'sentencepiece', 'auditor.data.synth'} & set(sys.modules); "
            "print(sorted(heavy))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr
