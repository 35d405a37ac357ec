"""The engine: load the pipeline once per device, run one job at a time per device, report
progress per denoising step, stop between steps on cancel, hand back an H.264 MP4.

Jobs queue per device (a worker thread each: the GPU is the bottleneck, not Python); a new
job goes to the device with the shortest queue. State lives in memory: after a restart the
gateway's runner finds the task unknown and falls back (the adapter says `interrupted`).
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from local_engine import accel
from local_engine.config import EngineConfig
from media import decode_rgb, encode_mp4

log = logging.getLogger("i2v.local")
State = Literal["queued", "in_progress", "completed", "failed", "cancelled"]


class Cancelled(Exception):
    """Raised from the step callback: leaves the denoising loop between two steps."""


@dataclass
class Job:
    id: str
    image: bytes
    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    num_frames: int
    seed: int | None
    steps: int
    guidance_scale: float
    state: State = "queued"
    step: int = 0
    error: str | None = None
    video: bytes | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def progress(self) -> int:
        return int(100 * self.step / max(1, self.steps))


def frames_for(seconds: float, fps: int, max_frames: int) -> int:
    """Wan needs 4k+1 frames (its VAE packs 4 frames per latent after the first)."""
    n = min(max_frames, max(5, round(seconds * fps) + 1))
    return (n - 1) // 4 * 4 + 1


def snap16(x: int) -> int:
    """Sides must be multiples of 16 (8x VAE, 2x2 patches)."""
    return max(16, round(x / 16) * 16)


def resolve_device(name: str) -> str:
    if name != "auto":
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"


#: One load at a time per process: `from_pretrained` builds modules under accelerate's
#: `init_empty_weights`, which patches `nn.Module.register_parameter` for the whole process while
#: it runs, so two loads (or a load and any other module being built) must not overlap.
_LOADING = threading.Lock()


def load_pipeline(config: EngineConfig, device: str) -> Any:
    """`from_pretrained` on the local folder, then the configured runtime and accelerations."""
    with _LOADING:
        return _load_pipeline(config, device)


def _load_pipeline(config: EngineConfig, device: str) -> Any:
    from diffusers import WanImageToVideoPipeline

    if not (Path(config.model_path) / "model_index.json").exists():
        raise FileNotFoundError(
            f"{config.model_path} is not a diffusers pipeline folder (no model_index.json). Point I2V_LOCAL_WAN_PATH "
            "at a downloaded Wan I2V checkpoint, e.g. Wan-AI/Wan2.1-I2V-14B-480P-Diffusers."
        )
    dtype = getattr(torch, config.dtype) if device != "cpu" else torch.float32
    pipe = WanImageToVideoPipeline.from_pretrained(config.model_path, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    if config.lora_path is not None:  # fused: no per-step LoRA cost, and compile/fp8/ONNX see plain weights
        path = Path(config.lora_path)
        kwargs = {"weight_name": path.name} if path.is_file() else {}
        pipe.load_lora_weights(str(path.parent if path.is_file() else path), adapter_name="engine", **kwargs)
        pipe.fuse_lora(lora_scale=config.lora_scale, components=["transformer"])
        pipe.unload_lora_weights()
    pipe.to(device)
    if config.runtime == "onnx":
        from local_engine.build import weights_id
        from local_engine.onnx_runtime import OnnxBlocks, OnnxVaeDecoder

        onnx_dir = config.onnx_dir or Path(config.model_path) / "onnx"
        tag = weights_id(Path(config.model_path), config.lora_path, config.lora_scale)
        blocks = OnnxBlocks.install(pipe.transformer, onnx_dir, config.onnx_providers, config.onnx_attention)
        decoder = OnnxVaeDecoder.install(pipe.vae, onnx_dir, config.onnx_providers, tag)
        blocks.lazy = decoder.lazy = config.onnx_build == "lazy"
        applied: dict[str, Any] = {
            "runtime": "onnx",
            "providers": blocks.providers,
            "onnx": "transformer blocks (one graph, weights bound), vae decoder",
            "onnx_attention": config.onnx_attention,
        }
    else:
        fp8 = config.fp8_linear and device.startswith("cuda")
        applied = accel.apply(
            pipe.transformer,
            attention=config.attention,
            fp8=fp8,
            fuse=config.fuse_qkv,
            fp8_scaling=config.fp8_scaling,
            compile=False,
            cache_threshold=config.cache_threshold,
        )
        if (fp8 and config.fp8_scaling == "static") or config.attention == "cudnn_fp8":
            accel.calibrate(pipe.transformer, lambda: _calibration_run(pipe))
        if config.compile:  # after calibration, so the compiled graphs see fixed scales
            pipe.transformer.compile_repeated_blocks(fullgraph=config.cache_threshold is None)
            applied["compile"] = "repeated_blocks"
    log.info("local pipeline loaded", extra={"path": str(config.model_path), "device": device, **applied})
    return pipe


def _calibration_run(pipe: Any) -> None:
    """Two steps of a 2-step schedule at 480p: the first (pure noise) and the last timestep,
    which bracket the activation ranges of a whole run."""
    image = Image.new("RGB", (832, 480), (128, 128, 128))
    with torch.inference_mode():
        pipe(
            image=image,
            prompt="calibration",
            height=480,
            width=832,
            num_frames=17,
            num_inference_steps=2,
            output_type="latent",
        )


def uint8_frames(frames: np.ndarray) -> np.ndarray:
    """The pipeline's float frames in [0, 1] as the uint8 frames the encoder takes, rounded."""
    return (np.clip(frames, 0, 1) * 255 + 0.5).astype(np.uint8)


def gpu_name(device: str) -> str | None:
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    return str(torch.cuda.get_device_name(torch.device(device)))


class DeviceWorker:
    """One device: a thread that owns the pipeline and runs its queue in order. With `preload`
    it loads the pipeline first (state `loading`, then `ready` or `failed`); jobs queue
    meanwhile, bounded by `queue_size`."""

    def __init__(self, config: EngineConfig, device: str) -> None:
        self.config = config
        self.device = resolve_device(device)
        self.queue: queue.Queue[Job | None] = queue.Queue(maxsize=config.queue_size)
        self.pipe: Any = None
        self.state: Literal["idle", "loading", "ready", "failed"] = "loading" if config.preload else "idle"
        self.error: str | None = None
        self.load_s: float | None = None
        self.running: str | None = None
        self.thread = threading.Thread(target=self._loop, name=f"i2v-local-{self.device}", daemon=True)
        self.thread.start()

    def _load(self) -> None:
        self.state = "loading"
        t0 = time.perf_counter()
        try:
            self.pipe = self._make_pipe()
        except Exception as exc:
            self.state, self.error = "failed", f"{type(exc).__name__}: {exc}"
            log.exception("local pipeline failed to load", extra={"device": self.device})
            raise
        self.load_s = round(time.perf_counter() - t0, 3)
        self.state = "ready"

    def _make_pipe(self) -> Any:
        return load_pipeline(self.config, self.device)

    def health(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "gpu": gpu_name(self.device),
            "state": self.state,
            "load_s": self.load_s,
            "queued": self.queue.qsize(),
            "running": self.running,
            "error": self.error,
        }

    def _loop(self) -> None:
        if self.config.preload:
            try:
                self._load()
            except Exception:
                pass  # health says failed; each queued job fails with the reason
        while True:
            job = self.queue.get()
            if job is None:
                return
            if job.cancel.is_set():
                job.state = "cancelled"
                continue
            self.running = job.id
            try:
                self._run(job)
            except Cancelled:
                job.state = "cancelled"
            except Exception as exc:  # a failed job must not kill the device's worker
                log.exception("local generation failed")
                job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
            finally:
                self.running = None

    def _run(self, job: Job) -> None:
        if self.state == "failed":
            raise RuntimeError(f"the pipeline did not load on {self.device}: {self.error}")
        job.state = "in_progress"
        if self.pipe is None:  # preload off: the first job loads it
            self._load()
            job.timings["load_s"] = self.load_s or 0.0
        t1 = time.perf_counter()
        frames = self._generate(job)
        job.timings["generate_s"] = round(time.perf_counter() - t1, 3)
        t2 = time.perf_counter()
        job.video = encode_mp4(list(frames), self.config.fps)
        job.timings["encode_s"] = round(time.perf_counter() - t2, 3)
        job.state = "completed"

    def _generate(self, job: Job) -> np.ndarray:
        """The pipeline call: uint8 frames (T, H, W, 3); stops between steps on cancel."""
        image = decode_rgb(job.image, (job.width, job.height))
        generator = torch.Generator(device="cpu").manual_seed(
            job.seed if job.seed is not None else secrets.randbits(31)
        )

        def on_step(pipe: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            job.step = i + 1
            if job.cancel.is_set():
                raise Cancelled
            return tensors

        with torch.inference_mode():
            out = self.pipe(
                image=image,
                prompt=job.prompt,
                negative_prompt=job.negative_prompt or "",
                height=job.height,
                width=job.width,
                num_frames=job.num_frames,
                num_inference_steps=job.steps,
                guidance_scale=job.guidance_scale,
                generator=generator,
                output_type="np",
                callback_on_step_end=on_step,
            )
        return uint8_frames(out.frames[0])

    def stop(self, timeout_s: float = 300) -> None:
        """Ask the thread to finish after its current work, and wait for it: a load still under way
        must not outlive the engine (it holds the process-wide module-building patch)."""
        self.queue.put(None)
        self.thread.join(timeout_s)


class QueueFull(RuntimeError):
    pass


class LocalEngine:
    def __init__(self, config: EngineConfig, workers: list[DeviceWorker] | None = None) -> None:
        """One worker per configured device; under torchrun (WORLD_SIZE > 1) one for the whole
        group, whose jobs run on every rank (local_engine/group.py)."""
        self.config = config
        from local_engine import group  # imports this module: not at its top

        if workers is None and group.world() > 1:
            workers = [group.GroupWorker(config)]
        self.workers = workers if workers is not None else [DeviceWorker(config, d) for d in config.devices]
        self.jobs: dict[str, Job] = {}

    def submit(
        self,
        image: bytes,
        prompt: str,
        *,
        width: int,
        height: int,
        seconds: float,
        negative_prompt: str | None = None,
        seed: int | None = None,
    ) -> Job:
        job = Job(
            id=f"local-{secrets.token_hex(8)}",
            image=image,
            prompt=prompt,
            negative_prompt=negative_prompt,
            width=snap16(width),
            height=snap16(height),
            num_frames=frames_for(seconds, self.config.fps, self.config.max_frames),
            seed=seed,
            steps=self.config.steps,
            guidance_scale=self.config.guidance_scale,
        )
        worker = min(self.workers, key=lambda w: w.queue.qsize())
        try:
            worker.queue.put_nowait(job)
        except queue.Full as exc:
            raise QueueFull(f"{len(self.workers)} device queue(s) full ({self.config.queue_size} each)") from exc
        self.jobs[job.id] = job
        self._bound()
        return job

    def _bound(self) -> None:
        """Finished jobs hold their MP4 until fetched and forgotten; keep at most `keep_jobs` of
        them (the oldest go first) so a job nobody fetches cannot hold memory for ever."""
        done = [j for j in self.jobs.values() if j.state in ("completed", "failed", "cancelled")]
        for job in done[: max(0, len(done) - self.config.keep_jobs)]:
            self.jobs.pop(job.id, None)

    def health(self) -> dict[str, Any]:
        """`ready` when every device is; `failed` when any failed; else `loading` (or `idle`:
        preload off and nothing run yet)."""
        devices = [w.health() for w in self.workers]
        states = {d["state"] for d in devices}
        state = "failed" if "failed" in states else "loading" if "loading" in states else "ready"
        if states == {"idle"} or states == {"idle", "ready"}:
            state = "idle"
        return {"state": state, "devices": devices}

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def cancel(self, job_id: str) -> None:
        job = self.jobs.get(job_id)
        if job is not None:
            job.cancel.set()

    def forget(self, job_id: str) -> None:
        self.jobs.pop(job_id, None)

    def close(self) -> None:
        """Stop every device: jobs still here end between two steps (they live in memory only, so
        a restart loses them anyway), and each thread is waited for."""
        for job in list(self.jobs.values()):
            job.cancel.set()
        for w in self.workers:
            w.stop()
