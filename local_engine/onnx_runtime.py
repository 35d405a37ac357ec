"""The ONNX runtime: the Wan transformer exported to ONNX and run by ONNX Runtime.

Graphs are exported per input shape (static shapes, like NVIDIA's TensorRT Wan demo) with the
weights as external data, since the 14B transformer is far past protobuf's 2 GB. Providers are
tried in order TensorRT, CUDA, CPU; whichever ONNX Runtime build is installed decides which
exist. The pipeline keeps its VAE, encoders and scheduler in torch; only the transformer, which
is >95% of the time, is swapped for `OnnxTransformer`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
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
    path.parent.mkdir(parents=True, exist_ok=True)
    args = tuple(inputs[k] for k in INPUTS if inputs.get(k) is not None)
    names = [k for k in INPUTS if inputs.get(k) is not None]
    with torch.no_grad():
        program = torch.onnx.export(
            _Forward(transformer).eval(),
            args,
            dynamo=True,
            opset_version=opset,
            input_names=names,
            output_names=["noise_pred"],
        )
    assert program is not None
    program.save(str(path), external_data=True)
    return path


def available_providers(wanted: list[str]) -> list[str]:
    import onnxruntime as ort

    have = set(ort.get_available_providers())
    return [p for p in wanted if p in have] or ["CPUExecutionProvider"]


class OnnxTransformer(nn.Module):
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
        self.onnx_dir = onnx_dir
        self.providers = available_providers(providers)
        self.tag = tag
        self._sessions: dict[str, Any] = {}

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def device(self) -> torch.device:
        return self._device

    def cache_context(self, name: str) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def _session(self, inputs: dict[str, torch.Tensor | None]) -> Any:
        import onnxruntime as ort

        key = "-".join("x".join(map(str, v.shape)) for v in inputs.values() if v is not None)
        if key not in self._sessions:
            digest = hashlib.sha256(f"{self.tag}:{key}:{self._dtype}".encode()).hexdigest()[:16]
            path = self.onnx_dir / f"transformer-{digest}.onnx"
            if not path.exists():
                log.info("exporting the transformer to ONNX", extra={"path": str(path), "shapes": key})
                export_transformer(self._torch[0], inputs, path)
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            self._sessions[key] = ort.InferenceSession(str(path), options, providers=self.providers)
        return self._sessions[key]

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
        session = self._session(inputs)
        feed = {i.name: _numpy(inputs[i.name]) for i in session.get_inputs()}
        (out,) = session.run(["noise_pred"], feed)
        return (torch.from_numpy(np.asarray(out)).to(hidden_states.device, hidden_states.dtype),)


def _numpy(t: torch.Tensor | None) -> np.ndarray:
    assert t is not None
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16; such graphs are exported in float32
        t = t.float()
    return t.numpy()
