"""Real-model image generation with diffusers, from local model folders only.

Works with diffusers pipeline folders (SD 1.5, SDXL, SD-Turbo) through the Auto pipelines. Weights
are never downloaded: every load passes ``local_files_only=True``. torch and diffusers are imported
inside methods so that importing this module (and the Dagster code location) stays light.

Determinism: each image gets its own ``torch.Generator`` seeded from its seed, so an image depends
on its seed and inputs, not on which batch it ran in. Outputs are byte-identical across runs on the
same device type and software; CPU and CUDA (and different GPUs) give different images for the same
seed, and CUDA kernels are not guaranteed to be bitwise batch-size invariant.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image, DiffusionPipeline
    from diffusers.schedulers.scheduling_utils import SchedulerMixin

# Scheduler names accepted by GenerationSettings, mapped to diffusers class names.
SCHEDULERS: dict[str, str] = {
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
}

_DTYPE_NAMES: dict[str, str] = {
    "fp16": "float16",
    "float16": "float16",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp32": "float32",
    "float32": "float32",
}


class ModelUnavailable(RuntimeError):
    """The model folder is missing or is not a loadable diffusers pipeline."""


class GenerationError(RuntimeError):
    """A pipeline call failed; the message says which batch, images and prompts."""


@dataclass(frozen=True)
class GenerationSettings:
    """How to generate. ``prompt`` drives img2img; text2img takes one prompt per image instead.

    ``width``/``height`` (multiples of 8) set the working resolution; ``None`` means the model's
    default for text2img and the input size (rounded down to a multiple of 8) for img2img.
    ``seed`` is the first seed when no per-image seeds are given (image i uses ``seed + i``).
    """

    prompt: str = ""
    negative_prompt: str = ""
    steps: int = 30
    guidance_scale: float = 7.5
    strength: float = 0.6
    scheduler: str | None = None
    seed: int = 0
    width: int | None = None
    height: int | None = None

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not 0.0 < self.strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {self.strength}")
        if self.scheduler is not None and self.scheduler not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {self.scheduler!r}; expected one of {sorted(SCHEDULERS)}")
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None and (value < 8 or value % 8):
                raise ValueError(f"{name} must be a positive multiple of 8, got {value}")


def img2img_steps(steps: int, strength: float) -> int:
    """Enough steps that img2img runs at least one denoising step (steps * strength >= 1)."""
    steps = max(steps, math.ceil(1.0 / strength))
    while int(steps * strength) < 1:
        steps += 1
    return steps


def model_size(size: tuple[int, int], long_side: int) -> tuple[int, int]:
    """`size`'s aspect ratio at `long_side`, both sides multiples of 8 (what the UNet accepts)."""
    width, height = size
    scale = long_side / max(width, height)
    return _multiple_of_8(width * scale), _multiple_of_8(height * scale)


def _multiple_of_8(value: float) -> int:
    return max(8, int(value / 8.0 + 0.5) * 8)  # half up (round() would go to even: 36 -> 32)


@dataclass(frozen=True)
class _Pipelines:
    """Loaded pipelines plus their original schedulers (each call gets a fresh copy of one)."""

    text2img: DiffusionPipeline
    img2img: DiffusionPipeline
    text2img_scheduler: SchedulerMixin
    img2img_scheduler: SchedulerMixin


def _read_model_index(path: Path) -> bytes:
    """Return model_index.json's bytes, or say precisely what is missing."""
    if not path.exists():
        raise ModelUnavailable(f"diffusers model path {path} does not exist")
    if not path.is_dir():
        raise ModelUnavailable(f"diffusers model path {path} is not a directory")
    index = path / "model_index.json"
    if not index.is_file():
        raise ModelUnavailable(f"diffusers model path {path} has no model_index.json")
    return index.read_bytes()


def _model_id(path: Path) -> str:
    return f"{path.resolve().name}@{hashlib.sha256(_read_model_index(path)).hexdigest()[:12]}"


def _load_pipeline(
    auto_class: type[AutoPipelineForText2Image | AutoPipelineForImage2Image],
    path: Path,
    dtype: torch.dtype,
    device: str,
) -> DiffusionPipeline:
    """Load one pipeline offline, with the safety checker off when the folder declares one."""
    index = json.loads(_read_model_index(path))
    extra: dict[str, Any] = {}
    if "safety_checker" in index:
        extra = {"safety_checker": None, "requires_safety_checker": False}
    try:
        pipe = auto_class.from_pretrained(path, local_files_only=True, dtype=dtype, **extra)
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(f"cannot load diffusers pipeline from {path}: {exc}") from exc
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _fresh_scheduler(base: SchedulerMixin, name: str | None) -> SchedulerMixin:
    """A new scheduler per call, so no state leaks between calls and the swap is explicit."""
    import diffusers

    scheduler_class = type(base) if name is None else getattr(diffusers, SCHEDULERS[name])
    return scheduler_class.from_config(base.config)


@contextmanager
def _deterministic_algorithms(device: str) -> Iterator[None]:
    """On CPU, ask torch for deterministic kernels for the duration of a call, then restore."""
    import torch

    if torch.device(device).type != "cpu":
        yield
        return
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def _seeds_for(count: int, settings: GenerationSettings, seeds: Sequence[int] | None) -> list[int]:
    if seeds is None:
        return [settings.seed + i for i in range(count)]
    if len(seeds) != count:
        raise ValueError(f"got {len(seeds)} seeds for {count} images")
    return [int(s) for s in seeds]


def _check_rgb(image: np.ndarray, index: int) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"image {index} must be an RGB uint8 array (H, W, 3), got {image.dtype} {image.shape}"
        )


def _working_size(image: np.ndarray, settings: GenerationSettings) -> tuple[int, int]:
    """(width, height) the model sees: settings size, else the input size floored to a multiple of 8."""
    height, width = image.shape[:2]
    return (
        settings.width or max(8, width // 8 * 8),
        settings.height or max(8, height // 8 * 8),
    )


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (image.shape[1], image.shape[0]) == size:
        return image
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """Pipeline float output in [0, 1] to uint8, rounding as diffusers' own PIL conversion does."""
    return (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)


class DiffusionGenerator:
    """Text-to-image and image-to-image with one diffusers model, loaded lazily and once.

    ``text2img_path`` / ``img2img_path`` override ``model_path`` for one mode; when both modes use
    the same folder the img2img pipeline shares the text2img pipeline's components (no second copy
    in memory). Calls are serialised by a lock: the pipelines hold per-call state.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        device: str | None = None,
        dtype: str | None = None,
        img2img_path: str | Path | None = None,
        text2img_path: str | Path | None = None,
    ) -> None:
        if dtype is not None and dtype not in _DTYPE_NAMES:
            raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(_DTYPE_NAMES)}")
        self.model_path = Path(model_path)
        self.text2img_path = Path(text2img_path) if text2img_path is not None else self.model_path
        self.img2img_path = Path(img2img_path) if img2img_path is not None else self.model_path
        self._requested_device = device
        self._requested_dtype = dtype
        self._lock = threading.RLock()
        self._pipelines: _Pipelines | None = None
        self.load_seconds: float | None = None

    @cached_property
    def model_id(self) -> str:
        """Folder name plus a hash of model_index.json, for each distinct folder used."""
        paths = dict.fromkeys([self.text2img_path, self.img2img_path])
        return "+".join(_model_id(path) for path in paths)

    @cached_property
    def version(self) -> str:
        return importlib.metadata.version("diffusers")

    @cached_property
    def device(self) -> str:
        if self._requested_device is not None:
            return self._requested_device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    @cached_property
    def dtype(self) -> str:
        """fp16 by default on CUDA (halves memory, tensor cores), fp32 elsewhere (CPU half is slow)."""
        if self._requested_dtype is not None:
            return _DTYPE_NAMES[self._requested_dtype]
        return "float16" if self.device.startswith("cuda") else "float32"

    def load(self) -> None:
        """Load the pipelines if not loaded yet; ModelUnavailable if a folder is missing or broken."""
        self._loaded()

    def _loaded(self) -> _Pipelines:
        with self._lock:
            if self._pipelines is None:
                self._pipelines = self._load()
            return self._pipelines

    def _load(self) -> _Pipelines:
        started = time.perf_counter()
        _ = self.model_id  # fail fast with a clear message before importing torch/diffusers
        import torch
        from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image

        dtype = getattr(torch, self.dtype)
        text2img = _load_pipeline(AutoPipelineForText2Image, self.text2img_path, dtype, self.device)
        if self.img2img_path == self.text2img_path:
            img2img = AutoPipelineForImage2Image.from_pipe(text2img)
            img2img.set_progress_bar_config(disable=True)
        else:
            img2img = _load_pipeline(AutoPipelineForImage2Image, self.img2img_path, dtype, self.device)
        self.load_seconds = time.perf_counter() - started
        return _Pipelines(text2img, img2img, text2img.scheduler, img2img.scheduler)

    def info(self) -> dict[str, Any]:
        """Provenance for asset metadata; load_seconds is None until the model has been loaded."""
        return {
            "provider": "diffusers",
            "model_id": self.model_id,
            "version": self.version,
            "device": self.device,
            "dtype": self.dtype,
            "load_seconds": self.load_seconds,
        }

    def text2img(
        self,
        prompts: Sequence[str],
        settings: GenerationSettings,
        *,
        seeds: Sequence[int] | None = None,
        batch_size: int = 8,
    ) -> list[np.ndarray]:
        """One RGB uint8 image per prompt, generated batch_size at a time."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        all_seeds = _seeds_for(len(prompts), settings, seeds)
        with self._lock:
            pipes = self._loaded()
            images: list[np.ndarray] = []
            for start in range(0, len(prompts), batch_size):
                batch = list(range(start, min(start + batch_size, len(prompts))))
                images += self._call(
                    pipes.text2img,
                    _fresh_scheduler(pipes.text2img_scheduler, settings.scheduler),
                    settings,
                    prompts=[prompts[i] for i in batch],
                    seeds=[all_seeds[i] for i in batch],
                    context=f"text2img images {batch}",
                    width=settings.width,
                    height=settings.height,
                )
            return images

    def img2img(
        self,
        images: Sequence[np.ndarray],
        settings: GenerationSettings,
        *,
        seeds: Sequence[int] | None = None,
        batch_size: int = 8,
        prompts: Sequence[str] | None = None,
    ) -> list[np.ndarray]:
        """Restyle each RGB uint8 image with settings.prompt, or with its own entry of `prompts` (so
        differently prompted images, e.g. a sheet's variants, share a batch); outputs keep each input's size.

        Images are batched by working size (inputs of different sizes cannot share a batch).
        """
        if prompts is not None and len(prompts) != len(images):
            raise ValueError(f"got {len(prompts)} prompts for {len(images)} images")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if int(settings.steps * settings.strength) < 1:
            raise ValueError(
                f"steps * strength must give at least one denoising step, "
                f"got {settings.steps} * {settings.strength}"
            )
        for index, image in enumerate(images):
            _check_rgb(image, index)
        all_seeds = _seeds_for(len(images), settings, seeds)
        by_size: dict[tuple[int, int], list[int]] = {}
        for index, image in enumerate(images):
            by_size.setdefault(_working_size(image, settings), []).append(index)

        outputs: dict[int, np.ndarray] = {}
        with self._lock:
            pipes = self._loaded()
            for size, indices in by_size.items():
                for start in range(0, len(indices), batch_size):
                    batch = indices[start : start + batch_size]
                    generated = self._call(
                        pipes.img2img,
                        _fresh_scheduler(pipes.img2img_scheduler, settings.scheduler),
                        settings,
                        prompts=[settings.prompt if prompts is None else prompts[i] for i in batch],
                        seeds=[all_seeds[i] for i in batch],
                        context=f"img2img images {batch} at {size[0]}x{size[1]}",
                        image=[Image.fromarray(_resize(images[i], size)) for i in batch],
                        strength=settings.strength,
                    )
                    for i, image in zip(batch, generated, strict=True):
                        outputs[i] = _resize(image, (images[i].shape[1], images[i].shape[0]))
        return [outputs[i] for i in range(len(images))]

    def _call(
        self,
        pipe: DiffusionPipeline,
        scheduler: SchedulerMixin,
        settings: GenerationSettings,
        *,
        prompts: list[str],
        seeds: list[int],
        context: str,
        **pipe_kwargs: Any,
    ) -> list[np.ndarray]:
        """Run one batch with one generator per image; wrap failures with the batch's context."""
        import torch

        pipe.scheduler = scheduler
        generators = [torch.Generator(self.device).manual_seed(seed) for seed in seeds]
        # None (not "") lets SDXL apply its zeroed negative embedding when no negative is given.
        negative = [settings.negative_prompt] * len(prompts) if settings.negative_prompt else None
        try:
            with _deterministic_algorithms(self.device):
                result = pipe(
                    prompt=prompts,
                    negative_prompt=negative,
                    num_inference_steps=settings.steps,
                    guidance_scale=settings.guidance_scale,
                    generator=generators,
                    output_type="np",
                    **pipe_kwargs,
                )
        except Exception as exc:
            raise GenerationError(f"{context} with prompts {prompts!r} failed: {exc}") from exc
        return [_to_uint8(image) for image in result.images]
