"""Q and K quantized in one pass (local_engine/qk_fp8.py): its torch reference, run on CPU,
against the unfused path the engine takes elsewhere (diffusers' norms, our RoPE, `quantize`).
The Triton kernel itself is checked against the reference on the GPU
(tests/local_engine/test_gpu.py)."""

from __future__ import annotations

import torch

from local_engine import accel, cudnn_fp8, qk_fp8, sage
from tests.local_engine.test_cudnn_fp8 import _attention_module


def _dequantized(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x.float() * scale.float()


def test_one_pass_quantization_computes_what_the_unfused_path_does() -> None:
    """Same norm, same rotation, same fixed scales and means: the two differ only where diffusers
    rounds to bf16 between the ops (float32 here, and in the kernel), so almost every fp8 code is
    the same and the rest are one step apart (or, near zero, bf16's rounding apart). Without its
    mean K moves far more than that: the comparison sees the smoothing. The fp8 tensors come out
    heads first, as cuDNN reads them."""
    from diffusers.models.transformers.transformer_wan import _get_qkv_projections

    attn, x, rope = _attention_module(seed=4)
    attn = attn.to(torch.bfloat16)
    x = x.to(torch.bfloat16)
    cudnn_fp8.install(attn, fixed_means=True)
    scales = attn.i2v_fp8_scales
    with torch.no_grad():
        accel.calibrate(attn, lambda: attn(x, rotary_emb=rope))
        assert scales.all_fixed() and float(scales.k_mean.abs().max()) > 0
        query, key, value = _get_qkv_projections(attn, x, None)
        fused = cudnn_fp8.quantize_fused(attn, query, key, value, rope)
        q, k, v = (t.unflatten(2, (2, -1)) for t in (attn.norm_q(query), attn.norm_k(key), value))
        q, k = cudnn_fp8._rope(q, *rope), cudnn_fp8._rope(k, *rope)
        unfused = cudnn_fp8.quantize(q, k, v, "bhsd", scales=scales)
        unsmoothed = qk_fp8.norm_rope_fp8(key, attn.norm_k, rope, scales.k_scale, attn.heads)
    for name in ("q", "k", "v"):
        a, b = getattr(fused, name), getattr(unfused, name)
        assert a.shape == b.shape and a.stride() == b.stride() and a.dtype == cudnn_fp8.FP8, name
        same = (a.view(torch.uint8) == b.view(torch.uint8)).float().mean()
        assert same > 0.9, (name, float(same))
        # one e4m3 step at that magnitude, or near zero bf16's rounding of the RoPE's terms
        # (up to 448 in these units) before they cancel
        step = (b.float().abs() / 8).clamp(min=cudnn_fp8.FP8_MAX * 2**-8)
        assert ((a.float() - b.float()).abs() <= step * 1.01).all(), name
    for name in ("q_scale", "k_scale", "v_scale", "v_mean"):
        assert torch.equal(getattr(fused, name), getattr(unfused, name)), name
    k_err = accel.relative_error(_dequantized(fused.k, fused.k_scale), _dequantized(unfused.k, unfused.k_scale))
    moved = accel.relative_error(_dequantized(unsmoothed, fused.k_scale), _dequantized(unfused.k, unfused.k_scale))
    assert k_err < 3e-2 < moved, (k_err, moved)
    # Attention on each, against exact attention on the unfused path's own (bf16) Q and K: this
    # attention is sharp, so the few codes one step apart show, but no more than fp8's own error.
    exact = sage.exact(q.float(), k.float(), v.float())
    errors = [accel.relative_error(cudnn_fp8.reference(z, torch.float32), exact) for z in (fused, unfused)]
    assert errors[0] < 1.2 * errors[1], errors


def test_the_one_pass_path_waits_for_every_scale_to_be_fixed() -> None:
    """Before calibration (V's scale unknown), with means measured per call, or switched off,
    the processor keeps the unfused path: `all_fixed` says which."""
    attn, x, rope = _attention_module(seed=5)
    cudnn_fp8.install(attn, fixed_means=True)
    assert not attn.i2v_fp8_scales.all_fixed()  # V not calibrated yet
    with torch.no_grad():
        accel.calibrate(attn, lambda: attn(x, rotary_emb=rope))
    assert attn.i2v_fp8_scales.all_fixed()
    attn.i2v_fp8_scales.calibrating = True
    assert not attn.i2v_fp8_scales.all_fixed()
    cudnn_fp8.install(attn, fixed_means=False)
    with torch.no_grad():
        accel.calibrate(attn, lambda: attn(x, rotary_emb=rope))
    assert not attn.i2v_fp8_scales.all_fixed()
    cudnn_fp8.install(attn, fused=False)
    assert not attn.i2v_fp8_scales.fused


def test_the_kernel_is_not_used_off_the_gpu() -> None:
    """On CPU the reference runs (same arithmetic): the kernel needs CUDA and Triton."""
    x = torch.randn(1, 8, 4 * 16)
    assert not qk_fp8.usable(x, 4)
    norm = torch.nn.RMSNorm(64, eps=1e-6)
    angles = torch.rand(1, 8, 1, 16)
    out = qk_fp8.norm_rope_fp8(x, norm, (angles.cos(), angles.sin()), torch.tensor(0.02), 4)
    assert out.shape == (1, 8, 4, 16) and out.dtype == qk_fp8.FP8 and out.stride(2) > out.stride(1)
