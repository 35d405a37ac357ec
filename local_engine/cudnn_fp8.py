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

In the transformer (`install`), Q's and K's scales are fixed, not measured per call: both come
out of an RMSNorm over the heads, whose output is bounded by its weight (`rms_bound`), and RoPE
rotates channel pairs, which keeps that bound. V's scale and the K and V means are calibrated with
the fp8 linears' (`accel.calibrate`), else measured per call. With all of them fixed, the
quantization is a pointwise epilogue of the norm and RoPE: no reduction over the 32,760 tokens
stands between the QKV projection and the kernel.

`reference` does the same quantization around exact float32 attention: the CPU path and the CI
tests use it; the GPU test checks the cuDNN path against it and against exact attention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from local_engine import qk_fp8

FP8 = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8).max)


#: Memory order of the fp8 tensors handed to cuDNN (their logical shape stays diffusers'
#: (B, S, H, D)): "bshd" as diffusers holds them, "bhsd" heads first. The cast writes new tensors
#: anyway, so either order costs the same there; `bench/engine.py --part attention` times both
#: (H200: 26.8 ms heads first, 27.1 as diffusers holds them). V with its tokens innermost (what
#: fp8 tensor cores read P·V's operand as) is refused by cuDNN 9.19: D must be V's inner axis.
LAYOUTS = ("bshd", "bhsd")
LAYOUT = "bhsd"


def _in_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """`x` (B, S, H, D), copied into `layout`'s memory order, same logical shape."""
    if layout == "bshd":
        return x.contiguous()
    return x.transpose(1, 2).contiguous().transpose(1, 2)


class Quantized(NamedTuple):
    """(B, S, H, D) fp8 Q, K (smoothed), V (centred), in one of `LAYOUTS`' memory orders; their
    float32 dequantization scales as one-element tensors; V's mean over the tokens, (B, 1, H, D)
    float32."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    q_scale: torch.Tensor
    k_scale: torch.Tensor
    v_scale: torch.Tensor
    v_mean: torch.Tensor


#: A calibrated V scale leaves this much room above the largest value seen (values beyond it
#: saturate at e4m3's largest; floating point, so the room costs range, not precision).
V_HEADROOM = 2.0


def rms_bound(norm: torch.nn.Module) -> float | None:
    """The largest |value| an RMSNorm can put out, whatever its input: x_i² <= Σx² = N·rms², so
    |y_i| <= √N · max|w|. A rotation of channel pairs (RoPE) keeps the bound (a pair's norm is at
    most the vector's). None for any other kind of norm."""
    if not isinstance(norm, torch.nn.RMSNorm):
        return None
    n = math.prod(norm.normalized_shape)
    return math.sqrt(n) * (1.0 if norm.weight is None else float(norm.weight.detach().abs().max()))


class Scales(torch.nn.Module):
    """One block's fixed fp8 scales, kept on its attention module (so they move with it and a
    compiled block reads them as inputs: one graph serves all 40 blocks).

    Q: its RMSNorm's bound over 448. K: twice its bound (smoothing subtracts a mean of values
    within the bound). Values typical of an RMS-normalized vector sit near 448/√N·(w/max w),
    ~6 for Wan's N = 5,120: normal e4m3 numbers, so the loose bound costs no precision. V: from
    calibration (`calibrating` set by `accel.calibrate`), else measured per call. With
    `fixed_means`, calibration also fixes the K and V means that are subtracted (any vector may
    be: softmax and the rows' unit sum make it exact), leaving no reduction before the kernel."""

    def __init__(
        self, attn: torch.nn.Module, static: bool = True, fixed_means: bool = False, fused: bool = True
    ) -> None:
        super().__init__()
        q, k = (rms_bound(attn.norm_q), rms_bound(attn.norm_k)) if static else (None, None)
        self.q_static, self.k_static = q is not None, k is not None
        device = next(attn.parameters()).device
        self.register_buffer("q_scale", torch.tensor((q or 0.0) / FP8_MAX, device=device))
        self.register_buffer("k_scale", torch.tensor(2 * (k or 0.0) / FP8_MAX, device=device))
        self.register_buffer("v_scale", torch.zeros((), device=device))
        mean_shape = (1, 1, attn.heads, attn.inner_dim // attn.heads)
        self.register_buffer("k_mean", torch.zeros(mean_shape, device=device))
        self.register_buffer("v_mean", torch.zeros(mean_shape, device=device))
        self.calibratable = static
        self.fixed_means = static and fixed_means
        self.fused = fused  # Q and K through `qk_fp8`'s one-pass kernel once everything is fixed
        self.calibrating = False
        self.v_static = False
        self.calls = 0  # calibration calls, for the means' average

    def record(self, k_mean: torch.Tensor, v_mean: torch.Tensor, v_scale: torch.Tensor) -> None:
        """One calibration call's K and V means (averaged over the calls) and V's scale (the
        largest, with headroom)."""
        self.calls += 1
        self.k_mean.add_((k_mean.mean(dim=0, keepdim=True) - self.k_mean) / self.calls)
        self.v_mean.add_((v_mean.mean(dim=0, keepdim=True) - self.v_mean) / self.calls)
        self.v_scale.copy_(torch.maximum(self.v_scale, v_scale.reshape(()) * V_HEADROOM))

    def all_fixed(self) -> bool:
        """Every scale and mean is fixed: the quantization needs nothing from the data."""
        return self.q_static and self.k_static and self.v_static and self.fixed_means and not self.calibrating

    def calibrated(self) -> None:
        """After calibration: V's recorded scale (and the means) are used from now on."""
        self.calibrating = False
        self.v_static = bool(self.v_scale > 0)


def quantize(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: str | None = None, scales: Scales | None = None
) -> Quantized:
    """Plain torch ops, so that inside a compiled block inductor fuses them with the RoPE.
    With `scales`, Q's and K's (and once calibrated V's) are fixed: no reduction over them."""
    layout = layout or LAYOUT
    fixed = scales is not None and scales.v_static and not scales.calibrating
    if fixed and scales.fixed_means:
        k_mean, v_mean = scales.k_mean, scales.v_mean
    else:
        k_mean, v_mean = k.float().mean(dim=1, keepdim=True), v.float().mean(dim=1, keepdim=True)
    k, v = k.float() - k_mean, v.float() - v_mean

    def amax_scale(x: torch.Tensor) -> torch.Tensor:
        return (x.abs().amax().float() / FP8_MAX).clamp(min=1e-12).reshape(1, 1, 1, 1)

    qs = scales.q_scale.reshape(1, 1, 1, 1) if scales is not None and scales.q_static else amax_scale(q)
    ks = scales.k_scale.reshape(1, 1, 1, 1) if scales is not None and scales.k_static else amax_scale(k)
    vs = scales.v_scale.reshape(1, 1, 1, 1) if fixed else amax_scale(v)
    if scales is not None and scales.calibrating:
        scales.record(k_mean, v_mean, vs)
    return Quantized(_cast(q, qs, layout), _cast(k, ks, layout), _cast(v, vs, layout), qs, ks, vs, v_mean)


def _cast(x: torch.Tensor, scale: torch.Tensor, layout: str) -> torch.Tensor:
    return _in_layout((x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), layout)


def quantize_fused(
    attn: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, rotary_emb: Any
) -> Quantized:
    """`quantize` of the normed, rotated Q and K, with every scale and mean fixed, where Q's and
    K's norm, RoPE, smoothing and cast run as one pass each (`qk_fp8`): (B, S, H*D) projections in."""
    scales: Scales = attn.i2v_fp8_scales
    qs, ks, vs = (x.reshape(1, 1, 1, 1) for x in (scales.q_scale, scales.k_scale, scales.v_scale))
    q = qk_fp8.norm_rope_fp8(query, attn.norm_q, rotary_emb, scales.q_scale, attn.heads)
    k = qk_fp8.norm_rope_fp8(key, attn.norm_k, rotary_emb, scales.k_scale, attn.heads, scales.k_mean)
    v = _cast(value.unflatten(2, (attn.heads, -1)).float() - scales.v_mean, vs, "bhsd")
    return Quantized(q, k, v, qs, ks, vs, scales.v_mean)


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


def require(device: torch.device) -> None:
    """Refuse at load, not in the first job: on a GPU without the frontend (or older than Hopper)
    `cudnn_fp8` would quietly run its float32 twin, correct but far slower than plain SDPA."""
    if device.type == "cuda" and not available():
        raise ValueError(
            "attention: cudnn_fp8 needs cuDNN's Python frontend and a Hopper or newer GPU: "
            "pip install 'i2v-gateway[cudnn-fp8]', or set attention: sage_triton"
        )


@dataclass
class _Plan:
    graph: Any
    handle: Any
    tensors: tuple[Any, ...]  # q, k, v, descale q/k/v/s, scale s/o, o, amax s/o
    workspace: torch.Tensor
    buffers: tuple[torch.Tensor, ...]  # descale_s, scale_s; amax_s, amax_o (written, not read)
    count: int  # execution plans (cuDNN engines) built for the graph
    best: int | None = None  # the fastest, timed on the first real call
    timings_ms: list[float] = field(default_factory=list)


_PLANS: dict[tuple[Any, ...], _Plan] = {}


def _cudnn_order(x: torch.Tensor) -> tuple[list[int], list[int]]:
    """cuDNN's (B, H, S, D) dims and the strides of `x`, a (B, S, H, D) tensor in any layout."""
    (b, s, h, d), (sb, ss, sh, sd) = x.shape, x.stride()
    return [b, h, s, d], [sb, sh, ss, sd]


def _plan(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> _Plan:
    """Build (once per shape, layout and device) the cuDNN graph for these tensors."""
    device = q.device
    key = (tuple(q.shape), q.stride(), k.stride(), v.stride(), device.index)
    if key in _PLANS:
        return _PLANS[key]
    dim = q.shape[-1]
    e4m3, fp32 = cudnn.data_type.FP8_E4M3, cudnn.data_type.FLOAT
    with torch.cuda.device(device):
        handle = cudnn.create_handle()
        graph = cudnn.pygraph(io_data_type=e4m3, intermediate_data_type=fp32, compute_data_type=fp32, handle=handle)
        tq, tk, tv = (
            graph.tensor(name=n, dim=dims, stride=strides, data_type=e4m3)
            for n, (dims, strides) in zip("qkv", map(_cudnn_order, (q, k, v)), strict=True)
        )
        dims, strides = _cudnn_order(q)  # O is written in Q's layout
        scalar = {"dim": [1, 1, 1, 1], "stride": [1, 1, 1, 1], "data_type": fp32}
        dq, dk, dv, ds, ss, so = (graph.tensor(name=n, **scalar) for n in ("dq", "dk", "dv", "ds", "ss", "so"))
        o, _, amax_s, amax_o = graph.sdpa_fp8(
            q=tq, k=tk, v=tv, descale_q=dq, descale_k=dk, descale_v=dv, descale_s=ds, scale_s=ss, scale_o=so,
            generate_stats=False, attn_scale=1.0 / math.sqrt(dim), use_causal_mask=False, name="self_attention",
        )  # fmt: skip
        o.set_output(True).set_dim(dims).set_stride(strides).set_data_type(e4m3)
        for amax in (amax_s, amax_o):
            amax.set_output(True).set_dim([1, 1, 1, 1]).set_stride([1, 1, 1, 1]).set_data_type(fp32)
        graph.validate()
        graph.build_operation_graph()
        graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
        graph.check_support()
        graph.build_plans(cudnn.build_plan_policy.ALL)  # every engine that supports it: timed below
        count = graph.get_execution_plan_count()
        size = max(graph.get_workspace_size_plan_at_index(i) for i in range(count))
        workspace = torch.empty(max(size, 1), device=device, dtype=torch.uint8)
        # P <= 1 (the running row max maps to 1), so it is scaled to e4m3's largest value.
        buffers = (
            torch.full((1, 1, 1, 1), 1.0 / FP8_MAX, device=device),
            torch.full((1, 1, 1, 1), FP8_MAX, device=device),
            torch.empty(1, 1, 1, 1, device=device),
            torch.empty(1, 1, 1, 1, device=device),
        )
    plan = _Plan(graph, handle, (tq, tk, tv, dq, dk, dv, ds, ss, so, o, amax_s, amax_o), workspace, buffers, count)
    _PLANS[key] = plan
    return plan


def _choose(plan: _Plan, pack: dict[Any, torch.Tensor]) -> int:
    """Time every built engine on the first real inputs (3 runs each, after one warm-up) and
    keep the fastest, as `torch.backends.cudnn.benchmark` does for convolutions."""
    if plan.best is None:
        if plan.count == 1:
            plan.best = 0
            return 0
        for i in range(plan.count):
            plan.graph.execute_plan_at_index(pack, plan.workspace, i, handle=plan.handle)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(3):
                plan.graph.execute_plan_at_index(pack, plan.workspace, i, handle=plan.handle)
            end.record()
            end.synchronize()
            plan.timings_ms.append(start.elapsed_time(end) / 3)
        plan.best = min(range(plan.count), key=plan.timings_ms.__getitem__)
    return plan.best


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
    plan = _plan(q, k, v)
    out = torch.empty_like(q)  # Q's layout (dense tensors keep their strides)
    scale_o = 1.0 / v_scale  # |O| <= max|V| (a convex combination of V's rows): O * 448 / max|V| fits
    tq, tk, tv, dq, dk, dv, ds, ss, so, to, amax_s, amax_o = plan.tensors
    cudnn.set_stream(handle=plan.handle, stream=torch.cuda.current_stream(q.device).cuda_stream)
    descale_s, scale_s, amax_s_out, amax_o_out = plan.buffers
    pack = {
        tq: q, tk: k, tv: v, dq: q_scale, dk: k_scale, dv: v_scale, ds: descale_s, ss: scale_s,
        so: scale_o, to: out, amax_s: amax_s_out, amax_o: amax_o_out,
    }  # fmt: skip
    plan.graph.execute_plan_at_index(pack, plan.workspace, _choose(plan, pack), handle=plan.handle)
    return out


@_cudnn_fp8_sdpa.register_fake
def _(q, k, v, q_scale, k_scale, v_scale):  # type: ignore[no-untyped-def]
    return torch.empty_like(q)


def kernel(qz: Quantized, out_dtype: torch.dtype) -> torch.Tensor:
    """cuDNN's fp8 kernel on quantized inputs; (B, S, H, D) in `out_dtype`."""
    o8 = _cudnn_fp8_sdpa(qz.q, qz.k, qz.v, qz.q_scale, qz.k_scale, qz.v_scale)
    return (o8.float() * qz.v_scale + qz.v_mean).to(out_dtype)


def fp8_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: str | None = None, scales: Scales | None = None
) -> torch.Tensor:
    """Attention over (B, S, H, D) tensors in fp8, in q's dtype: cuDNN's kernel on a Hopper GPU
    with the frontend installed, the float32 twin elsewhere."""
    qz = quantize(q, k, v, layout, scales)
    if q.is_cuda and available() and q.shape[-1] % 16 == 0:
        return kernel(qz, q.dtype)
    return reference(qz, q.dtype)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Wan's rotary embedding, as diffusers' WanAttnProcessor applies it (same arithmetic, same
    output dtype)."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[..., 0::2], sin[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2).type_as(x)


class SelfAttention:
    """The self-attention of a Wan block (diffusers' WanAttnProcessor without the cross-attention
    branch) on cuDNN's fp8 kernel with the block's fixed scales (`attn.i2v_fp8_scales`). diffusers'
    attention dispatcher sees only Q, K and V, not the module that holds the scales, so this one
    path is written out; anything else (a mask, cross-attention) goes to diffusers' processor."""

    _attention_backend = None
    _parallel_config = None

    def __init__(self) -> None:
        from diffusers.models.transformers.transformer_wan import WanAttnProcessor

        self.inner = WanAttnProcessor()

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None or attn.add_k_proj is not None:
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        from diffusers.models.transformers.transformer_wan import _get_qkv_projections

        query, key, value = _get_qkv_projections(attn, hidden_states, None)
        scales: Scales = attn.i2v_fp8_scales
        if (
            rotary_emb is not None
            and scales.fused
            and scales.all_fixed()
            and LAYOUT == "bhsd"
            and qk_fp8.usable(query, attn.heads)
        ):
            out = kernel(quantize_fused(attn, query, key, value, rotary_emb), query.dtype)
            return attn.to_out[1](attn.to_out[0](out.flatten(2, 3)))
        query, key = attn.norm_q(query), attn.norm_k(key)
        q, k, v = (x.unflatten(2, (attn.heads, -1)) for x in (query, key, value))
        if rotary_emb is not None:
            q, k = _rope(q, *rotary_emb), _rope(k, *rotary_emb)
        out = fp8_attention(q, k, v, scales=attn.i2v_fp8_scales).flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))


def install(attn: torch.nn.Module, static: bool = True, fixed_means: bool = True, fused: bool = True) -> None:
    """Run this self-attention module on cuDNN's fp8 kernel with fixed scales. `static=False`
    measures Q's and K's scales per call, `fixed_means=False` the K and V means, `fused=False`
    leaves Q's and K's norm and RoPE to inductor (`Scales`); `bench/engine.py` measures each
    variant: fixed means took 40 guided steps from 151.2 to 148.3 s on the H200
    (docs/benchmarks.md)."""
    attn.i2v_fp8_scales = Scales(attn, static=static, fixed_means=fixed_means, fused=fused)
    attn.set_processor(SelfAttention())


def uninstall(attn: torch.nn.Module) -> None:
    """diffusers' own processor again (another attention option chosen after this one)."""
    if isinstance(attn.processor, SelfAttention):
        attn.set_processor(attn.processor.inner)
        del attn.i2v_fp8_scales
