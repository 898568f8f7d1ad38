"""The neural speech provider: `SpeechSynthesizer` with a Piper-format ONNX voice run by onnxruntime.

Selected by configuration (`resources.wiring.speech_synthesizer`): `AVATAR_TTS_PROVIDER=onnx` and
`AVATAR_TTS_VOICE=<local voice .onnx>` (its `.onnx.json` beside it); optional `AVATAR_TTS_SPEAKER` (the
speaker id of a multi-speaker voice, default 0). Nothing is downloaded.

Fallback is always on: a missing voice or config, a model without Piper's inputs, or a run that fails leave
espeak-ng's speech, and the record says so (`fallback_from="onnx"`, the reason in
`settings["fallback_error"]`); such a record is never reused from the content cache.
Importing this module imports no onnxruntime (only loading the voice does).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from importlib.metadata import version as package_version
from pathlib import Path

import dagster as dg

from avatar_assets.contracts import ProviderInfo, VoiceProfileRecord, VoiceSettings
from avatar_assets.settings import local_file_setting, whole_number
from resources.providers import SpeechSynthesizer

PROVIDER = "onnx"
NATURAL_RATE_WPM = VoiceSettings.model_fields["rate_wpm"].default
"""The request's default rate is the voice's own pace (length_scale from its config); other rates scale it."""

_voices: dict[tuple[str, str], object] = {}
_voices_lock = threading.Lock()


def _loaded(path: str, sha256: str):
    """The process-wide loaded voice for this file (one run loads it once, for every cell)."""
    from avatar_assets.media.piper import PiperVoice

    key = (path, sha256)
    with _voices_lock:
        voice = _voices.get(key)
        if voice is None:
            voice = PiperVoice.load(Path(path), sha256)
            dg.get_dagster_logger().info(f"loaded voice {voice.model_id} in {voice.load_seconds:.2f} s")
            _voices.clear()  # one voice at a time
            _voices[key] = voice
        return voice


class OnnxSpeechSynthesizer(SpeechSynthesizer):
    """Speech from a Piper-format ONNX voice read from a local path (docs in README, "Neural speech")."""

    voice_path: str | None = None
    speaker: int = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OnnxSpeechSynthesizer:
        env = os.environ if environ is None else environ
        return cls(voice_path=local_file_setting(env, "AVATAR_TTS_VOICE"),
                   speaker=whole_number("AVATAR_TTS_SPEAKER", 0, environ=env))

    def _voice_file(self) -> tuple[str, str]:
        """(model id, sha256) of the configured file; VoiceUnavailable naming the problem otherwise."""
        from avatar_assets.media.piper import VoiceUnavailable
        from avatar_assets.media.model_files import file_sha256

        if not self.voice_path:
            raise VoiceUnavailable("AVATAR_TTS_VOICE is not set: point it at a local Piper voice (.onnx)")
        path = Path(self.voice_path)
        if not path.is_file():
            raise VoiceUnavailable(f"{path} does not exist or is not a file")
        sha = file_sha256(path)
        return f"{path.name}@{sha[:12]}", sha

    def cache_parts(self) -> dict:
        from avatar_assets.media.piper import VoiceUnavailable
        from avatar_assets.media.model_files import file_sha256

        try:
            model_id = self._voice_file()[0]
        except VoiceUnavailable as error:
            model_id = f"unavailable: {error}"
        config = Path(f"{self.voice_path}.json")  # its phoneme map and scales decide the speech too
        return {"provider": PROVIDER, "model_id": model_id, "speaker": self.speaker,
                "config": file_sha256(config) if config.is_file() else "missing"}

    def synthesize(self, ssml: str, *, voice: str, pitch: int, rate_wpm: int, profile: VoiceProfileRecord | None = None):
        """The voice's speech; espeak-ng's (recorded as a fallback, with the reason) when it cannot speak."""
        from avatar_assets.media import piper

        log = dg.get_dagster_logger()
        try:
            model = _loaded(self.voice_path or "", self._voice_file()[1])
            length_scale = model.config.inference.length_scale * NATURAL_RATE_WPM / rate_wpm
            synthesis, estimated = piper.synthesize(model, ssml, length_scale=length_scale, speaker=self.speaker)
        except (piper.VoiceUnavailable, piper.VoiceFailed) as error:
            log.warning(f"speech falls back from onnx to espeak-ng: {error}")
            synthesis, base = super().synthesize(ssml, voice=voice, pitch=pitch, rate_wpm=rate_wpm, profile=profile)
            return synthesis, base.model_copy(
                update={"fallback_from": PROVIDER, "settings": {**base.settings, "fallback_error": str(error)}}
            )
        return synthesis, ProviderInfo(
            capability="speech", provider=PROVIDER, model_id=model.model_id, version=package_version("onnxruntime"),
            settings={
                "model_path": str(model.path), "sha256": model.sha256, "speaker": self.speaker,
                "espeak_voice": model.config.espeak.voice, "voice_sample_rate": model.config.audio.sample_rate,
                "length_scale": round(length_scale, 4), "rate_wpm": rate_wpm,
                "onnx_providers": model.session.get_providers(),
                "word_timings": "estimated" if estimated else "model-durations",
            },
        )
