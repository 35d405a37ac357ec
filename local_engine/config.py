"""Engine configuration: which weights, which runtime, which accelerations."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class EngineConfig(BaseModel):
    """Set through the `local` adapter's options (`I2V_ADAPTERS__LOCAL__OPTIONS__...`) or, for the
    weights folder alone, `I2V_LOCAL_WAN_PATH`."""

    model_config = ConfigDict(extra="forbid")

    model_path: Path = Field(description="A diffusers folder of WanImageToVideoPipeline weights.")
    runtime: Literal["torch", "onnx"] = "torch"
    devices: list[str] = Field(
        default_factory=lambda: ["auto"],
        description="One job queue per device. Under torchrun (WORLD_SIZE > 1) one queue for the group, each rank on "
        "its LOCAL_RANK GPU (`cpu` here: gloo on CPU).",
    )
    parallel: Literal["auto", "cfg", "ulysses", "ring"] = Field(
        default="auto",
        description="Under torchrun, how each job is split across the group's GPUs: auto = the CFG halves side by "
        "side when guided, then Ulysses over the sequence; cfg; ulysses; ring (local_engine/parallel.py).",
    )
    dtype: Literal["bfloat16", "float16", "float32"] = Field(default="bfloat16", description="float32 on CPU.")
    attention: str | None = Field(
        default=None,
        description="`sdpa_cudnn` / `sdpa_flash` / `sdpa_efficient` (force one PyTorch SDPA kernel); `sage_triton` "
        "(8-bit self-attention: int8 Q·Kᵀ, fp8 P·V, our Triton kernel; `sage_triton_fp8`: fp8 Q·Kᵀ; "
        "`sage_triton_bf16_pv`: int8 Q·Kᵀ, bf16 P·V); or a diffusers "
        "attention backend (`flash`, `_flash_3`, `sage`, ...); None: PyTorch's own choice.",
    )
    compile: bool = Field(default=False, description="Regional torch.compile of the repeated transformer blocks.")
    fuse_qkv: bool = Field(default=False, description="One GEMM for q/k/v (self-attention) and k/v (cross).")
    fp8_linear: bool = Field(default=False, description="fp8 (e4m3) matmuls in the blocks (CUDA, sm_89+).")
    fp8_scaling: Literal["row", "tensor", "static"] = Field(
        default="static",
        description="row: per row and token; tensor: per tensor, dynamic; static: per tensor, activation scales "
        "calibrated once at load (a 2-step run: the first and the last timestep).",
    )
    cache_threshold: float | None = Field(
        default=None, ge=0, description="First-block cache: reuse the residual while the change stays under this."
    )
    steps: int = Field(default=40, ge=1)
    guidance_scale: float = Field(default=5.0, ge=1.0)
    fps: int = Field(default=16, ge=1, description="Wan 2.1 makes 16 fps; Wan 2.2 TI2V-5B 24.")
    max_frames: int = Field(default=81, ge=5)
    onnx_dir: Path | None = Field(default=None, description="Where exported ONNX graphs are kept (onnx runtime).")
    onnx_build: Literal["ahead", "lazy"] = Field(
        default="ahead",
        description="ahead: graphs come from `i2v-gateway engine build` (a job at an unbuilt shape fails, saying "
        "so); lazy: a new shape is exported inside the job that first needs it (minutes at full size).",
    )
    onnx_attention: Literal["multihead", "multihead-fp16", "onnx"] = Field(
        default="multihead",
        description="multihead: the block graph's attention as ONNX Runtime's MultiHeadAttention (on the CUDA "
        "provider cuDNN's fused kernel: 3.30 s per forward at 480p on an H200 against 4.49 s for onnx, the "
        "standard Attention node, which runs FlashAttention-2); multihead-fp16: the same with q/k/v cast to fp16.",
    )
    onnx_providers: list[str] = Field(
        default_factory=lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
        description="Tried in order; those not installed are skipped.",
    )
    queue_size: int = Field(default=32, ge=1, description="Jobs waiting per device before submits are refused.")
    preload: bool = Field(
        default=True,
        description="Load the pipeline on each device when the engine starts (health says loading, then ready), "
        "not inside the first job.",
    )
    lora_path: Path | None = Field(
        default=None,
        description="A LoRA for the transformer (diffusers or PEFT safetensors, a file or a folder), fused at load; "
        "with `steps: 4` and `guidance_scale: 1.0` a step- and CFG-distilled LoRA (e.g. LightX2V's "
        "StepDistill-CfgDistill) runs 4 unguided steps.",
    )
    lora_scale: float = Field(default=1.0, description="The LoRA's weight when fused.")
    keep_jobs: int = Field(default=64, ge=1, description="Finished jobs (with their MP4) kept until fetched.")
