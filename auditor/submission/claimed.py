"""What a submission.json claims, in the many shapes PRs wrote it.

Seen in the corpus: a flat record (`val_bpb`, `val_loss`, `bytes_total`, `bytes_code`),
multi-seed records with `seed_results` as a dict keyed by seed or a list of dicts with a
`seed` field, `mean_val_bpb` / `val_bpb_mean`, `seeds` lists, per-seed `artifact_bytes`,
`train_time_s`, `eval_time_s`, and numbers written as strings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from auditor.submission.numbers import Printed, printed
from auditor.source import SourceError, decode_text, read_bytes_checked

_BPB_KEYS = ("val_bpb", "bpb", "final_val_bpb", "val_bpb_exact", "score", "sliding_val_bpb", "ttt_val_bpb")
_MEAN_BPB_KEYS = ("mean_val_bpb", "val_bpb_mean", "mean_bpb", "avg_val_bpb", "bpb_mean")
_LOSS_KEYS = ("val_loss", "val_loss_nats", "loss", "final_val_loss")
_MEAN_LOSS_KEYS = ("mean_val_loss", "val_loss_mean", "mean_loss")
_BYTES_KEYS = (
    "bytes_total", "artifact_bytes", "artifact_bytes_max", "total_bytes", "artifact_size_bytes",
    "submission_bytes", "total_submission_bytes", "bytes",
)
_CODE_KEYS = ("bytes_code", "code_bytes", "code_size_bytes", "code_size")
_TRAIN_TIME_KEYS = ("train_time_s", "train_time_seconds", "training_time_seconds", "wallclock_seconds", "train_seconds")
_EVAL_TIME_KEYS = ("eval_time_s", "eval_time_seconds", "ttt_eval_time_s", "total_eval_time_s", "eval_seconds")
_SEED_RESULT_KEYS = ("seed_results", "per_seed", "seeds_results", "results", "runs", "per_seed_results")


@dataclass
class SeedClaim:
    seed: int
    val_bpb: Printed | None = None
    val_loss: Printed | None = None
    artifact_bytes: int | None = None
    train_time_s: float | None = None
    eval_time_s: float | None = None

    def to_json(self) -> dict:
        return {
            "seed": self.seed,
            "val_bpb": self.val_bpb.text if self.val_bpb else None,
            "val_loss": self.val_loss.text if self.val_loss else None,
            "artifact_bytes": self.artifact_bytes,
            "train_time_s": self.train_time_s,
            "eval_time_s": self.eval_time_s,
        }


@dataclass
class JsonClaims:
    file: str | None = None
    val_bpb: Printed | None = None  # top-level: a mean, or the one seed, or "the best seed"
    mean_val_bpb: Printed | None = None  # explicitly a mean
    val_loss: Printed | None = None
    mean_val_loss: Printed | None = None
    seeds: list[int] = field(default_factory=list)
    per_seed: dict[int, SeedClaim] = field(default_factory=dict)
    bytes_total: int | None = None
    code_bytes: int | None = None
    train_time_s: float | None = None
    eval_time_s: float | None = None
    track: str | None = None
    unread: list[str] = field(default_factory=list)  # parts whose shape we did not know

    def to_json(self) -> dict:
        return {
            "file": self.file,
            "val_bpb": self.val_bpb.text if self.val_bpb else None,
            "mean_val_bpb": self.mean_val_bpb.text if self.mean_val_bpb else None,
            "val_loss": self.val_loss.text if self.val_loss else None,
            "mean_val_loss": self.mean_val_loss.text if self.mean_val_loss else None,
            "seeds": list(self.seeds),
            "per_seed": [c.to_json() for c in self.per_seed.values()],
            "bytes_total": self.bytes_total,
            "code_bytes": self.code_bytes,
            "train_time_s": self.train_time_s,
            "eval_time_s": self.eval_time_s,
            "track": self.track,
        }


def load_json_text(path: Path) -> dict | list:
    return parse_json_bytes(read_bytes_checked(path), path.name)


# CPython refuses to turn more digits than this into an int (a ValueError, not a JSONDecodeError).
_MAX_INT_DIGITS = 4000


def _bounded_int(text: str) -> int:
    if len(text) > _MAX_INT_DIGITS:
        raise ValueError(f"a number with {len(text):,} digits")
    return int(text)


def parse_json_bytes(data: bytes, name: str = "submission.json") -> dict | list:
    """Parsed JSON with floats kept as printed (precision checks need the digits shown)."""
    text = decode_text(data, what=name)
    try:
        return json.loads(text, parse_float=lambda s: _PrintedFloat(s), parse_int=_bounded_int)
    except json.JSONDecodeError as exc:
        raise SourceError(f"{name} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    except RecursionError:
        raise SourceError(f"{name} is nested too deeply") from None
    except ValueError as exc:
        raise SourceError(f"{name} cannot be read: {exc}") from None


class _PrintedFloat(float):
    def __new__(cls, text: str):
        obj = super().__new__(cls, float(text))
        obj.text = text
        return obj


def _num(value) -> Printed | None:
    if isinstance(value, _PrintedFloat):
        return printed(value.text)
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        return printed(value)
    return None


def _int(value) -> int | None:
    number = _num(value)
    if number is None or number.value < 0:
        return None
    return int(round(number.value))


def _first(data: dict, keys: tuple[str, ...], convert=_num):
    for key in keys:
        if key in data:
            value = convert(data[key])
            if value is not None:
                return value
    return None


def _seed(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip().lower().removeprefix("seed").strip("_ -=:")
        if text.isdigit():
            return int(text)
    return None


def parse_claims(data, file: str | None = None) -> JsonClaims:
    claims = JsonClaims(file=file)
    if isinstance(data, list):
        if not _looks_per_seed(data):
            claims.unread.append("top level is a list, not per-seed results (objects with a seed)")
            return claims
        data = {"seed_results": data}  # a bare list of per-seed entries
    if not isinstance(data, dict):
        claims.unread.append(f"top level is a {type(data).__name__}, not an object")
        return claims
    # Some PRs nest the figures under "results" / "metrics".
    flat = dict(data)
    for key in ("results", "metrics", "result", "score"):
        if isinstance(data.get(key), dict) and not _looks_per_seed(data[key]):
            for inner_key, value in data[key].items():
                flat.setdefault(inner_key, value)

    claims.val_bpb = _first(flat, _BPB_KEYS)
    claims.mean_val_bpb = _first(flat, _MEAN_BPB_KEYS)
    claims.val_loss = _first(flat, _LOSS_KEYS)
    claims.mean_val_loss = _first(flat, _MEAN_LOSS_KEYS)
    claims.bytes_total = _first(flat, _BYTES_KEYS, _int)
    claims.code_bytes = _first(flat, _CODE_KEYS, _int)
    claims.train_time_s = _seconds(flat, _TRAIN_TIME_KEYS)
    claims.eval_time_s = _seconds(flat, _EVAL_TIME_KEYS)
    track = flat.get("track")
    claims.track = track if isinstance(track, str) else None

    seeds = flat.get("seeds")
    if isinstance(seeds, list):
        claims.seeds = [s for s in (_seed(v) for v in seeds) if s is not None]
    elif _seed(seeds) is not None:
        claims.seeds = [_seed(seeds)]
    single_seed = _seed(flat.get("seed"))
    if single_seed is not None and not claims.seeds:
        claims.seeds = [single_seed]

    for key in _SEED_RESULT_KEYS:
        if key in data and _looks_per_seed(data[key]):
            _read_per_seed(claims, data[key], key)
            break
    for seed in claims.per_seed:
        if seed not in claims.seeds:
            claims.seeds.append(seed)
    # A single-seed flat record: its top-level figures are that seed's.
    if len(claims.seeds) == 1 and not claims.per_seed and single_seed is not None:
        claims.per_seed[single_seed] = SeedClaim(
            seed=single_seed, val_bpb=claims.val_bpb, val_loss=claims.val_loss, artifact_bytes=claims.bytes_total
        )
    return claims


def _seconds(data: dict, keys: tuple[str, ...]) -> float | None:
    number = _first(data, keys)
    return number.value if number is not None else None


def _looks_per_seed(value) -> bool:
    if isinstance(value, list):
        return bool(value) and all(isinstance(v, dict) for v in value) and any("seed" in v for v in value)
    if isinstance(value, dict):
        return bool(value) and all(_seed(k) is not None for k in value) and all(
            isinstance(v, (dict, int, float, str)) for v in value.values()
        )
    return False


def _read_per_seed(claims: JsonClaims, value, key: str) -> None:
    entries: list[tuple[int, object]] = []
    if isinstance(value, dict):
        entries = [(_seed(k), v) for k, v in value.items()]
    else:
        for entry in value:
            seed = _seed(entry.get("seed"))
            if seed is None:
                claims.unread.append(f"an entry of {key} has no readable seed")
                continue
            entries.append((seed, entry))
    for seed, entry in entries:
        claim = SeedClaim(seed=seed)
        if isinstance(entry, dict):
            claim.val_bpb = _first(entry, _BPB_KEYS + _MEAN_BPB_KEYS)
            claim.val_loss = _first(entry, _LOSS_KEYS)
            claim.artifact_bytes = _first(entry, _BYTES_KEYS, _int)
            claim.train_time_s = _seconds(entry, _TRAIN_TIME_KEYS)
            claim.eval_time_s = _seconds(entry, _EVAL_TIME_KEYS)
        else:
            claim.val_bpb = _num(entry)  # {"42": 1.1234}
        claims.per_seed[seed] = claim
