"""The AVATAR_DIFFUSERS_* environment variables, read into the provider's fields (docs/diffusers.md)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from avatar_assets.settings import parsed_setting

FALLBACKS = ("classical",)


def fields_from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """`DiffusersImageGenerator` fields from the environment; a malformed value names its variable."""
    fallback = env.get("AVATAR_IMAGE_FALLBACK", "").strip() or None
    if fallback is not None and fallback not in FALLBACKS:
        raise ValueError(f"AVATAR_IMAGE_FALLBACK={fallback!r}: expected one of {list(FALLBACKS)} or nothing")
    return dict(
        model_path=_env_path(env, "AVATAR_DIFFUSERS_MODEL"),
        img2img_model_path=_env_path(env, "AVATAR_DIFFUSERS_IMG2IMG_MODEL"),
        text2img_model_path=_env_path(env, "AVATAR_DIFFUSERS_TEXT2IMG_MODEL"),
        device=env.get("AVATAR_DIFFUSERS_DEVICE", "").strip() or None,
        dtype=env.get("AVATAR_DIFFUSERS_DTYPE", "").strip() or None,
        fallback=fallback,
        working_side=parsed_setting(env, "AVATAR_DIFFUSERS_SIZE", 512, int, "an integer"),
        background_long_side=parsed_setting(env, "AVATAR_DIFFUSERS_BACKGROUND_SIZE", 768, int, "an integer"),
        batch_size=parsed_setting(env, "AVATAR_DIFFUSERS_BATCH", 8, int, "an integer"),
        retries=parsed_setting(env, "AVATAR_DIFFUSERS_RETRIES", 1, int, "an integer"),
        retry_backoff_s=parsed_setting(env, "AVATAR_DIFFUSERS_RETRY_BACKOFF_S", 2.0, float, "a number"),
        steps=parsed_setting(env, "AVATAR_DIFFUSERS_STEPS", None, int, "an integer"),
        guidance_scale=parsed_setting(env, "AVATAR_DIFFUSERS_GUIDANCE", None, float, "a number"),
    )


def _env_path(environ: Mapping[str, str], name: str) -> str | None:
    raw = environ.get(name, "").strip()
    return str(Path(raw).expanduser().absolute()) if raw else None
