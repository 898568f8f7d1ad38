"""The diffusers-backed image provider: `ImageGenerator` with a real model behind the same interface.

Selected by configuration (`resources.wiring.image_generator`): `AVATAR_IMAGE_PROVIDER=diffusers` and
`AVATAR_DIFFUSERS_MODEL=<local diffusers folder>`; see `DiffusersImageGenerator.from_env` for the rest.
Weights are only ever read from local folders (`local_files_only=True` in `DiffusionGenerator`).

- `neutral_image`: the classical aligned crop (the classical neutral portrait) is the img2img init, at
  the preset's low portrait strength; the result is composited back onto the neutral backdrop with the
  classical person mask, so framing and backdrop stay what the later stages expect.
- `character_sheet`: six variants (front, three-quarter left/right, profile, smiling, neutral
  lighting), each an img2img of the matching classical variant (the classical warp supplies the pose),
  all with ONE seed so they share their noise, in one batched call per strength. The sheet keeps the
  layout of `avatar_assets.media.sheet`; the record also lists the storyboard's pose names
  (turn_left, turn_right, smile) as aliases of the generated poses so the pose route keeps working.
- `backgrounds`: text2img of the storyboard prompts plus the preset's background style, at a working
  size that fits the model, resized to the master size.

Lifecycle: pipelines live in a process-wide cache keyed by (paths, device, dtype) and are loaded on
first use, so a run process (in-process executor: every step of the run) or an `avatarops process`
pass over many avatars loads the model once, and a run that hits the content cache never loads it.

Failures: a missing or broken model folder is not retried; a failed generation is retried (batch
size 1 from the second attempt, so an out-of-memory batch can still pass). Then either the asset fails
with a message that names the folder, or, with `AVATAR_IMAGE_FALLBACK=classical`, the classical
result is used and the record says so (`ProviderInfo.fallback_from="diffusers"`, the error and the
attempts in `settings`). A fallback result is never reused from the content cache (`reuse_or_generate`).

Importing this module imports neither torch nor diffusers (only `DiffusionGenerator` methods do).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np

from avatar_assets.contracts import ProviderInfo, Record
from avatar_assets.media.diffusion import (
    DiffusionGenerator,
    GenerationError,
    GenerationSettings,
    ModelUnavailable,
)
from avatar_assets.styles import (
    FRONTAL_VARIANTS,
    SHEET_VARIANTS,
    StylePreset,
    resolve_preset,
)
from resources.providers import ImageGenerator, PortraitJob, SheetJob

PROVIDER = "diffusers"
FALLBACKS = ("classical",)
_MAX_CACHED_MODELS = 2
_BACKDROP_KEY_DISTANCE = 24  # same threshold the pose route uses to key a variant off its backdrop


# --------------------------------------------------------------------------- process-wide model cache

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


# --------------------------------------------------------------------------- helpers


class _ProviderDown(Exception):
    def __init__(self, message: str, *, attempts: int, transient: bool) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.transient = transient


def _img2img_steps(steps: int, strength: float) -> int:
    """Enough steps that img2img runs at least one denoising step (steps * strength >= 1)."""
    steps = max(steps, math.ceil(1.0 / strength))
    while int(steps * strength) < 1:
        steps += 1
    return steps


def _multiple_of_8(value: float) -> int:
    return max(8, int(value / 8.0 + 0.5) * 8)  # half up (round() would go to even: 36 -> 32)


def _working_size(size: tuple[int, int], long_side: int) -> tuple[int, int]:
    """The output aspect ratio at `long_side`, both sides multiples of 8 (what the UNet accepts)."""
    width, height = size
    scale = long_side / max(width, height)
    return _multiple_of_8(width * scale), _multiple_of_8(height * scale)


def _resize(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    if (rgb.shape[1], rgb.shape[0]) == size:
        return rgb
    shrinking = size[0] < rgb.shape[1]
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def _onto_backdrop(rgb: np.ndarray, mask: np.ndarray, backdrop: tuple[int, int, int]) -> np.ndarray:
    """Composite the generated person over the flat backdrop with a feathered person mask."""
    import cv2

    alpha = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), sigmaX=max(1.0, mask.shape[0] / 512))[:, :, None]
    plate = np.asarray(backdrop, dtype=np.float32)
    return np.clip(rgb.astype(np.float32) * alpha + plate * (1.0 - alpha) + 0.5, 0, 255).astype(np.uint8)


def _keyed_mask(rgb: np.ndarray, backdrop: tuple[int, int, int]) -> np.ndarray:
    """Person mask of a classical variant: everything that is not its flat backdrop."""
    import cv2

    distance = np.abs(rgb.astype(np.int16) - np.asarray(backdrop, dtype=np.int16)).sum(axis=2)
    mask = np.where(distance > _BACKDROP_KEY_DISTANCE, 255, 0).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    return cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((9, 9), np.uint8))


def _nearest_face(rgb: np.ndarray, expected, min_size: int):
    from avatar_assets.media.faces import detect_faces

    ex, ey = expected.centre
    close = [f for f in detect_faces(rgb, min_size=min_size) if math.hypot(f.centre[0] - ex, f.centre[1] - ey) < 0.5 * expected.w]
    return min(close, key=lambda f: math.hypot(f.centre[0] - ex, f.centre[1] - ey), default=None)


def _torch_version() -> str:
    try:
        return package_version("torch")
    except PackageNotFoundError:  # pragma: no cover - torch is a dependency
        return "unknown"


def _drop_fallback_result(store, asset_name: str, key: str, log) -> None:
    """A fallback stands in while the configured provider is down; reusing it would keep serving the
    stand-in after the model is back. Recomputing a fallback is cheap (classical) and, being
    deterministic, gives the same record (no spurious staleness)."""
    from resources.layout import cache_key
    from resources.records import parse_record

    entry = cache_key(asset_name, key)
    text = store.read_text(entry)
    if text is not None:
        provider = getattr(parse_record(text), "provider", None)
        if provider is not None and provider.fallback_from:
            log.info(
                f"cached {asset_name} was made by the fallback provider {provider.provider!r}: "
                f"trying {provider.fallback_from!r} again"
            )
            store.delete_key(entry)


def reuse_or_generate(store, asset_name: str, key: str, compute: Callable[[], Record], log) -> tuple[Record, bool]:
    """`reuse_or_compute`, except that a cached result made by a fallback provider is not reused."""
    from avatar_assets.pipeline.caching import reuse_or_compute

    _drop_fallback_result(store, asset_name, key, log)
    return reuse_or_compute(store, asset_name, key, compute, log)


def reuse_or_generate_many(
    store, asset_name: str, keys: Mapping[str, str], generate: Callable[[list[str]], dict[str, Record]], log
) -> dict[str, Record]:
    """`reuse_or_generate` for many partitions ({partition: content key}): the misses are generated in
    ONE call, so a generative provider batches them. `generate` may leave out partitions it could not
    make; the caller reports those."""
    from avatar_assets.pipeline.caching import cached, remember

    records: dict[str, Record] = {}
    for partition, key in keys.items():
        _drop_fallback_result(store, asset_name, key, log)
        hit = cached(store, asset_name, key, log)
        if hit is not None:
            records[partition] = hit
    missing = [partition for partition in keys if partition not in records]
    if missing:
        for partition, record in generate(missing).items():
            remember(store, asset_name, keys[partition], record)
            records[partition] = record
    return records


def _env_int(environ: Mapping[str, str], name: str, default: int | None) -> int | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as error:
        raise ValueError(f"{name}={raw!r}: expected an integer") from error


def _env_float(environ: Mapping[str, str], name: str, default: float | None) -> float | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError as error:
        raise ValueError(f"{name}={raw!r}: expected a number") from error


def _env_path(environ: Mapping[str, str], name: str) -> str | None:
    raw = environ.get(name, "").strip()
    return str(Path(raw).expanduser().absolute()) if raw else None


# --------------------------------------------------------------------------- the provider


@dataclass(frozen=True)
class _SheetPlan:
    """One avatar's sheet before the model runs: classical variants as inits, masks, style and seed."""

    classical: Any
    classical_info: ProviderInfo
    style: StylePreset
    found: bool
    seed: int
    inits: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]


class DiffusersImageGenerator(ImageGenerator):
    """Image generation with a local diffusers model (SD 1.5, SDXL, SD-Turbo folders).

    `steps` / `guidance_scale` override the preset (SD-Turbo wants 1-4 steps and guidance 0);
    `working_side` is the img2img resolution of portraits and variants (512 for SD 1.5, 1024 for SDXL),
    `background_long_side` the long side backgrounds are generated at before resizing to the master.
    """

    provider: str = PROVIDER
    model_path: str | None = None
    img2img_model_path: str | None = None
    text2img_model_path: str | None = None
    device: str | None = None
    dtype: str | None = None
    fallback: str | None = None
    working_side: int = 512
    background_long_side: int = 768
    batch_size: int = 8
    retries: int = 1
    retry_backoff_s: float = 2.0
    steps: int | None = None
    guidance_scale: float | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DiffusersImageGenerator:
        env = os.environ if environ is None else environ
        fallback = env.get("AVATAR_IMAGE_FALLBACK", "").strip() or None
        if fallback is not None and fallback not in FALLBACKS:
            raise ValueError(f"AVATAR_IMAGE_FALLBACK={fallback!r}: expected one of {list(FALLBACKS)} or nothing")
        resource = cls(
            model_path=_env_path(env, "AVATAR_DIFFUSERS_MODEL"),
            img2img_model_path=_env_path(env, "AVATAR_DIFFUSERS_IMG2IMG_MODEL"),
            text2img_model_path=_env_path(env, "AVATAR_DIFFUSERS_TEXT2IMG_MODEL"),
            device=env.get("AVATAR_DIFFUSERS_DEVICE", "").strip() or None,
            dtype=env.get("AVATAR_DIFFUSERS_DTYPE", "").strip() or None,
            fallback=fallback,
            working_side=_env_int(env, "AVATAR_DIFFUSERS_SIZE", 512),
            background_long_side=_env_int(env, "AVATAR_DIFFUSERS_BACKGROUND_SIZE", 768),
            batch_size=_env_int(env, "AVATAR_DIFFUSERS_BATCH", 8),
            retries=_env_int(env, "AVATAR_DIFFUSERS_RETRIES", 1),
            retry_backoff_s=_env_float(env, "AVATAR_DIFFUSERS_RETRY_BACKOFF_S", 2.0),
            steps=_env_int(env, "AVATAR_DIFFUSERS_STEPS", None),
            guidance_scale=_env_float(env, "AVATAR_DIFFUSERS_GUIDANCE", None),
        )
        resource.check_config()
        return resource

    def check_config(self) -> None:
        """Configuration errors surface when the code location loads, not in the middle of a run."""
        if self.fallback is not None and self.fallback not in FALLBACKS:
            raise ValueError(f"fallback {self.fallback!r}: expected one of {list(FALLBACKS)} or None")
        if self.working_side < 8 or self.working_side % 8:
            raise ValueError(f"AVATAR_DIFFUSERS_SIZE must be a positive multiple of 8, got {self.working_side}")
        if self.background_long_side < 8:
            raise ValueError(f"AVATAR_DIFFUSERS_BACKGROUND_SIZE must be >= 8, got {self.background_long_side}")
        if self.batch_size < 1 or self.retries < 0:
            raise ValueError(f"batch size must be >= 1 and retries >= 0, got {self.batch_size} and {self.retries}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"AVATAR_DIFFUSERS_STEPS must be >= 1, got {self.steps}")
        if self.dtype is not None:
            DiffusionGenerator(self.model_path or ".", dtype=self.dtype)  # raises ValueError for an unknown dtype

    # ----------------------------------------------------------------- model

    def generator(self) -> DiffusionGenerator:
        if not self.model_path:
            raise ModelUnavailable(
                "AVATAR_DIFFUSERS_MODEL is not set: point it at a local diffusers model folder "
                "(the folder that holds model_index.json)"
            )
        return shared_generator(
            self.model_path,
            img2img_path=self.img2img_model_path,
            text2img_path=self.text2img_model_path,
            device=self.device,
            dtype=self.dtype,
        )

    def weights_id(self) -> str:
        """Folder name and model_index.json hash, without loading anything; 'unavailable: ...' if missing."""
        if not self.model_path:
            return "unavailable: AVATAR_DIFFUSERS_MODEL is not set"
        try:
            return DiffusionGenerator(
                self.model_path, img2img_path=self.img2img_model_path, text2img_path=self.text2img_model_path
            ).model_id
        except ModelUnavailable as error:
            return f"unavailable: {error}"

    def cache_parts(self, preset: str | None = None, seed: int | None = None) -> dict:
        style, _ = resolve_preset(preset)
        operational = {"retries", "retry_backoff_s", "fallback"}  # decide whether, not what, is generated
        config = {k: v for k, v in self.model_dump().items() if k not in operational}
        return {**config, "model_id": self.weights_id(), "preset": style.as_dict(), "seed_override": seed}

    # ----------------------------------------------------------------- settings

    def _steps(self, style: StylePreset) -> int:
        return self.steps if self.steps is not None else style.steps

    def _guidance(self, style: StylePreset) -> float:
        return self.guidance_scale if self.guidance_scale is not None else style.guidance_scale

    def _img2img_settings(self, style: StylePreset, prompt: str, strength: float, seed: int) -> GenerationSettings:
        return GenerationSettings(
            prompt=prompt,
            negative_prompt=style.negative_prompt,
            steps=_img2img_steps(self._steps(style), strength),
            guidance_scale=self._guidance(style),
            strength=strength,
            scheduler=style.scheduler,
            seed=seed,
            width=self.working_side,
            height=self.working_side,
        )

    def _common_settings(self, generator: DiffusionGenerator, style: StylePreset, requested: str | None, found: bool) -> dict[str, Any]:
        common: dict[str, Any] = {
            "preset": style.name,
            "device": generator.device,
            "dtype": generator.dtype,
            "torch": _torch_version(),
        }
        if not found and requested:
            common["preset_requested"] = requested
        return common

    # ----------------------------------------------------------------- failure handling

    def _attempt(self, capability: str, call: Callable[[DiffusionGenerator, int], Any]):
        """(generator, result) of `call(generator, batch_size)`, with retries; _ProviderDown when out of tries."""
        log = dg.get_dagster_logger()
        try:
            generator = self.generator()
        except ModelUnavailable as error:
            raise _ProviderDown(f"{capability}: diffusers model unavailable: {error}", attempts=0, transient=False) from error
        attempts = self.retries + 1
        last: GenerationError | None = None
        for attempt in range(1, attempts + 1):
            try:
                return generator, call(generator, self.batch_size if attempt == 1 else 1)
            except GenerationError as error:
                last = error
                log.warning(f"{capability}: diffusers attempt {attempt}/{attempts} failed: {error}")
                if attempt < attempts and self.retry_backoff_s > 0:
                    time.sleep(self.retry_backoff_s * 2 ** (attempt - 1))
        raise _ProviderDown(
            f"{capability}: diffusers generation failed after {attempts} attempt(s): {last}",
            attempts=attempts,
            transient=True,
        ) from last

    def _fall_back(self, down: _ProviderDown, result: Any, info: ProviderInfo, style: StylePreset):
        if self.fallback is None:
            raise dg.Failure(
                description=f"{down}. Fix the model folder, or set AVATAR_IMAGE_FALLBACK=classical to use the "
                "classical provider when the model is unavailable.",
                metadata={"model_path": self.model_path or "", "attempts": down.attempts},
                allow_retries=down.transient,
            ) from down
        dg.get_dagster_logger().warning(f"{down}: falling back to the {self.fallback} provider")
        return result, info.model_copy(
            update={
                "fallback_from": PROVIDER,
                "settings": {**info.settings, "preset": style.name, "fallback_error": str(down), "attempts": down.attempts},
            }
        )

    # ----------------------------------------------------------------- capabilities

    def neutral_portrait(
        self, rgb: np.ndarray, face, *, size: int = 1024, preset: str | None = None, seed: int | None = None
    ):
        return self.neutral_portraits([PortraitJob(rgb, face, preset, seed)], size=size)[0]

    def neutral_portraits(self, jobs: list[PortraitJob], *, size: int = 1024):
        """img2img of each classical aligned crop; avatars of one preset share the model's batches."""
        if not jobs:
            return []
        classical = [ImageGenerator.neutral_portrait(self, job.rgb, job.face, size=size) for job in jobs]
        plans = []
        for job in jobs:
            style, found = resolve_preset(job.preset)
            seed = style.seed + (self.seed if job.seed is None else job.seed)
            plans.append((style, found, seed, self._img2img_settings(style, style.portrait(), style.portrait_strength, seed)))
        by_preset: dict[str, list[int]] = {}
        for index, (style, *_rest) in enumerate(plans):
            by_preset.setdefault(style.name, []).append(index)

        def generate(gen: DiffusionGenerator, batch: int) -> list[np.ndarray]:
            out: list[np.ndarray] = [None] * len(jobs)  # type: ignore[list-item]
            for indices in by_preset.values():
                images = gen.img2img(
                    [classical[i][0].rgb for i in indices],
                    plans[indices[0]][3],
                    seeds=[plans[i][2] for i in indices],
                    batch_size=batch,
                )
                for i, image in zip(indices, images, strict=True):
                    out[i] = image
            return out

        try:
            generator, generated = self._attempt("neutral_image", generate)
        except _ProviderDown as down:
            return [self._fall_back(down, c, info, plan[0]) for (c, info), plan in zip(classical, plans, strict=True)]
        results = []
        for job, (base, _), (style, found, seed, settings), image in zip(jobs, classical, plans, generated, strict=True):
            composite = _onto_backdrop(image, base.mask, base.backdrop_rgb)
            redetected = _nearest_face(composite, base.face, min_size=size // 8)
            portrait = replace(base, rgb=composite, face=redetected or base.face, face_redetected=redetected is not None)
            info = ProviderInfo(
                capability="neutral_image",
                provider=PROVIDER,
                model_id=generator.model_id,
                version=generator.version,
                seed=seed,
                settings={
                    **self._common_settings(generator, style, job.preset, found),
                    "mode": "img2img",
                    "init": "classical aligned crop",
                    "prompt": settings.prompt,
                    "negative_prompt": settings.negative_prompt,
                    "steps": settings.steps,
                    "guidance_scale": settings.guidance_scale,
                    "strength": settings.strength,
                    "scheduler": settings.scheduler,
                    "working_size": [settings.width, settings.height],
                    "size": size,
                    "face_redetected": redetected is not None,
                },
            )
            results.append((portrait, info))
        return results

    def character_sheet(self, portrait, *, seed: int, preset: str | None = None):
        return self.character_sheets([SheetJob(portrait, seed, preset)])[0]

    def character_sheets(self, jobs: list[SheetJob]):
        """Six img2img variants per avatar with one fixed seed each; variants of every avatar that share
        a preset and a strength go through the model together, each with its own prompt."""
        if not jobs:
            return []
        plans = [self._sheet_plan(job) for job in jobs]
        groups: dict[tuple[str, float], list[tuple[int, Any]]] = {}
        for index, plan in enumerate(plans):
            for variant in SHEET_VARIANTS:
                strength = plan.style.variant_strength_for(variant)
                groups.setdefault((plan.style.name, strength), []).append((index, variant))

        def generate(gen: DiffusionGenerator, batch: int) -> list[dict[str, np.ndarray]]:
            out: list[dict[str, np.ndarray]] = [{} for _ in jobs]
            for (_, strength), members in groups.items():
                first = plans[members[0][0]]
                images = gen.img2img(
                    [plans[i].inits[v.init] for i, v in members],
                    self._img2img_settings(first.style, "", strength, first.seed),
                    seeds=[plans[i].seed for i, _ in members],
                    batch_size=batch,
                    prompts=[plans[i].style.variant_prompt(v) for i, v in members],
                )
                for (i, variant), image in zip(members, images, strict=True):
                    out[i][variant.name] = image
            return out

        try:
            generator, generated = self._attempt("character_sheet", generate)
        except _ProviderDown as down:
            return [self._fall_back(down, p.classical, p.classical_info, p.style) for p in plans]
        return [
            self._assembled_sheet(job, plan, images, generator)
            for job, plan, images in zip(jobs, plans, generated, strict=True)
        ]

    def _sheet_plan(self, job: SheetJob) -> _SheetPlan:
        import cv2

        from avatar_assets.media.sheet import VARIANT_SIZE

        classical, classical_info = ImageGenerator.character_sheet(self, job.portrait, seed=job.seed)
        style, found = resolve_preset(job.preset)
        side = (VARIANT_SIZE, VARIANT_SIZE)
        return _SheetPlan(
            classical=classical,
            classical_info=classical_info,
            style=style,
            found=found,
            seed=style.seed + job.seed,
            inits={"base": cv2.resize(job.portrait.rgb, side, interpolation=cv2.INTER_AREA), **classical.variants},
            masks={"base": cv2.resize(job.portrait.mask, side, interpolation=cv2.INTER_AREA)},
        )

    def _assembled_sheet(self, job: SheetJob, plan: _SheetPlan, generated: dict[str, np.ndarray], generator):
        from avatar_assets.media.faces import detect_faces
        from avatar_assets.media.sheet import VARIANT_SIZE, CharacterSheet, _layout

        backdrop = job.portrait.backdrop_rgb
        variants: dict[str, np.ndarray] = {}
        per_variant: dict[str, Any] = {}
        for variant in SHEET_VARIANTS:
            mask = plan.masks.get(variant.init)
            if mask is None:
                mask = _keyed_mask(plan.inits[variant.init], backdrop)
            image = _onto_backdrop(generated[variant.name], mask, backdrop)
            variants[variant.name] = image
            found_faces = detect_faces(image, min_size=VARIANT_SIZE // 8)
            box = found_faces[0] if found_faces else None
            per_variant[variant.name] = {
                "face_box": None if box is None else {"x": box.x, "y": box.y, "w": box.w, "h": box.h},
                "face_count": len(found_faces),
                "init": variant.init,
            }
        aliases = {v.alias: v.name for v in SHEET_VARIANTS if v.alias}
        geometry = {
            **plan.classical.geometry,
            "variant_names": [v.name for v in SHEET_VARIANTS],
            "variants": per_variant,
            "aliases": aliases,
            "generated": [v.name for v in SHEET_VARIANTS],
            "frontal": list(FRONTAL_VARIANTS),
            "seed": plan.seed,
        }
        sheet = CharacterSheet(
            sheet_rgb=_layout(job.portrait.rgb, variants, plan.classical.palette),
            variants={**variants, **{alias: variants[name] for alias, name in aliases.items()}},
            palette=plan.classical.palette,
            geometry=geometry,
        )
        style = plan.style
        reference = self._img2img_settings(style, "", style.variant_strength_for(SHEET_VARIANTS[0]), plan.seed)
        info = ProviderInfo(
            capability="character_sheet",
            provider=PROVIDER,
            model_id=generator.model_id,
            version=generator.version,
            seed=plan.seed,
            settings={
                **self._common_settings(generator, style, job.preset, plan.found),
                "mode": "img2img",
                "init": "classical character-sheet variants",
                "negative_prompt": reference.negative_prompt,
                "guidance_scale": reference.guidance_scale,
                "scheduler": reference.scheduler,
                "working_size": [reference.width, reference.height],
                "variants": {
                    v.name: {
                        "prompt": style.variant_prompt(v),
                        "strength": style.variant_strength_for(v),
                        "steps": _img2img_steps(self._steps(style), style.variant_strength_for(v)),
                        "init": v.init,
                    }
                    for v in SHEET_VARIANTS
                },
                "aliases": aliases,
            },
        )
        return sheet, info

    def backgrounds(self, prompts: list[str], size: tuple[int, int], seeds: list[int], *, preset: str | None = None):
        style, found = resolve_preset(preset)
        working = _working_size(size, self.background_long_side)
        full_prompts = [style.background(prompt) for prompt in prompts]
        settings = GenerationSettings(
            negative_prompt=style.background_negative_prompt,
            steps=self._steps(style),
            guidance_scale=self._guidance(style),
            scheduler=style.scheduler,
            seed=seeds[0] if seeds else 0,
            width=working[0],
            height=working[1],
        )
        try:
            generator, generated = self._attempt(
                "backgrounds",
                lambda gen, batch: gen.text2img(full_prompts, settings, seeds=list(seeds), batch_size=batch),
            )
        except _ProviderDown as down:
            images, info = super().backgrounds(prompts, size, seeds)
            return self._fall_back(down, images, info, style)
        info = ProviderInfo(
            capability="backgrounds",
            provider=PROVIDER,
            model_id=generator.model_id,
            version=generator.version,
            seed=seeds[0] if seeds else None,
            settings={
                **self._common_settings(generator, style, preset, found),
                "mode": "text2img",
                "prompts": full_prompts,
                "negative_prompt": settings.negative_prompt,
                "steps": settings.steps,
                "guidance_scale": settings.guidance_scale,
                "scheduler": settings.scheduler,
                "seeds": list(seeds),
                "working_size": list(working),
                "size": list(size),
            },
        )
        return [_resize(image, tuple(size)) for image in generated], info
