"""Diffusers throughput: batch 1 vs batch N, model load vs per-image time, and N avatars in one batched
call vs one model load per avatar (what a run per avatar without a shared pipeline would pay).

`bench_diffusers(model_path, device)` returns a plain dict (JSON-ready); the bench runner writes it.
It times the same `DiffusionGenerator` the provider uses, on the model folder given (a tiny random
model for CI, real SD 1.5 / SDXL / SD-Turbo weights on a GPU machine). Nothing is downloaded.
"""

from __future__ import annotations

import gc
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np


def native_side(model_path: str | Path) -> int:
    """The model's native output side: UNet sample size x VAE scale factor (64 tiny, 512 SD 1.5, 1024 SDXL)."""
    path = Path(model_path)
    unet = json.loads((path / "unet" / "config.json").read_text())
    vae = json.loads((path / "vae" / "config.json").read_text())
    sample = unet.get("sample_size", 64)
    sample = sample[0] if isinstance(sample, list | tuple) else sample
    return int(sample) * 2 ** (len(vae.get("block_out_channels", [0, 0, 0, 0])) - 1)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(device: str, fn) -> tuple[float, Any]:
    _sync(device)
    started = time.perf_counter()
    result = fn()
    _sync(device)
    return time.perf_counter() - started, result


def _portraits(count: int, side: int) -> list[np.ndarray]:
    """Real pixels: crops of the bundled portrait, a little different per 'avatar', at side x side."""
    from PIL import Image

    from avatar_assets.media.images import load_photo

    sample = Path(__file__).resolve().parents[1] / "avatar_assets" / "samples" / "astronaut.jpg"
    rgb = load_photo(sample.read_bytes()).rgb
    height, width = rgb.shape[:2]
    images = []
    for index in range(count):
        inset = index * min(height, width) // (8 * max(count, 1))
        crop = rgb[inset : height - inset, inset : width - inset]
        images.append(np.asarray(Image.fromarray(crop).resize((side, side), Image.Resampling.LANCZOS)))
    return images


def _release(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def bench_diffusers(
    model_path: str | Path,
    device: str | None = None,
    *,
    batch: int = 8,
    avatars: int = 10,
    steps: int = 4,
    strength: float = 0.5,
    side: int | None = None,
    dtype: str | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Measure one model folder on one device; every number is wall time with the device synchronised.

    - `load_s`: folder -> pipelines on the device, first load in the process (it also pays lazy
      imports inside diffusers/transformers); `load_repeat_s`: median of the later loads (warm file
      cache), the steady-state cost of one more load; `import_s`: importing torch + diffusers.
    - `text2img`: `batch` prompts at batch size 1 and at batch size `batch` (images/s, s/image).
    - `avatars`: `avatars` img2img portraits in one batched call on one loaded model, against one
      load plus one call per avatar (a run per avatar without the process-wide pipeline cache).
    `threads` sets torch's CPU threads (a busy shared machine gives steadier numbers with 1).
    """
    started = time.perf_counter()
    import diffusers
    import torch

    import_s = time.perf_counter() - started
    if threads is not None:
        torch.set_num_threads(threads)
    from avatar_assets.media.diffusion import DiffusionGenerator, GenerationSettings

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    side = side or native_side(model_path)
    side -= side % 8

    def new_generator() -> DiffusionGenerator:
        return DiffusionGenerator(model_path, device=device, dtype=dtype)

    generator = new_generator()
    load_s, _ = _timed(device, generator.load)
    text_settings = GenerationSettings(steps=steps, guidance_scale=7.5, seed=0, width=side, height=side)
    prompts = [f"a photo of a quiet room, variation {i}" for i in range(batch)]
    seeds = list(range(batch))
    warmup_s, _ = _timed(device, lambda: generator.text2img(prompts[:1], text_settings, seeds=[0], batch_size=1))
    batch1_s, _ = _timed(device, lambda: generator.text2img(prompts, text_settings, seeds=seeds, batch_size=1))
    batchn_s, _ = _timed(device, lambda: generator.text2img(prompts, text_settings, seeds=seeds, batch_size=batch))

    portraits = _portraits(avatars, side)
    image_settings = GenerationSettings(
        prompt="head and shoulders photo portrait of the same person", steps=steps, guidance_scale=7.5,
        strength=strength, seed=0, width=side, height=side,
    )
    avatar_seeds = [1000 + i for i in range(avatars)]
    batched_call_s, _ = _timed(
        device, lambda: generator.img2img(portraits, image_settings, seeds=avatar_seeds, batch_size=batch)
    )
    peak_memory_gb = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    info = generator.info()
    generator = None  # release the first pipelines before the per-avatar loads
    _release(device)

    separate_loads, separate_calls = [], []
    for portrait, seed in zip(portraits, avatar_seeds, strict=True):
        fresh = new_generator()
        load, _ = _timed(device, fresh.load)
        call, _ = _timed(device, lambda f=fresh, p=portrait, s=seed: f.img2img([p], image_settings, seeds=[s], batch_size=1))
        separate_loads.append(load)
        separate_calls.append(call)
        del fresh
        _release(device)

    # The first load also pays one-time lazy imports inside diffusers/transformers; compare like with
    # like: one steady-state load + one batched call vs a steady-state load + one call per avatar.
    steady_load_s = statistics.median(separate_loads)
    batched_total_s = steady_load_s + batched_call_s
    separate_total_s = sum(separate_loads) + sum(separate_calls)
    return {
        "model_id": info["model_id"],
        "device": info["device"],
        "dtype": info["dtype"],
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "threads": torch.get_num_threads(),
        "side": side,
        "steps": steps,
        "img2img_strength": strength,
        "import_s": round(import_s, 3),
        "load_s": round(load_s, 3),
        "load_repeat_s": round(steady_load_s, 3),
        "warmup_call_s": round(warmup_s, 3),
        "text2img": {
            "images": batch,
            "batch_1_s": round(batch1_s, 3),
            f"batch_{batch}_s": round(batchn_s, 3),
            "batch_1_images_per_s": round(batch / batch1_s, 3),
            f"batch_{batch}_images_per_s": round(batch / batchn_s, 3),
            "per_image_s_batch_1": round(batch1_s / batch, 4),
            f"per_image_s_batch_{batch}": round(batchn_s / batch, 4),
            "batching_speedup": round(batch1_s / batchn_s, 2),
        },
        "load_vs_image": {
            "load_s": round(load_s, 3),
            "load_repeat_s": round(steady_load_s, 3),
            "per_image_s": round(batch1_s / batch, 4),
            "first_load_in_images": round(load_s / (batch1_s / batch), 1),
            "repeat_load_in_images": round(steady_load_s / (batch1_s / batch), 1),
        },
        "avatars": {
            "count": avatars,
            "batch_size": batch,
            "one_load_batched_s": round(batched_total_s, 3),  # steady-state load + one batched call
            "one_load_batched_call_s": round(batched_call_s, 3),
            "separate_loads_total_s": round(separate_total_s, 3),  # a load + one call per avatar
            "separate_load_share": round(sum(separate_loads) / separate_total_s, 3),
            "separate_calls_s": round(sum(separate_calls), 3),
            "speedup": round(separate_total_s / batched_total_s, 2),
        },
        "peak_memory_gb": round(peak_memory_gb, 2) if peak_memory_gb is not None else None,
    }


if __name__ == "__main__":  # python -m bench.diffusers_bench MODEL [DEVICE [THREADS]]
    import sys

    threads = int(sys.argv[3]) if len(sys.argv) > 3 else None
    print(json.dumps(bench_diffusers(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None, threads=threads), indent=2))
