"""fp8 self-attention on cuDNN's fused fp8 SDPA kernel (Hopper's fp8 flash attention).

Why: self-attention over 32,760 tokens is ~60% of a Wan block's time with our 8-bit Triton
kernel (local_engine/sage.py, ~680 TFLOP/s-equivalent on an H200); cuDNN's fp8 kernel is
warp-specialized, which Triton does not do on Hopper, and NVIDIA publishes up to 1.2 PFLOP/s
for it on the H200. It is reached through cuDNN's own Python frontend
(`nvidia-cudnn-frontend`, optional: PyTorch's SDPA has no fp8 entry).

The recipe, within what the kernel takes (one scale per tensor):
- K is smoothed (its mean over the tokens subtracted: softmax does not change) and V centred
  (its mean added back to the output: each row's probabilities sum to one), so that one scale
  per tensor is not spent on Wan's channel offsets;
- Q, K, V are cast to fp8 e4m3 with one scale each (device tensors: no host sync);
- P (the kernel's unnormalized probabilities, at most 1) is scaled by 448, e4m3's largest value;
- O comes back in fp8 (on Hopper the kernel writes fp8 only), scaled by 448 / max|V|: O is a
  convex combination of V's rows, so it cannot overflow. It is cast back to the query's dtype.

`reference` does the same quantization around exact float32 attention: the CPU path and the CI
tests use it; the GPU test checks the cuDNN path against it and against exact attention.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch

FP8 = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8).max)


class Quantized(NamedTuple):
    """(B, S, H, D) fp8 Q, K (smoothed), V (centred); their float32 dequantization scales as
    one-element tensors; V's mean over the tokens, (B, 1, H, D) float32."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    q_scale: torch.Tensor
    k_scale: torch.Tensor
    v_scale: torch.Tensor
    v_mean: torch.Tensor


def quantize(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> Quantized:
    """Plain torch ops, so that inside a compiled block inductor fuses them with the RoPE."""
    k = k.float() - k.float().mean(dim=1, keepdim=True)
    v_mean = v.float().mean(dim=1, keepdim=True)
    v = v.float() - v_mean

    def cast(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale = (x.abs().amax().float() / FP8_MAX).clamp(min=1e-12).reshape(1, 1, 1, 1)
        return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale

    (q8, qs), (k8, ks), (v8, vs) = cast(q), cast(k), cast(v)
    return Quantized(q8, k8, v8, qs, ks, vs, v_mean)


def reference(qz: Quantized, out_dtype: torch.dtype) -> torch.Tensor:
    """The kernel's arithmetic, exactly where it can be (quantized inputs, fp8 output at the
    kernel's scale), around float32 attention. (B, S, H, D) in `out_dtype`."""
    q, k, v = (x.float() * s for x, s in ((qz.q, qz.q_scale), (qz.k, qz.k_scale), (qz.v, qz.v_scale)))
    o = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    o8 = (o.transpose(1, 2) / qz.v_scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return (o8.float() * qz.v_scale + qz.v_mean).to(out_dtype)


try:  # the optional extra `cudnn-fp8`; absent on CPU installs (CI) and by default
    import cudnn  # type: ignore[import-not-found]
except (ImportError, OSError):  # pragma: no cover - depends on the install
    cudnn = None


def available() -> bool:
    """cuDNN's frontend is importable and a Hopper-or-newer GPU is present."""
    return cudnn is not None and torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 9


class _Plan(NamedTuple):
    graph: Any
    handle: Any
    tensors: tuple[Any, ...]  # q, k, v, descale q/k/v/s, scale s/o, o
    workspace: torch.Tensor
    buffers: tuple[torch.Tensor, ...]  # descale_s, scale_s; amax_s, amax_o (written, not read)


_PLANS: dict[tuple[Any, ...], _Plan] = {}


def _plan(shape: tuple[int, ...], device: torch.device) -> _Plan:
    """Build (once per shape and device) the cuDNN graph for (B, S, H, D) tensors."""
    key = (shape, device.index)
    if key in _PLANS:
        return _PLANS[key]
    batch, seq, heads, dim = shape
    e4m3, fp32 = cudnn.data_type.FP8_E4M3, cudnn.data_type.FLOAT
    with torch.cuda.device(device):
        handle = cudnn.create_handle()
        graph = cudnn.pygraph(io_data_type=e4m3, intermediate_data_type=fp32, compute_data_type=fp32, handle=handle)
        dims = [batch, heads, seq, dim]  # cuDNN's order; the strides keep diffusers' (B, S, H, D) memory
        strides = [seq * heads * dim, dim, heads * dim, 1]
        q, k, v = (graph.tensor(name=n, dim=dims, stride=strides, data_type=e4m3) for n in "qkv")
        scalar = {"dim": [1, 1, 1, 1], "stride": [1, 1, 1, 1], "data_type": fp32}
        dq, dk, dv, ds, ss, so = (graph.tensor(name=n, **scalar) for n in ("dq", "dk", "dv", "ds", "ss", "so"))
        o, _, amax_s, amax_o = graph.sdpa_fp8(
            q=q, k=k, v=v, descale_q=dq, descale_k=dk, descale_v=dv, descale_s=ds, scale_s=ss, scale_o=so,
            generate_stats=False, attn_scale=1.0 / math.sqrt(dim), use_causal_mask=False, name="self_attention",
        )  # fmt: skip
        o.set_output(True).set_dim(dims).set_stride(strides).set_data_type(e4m3)
        for amax in (amax_s, amax_o):
            amax.set_output(True).set_dim([1, 1, 1, 1]).set_stride([1, 1, 1, 1]).set_data_type(fp32)
        graph.validate()
        graph.build_operation_graph()
        graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
        graph.check_support()
        graph.build_plans()
        workspace = torch.empty(max(graph.get_workspace_size(), 1), device=device, dtype=torch.uint8)
        # P <= 1 (the running row max maps to 1), so it is scaled to e4m3's largest value.
        buffers = (
            torch.full((1, 1, 1, 1), 1.0 / FP8_MAX, device=device),
            torch.full((1, 1, 1, 1), FP8_MAX, device=device),
            torch.empty(1, 1, 1, 1, device=device),
            torch.empty(1, 1, 1, 1, device=device),
        )
    plan = _Plan(graph, handle, (q, k, v, dq, dk, dv, ds, ss, so, o, amax_s, amax_o), workspace, buffers)
    _PLANS[key] = plan
    return plan


@torch.library.custom_op("i2v::cudnn_fp8_sdpa", mutates_args=())
def _cudnn_fp8_sdpa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_scale: torch.Tensor,
    k_scale: torch.Tensor,
    v_scale: torch.Tensor,
) -> torch.Tensor:
    """The cuDNN call as a custom op: `torch.compile(fullgraph=True)` keeps it as one opaque call
    and fuses the quantization around it. Returns O in fp8 at scale `v_scale`."""
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()  # the graph's strides
    plan = _plan(tuple(q.shape), q.device)
    out = torch.empty_like(q)
    scale_o = 1.0 / v_scale  # |O| <= max|V| (a convex combination of V's rows): O * 448 / max|V| fits
    tq, tk, tv, dq, dk, dv, ds, ss, so, to, amax_s, amax_o = plan.tensors
    cudnn.set_stream(handle=plan.handle, stream=torch.cuda.current_stream(q.device).cuda_stream)
    descale_s, scale_s, amax_s_out, amax_o_out = plan.buffers
    pack = {
        tq: q, tk: k, tv: v, dq: q_scale, dk: k_scale, dv: v_scale, ds: descale_s, ss: scale_s,
        so: scale_o, to: out, amax_s: amax_s_out, amax_o: amax_o_out,
    }  # fmt: skip
    plan.graph.execute(pack, plan.workspace, handle=plan.handle)
    return out


@_cudnn_fp8_sdpa.register_fake
def _(q, k, v, q_scale, k_scale, v_scale):  # type: ignore[no-untyped-def]
    return torch.empty_like(q)


def kernel(qz: Quantized, out_dtype: torch.dtype) -> torch.Tensor:
    """cuDNN's fp8 kernel on quantized inputs; (B, S, H, D) in `out_dtype`."""
    o8 = _cudnn_fp8_sdpa(qz.q, qz.k, qz.v, qz.q_scale, qz.k_scale, qz.v_scale)
    return (o8.float() * qz.v_scale + qz.v_mean).to(out_dtype)


def fp8_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Attention over (B, S, H, D) tensors in fp8, in q's dtype: cuDNN's kernel on a Hopper GPU
    with the frontend installed, the float32 twin elsewhere."""
    qz = quantize(q, k, v)
    if q.is_cuda and available() and q.shape[-1] % 16 == 0:
        return kernel(qz, q.dtype)
    return reference(qz, q.dtype)
