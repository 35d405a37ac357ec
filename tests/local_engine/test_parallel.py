"""Multi-GPU code run on CPU with two processes (gloo): CFG-parallel and Ulysses context
parallelism give the single-process latents, and the plan covers any number of GPUs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from local_engine.parallel import ParallelPlan, plan_for


def _denoise(pipe: torch.nn.Module, negative: torch.Tensor | None = None, wrapper: object = None) -> torch.Tensor:
    from PIL import Image

    prompt, neg = pipe.encode_prompt("leaves sway", "blurry", do_classifier_free_guidance=True, device="cpu")
    if wrapper is not None:
        wrapper.negative = neg  # type: ignore[attr-defined]
    with torch.inference_mode():
        out = pipe(
            image=Image.new("RGB", (64, 48), (90, 120, 150)),
            prompt_embeds=prompt,
            negative_prompt_embeds=neg,
            height=48,
            width=64,
            num_frames=5,
            num_inference_steps=3,
            guidance_scale=5.0,
            output_type="latent",
            generator=torch.Generator().manual_seed(7),
        )
    return out.frames


def _rank(rank: int, world: int, rendezvous: str, weights: str, plan: ParallelPlan, out: str) -> None:
    import torch.distributed as dist
    from diffusers import WanImageToVideoPipeline

    from local_engine.parallel import apply

    # a file rendezvous: no port to pick and lose to another test worker in between
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        pipe = WanImageToVideoPipeline.from_pretrained(weights, dtype=torch.float32)
        pipe.set_progress_bar_config(disable=True)
        seen = {"forwards": 0, "tokens": 0}
        pipe.transformer.register_forward_pre_hook(lambda *_: seen.__setitem__("forwards", seen["forwards"] + 1))
        pipe.transformer.blocks[0].ffn.register_forward_pre_hook(  # inside the block: after any split
            lambda _m, args, kw: seen.__setitem__("tokens", (args[0] if args else kw["hidden_states"]).shape[1]),
            with_kwargs=True,
        )
        wrapper = apply(pipe, plan)
        latents = _denoise(pipe, wrapper=wrapper)
        torch.save({"latents": latents, **seen}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("plan", [ParallelPlan(cfg=2), ParallelPlan(ulysses=2)], ids=["cfg-parallel", "ulysses"])
def test_two_processes_give_the_single_process_latents(tiny_wan: Path, tmp_path: Path, plan: ParallelPlan) -> None:
    from diffusers import WanImageToVideoPipeline

    single = WanImageToVideoPipeline.from_pretrained(tiny_wan, dtype=torch.float32)
    single.set_progress_bar_config(disable=True)
    reference = _denoise(single)
    out = str(tmp_path / "latents")
    mp.start_processes(
        _rank,
        args=(2, str(tmp_path / "rendezvous"), str(tiny_wan), plan, out),
        nprocs=2,
        join=True,
        start_method="spawn",
    )
    tokens = 2 * (48 // 16) * (64 // 16)  # 2 latent frames x 3 x 4 patches
    for rank in range(2):
        got = torch.load(f"{out}.{rank}")
        torch.testing.assert_close(got["latents"], reference, rtol=1e-4, atol=1e-5)  # the same arithmetic, split
        if plan.cfg == 2:  # each rank ran one forward per guided step (3), not two
            assert (got["forwards"], got["tokens"]) == (3, tokens)
        else:  # both forwards per step, each on half the sequence
            assert (got["forwards"], got["tokens"]) == (6, tokens // 2)


@pytest.mark.parametrize(
    ("world", "kwargs", "plan"),
    [
        (1, {}, ParallelPlan(1, 1, 1)),
        (2, {}, ParallelPlan(cfg=2)),
        (2, {"cfg": False}, ParallelPlan(ulysses=2)),
        (8, {}, ParallelPlan(cfg=2, ulysses=4)),
        (8, {"ring": 2}, ParallelPlan(cfg=2, ring=2, ulysses=2)),
        (3, {}, ParallelPlan(ulysses=3, cfg=1)),  # odd: no CFG split; 40 heads do not divide by 3
    ],
)
def test_plans_for_any_number_of_gpus(world: int, kwargs: dict, plan: ParallelPlan) -> None:
    if world == 3:
        with pytest.raises(ValueError, match="does not divide the 40 attention heads"):
            plan_for(world, **kwargs)
        assert plan_for(world, heads=12) == plan
        return
    assert plan_for(world, **kwargs) == plan and plan.world == world


def test_context_parallelism_refuses_our_own_self_attention_kernels(tiny_wan: Path) -> None:
    """Ulysses and ring split the sequence inside diffusers' dispatch; a block whose self-attention
    runs on our kernel would attend within each rank's tokens only. CFG alone is fine."""
    from diffusers import WanImageToVideoPipeline

    from local_engine import accel
    from local_engine.parallel import check_attention

    pipe = WanImageToVideoPipeline.from_pretrained(tiny_wan, dtype=torch.float32)
    check_attention(pipe.transformer, ParallelPlan(ulysses=2))  # diffusers' own attention: splits
    accel.sage_self_attention(pipe.transformer, "sage_triton")
    assert accel.own_self_attention(pipe.transformer) == "sage_triton"
    check_attention(pipe.transformer, ParallelPlan(cfg=2))
    for plan in (ParallelPlan(ulysses=2), ParallelPlan(ring=2), ParallelPlan(cfg=2, ulysses=2)):
        with pytest.raises(ValueError, match="cannot split the self-attention of our sage_triton kernel"):
            check_attention(pipe.transformer, plan)
    from local_engine import cudnn_fp8

    for block in pipe.transformer.blocks:  # the shipped best configuration's kernel (its own processor)
        cudnn_fp8.install(block.attn1)
    with pytest.raises(ValueError, match="our cudnn_fp8 kernel"):
        check_attention(pipe.transformer, ParallelPlan(ulysses=2))
