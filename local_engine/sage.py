"""8-bit attention for the self-attention of the Wan blocks (the SageAttention 2 recipe, in Triton).

Why: at 480p, self-attention over 32,760 tokens is 1.5 s of a 2.3 s transformer forward even on
cuDNN's bf16 kernel, and Hopper's 8-bit tensor cores run at twice the bf16 rate.

The recipe (Zhang et al., "SageAttention2", 2024):
- K is smoothed: its mean over the tokens is subtracted (softmax does not change, and the
  quantization range no longer carries the channel-wise offset that Wan's keys have);
- Q is quantized with one scale per token and K with one per key block (int8, or fp8 e4m3), and
  Q·Kᵀ runs on 8-bit tensor cores;
- V is centred (its mean is added back to the output: the probabilities of a row sum to one) and
  quantized to fp8 e4m3 with one scale per channel; P is kept in [0, 256] (the running row max
  maps to 256, which e4m3 represents exactly) and cast to fp8; P·V runs in fp8 into a fresh fp32
  accumulator per key block (Hopper's fp8 accumulators are narrower than fp32). The
  `pv_fp8=False` variant keeps V and P in bf16 (SageAttention 1): slower, more accurate.

Measured on an H100 (docs/benchmarks.md): 1.15x cuDNN's bf16 kernel at 32,760 tokens, and
4.66 -> 4.46 s per guided step with everything else on (same run); 4% relative error on a flat
attention over 32,760 keys.

`reference` does the same arithmetic, block by block, in float32 with torch: the CPU path and the
CI tests use it; the GPU test checks the Triton kernel against it and against exact attention.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

FP8 = torch.float8_e4m3fn
#: Probabilities are cast as p * 2**P_SHIFT (the running row max becomes 256, exact in e4m3).
P_SHIFT = 8.0
#: Tokens per Q scale: one per token (the kernel multiplies each row by its own scale anyway;
#: against one scale per 128 tokens the Q·Kᵀ error drops from 2.7% to 2.3% on flat attention
#: over 4,096 keys). K has one scale per key block.
Q_BLOCK = 1
#: Sequences are padded to a multiple of this (the largest BLOCK_M / BLOCK_N of CONFIGS).
PAD = 128
LOG2E = 1.4426950408889634


class Quantized(NamedTuple):
    """Q, K, V ready for the kernel: (B*H, S_pad, D) int8/fp8 Q and K; V either fp8 as
    (B*H, D, S_pad) (tokens contiguous: fp8 tensor cores want the reduction axis innermost) or
    bf16 as (B*H, S_pad, D); float32 scales."""

    q: torch.Tensor
    q_scale: torch.Tensor  # (BH, S_pad / Q_BLOCK), sm_scale * log2 e folded in
    k: torch.Tensor
    k_scale: torch.Tensor  # (BH, S_pad / k_block)
    v: torch.Tensor
    v_scale: torch.Tensor  # (BH, D); ones for bf16 V
    v_mean: torch.Tensor  # (BH, D); zeros for bf16 V


def quantize(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    qk_dtype: torch.dtype = torch.int8,
    pv_fp8: bool = True,
    k_block: int = 64,
) -> Quantized:
    """Plain torch ops, so that inside a compiled block inductor fuses them into a few passes.
    `k_block` must be the kernel's BLOCK_N (one K scale per key block keeps the loop lean)."""
    batch, seq, heads, dim = q.shape
    pad = -seq % max(PAD, k_block)

    def heads_first(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:  # (B, S, H, D) -> (B*H, S, D)
        return x.to(dtype).transpose(1, 2).reshape(batch * heads, seq, dim)

    def padded(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(x, (0, 0, 0, pad))

    kf = heads_first(k)
    kf = kf - kf.mean(dim=1, keepdim=True)
    # softmax(x) = 2 ** (x * log2 e): sm_scale and log2 e are folded into Q's scales.
    q8, q_scale = _quantize_blocks(padded(heads_first(q)), Q_BLOCK, qk_dtype)
    k8, k_scale = _quantize_blocks(padded(kf), k_block, qk_dtype)
    q_scale = q_scale * (LOG2E / math.sqrt(dim))
    if not pv_fp8:
        ones = torch.ones(batch * heads, dim, device=q.device)
        v16 = padded(heads_first(v, torch.bfloat16)).contiguous()
        return Quantized(q8, q_scale, k8, k_scale, v16, ones, torch.zeros_like(ones))
    vf = heads_first(v)
    v_mean = vf.mean(dim=1, keepdim=True)
    vf = vf - v_mean
    v_scale = (vf.abs().amax(dim=1, keepdim=True) / torch.finfo(FP8).max).clamp(min=1e-12)
    v8 = padded(vf / v_scale).to(FP8).transpose(1, 2).contiguous()
    return Quantized(q8, q_scale, k8, k_scale, v8, v_scale.squeeze(1), v_mean.squeeze(1))


def _quantize_blocks(x: torch.Tensor, block: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """One symmetric scale per `block` tokens of each head: values (BH, S_pad, D), scales (BH, S_pad/block)."""
    bh, seq, dim = x.shape
    xb = x.reshape(bh, seq // block, block * dim)
    top = 127.0 if dtype == torch.int8 else torch.finfo(dtype).max
    scale = (xb.abs().amax(dim=-1) / top).clamp(min=1e-12)
    xq = xb / scale[..., None]
    xq = xq.round().clamp(-127, 127).to(torch.int8) if dtype == torch.int8 else xq.to(dtype)
    return xq.reshape(bh, seq, dim), scale.contiguous()


def _pv_fp8(qz: Quantized) -> bool:
    return qz.v.dtype == FP8


def reference(qz: Quantized, shape: tuple[int, ...]) -> torch.Tensor:
    """The kernel's arithmetic in float32 torch, key block by key block (online softmax).
    Returns (B, S, H, D) float32."""
    batch, seq, heads, dim = shape
    k_block = qz.k.shape[1] // qz.k_scale.shape[1]
    q = qz.q.float() * qz.q_scale.repeat_interleave(Q_BLOCK, dim=1)[..., None]
    k = qz.k.float() * qz.k_scale.repeat_interleave(k_block, dim=1)[..., None]
    v = qz.v.float().transpose(1, 2) if _pv_fp8(qz) else qz.v.float()  # (BH, S_pad, D)
    p_dtype = FP8 if _pv_fp8(qz) else torch.bfloat16
    m = torch.full((q.shape[0], q.shape[1], 1), -torch.inf, device=q.device)
    denom = torch.zeros_like(m)
    acc = torch.zeros(q.shape[0], q.shape[1], dim, device=q.device)
    for start in range(0, seq, k_block):
        stop = min(start + k_block, seq)
        s = q @ k[:, start:stop].transpose(1, 2)
        m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True))
        p = torch.exp2(s - m_new + P_SHIFT)
        alpha = torch.exp2(m - m_new)
        denom = denom * alpha + p.sum(dim=-1, keepdim=True)
        acc = acc * alpha + p.to(p_dtype).float() @ v[:, start:stop]
        m = m_new
    out = acc / denom * qz.v_scale[:, None] + qz.v_mean[:, None]
    return out[:, :seq].reshape(batch, heads, seq, dim).transpose(1, 2)


def exact(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Plain attention in float32, (B, S, H, D) in and out: what the tests measure against."""
    out = torch.nn.functional.scaled_dot_product_attention(
        q.float().transpose(1, 2), k.float().transpose(1, 2), v.float().transpose(1, 2)
    )
    return out.transpose(1, 2)


try:  # Triton comes with CUDA builds of torch; the CPU path (CI) does without it.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None

if triton is not None:

    @triton.jit
    def _block(acc, denom, m_i, q, q_scale, k_ptrs, v_ptrs, ks_ptr, start_n, seq, offs_n,
               MASK: tl.constexpr, QK_INT8: tl.constexpr, PV_FP8: tl.constexpr, P_SHIFT: tl.constexpr):  # fmt: skip
        k = tl.load(k_ptrs)
        if QK_INT8:
            # int32 -> float32 by the exponent trick (|s| < 2**22 for 128 x int8 products):
            # two full-rate adds instead of the quarter-rate I2F conversion.
            s = (tl.dot(q, k) + 0x4B400000).to(tl.float32, bitcast=True) - 12582912.0
        else:
            s = tl.dot(q, k)
        if MASK:
            s = tl.where((start_n + offs_n)[None, :] < seq, s, -float("inf"))
        # One scale per row (Q block x key block, > 0): the row max is taken on the raw scores
        # and the scale goes into the exponent's FMA, so each score costs max, FMA, exp2, add.
        c = q_scale * tl.load(ks_ptr)
        m_new = tl.maximum(m_i, tl.max(s, 1) * c)
        p = tl.math.exp2(s * c[:, None] - (m_new - P_SHIFT)[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        denom = denom * alpha + tl.sum(p, 1)
        v = tl.load(v_ptrs)
        if PV_FP8:
            acc = acc * alpha[:, None] + tl.dot(p.to(tl.float8e4nv), v)
        else:
            acc = tl.dot(p.to(tl.bfloat16), v, acc * alpha[:, None])
        return acc, denom, m_new

    @triton.jit
    def _fwd(Q, K, V, QS, KS, VS, VM, Out,
             seq, seq_pad, heads, stride_vn, stride_vd, stride_ob, stride_os, stride_oh,
             HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, Q_GROUP: tl.constexpr,
             QK_INT8: tl.constexpr, PV_FP8: tl.constexpr, P_SHIFT: tl.constexpr):  # fmt: skip
        start_m = tl.program_id(0)
        bh = tl.program_id(1).to(tl.int64)
        offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, HEAD_DIM)
        base = bh * seq_pad * HEAD_DIM
        q = tl.load(Q + base + offs_m[:, None] * HEAD_DIM + offs_d[None, :])
        q_scale = tl.load(QS + bh * (seq_pad // Q_GROUP) + offs_m // Q_GROUP)
        k_ptrs = K + base + offs_n[None, :] * HEAD_DIM + offs_d[:, None]  # (D, BLOCK_N)
        v_ptrs = V + base + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd  # (BLOCK_N, D)
        ks_ptr = KS + bh * (seq_pad // BLOCK_N)
        m_i = tl.full([BLOCK_M], -float("inf"), tl.float32)
        denom = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
        full = (seq // BLOCK_N) * BLOCK_N
        for start_n in range(0, full, BLOCK_N):
            acc, denom, m_i = _block(acc, denom, m_i, q, q_scale, k_ptrs, v_ptrs, ks_ptr, start_n, seq, offs_n,
                                     False, QK_INT8, PV_FP8, P_SHIFT)  # fmt: skip
            k_ptrs += BLOCK_N * HEAD_DIM
            v_ptrs += BLOCK_N * stride_vn
            ks_ptr += 1
        if full < seq:
            acc, denom, m_i = _block(acc, denom, m_i, q, q_scale, k_ptrs, v_ptrs, ks_ptr, full, seq, offs_n,
                                     True, QK_INT8, PV_FP8, P_SHIFT)  # fmt: skip
        v_scale = tl.load(VS + bh * HEAD_DIM + offs_d)
        v_mean = tl.load(VM + bh * HEAD_DIM + offs_d)
        out = acc * (1.0 / denom)[:, None] * v_scale[None, :] + v_mean[None, :]
        b = bh // heads
        h = bh % heads
        o_ptrs = Out + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_os + offs_d[None, :]
        tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=offs_m[:, None] < seq)


#: (BLOCK_M, BLOCK_N, num_warps, num_stages); `bench/engine.py --part attention` times each.
CONFIGS = [(64, 64, 4, 4), (128, 64, 8, 3), (128, 128, 8, 3), (128, 64, 4, 3), (64, 128, 4, 3)]
#: The fastest config per (Q·Kᵀ in int8, P·V in fp8) at 480p on the H100 (docs/benchmarks.md).
BEST_CONFIG = {(True, True): (64, 128, 4, 3), (False, True): (128, 128, 8, 3), (True, False): (128, 64, 4, 3)}
#: Head sizes the kernel is built and tested for (Wan: 128); others take the torch path.
KERNEL_HEAD_DIMS = (64, 128)


def kernel(
    qz: Quantized, shape: tuple[int, ...], out_dtype: torch.dtype, config: tuple[int, int, int, int]
) -> torch.Tensor:
    """Run the Triton kernel on quantized inputs; (B, S, H, D) in `out_dtype`."""
    batch, seq, heads, dim = shape
    block_m, block_n, warps, stages = config
    seq_pad = qz.q.shape[1]
    out = torch.empty(batch, seq, heads, dim, device=qz.q.device, dtype=out_dtype)
    fp8_v = _pv_fp8(qz)
    stride_vn, stride_vd = (1, seq_pad) if fp8_v else (dim, 1)
    assert seq_pad // qz.k_scale.shape[1] == block_n, "quantize(k_block=...) must match the kernel's BLOCK_N"
    _fwd[(seq_pad // block_m, batch * heads)](
        qz.q, qz.k, qz.v, qz.q_scale, qz.k_scale, qz.v_scale, qz.v_mean, out,
        seq, seq_pad, heads, stride_vn, stride_vd, out.stride(0), out.stride(1), out.stride(2),
        HEAD_DIM=dim, BLOCK_M=block_m, BLOCK_N=block_n, Q_GROUP=Q_BLOCK,
        QK_INT8=qz.q.dtype == torch.int8, PV_FP8=fp8_v, P_SHIFT=P_SHIFT, num_warps=warps, num_stages=stages,
    )  # fmt: skip
    return out


@torch.library.custom_op("i2v::sage_kernel", mutates_args=())
def _sage_kernel(
    q: torch.Tensor,
    q_scale: torch.Tensor,
    k: torch.Tensor,
    k_scale: torch.Tensor,
    v: torch.Tensor,
    v_scale: torch.Tensor,
    v_mean: torch.Tensor,
    batch: int,
    seq: int,
    out_dtype: torch.dtype,
    config: list[int],
) -> torch.Tensor:
    """The kernel as a custom op: `torch.compile(fullgraph=True)` keeps it as one opaque call
    and fuses the quantization around it."""
    qz = Quantized(q, q_scale, k, k_scale, v, v_scale, v_mean)
    heads = q.shape[0] // batch
    block_m, block_n, warps, stages = config
    return kernel(qz, (batch, seq, heads, q.shape[2]), out_dtype, (block_m, block_n, warps, stages))


@_sage_kernel.register_fake
def _(q, q_scale, k, k_scale, v, v_scale, v_mean, batch, seq, out_dtype, config):  # type: ignore[no-untyped-def]
    return q.new_empty((batch, seq, q.shape[0] // batch, q.shape[2]), dtype=out_dtype)


def sage_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, qk_int8: bool = True, pv_fp8: bool = True
) -> torch.Tensor:
    """Attention over (B, S, H, D) tensors with 8-bit Q·Kᵀ and fp8 (or bf16) P·V, in q's dtype:
    the Triton kernel on CUDA (head sizes 64 and 128), the float32 twin elsewhere."""
    config = BEST_CONFIG[qk_int8, pv_fp8]
    qz = quantize(q, k, v, torch.int8 if qk_int8 else FP8, pv_fp8, k_block=config[1])
    if q.is_cuda and triton is not None and q.shape[-1] in KERNEL_HEAD_DIMS:
        return _sage_kernel(*qz, q.shape[0], q.shape[1], q.dtype, list(config))
    return reference(qz, tuple(q.shape)).to(q.dtype)
