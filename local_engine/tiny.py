"""A tiny random-weight Wan image-to-video pipeline of the real architecture.

Used by the tests (nothing can be downloaded here) and by the benchmark's full-size layouts:
every component is the real diffusers/transformers class, only the sizes are small. The
tokenizer is a word-level `tokenizers` model saved as a `PreTrainedTokenizerFast`, so the
saved folder loads back through `from_pretrained` like a real checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

#: Wan 2.1 I2V-14B transformer layout (shared/reference/engine-anchors.md).
WAN21_I2V_14B: dict[str, Any] = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 40,
    "attention_head_dim": 128,
    "in_channels": 36,
    "out_channels": 16,
    "text_dim": 4096,
    "freq_dim": 256,
    "ffn_dim": 13824,
    "num_layers": 40,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "image_dim": 1280,
    "added_kv_proj_dim": 5120,
    "rope_max_seq_len": 1024,
}

#: The same layout, 2 layers of 2 heads x 16: seconds on a CPU.
TINY_I2V: dict[str, Any] = WAN21_I2V_14B | {
    "num_attention_heads": 2,
    "attention_head_dim": 16,
    "text_dim": 32,
    "freq_dim": 32,
    "ffn_dim": 64,
    "num_layers": 2,
    "image_dim": 32,
    "added_kv_proj_dim": 32,
}
TEXT_TOKENS = 512  # Wan's attention takes "all context before the last 512 tokens" as the image


def _tokenizer() -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for word in "a the camera slow push in pan left right she smiles waves sea mist drifts over lake".split():
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=TEXT_TOKENS
    )


def _text_encoder(vocab_size: int) -> Any:
    """UMT5 encoder, 2 layers of width 32 (the real one is UMT5-XXL, width 4096)."""
    from transformers import UMT5Config, UMT5EncoderModel

    return UMT5EncoderModel(
        UMT5Config(
            vocab_size=vocab_size,
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
        )
    )


def build_tiny_pipeline(seed: int = 0) -> Any:
    """Wan 2.1 I2V architecture, random weights: UMT5 text encoder, CLIP vision encoder,
    WanTransformer3DModel (I2V layout), AutoencoderKLWan, flow-matching UniPC scheduler."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanImageToVideoPipeline, WanTransformer3DModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(seed)
    tokenizer = _tokenizer()
    text_encoder = _text_encoder(len(tokenizer))
    image_encoder = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
        )
    )
    image_processor = CLIPImageProcessor(crop_size=32, size=32)
    transformer = WanTransformer3DModel(**TINY_I2V)
    vae = AutoencoderKLWan(
        base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    )
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    return WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        image_encoder=image_encoder,
        image_processor=image_processor,
        transformer=transformer,
        vae=vae,
        scheduler=scheduler,
    )


#: Wan 2.2 TI2V-5B layout (48-channel latents, no image encoder, first frame by timestep mask).
TINY_TI2V: dict[str, Any] = TINY_I2V | {
    "in_channels": 48,
    "out_channels": 48,
    "image_dim": None,
    "added_kv_proj_dim": None,
}


def build_tiny_ti2v_pipeline(seed: int = 0) -> Any:
    """Wan 2.2 TI2V-5B architecture at toy sizes: `expand_timesteps=True`, no CLIP, the Wan 2.2
    VAE layout (residual, 48 latent channels, 2x2 patching: 16x spatial compression)."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanImageToVideoPipeline, WanTransformer3DModel

    torch.manual_seed(seed)
    tokenizer = _tokenizer()
    text_encoder = _text_encoder(len(tokenizer))
    vae = AutoencoderKLWan(
        base_dim=8,
        z_dim=48,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        is_residual=True,
        in_channels=12,
        out_channels=12,
        patch_size=2,
        scale_factor_spatial=16,
        latents_mean=[0.0] * 48,
        latents_std=[1.0] * 48,
    )
    return WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0),
        transformer=WanTransformer3DModel(**TINY_TI2V),
        expand_timesteps=True,
    )


def save_tiny_pipeline(path: Path, seed: int = 0, layout: str = "wan2.1-i2v") -> Path:
    """Save a tiny pipeline: `wan2.1-i2v` (default) or `wan2.2-ti2v`."""
    pipe = build_tiny_ti2v_pipeline(seed) if layout == "wan2.2-ti2v" else build_tiny_pipeline(seed)
    pipe.save_pretrained(path)
    return path
