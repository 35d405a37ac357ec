"""The ONNX runtime: the Wan transformer's blocks and the VAE decoder run by ONNX Runtime.

The transformer is exported as ONE block whose weights are graph inputs, and all its blocks run
through that graph with their own weights bound (`OnnxBlocks`): 40 identical blocks need one
graph of kilobytes instead of a 28 GB copy of the 14B weights, the export takes seconds instead
of minutes, the weights stay where torch loaded them (one copy in GPU memory, bound by pointer),
and a new checkpoint or LoRA needs no new graph. The embedders, RoPE and output head (<1% of the
time) stay in torch. The VAE decoder is exported whole, its weights as external data.

Graphs are exported per input shape (static shapes, like NVIDIA's TensorRT Wan demo) at opset 23,
so attention is one ONNX `Attention` node and RMS norms one `RMSNormalization`. The block graph
can have its attention rewritten as ONNX Runtime's `MultiHeadAttention` (`to_multihead`): on the
CUDA provider that op can run cuDNN's fused attention, where the standard op runs
FlashAttention-2 (measured in docs/benchmarks.md). Inputs and outputs are bound to torch tensors in the graph's
own dtype (bf16 included) on the tensors' device, so nothing is converted or copied through the
host. Providers are tried in order TensorRT, CUDA, CPU; the installed build decides which exist.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

log = logging.getLogger("i2v.local.onnx")
OPSET = 23  # Attention and RMSNormalization as single nodes
BLOCK_INPUTS = ("hidden_states", "encoder_hidden_states", "temb", "freqs_cos", "freqs_sin")
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
#: ONNX Runtime's type names -> torch dtypes, and torch dtypes -> ONNX element types (TensorProto).
_TORCH = {
    "tensor(float)": torch.float32,
    "tensor(float16)": torch.float16,
    "tensor(bfloat16)": torch.bfloat16,
    "tensor(double)": torch.float64,
    "tensor(int64)": torch.int64,
    "tensor(int32)": torch.int32,
    "tensor(bool)": torch.bool,
}
_ONNX = {
    torch.float32: 1,
    torch.int32: 6,
    torch.int64: 7,
    torch.bool: 9,
    torch.float16: 10,
    torch.float64: 11,
    torch.bfloat16: 16,
}


#: How the block graph's attention runs: the standard `Attention` node as exported, or rewritten
#: as ONNX Runtime's `MultiHeadAttention` (in the graph's dtype, or fp16 with casts around it).
ATTENTION = ("onnx", "multihead", "multihead-fp16")


class MissingGraph(RuntimeError):
    """No graph was built ahead of time for this shape (`i2v-gateway engine build`)."""


def export(module: nn.Module, inputs: dict[str, torch.Tensor], output: str, path: Path) -> Path:
    """Export for these input shapes (positional, in `inputs`' order). Weights held by the
    module go to `<name>.onnx.data` beside the graph."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        program = torch.onnx.export(
            module.eval(),
            tuple(inputs.values()),
            dynamo=True,
            opset_version=OPSET,
            input_names=list(inputs),
            output_names=[output],
        )
    assert program is not None
    program.save(str(path), external_data=True)
    return path


@contextlib.contextmanager
def exporting(pipe: Any) -> Iterator[None]:
    """Allow exports on the pipeline's ONNX parts for the duration (what `engine build` does)."""
    parts = [
        p
        for p in (getattr(pipe.transformer, "onnx_blocks", None), getattr(pipe.vae, "decode", None))
        if hasattr(p, "lazy")
    ]
    before = [p.lazy for p in parts]
    for p in parts:
        p.lazy = True
    try:
        yield
    finally:
        for p, was in zip(parts, before, strict=True):
            p.lazy = was


def to_multihead(path: Path, heads: int, fp16: bool = False) -> None:
    """Rewrite, in place, each ONNX `Attention` node of the graph at `path` (4-D inputs, no mask)
    as ONNX Runtime's `com.microsoft.MultiHeadAttention` over (batch, tokens, heads x dim)
    tensors. The transposes it adds cancel against the exporter's own. With `fp16`, q, k and v
    are cast to fp16 around the node (for a provider without a bf16 kernel of it)."""
    import onnx
    from onnx import helper

    proto = onnx.load(str(path), load_external_data=False)
    graph, nodes = proto.graph, []
    back = graph.input[0].type.tensor_type.elem_type  # the activations' dtype
    graph.initializer.extend(
        [
            onnx.numpy_helper.from_array(np.array([0, 0, -1], np.int64), "mha_bsd"),
            onnx.numpy_helper.from_array(np.array([0, 0, heads, -1], np.int64), "mha_bsnh"),
        ]
    )
    for i, node in enumerate(graph.node):
        if node.op_type != "Attention" or node.domain not in ("", "ai.onnx"):
            nodes.append(node)
            continue
        if len([x for x in node.input if x]) != 3 or any(node.output[1:]):
            raise ValueError(f"{node.name}: only mask-free attention without caches is rewritten")
        flat = []
        for name in node.input[:3]:
            t = f"mha{i}_{len(flat)}"
            nodes += [
                helper.make_node("Transpose", [name], [t + "_t"], perm=[0, 2, 1, 3]),
                helper.make_node("Reshape", [t + "_t", "mha_bsd"], [t + "_bsd"]),
            ]
            if fp16:
                nodes.append(helper.make_node("Cast", [t + "_bsd"], [t + "_h"], to=onnx.TensorProto.FLOAT16))
            flat.append(t + ("_h" if fp16 else "_bsd"))
        scale = {a.name: helper.get_attribute_value(a) for a in node.attribute}.get("scale")
        out = f"mha{i}_out"
        nodes.append(
            helper.make_node(
                "MultiHeadAttention",
                flat,
                [out],
                domain="com.microsoft",
                num_heads=heads,
                **({"scale": scale} if scale else {}),
            )
        )
        if fp16:
            nodes.append(helper.make_node("Cast", [out], [out + "_c"], to=back))
            out += "_c"
        nodes += [
            helper.make_node("Reshape", [out, "mha_bsnh"], [out + "_bsnh"]),
            helper.make_node("Transpose", [out + "_bsnh"], [node.output[0]], perm=[0, 2, 1, 3]),
        ]
    del graph.node[:]
    graph.node.extend(nodes)
    if not any(o.domain == "com.microsoft" for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(proto, str(path))


def _providers(wanted: list[str], device: torch.device, cuda: dict[str, str] | None = None) -> list[Any]:
    """The installed providers among `wanted`, the GPU ones pinned to the tensors' GPU; `cuda`:
    more options for the CUDA provider (e.g. `sdpa_kernel`)."""
    import onnxruntime as ort

    have = set(ort.get_available_providers())
    chosen = [p for p in wanted if p in have] or ["CPUExecutionProvider"]
    if device.type != "cuda":
        return [p for p in chosen if p not in GPU_PROVIDERS] or ["CPUExecutionProvider"]
    extra = {"CUDAExecutionProvider": cuda or {}}
    return [(p, {"device_id": str(device.index or 0)} | extra.get(p, {})) if p in GPU_PROVIDERS else p for p in chosen]


class _Graphs:
    """One ONNX Runtime session per input shape; each graph is exported once and kept on disk
    under `onnx_dir`, keyed by the shapes, the dtypes and `tag` (what else shapes the graph).
    With `lazy` off a missing graph is an error naming the build command, not a silent export
    of minutes inside a job."""

    def __init__(
        self,
        module: nn.Module,
        name: str,
        output: str,
        onnx_dir: Path,
        providers: list[str],
        tag: str,
        max_sessions: int = 4,
        rewrite: Any = None,
    ) -> None:
        self.module, self.name, self.output = module, name, output
        self.onnx_dir, self.wanted, self.tag = onnx_dir, providers, tag
        self.max_sessions, self.rewrite = max_sessions, rewrite
        self.cuda: dict[str, str] | None = None  # more CUDA provider options (`_Exported.cuda_options`)
        self.lazy = True
        self._sessions: dict[str, Any] = {}  # most recently used last

    def session(self, inputs: dict[str, torch.Tensor]) -> Any:
        import onnxruntime as ort

        key = "-".join(f"{'x'.join(map(str, v.shape))}:{str(v.dtype)[6:]}" for v in inputs.values())
        if key not in self._sessions:
            digest = hashlib.sha256(f"{self.tag}:{key}:opset{OPSET}".encode()).hexdigest()[:16]
            path = self.onnx_dir / f"{self.name}-{digest}.onnx"
            if not path.exists():
                if not self.lazy:
                    raise MissingGraph(
                        f"no ONNX {self.name} graph for these input shapes ({self.tag}); build it ahead of time: "
                        "i2v-gateway engine build --shape WIDTHxHEIGHT --seconds S (docs/configuration.md)"
                    )
                log.info(f"exporting the {self.name} to ONNX", extra={"path": str(path)})
                export(self.module, inputs, self.output, path)
                if self.rewrite is not None:
                    try:
                        self.rewrite(path)
                    except Exception:  # never leave the graph as exported under the rewritten one's name
                        path.unlink()
                        raise
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            device = next(iter(inputs.values())).device
            while len(self._sessions) >= self.max_sessions:  # bounded: drop the least recently used
                self._sessions.pop(next(iter(self._sessions)))
            self._sessions[key] = ort.InferenceSession(
                str(path), options, providers=_providers(self.wanted, device, self.cuda)
            )
        session = self._sessions[key] = self._sessions.pop(key)  # now the most recent
        return session

    def run(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return run_bound(self.session(inputs), inputs, self.output)


def run_bound(session: Any, inputs: dict[str, torch.Tensor], output: str) -> torch.Tensor:
    """Run with inputs and output bound to torch memory in the graph's dtypes: on the GPU when
    the session runs there (no host round trip), else on the CPU. Returns the output tensor."""
    on_gpu = session.get_providers()[0] in GPU_PROVIDERS
    device = next(iter(inputs.values())).device
    if not (on_gpu and device.type == "cuda"):
        device = torch.device("cpu")
    binding, keep = session.io_binding(), []
    for arg in session.get_inputs():
        t = inputs[arg.name].to(device=device, dtype=_TORCH[arg.type]).contiguous()
        keep.append(t)  # alive until the run ends
        binding.bind_input(arg.name, device.type, device.index or 0, _ONNX[t.dtype], tuple(t.shape), t.data_ptr())
    (meta,) = [o for o in session.get_outputs() if o.name == output]
    out = torch.empty(tuple(meta.shape), dtype=_TORCH[meta.type], device=device)
    binding.bind_output(output, device.type, device.index or 0, _ONNX[out.dtype], tuple(out.shape), out.data_ptr())
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()  # torch's writes land before ONNX Runtime's stream reads
    session.run_with_iobinding(binding)  # returns once the provider's stream is done
    return out


class _Exported:
    """`lazy`: whether a graph missing for a new shape may be exported (else `MissingGraph`)."""

    _graphs: _Graphs

    @property
    def lazy(self) -> bool:
        return self._graphs.lazy

    @lazy.setter
    def lazy(self, value: bool) -> None:
        self._graphs.lazy = value

    @property
    def providers(self) -> list[str]:
        return [p if isinstance(p, str) else p[0] for p in _providers(self._graphs.wanted, self._device)]

    @property
    def cuda_options(self) -> dict[str, str]:
        """More CUDA provider options for the sessions created from now on (`sdpa_kernel`: a
        bitmask of attention kernels ONNX Runtime may pick, 8 = cuDNN, 16 = unfused)."""
        return self._graphs.cuda or {}

    @cuda_options.setter
    def cuda_options(self, value: dict[str, str]) -> None:
        self._graphs.cuda = value


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Wan's rotary embedding with the halves interleaved by stack + reshape: diffusers writes
    them into strided slices of an empty tensor, which exports as ScatterND, and ONNX Runtime's
    CUDA ScatterND took 90% of a block's GPU time (measured, docs/benchmarks.md)."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[..., 0::2], sin[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), -1).flatten(-2).type_as(x)


class _ExportAttention:
    """`WanAttnProcessor`'s arithmetic, written for export (`_rotate`; attention through SDPA,
    which becomes one ONNX `Attention` node). Used only to trace the block graph."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):  # type: ignore[no-untyped-def]
        from diffusers.models.transformers.transformer_wan import _get_added_kv_projections, _get_qkv_projections

        def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            out = torch.nn.functional.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            )
            return out.transpose(1, 2).flatten(2, 3).type_as(q)

        image = None
        if attn.add_k_proj is not None:
            split = encoder_hidden_states.shape[1] - 512  # 512 text tokens; the image's before them
            image, encoder_hidden_states = encoder_hidden_states[:, :split], encoder_hidden_states[:, split:]
        query, key, value = _get_qkv_projections(attn, hidden_states, encoder_hidden_states)
        query, key = attn.norm_q(query), attn.norm_k(key)
        query, key, value = (t.unflatten(2, (attn.heads, -1)) for t in (query, key, value))
        if rotary_emb is not None:
            query, key = _rotate(query, *rotary_emb), _rotate(key, *rotary_emb)
        out = sdpa(query, key, value)
        if image is not None:
            key_img, value_img = _get_added_kv_projections(attn, image)
            key_img = attn.norm_added_k(key_img)
            out = out + sdpa(query, key_img.unflatten(2, (attn.heads, -1)), value_img.unflatten(2, (attn.heads, -1)))
        return attn.to_out[1](attn.to_out[0](out))


class _PlainBlock(nn.Module):
    """The block's class forward: `OnnxBlocks.install` replaces the instance's own."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, hidden_states, encoder_hidden_states, temb, freqs_cos, freqs_sin):  # type: ignore[no-untyped-def]
        attentions = (self.block.attn1, self.block.attn2)
        before = [a.processor for a in attentions]
        for a in attentions:
            a.processor = _ExportAttention()
        try:
            rotary = (freqs_cos, freqs_sin)
            return type(self.block).forward(self.block, hidden_states, encoder_hidden_states, temb, rotary)
        finally:
            for a, p in zip(attentions, before, strict=True):
                a.processor = p


class _BlockCall(nn.Module):
    """One Wan block as a function of its activations and its weights, so that the exported
    graph takes the weights as inputs and serves every block of the transformer."""

    def __init__(self, block: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.plain, self.names = _PlainBlock(block), [f"block.{n}" for n in names]

    def forward(self, hidden_states, encoder_hidden_states, temb, freqs_cos, freqs_sin, *weights):  # type: ignore[no-untyped-def]
        state = dict(zip(self.names, weights, strict=True))
        args = (hidden_states, encoder_hidden_states, temb, freqs_cos, freqs_sin)
        return torch.func.functional_call(self.plain, state, args)


def _tensors(block: nn.Module) -> dict[str, torch.Tensor]:
    return dict(block.named_parameters()) | dict(block.named_buffers())


class OnnxBlocks(_Exported):
    """Runs each of the transformer's blocks through one ONNX graph of one block (`install`).

    The graph's identity is the architecture (the transformer's config) and the input shapes,
    never the weights: they are inputs, bound from the blocks' own tensors on every call.
    """

    def __init__(
        self, transformer: nn.Module, onnx_dir: Path, providers: list[str], attention: str = "multihead"
    ) -> None:
        if attention not in ATTENTION:
            raise ValueError(f"attention: one of {', '.join(ATTENTION)}, not {attention!r}")
        blocks = list(transformer.blocks)  # type: ignore[attr-defined]
        self.names = list(_tensors(blocks[0]))
        self.weights = [[_tensors(b)[n] for n in self.names] for b in blocks]
        self._device = self.weights[0][0].device
        config = json.dumps(dict(transformer.config), sort_keys=True, default=str)  # type: ignore[attr-defined]
        tag = f"arch {hashlib.sha256(config.encode()).hexdigest()[:12]} attention {attention}"
        heads = blocks[0].attn1.heads
        fp16 = "fp16" in attention
        rewrite = None if attention == "onnx" else functools.partial(to_multihead, heads=heads, fp16=fp16)
        self._graphs = _Graphs(
            _BlockCall(blocks[0], self.names), "transformer-block", "out", onnx_dir, providers, tag, rewrite=rewrite
        )
        self.blocks = blocks

    @classmethod
    def install(
        cls, transformer: nn.Module, onnx_dir: Path, providers: list[str], attention: str = "multihead"
    ) -> OnnxBlocks:
        runner = cls(transformer, onnx_dir, providers, attention)
        for i, block in enumerate(runner.blocks):
            block.forward = functools.partial(runner.run, i)  # type: ignore[method-assign]
        transformer.onnx_blocks = runner  # type: ignore[assignment]  # found by `exporting`
        return runner

    def run(
        self,
        index: int,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        temb: torch.Tensor,
        rotary_emb: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        activations = (hidden_states, encoder_hidden_states, temb, *rotary_emb)
        inputs = dict(zip(BLOCK_INPUTS, activations, strict=True))
        inputs |= {f"w{k}": w for k, w in enumerate(self.weights[index])}
        out = self._graphs.run(inputs)
        return out.to(hidden_states.device, hidden_states.dtype)


class _Decode(nn.Module):
    """The VAE's own decode (the class's, not the instance's: that one becomes ONNX)."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return type(self.vae).decode(self.vae, z, return_dict=False)[0]


class OnnxVaeDecoder(_Exported):
    """Takes the place of `vae.decode` on the pipeline's VAE (`install`); the rest of the VAE,
    whose encoder runs once per video on the first frame, stays in torch."""

    def __init__(self, vae: nn.Module, onnx_dir: Path, providers: list[str], tag: str) -> None:
        first = next(vae.parameters())
        self._dtype, self._device = first.dtype, first.device
        self._graphs = _Graphs(_Decode(vae), "vae-decoder", "video", onnx_dir, providers, f"weights {tag}")

    @classmethod
    def install(cls, vae: nn.Module, onnx_dir: Path, providers: list[str], tag: str) -> OnnxVaeDecoder:
        decoder = cls(vae, onnx_dir, providers, tag)
        vae.decode = decoder  # type: ignore[method-assign]
        return decoder

    def __call__(self, z: torch.Tensor, return_dict: bool = True) -> Any:
        from diffusers.models.autoencoders.vae import DecoderOutput

        video = self._graphs.run({"z": z.to(self._dtype)}).to(z.device, z.dtype)
        return DecoderOutput(sample=video) if return_dict else (video,)
