"""Throughput of reference_model/train_gpt.py against the original PR #341 script, on one GPU.

    python bench/reference_throughput.py ORIGINAL_SCRIPT [--steps 60] [--data DIR]

ORIGINAL_SCRIPT is PR #341's train_gpt.py taken from a mirror of openai/parameter-golf (never
committed here), e.g. `git -C MIRROR show refs/pull/341/head:records/track_10min_16mb/
2026-03-21_HybridDepthRecurrent/train_gpt.py > /tmp/pr341.py`. Both scripts run back to back on
the same GPU and the same shards at PR #341's configuration: 524,288 tokens per step, sequence
1024, one process (8 accumulation steps), its learning rates, constant LR (WARMDOWN_ITERS=0, no
wallclock cap) and 20 compile-priming warmup steps that the timer excludes. Without --data the
shards are made by `auditor data synth`.

For each script it prints ms/step (steps 10..N, so compilation and the first steps are out),
tokens/s, model FLOPs utilization, peak memory and the train loss at steps 10/30/60, then the
speed ratio. Model FLOPs per token = 6 N + 6 L d T: N the matrix parameters applied per token
(22 effective layers of attention and MLP, plus the tied head), L d T the causal attention
products; the peak is 989 dense bf16 TFLOPs (H100/H200 SXM), --peak-tflops to change it.
Needs CUDA: without it the script says so and exits 2.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "reference_model" / "train_gpt.py"
TOKENS_PER_STEP = 524_288
SEQ_LEN = 1024
LOSS_STEPS = (10, 30, 60)

_STEP = re.compile(r"^step:(\d+)/\d+ train_loss:([\d.]+|nan) train_time:([\d.]+)ms")
_PEAK = re.compile(r"^peak memory allocated: (\d+) MiB reserved: (\d+) MiB")


@dataclass
class RunFigures:
    name: str
    losses: dict[int, float] = field(default_factory=dict)
    train_ms: dict[int, float] = field(default_factory=dict)
    peak_allocated_mib: int | None = None
    peak_reserved_mib: int | None = None
    error: str | None = None

    def ms_per_step(self, first: int = 10) -> float | None:
        """Mean step time from step `first` to the last logged step (compilation excluded)."""
        last = max(self.train_ms, default=None)
        if last is None or first not in self.train_ms or last <= first:
            return None
        return (self.train_ms[last] - self.train_ms[first]) / (last - first)


def parse_log(name: str, text: str) -> RunFigures:
    figures = RunFigures(name)
    for line in text.splitlines():
        line = line.strip()
        if match := _STEP.match(line):
            step = int(match.group(1))
            figures.losses[step] = float(match.group(2))
            figures.train_ms[step] = float(match.group(3))
        elif match := _PEAK.match(line):
            figures.peak_allocated_mib, figures.peak_reserved_mib = int(match.group(1)), int(match.group(2))
    return figures


def model_flops_per_token(dim: int = 768, heads: int = 12, kv_heads: int = 4, mlp_mult: int = 2, layers: int = 22,
                          vocab: int = 1024, seq_len: int = SEQ_LEN) -> float:
    kv_dim = kv_heads * dim // heads
    per_layer = dim * dim * 2 + dim * kv_dim * 2 + 2 * mlp_mult * dim * dim  # q, proj, k, v, fc, mlp proj
    matrix_params = layers * per_layer + vocab * dim
    return 6.0 * matrix_params + 6.0 * layers * dim * seq_len


def bench_env(data: Path, tokenizer: Path, steps: int, workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    env.update(
        DATA_PATH=str(data), TOKENIZER_PATH=str(tokenizer), VOCAB_SIZE="1024", SEED="1337", RUN_ID="bench",
        OUTPUT_DIR=str(workdir), TRAIN_BATCH_TOKENS=str(TOKENS_PER_STEP), TRAIN_SEQ_LEN=str(SEQ_LEN),
        ITERATIONS=str(steps), WARMUP_STEPS="20", WARMDOWN_ITERS="0", MAX_WALLCLOCK_SECONDS="0",
        VAL_LOSS_EVERY="0", TRAIN_LOG_EVERY="10", MATRIX_LR="0.03", SCALAR_LR="0.03", TIED_EMBED_LR="0.04",
    )
    return env


def run_script(name: str, script: Path, env: dict[str, str], workdir: Path, steps: int, timeout: float) -> RunFigures:
    """Run until the peak-memory line after the last step, then stop it (the final quantized
    evaluation is not part of the benchmark)."""
    workdir.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    process = subprocess.Popen([sys.executable, str(script)], cwd=workdir, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + timeout
    finished = False
    try:
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            print(f"  [{name}] {line.rstrip()}", file=sys.stderr)
            if _PEAK.match(line.strip()):
                finished = True
                break
            if time.monotonic() > deadline:
                break
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
    figures = parse_log(name, "\n".join(lines))
    if not finished:
        tail = " | ".join(lines[-3:])
        figures.error = f"stopped before the end of training (exit {process.returncode}): {tail[:300]}"
    elif steps not in figures.losses:
        figures.error = f"no step {steps} line in the output"
    return figures


def report(runs: list[RunFigures], flops_per_token: float, peak_tflops: float) -> str:
    out = []
    for figures in runs:
        ms = figures.ms_per_step()
        out.append(f"{figures.name}:")
        if figures.error:
            out.append(f"  ERROR: {figures.error}")
        if ms is None:
            out.append("  ms/step: unmeasured")
            continue
        tokens_per_s = TOKENS_PER_STEP / (ms / 1000.0)
        mfu = flops_per_token * tokens_per_s / (peak_tflops * 1e12)
        losses = "  ".join(f"{s}:{figures.losses[s]:.4f}" if s in figures.losses else f"{s}:-" for s in LOSS_STEPS)
        peak = (f"{figures.peak_allocated_mib} MiB allocated, {figures.peak_reserved_mib} MiB reserved"
                if figures.peak_allocated_mib is not None else "unknown")
        out += [f"  ms/step: {ms:.1f}", f"  tokens/s: {tokens_per_s:,.0f}",
                f"  MFU: {100 * mfu:.1f}% of {peak_tflops:g} TFLOPs", f"  peak memory: {peak}", f"  loss at {losses}"]
    if len(runs) == 2 and all(r.ms_per_step() for r in runs):
        ratio = runs[0].ms_per_step() / runs[1].ms_per_step()
        out.append(f"speed ratio (original ms/step / reference ms/step): {ratio:.2f}x")
        common = [s for s in LOSS_STEPS if s in runs[0].losses and s in runs[1].losses]
        diffs = "  ".join(f"{s}:{runs[1].losses[s] - runs[0].losses[s]:+.4f}" for s in common)
        out.append(f"loss difference (reference - original): {diffs}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("original", type=Path, help="PR #341's train_gpt.py (from a mirror; never committed)")
    parser.add_argument("--steps", type=int, default=60, help="training steps per script (>= 11)")
    parser.add_argument("--data", type=Path, help="folder with fineweb_{train,val}_*.bin and fineweb_1024_bpe.model")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds per script")
    parser.add_argument("--reference", type=Path, default=REFERENCE, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if not args.original.is_file():
        print(f"reference_throughput: {args.original} is not a file (PR #341's train_gpt.py)", file=sys.stderr)
        return 2
    if args.steps < 11:
        print("reference_throughput: --steps must be at least 11 (step time is measured from step 10)", file=sys.stderr)
        return 2
    if args.data is not None and not (args.data / "fineweb_1024_bpe.model").is_file():
        print(f"reference_throughput: {args.data} has no fineweb_1024_bpe.model (make it with `auditor data synth`)",
              file=sys.stderr)
        return 2
    try:
        import torch
    except ImportError:
        print("reference_throughput: torch is not installed", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("reference_throughput: needs a CUDA GPU (torch.cuda.is_available() is False); nothing was run",
              file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="reference-throughput-") as tmp:
        data = args.data
        if data is None:
            sys.path.insert(0, str(ROOT))  # the auditor package, installed or not
            from auditor.data.synth import synthesize

            data = Path(tmp) / "data"
            made = synthesize(data, train_tokens=min(args.steps, 40) * TOKENS_PER_STEP, val_tokens=262_144)
            print(f"synthetic data: {made.train_tokens:,} train tokens, {made.val_tokens:,} val tokens", file=sys.stderr)
        tokenizer = data / "fineweb_1024_bpe.model"
        print(f"GPU: {torch.cuda.get_device_name(0)}; {args.steps} steps of {TOKENS_PER_STEP:,} tokens, 1 process, "
              f"8 accumulation steps")
        runs = []
        for name, script in (("original (PR #341)", args.original.resolve()), ("reference", args.reference.resolve())):
            workdir = Path(tmp) / name.split()[0]
            runs.append(run_script(name, script, bench_env(data, tokenizer, args.steps, workdir), workdir,
                                   args.steps, args.timeout))
    print(report(runs, model_flops_per_token(), args.peak_tflops))
    return 0 if all(r.error is None for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
