"""Reading train logs: seeds, final metrics, sizes, times, in whatever shape a PR left them.

A log file may hold several runs (one after another), NCCL and torchrun noise, line
prefixes like `[rank0]:`, and sometimes the whole training script before the first run.
Every pattern here is anchored on the log line shapes the reference script and its
descendants print; a line that matches nothing is simply ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from auditor.submission.numbers import Printed, printed
from auditor.source import SourceError, decode_text, read_bytes_checked
from auditor.submission import MAX_LOG_BYTES, log_values

# `[rank0]:`, `[default0]:`, `[1,0]<stdout>:`, `0: `, timestamps and log levels before the message.
_PREFIX = re.compile(
    r"^(?:\[[^\]\n]{1,40}\](?:<std(?:out|err)>)?:?\s*"
    r"|\d{1,3}:\s+"
    r"|\d{4}-\d\d-\d\d[ T][\d:.,]+(?:\s*(?:INFO|DEBUG|WARNING|ERROR)\b)?\s*[-:|]?\s*"
    r"|(?:INFO|DEBUG|WARNING)\s*[-:|]\s*)+"
)
_NUM = r"(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|nan|inf)"
_VAL_LOSS = re.compile(r"\bval_loss\s*[:=]\s*" + _NUM)
_VAL_BPB = re.compile(r"\bval_bpb\s*[:=]\s*" + _NUM)
_EVAL_TIME = re.compile(r"\b(?:eval_time|time)\s*[:=]\s*(\d+(?:\.\d+)?)\s*(ms|s)\b")
_TRAIN_TIME = re.compile(r"\btrain_time\s*[:=]\s*(\d+(?:\.\d+)?)\s*(ms|s|m)\b")
_STEP_AVG = re.compile(r"\bstep_avg\s*[:=]\s*(\d+(?:\.\d+)?)\s*ms\b")
_STOPPING = re.compile(r"^stopping_early\b")
_SEED = re.compile(r"^(?:\s{0,4})seed\s*[:=]\s*(\d+)\s*$")
_SEED_PAIR = re.compile(r"(?:^|\s)seed\s*[:=]\s*(\d+)\b")
_CODE_SIZE = re.compile(r"^Code size\b([^:]*):\s*(\d+)\s*bytes", re.I)
_TOTAL_SIZE = re.compile(r"^Total submission size\b([^:]*):\s*(\d+)\s*bytes", re.I)
_MODEL_SIZE = re.compile(r"^Serialized model\b([^:]*):\s*(\d+)\s*bytes", re.I)
_ARTIFACT = re.compile(r"^artifact_bytes\s*[:=]\s*(\d+)\b")
_BUDGET = re.compile(r"^budget\s*:\s*(\d+)\s*/\s*16000000\b")
_WORLD_SIZE = re.compile(r"(?:^|\s)world_size\s*[:=]\s*(\d+)\b")
_MODEL_PARAMS = re.compile(r"^model_params\s*[:=]\s*(\d+)\b")
_TOTAL_EVAL = re.compile(r"^total_eval_time\s*[:=]\s*(\d+(?:\.\d+)?)\s*(ms|s)\b")
_RUN_HEADER = re.compile(r"^(?:Hyperparameters:|world_size\s*[:=])")
# Work on training data (or any calibration) that a log shows after the training loop ended.
_CALIBRATION = re.compile(r"gptq|hessian|calibrat", re.I)
# ... unless the line says no data was used: GPTQ skipped or off, or weight-only variants
# (GPTQ-lite's clip search, pruning) that read no tokens: `quantize:full_gptq=0 gptq_lite=66`
_NO_DATA_CALIBRATION = re.compile(r"skipped|\bskip_gptq\b|full_gptq\s*[:=]\s*(?:0|false)\b|gptq_lite|clip search|"
                                  r"prune", re.I)
_SELF_GENERATED = re.compile(r"autoregressive|self-?gen|ar_selfgen\s*[:=]\s*(?:1|true)", re.I)
_TRAINING_DATA = re.compile(r"training data|train_loader|train data|train shards", re.I)
_RESERVE = re.compile(r"reserv", re.I)
_SECONDS_IN = re.compile(r"\bin\s+(\d+(?:\.\d+)?)\s*s\b")
_FILE_SEED = re.compile(r"(?:seed|_s)[_-]?(\d+)|_(\d+)\.(?:log|txt)$", re.I)
TRAINING_VAL = "val during training (pre-quantization)"
# Names of metrics that are not the submitted score: pre-quantization or diagnostic passes.
_NOT_A_SCORE = re.compile(r"during training|pre[-_ ]?quant|diagnostic|post[-_ ]?ema|^ema\b|pre[-_]ttt|before", re.I)


@dataclass
class Metric:
    name: str  # the text before val_loss, e.g. "final_int8_zlib_roundtrip_exact"
    val_loss: Printed | None
    val_bpb: Printed
    eval_time_s: float | None
    line: int

    @property
    def is_score_candidate(self) -> bool:
        return not _NOT_A_SCORE.search(self.name)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "val_loss": self.val_loss.text if self.val_loss is not None else None,
            "val_bpb": self.val_bpb.text,
            "eval_time_s": self.eval_time_s,
            "line": self.line,
        }


@dataclass
class Calibration:
    line: int
    text: str
    self_generated: bool
    training_data: bool
    seconds: float | None


@dataclass
class LogRun:
    """One training run as a log shows it."""

    file: Path
    first_line: int
    seed: int | None = None
    seed_from_filename: bool = False
    metrics: list[Metric] = field(default_factory=list)
    train_val_metrics: int = 0  # validation passes during training (step lines)
    code_sizes: dict[str, int] = field(default_factory=dict)  # "" or "(compressed)" etc. -> bytes
    total_size: int | None = None
    model_size: int | None = None
    train_time_s: float | None = None
    step_avg_ms: float | None = None
    stopped_early: bool = False
    stop_line: int | None = None
    total_eval_time_s: float | None = None
    world_size: int | None = None
    model_params: int | None = None
    reserved_for_calibration: bool = False
    calibration_after_stop: list[Calibration] = field(default_factory=list)
    hyperparameters: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.file.name}:{self.first_line}" if self.first_line > 1 else self.file.name

    @property
    def artifact_bytes(self) -> int | None:
        """The total the log prints, else compressed model plus code (the rule's sum)."""
        if self.total_size is not None:
            return self.total_size
        code = self.code_sizes.get("") or next(iter(self.code_sizes.values()), None)
        if self.model_size is not None and code is not None:
            return self.model_size + code
        return None

    def default_score(self) -> Metric | None:
        """The run's score when nothing is claimed: the best post-training metric."""
        candidates = [m for m in self.metrics if m.is_score_candidate] or self.metrics
        if not candidates:
            return None
        # Lowest bpb wins (sliding beats roundtrip, TTT beats sliding); on a tie the
        # `_exact` line with more digits.
        return min(candidates, key=lambda m: (round(m.val_bpb.value, 4), -m.val_bpb.decimals))

    def eval_time_for(self, metric: Metric | None) -> float | None:
        if self.total_eval_time_s is not None:
            return self.total_eval_time_s
        if metric is None:
            return None
        if metric.eval_time_s is None:
            # `name_exact` lines repeat `name` with more digits; the time is on the short line.
            base = re.sub(r"_exact\b", "", metric.name)
            for other in self.metrics:
                if re.sub(r"_exact\b", "", other.name) == base and other.eval_time_s is not None:
                    return other.eval_time_s
        return metric.eval_time_s

    def to_json(self) -> dict:
        return {
            "log": self.label,
            "seed": self.seed,
            "metrics": [m.to_json() for m in self.metrics],
            "code_sizes": dict(self.code_sizes),
            "artifact_bytes": self.artifact_bytes,
            "model_bytes": self.model_size,
            "train_time_s": self.train_time_s,
            "stopped_early": self.stopped_early,
            "total_eval_time_s": self.total_eval_time_s,
            "world_size": self.world_size,
            "model_params": self.model_params,
        }

    @property
    def has_final_metrics(self) -> bool:
        return any(m.name != TRAINING_VAL for m in self.metrics)

    @property
    def is_empty(self) -> bool:
        return not (any(m.name != TRAINING_VAL for m in self.metrics) or self.train_time_s is not None or self.artifact_bytes is not None)


@dataclass
class LogFile:
    path: Path
    runs: list[LogRun] = field(default_factory=list)
    error: str | None = None  # why the file could not be read at all


def strip_prefix(line: str) -> tuple[int, str]:
    """(indentation, message) of a log line without its launcher prefix."""
    message = _PREFIX.sub("", line, count=1).rstrip()
    stripped = message.lstrip()
    return len(message) - len(stripped), stripped


def _seconds(value: str, unit: str) -> float:
    number = float(value)
    return {"ms": number / 1000.0, "s": number, "m": number * 60.0}[unit]


def seed_from_filename(name: str) -> int | None:
    match = _FILE_SEED.search(name)
    if not match:
        return None
    return int(match.group(1) or match.group(2))


def read_log(path: Path) -> LogFile:
    result = LogFile(path=path)
    try:
        text = decode_text(read_bytes_checked(path, MAX_LOG_BYTES), what=path.name)
    except SourceError as exc:
        result.error = str(exc)
        return result
    result.runs = parse_log_text(text, path)
    return result


def parse_log_text(text: str, path: Path) -> list[LogRun]:
    runs: list[LogRun] = []
    run = LogRun(file=path, first_line=1)
    lines = text.splitlines()

    def start_new_run(line_no: int) -> None:
        nonlocal run
        runs.append(run)
        run = LogRun(file=path, first_line=line_no)

    for index, raw in enumerate(lines):
        line_no = index + 1
        if len(raw) > 5000:
            continue
        indent, line = strip_prefix(raw)
        if not line:
            continue
        # Deeper indentation is source code pasted into the log (settings blocks use 2).
        if indent > 3:
            continue

        seed_match = _SEED.match(line)
        if seed_match is None and "(" not in line and len(line) < 3000:
            seed_match = _SEED_PAIR.search(line)
        if seed_match:
            seed = int(seed_match.group(1))
            if run.seed is not None and (seed != run.seed or run.has_final_metrics):
                start_new_run(line_no)
            elif run.seed is None and run.has_final_metrics:
                start_new_run(line_no)
            run.seed = seed
        elif _RUN_HEADER.match(line) and run.has_final_metrics:
            start_new_run(line_no)

        if "val_bpb" in line and "val_loss" in line or _VAL_BPB.search(line):
            _read_metric(run, line, line_no)
            continue

        match = _TRAIN_TIME.search(line)
        if match and (line.startswith("step") or _STOPPING.match(line) or re.match(r"^\d+/\d+\s", line)):
            seconds = _seconds(*match.groups())
            run.train_time_s = max(run.train_time_s or 0.0, seconds)
            avg = _STEP_AVG.search(line)
            if avg:
                run.step_avg_ms = float(avg.group(1))
        if _STOPPING.match(line):
            run.stopped_early = True
            run.stop_line = line_no
            continue

        if match := _CODE_SIZE.match(line):
            run.code_sizes[match.group(1).strip()] = int(match.group(2))
        elif match := _TOTAL_SIZE.match(line):
            run.total_size = int(match.group(2))
        elif match := _MODEL_SIZE.match(line):
            run.model_size = int(match.group(2))  # the last one is the compressed model
        elif match := _ARTIFACT.match(line):
            run.total_size = run.total_size or int(match.group(1))
        elif match := _BUDGET.match(line):
            run.total_size = run.total_size or int(match.group(1))
        elif match := _MODEL_PARAMS.match(line):
            run.model_params = int(match.group(1))
        elif match := _TOTAL_EVAL.match(line):
            run.total_eval_time_s = _seconds(*match.groups())
        elif (match := _WORLD_SIZE.search(line)) and len(line) < 200:
            run.world_size = int(match.group(1))

        if _CALIBRATION.search(line) and not _NO_DATA_CALIBRATION.search(line) \
                and not line.startswith(("def ", "class ")) and len(line) < 300:
            if _RESERVE.search(line):
                reserve = re.search(r"(\d+(?:\.\d+)?)", line)
                if reserve is None or float(reserve.group(1)) > 0:
                    run.reserved_for_calibration = True
            elif run.stopped_early and indent == 0:
                seconds = _SECONDS_IN.search(line)
                run.calibration_after_stop.append(
                    Calibration(
                        line=line_no,
                        text=line[:200],
                        self_generated=bool(_SELF_GENERATED.search(line)),
                        training_data=bool(_TRAINING_DATA.search(line)),
                        seconds=float(seconds.group(1)) if seconds else None,
                    )
                )
    runs.append(run)

    runs = [r for r in runs if not r.is_empty or r.seed is not None]
    for run in runs:
        _finish(run, text)
    if len([r for r in runs if not r.is_empty]) > 0:
        runs = [r for r in runs if not r.is_empty]
    file_seed = seed_from_filename(path.name)
    for run in runs:
        if run.seed is None and file_seed is not None and len(runs) == 1:
            run.seed = file_seed
            run.seed_from_filename = True
    return runs


def _read_metric(run: LogRun, line: str, line_no: int) -> None:
    bpb = _VAL_BPB.search(line)
    if bpb is None:
        return
    loss = _VAL_LOSS.search(line)
    prefix = line[: (loss or bpb).start()].strip()
    first = prefix.split()[0] if prefix else ""
    # Validation during training: `step:N/M val_loss:..` or `N/M val_loss: ..`.
    if not prefix or first.startswith("step") or re.match(r"^\d+/\d+$", first):
        run.train_val_metrics += 1
        match = _TRAIN_TIME.search(line)
        if match:
            run.train_time_s = max(run.train_time_s or 0.0, _seconds(*match.groups()))
        # Keep the latest validation during training: READMEs sometimes quote it.
        bpb_value = printed(bpb.group(1))
        if bpb_value is not None:
            run.metrics = [m for m in run.metrics if m.name != TRAINING_VAL]
            run.metrics.append(Metric(TRAINING_VAL, printed(loss.group(1)) if loss else None, bpb_value, None, line_no))
        return
    if prefix.startswith(("log", "print", "f\"", "f'", "#")) or "{" in prefix or "(" in prefix and "=" in prefix:
        return  # a line of source code, not output
    bpb_value = printed(bpb.group(1))
    if bpb_value is None:
        return
    time_match = _EVAL_TIME.search(line)
    run.metrics.append(
        Metric(
            name=prefix.rstrip(":").strip(),
            val_loss=printed(loss.group(1)) if loss else None,
            val_bpb=bpb_value,
            eval_time_s=_seconds(*time_match.groups()) if time_match else None,
            line=line_no,
        )
    )


def _finish(run: LogRun, text: str) -> None:
    lines = text.splitlines()
    end = len(lines)
    chunk = "\n".join(
        ln for ln in lines[run.first_line - 1 : min(end, run.first_line - 1 + 4000)] if len(ln) < 2000
    )
    values, _env = log_values(chunk)
    run.hyperparameters = values
    if run.world_size is None and "world_size" in values:
        try:
            run.world_size = int(values["world_size"])
        except ValueError:
            pass
    reserve = values.get("gptq_reserve_seconds") or values.get("gptq_reserve_ms")
    try:
        if reserve is not None and float(reserve) > 0:
            run.reserved_for_calibration = True
    except ValueError:
        pass
