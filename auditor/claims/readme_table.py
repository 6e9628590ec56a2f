"""Per-seed results tables in a README (markdown pipe tables with a Seed column).

Tables differ in which columns they show; the score column is chosen by its header:
post-TTT over sliding over a plain val_bpb, never pre-quant, roundtrip-only, gain or std
columns. Approximate cells (`~1.1815`) are not claims and are skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from auditor.submission.numbers import Printed, printed

_ROW = re.compile(r"^\s*\|(.+)\|\s*$")
_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{2,}")
_NOT_SCORE_HEADER = re.compile(r"pre|ema\b|gain|delta|std|rt\b|roundtrip|standard|diff|Δ|step|ms|time|loss|nats", re.I)


@dataclass
class ReadmeRow:
    seed: int
    val_bpb: Printed | None
    val_loss: Printed | None
    line: int


@dataclass
class ReadmeTable:
    line: int
    bpb_header: str
    rows: list[ReadmeRow] = field(default_factory=list)
    mean_bpb: Printed | None = None


def _cells(line: str) -> list[str]:
    match = _ROW.match(line)
    if not match:
        return []
    return [c.strip().strip("*").strip() for c in match.group(1).split("|")]


def _score_column(headers: list[str]) -> int | None:
    lowered = [h.lower() for h in headers]

    def pick(predicate) -> int | None:
        for index, header in enumerate(lowered):
            if predicate(header):
                return index
        return None

    # "bpp" is a typo seen in merged READMEs.
    bpb_like = lambda h: ("bpb" in h or "bpp" in h or "score" in h) and not _NOT_SCORE_HEADER.search(h)  # noqa: E731
    sliding = lambda h: ("slid" in h or "s64" in h) and not _NOT_SCORE_HEADER.search(h)  # noqa: E731
    for preference in (
        lambda h: bpb_like(h) and "ttt" in h,
        lambda h: bpb_like(h) and sliding(h),
        sliding,
        lambda h: bpb_like(h) and "val" in h,
        bpb_like,
    ):
        found = pick(preference)
        if found is not None:
            return found
    return None


def _loss_column(headers: list[str]) -> int | None:
    for index, header in enumerate(h.lower() for h in headers):
        if ("loss" in header or "nats" in header) and not re.search(r"pre|std|gain|delta|train", header):
            return index
    return None


def _seed_value(cell: str) -> int | None:
    cell = cell.replace("*", "").strip()
    return int(cell) if cell.isdigit() else None


def parse_readme_tables(text: str) -> list[ReadmeTable]:
    lines = text.splitlines()
    tables: list[ReadmeTable] = []
    index = 0
    while index < len(lines) - 1:
        headers = _cells(lines[index])
        if not headers or not _SEPARATOR.match(lines[index + 1]):
            index += 1
            continue
        seed_col = next((i for i, h in enumerate(headers) if h.lower().strip() in ("seed", "seeds", "run seed")), None)
        score_col = _score_column(headers)
        if seed_col is None or score_col is None:
            index += 2
            continue
        loss_col = _loss_column(headers)
        table = ReadmeTable(line=index + 1, bpb_header=headers[score_col])
        row_index = index + 2
        while row_index < len(lines):
            cells = _cells(lines[row_index])
            if not cells:
                break
            if len(cells) > max(seed_col, score_col):
                seed = _seed_value(cells[seed_col])
                score = cells[score_col]
                value = None if "~" in score or "≈" in score else printed(score.split()[0] if score else "")
                if seed is not None:
                    loss = None
                    if loss_col is not None and loss_col < len(cells) and "~" not in cells[loss_col]:
                        loss = printed(cells[loss_col].split()[0] if cells[loss_col] else "")
                    table.rows.append(ReadmeRow(seed=seed, val_bpb=value, val_loss=loss, line=row_index + 1))
                elif cells[seed_col].lower().startswith(("mean", "avg", "average")) and value is not None:
                    table.mean_bpb = value
            row_index += 1
        if table.rows:
            tables.append(table)
        index = row_index
    return tables
