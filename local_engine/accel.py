"""Accelerations of the torch runtime, each one switchable and each one measured for accuracy
against plain eager bf16 (tests/local_engine, bench/engine.py).

- attention: a PyTorch SDPA kernel forced for the whole call (`sdpa_cudnn`, `sdpa_flash`, ...)
  or any backend of diffusers' dispatcher (`flash`, `_flash_3`, `sage` where installed);
- fp8 linear layers: weights stored as float8_e4m3fn with one scale per output row,
  activations quantized per token on the fly, `torch._scaled_mm` with bf16 output;
- regional compile: `compile_repeated_blocks(fullgraph=True)` compiles one transformer block
  and reuses it for all 40 (seconds of compile, not minutes);
- 8-bit self-attention (`sage_triton`: int8 Q·Kᵀ, fp8 P·V; `sage_triton_fp8`: fp8 both;
  `sage_triton_bf16_pv`: int8 Q·Kᵀ, bf16 P·V): our
  Triton kernel (local_engine/sage.py) for the 32,760-token self-attention of every block;
  `cudnn_fp8`: cuDNN's fp8 flash attention (local_engine/cudnn_fp8.py, optional frontend);
  cross-attention (512 text + 257 image tokens) stays on PyTorch's kernel;
- step caching: diffusers' first-block cache (skip the remaining blocks while the first
  block's residual changes by less than the threshold).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max
#: Static activation scales leave this much room above the largest value seen in calibration.
#: e4m3 is floating point, so headroom costs no precision for normal values, only range.
STATIC_HEADROOM = 2.0


def _quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise symmetric fp8 quantization: (values, scale per row as float32 column)."""
    amax = x.abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-12)
    scale = amax / FP8_MAX
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


def _quantize_tensor(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One scale for the whole tensor (cuBLASLt's fast fp8 path), as a float32 scalar tensor."""
    scale = (x.abs().amax().float() / FP8_MAX).clamp(min=1e-12)
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


class Fp8Linear(nn.Module):
    """A Linear whose matmul runs in fp8 on GPUs that have it (sm_89+).

    `scaling="row"`: one scale per weight row and per token (more accurate, CUTLASS kernel);
    `scaling="tensor"`: one scale per tensor (cuBLASLt kernel). Elsewhere (CPU tests) the same
    quantized numbers are multiplied in float32, so the error the tests measure is the
    quantization error the GPU path has.
    """

    def __init__(self, linear: nn.Linear, scaling: str = "row") -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.scaling = scaling
        # "static": tensor scales, the activation's fixed after calibration (see `calibrate`).
        self.register_buffer("x_scale", torch.zeros((), dtype=torch.float32, device=linear.weight.device))
        # Its reciprocal: the cast multiplies by it. An IEEE division per value is ~10 instructions,
        # enough to make the compiled cast kernels (GELU + cast: 453 M values a block) bound by
        # instructions rather than by memory on an H200.
        self.register_buffer("x_scale_inv", torch.zeros((), dtype=torch.float32, device=linear.weight.device))
        self.calibrating = False
        quantize = _quantize_rows if scaling == "row" else _quantize_tensor
        weight, scale = quantize(linear.weight.data)
        self.register_buffer("weight_fp8", weight)
        self.register_buffer("weight_scale", scale.t().contiguous() if scaling == "row" else scale)  # (1, out) or ()
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.data.clone(), requires_grad=False)
        self.out_dtype = linear.weight.dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        if self.scaling == "row":
            xq, xs = _quantize_rows(x2)
        elif self.scaling == "static" and not self.calibrating:
            xs = self.x_scale  # one pass: scale and cast, no reduction over the activations
            xq = (x2.float() * self.x_scale_inv).clamp(-FP8_MAX, FP8_MAX).to(FP8)
        else:
            xq, xs = _quantize_tensor(x2)
            if self.calibrating:  # remember the largest scale seen, with 2x headroom
                self.x_scale.copy_(torch.maximum(self.x_scale, xs * STATIC_HEADROOM))
                self.x_scale_inv.copy_(1.0 / self.x_scale)
        if x.is_cuda:
            out = torch._scaled_mm(
                xq, self.weight_fp8.t(), scale_a=xs, scale_b=self.weight_scale, bias=self.bias, out_dtype=self.out_dtype
            )
        else:
            w_scale = self.weight_scale.t() if self.scaling == "row" else self.weight_scale
            out = (xq.float() * xs) @ (self.weight_fp8.float() * w_scale).t()
            if self.bias is not None:
                out = out + self.bias.float()
            out = out.to(self.out_dtype)
        return out.reshape(*shape[:-1], self.out_features)


def calibrate(transformer: nn.Module, run: Any) -> None:
    """Fix the activation scales of `static` Fp8Linear layers and the V scales of `cudnn_fp8`
    attention from the calls `run()` makes (e.g. one guided step at the start and one at the end
    of the schedule). It runs eager (`torch.compiler.disable`): a compiled block would otherwise
    be traced once for calibrating and again for the fixed scales."""
    from local_engine import cudnn_fp8

    layers = [m for m in transformer.modules() if isinstance(m, Fp8Linear) and m.scaling == "static"]
    scales = [m for m in transformer.modules() if isinstance(m, cudnn_fp8.Scales) and m.calibratable]
    for m in [*layers, *scales]:
        m.calibrating = True
    try:
        torch.compiler.disable(run)()
    finally:
        for m in layers:
            m.calibrating = False
        for m in scales:
            m.calibrated()


def fuse_qkv(transformer: nn.Module) -> int:
    """One GEMM for q, k and v of self-attention (and k, v of cross-attention) in every block:
    wider GEMMs, and with fp8 one activation quantization instead of three. The separate
    projections are dropped, so the weights are not held twice."""
    count = 0
    for block in getattr(transformer, "blocks", []):
        for attn in (getattr(block, "attn1", None), getattr(block, "attn2", None)):
            if attn is None or not hasattr(attn, "fuse_projections"):
                continue
            attn.fuse_projections()
            names = ["to_k", "to_v"] + ([] if attn.is_cross_attention else ["to_q"])
            for name in names:
                delattr(attn, name)
            if getattr(attn, "add_k_proj", None) is not None:
                # diffusers tests `add_k_proj is not None` to know it is an I2V block; keep a
                # weightless marker instead of the 4 GB of duplicated weights.
                attn.add_k_proj = attn.add_v_proj = nn.Identity()
            count += 1
    return count


def fp8_linears(transformer: nn.Module, min_features: int = 16, scaling: str = "row") -> int:
    """Swap the Linear layers of the repeated blocks for Fp8Linear. Returns how many.

    Only the blocks: the embeddings and the output head are small and sensitive. Layers whose
    sides are not multiples of 16 stay as they are (fp8 GEMMs need that alignment).
    """
    count = 0
    for block in getattr(transformer, "blocks", []):
        for name, module in list(block.named_modules()):
            if isinstance(module, nn.Linear) and module.in_features % 16 == 0 and module.out_features % 16 == 0:
                if min(module.in_features, module.out_features) < min_features:
                    continue
                parent = block.get_submodule(name.rsplit(".", 1)[0]) if "." in name else block
                setattr(parent, name.rsplit(".", 1)[-1], Fp8Linear(module, scaling))
                count += 1
    return count


#: PyTorch SDPA kernels, forced for the whole transformer call (`attention: sdpa_cudnn`, ...).
SDPA_KERNELS = {
    "sdpa_cudnn": "CUDNN_ATTENTION",
    "sdpa_flash": "FLASH_ATTENTION",
    "sdpa_efficient": "EFFICIENT_ATTENTION",
}


def force_sdpa_kernel(transformer: Any, name: str) -> None:
    """Run every attention of the transformer on one SDPA kernel. Wraps `forward`, so a compiled
    graph is traced with (and keeps) that kernel."""
    import functools

    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = getattr(SDPBackend, SDPA_KERNELS[name])
    inner = transformer.forward

    @functools.wraps(inner)
    def forward(*args: Any, **kwargs: Any) -> Any:
        with sdpa_kernel([backend]):
            return inner(*args, **kwargs)

    transformer.forward = forward


#: 8-bit self-attention: config name -> (Q·Kᵀ in int8 (else fp8), P·V in fp8 (else bf16)) for our
#: Triton kernel (local_engine/sage.py); None for cuDNN's fp8 kernel (local_engine/cudnn_fp8.py).
SAGE_KERNELS: dict[str, tuple[bool, bool] | None] = {
    "sage_triton": (True, True),
    "sage_triton_fp8": (False, True),
    "sage_triton_bf16_pv": (True, False),
    "cudnn_fp8": None,
}
_MARK = "i2v:"  # processors carrying "i2v:<name>" as their backend run on our kernel
_MARKED = {_MARK + name: flags for name, flags in SAGE_KERNELS.items() if flags is not None}


def sage_self_attention(transformer: Any, name: str = "sage_triton") -> int:
    """Run the self-attention of every block on the 8-bit kernel. Returns how many blocks.

    diffusers' attention dispatcher takes only its own backend names, so the Wan module's
    dispatch function is wrapped once: a processor whose backend is one of ours (the config
    name, prefixed) goes to `sage.sage_attention`, every other call goes through unchanged."""
    if name not in SAGE_KERNELS:
        raise ValueError(f"unknown 8-bit attention {name!r}; choose one of {sorted(SAGE_KERNELS)}")
    from diffusers.models.transformers import transformer_wan

    from local_engine import cudnn_fp8, sage

    inner = transformer_wan.dispatch_attention_fn
    if not getattr(inner, "i2v_sage", False):

        def dispatch(query: Any, key: Any, value: Any, *args: Any, backend: Any = None, **kwargs: Any) -> Any:
            # `type(...) is str`: diffusers' own backends are str enums, which dynamo cannot
            # call string methods on; ours are plain strings.
            ours = type(backend) is str and backend in _MARKED
            if ours and kwargs.get("attn_mask") is None:
                flags = _MARKED[backend]
                return sage.sage_attention(query, key, value, qk_int8=flags[0], pv_fp8=flags[1])
            return inner(query, key, value, *args, backend=None if ours else backend, **kwargs)

        dispatch.i2v_sage = True  # type: ignore[attr-defined]
        transformer_wan.dispatch_attention_fn = dispatch
    if SAGE_KERNELS[name] is None:
        cudnn_fp8.require(next(transformer.parameters()).device)
    for block in transformer.blocks:
        cudnn_fp8.uninstall(block.attn1)
        if SAGE_KERNELS[name] is None:  # its own processor: the block's fixed scales ride along
            cudnn_fp8.install(block.attn1)
        else:
            block.attn1.processor._attention_backend = _MARK + name
    return len(transformer.blocks)


def own_self_attention(transformer: Any) -> str | None:
    """The name of our kernel the blocks' self-attention runs on (None: diffusers' dispatch).
    Ours see whole Q, K and V: they do not take part in diffusers' context parallelism."""
    from local_engine import cudnn_fp8

    processor = transformer.blocks[0].attn1.processor
    if isinstance(processor, cudnn_fp8.SelfAttention):
        return "cudnn_fp8"
    backend = getattr(processor, "_attention_backend", None)
    return backend[len(_MARK) :] if type(backend) is str and backend in _MARKED else None


def apply(
    transformer: Any,
    *,
    attention: str | None,
    fp8: bool,
    compile: bool,
    cache_threshold: float | None,
    fuse: bool = False,
    fp8_scaling: str = "tensor",
) -> dict[str, Any]:
    """Apply the configured options in the order that composes: attention, fp8, cache, compile."""
    applied: dict[str, Any] = {}
    if attention in SDPA_KERNELS:
        force_sdpa_kernel(transformer, attention)
        applied["attention"] = attention
    elif attention in SAGE_KERNELS:
        applied["attention"] = attention
        applied["sage_self_attention_blocks"] = sage_self_attention(transformer, attention)
    elif attention:
        transformer.set_attention_backend(attention)
        applied["attention"] = attention
    if fuse:
        applied["fused_qkv"] = fuse_qkv(transformer)
    if fp8:
        applied["fp8_linear_layers"] = fp8_linears(transformer, scaling=fp8_scaling)
        applied["fp8_scaling"] = fp8_scaling
    if cache_threshold is not None:
        from diffusers.hooks import FirstBlockCacheConfig

        transformer.enable_cache(FirstBlockCacheConfig(threshold=cache_threshold))
        applied["first_block_cache"] = cache_threshold
    if compile:
        # The cache's hooks branch in Python around the blocks, so with a cache the blocks are
        # compiled with graph breaks allowed.
        transformer.compile_repeated_blocks(fullgraph=cache_threshold is None)
        applied["compile"] = "repeated_blocks"
    return applied


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float32: the accuracy measure used throughout."""
    a32, b32 = a.float(), b.float()
    return float((a32 - b32).norm() / b32.norm().clamp(min=1e-12))
