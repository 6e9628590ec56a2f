"""reference_model/train_gpt.py on CPU: a tiny run through the real script (and torchrun with
gloo), its artifact and log as the auditor reads them, and its parts checked by hand.

The tiny configuration keeps the architecture (entry block, looped shared blocks, exit block,
GQA, U-Net skips) at toy sizes so that 30 steps take seconds on a shared 2-core machine.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sentencepiece")

from auditor.claims.checks import check_claims  # noqa: E402
from auditor.claims.logs import read_log  # noqa: E402
from auditor.data.synth import synthesize  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "reference_model" / "train_gpt.py"

TINY_MODEL = {
    "MODEL_DIM": "32", "NUM_HEADS": "2", "NUM_KV_HEADS": "1", "NUM_SHARED_BLOCKS": "2", "NUM_LOOPS": "2",
    "TRAIN_SEQ_LEN": "32", "VOCAB_SIZE": "1024",
}
TINY_RUN = {
    **TINY_MODEL, "TRAIN_BATCH_TOKENS": "256", "ITERATIONS": "30", "WARMUP_STEPS": "0", "WARMDOWN_ITERS": "10",
    "MAX_WALLCLOCK_SECONDS": "0", "VAL_LOSS_EVERY": "0", "TRAIN_LOG_EVERY": "1", "EVAL_STRIDE": "16",
    "EVAL_BATCH_SEQS": "64", "OMP_NUM_THREADS": "1", "SEED": "1337",
}


def _load_module():
    spec = importlib.util.spec_from_file_location("reference_train_gpt", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


T = _load_module()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("data"), train_tokens=40_000, val_tokens=3_000)


def _run(command: list[str], workdir: Path, dataset, **env) -> str:
    full_env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    full_env.update(TINY_RUN, DATA_PATH=dataset.out_dir, TOKENIZER_PATH=dataset.tokenizer_path,
                    OUTPUT_DIR=str(workdir), RUN_ID="tiny", **env)
    done = subprocess.run(command, cwd=workdir, env=full_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return (workdir / "logs" / "tiny.txt").read_text()


@pytest.fixture(scope="module")
def one_process(dataset, tmp_path_factory):
    """The tiny run in one process: 2 accumulation steps of 128 tokens per step."""
    workdir = tmp_path_factory.mktemp("one")
    log = _run([sys.executable, str(SCRIPT)], workdir, dataset, GRAD_ACCUM_STEPS="2")
    return workdir, log


def _train_losses(log: str) -> dict[int, float]:
    return {int(m.group(1)): float(m.group(2)) for m in re.finditer(r"^step:(\d+)/\d+ train_loss:([\d.]+)", log, re.M)}


def _final(log: str) -> tuple[float, float]:
    match = re.search(r"^final_int8_zlib_roundtrip_exact val_loss:([\d.]+) val_bpb:([\d.]+)", log, re.M)
    return float(match.group(1)), float(match.group(2))


def test_tiny_run_loss_falls(one_process):
    losses = _train_losses(one_process[1])
    assert sorted(losses) == list(range(1, 31))
    assert losses[1] == pytest.approx(math.log(1024), abs=0.05)  # zero-init projections: near uniform at start
    first, last = [losses[s] for s in range(1, 6)], [losses[s] for s in range(26, 31)]
    assert sum(last) / 5 < sum(first) / 5 - 0.8


def test_two_gloo_ranks_match_one_process(dataset, one_process, tmp_path):
    """torchrun with 2 ranks x 1 accumulation step sees the same tokens as 1 rank x 2 steps."""
    torchrun = shutil.which("torchrun") or pytest.fail("torchrun not found")
    log = _run([torchrun, "--standalone", "--nproc_per_node=2", str(SCRIPT)], tmp_path, dataset, GRAD_ACCUM_STEPS="1")
    assert "world_size:2 grad_accum_steps:1" in log
    single, double = _train_losses(one_process[1]), _train_losses(log)
    assert sorted(double) == sorted(single)
    for step in single:
        assert double[step] == pytest.approx(single[step], abs=2e-3), step
    assert _final(log) == pytest.approx(_final(one_process[1]), abs=2e-3)


def test_artifact_bytes_are_code_plus_compressed_model(one_process):
    workdir, log = one_process
    code_bytes = int(re.search(r"^Code size: (\d+) bytes", log, re.M).group(1))
    sizes = dict(re.findall(r"^Serialized model int8\+(\w+): (\d+) bytes", log, re.M))
    codec, total = re.search(r"^Total submission size int8\+(\w+): (\d+) bytes", log, re.M).groups()
    assert set(sizes) == {"zlib", "zstd"}
    assert codec == min(sizes, key=lambda name: int(sizes[name]))  # the smaller counts
    assert code_bytes == SCRIPT.stat().st_size
    assert int(sizes[codec]) == (workdir / "final_model.int8.ptz").stat().st_size
    assert int(total) == code_bytes + int(sizes[codec])


def test_auditor_claims_reads_the_tiny_log(one_process, tmp_path):
    workdir, log = one_process
    runs = read_log(workdir / "logs" / "tiny.txt").runs
    assert len(runs) == 1
    run = runs[0]
    printed_params = int(re.search(r"^model_params:(\d+)", log, re.M).group(1))
    assert run.model_params == printed_params
    assert run.world_size == 1
    assert run.seed == 1337
    assert run.artifact_bytes == int(re.search(r"^Total submission size \S+: (\d+)", log, re.M).group(1))
    score = run.default_score()
    assert score.name == "final_int8_zlib_roundtrip_exact"
    assert score.val_bpb.value == pytest.approx(_final(log)[1], abs=1e-8)
    # The whole claims check on a folder holding the script and this log.
    folder = tmp_path / "record"
    folder.mkdir()
    shutil.copy(SCRIPT, folder / "train_gpt.py")
    shutil.copy(workdir / "logs" / "tiny.txt", folder / "train_seed1337.log")
    result = check_claims(folder)
    assert result.error is None
    assert [s.seed for s in result.seeds] == [1337]
    assert result.seeds[0].score.val_bpb.value == pytest.approx(_final(log)[1], abs=1e-8)


def test_smoke_builds_the_reference_with_the_logged_parameter_count(one_process):
    from auditor.smoke.runner import SmokeOptions, smoke_path

    printed_params = int(re.search(r"^model_params:(\d+)", one_process[1], re.M).group(1))
    result = smoke_path(ROOT / "reference_model", SmokeOptions(env=dict(TINY_MODEL), forward=True))
    assert result.ok, result.line()
    assert result.model["params"] == printed_params
    assert result.model["layers"] == 6 and result.model["unique_layers"] == 4  # 1 + 2 x 2 + 1 from 4 blocks
    assert result.forward["ok"], result.forward


def test_auditor_classify_finds_the_reference_clean():
    from typer.testing import CliRunner

    from auditor.cli import app

    out = CliRunner().invoke(app, ["classify", str(ROOT / "reference_model"), "-f", "json"])
    assert out.exit_code == 0, out.output
    (result,) = json.loads(out.stdout)["results"]
    assert result["path"].endswith("reference_model/train_gpt.py")
    assert (result["verdict"], result["error"], result["findings"]) == ("clean", None, [])


def test_default_config_is_pr341_shape():
    model_config = T.Config()
    with torch.device("meta"):
        model = T.GPT(model_config)
    assert model_config.num_layers == 22 and len(model.blocks) == 6
    assert model.layer_schedule == [0] + [1, 2, 3, 4] * 5 + [5]
    assert (model.num_encoder_layers, model.num_decoder_layers, model.skip_weights.shape[0]) == (11, 11, 11)
    attention = model.blocks[0].attn
    assert (attention.num_heads, attention.num_kv_heads, attention.head_dim) == (12, 4, 64)
    assert model.blocks[0].mlp.fc.weight.shape == (1536, 768)


def test_inits_follow_pr341():
    torch.manual_seed(0)
    model = T.GPT(T.Config(model_dim=32, num_heads=2, num_kv_heads=1, vocab_size=64, train_seq_len=16))
    singular = torch.linalg.svdvals(model.tok_emb.weight.detach())
    expected = singular[0] * torch.arange(1, 33, dtype=torch.float32) ** -0.5
    assert torch.allclose(singular, expected, rtol=1e-3)  # overtone: S_k = S_1 / sqrt(k)
    mixes = model.resid_mixes.detach()
    for i in (0, 10, 21):
        phase = 1 / (1 + math.exp(-3.0 * (i / 21 - 0.5)))
        assert mixes[i, 0, 0].item() == pytest.approx(phase, abs=1e-6)
        assert mixes[i, 1, 0].item() == pytest.approx(1 - phase, abs=1e-6)
    assert all(block.attn.proj.weight.abs().sum() == 0 and block.mlp.proj.weight.abs().sum() == 0 for block in model.blocks)


def test_quantize_dequantize_error_bound():
    """Per element: at most half a quantization step of its row (the stored fp16 scale, about
    max(clip / 127, 1 / 127)) plus what clipping at the 99.99984th percentile cut off; per row an
    RMS error under 1.5% of the row's std. The embedding and small matrices are stored as fp16,
    the per-layer scalars exactly."""
    generator = torch.Generator().manual_seed(0)
    weights = torch.randn(300, 512, generator=generator) * torch.linspace(0.5, 4.0, 300)[:, None]
    # The embedding is bigger than KEEP_FLOAT_MAX_NUMEL, as the real one (1024 x 768) is: fp16 by name, not by size.
    embedding = torch.randn(1024, 72, generator=generator)
    assert embedding.numel() > T.KEEP_FLOAT_MAX_NUMEL
    state = {"blocks.0.mlp.fc.weight": weights, "tok_emb.weight": embedding,
             "attn_scales": torch.randn(22, 32, generator=generator), "blocks.0.attn.c_k.weight": torch.randn(8, 32, generator=generator)}
    quantized = T.quantize_state_dict(state)
    assert set(quantized["int8"]) == {"blocks.0.mlp.fc.weight"}
    restored = T.dequantize_state_dict(quantized)
    scale = quantized["scales"]["blocks.0.mlp.fc.weight"].float()[:, None]
    clip = torch.quantile(weights.abs(), T.INT8_CLIP_Q, dim=1)[:, None]
    bound = scale / 2 * (1 + 1e-6) + (weights.abs() - clip).clamp_min(0)
    error = (restored["blocks.0.mlp.fc.weight"] - weights).abs()
    assert bool((error <= bound).all())
    # Gaussian rows: step ~ 4.5 sigma / 127, so the RMS error is ~ step / sqrt(12) ~ 1% of sigma.
    relative = ((error**2).mean(dim=1).sqrt() / weights.std(dim=1)).max().item()
    assert relative < 0.015
    assert torch.equal(restored["tok_emb.weight"], state["tok_emb.weight"].half().float())
    assert torch.equal(restored["attn_scales"], state["attn_scales"])
    assert torch.equal(restored["blocks.0.attn.c_k.weight"], state["blocks.0.attn.c_k.weight"].half().float())


class HandTokenizer:
    """A SentencePiece-shaped vocabulary written by hand: id -> (piece, kind)."""

    PIECES = [("<pad>", "control"), ("<s>", "control"), ("</s>", "control"), ("<unk>", "unknown"),
              ("<0xC3>", "byte"), ("\u2581the", "normal"), ("\u2581cat", "normal"), ("s", "normal"),
              ("\u2581", "normal"), ("\u00e9t\u00e9", "normal")]

    def vocab_size(self):
        return len(self.PIECES)

    def id_to_piece(self, i):
        return self.PIECES[i][0]

    def is_control(self, i):
        return self.PIECES[i][1] == "control"

    def is_unknown(self, i):
        return self.PIECES[i][1] == "unknown"

    def is_unused(self, i):
        return False

    def is_byte(self, i):
        return self.PIECES[i][1] == "byte"


def test_bpb_matches_a_hand_computation():
    """A model with zero embeddings predicts uniformly: ln(V) nats per token. Bytes by hand:
    <s> the cats ▁ été <0xC3> <s> cat -> targets: the(3, after <s> no space) cats: ▁cat(3+1) s(1)
    ▁(0+1) été(5) <0xC3>(1) <s>(0) ▁cat(3, after <s> no space) = 18 bytes for 8 targets."""
    vocab = len(HandTokenizer.PIECES)
    luts = T.build_byte_luts(HandTokenizer(), vocab, torch.device("cpu"))
    tokens = torch.tensor([1, 5, 6, 7, 8, 9, 4, 1, 6], dtype=torch.int32)
    model = T.GPT(T.Config(vocab_size=vocab, model_dim=8, num_heads=2, num_kv_heads=1, num_shared_blocks=1,
                           num_loops=1, train_seq_len=16))
    with torch.no_grad():
        model.tok_emb.weight.zero_()
    for window, stride in ((16, 4), (3, 1), (8, 8)):
        loss, bpb, scored = T.evaluate(model, model.hidden_states, tokens, luts, window, stride, 4, 0, 1, torch.device("cpu"))
        assert scored == 8
        assert loss == pytest.approx(math.log(vocab), rel=1e-6)
        assert bpb == pytest.approx(8 * math.log2(vocab) / 18, rel=1e-6)


def test_byte_luts_count_the_utf8_bytes_of_real_text(dataset):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=dataset.tokenizer_path)
    base, leading_space, boundary = T.build_byte_luts(sp, 1024, torch.device("cpu"))
    text = "Hello world, it's a test.\nSecond line  with   spaces, \u00fcn\u00efc\u00f6d\u00e9 \u2713 \u65e5\u672c\u8a9e 42"
    ids = torch.tensor([1] + sp.encode(text))
    counted = (base[ids[1:]].long() + (leading_space[ids[1:]] & ~boundary[ids[:-1]]).long()).sum().item()
    assert counted == len(sp.decode(ids[1:].tolist()).encode("utf-8"))


@pytest.mark.parametrize("window", [1, 8, 32])
@pytest.mark.parametrize("stride", [1, 3, 8, 32])
def test_sliding_windows_score_each_target_once(window, stride):
    stride = min(stride, window)
    for num_targets in (1, 2, 7, 8, 9, 31, 32, 33, 100, 257):
        windows = T.sliding_windows(num_targets, window, stride)
        length = min(window, num_targets)
        scored = []
        for i, (start, first) in enumerate(windows):
            assert 0 <= start and start + length <= num_targets  # every window is full length
            assert first == 0 if i == 0 else first >= length - stride  # context kept
            scored += range(start + first, start + length)
        assert scored == list(range(num_targets)), (num_targets, window, stride)


def test_evaluate_scores_every_token_once_across_ranks():
    model = T.GPT(T.Config(vocab_size=64, model_dim=8, num_heads=2, num_kv_heads=1, num_shared_blocks=1,
                           num_loops=1, train_seq_len=16))
    luts = (torch.ones(64, dtype=torch.int16), torch.zeros(64, dtype=torch.bool), torch.zeros(64, dtype=torch.bool))
    generator = torch.Generator().manual_seed(1)
    for length in (2, 17, 50, 101):
        tokens = torch.randint(0, 64, (length,), generator=generator, dtype=torch.int32)
        whole = T.evaluate(model, model.hidden_states, tokens, luts, 16, 5, 3, 0, 1, torch.device("cpu"))
        assert whole[2] == length - 1
        parts = [T.evaluate(model, model.hidden_states, tokens, luts, 16, 5, 3, r, 3, torch.device("cpu")) for r in range(3)]
        assert sum(p[2] for p in parts) == length - 1


def _bench_module():
    spec = importlib.util.spec_from_file_location("reference_throughput", ROOT / "bench" / "reference_throughput.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_throughput_bench_refuses_clearly_without_cuda_or_script(tmp_path, capsys):
    bench = _bench_module()
    assert bench.main([str(tmp_path / "missing.py")]) == 2
    assert "is not a file" in capsys.readouterr().err
    original = tmp_path / "pr341.py"
    original.write_text("print('never run here')\n")
    assert bench.main([str(original), "--steps", "5"]) == 2
    assert "--steps must be at least 11" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert bench.main([str(original)]) == 2
        assert "needs a CUDA GPU" in capsys.readouterr().err


def test_throughput_bench_reads_the_step_lines_of_a_real_log(one_process):
    bench = _bench_module()
    log = one_process[1]
    figures = bench.parse_log("reference", log + "\npeak memory allocated: 1234 MiB reserved: 2000 MiB\n")
    assert figures.losses == _train_losses(log)
    times = {int(m.group(1)): float(m.group(2)) for m in re.finditer(r"^step:(\d+)/\d+ train_loss:\S+ train_time:(\d+)ms", log, re.M)}
    assert figures.ms_per_step() == pytest.approx((times[30] - times[10]) / 20)
    assert (figures.peak_allocated_mib, figures.peak_reserved_mib) == (1234, 2000)
    slower = bench.RunFigures("original", losses=dict(figures.losses), train_ms={s: 2 * t for s, t in figures.train_ms.items()})
    text = bench.report([slower, figures], bench.model_flops_per_token(), 989.0)
    assert "speed ratio (original ms/step / reference ms/step): 2.00x" in text
    assert "loss difference (reference - original): 10:+0.0000  30:+0.0000" in text
    # 6 N + 6 L d T at PR #341's shape: N = 22 x 3,932,160 + 1024 x 768.
    assert bench.model_flops_per_token() == 6 * (22 * 3_932_160 + 786_432) + 6 * 22 * 768 * 1024
