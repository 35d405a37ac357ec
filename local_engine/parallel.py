"""One video on several GPUs: CFG-parallel and context-parallel for the Wan transformer.

A guided step is two forwards (cond, uncond) of the same latents: with CFG-parallel the GPUs
split into two groups that run one each at the same time and swap results (all-gather), so a
step costs one forward. Within a group, context parallelism splits the sequence (32,760 tokens
at 480p) across its GPUs through diffusers' `ContextParallelConfig`: Ulysses (all-to-all to
whole heads for attention) and/or ring attention. Any world size works: cfg (2 when the world
size is even and guidance is on, else 1) x ring x ulysses.

Every rank runs the same pipeline call with the same seed, so latents stay identical on every
rank without being sent; only the transformer's outputs move. Start one process per GPU
(`torchrun --nproc-per-node N`), `init_process_group`, then `apply(pipe, plan_for(N))`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class ParallelPlan:
    cfg: int = 1  # 1 or 2: groups that run the cond and uncond forwards side by side
    ring: int = 1
    ulysses: int = 1

    @property
    def world(self) -> int:
        return self.cfg * self.ring * self.ulysses


def plan_for(world: int, *, cfg: bool = True, ring: int = 1, heads: int = 40) -> ParallelPlan:
    """CFG first (it halves a guided step with no attention traffic), then Ulysses across what
    is left (`heads` must divide by it: Wan has 40), then ring for the rest."""
    halves = 2 if cfg and world % 2 == 0 else 1
    rest = world // halves
    if rest % ring:
        raise ValueError(f"ring degree {ring} does not divide the {rest} GPUs of a CFG group")
    ulysses = rest // ring
    if heads % ulysses:
        raise ValueError(f"Ulysses degree {ulysses} does not divide the {heads} attention heads; add ring degree")
    return ParallelPlan(cfg=halves, ring=ring, ulysses=ulysses)


def check_attention(transformer: Any, plan: ParallelPlan) -> None:
    """Context parallelism splits the sequence inside diffusers' attention dispatch; our 8-bit
    and fp8 self-attention kernels run beside it on whatever tokens a rank holds, which would be
    a silently wrong video. Refused before anything is split; the CFG split is unaffected."""
    from local_engine.accel import own_self_attention

    kernel = own_self_attention(transformer)
    if kernel is not None and plan.ring * plan.ulysses > 1:
        raise ValueError(
            f"context parallelism (ring {plan.ring} x ulysses {plan.ulysses}) cannot split the self-attention "
            f"of our {kernel} kernel: split by CFG only (parallel: cfg, two GPUs) or use diffusers' attention"
        )


def _device_type() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def apply(pipe: Any, plan: ParallelPlan) -> CfgParallel | None:
    """Spread `pipe.transformer` over the process group as `plan` says. Returns the CFG wrapper
    (set its `negative` before each call) when the plan splits CFG, else None."""
    from torch.distributed.device_mesh import init_device_mesh

    check_attention(pipe.transformer, plan)
    if plan.world != dist.get_world_size():
        raise ValueError(f"the plan covers {plan.world} processes; the group has {dist.get_world_size()}")
    device_type = _device_type()
    if device_type == "cpu" and not hasattr(torch.accelerator, "_i2v_cpu"):
        # diffusers sizes its mesh from torch.accelerator.device_count(), 0 on a CPU-only host: one
        # "device" per process is what gloo runs (the tests run the same code on CPU this way)
        torch.accelerator.device_count = lambda: 1  # type: ignore[assignment]
        torch.accelerator._i2v_cpu = True  # type: ignore[attr-defined]
    mesh = init_device_mesh(device_type, (plan.cfg, plan.ring, plan.ulysses), mesh_dim_names=("cfg", "ring", "ulysses"))
    if plan.ring * plan.ulysses > 1:
        from diffusers import ContextParallelConfig

        config = ContextParallelConfig(ring_degree=plan.ring, ulysses_degree=plan.ulysses, mesh=mesh["ring", "ulysses"])
        pipe.transformer.enable_parallelism(config=config)
    if plan.cfg == 2:
        wrapper = CfgParallel(pipe.transformer, mesh["cfg"].get_group(), mesh["cfg"].get_local_rank())
        pipe.transformer = wrapper
        return wrapper
    return None


class CfgParallel(nn.Module):
    """Stands in for the transformer inside the pipeline. At a step's "cond" forward, the first
    half of the ranks computes cond and the second half uncond (with `negative`), at once; the
    two results are all-gathered, cond is returned and uncond kept for the "uncond" forward
    that follows, which then costs nothing. Without `negative` (guidance off) it is the plain
    transformer."""

    def __init__(self, transformer: nn.Module, group: Any, half: int) -> None:
        super().__init__()
        self.inner = transformer
        self.group, self.half = group, half
        self.config = transformer.config  # type: ignore[attr-defined]
        self.negative: torch.Tensor | None = None
        self._context = "cond"
        self._uncond: torch.Tensor | None = None

    @property
    def dtype(self) -> torch.dtype:
        return next(self.inner.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.inner.parameters()).device

    @contextlib.contextmanager
    def cache_context(self, name: str) -> Iterator[None]:
        self._context = name
        with self.inner.cache_context(name):  # type: ignore[operator]
            yield

    def forward(self, *, encoder_hidden_states: torch.Tensor, return_dict: bool = False, **kwargs: Any) -> Any:
        if self.negative is None:
            return self.inner(encoder_hidden_states=encoder_hidden_states, return_dict=False, **kwargs)
        if self._context == "uncond":
            assert self._uncond is not None, "an uncond forward without the cond one before it"
            out, self._uncond = self._uncond, None
            return (out,)
        mine = encoder_hidden_states if self.half == 0 else self.negative.to(encoder_hidden_states)
        local = self.inner(encoder_hidden_states=mine, return_dict=False, **kwargs)[0].contiguous()
        both = [torch.empty_like(local) for _ in range(2)]
        dist.all_gather(both, local, group=self.group)
        self._uncond = both[1]
        return (both[0],)
