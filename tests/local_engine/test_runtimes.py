"""Each runtime and acceleration against the plain eager run on the same inputs.

Bounds (relative L2 error, float32 reference on CPU; the GPU figures are in docs/benchmarks.md):
- ONNX Runtime (CPU provider) vs torch: 1e-4 on one transformer output (same math, other kernels).
- fp8 linear layers: 0.08 on one transformer output. e4m3 keeps 3 mantissa bits, so one value
  is off by up to 2^-4 = 6%; with a scale per row and per token the errors of a dot product
  average out to ~2-4%, and two quantized matmuls in a row (qkv then out, ffn up then down)
  compound them. 8% is the bound at which the blocks still agree on every value's sign and
  scale; finer claims are measured at full size on the GPU.
- first-block cache at threshold 0.05: 0.05 on the final latents after 10 steps, with the tail
  blocks really skipped (measured 0.4% at 20 steps here, 28 of 40 tail-block runs skipped). The
  cache's error is a drift that accumulates over steps, so it is bounded on the final latents,
  where a user sees it, not on one forward.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from local_engine import accel
from local_engine.onnx_runtime import OnnxBlocks
from local_engine.tiny import TEXT_TOKENS, TINY_I2V


def _inputs(seed: int = 0, frames: int = 3, h: int = 8, w: int = 12) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "hidden_states": torch.randn(1, TINY_I2V["in_channels"], frames, h, w, generator=g),
        "timestep": torch.tensor([500.0]),
        "encoder_hidden_states": torch.randn(1, TEXT_TOKENS, TINY_I2V["text_dim"], generator=g),
        "encoder_hidden_states_image": torch.randn(1, 257, TINY_I2V["image_dim"], generator=g),
    }


@pytest.fixture(scope="module")
def transformer(tiny_wan: Path):
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel.from_pretrained(tiny_wan / "transformer").eval()


def _forward(model, inputs):  # type: ignore[no-untyped-def]
    with torch.no_grad():
        return model(**inputs, return_dict=False)[0]


def test_every_block_runs_through_one_onnx_graph_with_its_own_weights(transformer, tmp_path: Path) -> None:
    """One graph of one block, weights as inputs: parity with torch on every block, a single
    small graph on disk for all of them, and new weights (a LoRA, another checkpoint) reuse it."""
    import onnx

    model = copy.deepcopy(transformer)
    reference = _forward(model, _inputs())
    blocks = OnnxBlocks.install(model, tmp_path, ["CUDAExecutionProvider", "CPUExecutionProvider"], attention="onnx")
    assert blocks.providers == ["CPUExecutionProvider"]
    assert accel.relative_error(_forward(model, _inputs()), reference) < 1e-4
    assert accel.relative_error(_forward(model, _inputs(seed=1)), _forward(transformer, _inputs(seed=1))) < 1e-4
    (graph,) = tmp_path.glob("transformer-block-*.onnx")  # one graph serves both blocks
    proto = onnx.load(str(graph), load_external_data=False)
    assert len(proto.graph.input) == 5 + len(blocks.names)  # activations, then every weight
    ops = {n.op_type for n in proto.graph.node}
    assert {"Attention", "RMSNormalization"} <= ops and "ScatterND" not in ops  # fused; no slow scatter
    with torch.no_grad():  # other weights, same graph: the output follows them
        for p in transformer.blocks[1].parameters():
            p.mul_(1.5)
        for p, q in zip(model.blocks[1].parameters(), transformer.blocks[1].parameters(), strict=True):
            p.copy_(q)
    assert accel.relative_error(_forward(model, _inputs()), _forward(transformer, _inputs())) < 1e-4
    assert len(list(tmp_path.glob("*.onnx"))) == 1


def test_block_graph_attention_rewritten_as_multihead_attention(transformer, tmp_path: Path) -> None:
    """`attention: multihead` (the default) turns every ONNX `Attention` node (self and both cross attentions)
    into ONNX Runtime's `MultiHeadAttention` and keeps torch's numbers; a mask or a KV cache on
    the node is refused rather than dropped."""
    import onnx

    from local_engine.onnx_runtime import to_multihead

    model = copy.deepcopy(transformer)
    reference = _forward(model, _inputs())
    OnnxBlocks.install(model, tmp_path, ["CPUExecutionProvider"], attention="multihead")
    assert accel.relative_error(_forward(model, _inputs()), reference) < 1e-4
    (graph,) = tmp_path.glob("transformer-block-*.onnx")
    proto = onnx.load(str(graph), load_external_data=False)
    ops = [n.op_type for n in proto.graph.node]
    assert "Attention" not in ops and ops.count("MultiHeadAttention") == 3
    heads = {a.i for n in proto.graph.node for a in n.attribute if a.name == "num_heads"}
    assert heads == {transformer.blocks[0].attn1.heads}
    masked = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("Attention", ["q", "k", "v", "mask"], ["y"])],
            "masked",
            [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1, 2, 4, 8]) for n in "qkv"]
            + [onnx.helper.make_tensor_value_info("mask", onnx.TensorProto.FLOAT, [4, 4])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2, 4, 8])],
        )
    )
    onnx.save(masked, str(tmp_path / "masked.onnx"))
    with pytest.raises(ValueError, match="mask-free"):
        to_multihead(tmp_path / "masked.onnx", heads=2)
    with pytest.raises(ValueError, match="attention: one of"):
        OnnxBlocks(transformer, tmp_path, ["CPUExecutionProvider"], attention="flash")


def test_a_failed_rewrite_leaves_no_graph_behind(transformer, tmp_path: Path) -> None:
    """The exported graph is kept under the rewritten variant's name only once rewritten: a
    rewrite that fails leaves nothing a later session would load unrewritten."""
    model = copy.deepcopy(transformer)
    blocks = OnnxBlocks.install(model, tmp_path, ["CPUExecutionProvider"])

    def broken(path: Path) -> None:
        raise ValueError("rewrite failed")

    blocks._graphs.rewrite = broken
    with pytest.raises(ValueError, match="rewrite failed"):
        _forward(model, _inputs())
    assert not list(tmp_path.glob("*.onnx"))


def test_fp8_linear_layers_within_bound(transformer) -> None:
    quantized = copy.deepcopy(transformer)
    swapped = accel.fp8_linears(quantized)
    assert swapped >= 8  # q, k, v, out of both attentions and the ffn, in every block
    assert isinstance(quantized.blocks[0].ffn.net[2], accel.Fp8Linear)
    for seed in range(3):
        inputs = _inputs(seed)
        err = accel.relative_error(_forward(quantized, inputs), _forward(transformer, inputs))
        assert 0 < err < 0.08, err


def test_fp8_row_quantization_error_is_what_e4m3_promises() -> None:
    x = torch.randn(64, 256)
    q, scale = accel._quantize_rows(x)
    back = q.float() * scale
    assert accel.relative_error(back, x) < 2**-4  # 3 mantissa bits: <= 6.25% per value, less on average


def _run(pipe, **kw):  # type: ignore[no-untyped-def]
    image = Image.fromarray((np.random.default_rng(0).random((64, 96, 3)) * 255).astype("uint8"))
    return pipe(
        image=image,
        prompt="slow push in",
        height=64,
        width=96,
        num_frames=9,
        num_inference_steps=10,
        guidance_scale=5.0,
        output_type="latent",
        generator=torch.Generator().manual_seed(0),
        **kw,
    ).frames


def test_first_block_cache_skips_steps_within_bound(tiny_wan: Path) -> None:
    from diffusers import WanImageToVideoPipeline

    pipe = WanImageToVideoPipeline.from_pretrained(tiny_wan, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    reference = _run(pipe)
    calls = {"n": 0}
    tail = pipe.transformer.blocks[-1].ffn  # runs only when the block really computes
    hook = tail.register_forward_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
    _run(pipe)
    full_calls = calls["n"]
    calls["n"] = 0
    accel.apply(pipe.transformer, attention=None, fp8=False, compile=False, cache_threshold=0.05)
    cached = _run(pipe)
    hook.remove()
    assert calls["n"] < full_calls  # the tail blocks were skipped on some steps
    assert accel.relative_error(cached, reference) < 0.05


def test_onnx_runtime_inside_the_pipeline_matches_torch(tiny_wan: Path, tmp_path: Path) -> None:
    from diffusers import WanImageToVideoPipeline

    from local_engine.onnx_runtime import OnnxVaeDecoder

    pipe = WanImageToVideoPipeline.from_pretrained(tiny_wan, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    reference = _run(pipe)
    OnnxBlocks.install(pipe.transformer, tmp_path, ["CPUExecutionProvider"])
    OnnxVaeDecoder.install(pipe.vae, tmp_path, ["CPUExecutionProvider"], "tiny")
    assert accel.relative_error(_run(pipe), reference) < 1e-3


def test_fused_qkv_gives_the_same_output_with_one_gemm(transformer) -> None:
    fused = copy.deepcopy(transformer)
    assert accel.fuse_qkv(fused) == 2 * len(fused.blocks)
    attn1, attn2 = fused.blocks[0].attn1, fused.blocks[0].attn2
    assert hasattr(attn1, "to_qkv") and not hasattr(attn1, "to_q") and not hasattr(attn1, "to_k")
    assert hasattr(attn2, "to_kv") and hasattr(attn2, "to_added_kv") and isinstance(attn2.add_k_proj, torch.nn.Identity)
    inputs = _inputs()
    assert accel.relative_error(_forward(fused, inputs), _forward(transformer, inputs)) < 1e-5


@pytest.mark.parametrize("scaling", ["tensor", "static"])
def test_fp8_tensor_and_static_scales_within_bound(transformer, scaling: str) -> None:
    quantized = copy.deepcopy(transformer)
    accel.fuse_qkv(quantized)
    accel.fp8_linears(quantized, scaling=scaling)
    if scaling == "static":
        accel.calibrate(quantized, lambda: [_forward(quantized, _inputs(s)) for s in (10, 11)])
        layer = quantized.blocks[0].ffn.net[2]
        assert float(layer.x_scale) > 0 and layer.calibrating is False
        assert float(layer.x_scale_inv) == pytest.approx(1 / float(layer.x_scale), rel=1e-6)  # the cast's factor
    for seed in range(3):
        inputs = _inputs(seed)
        err = accel.relative_error(_forward(quantized, inputs), _forward(transformer, inputs))
        assert 0 < err < 0.08, err
