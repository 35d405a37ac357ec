"""The ONNX runtime: the Wan transformer and the VAE decoder exported to ONNX and run by ONNX Runtime.

Graphs are exported per input shape (static shapes, like NVIDIA's TensorRT Wan demo) with the
weights as external data, since the 14B transformer is far past protobuf's 2 GB. Providers are
tried in order TensorRT, CUDA, CPU; whichever ONNX Runtime build is installed decides which
exist. The transformer (>95% of the time) is swapped for `OnnxTransformer` and the VAE's
`decode` for `OnnxVaeDecoder`; the text and image encoders, the VAE encoder (one frame per
video) and the scheduler stay in torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

log = logging.getLogger("i2v.local.onnx")
INPUTS = ("hidden_states", "timestep", "encoder_hidden_states", "encoder_hidden_states_image")


class _Forward(nn.Module):
    """Positional inputs, one tensor out: the shape torch.onnx.export wants."""

    def __init__(self, transformer: nn.Module) -> None:
        super().__init__()
        self.transformer = transformer

    def forward(self, hidden_states, timestep, encoder_hidden_states, encoder_hidden_states_image=None):  # type: ignore[no-untyped-def]
        return self.transformer(
            hidden_states=hidden_states,
            timestep=timestep,
            encoder_hidden_states=encoder_hidden_states,
            encoder_hidden_states_image=encoder_hidden_states_image,
            return_dict=False,
        )[0]


def export_transformer(
    transformer: nn.Module, inputs: dict[str, torch.Tensor | None], path: Path, opset: int = 20
) -> Path:
    """Export for these input shapes. Weights go to `<name>.onnx.data` beside the graph."""
    return _export(_Forward(transformer), inputs, "noise_pred", path, opset)


def _export(
    module: nn.Module, inputs: dict[str, torch.Tensor | None], output: str, path: Path, opset: int = 20
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [k for k, v in inputs.items() if v is not None]
    with torch.no_grad():
        program = torch.onnx.export(
            module.eval(),
            tuple(inputs[k] for k in names),
            dynamo=True,
            opset_version=opset,
            input_names=names,
            output_names=[output],
        )
    assert program is not None
    program.save(str(path), external_data=True)
    return path


class MissingGraph(RuntimeError):
    """No graph was built ahead of time for this shape (`i2v-gateway engine build`)."""


@contextlib.contextmanager
def exporting(pipe: Any) -> Iterator[None]:
    """Allow exports on the pipeline's ONNX parts for the duration (what `engine build` does)."""
    parts = [p for p in (getattr(pipe, "transformer", None), getattr(pipe.vae, "decode", None)) if hasattr(p, "lazy")]
    before = [p.lazy for p in parts]
    for p in parts:
        p.lazy = True
    try:
        yield
    finally:
        for p, was in zip(parts, before, strict=True):
            p.lazy = was


class _Sessions:
    """One ONNX Runtime session per input shape; each graph is exported once and kept on disk
    under `onnx_dir`, keyed by the shapes, the dtype and `tag` (the weights' identity). With
    `lazy` off a missing graph is an error naming the build command, not a silent export of
    minutes inside a job."""

    def __init__(
        self,
        module: nn.Module,
        name: str,
        output: str,
        onnx_dir: Path,
        providers: list[str],
        tag: str,
        max_sessions: int = 4,
    ):
        self.module, self.name, self.output = module, name, output
        self.onnx_dir, self.providers, self.tag = onnx_dir, providers, tag
        self.max_sessions = max_sessions
        self.lazy = True
        self._sessions: dict[str, Any] = {}  # most recently used last; each holds the weights

    def run(self, inputs: dict[str, torch.Tensor | None], dtype: torch.dtype) -> np.ndarray:
        import onnxruntime as ort

        key = "-".join("x".join(map(str, v.shape)) for v in inputs.values() if v is not None)
        if key not in self._sessions:
            digest = hashlib.sha256(f"{self.tag}:{key}:{dtype}".encode()).hexdigest()[:16]
            path = self.onnx_dir / f"{self.name}-{digest}.onnx"
            if not path.exists():
                if not self.lazy:
                    raise MissingGraph(
                        f"no ONNX {self.name} graph for input shapes {key} (weights {self.tag}); build it ahead of "
                        "time: i2v-gateway engine build --shape WIDTHxHEIGHT --seconds S (docs/configuration.md)"
                    )
                log.info(f"exporting the {self.name} to ONNX", extra={"path": str(path), "shapes": key})
                _export(self.module, inputs, self.output, path)
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            while len(self._sessions) >= self.max_sessions:  # bounded: drop the least recently used
                self._sessions.pop(next(iter(self._sessions)))
            self._sessions[key] = ort.InferenceSession(str(path), options, providers=self.providers)
        session = self._sessions[key] = self._sessions.pop(key)  # now the most recent
        feed = {i.name: _numpy(inputs[i.name]) for i in session.get_inputs()}
        (out,) = session.run([self.output], feed)
        return np.asarray(out)


def available_providers(wanted: list[str]) -> list[str]:
    import onnxruntime as ort

    have = set(ort.get_available_providers())
    return [p for p in wanted if p in have] or ["CPUExecutionProvider"]


class _Exported:
    """`lazy`: whether a graph missing for a new shape may be exported (else `MissingGraph`)."""

    _sessions: _Sessions

    @property
    def lazy(self) -> bool:
        return self._sessions.lazy

    @lazy.setter
    def lazy(self, value: bool) -> None:
        self._sessions.lazy = value


class OnnxTransformer(_Exported, nn.Module):
    """Stands in for `WanTransformer3DModel` inside the diffusers pipeline.

    Exports lazily for each new input shape (kept under `onnx_dir`, keyed by the shapes and a
    hash of the weights' identity), then runs ONNX Runtime. Exposes what the pipeline reads:
    `config`, `dtype`, `device`, `cache_context`.
    """

    def __init__(self, transformer: nn.Module, onnx_dir: Path, providers: list[str], tag: str) -> None:
        super().__init__()
        self._torch = [transformer]  # kept out of the module tree: only used to export
        self.config = transformer.config  # type: ignore[attr-defined]
        first = next(transformer.parameters())
        self._dtype, self._device = first.dtype, first.device
        self.providers = available_providers(providers)
        self._sessions = _Sessions(_Forward(transformer), "transformer", "noise_pred", onnx_dir, self.providers, tag)

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def device(self) -> torch.device:
        return self._device

    def cache_context(self, name: str) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_hidden_states_image: torch.Tensor | None = None,
        attention_kwargs: Any = None,
        return_dict: bool = False,
    ) -> tuple[torch.Tensor]:
        inputs = {
            "hidden_states": hidden_states,
            "timestep": timestep,
            "encoder_hidden_states": encoder_hidden_states,
            "encoder_hidden_states_image": encoder_hidden_states_image,
        }
        out = self._sessions.run(inputs, self._dtype)
        return (torch.from_numpy(out).to(hidden_states.device, hidden_states.dtype),)


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
        self.providers = available_providers(providers)
        self._dtype = next(vae.parameters()).dtype
        self._sessions = _Sessions(_Decode(vae), "vae-decoder", "video", onnx_dir, self.providers, f"{tag}:vae")

    @classmethod
    def install(cls, vae: nn.Module, onnx_dir: Path, providers: list[str], tag: str) -> OnnxVaeDecoder:
        decoder = cls(vae, onnx_dir, providers, tag)
        vae.decode = decoder  # type: ignore[method-assign]
        return decoder

    def __call__(self, z: torch.Tensor, return_dict: bool = True) -> Any:
        from diffusers.models.autoencoders.vae import DecoderOutput

        video = torch.from_numpy(self._sessions.run({"z": z}, self._dtype)).to(z.device, z.dtype)
        return DecoderOutput(sample=video) if return_dict else (video,)


def _numpy(t: torch.Tensor | None) -> np.ndarray:
    assert t is not None
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16; such graphs are exported in float32
        t = t.float()
    return t.numpy()
