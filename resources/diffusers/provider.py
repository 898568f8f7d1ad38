"""`DiffusersImageGenerator`: the classical results are the model's img2img inits, so framing and
backdrop stay what the later stages expect.

- `neutral_image`: the classical aligned crop (the classical neutral portrait) is the img2img init, at
  the preset's low portrait strength; the result is composited back onto the neutral backdrop with the
  classical person mask.
- `character_sheet`: six variants (front, three-quarter left/right, profile, smiling, neutral
  lighting), each an img2img of the matching classical variant (the classical warp supplies the pose),
  all with ONE seed so they share their noise, in one batched call per strength. The sheet keeps the
  layout of `avatar_assets.media.sheet`; the record also lists the storyboard's pose names
  (turn_left, turn_right, smile) as aliases of the generated poses so the pose route keeps working.
- `backgrounds`: text2img of the storyboard prompts plus the preset's background style, at a working
  size that fits the model, resized to the master size.

Failures: a missing or broken model folder is not retried; a failed generation is retried (batch
size 1 from the second attempt, so an out-of-memory batch can still pass). Then either the asset fails
with a message that names the folder, or, with `AVATAR_IMAGE_FALLBACK=classical`, the classical
result is used and the record says so (`ProviderInfo.fallback_from="diffusers"`, the error and the
attempts in `settings`). A fallback result is never reused from the content cache
(`avatar_assets.pipeline.caching.reuse_or_generate`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any

import dagster as dg
import numpy as np

from avatar_assets.contracts import ProviderInfo
from avatar_assets.media.diffusion import (
    DiffusionGenerator,
    GenerationError,
    GenerationSettings,
    ModelUnavailable,
    img2img_steps,
    model_size,
)
from avatar_assets.styles import (
    FRONTAL_VARIANTS,
    SHEET_VARIANTS,
    StylePreset,
    resolve_preset,
)
from resources.diffusers.config import FALLBACKS, fields_from_env
from resources.diffusers.models import shared_generator
from resources.providers import ImageGenerator, PortraitJob, SheetJob

PROVIDER = "diffusers"


class _ProviderDown(Exception):
    def __init__(self, message: str, *, attempts: int, transient: bool) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.transient = transient


def _torch_version() -> str:
    try:
        return package_version("torch")
    except PackageNotFoundError:  # pragma: no cover - torch is a dependency
        return "unknown"


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
        resource = cls(**fields_from_env(os.environ if environ is None else environ))
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
            steps=img2img_steps(self._steps(style), strength),
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
        from avatar_assets.media.cutout import onto_backdrop
        from avatar_assets.media.faces import detect_faces
        from avatar_assets.media.portrait import nearest_face

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
            composite = onto_backdrop(image, base.mask, base.backdrop_rgb)
            redetected = nearest_face(detect_faces(composite, min_size=size // 8), base.face)
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
        from avatar_assets.media.cutout import keyed_mask, onto_backdrop
        from avatar_assets.media.faces import judged_faces
        from avatar_assets.media.sheet import CharacterSheet, layout_sheet

        backdrop = job.portrait.backdrop_rgb
        variants: dict[str, np.ndarray] = {}
        per_variant: dict[str, Any] = {}
        for variant in SHEET_VARIANTS:
            mask = plan.masks.get(variant.init)
            if mask is None:
                mask = keyed_mask(plan.inits[variant.init], backdrop)
            image = onto_backdrop(generated[variant.name], mask, backdrop)
            variants[variant.name] = image
            found_faces = judged_faces(image)  # the identity gate reuses this detection
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
            sheet_rgb=layout_sheet(job.portrait.rgb, variants, plan.classical.palette),
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
                        "steps": img2img_steps(self._steps(style), style.variant_strength_for(v)),
                        "init": v.init,
                    }
                    for v in SHEET_VARIANTS
                },
                "aliases": aliases,
            },
        )
        return sheet, info

    def backgrounds(self, prompts: list[str], size: tuple[int, int], seeds: list[int], *, preset: str | None = None):
        from avatar_assets.media.compose import exact_resize

        style, found = resolve_preset(preset)
        working = model_size(size, self.background_long_side)
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
        return [exact_resize(image, tuple(size)) for image in generated], info
