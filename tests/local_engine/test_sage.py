"""8-bit self-attention (local_engine/sage.py): the arithmetic of the Triton kernel, run by its
float32 torch twin on CPU, against exact attention. The kernel itself is checked against the
twin on the GPU (tests/local_engine/test_gpu.py).

Bounds (relative L2 error of the attention output, logits as sharp as a trained model's, the
largest probability of a row about 0.17 on average): int8 Q·Kᵀ with fp8 P·V 2e-2 (measured
0.8%), fp8 Q·Kᵀ 4e-2 (measured 1.7%: e4m3 keeps 3 mantissa bits where int8 with a block scale
keeps ~7), int8 Q·Kᵀ with bf16 P·V 1e-2. The rounding of P to fp8 (±6% per probability) does not
average out: the output's error is about that rounding's spread times the output itself, less
where one key dominates a row; so flat attention (long sequences, docs/benchmarks.md) shows
more of it than these sharp rows.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from local_engine import accel, sage


def _qkv(seq: int = 300, heads: int = 2, dim: int = 64, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Attention inputs shaped like Wan's (B, S, H, D), with a per-channel offset on the keys
    (trained keys have one) and logits sharp enough that quantization errors show."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(1, seq, heads, dim, generator=g) for _ in range(3))
    k = k + 2 * torch.randn(1, 1, heads, dim, generator=g)
    v = v + torch.randn(1, 1, heads, dim, generator=g)
    return 2 * q, k, v


@pytest.mark.parametrize(("qk_int8", "pv_fp8", "bound"), [(True, True, 2e-2), (False, True, 4e-2), (True, False, 1e-2)])
def test_8bit_attention_is_within_bound_of_exact(qk_int8: bool, pv_fp8: bool, bound: float) -> None:
    q, k, v = _qkv()
    exact = sage.exact(q, k, v)
    out = sage.sage_attention(q, k, v, qk_int8=qk_int8, pv_fp8=pv_fp8)
    assert out.shape == q.shape
    assert 1e-4 < accel.relative_error(out, exact) < bound  # quantized (not exact), and close


def test_int8_keys_are_more_accurate_than_fp8_keys() -> None:
    q, k, v = _qkv(seed=1)
    exact = sage.exact(q, k, v)
    errors = [accel.relative_error(sage.sage_attention(q, k, v, qk_int8=flag), exact) for flag in (True, False)]
    assert errors[0] < errors[1]


def test_key_offsets_are_smoothed_away_before_quantization() -> None:
    """softmax(q·(k + c)) = softmax(q·k): a large shared key offset must not eat the int8 range."""
    q, k, v = _qkv(seed=2)
    shifted = k + 50.0 * torch.randn(1, 1, k.shape[2], k.shape[3])
    assert accel.relative_error(sage.exact(q, shifted, v), sage.exact(q, k, v)) < 1e-4
    assert accel.relative_error(sage.sage_attention(q, shifted, v), sage.sage_attention(q, k, v)) < 1e-3


@pytest.mark.parametrize("seq", [64, 130, 257])
def test_sequence_tails_are_masked_not_attended(seq: int) -> None:
    """Sequences are padded to the block size; the padding must get no probability."""
    q, k, v = _qkv(seq=seq, seed=3)
    for k_block in (64, 128):
        qz = sage.quantize(q, k, v, k_block=k_block)
        assert qz.q.shape[1] % 128 == 0 and qz.v.shape[2] == qz.q.shape[1]
        assert qz.k_scale.shape[1] == qz.q.shape[1] // k_block
        out = sage.reference(qz, tuple(q.shape))
        assert accel.relative_error(out, sage.exact(q, k, v)) < 2e-2


@pytest.mark.parametrize("attention", ["sage_triton", "cudnn_fp8"])
def test_transformer_self_attention_runs_8bit_and_cross_attention_does_not(tiny_wan: Path, attention: str) -> None:
    from diffusers import WanTransformer3DModel

    from local_engine.tiny import TEXT_TOKENS, TINY_I2V

    model = WanTransformer3DModel.from_pretrained(tiny_wan / "transformer").eval()
    g = torch.Generator().manual_seed(0)
    inputs = {
        "hidden_states": torch.randn(1, TINY_I2V["in_channels"], 3, 8, 12, generator=g),
        "timestep": torch.tensor([500.0]),
        "encoder_hidden_states": torch.randn(1, TEXT_TOKENS, TINY_I2V["text_dim"], generator=g),
        "encoder_hidden_states_image": torch.randn(1, 257, TINY_I2V["image_dim"], generator=g),
    }
    with torch.no_grad():
        reference = model(**inputs, return_dict=False)[0]
        fast = copy.deepcopy(model)
        fast.set_attention_backend("native")  # diffusers' own (enum) backends pass through ours
        applied = accel.apply(fast, attention=attention, fp8=False, compile=False, cache_threshold=None)
        out = fast(**inputs, return_dict=False)[0]
        plain_again = model(**inputs, return_dict=False)[0]  # the shared dispatch leaves others alone
    assert applied["sage_self_attention_blocks"] == len(fast.blocks) == TINY_I2V["num_layers"]
    assert all(b.attn2.processor._attention_backend == "native" for b in fast.blocks)
    assert torch.equal(plain_again, reference)
    assert 1e-5 < accel.relative_error(out, reference) < 2e-2, accel.relative_error(out, reference)


def test_an_unknown_8bit_kernel_name_is_refused_at_load(tiny_wan: Path) -> None:
    from diffusers import WanTransformer3DModel

    model = WanTransformer3DModel.from_pretrained(tiny_wan / "transformer")
    with pytest.raises(ValueError, match="sage_triton"):
        accel.sage_self_attention(model, "sage_trition")
