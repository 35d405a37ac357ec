"""Q and K for cuDNN's fp8 attention in one pass: RMSNorm over the heads, RoPE, mean, fp8 cast.

Why: inductor's kernel for the same ops (norm, rotary embedding, smoothing, cast into the
kernel's heads-first layout) took 1.09 ms a block on an H200 for ~1 GB of memory traffic
(~0.3 ms at the GPU's bandwidth): 44 ms of every 1.85 s forward. Here one program holds one
token's whole row (40 heads x 128 channels) in registers, so the row is read once, its sum of
squares and the rotation come from the same registers, and the fp8 row is written once:
0.28-0.31 ms per tensor, 22-25 ms a forward where inductor's took 44 (docs/benchmarks.md).

Arithmetic is float32 throughout (diffusers rounds to bf16 after the norm and after RoPE; this
does not, so it is as close or closer to float32 Q and K). The CPU path, and the reference the
tests compare the kernel with, is `reference`: the same ops in torch.
"""

from __future__ import annotations

import torch

FP8 = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8).max)

try:  # Triton comes with CUDA builds of torch; the CPU path (CI) does without it.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None

if triton is not None:

    @triton.jit
    def _norm_rope_fp8(X, W, COS, SIN, MEAN, SCALE, OUT,
                       seq, stride_xb, stride_xs, stride_cs, stride_ob, stride_oh, stride_os, eps,
                       HEADS: tl.constexpr, DIM: tl.constexpr, BLOCK: tl.constexpr, HAS_MEAN: tl.constexpr,
                       FP8_MAX: tl.constexpr):  # fmt: skip
        row = tl.program_id(0).to(tl.int64)
        b = row // seq
        s = row % seq
        c = tl.arange(0, BLOCK)  # channels over all heads, read and written contiguously
        mask = c < HEADS * DIM
        x = tl.load(X + b * stride_xb + s * stride_xs + c, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.rsqrt(tl.sum(x * x, 0) / (HEADS * DIM) + eps)
        x = x * rstd * tl.load(W + c, mask=mask, other=0.0).to(tl.float32)
        even, odd = tl.split(tl.reshape(x, [BLOCK // 2, 2]))  # channel pairs (2i, 2i+1)
        j = tl.arange(0, BLOCK // 2) % (DIM // 2)  # a pair's place within its head
        pair_mask = tl.arange(0, BLOCK // 2) < HEADS * DIM // 2
        cos = tl.load(COS + s * stride_cs + 2 * j, mask=pair_mask, other=0.0).to(tl.float32)
        sin = tl.load(SIN + s * stride_cs + 2 * j + 1, mask=pair_mask, other=0.0).to(tl.float32)
        y = tl.reshape(tl.join(even * cos - odd * sin, even * sin + odd * cos), [BLOCK])
        if HAS_MEAN:
            y -= tl.load(MEAN + c, mask=mask, other=0.0)
        # A product with the reciprocal (one division a program), not an IEEE division per value
        # (~10 instructions): the fixed-scale casts are bound by instructions (docs/benchmarks.md).
        y = tl.clamp(y * (1.0 / tl.load(SCALE)), -FP8_MAX, FP8_MAX)
        out = OUT + b * stride_ob + (c // DIM) * stride_oh + s * stride_os + c % DIM
        tl.store(out, y.to(tl.float8e4nv), mask=mask)


def _empty_heads_first(x: torch.Tensor, heads: int) -> torch.Tensor:
    """An fp8 (B, S, H, D) tensor laid out heads first, as cuDNN reads Q and K fastest."""
    batch, seq, inner = x.shape
    return torch.empty(batch, heads, seq, inner // heads, device=x.device, dtype=FP8).transpose(1, 2)


@torch.library.custom_op("i2v::norm_rope_fp8", mutates_args=())
def _kernel_op(
    x: torch.Tensor,
    weight: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    mean: torch.Tensor | None,
    scale: torch.Tensor,
    heads: int,
    eps: float,
) -> torch.Tensor:
    """The Triton kernel as a custom op: a compiled block keeps it as one call."""
    x = x if x.stride(-1) == 1 else x.contiguous()
    cos, sin = cos.contiguous(), sin.contiguous()
    mean = None if mean is None else mean.float().contiguous()
    out = _empty_heads_first(x, heads)
    batch, seq, inner = x.shape
    _norm_rope_fp8[(batch * seq,)](
        x, weight, cos, sin, scale if mean is None else mean, scale, out,
        seq, x.stride(0), x.stride(1), cos.stride(1), out.stride(0), out.stride(2), out.stride(1), eps,
        HEADS=heads, DIM=inner // heads, BLOCK=triton.next_power_of_2(inner), HAS_MEAN=mean is not None,
        FP8_MAX=FP8_MAX, num_warps=8,
    )  # fmt: skip
    return out


@_kernel_op.register_fake
def _(x, weight, cos, sin, mean, scale, heads, eps):  # type: ignore[no-untyped-def]
    return _empty_heads_first(x, heads)


def reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    mean: torch.Tensor | None,
    scale: torch.Tensor,
    heads: int,
    eps: float,
) -> torch.Tensor:
    """The same arithmetic in torch, float32: (B, S, H*D) in, fp8 (B, S, H, D) heads first out."""
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * weight.float()
    even, odd = y.unflatten(-1, (heads, -1, 2)).unbind(-1)  # (B, S, H, D/2)
    c, s = cos.float()[..., 0::2], sin.float()[..., 1::2]  # (1, S, 1, D/2)
    y = torch.stack((even * c - odd * s, even * s + odd * c), dim=-1).flatten(-2)
    if mean is not None:
        y = y - mean.float()
    y = (y * (1.0 / scale.float())).clamp(-FP8_MAX, FP8_MAX)
    out = _empty_heads_first(x, heads)
    out.copy_(y.to(FP8))
    return out


def usable(x: torch.Tensor, heads: int) -> bool:
    """The kernel runs here: CUDA, Triton, an even head size."""
    return x.is_cuda and triton is not None and x.dim() == 3 and (x.shape[-1] // heads) % 2 == 0


def norm_rope_fp8(
    x: torch.Tensor,
    norm: torch.nn.RMSNorm,
    rotary_emb: tuple[torch.Tensor, torch.Tensor],
    scale: torch.Tensor,
    heads: int,
    mean: torch.Tensor | None = None,
) -> torch.Tensor:
    """RMSNorm(x) (over all heads, as Wan's `norm_q`/`norm_k`), RoPE (diffusers' Wan tables:
    cos and sin repeated per channel pair, (1, S, 1, D)), minus `mean` ((1, 1, H, D) or None),
    over `scale`, cast to fp8 e4m3: a (B, S, H, D) tensor laid out heads first."""
    eps = norm.eps if norm.eps is not None else torch.finfo(x.dtype).eps
    weight = norm.weight if norm.weight is not None else torch.ones(x.shape[-1], device=x.device, dtype=x.dtype)
    cos, sin = rotary_emb
    args = (x, weight, cos, sin, mean, scale.reshape(1), heads, float(eps))
    return _kernel_op(*args) if usable(x, heads) else reference(*args)
