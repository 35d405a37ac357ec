"""Ahead-of-time builds for the `onnx` runtime: `i2v-gateway engine build --shape 480p` exports
the transformer and the VAE decoder for a shape before any request needs them, so the export
(minutes for the 14B model) never happens inside a job. Graphs are cached on disk under a key
of the shapes, the dtype and the weights' fingerprint (a changed checkpoint or LoRA gets new
graphs; the same one is reused by every worker that shares the folder)."""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path
from typing import Any

from PIL import Image

#: Wan's trained sizes per tier, landscape (portrait swaps them).
TIERS = {"480p": (832, 480), "720p": (1280, 720)}


def weights_id(model_path: Path, lora_path: Path | None = None, lora_scale: float = 1.0) -> str:
    """A fingerprint of the weights that shape the graphs: each transformer and VAE file's name,
    size and first and last MiB (hashing 30 GB whole would take minutes), and the LoRA's."""
    digest = hashlib.sha256()
    files = sorted(p for part in ("transformer", "vae") for p in (Path(model_path) / part).glob("*") if p.is_file())
    if lora_path is not None:
        lora = Path(lora_path)
        files += sorted(lora.glob("*")) if lora.is_dir() else [lora]
        digest.update(f"lora_scale={lora_scale}".encode())
    for path in files:
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}".encode())
        with path.open("rb") as f:
            digest.update(f.read(2**20))
            if size > 2**21:
                f.seek(-(2**20), 2)
                digest.update(f.read())
    return digest.hexdigest()[:20]


def parse_shape(shape: str) -> tuple[int, int]:
    """`480p`, `720p`, `480p-portrait`, or `WIDTHxHEIGHT` -> (width, height), multiples of 16."""
    tier, _, orient = shape.partition("-")
    if tier in TIERS:
        w, h = TIERS[tier]
        return (h, w) if orient == "portrait" else (w, h)
    m = re.fullmatch(r"(\d{2,4})x(\d{2,4})", shape)
    if not m:
        raise ValueError(f"shape '{shape}': use 480p, 720p, 480p-portrait or WIDTHxHEIGHT")
    w, h = int(m.group(1)), int(m.group(2))
    if w % 16 or h % 16:
        raise ValueError(f"shape '{shape}': both sides must be multiples of 16")
    return w, h


def build(pipe: Any, width: int, height: int, num_frames: int) -> dict[str, Any]:
    """Export (or find) every graph a job of this shape runs: one 1-step call at that shape
    through the ONNX pipeline, with exports allowed, then report what is on disk."""
    from local_engine.onnx_runtime import exporting

    t0 = time.perf_counter()
    with exporting(pipe):
        pipe(
            image=Image.new("RGB", (width, height), (128, 128, 128)),
            prompt="build",
            height=height,
            width=width,
            num_frames=num_frames,
            num_inference_steps=1,
            output_type="np",
        )
    return {"shape": f"{width}x{height}x{num_frames}", "seconds": round(time.perf_counter() - t0, 1)}
