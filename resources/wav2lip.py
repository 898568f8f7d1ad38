"""The Wav2Lip lip-sync provider: `LipSyncer` with a real model regenerating the lower face.

Selected by configuration (`resources.wiring.lip_syncer`): `AVATAR_LIPSYNC_PROVIDER=wav2lip` and
`AVATAR_LIPSYNC_MODEL=<local checkpoint .pth>`; optional `AVATAR_LIPSYNC_DEVICE` (default cuda when
present) and `AVATAR_LIPSYNC_BATCH` (frames per forward pass, default 16). The CPU default still renders
every frame (mesh, blinks, idle motion); the model then regenerates each face scene's lower face from the
mel window of that frame, and the result is pasted back through a feathered mask.

Fallback is always on: a missing, unreadable or foreign checkpoint, scenes without landmarks, or a forward
pass that fails at the configured batch and again at batch 1 leave the CPU default's frames, and the record
says so (`fallback_from="wav2lip"`, the reason in `settings["fallback_error"]`); such a record is never
reused from the content cache.
Importing this module imports no torch (only loading the model does).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from importlib.metadata import version as package_version
from pathlib import Path

import dagster as dg
import numpy as np

from avatar_assets.contracts import ProviderInfo
from avatar_assets.settings import local_file_setting, whole_number
from resources.providers import LipSyncer

PROVIDER = "wav2lip"

_models: dict[tuple[str, str, str | None], object] = {}
_models_lock = threading.Lock()


def _loaded(path: str, sha256: str, device: str | None):
    """The process-wide loaded generator for this file and device (one run loads it once, for every cell)."""
    from avatar_assets.media.wav2lip import Wav2LipModel

    key = (path, sha256, device)
    with _models_lock:
        model = _models.get(key)
        if model is None:
            model = Wav2LipModel(Path(path), device=device).load()
            dg.get_dagster_logger().info(f"loaded wav2lip {model.model_id} on {model.device} in {model.load_seconds:.2f} s")
            _models.clear()  # one checkpoint at a time: the GPU worker keeps what it uses now
            _models[key] = model
        return model


class Wav2LipSyncer(LipSyncer):
    """Lip sync with a Wav2Lip-architecture checkpoint read from a local path (docs in README)."""

    model_path: str | None = None
    device: str | None = None
    batch_size: int = 16

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Wav2LipSyncer:
        env = os.environ if environ is None else environ
        return cls(
            model_path=local_file_setting(env, "AVATAR_LIPSYNC_MODEL"),
            device=env.get("AVATAR_LIPSYNC_DEVICE", "").strip() or None,
            batch_size=whole_number("AVATAR_LIPSYNC_BATCH", 16, minimum=1, environ=env),
        )

    def _checkpoint(self) -> tuple[str, str]:
        """(model id, sha256) of the configured file; ModelUnavailable naming the problem otherwise."""
        from avatar_assets.media.wav2lip import ModelUnavailable, checkpoint_id

        if not self.model_path:
            raise ModelUnavailable("AVATAR_LIPSYNC_MODEL is not set: point it at a local Wav2Lip checkpoint (.pth)")
        return checkpoint_id(self.model_path)

    def cache_parts(self) -> dict:
        from avatar_assets.media.wav2lip import ModelUnavailable

        try:
            model_id = self._checkpoint()[0]
        except ModelUnavailable as error:
            model_id = f"unavailable: {error}"
        return {"provider": PROVIDER, "model_id": model_id}

    def fallback_info(self, base: ProviderInfo, reason: str) -> ProviderInfo:
        return base.model_copy(update={"fallback_from": PROVIDER, "settings": {**base.settings, "fallback_error": reason}})

    def batch_attempts(self) -> list[int | None]:
        """The configured batch, then 1: a forward pass out of memory at 16 frames may pass one at a time."""
        return [self.batch_size, 1] if self.batch_size > 1 else [1]

    def resync(self, frames, tracks, samples: np.ndarray, sample_rate: int, fps: float, total: int,
               base: ProviderInfo, batch_size: int | None = None) -> tuple[Iterator[np.ndarray], ProviderInfo]:
        from avatar_assets.media.wav2lip import (
            FACE_SIDE,
            ModelUnavailable,
            face_targets,
            mel_windows,
            melspectrogram,
            sync_frames,
        )

        log = dg.get_dagster_logger()
        faces = [t for t in tracks if t.mouth_box is not None]
        if any(t.landmarks is None for t in faces):
            reason = "the scenes carry no face landmarks to crop the face from"
            log.warning(f"lip sync falls back from wav2lip: {reason}")
            return frames, self.fallback_info(base, reason)
        try:
            model = _loaded(self.model_path or "", self._checkpoint()[1], self.device)
        except ModelUnavailable as error:
            log.warning(f"lip sync falls back from wav2lip: {error}")
            return frames, self.fallback_info(base, str(error))
        batch = batch_size or self.batch_size
        targets = face_targets(tracks, total, fps)
        windows = mel_windows(melspectrogram(samples, sample_rate), fps, total)
        info = ProviderInfo(
            capability="lip_sync", provider=PROVIDER, model_id=model.model_id, version=package_version("torch"),
            seed=base.seed,
            settings={
                "model_path": str(model.path), "sha256": model.sha256, "device": model.device,
                "batch_size": batch, "base": base.provider, "face_side": FACE_SIDE,
                "mel": "16 kHz, 80 bands, hop 200, window 800, 55-7600 Hz, 16 frames centred",
            },
        )
        return sync_frames(model, frames, targets, windows, batch_size=batch), info

