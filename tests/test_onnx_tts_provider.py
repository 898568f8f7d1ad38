"""The ONNX (Piper-format) speech provider through the real assets on CPU, with tiny random-weight voices
the test exports itself (tests/media/tiny_piper.py).

One home: the sample avatar's identity is built once, then each test renders script..speech of its own cell
with AVATAR_TTS_* set the way a studio sets them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from avatar_assets.media.piper import PiperVoice, VoiceFailed
from avatar_assets.media.model_files import file_sha256
from avatar_assets.settings import ConfigurationError
from tests.conftest import avatar_home
from tests.media.tiny_piper import HOP, SAMPLE_RATE, save_tiny_piper
from tests.regen_helpers import submit_accepted
from tests.video_helpers import FPS, SHORT_SIDE, cell, video_home

AVATAR = "astro-v"
SCRIPT = "Hello there, welcome to our show. In the end, we all speak."
SLUGS = ["neural", "plain", "unset", "lost", "malformed", "raises", "broken"]
UP_TO_SPEECH = ["script", "storyboard", "speech"]
SIZE_ENV = {"AVATAR_MASTER_SHORT_SIDE": str(SHORT_SIDE), "AVATAR_FPS": str(FPS)}


def onnx_env(voice: Path | str | None) -> dict[str, str]:
    return {"AVATAR_TTS_PROVIDER": "onnx", **({"AVATAR_TTS_VOICE": str(voice)} if voice else {})}


def speech_with(root: Path, slug: str, **env: str):
    """Render `slug` up to speech with these settings: (result, speech record)."""
    with avatar_home(root, **SIZE_ENV, **env) as home:
        result = home.defs.resolve_job_def("render_video").execute_in_process(
            instance=home.instance, partition_key=cell(AVATAR, slug),
            asset_selection=[dg.AssetKey(name) for name in UP_TO_SPEECH], raise_on_error=False,
        )
        record = home.record("speech", cell(AVATAR, slug))
        captions = home.store.local_path(record.captions_srt).read_text() if record else None
    return result, record, captions


@pytest.fixture(scope="module")
def world(tmp_path_factory, sample_bundle):
    """(home root, voice with a durations output, voice without it)."""
    base = tmp_path_factory.mktemp("onnx_tts")
    (base / "timed").mkdir()
    (base / "plain").mkdir()
    timed = save_tiny_piper(base / "timed" / "voice.onnx")
    plain = save_tiny_piper(base / "plain" / "voice.onnx", durations=False)
    with video_home(base / "home", sample_bundle, (AVATAR,)) as home:
        for slug in SLUGS:  # "broken" says something else: the content cache must not answer it from "neural"
            submit_accepted(home, AVATAR, slug, SCRIPT if slug != "broken" else "Nobody has said this sentence yet.")
        home.instance.add_dynamic_partitions("outputs", SLUGS)
    return base / "home", timed, plain


# --------------------------------------------------------------------------- configuration


def test_provider_is_chosen_by_env_and_bad_values_say_what_is_wrong(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from resources.onnx_tts import OnnxSpeechSynthesizer
    from resources.providers import SpeechSynthesizer
    from resources.wiring import speech_synthesizer

    monkeypatch.delenv("AVATAR_TTS_PROVIDER", raising=False)
    assert type(speech_synthesizer()) is SpeechSynthesizer
    for name, value in {**onnx_env(tmp_path / "v.onnx"), "AVATAR_TTS_SPEAKER": "2"}.items():
        monkeypatch.setenv(name, value)
    chosen = speech_synthesizer()
    assert isinstance(chosen, OnnxSpeechSynthesizer)
    assert (chosen.voice_path, chosen.speaker) == (str(tmp_path / "v.onnx"), 2)
    monkeypatch.setenv("AVATAR_TTS_SPEAKER", "first")
    with pytest.raises(ConfigurationError, match="AVATAR_TTS_SPEAKER='first': expected a whole number"):
        speech_synthesizer()
    monkeypatch.setenv("AVATAR_TTS_PROVIDER", "piper")
    with pytest.raises(ConfigurationError, match="AVATAR_TTS_PROVIDER='piper': expected 'espeak-ng' or 'onnx'"):
        speech_synthesizer()


def test_definitions_with_onnx_configured_import_no_onnxruntime(tmp_path: Path):
    probe = (
        "import sys, json, avatar_assets.definitions as d; "
        "print(json.dumps([type(d.defs.resources['tts']).__name__, "
        "sorted({m.split('.')[0] for m in sys.modules} & {'onnxruntime', 'onnx', 'torch'})]))"
    )
    env = {"PATH": "/usr/bin:/bin", "AVATAR_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path / "dagster"),
           **onnx_env(tmp_path / "voice.onnx")}
    done = subprocess.run([sys.executable, "-c", probe], cwd=Path(__file__).resolve().parents[1], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["OnnxSpeechSynthesizer", []]


def test_speech_is_in_the_gpu_pool():
    from avatar_assets.video.assets import speech

    assert speech.op.pool == "gpu"


# --------------------------------------------------------------------------- through the assets


def test_the_voice_speaks_the_script_timed_by_its_durations(world):
    from avatar_assets.media import piper
    from avatar_assets.media.face_motion import _VISEMES

    root, timed, _ = world
    result, record, captions = speech_with(root, "neural", **onnx_env(timed))
    assert result.success
    info = record.provider
    sha = file_sha256(timed)
    assert (info.provider, info.fallback_from, info.model_id) == ("onnx", None, f"voice.onnx@{sha[:12]}")
    assert info.settings["sha256"] == sha and info.settings["model_path"] == str(timed)
    assert info.settings["word_timings"] == "model-durations"
    [materialized] = result.asset_materializations_for_node("speech")
    assert (materialized.metadata["provider"].value, materialized.metadata["fallback_from"].value) == ("onnx", "none")
    assert (info.settings["voice_sample_rate"], record.sample_rate) == (SAMPLE_RATE, 24000)  # resampled for the record
    # The same voice run directly on the script's SSML: the asset kept its timings.
    with avatar_home(root, **SIZE_ENV) as home:
        ssml = home.record("script", cell(AVATAR, "neural")).ssml
    voice = PiperVoice.load(timed, sha)
    direct, estimated = piper.synthesize(voice, ssml, length_scale=1.0)
    assert not estimated
    assert record.duration_s == pytest.approx(len(direct.samples) / 24000, abs=1e-3)
    assert [w.word for w in record.words] == SCRIPT.split()
    assert np.allclose([(w.start_s, w.end_s) for w in record.words], [(w.start_s, w.end_s) for w in direct.words], atol=1e-3)
    # The tiny voice makes (id % 3 + 1) frames of HOP samples per id: in the first sentence (before the
    # sentence's <break>), word edges sit on those frames.
    starts = np.array([w.start_s for w in direct.words[:6]]) * SAMPLE_RATE / HOP
    assert np.allclose(starts, np.round(starts), atol=1e-6)
    assert all(a.end_s <= b.start_s for a, b in zip(record.words, record.words[1:]))
    assert record.words[-1].end_s <= record.duration_s
    assert "Hello" in captions and "00:00:0" in captions
    named = {p.phoneme for p in record.phonemes}
    assert named and named <= set(_VISEMES) | {"_"}  # espeak-ng mnemonics the visemes know


def test_the_face_follows_the_neural_voice(world):
    """lip_sync reads the voice's phonemes (espeak-ng mnemonics) and audio: its gate finds the mouth in time."""
    root, timed, _ = world
    with avatar_home(root, **SIZE_ENV, **onnx_env(timed)) as home:
        result = home.defs.resolve_job_def("render_video").execute_in_process(
            instance=home.instance, partition_key=cell(AVATAR, "neural"),
            asset_selection=[dg.AssetKey(name) for name in [*UP_TO_SPEECH, "backgrounds", "scene_assets", "lip_sync"]],
            raise_on_error=False,
        )
        lip_sync = home.record("lip_sync", cell(AVATAR, "neural"))
    gates = {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
             for e in result.all_events if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION}
    assert result.success and gates["mouth_follows_speech"], gates
    assert lip_sync.provider.provider == "landmark-mesh" and abs(lip_sync.lag_frames) <= 2


def test_a_voice_without_durations_estimates_the_timings_and_says_so(world):
    root, _, plain = world
    result, record, _ = speech_with(root, "plain", **onnx_env(plain))
    assert result.success
    assert (record.provider.provider, record.provider.settings["word_timings"]) == ("onnx", "estimated")
    assert [w.word for w in record.words] == SCRIPT.split()


def test_an_unusable_voice_falls_back_to_espeak_and_says_why(world):
    root, timed, _ = world
    malformed = root.parent / "malformed" / "voice.onnx"
    malformed.parent.mkdir()
    malformed.write_bytes(timed.read_bytes())
    malformed.with_name("voice.onnx.json").write_text(json.dumps({"audio": {"sample_rate": 22050}}))
    raises = save_tiny_piper(root.parent / "raises.onnx", symbols=4)  # ids past 3 fail the lookup at run time
    cases = [("unset", None, "AVATAR_TTS_VOICE is not set"),
             ("lost", root.parent / "missing.onnx", "does not exist"),
             ("malformed", malformed, "not a Piper voice config"),
             ("raises", raises, "raises.onnx@")]
    for slug, voice, problem in cases:
        result, record, captions = speech_with(root, slug, **onnx_env(voice))
        assert result.success, slug
        info = record.provider
        assert (info.provider, info.fallback_from) == ("espeak-ng", "onnx"), slug
        assert problem in info.settings["fallback_error"], (slug, info.settings["fallback_error"])
        assert [w.word for w in record.words] == SCRIPT.split() and "Hello" in captions


def test_a_failed_run_is_not_reused_once_the_voice_works(world, monkeypatch):
    root, timed, _ = world

    def fails(self, ids, length_scale, speaker):
        raise VoiceFailed("onnxruntime failed (simulated)")

    with monkeypatch.context() as patch:
        patch.setattr(PiperVoice, "run", fails)
        _, record, _ = speech_with(root, "broken", **onnx_env(timed))
    assert (record.provider.provider, record.provider.fallback_from) == ("espeak-ng", "onnx")
    _, again, _ = speech_with(root, "broken", **onnx_env(timed))
    assert (again.provider.provider, again.provider.fallback_from) == ("onnx", None)
