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
