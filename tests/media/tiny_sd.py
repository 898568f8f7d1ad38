"""Build a tiny random-weight Stable Diffusion pipeline on disk, entirely offline.

Tests and benchmarks need a real diffusers folder (model_index.json, unet/, vae/, text_encoder/,
tokenizer/, scheduler/) without downloading weights; the component configs follow diffusers' own
``get_dummy_components`` so the pipeline runs the real code paths in about a second on CPU.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

_MARKER = "tiny_sd.json"
_MAX_TOKENS = 77
_BOS = "<|startoftext|>"
_EOS = "<|endoftext|>"


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins that byte-level BPE uses for raw bytes (GPT-2's table)."""
    printable = list(range(ord("!"), ord("~") + 1))
    printable += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    symbols = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def _write_tokenizer_files(folder: Path) -> None:
    """Write a byte-level CLIP vocabulary (no merges) so any text tokenizes without unknowns."""
    symbols = _byte_symbols()
    tokens = [_BOS, _EOS, *symbols, *(s + "</w>" for s in symbols)]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")


def _is_built(path: Path, seed: int) -> bool:
    marker = path / _MARKER
    return (
        (path / "model_index.json").is_file()
        and marker.is_file()
        and json.loads(marker.read_text(encoding="utf-8")) == {"seed": seed}
    )


def build_tiny_sd(path: Path, *, seed: int = 0) -> Path:
    """Save a tiny random Stable Diffusion pipeline to ``path`` (reused if already built with ``seed``).

    64x64 is the native output size (VAE scale factor 2, UNet sample size 32).
    """
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    path = Path(path)
    if _is_built(path, seed):
        return path

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64),
            layers_per_block=2,
            sample_size=32,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
        )
        vae = AutoencoderKL(
            block_out_channels=[32, 64],
            in_channels=3,
            out_channels=3,
            down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
            up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
            latent_channels=4,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                bos_token_id=0,
                eos_token_id=1,
                pad_token_id=1,
                hidden_size=32,
                intermediate_size=37,
                layer_norm_eps=1e-05,
                num_attention_heads=4,
                num_hidden_layers=5,
                max_position_embeddings=_MAX_TOKENS,
                vocab_size=1000,
            )
        )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    with tempfile.TemporaryDirectory() as vocab_dir:
        _write_tokenizer_files(Path(vocab_dir))
        tokenizer = CLIPTokenizer.from_pretrained(vocab_dir, model_max_length=_MAX_TOKENS)

    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(path)
    (path / _MARKER).write_text(json.dumps({"seed": seed}), encoding="utf-8")
    return path
