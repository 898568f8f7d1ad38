"""Loaded diffusers pipelines, shared by every asset of a process.

Pipelines live in a process-wide cache keyed by (paths, device, dtype) and are loaded on first use, so
a run process (in-process executor: every step of the run) or an `avatarops process` pass over many
avatars loads the model once, and a run that hits the content cache never loads it.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from pathlib import Path

import dagster as dg

from avatar_assets.media.diffusion import DiffusionGenerator

_MAX_CACHED_MODELS = 2

_cache: OrderedDict[tuple, DiffusionGenerator] = OrderedDict()
_cache_lock = threading.Lock()
_loads: Counter[tuple] = Counter()


def _cache_key(model_path: str, img2img_path: str | None, text2img_path: str | None, device: str | None, dtype: str | None) -> tuple:
    def norm(path: str | None) -> str | None:
        return None if path is None else str(Path(path).expanduser().absolute())

    return (norm(model_path), norm(img2img_path), norm(text2img_path), device or "auto", dtype or "auto")


def shared_generator(
    model_path: str,
    *,
    img2img_path: str | None = None,
    text2img_path: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> DiffusionGenerator:
    """The loaded generator for this configuration, loading it on first use in this process.

    A failed load (ModelUnavailable) is not cached: the next asset tries again and gets the same clear
    error. At most two configurations stay loaded; the least recently used is dropped.
    """
    key = _cache_key(model_path, img2img_path, text2img_path, device, dtype)
    with _cache_lock:
        generator = _cache.get(key)
        if generator is not None:
            _cache.move_to_end(key)
            return generator
        generator = DiffusionGenerator(
            key[0], img2img_path=key[1], text2img_path=key[2], device=device, dtype=dtype
        )
        generator.load()
        _loads[key] += 1
        dg.get_dagster_logger().info(
            f"loaded diffusers model {generator.model_id} on {generator.device} ({generator.dtype}) "
            f"in {generator.load_seconds:.2f} s"
        )
        _cache[key] = generator
        while len(_cache) > _MAX_CACHED_MODELS:
            _cache.popitem(last=False)
        return generator


def load_count(model_path: str | None = None) -> int:
    """How many times this process loaded a model (for one model folder, or in total)."""
    with _cache_lock:
        if model_path is None:
            return sum(_loads.values())
        path = str(Path(model_path).expanduser().absolute())
        return sum(count for key, count in _loads.items() if key[0] == path)


def clear_generator_cache() -> None:
    """Drop loaded pipelines and load counts (tests, or to pick up weights replaced on disk)."""
    with _cache_lock:
        _cache.clear()
        _loads.clear()
