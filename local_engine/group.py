"""One job on every GPU of a torchrun group: a two-GPU (or N-GPU) local worker.

    torchrun --nproc-per-node 2 -m gateway worker --adapters local

Rank 0 is the worker the gateway knows: it claims jobs, serves health and metrics, and runs
its engine's one queue (`GroupWorker`). For each job it shares the inputs (image, prompt, shape,
seed) with the other ranks, which run nothing but `follow`: the same pipeline call on their
own GPU, in lockstep, with `local_engine/parallel.py` splitting each step between them (CFG
halves first, then Ulysses across the sequence). Every rank seeds its generator alike, so the
latents agree without being sent; only rank 0 encodes the MP4. A cancel is decided by rank 0
and broadcast after every step (one int), so all ranks leave the loop at the same step.

A rank that fails inside a job leaves the others waiting in a collective until the backend's
timeout (NCCL's: ten minutes by default) raises there: the job fails on rank 0, or torchrun
ends the group, and the gateway's runner falls back as after any engine error or worker crash.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from local_engine.config import EngineConfig
from local_engine.engine import Cancelled, DeviceWorker, Job, load_pipeline, uint8_frames
from local_engine.parallel import ParallelPlan, apply, plan_for
from media import decode_rgb

log = logging.getLogger("i2v.local")
#: The prompt's padded length, as `WanImageToVideoPipeline.__call__` encodes it (its
#: `encode_prompt` defaults to 226: a different padding, a different video)
TEXT_TOKENS = 512


def world() -> int:
    """Processes in the group torchrun started (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


@dataclass(frozen=True)
class Inputs:
    """What every rank needs to run one job identically (the seed included: drawn once, by rank 0)."""

    image: bytes
    prompt: str
    negative_prompt: str
    width: int
    height: int
    num_frames: int
    steps: int
    guidance_scale: float
    seed: int


def plan(config: EngineConfig, size: int) -> ParallelPlan:
    """`config.parallel` for a group of `size`: auto (CFG halves when guided, then Ulysses), or
    all of it as one kind of context parallelism."""
    guided = config.guidance_scale > 1
    if config.parallel == "ulysses" or (config.parallel == "auto" and not guided):
        return plan_for(size, cfg=False)
    if config.parallel == "ring":
        return plan_for(size, cfg=False, ring=size)
    return plan_for(size, cfg=guided)


class Group:
    """This process's place in the group: its device, the loaded pipeline, the split applied."""

    def __init__(self, config: EngineConfig, init_method: str = "env://") -> None:
        cuda = torch.cuda.is_available() and not any(d == "cpu" for d in config.devices)
        if not dist.is_initialized():
            backend = "nccl" if cuda else "gloo"
            dist.init_process_group(backend, init_method=init_method, rank=rank(), world_size=world())
        self.rank, self.size = dist.get_rank(), dist.get_world_size()
        self.device = f"cuda:{int(os.environ.get('LOCAL_RANK', self.rank))}" if cuda else "cpu"
        if cuda:
            torch.cuda.set_device(self.device)
        self.plan = plan(config, self.size)
        self.pipe = load_pipeline(config, self.device)
        self.cfg = apply(self.pipe, self.plan)
        log.info("group rank ready", extra={"rank": self.rank, "of": self.size, "plan": str(self.plan)})

    def share(self, inputs: Inputs | None) -> Inputs | None:
        """Rank 0's inputs (None: the group stops) on every rank."""
        box: list[Any] = [inputs]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def generate(
        self, inputs: Inputs, stop: Callable[[], bool] | None = None, on_step: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """The pipeline call every rank makes for one job: uint8 frames (T, H, W, 3). `stop()`
        is asked on rank 0 after each step and its answer broadcast (every rank then raises
        `Cancelled` at that step); `on_step(i)` reports."""
        image = decode_rgb(inputs.image, (inputs.width, inputs.height))
        guided = inputs.guidance_scale > 1
        cond, uncond = self.pipe.encode_prompt(
            inputs.prompt,
            inputs.negative_prompt,
            do_classifier_free_guidance=guided,
            max_sequence_length=TEXT_TOKENS,
            device=self.device,
        )
        if self.cfg is not None:  # the second CFG half runs uncond beside cond
            self.cfg.negative = uncond if guided else None
        flag = torch.zeros(1, dtype=torch.int32, device=self.device)

        def step_end(pipe: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            if on_step is not None:
                on_step(i)
            flag.fill_(int(stop is not None and stop()))
            dist.broadcast(flag, src=0)
            if flag.item():
                raise Cancelled
            return tensors

        with torch.inference_mode():
            out = self.pipe(
                image=image,
                prompt_embeds=cond,
                negative_prompt_embeds=uncond,
                height=inputs.height,
                width=inputs.width,
                num_frames=inputs.num_frames,
                num_inference_steps=inputs.steps,
                guidance_scale=inputs.guidance_scale,
                generator=torch.Generator(device="cpu").manual_seed(inputs.seed),
                output_type="np",
                callback_on_step_end=step_end,
            )
        return uint8_frames(out.frames[0])

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def follow(config: EngineConfig, init_method: str = "env://") -> None:
    """Ranks 1..N-1: load, then run every job rank 0 shares, until it shares None."""
    group = Group(config, init_method)
    try:
        while (inputs := group.share(None)) is not None:
            try:
                group.generate(inputs)
            except Cancelled:
                continue
    finally:
        group.close()


class GroupWorker(DeviceWorker):
    """Rank 0's one queue: each job runs on every rank of the group, one at a time."""

    def __init__(self, config: EngineConfig, init_method: str = "env://") -> None:
        self.init_method = init_method
        self.group: Group | None = None
        super().__init__(config, "group")

    def _make_pipe(self) -> Any:
        self.group = Group(self.config, self.init_method)
        self.device = self.group.device
        return self.group.pipe

    def health(self) -> dict[str, Any]:
        """The device's health, with the group it leads: how many ranks, and how a job is split."""
        group = None
        if self.group is not None:
            plan = self.group.plan
            group = {"ranks": self.group.size, "cfg": plan.cfg, "ring": plan.ring, "ulysses": plan.ulysses}
        return {**super().health(), "group": group}

    def _generate(self, job: Job) -> np.ndarray:
        assert self.group is not None
        inputs = Inputs(
            image=job.image,
            prompt=job.prompt,
            negative_prompt=job.negative_prompt or "",
            width=job.width,
            height=job.height,
            num_frames=job.num_frames,
            steps=job.steps,
            guidance_scale=job.guidance_scale,
            seed=job.seed if job.seed is not None else secrets.randbits(31),
        )
        self.group.share(inputs)  # the other ranks start the same call

        def on_step(i: int) -> None:
            job.step = i + 1

        return self.group.generate(inputs, stop=job.cancel.is_set, on_step=on_step)

    def stop(self, timeout_s: float = 300) -> None:
        """The queue ends, then the other ranks are told to stop and the group is left."""
        super().stop(timeout_s)
        if self.group is not None:
            self.group.share(None)
            self.group.close()
