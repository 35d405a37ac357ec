"""The engine's accelerated torch path on a CUDA device: fused qkv, fp8 linears with static
scales calibrated at load, regional compile. Skipped without a GPU (CI); run on the lent H100
with `pytest --noconftest tests/local_engine/test_gpu.py` (this file needs no shared fixtures)."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _image() -> bytes:
    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((64, 96, 3)) * 255).astype("uint8")).save(buf, "PNG")
    return buf.getvalue()


def _frames(video: bytes) -> np.ndarray:
    import av

    with av.open(io.BytesIO(video)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).astype(np.float32)


def _generate(path: Path, **options) -> tuple[bytes, object]:
    from local_engine.config import EngineConfig
    from local_engine.engine import LocalEngine

    engine = LocalEngine(EngineConfig(model_path=path, devices=["cuda"], steps=4, fps=8, max_frames=9, **options))
    try:
        job = engine.submit(_image(), "slow push in", width=96, height=64, seconds=1.0, seed=5)
        deadline = time.time() + 600
        while job.state in ("queued", "in_progress"):
            assert time.time() < deadline
            time.sleep(0.05)
        assert job.state == "completed", job.error
        return job.video or b"", engine.workers[0].pipe
    finally:
        engine.close()


def test_accelerated_engine_matches_plain_bf16(tmp_path: Path) -> None:
    from local_engine.accel import Fp8Linear
    from local_engine.tiny import save_tiny_pipeline

    path = save_tiny_pipeline(tmp_path / "wan-tiny")
    plain, _ = _generate(path)
    fast, pipe = _generate(path, fuse_qkv=True, fp8_linear=True, fp8_scaling="static", compile=True)
    layers = [m for m in pipe.transformer.modules() if isinstance(m, Fp8Linear)]
    assert layers and all(float(m.x_scale) > 0 for m in layers)  # calibrated at load
    a, b = _frames(plain), _frames(fast)
    assert a.shape == b.shape == (9, 64, 96, 3)
    assert np.abs(a - b).mean() < 8.0, np.abs(a - b).mean()  # of 255: same video, fp8 noise only


@pytest.mark.parametrize(("qk_int8", "pv_fp8"), [(True, True), (False, True), (True, False)])
def test_sage_kernel_matches_its_torch_twin(qk_int8: bool, pv_fp8: bool) -> None:
    """The Triton kernel does what the CPU-tested reference does (same quantization, online
    softmax), for every block config; 1000 tokens exercise the masked tail block."""
    from local_engine import accel, sage

    g = torch.Generator(device="cuda").manual_seed(0)
    shape = (2, 1000, 4, 128)
    q, k, v = (torch.randn(*shape, generator=g, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    k = k + 2 * torch.randn(1, 1, 4, 128, generator=g, device="cuda", dtype=torch.bfloat16)
    q = 2 * q
    exact = sage.exact(q, k, v)
    for config in sage.CONFIGS:
        qz = sage.quantize(q, k, v, torch.int8 if qk_int8 else sage.FP8, pv_fp8, k_block=config[1])
        twin = sage.reference(qz, shape)
        out = sage.kernel(qz, shape, torch.float32, config)
        assert accel.relative_error(out, twin) < 5e-3, config  # rounding ties and exp2 approximations
    out = sage.sage_attention(q, k, v, qk_int8=qk_int8, pv_fp8=pv_fp8)
    assert out.dtype == torch.bfloat16
    assert accel.relative_error(out, exact) < 0.1
    compiled = torch.compile(sage.sage_attention, fullgraph=True)(q, k, v, qk_int8=qk_int8, pv_fp8=pv_fp8)
    assert accel.relative_error(compiled, out) < 1e-2  # same kernel, quantization fused by inductor


@pytest.mark.parametrize("layout", ["bshd", "bhsd"])
def test_cudnn_fp8_attention_matches_its_torch_twin(layout: str) -> None:
    """cuDNN's fp8 kernel does what the CPU-tested twin does (same quantization; the twin keeps
    P exact, the kernel rounds it to fp8), and stays near exact attention, compiled or not."""
    from local_engine import accel, cudnn_fp8, sage

    if not cudnn_fp8.available():
        pytest.skip("nvidia-cudnn-frontend not installed, or no Hopper GPU")
    g = torch.Generator(device="cuda").manual_seed(0)
    shape = (2, 1000, 4, 128)
    q, k, v = (torch.randn(*shape, generator=g, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    k = k + 2 * torch.randn(1, 1, 4, 128, generator=g, device="cuda", dtype=torch.bfloat16)
    q = 2 * q
    qz = cudnn_fp8.quantize(q, k, v, layout)
    out = cudnn_fp8.kernel(qz, torch.float32)
    assert accel.relative_error(out, cudnn_fp8.reference(qz, torch.float32)) < 3e-2
    out = cudnn_fp8.fp8_attention(q, k, v, layout)
    assert out.dtype == torch.bfloat16
    assert accel.relative_error(out, sage.exact(q, k, v)) < 0.1
    compiled = torch.compile(cudnn_fp8.fp8_attention, fullgraph=True)(q, k, v, layout)
    assert accel.relative_error(compiled, out) < 1e-2


def test_cudnn_fp8_in_a_compiled_transformer_is_one_graph_for_every_block() -> None:
    """Installed in a transformer (fixed Q/K scales, calibrated V), compiled per block: the
    blocks' scales are inputs of one graph, not constants that recompile it per block, and the
    output stays near plain bf16's."""
    from diffusers import WanTransformer3DModel
    from torch._dynamo.utils import counters

    from local_engine import accel, cudnn_fp8
    from local_engine.tiny import TEXT_TOKENS, TINY_I2V

    if not cudnn_fp8.available():
        pytest.skip("nvidia-cudnn-frontend not installed, or no Hopper GPU")
    heads = {"num_attention_heads": 2, "attention_head_dim": 128, "added_kv_proj_dim": 256}  # cuDNN's head size
    arch = TINY_I2V | heads | {"num_layers": 3, "ffn_dim": 512}
    torch.manual_seed(0)
    model = WanTransformer3DModel(**arch).to("cuda", torch.bfloat16).eval()
    g = torch.Generator(device="cuda").manual_seed(0)
    x = {
        "hidden_states": torch.randn(1, arch["in_channels"], 3, 16, 24, generator=g, device="cuda"),
        "timestep": torch.tensor([500.0], device="cuda"),
        "encoder_hidden_states": torch.randn(1, TEXT_TOKENS, arch["text_dim"], generator=g, device="cuda"),
        "encoder_hidden_states_image": torch.randn(1, 257, arch["image_dim"], generator=g, device="cuda"),
    }
    x = {k: v.to(torch.bfloat16) if v.dim() > 1 else v for k, v in x.items()}
    with torch.inference_mode():
        reference = model(**x, return_dict=False)[0]
        accel.apply(model, attention="cudnn_fp8", fp8=True, fuse=True, fp8_scaling="static", compile=False,
                    cache_threshold=None)  # fmt: skip
        accel.calibrate(model, lambda: model(**x))
        assert all(b.attn1.i2v_fp8_scales.v_static for b in model.blocks)
        torch._dynamo.reset()
        counters.clear()
        model.compile_repeated_blocks(fullgraph=True)
        out = model(**x, return_dict=False)[0]
        assert counters["stats"]["unique_graphs"] == 1
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            model(**x)
    kernels = [e.name for e in prof.events()]
    assert sum("_norm_rope_fp8" in name for name in kernels) == 2 * arch["num_layers"]  # Q and K, one pass each
    assert accel.relative_error(out, reference) < 0.1


def test_the_one_pass_q_k_kernel_matches_its_reference() -> None:
    """local_engine/qk_fp8.py's Triton kernel against its torch reference (both float32 inside):
    the same fp8 codes but for rare rounding ties one step apart, heads first, eager and compiled,
    on a strided view of a fused QKV projection as the engine hands it over."""
    from local_engine import qk_fp8

    if not torch.cuda.is_available() or qk_fp8.triton is None:
        pytest.skip("needs CUDA and Triton")
    g = torch.Generator(device="cuda").manual_seed(0)
    heads, dim, seq = 4, 128, 1000
    qkv = torch.randn(2, seq, 3 * heads * dim, generator=g, device="cuda").to(torch.bfloat16)
    x = qkv[..., heads * dim : 2 * heads * dim]  # a view, rows 3x wider than its own
    norm = torch.nn.RMSNorm(heads * dim, eps=1e-6).to("cuda", torch.bfloat16).requires_grad_(False)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(heads * dim, generator=g, device="cuda") + 0.5)
    angles = torch.rand(1, seq, 1, dim // 2, generator=g, device="cuda") * 6.3
    rope = (angles.cos().repeat_interleave(2, -1), angles.sin().repeat_interleave(2, -1))  # diffusers' tables
    mean = 0.1 * torch.randn(1, 1, heads, dim, generator=g, device="cuda")
    scale = torch.tensor(1.5 * (heads * dim) ** 0.5 / 448, device="cuda")
    args = (x, norm.weight, *rope, mean, scale.reshape(1), heads, 1e-6)
    expected = qk_fp8.reference(*args)
    for out in (
        qk_fp8.norm_rope_fp8(x, norm, rope, scale, heads, mean),
        torch.compile(qk_fp8.norm_rope_fp8, fullgraph=True)(x, norm, rope, scale, heads, mean),
    ):
        assert out.shape == expected.shape and out.stride() == expected.stride()
        a, b = out.float(), expected.float()
        assert (a == b).float().mean() > 0.99
        assert ((a - b).abs() <= (b.abs() / 8).clamp(min=2**-9) * 1.01).all()
