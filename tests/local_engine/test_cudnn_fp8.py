"""fp8 self-attention through cuDNN (local_engine/cudnn_fp8.py): its quantization, run by the
float32 twin on CPU, against exact attention. The cuDNN kernel itself is checked against the twin
on the GPU (tests/local_engine/test_gpu.py)."""

from __future__ import annotations

import pytest
import torch

from local_engine import accel, cudnn_fp8, sage
from tests.local_engine.test_sage import _qkv


def test_the_twin_is_within_bound_of_exact_attention() -> None:
    """One scale per tensor in e4m3 (3 mantissa bits): a few percent on sharp rows."""
    q, k, v = _qkv()
    out = cudnn_fp8.fp8_attention(q, k, v)
    assert out.shape == q.shape and out.dtype == q.dtype
    err = accel.relative_error(out, sage.exact(q, k, v))
    assert 1e-3 < err < 5e-2, err  # quantized (not exact), and close


def test_smoothing_takes_the_key_offset_out_of_the_scale() -> None:
    """A large per-channel key offset does not change softmax; subtracting the keys' mean keeps
    it from eating the one fp8 scale. Without the smoothing the same inputs lose far more."""
    q, k, v = _qkv()
    k = k + 40.0  # an offset 20x the keys' spread
    exact = sage.exact(q, k, v)
    smoothed = accel.relative_error(cudnn_fp8.fp8_attention(q, k, v), exact)

    def cast(x: torch.Tensor) -> torch.Tensor:
        s = x.abs().amax() / cudnn_fp8.FP8_MAX
        return (x / s).to(cudnn_fp8.FP8).float() * s

    plain = accel.relative_error(sage.exact(cast(q), cast(k), cast(v)), exact)
    assert smoothed < 5e-2 < plain, (smoothed, plain)


def test_the_fp8_output_cannot_overflow() -> None:
    """O is scaled by 448 / max|V|: a row attending to one key only returns that key's value
    exactly at the top of e4m3's range, never beyond it (a NaN in e4m3fn)."""
    q, k, v = _qkv(seq=64, heads=1, dim=16)
    q = q * 0 + 50 * k[:, 7:8]  # every query picks key 7
    v[:, 7] = v.abs().amax() * 1.0 * torch.sign(v[:, 7])
    out = cudnn_fp8.fp8_attention(q, k, v)
    assert torch.isfinite(out).all()
    assert accel.relative_error(out, sage.exact(q, k, v)) < 6e-2


def test_every_layout_holds_the_same_values_in_its_own_memory_order() -> None:
    """The layout is only the memory order handed to cuDNN: same logical (B, S, H, D) tensors,
    same result, and the strides the name promises."""
    q, k, v = _qkv()
    outs = []
    for layout in cudnn_fp8.LAYOUTS:
        qz = cudnn_fp8.quantize(q, k, v, layout)
        assert qz.q.shape == q.shape
        heads_first = qz.q.stride(2) > qz.q.stride(1)
        assert heads_first == (layout != "bshd")
        outs.append(cudnn_fp8.reference(qz, torch.float32))
    assert all(torch.equal(outs[0], o) for o in outs[1:])


def test_a_gpu_without_the_frontend_is_refused_at_load_not_run_on_the_twin() -> None:
    """On CUDA without `nvidia-cudnn-frontend` the option would run the float32 twin: refused
    with what to install. On the CPU the twin is the intended path."""
    cudnn_fp8.require(torch.device("cpu"))
    if cudnn_fp8.available():
        cudnn_fp8.require(torch.device("cuda"))
        return
    with pytest.raises(ValueError, match=r"i2v-gateway\[cudnn-fp8\]"):
        cudnn_fp8.require(torch.device("cuda"))


def test_an_rms_norms_bound_holds_after_rope_and_is_reached() -> None:
    """The fixed Q/K scale rests on |y_i| <= √N·max|w| for y = RMSNorm(x), whatever x, and on a
    rotation of channel pairs keeping it. A one-hot input reaches it: the bound is not slack."""
    norm = torch.nn.RMSNorm(64, eps=1e-6).requires_grad_(False)
    norm.weight.copy_(torch.rand(64) * 3)
    bound = cudnn_fp8.rms_bound(norm)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4096, 64, generator=g) * torch.rand(4096, 1, generator=g) ** 8  # spiky rows
    angles = torch.rand(4096, 64, generator=g) * 6.3
    y = cudnn_fp8._rope(norm(x).unflatten(-1, (1, 64)), angles.cos()[:, None], angles.sin()[:, None])
    assert y.abs().max() <= bound * (1 + 1e-5)
    one_hot = torch.zeros(1, 64)
    one_hot[0, int(norm.weight.argmax())] = 5.0
    assert float(norm(one_hot).abs().max()) == pytest.approx(bound, rel=1e-4)
    assert cudnn_fp8.rms_bound(torch.nn.LayerNorm(64)) is None  # no bound: measured per call


def _attention_module(seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """A Wan self-attention module with weights large enough for sharp attention, its input and
    a rotary embedding shaped as Wan's (1, S, 1, D) cos/sin tables."""
    from diffusers.models.transformers.transformer_wan import WanAttention, WanAttnProcessor

    torch.manual_seed(seed)
    attn = WanAttention(dim=128, heads=2, dim_head=64, eps=1e-6, processor=WanAttnProcessor()).eval()
    with torch.no_grad():
        for p in attn.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 200, 128, generator=g)
    angles = torch.rand(1, 200, 1, 64, generator=g) * 6.3
    return attn, x, (angles.cos(), angles.sin())


def test_the_fp8_processor_computes_what_diffusers_processor_does() -> None:
    """The self-attention path is written out (to reach the block's scales): same projections,
    norms and RoPE as diffusers' WanAttnProcessor, so the two differ by fp8 rounding only. Without
    its RoPE diffusers' own output moves far more than that: the comparison sees the rotation."""
    attn, x, rope = _attention_module()
    with torch.no_grad():
        reference = attn(x, rotary_emb=rope)
        unrotated = attn(x)
        cudnn_fp8.install(attn)
        assert isinstance(attn.processor, cudnn_fp8.SelfAttention)
        ours = attn(x, rotary_emb=rope)
    err = accel.relative_error(ours, reference)  # this attention is flat: fp8's P rounding shows
    assert 1e-4 < err < 8e-2 < 1.0 < accel.relative_error(unrotated, reference), err
    cudnn_fp8.uninstall(attn)
    assert not isinstance(attn.processor, cudnn_fp8.SelfAttention) and not hasattr(attn, "i2v_fp8_scales")
    with torch.no_grad():
        assert torch.equal(attn(x, rotary_emb=rope), reference)


def test_q_and_k_take_fixed_scales_and_v_a_calibrated_one() -> None:
    """No amax over Q or K: their scales are the norms' bounds, and on the module's own Q and K
    they lose nothing against scales measured per call. V's is measured per call until
    `accel.calibrate` has run, then fixed (2x above the largest seen); a V beyond it saturates
    instead of overflowing to NaN."""
    from diffusers.models.transformers.transformer_wan import _get_qkv_projections

    attn, x, rope = _attention_module(seed=1)
    with torch.no_grad():
        reference = attn(x, rotary_emb=rope)  # diffusers' processor, exact attention
    cudnn_fp8.install(attn)
    scales = attn.i2v_fp8_scales
    assert scales.q_static and scales.k_static and not scales.v_static
    assert float(scales.q_scale) == pytest.approx(cudnn_fp8.rms_bound(attn.norm_q) / cudnn_fp8.FP8_MAX)
    with torch.no_grad():
        q, k, v = _get_qkv_projections(attn, x, None)
        q, k, v = (t.unflatten(2, (2, -1)) for t in (attn.norm_q(q), attn.norm_k(k), v))
        q, k = cudnn_fp8._rope(q, *rope), cudnn_fp8._rope(k, *rope)
        fixed = cudnn_fp8.quantize(q, k, v, scales=scales)
        assert float(fixed.q_scale) == float(scales.q_scale) and float(fixed.k_scale) == float(scales.k_scale)
        assert float(fixed.v_scale) == pytest.approx(float((v - v.mean(dim=1, keepdim=True)).abs().amax()) / 448)
        exact = sage.exact(q, k, v)
        measured = accel.relative_error(cudnn_fp8.reference(cudnn_fp8.quantize(q, k, v), torch.float32), exact)
        assert accel.relative_error(cudnn_fp8.reference(fixed, torch.float32), exact) < 1.1 * measured
        before = attn(x, rotary_emb=rope)
        accel.calibrate(attn, lambda: attn(x, rotary_emb=rope))
        assert scales.v_static and float(scales.v_scale) > 0
        qz = cudnn_fp8.quantize(q, k, 1e3 * v, scales=scales)  # far beyond what calibration saw
        assert float(qz.v_scale) == float(scales.v_scale) and torch.isfinite(qz.v.float()).all()
        after = attn(x, rotary_emb=rope)
    # 2x headroom costs one bit of e4m3's range, none of its precision
    assert accel.relative_error(after, reference) < 1.05 * accel.relative_error(before, reference)


def test_calibration_can_fix_the_means_too() -> None:
    """With `fixed_means` the K and V means come from calibration (averaged over its calls) and
    nothing is reduced per call. Subtracting any mean is exact; only the rounding grows a little
    where the fixed means are off this input's own (here they average in another input)."""
    attn, x, rope = _attention_module(seed=2)
    with torch.no_grad():
        reference = attn(x, rotary_emb=rope)
    cudnn_fp8.install(attn, fixed_means=True)
    scales = attn.i2v_fp8_scales
    other = torch.randn(2, 200, 128, generator=torch.Generator().manual_seed(3))  # a batch of two
    with torch.no_grad():
        before = attn(x, rotary_emb=rope)
        accel.calibrate(attn, lambda: (attn(x, rotary_emb=rope), attn(other, rotary_emb=rope)))
        assert scales.calls == 2 and scales.v_mean.shape == (1, 1, 2, 64)
        v = attn.to_v(torch.cat([x, other])).unflatten(2, (2, -1))
        seen = (v[:1].mean(dim=1, keepdim=True) + v[1:].mean(dim=(0, 1), keepdim=True)) / 2
        assert torch.allclose(scales.v_mean, seen, atol=1e-5)
        q = k = v = torch.randn(1, 200, 2, 64)
        assert torch.equal(cudnn_fp8.quantize(q, k, v, scales=scales).v_mean, scales.v_mean)
        after = attn(x, rotary_emb=rope)
    assert accel.relative_error(after, reference) < 1.1 * accel.relative_error(before, reference)
