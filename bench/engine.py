"""Local engine speed on one GPU: the full-size Wan 2.1 I2V-14B architecture (random weights).

    python bench/engine.py --part forward     # per-forward and per-guided-step table + accuracy
    python bench/engine.py --part accuracy    # final latents after N steps, each option vs eager
    python bench/engine.py --part e2e         # 40 guided steps end to end (+ VAE), best config
    python bench/engine.py --part onnx        # ONNX Runtime (CUDA provider) beside torch, same run
    python bench/engine.py --part profile     # one forward of the fast path by kernel family
    torchrun --standalone --nproc-per-node 2 bench/engine.py --part parallel --plan cfg ...
                                              # one video over a torchrun group's GPUs (issue 17)

Every row is measured in the same run as the baseline (plain diffusers eager bf16, PyTorch SDPA).
A guided step is two transformer forwards (cond and uncond), as diffusers and the official code
run it. Accuracy is ||x - ref|| / ||ref|| against eager bf16 on the same inputs. Prints one table
per part (markdown), ready for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from local_engine import accel
from local_engine.group import rank, world
from local_engine.tiny import TEXT_TOKENS, WAN21_I2V_14B

DEV = "cuda"
BF16 = torch.bfloat16
ARCH: dict[str, Any] = WAN21_I2V_14B
CUDNN = "_native_cudnn"
COMPILE_KW: dict[str, Any] = {}
ROWS: list[dict[str, Any]] = []
SAGE_SWEEP = True  # --part attention: every block config of the Triton kernel (else its best only)


def say(*args: Any) -> None:
    if rank() == 0:  # under torchrun, rank 0 speaks for the group
        print(*args, flush=True)


def sync() -> None:
    if DEV == "cuda":
        torch.cuda.synchronize()


def sync_time(fn: Any, repeat: int) -> tuple[float, Any]:
    """Median seconds of `repeat` calls (after the caller's warm-up) and the last output."""
    times, out = [], None
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2], out


def make_transformer() -> Any:
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(BF16)
    with torch.device(DEV):
        model = WanTransformer3DModel(**ARCH)
    torch.set_default_dtype(old)
    model.eval().requires_grad_(False)
    # Default init lets the residual stream grow through 40 blocks; scale weights like a trained
    # model's (std 0.02) so values stay in bf16's comfortable range.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0, 0.02)
    return model


def inputs(frames: int, height: int, width: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator(device=DEV).manual_seed(seed)
    lat_f, lat_h, lat_w = (frames - 1) // 4 + 1, height // 8, width // 8
    return {
        "hidden_states": torch.randn(1, 36, lat_f, lat_h, lat_w, generator=g, device=DEV, dtype=BF16),
        "timestep": torch.tensor([750.0], device=DEV),
        "encoder_hidden_states": torch.randn(1, TEXT_TOKENS, ARCH["text_dim"], generator=g, device=DEV, dtype=BF16),
        "encoder_hidden_states_image": torch.randn(1, 257, ARCH["image_dim"], generator=g, device=DEV, dtype=BF16),
    }


def forward(model: Any, x: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.inference_mode():
        return model(**x, return_dict=False)[0]


def part_forward(args: argparse.Namespace) -> None:
    model = make_transformer()
    params = sum(p.numel() for p in model.parameters())
    say(f"transformer: {params / 1e9:.2f} B params, {torch.cuda.memory_allocated() / 2**30:.1f} GiB")
    F, H, W = args.frames, args.height, args.width
    cond = inputs(F, H, W, seed=0)
    uncond = dict(cond, encoder_hidden_states=inputs(F, H, W, seed=1)["encoder_hidden_states"])
    reference: torch.Tensor | None = None

    def measure(name: str) -> None:
        nonlocal reference
        out = measure_forward(ROWS, name, model, cond, uncond, args.repeat, reference)
        reference = out if reference is None else reference

    measure("diffusers eager bf16, SDPA (baseline)")
    if not args.fp8_only:
        model.set_attention_backend(CUDNN)
        measure("eager + cuDNN attention")
        model.set_attention_backend("native")
        model.compile_repeated_blocks(fullgraph=True, **COMPILE_KW)
        measure("regional compile, SDPA")
        model.set_attention_backend(CUDNN)
        measure("regional compile + cuDNN attention")
    if args.fuse:
        accel.fuse_qkv(model)
    n = accel.fp8_linears(model, scaling=args.fp8_scaling)
    if args.fp8_scaling == "static":
        accel.calibrate(model, lambda: (forward(model, cond), forward(model, uncond)))
    gc.collect()
    torch.cuda.empty_cache()
    say(f"fp8: {n} linear layers swapped")
    linears = f"regional compile + {'fused qkv + ' if args.fuse else ''}fp8 linears ({args.fp8_scaling} scales)"
    if args.one_row:  # baseline and the full config only: one compile, no CFG batch (the error check)
        install_attention(model, args.sage[0])
        accel.calibrate(model, lambda: (forward(model, cond), forward(model, uncond)))
        model.compile_repeated_blocks(fullgraph=True, **COMPILE_KW)
        measure(f"{linears} + 8-bit self-attention ({args.sage[0]})")
        table("Wan 2.1 I2V-14B transformer, one row against eager", ROWS)
        return
    model.compile_repeated_blocks(fullgraph=True, **COMPILE_KW)
    measure(linears)
    if args.sage:
        for name in args.sage:
            install_attention(model, name)
            if args.fp8_scaling == "static":  # cudnn_fp8's V scales, calibrated as the linears' were
                accel.calibrate(model, lambda: (forward(model, cond), forward(model, uncond)))
            model.compile_repeated_blocks(fullgraph=True, **COMPILE_KW)
            measure(ROWS[-1]["config"].split(" + 8-bit")[0] + f" + 8-bit self-attention ({name})")
    # Classifier-free guidance as one batch of two (cond, uncond) instead of two calls.
    both = {
        "hidden_states": torch.cat([cond["hidden_states"]] * 2),
        "timestep": cond["timestep"].expand(2),
        "encoder_hidden_states": torch.cat([cond["encoder_hidden_states"], uncond["encoder_hidden_states"]]),
        "encoder_hidden_states_image": torch.cat([cond["encoder_hidden_states_image"]] * 2),
    }
    forward(model, both)
    batched, out = sync_time(lambda: forward(model, both), args.repeat)
    row = dict(ROWS[-1], config=ROWS[-1]["config"] + ", CFG as one batch of 2")
    row.update(
        {"s/forward": "-", "s/guided step": round(batched, 3), "vs eager": round(ROWS[0]["s/guided step"] / batched, 2)}
    )
    row["rel err (1 fwd)"] = f"{accel.relative_error(out[:1], reference):.1e}" if reference is not None else "-"
    ROWS.append(row)
    say(json.dumps(row))
    tokens = ((F - 1) // 4 + 1) * (H // 16) * (W // 16)
    table(f"Wan 2.1 I2V-14B transformer, {H}x{W}, {F} frames ({tokens:,} tokens), bf16", ROWS)


#: Bench-only variants of `cudnn_fp8`: `cudnn_fp8.install`'s switches for the run of one row.
CUDNN_VARIANTS = {
    "cudnn_fp8_dynamic": {"static": False},  # Q, K, V scales and K, V means measured per call
    "cudnn_fp8_measured_means": {"fixed_means": False},  # fixed scales, K and V means measured per call
    "cudnn_fp8_unfused": {"fused": False},  # all fixed; Q/K norm + RoPE + cast left to inductor
}


def install_attention(model: Any, name: str) -> None:
    """`accel.sage_self_attention`, or one of `CUDNN_VARIANTS` (installed again with its switches)."""
    from local_engine import cudnn_fp8

    switches = CUDNN_VARIANTS.get(name)
    accel.sage_self_attention(model, "cudnn_fp8" if switches else name)
    if switches:
        for block in model.blocks:
            cudnn_fp8.install(block.attn1, **switches)


def part_attention(args: argparse.Namespace) -> None:
    """Self-attention alone at Wan's 480p shape (1 x 40 heads x 32,760 tokens x 128), per SDPA backend."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = (torch.randn(1, 40, 32760, 128, device=DEV, dtype=BF16) for _ in range(3))
    # Logits as sharp as a trained model's and keys with a channel offset (what smoothing is for).
    q, k = 2.5 * q, k + 2 * torch.randn(1, 40, 1, 128, device=DEV, dtype=BF16)
    flops = 4 * 32760 * 32760 * 128 * 40
    rows = []
    exact = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float())
    say(json.dumps({"fp32 reference": "done"}))
    ref = exact
    for name, backend in [
        ("default choice", None),
        ("FLASH_ATTENTION", SDPBackend.FLASH_ATTENTION),
        ("EFFICIENT_ATTENTION", SDPBackend.EFFICIENT_ATTENTION),
        ("CUDNN_ATTENTION", SDPBackend.CUDNN_ATTENTION),
    ]:
        try:
            ctx = sdpa_kernel([backend]) if backend is not None else __import__("contextlib").nullcontext()
            with ctx:
                fn = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v)  # noqa: E731
                fn()
                dt, out = sync_time(fn, 5)
            rows.append(
                {
                    "backend": name,
                    "ms": round(dt * 1000, 1),
                    "TFLOP/s": round(flops / dt / 1e12),
                    "rel err vs fp32": f"{accel.relative_error(out, ref):.1e}",
                }
            )
        except RuntimeError as exc:
            rows.append({"backend": name, "ms": "-", "TFLOP/s": "-", "rel err vs fp32": str(exc)[:60]})
        say(json.dumps(rows[-1]))
    rows.extend(sage_rows(q, k, v, ref, flops))
    rows.extend(cudnn_fp8_rows(q, k, v, ref, flops))
    table("self-attention at 480p: 1 x 40 heads x 32,760 tokens x 128, bf16 in and out", rows)


def sage_rows(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ref: torch.Tensor, flops: float) -> list[dict]:
    """Our 8-bit kernel (local_engine/sage.py): each block config on pre-quantized inputs, then
    the whole op (quantization + kernel) compiled, as the transformer runs it."""
    from local_engine import sage

    rows: list[dict[str, Any]] = []
    qb, kb, vb = (x.transpose(1, 2).contiguous() for x in (q, k, v))  # (B, S, H, D), diffusers' layout
    shape = tuple(qb.shape)
    variants = [("int8 Q·K, fp8 P·V", torch.int8, True), ("fp8 Q·K, fp8 P·V", sage.FP8, True)]
    variants.append(("int8 Q·K, bf16 P·V", torch.int8, False))

    def timed(label: str, fn: Any) -> None:
        fn()  # warm-up (compiles)
        dt, out = sync_time(fn, 5)
        err = accel.relative_error(out.transpose(1, 2), ref)
        rows.append(
            {"backend": f"sage {label}", "ms": round(dt * 1000, 1), "TFLOP/s": round(flops / dt / 1e12),
             "rel err vs fp32": f"{err:.1e}"}
        )  # fmt: skip
        say(json.dumps(rows[-1]))

    for name, dtype, pv_fp8 in variants:
        best = sage.BEST_CONFIG[dtype == torch.int8, pv_fp8]
        for config in sage.CONFIGS if SAGE_SWEEP else [best]:
            qz = sage.quantize(qb, kb, vb, dtype, pv_fp8, k_block=config[1])
            timed(f"{name}, kernel only, {config}", lambda: sage.kernel(qz, shape, BF16, config))  # noqa: B023
        op = torch.compile(sage.sage_attention, fullgraph=True)
        timed(
            f"{name}: quantize + kernel {best}, compiled",
            lambda: op(qb, kb, vb, qk_int8=dtype == torch.int8, pv_fp8=pv_fp8),  # noqa: B023
        )
    return rows


def cudnn_fp8_rows(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ref: torch.Tensor, flops: float) -> list[dict]:
    """cuDNN's fp8 kernel (local_engine/cudnn_fp8.py) in each memory layout, on pre-quantized
    inputs, then with the quantization compiled around it, as the transformer runs it (the
    fastest of cuDNN's engines, timed on the first call). Skipped without the frontend."""
    from local_engine import cudnn_fp8

    if not cudnn_fp8.available():
        say(json.dumps({"cudnn_fp8": "nvidia-cudnn-frontend not installed: skipped"}))
        return []
    rows: list[dict[str, Any]] = []
    qb, kb, vb = (x.transpose(1, 2).contiguous() for x in (q, k, v))
    for layout in cudnn_fp8.LAYOUTS:
        qz = cudnn_fp8.quantize(qb, kb, vb, layout=layout)
        op = torch.compile(lambda a, b, c, layout=layout: cudnn_fp8.fp8_attention(a, b, c, layout), fullgraph=True)
        for label, fn in [
            ("kernel only", lambda qz=qz: cudnn_fp8.kernel(qz, BF16)),
            ("quantize + kernel, compiled", lambda op=op: op(qb, kb, vb)),
        ]:
            try:
                fn()
                dt, out = sync_time(fn, 5)
            except Exception as exc:  # a layout cuDNN does not support: say so, go on
                say(json.dumps({"cudnn_fp8": layout, "error": str(exc)[:300]}))
                break
            row = {"backend": f"cuDNN fp8, {layout} layout, {label}", "ms": round(dt * 1000, 1)}
            row["TFLOP/s"] = round(flops / dt / 1e12)
            row["rel err vs fp32"] = f"{accel.relative_error(out.transpose(1, 2), ref):.1e}"
            rows.append(row)
            say(json.dumps(rows[-1]))
    for key, plan in cudnn_fp8._PLANS.items():
        engines = {"ms each": [round(t, 2) for t in plan.timings_ms], "best": plan.best}
        say(json.dumps({"cuDNN engines, strides of q, k, v": str(key[1:4]), **engines}))
    return rows


def part_gemm(args: argparse.Namespace) -> None:
    """The transformer's GEMM shapes at 480p (32,760 tokens): bf16 vs fp8 (row / tensor scales),
    the matmul alone and the whole Fp8Linear (quantization included)."""
    rows = []
    for k, n in [(5120, 5120), (5120, 13824), (13824, 5120)]:
        x = torch.randn(32760, k, device=DEV, dtype=BF16)
        lin = torch.nn.Linear(k, n, device=DEV, dtype=BF16)
        flops = 2 * 32760 * k * n
        with torch.inference_mode():
            bf16_s, ref = sync_time(lambda: lin(x), 10)  # noqa: B023
            row = {
                "K x N": f"{k} x {n}",
                "bf16 ms": round(bf16_s * 1e3, 2),
                "bf16 TFLOP/s": round(flops / bf16_s / 1e12),
            }
            for scaling in ("row", "tensor"):
                f8 = accel.Fp8Linear(lin, scaling)
                xq, xs = (accel._quantize_rows if scaling == "row" else accel._quantize_tensor)(x)

                def mm(xq=xq, xs=xs, f8=f8):  # type: ignore[no-untyped-def]
                    return torch._scaled_mm(xq, f8.weight_fp8.t(), scale_a=xs, scale_b=f8.weight_scale, out_dtype=BF16)

                mm_s, _ = sync_time(mm, 10)
                comp = torch.compile(f8)
                comp(x)
                full_s, out = sync_time(lambda: comp(x), 10)  # noqa: B023
                row[f"fp8 {scaling} mm ms"] = round(mm_s * 1e3, 2)
                row[f"fp8 {scaling} TFLOP/s"] = round(flops / mm_s / 1e12)
                row[f"{scaling} linear+quant ms"] = round(full_s * 1e3, 2)
                row[f"{scaling} rel err"] = f"{accel.relative_error(out, ref):.1e}"
        rows.append(row)
        say(json.dumps(rows[-1]))
    table("GEMMs at 32,760 tokens", rows)


def part_accuracy(args: argparse.Namespace) -> None:
    """Final latents after `--steps` guided steps of a flow-matching UniPC schedule, at a small
    video size so every option can run the whole loop, against eager bf16."""
    from diffusers import UniPCMultistepScheduler
    from diffusers.hooks import FirstBlockCacheConfig

    model = make_transformer()
    x = inputs(args.acc_frames, args.acc_height, args.acc_width, seed=0)
    neg = inputs(args.acc_frames, args.acc_height, args.acc_width, seed=1)["encoder_hidden_states"]
    cond_lat = x["hidden_states"][:, 16:]

    def run(calibration: bool = False) -> torch.Tensor:
        """The guided loop; `calibration`: only the first and the last step (fp8 static scales)."""
        sched = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
        sched.set_timesteps(args.steps, device=DEV)
        lat = x["hidden_states"][:, :16].float().clone()
        with torch.inference_mode():
            for i, t in enumerate(sched.timesteps):
                if calibration and 0 < i < len(sched.timesteps) - 1:
                    continue
                inp = torch.cat([lat, cond_lat.float()], 1).to(BF16)
                ts = t.expand(1)
                with model.cache_context("cond"):
                    c = model(inp, ts, x["encoder_hidden_states"], x["encoder_hidden_states_image"], return_dict=False)[
                        0
                    ]
                with model.cache_context("uncond"):
                    u = model(inp, ts, neg, x["encoder_hidden_states_image"], return_dict=False)[0]
                lat = sched.step(u + 5.0 * (c - u), t, lat, return_dict=False)[0]
        return lat

    rows: list[dict[str, Any]] = []

    def record(name: str, ref: torch.Tensor | None) -> torch.Tensor:
        sync()
        t0 = time.perf_counter()
        out = run()
        sync()
        rows.append(
            {
                "config": name,
                "steps": args.steps,
                "loop s": round(time.perf_counter() - t0, 2),
                "rel err final latents": "-" if ref is None else f"{accel.relative_error(out, ref):.1e}",
            }
        )
        say(json.dumps(rows[-1]))
        return out

    ref = record("eager bf16, SDPA (reference)", None)
    model.set_attention_backend(CUDNN)
    record("cuDNN attention", ref)
    for threshold in args.cache_thresholds:
        model.enable_cache(FirstBlockCacheConfig(threshold=threshold))
        record(f"cuDNN + first-block cache {threshold}", ref)
        model.disable_cache()
    model.compile_repeated_blocks(fullgraph=True, **COMPILE_KW)
    run()  # compile outside the timing
    record("regional compile + cuDNN", ref)
    for name in args.sage or []:  # the attention's own error, with bf16 linears
        accel.sage_self_attention(model, name)
        model.compile_repeated_blocks(fullgraph=True, **COMPILE_KW)
        run()
        record(f"regional compile + 8-bit self-attention ({name})", ref)
    model.set_attention_backend(CUDNN)
    if args.fuse:
        accel.fuse_qkv(model)
    accel.fp8_linears(model, scaling=args.fp8_scaling)
    if args.fp8_scaling == "static":
        accel.calibrate(model, lambda: run(calibration=True))
    model.compile_repeated_blocks(fullgraph=True, **COMPILE_KW)
    run()
    label = f"compile + {'fused qkv + ' if args.fuse else ''}fp8 linears ({args.fp8_scaling} scales)"
    record(label, ref)
    for name in args.sage or []:
        accel.sage_self_attention(model, name)
        model.compile_repeated_blocks(fullgraph=True, **COMPILE_KW)
        run()
        record(f"{label} + 8-bit self-attention ({name})", ref)
    size = f"{args.acc_width}x{args.acc_height}, {args.acc_frames} frames"
    table(f"final latents after {args.steps} guided steps, {size}", rows)


def make_pipeline(args: argparse.Namespace, model: Any) -> Any:
    """WanImageToVideoPipeline around `model` with the full-size VAE and a 2-layer CLIP vision
    tower of the real width (1280, 257 tokens): the pipeline needs its image path; the full ViT-H
    costs ~0.7 s once per video (engine-anchors.md). No text encoder: embeddings are passed."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanImageToVideoPipeline
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    vae_cfg = {} if ARCH is WAN21_I2V_14B else {"base_dim": 8, "dim_mult": [1, 1, 1, 1], "num_res_blocks": 1}
    with torch.device(DEV):
        vae = AutoencoderKLWan(**vae_cfg).to(BF16 if args.vae_bf16 else torch.float32)
        clip = CLIPVisionModel(
            CLIPVisionConfig(
                hidden_size=ARCH["image_dim"],
                intermediate_size=4 * ARCH["image_dim"],
                num_hidden_layers=2,
                num_attention_heads=16 if ARCH["image_dim"] % 16 == 0 else 1,
                image_size=224,
                patch_size=14,
            )
        ).to(BF16 if DEV == "cuda" else torch.float32)
    sched = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    pipe = WanImageToVideoPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=vae,
        scheduler=sched,
        transformer=model,
        image_encoder=clip,
        image_processor=CLIPImageProcessor(),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_pipeline(
    pipe: Any,
    args: argparse.Namespace,
    rows: list[dict[str, Any]],
    name: str,
    steps: int,
    guidance: float = 5.0,
    outside_torch: bool = False,
) -> None:
    """One video through the pipeline; a row with the mean guided step (steps 2..N) and the rest."""
    from PIL import Image

    F, H, W = args.frames, args.height, args.width
    x = inputs(F, H, W, seed=0)
    neg = inputs(F, H, W, seed=1)["encoder_hidden_states"]
    torch.cuda.reset_peak_memory_stats()
    sync()
    t0 = time.perf_counter()
    step_times: list[float] = []
    last = [0.0]

    def on_step(p: Any, i: int, t: Any, kw: dict[str, Any]) -> dict[str, Any]:
        sync()
        now = time.perf_counter()
        if i > 0:
            step_times.append(now - last[0])
        last[0] = now
        return kw

    out = pipe(
        image=Image.new("RGB", (W, H), (120, 140, 160)),
        prompt_embeds=x["encoder_hidden_states"],
        negative_prompt_embeds=neg,
        height=H,
        width=W,
        num_frames=F,
        num_inference_steps=steps,
        guidance_scale=guidance,
        output_type="pt",
        callback_on_step_end=on_step,
        generator=torch.Generator(device=DEV).manual_seed(0),
    )
    sync()
    total = time.perf_counter() - t0
    per_step = sum(step_times) / max(1, len(step_times))  # steps 2..N: one guided step each
    rows.append(
        {
            "config": name,
            "steps": steps,
            "end to end s": round(total, 1),
            "s/guided step": round(per_step, 3) if guidance > 1 else f"{per_step:.3f} (unguided)",
            "all but denoising s": round(total - per_step * steps, 1),
            "output": "x".join(map(str, out.frames.shape)),
            "peak GiB": peak_gib(outside_torch),
        }
    )
    say(json.dumps(rows[-1]))


def peak_gib(outside_torch: bool = False) -> float:
    """torch's peak; with `outside_torch`, the device's memory in use when more (ONNX Runtime
    allocates its own)."""
    used = 0.0
    if outside_torch and DEV == "cuda":
        free, total = torch.cuda.mem_get_info()
        used = (total - free) / 2**30
    return round(max(torch.cuda.max_memory_allocated() / 2**30, used), 1)


def measure_forward(
    rows: list[dict[str, Any]],
    name: str,
    model: Any,
    cond: dict[str, torch.Tensor],
    uncond: dict[str, torch.Tensor],
    repeat: int,
    ref: torch.Tensor | None,
    outside_torch: bool = False,
) -> torch.Tensor:
    """One row: the first call (warm-up: compile, or export and session creation), then the
    median forward and guided step (cond + uncond), speed against the first row and the error
    against `ref`. Returns this row's output."""
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    forward(model, cond)
    sync()
    first = time.perf_counter() - t0
    per_forward, out = sync_time(lambda: forward(model, cond), repeat)
    per_step, _ = sync_time(lambda: (forward(model, cond), forward(model, uncond)), max(1, repeat - 1))
    rows.append(
        {
            "config": name,
            "s/forward": round(per_forward, 3),
            "s/guided step": round(per_step, 3),
            "vs eager": round(rows[0]["s/guided step"] / per_step, 2) if rows else 1.0,
            "rel err (1 fwd)": f"{accel.relative_error(out, ref):.1e}" if ref is not None else "-",
            "first call s": round(first, 1),
            "peak GiB": peak_gib(outside_torch),
        }
    )
    say(json.dumps(rows[-1]))
    return out.float().clone()


def part_profile(args: argparse.Namespace) -> None:
    """Where one forward of the configured fast path spends its GPU time: torch.profiler over one
    forward after warm-up, kernels grouped by family (attention, fp8 GEMM, other GEMM, fused
    elementwise/reduction, copies), then the 15 heaviest kernels."""
    from torch.profiler import ProfilerActivity, profile

    model = make_transformer()
    cond = inputs(args.frames, args.height, args.width, seed=0)
    if args.fuse:
        accel.fuse_qkv(model)
    for name in args.sage or []:
        install_attention(model, name)
    accel.fp8_linears(model, scaling=args.fp8_scaling)
    if args.fp8_scaling == "static":
        accel.calibrate(model, lambda: forward(model, cond))
    model.compile_repeated_blocks(fullgraph=True, **COMPILE_KW)
    forward(model, cond)
    per_forward, _ = sync_time(lambda: forward(model, cond), 2)
    on_gpu = DEV == "cuda"
    with profile(activities=[ProfilerActivity.CUDA if on_gpu else ProfilerActivity.CPU]) as prof:
        forward(model, cond)
        sync()
    kernels = [e for e in prof.key_averages() if e.device_type.name == ("CUDA" if on_gpu else "CPU")]

    def took(e: Any) -> float:  # µs on the device (GPU kernels; CPU ops' own time for --tiny)
        return float(e.device_time_total if on_gpu else e.self_cpu_time_total)

    total = sum(took(e) for e in kernels)

    def family(name: str) -> str:
        n = name.lower()
        if n.startswith("triton_"):  # inductor names kernels after the ops they fuse ("cudnn_fp8_sdpa", ...)
            return "compiled elementwise / reductions"
        if "sdpa" in n or "fmha" in n or "flash" in n or "attention" in n or "cudnn" in n or "_fwd" in n:
            return "attention (self: cuDNN/Triton; cross: SDPA)"
        if "e4m3" in n or "fp8" in n or "f8" in n or "_qq" in n:  # cuBLASLt's nvjet_sm90_qq...: fp8 inputs
            return "fp8 GEMM (linears)"
        if "gemm" in n or "cutlass" in n or "sm90_xmma" in n or "nvjet" in n:
            return "other GEMM"
        if "triton" in n:
            return "compiled elementwise / reductions"
        if "copy" in n or "memcpy" in n or "memset" in n:
            return "copies"
        return "other"

    groups: dict[str, float] = {}
    for e in kernels:
        groups[family(e.key)] = groups.get(family(e.key), 0.0) + took(e)
    rows = [
        {"kernels": g, "ms per forward": round(t / 1000, 1), "share": f"{t / total:.1%}"}
        for g, t in sorted(groups.items(), key=lambda kv: -kv[1])
    ]
    rows.append({"kernels": "all (GPU busy)", "ms per forward": round(total / 1000, 1), "share": "100%"})
    rows.append({"kernels": "wall clock per forward", "ms per forward": round(per_forward * 1000, 1), "share": "-"})
    table(f"One forward, {args.height}x{args.width}, by kernel family ({', '.join(args.sage or ['SDPA'])})", rows)
    top = sorted(kernels, key=lambda e: -took(e))[:15]
    table(
        "Heaviest kernels",
        [{"kernel": e.key[:90], "calls": e.count, "ms": round(e.device_time_total / 1000, 1)} for e in top],
    )


def best_config(model: Any, args: argparse.Namespace, calibration: Any) -> None:
    """The configuration the flags name (cuDNN attention, fused qkv, 8-bit or fp8 self-attention,
    fp8 linears calibrated by `calibration()`), compiled (on CPU too: --tiny smoke-tests it)."""
    model.set_attention_backend(CUDNN)
    if args.fuse:
        accel.fuse_qkv(model)
    if args.sage:
        install_attention(model, args.sage[0])
    if args.fp8:
        accel.fp8_linears(model, scaling=args.fp8_scaling)
        if args.fp8_scaling == "static":
            accel.calibrate(model, calibration)
    model.compile_repeated_blocks(fullgraph=True, **COMPILE_KW)


def part_e2e(args: argparse.Namespace) -> None:
    """Guided steps through WanImageToVideoPipeline.__call__ (CLIP, VAE encode of the first
    frame, denoising, VAE decode) with the full-size transformer and VAE. The text encoder is
    skipped by passing embeddings (UMT5 costs ~0.2 s once per video per the anchors)."""
    from diffusers.hooks import FirstBlockCacheConfig

    model = make_transformer()
    pipe = make_pipeline(args, model)
    vae = pipe.vae
    F, H, W = args.frames, args.height, args.width
    x = inputs(F, H, W, seed=0)
    neg = inputs(F, H, W, seed=1)["encoder_hidden_states"]
    rows: list[dict[str, Any]] = []

    def run(name: str, steps: int, guidance: float = 5.0) -> None:
        run_pipeline(pipe, args, rows, name, steps, guidance)

    latents = torch.randn(1, 16, (F - 1) // 4 + 1, H // 8, W // 8, device=DEV, dtype=vae.dtype)
    with torch.inference_mode():
        vae.decode(latents[:, :, :3])  # warm-up
        dt, _ = sync_time(lambda: vae.decode(latents).sample, 1)
    say(json.dumps({f"VAE decode -> {F}x{H}x{W} s": round(dt, 2), "dtype": str(vae.dtype)}))
    # the eager baseline in the same run: one guided step (two forwards) of plain diffusers
    uncond = dict(x, encoder_hidden_states=neg)
    forward(model, x)
    eager, _ = sync_time(lambda: (forward(model, x), forward(model, uncond)), 2)
    rows.append(
        {
            "config": "diffusers eager bf16, SDPA (baseline; 2 forwards, not end to end)",
            "s/guided step": round(eager, 3),
        }
    )
    say(json.dumps(rows[-1]))
    best_config(model, args, lambda: run("calibration (first and last step)", 2))
    run("warm-up (compile)", 2)
    label = "compile" + (" + fused qkv" if args.fuse else "") + (f" + fp8 ({args.fp8_scaling})" if args.fp8 else "")
    label += f" + 8-bit self-attention ({args.sage[0]})" if args.sage else ""
    if args.steps:
        run(label, args.steps)
    if args.distilled:  # what a step- and CFG-distilled checkpoint (LoRA) runs: 4 steps, no CFG pass
        run(f"{label}, 4 steps without CFG (distilled checkpoint's schedule)", 4, guidance=1.0)
    if args.cache is not None:
        model.enable_cache(FirstBlockCacheConfig(threshold=args.cache))
        model.compile_repeated_blocks(fullgraph=False)  # the cache's hooks need graph breaks
        run("warm-up (compile with cache)", 2)
        run(f"{label} + first-block cache {args.cache}", args.steps)
    title = f"End to end, WanImageToVideoPipeline, {W}x{H}, {F} frames, CFG 5.0"
    table(title, [r for r in rows if "warm" not in r["config"] and "calibration" not in r["config"]])


def part_parallel(args: argparse.Namespace) -> None:
    """One video split over a torchrun group (`local_engine/parallel.py`), the best single-GPU
    configuration (the --fuse/--fp8/--sage flags, as --part e2e) on every rank: 40 guided steps
    end to end, the mean guided step, and the error against one GPU's output of the same 2-step
    video made first in the same process. One plan per launch; without torchrun, one GPU. On
    CPU (--tiny) ring attention needs a backend that returns the softmax's log-sum-exp, which
    PyTorch's CPU SDPA does not: cfg and ulysses only.

        torchrun --standalone --nproc-per-node 2 bench/engine.py --part parallel --plan cfg \
            --steps 40 --fp8 --fuse --fp8-scaling static --vae-bf16 --sage cudnn_fp8
    """
    import torch.distributed as dist

    from local_engine.parallel import ParallelPlan, apply

    size = world()
    if size > 1:
        if DEV == "cuda":  # modulo: a check of the code with two ranks on one GPU (--dist-backend gloo)
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
        dist.init_process_group(args.dist_backend or ("nccl" if DEV == "cuda" else "gloo"))
    plans = {"none": ParallelPlan(), "cfg": ParallelPlan(cfg=2), "ulysses": ParallelPlan(ulysses=size)}
    plans["ring"] = ParallelPlan(ring=size)
    plan = plans[args.plan] if size > 1 else ParallelPlan()
    model = make_transformer()  # the same seed on every rank: the same weights
    pipe = make_pipeline(args, model)
    x = inputs(args.frames, args.height, args.width, seed=0)
    neg = inputs(args.frames, args.height, args.width, seed=1)["encoder_hidden_states"]
    rows: list[dict[str, Any]] = []
    best_config(model, args, lambda: run_pipeline(pipe, args, rows, "calibration", 2))

    def video(steps: int) -> torch.Tensor:
        from PIL import Image

        with torch.inference_mode():
            return pipe(
                image=Image.new("RGB", (args.width, args.height), (120, 140, 160)),
                prompt_embeds=x["encoder_hidden_states"],
                negative_prompt_embeds=neg,
                height=args.height,
                width=args.width,
                num_frames=args.frames,
                num_inference_steps=steps,
                guidance_scale=5.0,
                output_type="latent",
                generator=torch.Generator(device=DEV).manual_seed(0),
            ).frames.float()

    alone = video(2)  # one GPU's answer (also the compile's warm-up)
    wrapper = apply(pipe, plan) if plan.world > 1 else None
    if wrapper is not None:
        wrapper.negative = neg
    split = video(2)  # the group's, warm
    err = float((split - alone).norm() / alone.norm())
    label = f"{plan.world} GPU(s): cfg {plan.cfg} x ring {plan.ring} x ulysses {plan.ulysses}"
    run_pipeline(pipe, args, rows, label, args.steps)
    rows[-1]["rel err vs one GPU (2 steps)"] = f"{err:.1e}"
    name = torch.cuda.get_device_name() if DEV == "cuda" else "cpu"
    table(f"One video over {size} x {name}, {args.width}x{args.height}, {args.frames} frames, CFG 5.0", rows[-1:])
    if size > 1:
        dist.destroy_process_group()


def part_onnx(args: argparse.Namespace) -> None:
    """ONNX Runtime beside torch in one run, on the same weights and inputs: per forward and per
    guided step (the blocks through one exported block graph, weights bound from torch's
    tensors), the VAE decoder (torch vs ONNX Runtime), then `--steps` end to end on ONNX
    Runtime with whichever VAE decoder won. `--onnx-parts` picks which of these run."""
    import onnxruntime as ort

    from local_engine.onnx_runtime import OnnxBlocks, OnnxVaeDecoder

    providers = ["CUDAExecutionProvider"] if DEV == "cuda" else ["CPUExecutionProvider"]
    say(f"onnxruntime {ort.__version__}, providers available: {ort.get_available_providers()}")
    onnx_dir = Path(args.onnx_dir)
    model = make_transformer()
    pipe = make_pipeline(args, model)
    F, H, W = args.frames, args.height, args.width
    x = inputs(F, H, W, seed=0)
    uncond = dict(x, encoder_hidden_states=inputs(F, H, W, seed=1)["encoder_hidden_states"])
    rows: list[dict[str, Any]] = []

    def measure(name: str, ref: torch.Tensor | None) -> torch.Tensor:
        return measure_forward(rows, name, model, x, uncond, args.repeat, ref, outside_torch=True)

    best: tuple[float, str, dict[str, str]] | None = None  # the fastest ONNX block graph measured
    if "attention" in args.onnx_parts:
        onnx_attention_rows(args)
    if "forward" in args.onnx_parts:
        ref = measure(f"torch eager {str(BF16)[6:]}, SDPA (baseline)", None)
        for attention in args.onnx_attention:
            for kernel in args.sdpa_kernel:
                cuda = sdpa_option(kernel)
                name = f"ONNX Runtime, block graph, {str(BF16)[6:]}, attention: {attention}, sdpa_kernel {kernel}"
                uninstall(model)
                blocks = OnnxBlocks.install(model, onnx_dir, providers, attention)
                blocks.cuda_options = cuda
                try:
                    measure(name, ref)
                except Exception as exc:  # e.g. a node with no kernel for this dtype on this provider
                    say(f"{name} failed: {exc!r}"[:3000])
                    continue
                if best is None or rows[-1]["s/guided step"] < best[0]:
                    best = (rows[-1]["s/guided step"], attention, cuda)
        uninstall(model)
        say(f"graphs: {sorted((p.name, p.stat().st_size) for p in onnx_dir.glob('*'))}")
    if "vae" in args.onnx_parts:
        vae = pipe.vae
        latents = torch.randn(1, 16, (F - 1) // 4 + 1, H // 8, W // 8, device=DEV, dtype=vae.dtype)
        with torch.inference_mode():
            vae.decode(latents[:, :, :3])  # warm-up
            torch_s, ref_video = sync_time(lambda: vae.decode(latents).sample, 2)
            vrows = [{"VAE decoder": f"torch {vae.dtype}", "s": round(torch_s, 2), "rel err": "-"}]
            decoder = OnnxVaeDecoder.install(vae, onnx_dir, providers, "bench")
            t0 = time.perf_counter()
            vae.decode(latents)
            sync()
            first = time.perf_counter() - t0
            ort_s, video = sync_time(lambda: vae.decode(latents).sample, 2)
            err = accel.relative_error(video, ref_video)
            vrows.append(
                {"VAE decoder": f"ONNX Runtime {decoder.providers[0]}", "s": round(ort_s, 2), "rel err": f"{err:.1e}"}
            )
            vrows[-1]["first call s"] = round(first, 1)
        table(f"VAE decoder, {F}x{H}x{W}", vrows)
        if ort_s >= torch_s:
            del vae.decode  # the class's own decode again: torch won
    if "e2e" in args.onnx_parts and args.steps:
        _, attention, cuda = best or (0.0, args.onnx_attention[0], sdpa_option(args.sdpa_kernel[0]))
        OnnxBlocks.install(model, onnx_dir, providers, attention).cuda_options = cuda
        decode = "ONNX Runtime" if "decode" in vars(pipe.vae) else "torch"
        name = f"ONNX Runtime blocks (attention: {attention}, {cuda or 'default kernels'}), VAE decoder: {decode}"
        run_pipeline(pipe, args, rows, name, args.steps, outside_torch=True)
    table(f"ONNX Runtime vs torch, Wan 2.1 I2V-14B (random weights), {W}x{H}, {F} frames", rows)


def sdpa_option(kernel: int) -> dict[str, str]:
    """The CUDA provider's `sdpa_kernel` bitmask as an option; 0 leaves its own choice."""
    return {"sdpa_kernel": str(kernel)} if kernel else {}


def uninstall(model: Any) -> None:
    """The blocks' class forward again, and the ONNX sessions (with their memory arenas) gone."""
    for block in model.blocks:
        vars(block).pop("forward", None)
    vars(model).pop("onnx_blocks", None)
    gc.collect()


def onnx_attention_rows(args: argparse.Namespace) -> None:
    """Attention alone at the self-attention shape: ONNX Runtime's standard `Attention` node and
    its `MultiHeadAttention`, with the provider's default kernel choice and with cuDNN requested
    (`sdpa_kernel` 24 = cuDNN, else unfused), beside torch's SDPA. Which kernel ONNX Runtime
    picked is printed by the provider itself (ORT_ENABLE_ATTENTION_KERNEL_DEBUG_INFO)."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    from local_engine.onnx_runtime import run_bound

    heads, dim = ARCH["num_attention_heads"], ARCH["attention_head_dim"]
    tokens = ((args.frames - 1) // 4 + 1) * (args.height // 16) * (args.width // 16)
    flops = 4 * heads * tokens * tokens * dim
    g = torch.Generator(device=DEV).manual_seed(0)
    q, k, v = (torch.randn(1, heads, tokens, dim, device=DEV, dtype=BF16, generator=g) for _ in range(3))
    ref_s, ref = sync_time(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v), 5)
    rows = [{"attention": "torch SDPA (default choice)", "ms": round(ref_s * 1e3, 1)}]
    rows[0]["TFLOP/s"] = round(flops / ref_s / 1e12)
    os.environ["ORT_ENABLE_ATTENTION_KERNEL_DEBUG_INFO"] = "1"
    elem = {torch.bfloat16: onnx.TensorProto.BFLOAT16, torch.float16: onnx.TensorProto.FLOAT16}.get(BF16, 1)
    for op in ("Attention", "MultiHeadAttention"):
        if op == "Attention":
            shape, node, feeds = [1, heads, tokens, dim], helper.make_node(op, ["q", "k", "v"], ["y"]), (q, k, v)
            opsets = [helper.make_opsetid("", 23)]
        else:
            shape = [1, tokens, heads * dim]
            node = helper.make_node(op, ["q", "k", "v"], ["y"], domain="com.microsoft", num_heads=heads)
            feeds = tuple(t.transpose(1, 2).reshape(1, tokens, heads * dim).contiguous() for t in (q, k, v))
            opsets = [helper.make_opsetid("", 23), helper.make_opsetid("com.microsoft", 1)]
        io = [helper.make_tensor_value_info(n, elem, shape) for n in "qkvy"]
        model = helper.make_model(helper.make_graph([node], op, io[:3], io[3:]), opset_imports=opsets, ir_version=10)
        for kernel in args.sdpa_kernel:
            options = {"device_id": "0"} | sdpa_option(kernel)
            provider = ("CUDAExecutionProvider", options) if DEV == "cuda" else "CPUExecutionProvider"
            label = f"ONNX Runtime {op}, sdpa_kernel {kernel}"
            try:
                session = ort.InferenceSession(model.SerializeToString(), providers=[provider])
                inputs = dict(zip("qkv", feeds, strict=True))
                say(f"{label}: first run")
                out = run_bound(session, inputs, "y")
                dt, out = sync_time(lambda s=session, i=inputs: run_bound(s, i, "y"), 5)
            except Exception as exc:
                say(f"{label} failed: {exc!r}"[:2000])
                continue
            if op != "Attention":
                out = out.reshape(1, tokens, heads, dim).transpose(1, 2)
            err = accel.relative_error(out, ref)
            rows.append({"attention": label, "ms": round(dt * 1e3, 1), "TFLOP/s": round(flops / dt / 1e12)})
            rows[-1]["rel err"] = f"{err:.1e}"
            say(json.dumps(rows[-1]))
    os.environ.pop("ORT_ENABLE_ATTENTION_KERNEL_DEBUG_INFO")
    table(f"Attention alone, 1x{heads}x{tokens}x{dim}, {str(BF16)[6:]}", rows)


def table(title: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    cols = list(dict.fromkeys(k for r in rows for k in r))  # every row's keys, first seen first
    say(f"\n### {title}\n")
    say("| " + " | ".join(cols) + " |")
    say("|" + "---|" * len(cols))
    for r in rows:
        say("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--part",
        choices=["attention", "gemm", "forward", "accuracy", "e2e", "onnx", "profile", "parallel"],
        required=True,
    )
    ap.add_argument("--plan", choices=["cfg", "ulysses", "ring", "none"], default="cfg", help="parallel: the split")
    ap.add_argument(
        "--dist-backend", default=None, help="parallel: gloo runs two ranks on one GPU (a correctness check)"
    )
    ap.add_argument(
        "--onnx-parts", nargs="*", default=["forward", "vae", "e2e"], choices=["attention", "forward", "vae", "e2e"]
    )
    ap.add_argument("--onnx-attention", nargs="*", default=["onnx"], help="block graph attention variants (ATTENTION)")
    ap.add_argument(
        "--sdpa-kernel", nargs="*", type=int, default=[0], help="CUDA provider sdpa_kernel bitmasks (0: its default)"
    )
    ap.add_argument("--dtype", choices=["bfloat16", "float16"], default="bfloat16", help="the transformer's dtype")
    ap.add_argument("--onnx-dir", default="/tmp/i2v-onnx", help="where --part onnx keeps its graphs")
    ap.add_argument("--fp8-scaling", choices=["row", "tensor", "static"], default="tensor")
    ap.add_argument("--fuse", action="store_true", help="fused qkv projections")
    ap.add_argument("--cache-thresholds", type=float, nargs="*", default=[0.05, 0.1])
    ap.add_argument("--fp8-only", action="store_true", help="forward: baseline, then straight to compile + fp8")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--one-row", action="store_true", help="forward: eager, then the full config (first --sage)")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--fp8", action="store_true")
    ap.add_argument(
        "--sage",
        nargs="*",
        choices=[*sorted(accel.SAGE_KERNELS), *CUDNN_VARIANTS],
        help="8-bit self-attention rows (e2e: the first)",
    )
    ap.add_argument("--vae-bf16", action="store_true")
    ap.add_argument("--cache", type=float, default=None)
    ap.add_argument("--distilled", action="store_true", help="e2e: also 4 steps without CFG (distilled schedule)")
    ap.add_argument("--frames", type=int, default=81)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--acc-frames", type=int, default=21)
    ap.add_argument("--acc-height", type=int, default=240)
    ap.add_argument("--acc-width", type=int, default=416)
    ap.add_argument("--tune", action="store_true", help="inductor coordinate-descent tuning")
    ap.add_argument("--compile-mode", default=None, help="e.g. max-autotune-no-cudagraphs")
    ap.add_argument("--cudnn-layout", default=None, help="cudnn_fp8's memory layout (local_engine/cudnn_fp8.LAYOUTS)")
    ap.add_argument("--sage-best-only", action="store_true", help="attention: the Triton kernel's best configs only")
    ap.add_argument("--tiny", action="store_true", help="smoke-test the script on CPU with the tiny layout")
    args = ap.parse_args()
    global DEV, ARCH, CUDNN, BF16, SAGE_SWEEP
    BF16 = getattr(torch, args.dtype)
    SAGE_SWEEP = not args.sage_best_only
    if args.cudnn_layout:
        from local_engine import cudnn_fp8

        cudnn_fp8.LAYOUT = args.cudnn_layout
    if args.tiny:
        from local_engine.tiny import TINY_I2V

        DEV, ARCH, CUDNN = "cpu", TINY_I2V, "native"
        if args.part == "onnx":  # ONNX Runtime's CPU provider has no bf16 kernels for most nodes
            BF16 = torch.float32
        torch.cuda.reset_peak_memory_stats = lambda *a: None  # type: ignore[assignment]
        torch.cuda.max_memory_allocated = lambda *a: 0  # type: ignore[assignment]
        torch.cuda.memory_allocated = lambda *a: 0  # type: ignore[assignment]
        torch.cuda.empty_cache = lambda *a: None  # type: ignore[assignment]
        torch.cuda.get_device_name = lambda *a: "cpu (tiny smoke test)"  # type: ignore[assignment]
    say(
        f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
        f"diffusers {__import__('diffusers').__version__}, cuDNN {torch.backends.cudnn.version()}"
    )
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", "/tmp/inductor")
    if args.compile_mode:
        COMPILE_KW["mode"] = args.compile_mode
    if args.tune:
        import torch._inductor.config as inductor_config

        inductor_config.coordinate_descent_tuning = True
        say("inductor: coordinate_descent_tuning")
    parts = {
        "attention": part_attention,
        "gemm": part_gemm,
        "forward": part_forward,
        "accuracy": part_accuracy,
        "e2e": part_e2e,
        "onnx": part_onnx,
        "profile": part_profile,
        "parallel": part_parallel,
    }
    parts[args.part](args)


if __name__ == "__main__":
    main()
