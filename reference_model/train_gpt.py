"""Hybrid depth-recurrent transformer for Parameter Golf: a clean reference record.

The architecture of PR #341 of openai/parameter-golf, rewritten in plain sections read top to
bottom: config -> data -> tokenizer byte accounting -> model -> optimizer -> quantized
artifact -> evaluation -> training. One unique entry block, 4 shared blocks looped 5 times and
one unique exit block give 22 effective layers from 6 weight blocks; the unique blocks near the
embedding and the head keep int8 rounding from compounding through the loops.

Run (8 GPUs, the challenge's data):  torchrun --standalone --nproc_per_node=8 train_gpt.py
Every setting is an environment variable named as in the challenge (MODEL_DIM, NUM_LOOPS, ...).
Without CUDA it runs on CPU (gloo, fp32, no torch.compile), for tests at tiny sizes.
"""

from __future__ import annotations

import contextlib
import copy
import glob
import io
import math
import os
import shutil
import subprocess
import sys
import time
import uuid
import zlib
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel as DDP

# -----------------------------------------------------------------------------
# Config: every field is read from the environment variable of its upper-case name.


@dataclass
class Config:
    # data
    data_path: str = "./data/datasets/fineweb10B_sp1024"
    tokenizer_path: str = "./data/tokenizers/fineweb_1024_bpe.model"
    output_dir: str = "."  # logs/<run_id>.txt and final_model.int8.ptz go here
    run_id: str = ""
    seed: int = 1337
    # model
    vocab_size: int = 1024
    num_entry_layers: int = 1
    num_shared_blocks: int = 4
    num_loops: int = 5
    num_exit_layers: int = 1
    model_dim: int = 768
    num_heads: int = 12
    num_kv_heads: int = 4
    mlp_mult: int = 2
    rope_base: float = 10000.0
    logit_softcap: float = 30.0
    qk_gain_init: float = 1.5
    tied_embed_init_std: float = 0.005
    # training
    iterations: int = 20000
    train_batch_tokens: int = 524_288
    train_seq_len: int = 1024
    grad_accum_steps: int = 0  # 0: 8 // world_size, as in the challenge
    warmup_steps: int = 20  # steps that prime torch.compile; weights and optimizer are reset after
    warmdown_iters: int = 2500
    max_wallclock_seconds: float = 600.0  # 0 disables the cap (warmdown then counts steps)
    val_loss_every: int = 1000
    train_log_every: int = 200
    # optimizer (PR #341's tuned rates)
    matrix_lr: float = 0.03
    scalar_lr: float = 0.03
    tied_embed_lr: float = 0.04
    muon_momentum: float = 0.95
    muon_momentum_warmup_start: float = 0.85
    muon_momentum_warmup_steps: int = 500
    muon_backend_steps: int = 5
    muon_weight_decay: float = 0.02
    beta1: float = 0.9
    beta2: float = 0.95
    adam_eps: float = 1e-8
    adam_weight_decay: float = 0.01
    # evaluation
    eval_seq_len: int = 0  # sliding window length; 0: train_seq_len
    eval_stride: int = 64
    eval_batch_seqs: int = 256
    # speed
    compile: int = -1  # -1: on with CUDA, off on CPU

    @classmethod
    def from_env(cls) -> "Config":
        values = {}
        for f in fields(cls):
            raw = os.environ.get(f.name.upper())
            values[f.name] = f.default if raw is None or raw == "" else type(f.default)(raw)
        return cls(**values)

    @property
    def num_layers(self) -> int:
        return self.num_entry_layers + self.num_shared_blocks * self.num_loops + self.num_exit_layers

    @property
    def window(self) -> int:
        return self.eval_seq_len or self.train_seq_len


# -----------------------------------------------------------------------------
# Data: the challenge's shards (256 x int32 header, then uint16 tokens), streamed per rank.

SHARD_MAGIC, SHARD_VERSION, HEADER_INTS = 20240520, 1, 256


def load_data_shard(path: Path) -> Tensor:
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    if header.size != HEADER_INTS or int(header[0]) != SHARD_MAGIC or int(header[1]) != SHARD_VERSION:
        raise ValueError(f"unexpected shard header in {path}")
    num_tokens = int(header[2])
    if path.stat().st_size != 4 * HEADER_INTS + 2 * num_tokens:
        raise ValueError(f"shard size of {path} does not match its header ({num_tokens} tokens)")
    tokens = np.fromfile(path, dtype="<u2", count=num_tokens, offset=4 * HEADER_INTS)
    return torch.from_numpy(tokens.astype(np.int32))


def shard_files(pattern: str) -> list[Path]:
    files = [Path(p) for p in sorted(glob.glob(pattern))]
    if not files:
        raise FileNotFoundError(f"no shards match {pattern}")
    return files


class TokenStream:
    """The shards in order, read sequentially and wrapped around forever."""

    def __init__(self, pattern: str):
        self.files = shard_files(pattern)
        self.file_index = 0
        self.tokens = load_data_shard(self.files[0])
        self.position = 0

    def take(self, n: int) -> Tensor:
        chunks = []
        while n > 0:
            if self.position == self.tokens.numel():
                self.file_index = (self.file_index + 1) % len(self.files)
                self.tokens = load_data_shard(self.files[self.file_index])
                self.position = 0
            k = min(n, self.tokens.numel() - self.position)
            chunks.append(self.tokens[self.position : self.position + k])
            self.position += k
            n -= k
        return torch.cat(chunks) if len(chunks) > 1 else chunks[0]


class DistributedTokenLoader:
    """Each micro-batch takes one contiguous chunk of the stream and gives every rank its own
    span of it (+1 token for the shifted targets), so any world size sees the same tokens."""

    def __init__(self, pattern: str, rank: int, world_size: int, device: torch.device):
        self.stream = TokenStream(pattern)
        self.rank, self.world_size, self.device = rank, world_size, device

    def next_batch(self, local_tokens: int, seq_len: int) -> tuple[Tensor, Tensor]:
        span = local_tokens + 1
        chunk = self.stream.take(span * self.world_size)
        local = chunk[self.rank * span : (self.rank + 1) * span].to(torch.int64)
        if self.device.type == "cuda":
            local = local.pin_memory().to(self.device, non_blocking=True)
        return local[:-1].view(-1, seq_len), local[1:].view(-1, seq_len)


def load_validation_tokens(pattern: str) -> Tensor:
    return torch.cat([load_data_shard(p) for p in shard_files(pattern)])


# -----------------------------------------------------------------------------
# Tokenizer byte accounting (the challenge's): a token's bytes are its piece's UTF-8 bytes
# without the leading-space marker, plus one byte for that space unless the previous token is
# a boundary (control/unknown/unused); a byte-fallback token is one byte; control tokens none.


def build_byte_luts(sp, vocab_size: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    table_size = max(int(sp.vocab_size()), vocab_size)
    base_bytes = np.zeros(table_size, dtype=np.int16)
    has_leading_space = np.zeros(table_size, dtype=np.bool_)
    is_boundary = np.ones(table_size, dtype=np.bool_)
    for token_id in range(int(sp.vocab_size())):
        if sp.is_control(token_id) or sp.is_unknown(token_id) or sp.is_unused(token_id):
            continue
        is_boundary[token_id] = False
        if sp.is_byte(token_id):
            base_bytes[token_id] = 1
            continue
        piece = sp.id_to_piece(token_id)
        if piece.startswith("\u2581"):
            has_leading_space[token_id] = True
            piece = piece[1:]
        base_bytes[token_id] = len(piece.encode("utf-8"))
    return (
        torch.tensor(base_bytes, dtype=torch.int16, device=device),
        torch.tensor(has_leading_space, dtype=torch.bool, device=device),
        torch.tensor(is_boundary, dtype=torch.bool, device=device),
    )


# -----------------------------------------------------------------------------
# Model


def rms_norm(x: Tensor) -> Tensor:
    return F.rms_norm(x, (x.size(-1),))


class Rotary(nn.Module):
    def __init__(self, head_dim: int, base: float, max_seq_len: int):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        freqs = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), inv_freq)
        self.register_buffer("cos", freqs.cos()[None, None], persistent=False)
        self.register_buffer("sin", freqs.sin()[None, None], persistent=False)

    def forward(self, x: Tensor) -> Tensor:  # x: (batch, heads, seq, head_dim)
        seq_len = x.size(-2)
        cos, sin = self.cos[:, :, :seq_len].to(x.dtype), self.sin[:, :, :seq_len].to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)


class CausalSelfAttention(nn.Module):
    """GQA attention with RMS-normed q/k, rotary positions and a per-head query gain."""

    def __init__(self, dim: int, num_heads: int, num_kv_heads: int, rope_base: float, max_seq_len: int):
        super().__init__()
        if dim % num_heads or num_heads % num_kv_heads or (dim // num_heads) % 2:
            raise ValueError("need model_dim % num_heads == 0, num_heads % num_kv_heads == 0, even head_dim")
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, dim // num_heads
        kv_dim = num_kv_heads * self.head_dim
        self.c_q = nn.Linear(dim, dim, bias=False)
        self.c_k = nn.Linear(dim, kv_dim, bias=False)
        self.c_v = nn.Linear(dim, kv_dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.rotary = Rotary(self.head_dim, rope_base, max_seq_len)

    def forward(self, x: Tensor, q_gain: Tensor) -> Tensor:
        batch, seq_len, dim = x.shape
        # One GEMM for q, k and v; the optimizer still sees three matrices.
        qkv = F.linear(x, torch.cat((self.c_q.weight, self.c_k.weight, self.c_v.weight)).to(x.dtype))
        kv_dim = self.num_kv_heads * self.head_dim
        q, k, v = qkv.split((dim, kv_dim, kv_dim), dim=-1)
        q = q.view(batch, seq_len, self.num_heads, self.head_dim).transpose(1, 2)
        k = k.view(batch, seq_len, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(batch, seq_len, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = self.rotary(rms_norm(q)), self.rotary(rms_norm(k))
        q = q * q_gain.to(q.dtype)[None, :, None, None]
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.num_kv_heads != self.num_heads)
        return F.linear(y.transpose(1, 2).reshape(batch, seq_len, dim), self.proj.weight.to(x.dtype))


class MLP(nn.Module):
    def __init__(self, dim: int, mlp_mult: int):
        super().__init__()
        self.fc = nn.Linear(dim, mlp_mult * dim, bias=False)
        self.proj = nn.Linear(mlp_mult * dim, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(F.relu(F.linear(x, self.fc.weight.to(x.dtype))).square(), self.proj.weight.to(x.dtype))


class Block(nn.Module):
    """Attention + relu^2 MLP. The scalars that steer it come from the virtual layer that applies it."""

    def __init__(self, config: Config):
        super().__init__()
        max_seq_len = max(config.train_seq_len, config.window)
        self.attn = CausalSelfAttention(config.model_dim, config.num_heads, config.num_kv_heads, config.rope_base, max_seq_len)
        self.mlp = MLP(config.model_dim, config.mlp_mult)

    def forward(self, x: Tensor, x0: Tensor, attn_scale: Tensor, mlp_scale: Tensor, resid_mix: Tensor, q_gain: Tensor) -> Tensor:
        mix = resid_mix.to(x.dtype)
        x = mix[0] * x + mix[1] * x0
        x = x + attn_scale.to(x.dtype) * self.attn(rms_norm(x), q_gain)
        return x + mlp_scale.to(x.dtype) * self.mlp(rms_norm(x))


class GPT(nn.Module):
    """Entry blocks, shared blocks looped num_loops times, exit blocks; U-Net skips across the
    effective depth; per-virtual-layer scalars; tied embedding with logit softcap."""

    def __init__(self, config: Config):
        super().__init__()
        self.config = config
        self.logit_softcap = config.logit_softcap
        self.activation_dtype = torch.float32  # bf16 on GPU, set by the training code
        num_unique = config.num_entry_layers + config.num_shared_blocks + config.num_exit_layers
        self.blocks = nn.ModuleList([Block(config) for _ in range(num_unique)])
        # layer_schedule[i]: which block virtual layer i applies (shared blocks round-robin).
        shared = [config.num_entry_layers + i % config.num_shared_blocks for i in range(config.num_shared_blocks * config.num_loops)]
        exits = [config.num_entry_layers + config.num_shared_blocks + i for i in range(config.num_exit_layers)]
        self.layer_schedule = list(range(config.num_entry_layers)) + shared + exits
        num_layers = len(self.layer_schedule)
        self.num_encoder_layers = num_layers // 2
        self.num_decoder_layers = num_layers - self.num_encoder_layers
        dim = config.model_dim
        self.tok_emb = nn.Embedding(config.vocab_size, dim)
        # Per-virtual-layer scalars, one row per effective layer.
        self.attn_scales = nn.Parameter(torch.ones(num_layers, dim))
        self.mlp_scales = nn.Parameter(torch.ones(num_layers, dim))
        self.resid_mixes = nn.Parameter(torch.zeros(num_layers, 2, dim))
        self.q_gains = nn.Parameter(torch.full((num_layers, config.num_heads), config.qk_gain_init))
        self.skip_weights = nn.Parameter(torch.ones(min(self.num_encoder_layers, self.num_decoder_layers), dim))
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        # Overtone init: a normal embedding whose singular values are reshaped to S_k = S_1 k^-1/2.
        nn.init.normal_(self.tok_emb.weight, std=self.config.tied_embed_init_std)
        if self.tok_emb.weight.device.type != "meta":
            u, s, vh = torch.linalg.svd(self.tok_emb.weight, full_matrices=False)
            target = s[0] * torch.arange(1, s.numel() + 1, dtype=s.dtype) ** -0.5
            self.tok_emb.weight.copy_((u * target) @ vh)
        for block in self.blocks:  # output projections start at zero: each block starts as identity
            nn.init.zeros_(block.attn.proj.weight)
            nn.init.zeros_(block.mlp.proj.weight)
        # Phase-transition residual mix: early layers lean on x0, late layers on the residual.
        num_layers = len(self.layer_schedule)
        for i in range(num_layers):
            phase = torch.sigmoid(torch.tensor(3.0 * (i / max(num_layers - 1, 1) - 0.5)))
            self.resid_mixes[i, 0] = phase
            self.resid_mixes[i, 1] = 1 - phase

    def hidden_states(self, input_ids: Tensor) -> Tensor:
        x = rms_norm(self.tok_emb(input_ids).to(self.activation_dtype))
        x0 = x
        skips = []
        for i, block_index in enumerate(self.layer_schedule):
            if i >= self.num_encoder_layers and skips:
                x = x + self.skip_weights[i - self.num_encoder_layers].to(x.dtype) * skips.pop()
            x = self.blocks[block_index](x, x0, self.attn_scales[i], self.mlp_scales[i], self.resid_mixes[i], self.q_gains[i])
            if i < self.num_encoder_layers:
                skips.append(x)
        return rms_norm(x)

    def logits(self, hidden: Tensor) -> Tensor:
        logits = F.linear(hidden, self.tok_emb.weight.to(hidden.dtype))
        return self.logit_softcap * torch.tanh(logits / self.logit_softcap)

    def forward(self, input_ids: Tensor, target_ids: Tensor) -> Tensor:
        logits = self.logits(self.hidden_states(input_ids))
        return F.cross_entropy(logits.float().flatten(0, 1), target_ids.flatten())


# -----------------------------------------------------------------------------
# Optimizer: Muon (Newton-Schulz orthogonalized momentum) for block matrices with decoupled
# weight decay; Adam for the embedding and the scalars.


def newton_schulz(g: Tensor, steps: int, eps: float = 1e-7) -> Tensor:
    """Approximately orthogonalize each matrix of a (count, rows, cols) stack."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g / (g.norm(dim=(-2, -1), keepdim=True) + eps)
    transposed = g.size(-2) > g.size(-1)
    if transposed:
        x = x.mT
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.mT if transposed else x


class Muon(torch.optim.Optimizer):
    """Nesterov momentum, orthogonalized per matrix (same-shape matrices in one batched call),
    scaled by sqrt(max(1, rows/cols)). Under DDP each rank orthogonalizes its share and one
    all-reduce gathers the updates. Decoupled weight decay: p *= 1 - lr * weight_decay."""

    def __init__(self, params, lr: float, momentum: float, backend_steps: int, weight_decay: float, ns_dtype: torch.dtype):
        super().__init__(list(params), dict(lr=lr, momentum=momentum, backend_steps=backend_steps, weight_decay=weight_decay))
        self.ns_dtype = ns_dtype
        self.orthogonalize = newton_schulz

    @torch.no_grad()
    def step(self) -> None:
        distributed = dist.is_available() and dist.is_initialized()
        world_size, rank = (dist.get_world_size(), dist.get_rank()) if distributed else (1, 0)
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            updates = torch.zeros(sum(p.numel() for p in params), device=params[0].device, dtype=self.ns_dtype)
            offsets = np.cumsum([0] + [p.numel() for p in params])
            by_shape: dict[tuple, list[int]] = {}
            for index, p in enumerate(params):
                if index % world_size == rank:
                    by_shape.setdefault(tuple(p.shape), []).append(index)
            for shape, indices in by_shape.items():
                grads = [params[i].grad for i in indices]
                buffers = [self.state[params[i]].setdefault("momentum_buffer", torch.zeros_like(g)) for i, g in zip(indices, grads)]
                torch._foreach_mul_(buffers, group["momentum"])
                torch._foreach_add_(buffers, grads)
                nesterov = torch._foreach_add(grads, buffers, alpha=group["momentum"])
                stacked = torch.stack(nesterov).to(self.ns_dtype)
                orthogonal = self.orthogonalize(stacked, group["backend_steps"]) * max(1.0, shape[0] / shape[1]) ** 0.5
                for j, i in enumerate(indices):
                    updates[offsets[i] : offsets[i + 1]] = orthogonal[j].flatten()
            if distributed:
                dist.all_reduce(updates)
            views = [updates[offsets[i] : offsets[i + 1]].view_as(p).to(p.dtype) for i, p in enumerate(params)]
            torch._foreach_add_(params, views, alpha=-group["lr"])
            if group["weight_decay"] > 0:
                torch._foreach_mul_(params, 1.0 - group["lr"] * group["weight_decay"])


def build_optimizers(model: GPT, config: Config, device: torch.device) -> tuple[Muon, list[torch.optim.Optimizer]]:
    matrices = [p for p in model.blocks.parameters() if p.ndim == 2]
    scalars = [model.attn_scales, model.mlp_scales, model.resid_mixes, model.q_gains, model.skip_weights]
    scalars += [p for p in model.blocks.parameters() if p.ndim < 2]
    adam = dict(betas=(config.beta1, config.beta2), eps=config.adam_eps, weight_decay=config.adam_weight_decay, fused=device.type == "cuda")
    muon = Muon(matrices, lr=config.matrix_lr, momentum=config.muon_momentum, backend_steps=config.muon_backend_steps,
                weight_decay=config.muon_weight_decay, ns_dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)
    optimizers = [
        torch.optim.AdamW([model.tok_emb.weight], lr=config.tied_embed_lr, **adam),
        muon,
        torch.optim.AdamW([p for p in scalars if p.numel()], lr=config.scalar_lr, **adam),
    ]
    for opt in optimizers:
        for group in opt.param_groups:
            group["base_lr"] = group["lr"]
    return muon, optimizers


# -----------------------------------------------------------------------------
# Artifact: int8 per-row quantization (fp16 row scales, the challenge's clipping), the tied
# embedding and small matrices in fp16, the per-layer scalars in fp32; torch.save, then zlib
# level 9 and zstd level 22.
# Artifact bytes = code bytes + the smaller compressed blob.

INT8_CLIP_Q = 99.99984 / 100.0
KEEP_FLOAT_MAX_NUMEL = 65_536  # smaller matrices are stored in fp16
CONTROL_TENSORS = ("attn_scales", "mlp_scales", "resid_mixes", "q_gains", "skip_weights")  # stored in fp32


def quantize_rows(t: Tensor) -> tuple[Tensor, Tensor]:
    t = t.float()
    clip = torch.quantile(t.abs(), INT8_CLIP_Q, dim=1)
    # The stored fp16 scale, rounded up, is the one quantized with: error <= scale / 2 per kept element.
    scale = ((clip / 127.0).clamp_min(1.0 / 127.0) * (1 + 2**-10)).to(torch.float16)
    q = torch.clamp(torch.round(torch.clamp(t, -clip[:, None], clip[:, None]) / scale.float()[:, None]), -127, 127)
    return q.to(torch.int8).contiguous(), scale.contiguous()


def quantize_state_dict(state_dict: dict[str, Tensor]) -> dict[str, dict[str, Tensor]]:
    quantized, scales, kept = {}, {}, {}
    for name, tensor in state_dict.items():
        t = tensor.detach().cpu().contiguous()
        if not t.is_floating_point():
            kept[name] = t
        elif name in CONTROL_TENSORS:
            kept[name] = t.float()
        elif name == "tok_emb.weight" or t.ndim != 2 or t.numel() <= KEEP_FLOAT_MAX_NUMEL:
            kept[name] = t.to(torch.float16)
        else:
            quantized[name], scales[name] = quantize_rows(t)
    return {"int8": quantized, "scales": scales, "kept": kept}


def dequantize_state_dict(obj: dict[str, dict[str, Tensor]]) -> dict[str, Tensor]:
    out = {name: q.float() * obj["scales"][name].float()[:, None] for name, q in obj["int8"].items()}
    out.update({name: t.float() if t.is_floating_point() else t for name, t in obj["kept"].items()})
    return out


def compress_artifact(raw: bytes, log) -> tuple[str, bytes, dict[str, int]]:
    """(codec, blob, sizes): zlib level 9 and zstd level 22; the smaller is the artifact."""
    blobs = {"zlib": zlib.compress(raw, 9)}
    try:
        import zstandard

        blobs["zstd"] = zstandard.ZstdCompressor(level=22).compress(raw)
    except ImportError:
        log("zstandard not installed: artifact compressed with zlib only")
    codec = min(blobs, key=lambda name: len(blobs[name]))
    return codec, blobs[codec], {name: len(blob) for name, blob in blobs.items()}


def decompress_artifact(blob: bytes) -> bytes:
    if blob[:4] == b"\x28\xb5\x2f\xfd":  # zstd frame magic
        import zstandard

        return zstandard.ZstdDecompressor().decompress(blob)
    return zlib.decompress(blob)


# -----------------------------------------------------------------------------
# Evaluation: sliding windows that score every validation target exactly once, tail included.


def sliding_windows(num_targets: int, window: int, stride: int) -> list[tuple[int, int]]:
    """(start, first_scored) per window. A window reads inputs [start, start + window) and
    scores targets start + first_scored .. start + window - 1 (target j is token j + 1). The
    first window scores all of its targets; each later one the next `stride` (the last one what
    is left), with at least window - stride tokens of context."""
    if num_targets <= 0:
        return []
    window = min(window, num_targets)
    windows = [(0, 0)]
    scored_to = window
    while scored_to < num_targets:
        end = min(scored_to + stride, num_targets)
        windows.append((end - window, scored_to - (end - window)))
        scored_to = end
    return windows


@torch.no_grad()
def evaluate(model: GPT, hidden_fn, tokens: Tensor, luts: tuple[Tensor, Tensor, Tensor], window: int, stride: int,
             batch_seqs: int, rank: int, world_size: int, device: torch.device) -> tuple[float, float, int]:
    """(val_loss in nats per token, val_bpb, tokens scored) over all targets of `tokens`."""
    base_bytes, has_leading_space, is_boundary = luts
    num_targets = tokens.numel() - 1
    window = min(window, num_targets)
    windows = sliding_windows(num_targets, window, stride)
    mine = windows[rank * len(windows) // world_size : (rank + 1) * len(windows) // world_size]
    tokens = tokens.to(device=device, dtype=torch.int64)
    offsets = torch.arange(window + 1, device=device)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    byte_sum = torch.zeros((), device=device, dtype=torch.float64)
    token_sum = torch.zeros((), device=device, dtype=torch.float64)
    with torch.inference_mode():
        for i in range(0, len(mine), batch_seqs):
            batch = mine[i : i + batch_seqs]
            starts = torch.tensor([s for s, _ in batch] + [batch[-1][0]] * (batch_seqs - len(batch)), device=device)
            seqs = tokens[starts[:, None] + offsets]  # padded to a fixed batch: one compiled shape
            x, y = seqs[: len(batch), :-1], seqs[: len(batch), 1:]
            first = min(f for _, f in batch)  # score only the suffix that some window scores
            with torch.autocast(device.type, dtype=model.activation_dtype, enabled=model.activation_dtype != torch.float32):
                hidden = hidden_fn(seqs[:, :-1])[: len(batch)]
                logits = model.logits(hidden[:, first:])
            nll = F.cross_entropy(logits.float().transpose(1, 2), y[:, first:], reduction="none")
            scored = torch.arange(first, window, device=device)[None, :] >= torch.tensor([f for _, f in batch], device=device)[:, None]
            target, previous = y[:, first:], x[:, first:]
            nbytes = base_bytes[target].to(torch.float64) + (has_leading_space[target] & ~is_boundary[previous]).to(torch.float64)
            loss_sum += (nll.to(torch.float64) * scored).sum()
            byte_sum += (nbytes * scored).sum()
            token_sum += scored.sum()
    if dist.is_available() and dist.is_initialized():
        for value in (loss_sum, byte_sum, token_sum):
            dist.all_reduce(value)
    if token_sum.item() == 0:  # a rank's share of an unreduced evaluation can be empty
        return math.nan, math.nan, 0
    val_loss = (loss_sum / token_sum).item()
    return val_loss, val_loss / math.log(2.0) * token_sum.item() / byte_sum.item(), int(token_sum.item())


# -----------------------------------------------------------------------------
# Training


def lr_multiplier(config: Config, step: int, elapsed_ms: float) -> float:
    """1 until the warmdown, then linear to 0 at the last step (or at the wallclock cap)."""
    if config.warmdown_iters <= 0:
        return 1.0
    if config.max_wallclock_seconds <= 0:
        start = max(config.iterations - config.warmdown_iters, 0)
        return max((config.iterations - step) / max(config.warmdown_iters, 1), 0.0) if step >= start else 1.0
    warmdown_ms = config.warmdown_iters * elapsed_ms / max(step, 1)
    remaining_ms = max(1000.0 * config.max_wallclock_seconds - elapsed_ms, 0.0)
    return remaining_ms / max(warmdown_ms, 1e-9) if remaining_ms <= warmdown_ms else 1.0


def main() -> None:
    config = Config.from_env()
    code = Path(__file__).read_text(encoding="utf-8")

    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    rank, world_size = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)  # tiny CPU runs are op-overhead bound; more threads only contend
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if distributed:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    master = rank == 0
    grad_accum_steps = config.grad_accum_steps or 8 // world_size
    if grad_accum_steps <= 0 or config.train_batch_tokens % (world_size * grad_accum_steps * config.train_seq_len):
        raise ValueError(f"TRAIN_BATCH_TOKENS={config.train_batch_tokens} must split into whole sequences of "
                         f"{config.train_seq_len} over {world_size} ranks x {grad_accum_steps} accumulation steps")
    local_batch_tokens = config.train_batch_tokens // (world_size * grad_accum_steps)
    use_compile = config.compile == 1 or (config.compile == -1 and device.type == "cuda")
    autocast_dtype = torch.bfloat16 if device.type == "cuda" else None

    run_id = config.run_id or str(uuid.uuid4())
    output_dir = Path(config.output_dir)
    logfile = output_dir / "logs" / f"{run_id}.txt"
    if master:
        logfile.parent.mkdir(parents=True, exist_ok=True)
        print(logfile)

    def log(message: str, console: bool = True) -> None:
        if master:
            if console:
                print(message, flush=True)
            with open(logfile, "a", encoding="utf-8") as f:
                print(message, file=f)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    log(code, console=False)
    log("=" * 100, console=False)
    log(f"Running Python {sys.version}", console=False)
    log(f"Running PyTorch {torch.__version__}", console=False)
    if device.type == "cuda" and shutil.which("nvidia-smi"):
        log(subprocess.run(["nvidia-smi"], capture_output=True, text=True, check=False).stdout, console=False)
    log("=" * 100, console=False)
    settings = {f.name: getattr(config, f.name) for f in fields(config)} | {"run_id": run_id}
    log("Hyperparameters: " + " ".join(f"{name}:{value}" for name, value in settings.items()))

    torch.manual_seed(config.seed)
    np.random.seed(config.seed)

    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=config.tokenizer_path)
    if int(sp.vocab_size()) != config.vocab_size:
        raise ValueError(f"VOCAB_SIZE={config.vocab_size} but the tokenizer has {int(sp.vocab_size())} pieces")
    luts = build_byte_luts(sp, config.vocab_size, device)
    train_pattern = os.path.join(config.data_path, "fineweb_train_*.bin")
    val_pattern = os.path.join(config.data_path, "fineweb_val_*.bin")
    val_tokens = load_validation_tokens(val_pattern)
    log(f"val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path={config.tokenizer_path}")
    log(f"train_loader:dataset:{Path(config.data_path).resolve().name} train_shards:{len(shard_files(train_pattern))}")
    log(f"val_loader:shards pattern={val_pattern} tokens:{val_tokens.numel() - 1}")

    # Model and optimizers -----------------------------------------------------------------
    model = GPT(config).to(device)
    model.activation_dtype = autocast_dtype or torch.float32
    compiled = torch.compile(model, dynamic=False, fullgraph=True) if use_compile else model
    train_model = DDP(compiled, device_ids=[local_rank] if device.type == "cuda" else None, broadcast_buffers=False) if distributed else compiled
    muon, optimizers = build_optimizers(model, config, device)
    if use_compile:
        muon.orthogonalize = torch.compile(newton_schulz)
    matrices = sum(p.numel() for p in muon.param_groups[0]["params"])
    log(f"model_params:{sum(p.numel() for p in model.parameters())} entry:{config.num_entry_layers} "
        f"shared:{config.num_shared_blocks} loops:{config.num_loops} exit:{config.num_exit_layers} "
        f"eff_layers:{config.num_layers} weight_blocks:{len(model.blocks)} muon_params:{matrices}")
    log(f"world_size:{world_size} grad_accum_steps:{grad_accum_steps}")
    log(f"device:{device.type} compile:{int(use_compile)} autocast:{autocast_dtype}")
    log(f"attention_mode:gqa num_heads:{config.num_heads} num_kv_heads:{config.num_kv_heads}")
    log(f"train_batch_tokens:{config.train_batch_tokens} train_seq_len:{config.train_seq_len} "
        f"iterations:{config.iterations} warmup_steps:{config.warmup_steps} "
        f"max_wallclock_seconds:{config.max_wallclock_seconds:.3f}")
    log(f"seed:{config.seed}")

    def autocast():
        return torch.autocast(device_type=device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None)

    def train_step(loader: DistributedTokenLoader) -> Tensor:
        """Forward/backward over the accumulation steps; returns the mean loss (on device)."""
        total = torch.zeros((), device=device)
        for micro_step in range(grad_accum_steps):
            x, y = loader.next_batch(local_batch_tokens, config.train_seq_len)
            last = micro_step == grad_accum_steps - 1
            with train_model.no_sync() if distributed and not last else contextlib.nullcontext():
                with autocast():
                    loss = train_model(x, y)
                (loss / grad_accum_steps).backward()
            total += loss.detach()
        return total / grad_accum_steps

    def zero_grad() -> None:
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)

    # Warmup: prime compiled paths on real steps, then restore the initial weights and state.
    if config.warmup_steps > 0:
        initial_model = copy.deepcopy(model.state_dict())
        initial_optimizers = [copy.deepcopy(opt.state_dict()) for opt in optimizers]
        loader = DistributedTokenLoader(train_pattern, rank, world_size, device)
        for warmup_step in range(config.warmup_steps):
            train_step(loader)
            for opt in optimizers:
                opt.step()
            zero_grad()
            log(f"warmup_step:{warmup_step + 1}/{config.warmup_steps}")
        model.load_state_dict(initial_model)
        for opt, state in zip(optimizers, initial_optimizers):
            opt.load_state_dict(state)
        zero_grad()

    # Main loop ----------------------------------------------------------------------------
    loader = DistributedTokenLoader(train_pattern, rank, world_size, device)
    hidden_fn = torch.compile(model.hidden_states, dynamic=False) if use_compile else model.hidden_states
    training_ms = 0.0
    stop_after: int | None = None
    sync()
    t0 = time.perf_counter()
    step = 0
    while True:
        last_step = step == config.iterations or (stop_after is not None and step >= stop_after)
        if last_step or (config.val_loss_every > 0 and step % config.val_loss_every == 0 and step > 0):
            sync()
            training_ms += 1000.0 * (time.perf_counter() - t0)
            model.eval()
            val_loss, val_bpb, _ = evaluate(model, hidden_fn, val_tokens, luts, config.train_seq_len, config.train_seq_len,
                                            config.eval_batch_seqs, rank, world_size, device)
            model.train()
            log(f"step:{step}/{config.iterations} val_loss:{val_loss:.4f} val_bpb:{val_bpb:.4f} "
                f"train_time:{training_ms:.0f}ms step_avg:{training_ms / max(step, 1):.2f}ms")
            sync()
            t0 = time.perf_counter()
        if last_step:
            if stop_after is not None and step < config.iterations:
                log(f"stopping_early: wallclock_cap train_time:{training_ms:.0f}ms step:{step}/{config.iterations}")
            break

        elapsed_ms = training_ms + 1000.0 * (time.perf_counter() - t0)
        scale = lr_multiplier(config, step, elapsed_ms)
        frac = min(step / config.muon_momentum_warmup_steps, 1.0) if config.muon_momentum_warmup_steps > 0 else 1.0
        for group in muon.param_groups:
            group["momentum"] = (1 - frac) * config.muon_momentum_warmup_start + frac * config.muon_momentum
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * scale
        train_loss = train_step(loader)
        for opt in optimizers:
            opt.step()
        zero_grad()
        step += 1

        approx_ms = training_ms + 1000.0 * (time.perf_counter() - t0)
        if config.train_log_every > 0 and (step <= 10 or step % config.train_log_every == 0 or stop_after is not None):
            if distributed:  # log the global batch's loss, not rank 0's share
                dist.all_reduce(train_loss)
                train_loss /= world_size
            log(f"step:{step}/{config.iterations} train_loss:{train_loss.item():.4f} "
                f"train_time:{approx_ms:.0f}ms step_avg:{approx_ms / step:.2f}ms")
        if config.max_wallclock_seconds > 0 and stop_after is None:
            reached = approx_ms >= 1000.0 * config.max_wallclock_seconds
            if distributed:  # every rank must stop at the same step
                flag = torch.tensor(int(reached), device=device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                reached = bool(flag.item())
            if reached:
                stop_after = step

    if device.type == "cuda":
        log(f"peak memory allocated: {torch.cuda.max_memory_allocated() // 2**20} MiB "
            f"reserved: {torch.cuda.max_memory_reserved() // 2**20} MiB")

    # Artifact -----------------------------------------------------------------------------
    buffer = io.BytesIO()
    torch.save(quantize_state_dict(model.state_dict()), buffer)
    raw = buffer.getvalue()
    codec, blob, sizes = compress_artifact(raw, log)
    artifact_path = output_dir / "final_model.int8.ptz"
    code_bytes = len(code.encode("utf-8"))
    if master:
        artifact_path.write_bytes(blob)
        for name in sorted(sizes, key=lambda n: n == codec):  # the artifact's line last
            log(f"Serialized model int8+{name}: {sizes[name]} bytes (raw_torch:{len(raw)})")
        log(f"Code size: {code_bytes} bytes")
        log(f"Total submission size int8+{codec}: {code_bytes + sizes[codec]} bytes")

    # Round trip: evaluate the weights as the artifact file stores them (read back by rank 0
    # and broadcast, so that nodes need not share a file system).
    stored = [artifact_path.read_bytes() if master else None]
    if distributed:
        dist.broadcast_object_list(stored, src=0)
    restored = decompress_artifact(stored[0])
    if master and restored != raw:
        raise RuntimeError("artifact round trip changed the bytes")
    model.load_state_dict(dequantize_state_dict(torch.load(io.BytesIO(restored), map_location="cpu")))
    model.eval()
    sync()
    t_eval = time.perf_counter()
    val_loss, val_bpb, scored = evaluate(model, hidden_fn, val_tokens, luts, config.window, config.eval_stride,
                                         config.eval_batch_seqs, rank, world_size, device)
    sync()
    log(f"final_eval window:{config.window} stride:{config.eval_stride} scored_tokens:{scored}")
    log(f"final_int8_zlib_roundtrip val_loss:{val_loss:.4f} val_bpb:{val_bpb:.4f} "
        f"eval_time:{1000.0 * (time.perf_counter() - t_eval):.0f}ms")
    log(f"final_int8_zlib_roundtrip_exact val_loss:{val_loss:.8f} val_bpb:{val_bpb:.8f}")
    if distributed:
        dist.barrier()  # no rank tears gloo down while a peer still talks to it (SIGABRT at exit)
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
