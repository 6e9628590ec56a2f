"""Synthetic train/val shards in the challenge's format, from text already on this machine.

Nothing is downloaded. The text is the Python standard library's own source (the same for a
given Python version on every machine), with /usr/share/common-licenses as a supplement. A
1024-piece SentencePiece BPE tokenizer is trained on part of the training documents with
the challenge's settings (data/download_hf_docs_and_tokenize.py: byte fallback, split
digits, nmt_nfkc, no dummy prefix, pad/bos/eos/unk = 0/1/2/3), and the documents are written
as the challenge writes FineWeb: each document is BOS + its tokens, validation documents
first in their own shard, uint16 tokens after a 256 x int32 header (magic 20240520,
version 1, token count).

Validation and training documents are disjoint and deduplicated by content. When the
training split asks for more tokens than the text holds, the training documents are
repeated (never the validation ones) and the manifest says so.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import sysconfig
import time
from array import array
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
SHARD_MAX_TOKENS = 100_000_000  # the challenge's shard size
DOC_CHARS = 6_000  # long files are cut into documents of about this size, at line ends
TOKENIZER_TRAIN_CHARS = 1_500_000  # enough for 1024 pieces; keeps training to a second or two
CHARS_PER_TOKEN_GUESS = 2.5  # to decide how much text to read before encoding
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3


class SynthError(Exception):
    """A clear reason why the dataset could not be made."""


@dataclass
class SynthResult:
    out_dir: str
    tokenizer_path: str
    train_files: list[str]
    val_files: list[str]
    vocab_size: int
    train_tokens: int
    val_tokens: int
    train_docs: int
    val_docs: int
    train_repeats: int  # how many times the training documents were cycled
    sources: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict:
        return asdict(self)


def write_shard(path: Path, tokens: array) -> None:
    """Write uint16 tokens with the challenge's 256 x int32 little-endian header."""
    header = array("i", [0] * HEADER_INTS)
    header[0], header[1], header[2] = SHARD_MAGIC, SHARD_VERSION, len(tokens)
    body = array("H", tokens)
    if sys.byteorder != "little":
        header.byteswap()
        body.byteswap()
    with open(path, "wb") as handle:
        handle.write(header.tobytes())
        handle.write(body.tobytes())


def read_shard(path: Path) -> array:
    """The uint16 tokens of a shard, after checking its header and size."""
    data = Path(path).read_bytes()
    header = array("i")
    header.frombytes(data[: HEADER_INTS * 4])
    if sys.byteorder != "little":
        header.byteswap()
    if len(header) != HEADER_INTS or header[0] != SHARD_MAGIC or header[1] != SHARD_VERSION:
        raise SynthError(f"{path}: not a shard (bad header)")
    count = header[2]
    if len(data) != HEADER_INTS * 4 + 2 * count:
        raise SynthError(f"{path}: size does not match the header's token count {count}")
    tokens = array("H")
    tokens.frombytes(data[HEADER_INTS * 4 :])
    if sys.byteorder != "little":
        tokens.byteswap()
    return tokens


def _text_files() -> list[Path]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = [
        path
        for path in sorted(stdlib.rglob("*.py"))
        if "site-packages" not in path.parts and "dist-packages" not in path.parts
    ]
    licenses = Path("/usr/share/common-licenses")
    if licenses.is_dir():
        files += sorted(p for p in licenses.iterdir() if p.is_file())
    return files


def _split_document(text: str) -> Iterator[str]:
    """Cut a long text at line ends into pieces of about DOC_CHARS characters."""
    piece: list[str] = []
    size = 0
    for line in text.splitlines(keepends=True):
        piece.append(line)
        size += len(line)
        if size >= DOC_CHARS:
            yield "".join(piece)
            piece, size = [], 0
    if piece:
        yield "".join(piece)


def local_documents(max_chars: int, seed: int) -> tuple[list[str], list[str]]:
    """Deduplicated documents (shuffled with the seed) totalling at least max_chars when the
    machine has that much text; and the sources they came from."""
    files = _text_files()
    if not files:
        raise SynthError("no local text found (Python standard library sources are missing)")
    random.Random(seed).shuffle(files)
    seen: set[bytes] = set()
    documents: list[str] = []
    sources: list[str] = []
    total = 0
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        used = False
        for doc in _split_document(text):
            doc = doc.strip("\n")
            digest = hashlib.sha256(doc.encode("utf-8")).digest()
            if len(doc) < 200 or digest in seen:
                continue
            seen.add(digest)
            documents.append(doc)
            total += len(doc)
            used = True
        if used:
            sources.append(str(path))
        if total >= max_chars:
            break
    if not documents:
        raise SynthError("no usable local text found")
    return documents, sources


def train_tokenizer(documents: list[str], vocab_size: int, model_prefix: Path):
    """Train a SentencePiece BPE model with the challenge's settings; return the processor."""
    try:
        import sentencepiece as spm
    except ImportError:
        raise SynthError("the sentencepiece package is needed: pip install sentencepiece") from None

    def sentences() -> Iterator[str]:
        budget = TOKENIZER_TRAIN_CHARS
        for doc in documents:
            for line in doc.splitlines():
                if line.strip():
                    yield line
                    budget -= len(line)
            if budget <= 0:
                return

    spm.SentencePieceTrainer.train(
        sentence_iterator=sentences(),
        model_prefix=str(model_prefix),
        model_type="bpe",
        vocab_size=vocab_size,
        character_coverage=0.999,
        byte_fallback=True,
        split_digits=True,
        normalization_rule_name="nmt_nfkc",
        add_dummy_prefix=False,
        pad_id=PAD_ID,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        unk_id=UNK_ID,
        hard_vocab_limit=False,
        num_threads=2,
        minloglevel=2,
    )
    processor = spm.SentencePieceProcessor(model_file=str(model_prefix.with_suffix(".model")))
    if int(processor.vocab_size()) != vocab_size:
        raise SynthError(f"the local text gave only {processor.vocab_size()} pieces, not {vocab_size}")
    return processor


def _encode_documents(processor, documents: list[str]) -> list[list[int]]:
    return processor.encode(documents, out_type=int, num_threads=2)


def _fill(encoded: list[list[int]], wanted: int, cycle: bool) -> tuple[array, int, int]:
    """BOS + tokens of documents in order until `wanted` tokens (the last one cut);
    returns (tokens, documents used, times the list was cycled)."""
    tokens = array("H")
    used = 0
    repeats = 1
    index = 0
    while len(tokens) < wanted:
        if index == len(encoded):
            if not cycle or not encoded:
                break
            index = 0
            repeats += 1
        doc = encoded[index]
        index += 1
        used += 1
        tokens.append(BOS_ID)
        tokens.extend(doc[: wanted - len(tokens)])
    del tokens[wanted:]
    return tokens, used, repeats


def _write_split(out: Path, split: str, tokens: array) -> list[str]:
    paths = []
    for shard_index, start in enumerate(range(0, max(len(tokens), 1), SHARD_MAX_TOKENS)):
        path = out / f"fineweb_{split}_{shard_index:06d}.bin"
        write_shard(path, tokens[start : start + SHARD_MAX_TOKENS])
        paths.append(str(path))
    return paths


def synthesize(
    out: Path,
    vocab_size: int = 1024,
    train_tokens: int = 1_000_000,
    val_tokens: int = 100_000,
    seed: int = 0,
) -> SynthResult:
    """Make OUT/fineweb_{train,val}_000000.bin and OUT/fineweb_{vocab}_bpe.model."""
    if vocab_size < 300 or vocab_size > 65_535:
        raise SynthError(f"--vocab must be between 300 and 65535 (byte fallback needs 259 pieces), got {vocab_size}")
    if train_tokens <= 0 or val_tokens <= 0:
        raise SynthError("--train-tokens and --val-tokens must be positive")
    started = time.monotonic()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in list(out.glob("fineweb_train_*.bin")) + list(out.glob("fineweb_val_*.bin")):
        stale.unlink()

    wanted_chars = int((train_tokens + val_tokens) * CHARS_PER_TOKEN_GUESS) + TOKENIZER_TRAIN_CHARS
    documents, sources = local_documents(wanted_chars, seed)
    # Validation documents come first (as in the challenge's export); the tokenizer is trained
    # on training documents only, so val text is never seen before evaluation.
    val_budget_chars = int(val_tokens * CHARS_PER_TOKEN_GUESS * 1.5)
    val_docs_text: list[str] = []
    chars = 0
    while documents and chars < val_budget_chars and len(documents) > 1:
        doc = documents.pop(0)
        val_docs_text.append(doc)
        chars += len(doc)
    if not documents:
        raise SynthError("not enough local text for both splits")

    model_prefix = out / f"fineweb_{vocab_size}_bpe"
    processor = train_tokenizer(documents, vocab_size, model_prefix)

    val_tokens_array, val_docs_used, _ = _fill(_encode_documents(processor, val_docs_text), val_tokens, cycle=False)
    if len(val_tokens_array) < val_tokens:
        raise SynthError(f"the local text gave only {len(val_tokens_array)} validation tokens, {val_tokens} asked")
    train_array, train_docs_used, repeats = _fill(_encode_documents(processor, documents), train_tokens, cycle=True)

    result = SynthResult(
        out_dir=str(out),
        tokenizer_path=str(model_prefix.with_suffix(".model")),
        train_files=_write_split(out, "train", train_array),
        val_files=_write_split(out, "val", val_tokens_array),
        vocab_size=vocab_size,
        train_tokens=len(train_array),
        val_tokens=len(val_tokens_array),
        train_docs=train_docs_used,
        val_docs=val_docs_used,
        train_repeats=repeats,
        sources=[f"{len(sources)} local text files (Python {sys.version_info.major}.{sys.version_info.minor} "
                 f"standard library, /usr/share/common-licenses)"],
    )
    result.seconds = round(time.monotonic() - started, 3)
    (out / "manifest.json").write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
    return result
