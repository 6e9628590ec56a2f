"""Dataset checks before a rerun: shards, the validation split, the vocabulary, val-in-train.

The challenge's shards are a 256 x int32 little-endian header (magic 20240520, version 1,
token count) followed by that many uint16 tokens. A rerun is only evidence when it trains
on the training split and scores the validation split (`fineweb_val_*.bin`) with the
tokenizer the script expects, and when no validation document was copied into the
training shards (Issue #2127: a data-prep default put most validation documents there,
unnoticed through 15 PRs). The last check hashes fixed-length token windows of the
validation split and looks every training position up in that set (numpy, chunked, so
memory stays bounded whatever the size of the dataset).
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
TRAIN_GLOB = "fineweb_train_*.bin"
VAL_GLOB = "fineweb_val_*.bin"

FINGERPRINT_WINDOW = 32  # tokens; a power of two (four uint16 tokens pack into one uint64 word)
MAX_VAL_WINDOWS = 200_000  # the val stride grows so that at most this many windows are hashed
LEAK_FRACTION = 0.01  # above this share of val windows found in train, the dataset fails
_CHUNK_TOKENS = 1 << 22  # train tokens hashed at once (about 100 MB of temporaries)
_FILTER_BITS = 24  # a 16 MB membership table in front of the exact lookup
# Odd multipliers of the pairwise combination (one per level) and of the final mix.
_HASH_CONSTANTS = np.array(
    [0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93,
     0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53, 0x94D049BB133111EB, 0xBF58476D1CE4E5B9],
    dtype=np.uint64,
)


class DatasetError(Exception):
    """A dataset that cannot be used for a rerun; the message says why."""


@dataclass
class DataCheck:
    name: str  # "shards", "val-split", "vocab", "val-in-train"
    ok: bool
    message: str
    details: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"check": self.name, "ok": self.ok, "message": self.message, "details": dict(self.details)}


@dataclass
class DatasetReport:
    data_dir: str | None
    tokenizer: str | None
    train_shards: int = 0
    val_shards: int = 0
    train_tokens: int = 0
    val_tokens: int = 0
    checks: list[DataCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def failures(self) -> list[DataCheck]:
        return [check for check in self.checks if not check.ok]

    def to_json(self) -> dict:
        return {
            "data_dir": self.data_dir,
            "tokenizer": self.tokenizer,
            "ok": self.ok,
            "train_shards": self.train_shards,
            "val_shards": self.val_shards,
            "train_tokens": self.train_tokens,
            "val_tokens": self.val_tokens,
            "checks": [check.to_json() for check in self.checks],
        }


# --- shards -------------------------------------------------------------------------


def write_shard(path: Path | str, tokens) -> Path:
    """Write tokens as a challenge shard (header + uint16 tokens); used by tests and fixtures."""
    path = Path(path)
    array = np.asarray(tokens)
    if array.size and (array.min() < 0 or array.max() > 0xFFFF):
        raise ValueError("shard tokens must fit in uint16")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = SHARD_MAGIC, SHARD_VERSION, array.size
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(header.tobytes())
        handle.write(array.astype("<u2").tobytes())
    return path


def shard_token_count(path: Path) -> int:
    """The header's token count, after checking magic, version and file size."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            raw = handle.read(HEADER_BYTES)
    except OSError as exc:
        raise DatasetError(f"{path.name}: cannot be read ({exc.strerror})") from None
    if len(raw) < HEADER_BYTES:
        raise DatasetError(f"{path.name}: {size} bytes, shorter than the {HEADER_BYTES}-byte header")
    header = np.frombuffer(raw, dtype="<i4")
    if int(header[0]) != SHARD_MAGIC:
        raise DatasetError(f"{path.name}: magic {int(header[0])}, expected {SHARD_MAGIC}")
    if int(header[1]) != SHARD_VERSION:
        raise DatasetError(f"{path.name}: version {int(header[1])}, expected {SHARD_VERSION}")
    count = int(header[2])
    if count < 0:
        raise DatasetError(f"{path.name}: negative token count {count}")
    expected = HEADER_BYTES + 2 * count
    if size != expected:
        raise DatasetError(
            f"{path.name}: {size} bytes, but the header's {count} tokens need {expected} "
            f"({HEADER_BYTES} header + 2 per token)"
        )
    return count


def shard_tokens(path: Path) -> np.ndarray:
    """The shard's tokens as a read-only uint16 memmap (validated first)."""
    count = shard_token_count(path)
    if count == 0:
        return np.zeros(0, dtype=np.uint16)
    return np.memmap(path, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(count,))


def find_shards(data_dir: Path) -> tuple[list[Path], list[Path]]:
    return sorted(data_dir.glob(TRAIN_GLOB)), sorted(data_dir.glob(VAL_GLOB))


def resolve_data_dir(path: Path | str, dataset_name: str | None = None) -> Path:
    """The folder that holds the shards: `path` itself, or the one dataset below it.

    `--data` may name the shard folder (`.../datasets/fineweb10B_sp1024`) or a data root
    (`data/` with `datasets/<name>/`); `dataset_name` (the last part of the script's
    DATA_PATH) picks among several datasets.
    """
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise DatasetError(f"data folder {path} does not exist")
    if any(path.glob("fineweb_*.bin")):
        return path
    candidates = sorted({p.parent for p in path.glob("**/fineweb_*.bin") if len(p.relative_to(path).parts) <= 3})
    if not candidates:
        raise DatasetError(f"no shards (fineweb_train_*.bin, fineweb_val_*.bin) in {path} or below it")
    if len(candidates) == 1:
        return candidates[0]
    if dataset_name:
        named = [c for c in candidates if c.name == dataset_name]
        if len(named) == 1:
            return named[0]
    names = ", ".join(str(c.relative_to(path)) for c in candidates)
    raise DatasetError(f"several datasets under {path} ({names}); pass the one to use as --data")


def find_tokenizer(data_dir: Path, tokenizer_name: str | None = None) -> Path | None:
    """A SentencePiece .model next to the shards or in the data root's `tokenizers/`."""
    places = [data_dir, data_dir.parent, data_dir.parent.parent / "tokenizers", data_dir.parent / "tokenizers",
              data_dir / "tokenizers"]
    found: list[Path] = []
    for place in places:
        if place.is_dir():
            found.extend(sorted(place.glob("*.model")))
    if tokenizer_name:
        named = [p for p in found if p.name == tokenizer_name]
        if named:
            return named[0]
    return found[0] if len(found) == 1 else None


# --- tokenizer ----------------------------------------------------------------------


def tokenizer_vocab_size(path: Path) -> int:
    """Pieces in a SentencePiece model: with sentencepiece when installed, else the protobuf."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"tokenizer {path} cannot be read ({exc.strerror})") from None
    try:
        import sentencepiece

        processor = sentencepiece.SentencePieceProcessor()
        processor.LoadFromSerializedProto(data)
        return int(processor.get_piece_size())
    except ImportError:
        pass
    except Exception as exc:  # sentencepiece raises RuntimeError/OSError on a bad model
        raise DatasetError(f"tokenizer {path.name} is not a SentencePiece model ({exc})") from None
    return protobuf_piece_count(data, path.name)


def protobuf_piece_count(data: bytes, name: str = "tokenizer") -> int:
    """Count ModelProto.pieces (field 1, length-delimited) without a protobuf library."""
    position, count = 0, 0
    while position < len(data):
        key, position = _varint(data, position, name)
        field_number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, position = _varint(data, position, name)
        elif wire_type == 1:
            position += 8
        elif wire_type == 2:
            length, position = _varint(data, position, name)
            position += length
            if field_number == 1:
                count += 1
        elif wire_type == 5:
            position += 4
        else:
            raise DatasetError(f"{name} is not a SentencePiece model (wire type {wire_type})")
        if position > len(data):
            raise DatasetError(f"{name} is truncated")
    if count == 0:
        raise DatasetError(f"{name} holds no SentencePiece pieces")
    return count


def _varint(data: bytes, position: int, name: str) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if position >= len(data) or shift > 63:
            raise DatasetError(f"{name} is not a SentencePiece model (bad varint)")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7


# --- val-in-train fingerprints ------------------------------------------------------


@dataclass
class Overlap:
    window: int
    val_stride: int
    val_windows: int  # distinct val windows hashed
    matched_windows: int  # of those, found somewhere in the training shards
    train_tokens_scanned: int
    examples: list[dict] = field(default_factory=list)  # {"val_offset", "train_shard", "train_offset"}
    # Documents (split at BOS): a document counts as copied when half or more of its sampled
    # windows occur in train; documents with fewer than 2 sampled windows are not judged.
    documents: int = 0
    judged_documents: int = 0
    copied_documents: int = 0
    copied_examples: list[int] = field(default_factory=list)  # val token offsets of copied documents

    @property
    def fraction(self) -> float:
        return self.matched_windows / self.val_windows if self.val_windows else 0.0

    @property
    def document_fraction(self) -> float | None:
        return self.copied_documents / self.judged_documents if self.judged_documents else None

    def to_json(self) -> dict:
        return {
            "window": self.window,
            "val_stride": self.val_stride,
            "val_windows": self.val_windows,
            "matched_windows": self.matched_windows,
            "fraction": round(self.fraction, 6),
            "documents": self.documents,
            "judged_documents": self.judged_documents,
            "copied_documents": self.copied_documents,
            "copied_document_offsets": list(self.copied_examples),
            "train_tokens_scanned": self.train_tokens_scanned,
            "examples": list(self.examples),
        }


def window_hashes(tokens: np.ndarray, window: int = FINGERPRINT_WINDOW) -> np.ndarray:
    """A 64-bit hash of every `window`-token window (position i covers tokens[i:i+window]).

    Four uint16 tokens pack into one uint64 word; halves are then combined pairwise
    (h = left * C + right, mod 2^64), so a 32-token window costs three combining passes.
    """
    if window < 4 or window & (window - 1):
        raise ValueError("window must be a power of two, at least 4")
    if len(tokens) < window:
        return np.zeros(0, dtype=np.uint64)
    wide = np.asarray(tokens, dtype=np.uint64)
    span = len(wide) - 3
    hashes = wide[:span].copy()
    for shift in (1, 2, 3):
        hashes |= wide[shift : shift + span] << np.uint64(16 * shift)
    del wide
    covered, level = 4, 0
    with np.errstate(over="ignore"):
        while covered < window:
            combined = hashes[:-covered] * _HASH_CONSTANTS[level]
            combined += hashes[covered:]
            hashes, covered, level = combined, covered * 2, level + 1
        # Spread the bits so that the top bits index the membership table well.
        hashes ^= hashes >> np.uint64(29)
        hashes *= _HASH_CONSTANTS[-1]
        hashes ^= hashes >> np.uint64(32)
    return hashes


def find_val_in_train(
    train_paths: list[Path],
    val_paths: list[Path],
    window: int = FINGERPRINT_WINDOW,
    max_val_windows: int = MAX_VAL_WINDOWS,
    max_examples: int = 5,
    progress=None,
    threads: int | None = None,
    bos_id: int | None = 1,
) -> Overlap:
    """How many sampled validation windows (and documents) occur verbatim in the training shards."""
    val_hash_parts, val_offsets, doc_starts = [], [], []
    val_total = sum(shard_token_count(p) for p in val_paths)
    stride = max(window, -(-val_total // max(1, max_val_windows)))
    offset = 0
    for path in val_paths:
        tokens = shard_tokens(path)
        hashes = window_hashes(tokens, window)[::stride]
        val_hash_parts.append(hashes)
        val_offsets.append(offset + np.arange(len(hashes), dtype=np.int64) * stride)
        if bos_id is not None:
            doc_starts.append(offset + np.flatnonzero(np.asarray(tokens) == bos_id))
        offset += len(tokens)
    val_hashes = np.concatenate(val_hash_parts) if val_hash_parts else np.zeros(0, np.uint64)
    val_positions = np.concatenate(val_offsets) if val_offsets else np.zeros(0, np.int64)
    order = np.argsort(val_hashes, kind="stable")
    sorted_hashes, sorted_positions = val_hashes[order], val_positions[order]
    unique_hashes, first = np.unique(sorted_hashes, return_index=True)
    unique_positions = sorted_positions[first]
    table = np.zeros(1 << _FILTER_BITS, dtype=bool)
    table[(unique_hashes >> np.uint64(64 - _FILTER_BITS)).astype(np.int64)] = True

    def scan(path: Path) -> tuple[np.ndarray, list[dict], int]:
        """(indices of the val windows found in this shard, first hits, positions scanned)."""
        tokens = shard_tokens(path)
        found_parts, hits, scanned = [], [], 0
        for start in range(0, max(0, len(tokens) - window + 1), _CHUNK_TOKENS):
            chunk = np.asarray(tokens[start : start + _CHUNK_TOKENS + window - 1])
            hashes = window_hashes(chunk, window)
            candidates = np.nonzero(table[(hashes >> np.uint64(64 - _FILTER_BITS)).astype(np.int64)])[0]
            if len(candidates):
                found = hashes[candidates]
                index = np.clip(np.searchsorted(unique_hashes, found), 0, len(unique_hashes) - 1)
                hit = unique_hashes[index] == found
                found_parts.append(np.unique(index[hit]))
                for position, val_index in zip(candidates[hit][: max(0, max_examples - len(hits))], index[hit]):
                    hits.append({"val_offset": int(unique_positions[val_index]), "train_shard": path.name,
                                 "train_offset": int(start + position)})
            scanned += len(hashes)
        indices = np.unique(np.concatenate(found_parts)) if found_parts else np.zeros(0, np.int64)
        return indices, hits, scanned

    matched = np.zeros(len(unique_hashes), dtype=bool)
    examples: list[dict] = []
    scanned = 0
    # numpy releases the GIL in its loops: shards hash in parallel threads (memory: one
    # chunk's temporaries per thread).
    from concurrent.futures import ThreadPoolExecutor

    workers = max(1, min(threads or os.cpu_count() or 1, 8, len(train_paths) or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for path, (indices, hits, count) in zip(train_paths, pool.map(scan, train_paths)):
            matched[indices] = True
            examples.extend(hits[: max(0, max_examples - len(examples))])
            scanned += count
            if progress is not None:
                progress(f"fingerprint: {path.name} scanned, {int(matched.sum())} val windows found so far")
    overlap = Overlap(window, stride, len(unique_hashes), int(matched.sum()), scanned, examples)
    starts = np.concatenate(doc_starts) if doc_starts else np.zeros(0, np.int64)
    if len(starts) >= 2 and len(val_hashes):
        # Every sampled window (duplicates included) to its document and its match.
        window_matched = matched[np.clip(np.searchsorted(unique_hashes, val_hashes), 0, len(unique_hashes) - 1)]
        doc_of = np.searchsorted(starts, val_positions, side="right") - 1
        inside = doc_of >= 0
        counts = np.bincount(doc_of[inside], minlength=len(starts))
        hits = np.bincount(doc_of[inside], weights=window_matched[inside], minlength=len(starts))
        judged = counts >= 2
        copied = judged & (hits >= 0.5 * counts)
        overlap.documents = len(starts)
        overlap.judged_documents = int(judged.sum())
        overlap.copied_documents = int(copied.sum())
        overlap.copied_examples = [int(starts[i]) for i in np.flatnonzero(copied)[:max_examples]]
    return overlap


# --- the whole check ----------------------------------------------------------------


def check_dataset(
    data_dir: Path | str,
    tokenizer: Path | str | None,
    script_vocab_size: int | None,
    fingerprint: bool = True,
    window: int = FINGERPRINT_WINDOW,
    leak_fraction: float = LEAK_FRACTION,
    dataset_name: str | None = None,
    progress=None,
) -> DatasetReport:
    """Every dataset check; a DatasetReport whose failures each carry a clear message."""
    try:
        folder = resolve_data_dir(data_dir, dataset_name)
    except DatasetError as exc:
        report = DatasetReport(data_dir=str(data_dir), tokenizer=str(tokenizer) if tokenizer else None)
        report.checks.append(DataCheck("shards", False, str(exc)))
        return report
    report = DatasetReport(data_dir=str(folder), tokenizer=str(tokenizer) if tokenizer else None)
    train, val = find_shards(folder)
    report.train_shards, report.val_shards = len(train), len(val)

    problems: list[str] = []
    counts: dict[Path, int] = {}
    for path in train + val:
        try:
            counts[path] = shard_token_count(path)
        except DatasetError as exc:
            problems.append(str(exc))
    report.train_tokens = sum(counts.get(p, 0) for p in train)
    report.val_tokens = sum(counts.get(p, 0) for p in val)
    if not train:
        problems.append(f"no training shards ({TRAIN_GLOB}) in {folder}")
    empty = [p.name for p in train + val if counts.get(p) == 0]
    if empty:
        problems.append(f"empty shards: {', '.join(empty[:5])}")
    if problems:
        report.checks.append(DataCheck("shards", False, "; ".join(problems[:10]), {"problems": problems}))
    else:
        report.checks.append(DataCheck(
            "shards", True, f"{len(train)} train shards ({report.train_tokens:,} tokens), "
            f"{len(val)} val shards ({report.val_tokens:,} tokens); headers and sizes consistent"))

    if not val:
        report.checks.append(DataCheck("val-split", False, f"no validation shards ({VAL_GLOB}) in {folder}"))
    elif report.val_tokens < 2:
        report.checks.append(DataCheck("val-split", False, "the validation split holds no tokens"))
    else:
        report.checks.append(DataCheck("val-split", True, f"{len(val)} validation shards present"))

    report.checks.append(_check_vocab(tokenizer, script_vocab_size, [p for p in train + val if counts.get(p)]))

    if not fingerprint:
        report.checks.append(DataCheck("val-in-train", True, "skipped (--no-fingerprint)", {"skipped": True}))
    elif problems or not val:
        report.checks.append(DataCheck("val-in-train", False, "not run: the shards above are unusable"))
    else:
        overlap = find_val_in_train([p for p in train if counts.get(p)], val, window, progress=progress,
                                    bos_id=_bos_id(tokenizer))
        details = overlap.to_json()
        windows = (f"{overlap.matched_windows} of {overlap.val_windows} validation windows ({window} tokens, every "
                   f"{overlap.val_stride}th position) occur in the training shards ({100 * overlap.fraction:.2f}%)")
        limit = f"above {100 * leak_fraction:g}%"
        if overlap.document_fraction is not None:
            # Judged by documents: boilerplate shared by FineWeb documents is not a copy.
            share = (f"{overlap.copied_documents} of {overlap.judged_documents} validation documents "
                     f"({100 * overlap.document_fraction:.1f}%) have half or more of their sampled windows in the "
                     f"training shards")
            leaked = overlap.document_fraction > leak_fraction
            share, windows = (f"{share}, {limit}" if leaked else share), windows
        else:
            share, windows = windows + (f", {limit}" if overlap.fraction > leak_fraction else ""), ""
            leaked = overlap.fraction > leak_fraction
        if leaked:
            first = overlap.examples[0] if overlap.examples else None
            where = (f"; e.g. val token {first['val_offset']} at {first['train_shard']} token {first['train_offset']}"
                     if first else "")
            report.checks.append(DataCheck(
                "val-in-train", False,
                f"validation documents in the training data: {share}" + (f"; {windows}" if windows else "") + where,
                details))
        else:
            report.checks.append(DataCheck("val-in-train", True, share + (f"; {windows}" if windows else ""), details))
    return report


def _bos_id(tokenizer: Path | str | None) -> int:
    """The tokenizer's BOS id (documents start with it in the shards); 1, the challenge's, by default."""
    if tokenizer is not None:
        try:
            import sentencepiece

            processor = sentencepiece.SentencePieceProcessor(model_file=str(tokenizer))
            if processor.bos_id() >= 0:
                return int(processor.bos_id())
        except Exception:  # noqa: BLE001 - no sentencepiece, or not a model: the default
            pass
    return 1


def _check_vocab(tokenizer: Path | str | None, script_vocab_size: int | None, shards: list[Path]) -> DataCheck:
    details: dict = {"script_vocab_size": script_vocab_size}
    if tokenizer is None:
        return DataCheck("vocab", False, "no tokenizer found: pass --tokenizer FILE (a SentencePiece .model)", details)
    path = Path(tokenizer)
    if not path.is_file():
        return DataCheck("vocab", False, f"tokenizer {path} does not exist", details)
    try:
        vocab = tokenizer_vocab_size(path)
    except DatasetError as exc:
        return DataCheck("vocab", False, str(exc), details)
    details["tokenizer_vocab_size"] = vocab
    # The largest token id must fit the vocabulary (the val split in full, a train sample).
    largest = 0
    for shard in shards:
        tokens = shard_tokens(shard)
        sample = tokens if "_val_" in shard.name else tokens[: 1 << 20]
        if len(sample):
            largest = max(largest, int(np.max(sample)))
    details["largest_token_id"] = largest
    if largest >= vocab:
        return DataCheck("vocab", False, f"token id {largest} in the shards, but the tokenizer has {vocab} pieces",
                         details)
    if script_vocab_size is None:
        return DataCheck("vocab", True, f"tokenizer has {vocab} pieces (the script's VOCAB_SIZE is unknown)", details)
    if script_vocab_size != vocab:
        return DataCheck("vocab", False,
                         f"the script's vocabulary is {script_vocab_size} but the tokenizer {path.name} has {vocab} pieces",
                         details)
    return DataCheck("vocab", True, f"tokenizer and script agree: {vocab} pieces", details)


_VOCAB_DEFAULT = re.compile(r"""["']VOCAB_SIZE["']\s*,\s*["']?(\d+)""")
_VOCAB_FIELD = re.compile(r"^\s*vocab_size\s*:\s*int\s*=\s*(\d+)", re.M)


def script_vocab_size(script_text: str, run_env: dict[str, str]) -> int | None:
    """The vocabulary the script runs with: the run configuration's VOCAB_SIZE, else its default."""
    value = run_env.get("VOCAB_SIZE")
    if value is not None and value.strip().isdigit():
        return int(value)
    try:
        import ast

        from auditor.analysis.config import UNKNOWN, Evaluator, build_config
        from auditor.submission import RunConfig

        config = build_config(ast.parse(script_text), RunConfig(env=dict(run_env)))
        setting = config.env_settings.get("VOCAB_SIZE")
        if setting is not None:
            number = config.attr_value(setting.attr) if setting.attr else Evaluator(config).value(setting.expr)
        else:  # a config class whose fields read their environment variables generically
            number = config.attr_value("vocab_size")
        if number is not UNKNOWN and isinstance(number, (int, float)) and not isinstance(number, bool):
            return int(number)
    except (SyntaxError, ImportError, ValueError, RecursionError):
        pass
    match = _VOCAB_DEFAULT.search(script_text) or _VOCAB_FIELD.search(script_text)
    return int(match.group(1)) if match else None


def _stderr_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
