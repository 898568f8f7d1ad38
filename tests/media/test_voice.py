import math
import subprocess
import sys

import numpy as np
import pytest

from avatar_assets.media.audio import AudioError, LoadedAudio, load_wav, resample
from avatar_assets.media.tts import synthesize
from avatar_assets.media.voice import (
    VoiceMetrics,
    analyse_voice,
    embedding_similarity,
    speaker_embedding,
    yin_f0,
)
from tests.media.audio_fixtures import harmonic, speech_like, wav_bytes

PASSAGE = (
    "The rainbow is a division of white light into many beautiful colors. These take the shape "
    "of a long round arch, with its path high above, and its two ends apparently beyond the horizon."
)
OTHER_PASSAGE = (
    "Please call Stella. Ask her to bring these things with her from the store: "
    "six spoons of fresh snow peas and a big toy frog."
)


def loaded(samples: np.ndarray, sr: int, channels: int = 1) -> LoadedAudio:
    return LoadedAudio(samples, sr, channels, sr, "FLOAT", len(samples) / sr)


@pytest.mark.parametrize("f0", [75.0, 100.0, 140.0, 220.0, 350.0])
def test_median_f0_of_harmonic_speech_within_3_percent(f0):
    metrics = analyse_voice(loaded(speech_like(16000, 5.0, f0, snr_db=20), 16000))
    assert metrics.median_f0_hz == pytest.approx(f0, rel=0.03)
    assert metrics.f0_p10_hz == pytest.approx(f0, rel=0.03)
    assert metrics.f0_p90_hz == pytest.approx(f0, rel=0.03)


@pytest.mark.parametrize("sr", [8000, 22050, 48000])
def test_f0_at_other_sample_rates(sr):
    assert analyse_voice(loaded(speech_like(sr, 4.0, 140.0, snr_db=30), sr)).median_f0_hz == pytest.approx(
        140.0, rel=0.03
    )


def test_f0_range_percentiles_follow_a_two_pitch_voice():
    sr = 16000
    x = np.concatenate([speech_like(sr, 4.0, 110.0, snr_db=30), speech_like(sr, 4.0, 200.0, snr_db=30)])
    metrics = analyse_voice(loaded(x, sr))
    assert metrics.f0_p10_hz == pytest.approx(110.0, rel=0.03)
    assert metrics.f0_p90_hz == pytest.approx(200.0, rel=0.03)


def test_yin_marks_noise_and_silence_unvoiced():
    sr = 16000
    noise = np.random.default_rng(0).standard_normal(sr).astype(np.float32) * 0.1
    assert np.isnan(yin_f0(noise, sr)).mean() > 0.9
    assert np.isnan(yin_f0(np.zeros(sr, np.float32), sr)).all()
    tone = harmonic(sr, 1.0, 123.0)
    assert np.nanmedian(yin_f0(tone, sr)) == pytest.approx(123.0, rel=0.01)


def test_speaking_rate_counts_syllable_nuclei():
    metrics = analyse_voice(loaded(speech_like(16000, 10.0, snr_db=25), 16000))
    assert metrics.speaking_rate_sps == pytest.approx(4.0, abs=0.4)


def test_analyse_voice_on_espeak_speech():
    synth = synthesize(PASSAGE, pitch=50)
    metrics = analyse_voice(load_wav(wav_bytes(synth.samples, synth.sample_rate)))
    assert isinstance(metrics, VoiceMetrics)
    assert metrics.sample_rate == 24000 and metrics.channels == 1
    assert 0.7 * metrics.duration_s < metrics.speech_s <= metrics.duration_s
    assert 80 < metrics.median_f0_hz < 130  # espeak's default male voice
    assert metrics.f0_p10_hz < metrics.median_f0_hz < metrics.f0_p90_hz
    assert 3.0 < metrics.speaking_rate_sps < 7.0  # ~50 syllables in ~10 s of speech
    assert -30 < metrics.loudness_lufs < -10
    assert metrics.snr_db > 30  # synthetic speech over digital silence
    assert metrics.clipping_fraction == 0.0


def test_silence_gives_numbers_a_gate_rejects():
    metrics = analyse_voice(load_wav(wav_bytes(np.zeros(3 * 16000, np.float32), 16000)))
    assert metrics.duration_s == pytest.approx(3.0)
    assert metrics.speech_s == 0.0
    assert metrics.median_f0_hz == metrics.f0_p10_hz == metrics.f0_p90_hz == 0.0
    assert metrics.speaking_rate_sps == 0.0
    assert metrics.loudness_lufs == -math.inf and metrics.peak_dbfs == -math.inf
    assert metrics.snr_db == 0.0 and metrics.clipping_fraction == 0.0


def test_clipped_audio_is_measurable_and_flagged():
    x = np.clip(speech_like(16000, 5.0, snr_db=30) * 10, -1, 1)
    metrics = analyse_voice(load_wav(wav_bytes(x, 16000)))
    assert metrics.clipping_fraction > 0.1
    assert metrics.peak_dbfs == pytest.approx(0.0, abs=0.01)
    assert metrics.median_f0_hz == pytest.approx(140.0, rel=0.03)  # clipping keeps the period


def test_one_second_clip():
    metrics = analyse_voice(load_wav(wav_bytes(speech_like(16000, 1.2), 16000)))
    assert 0 < metrics.speech_s < 1.0
    assert metrics.median_f0_hz == pytest.approx(140.0, rel=0.03)
    assert np.isfinite(metrics.loudness_lufs)


def test_8khz_and_stereo_are_reported_not_rejected():
    narrow = analyse_voice(load_wav(wav_bytes(speech_like(8000, 3.0, snr_db=30), 8000)))
    assert narrow.sample_rate == 8000 and narrow.median_f0_hz == pytest.approx(140.0, rel=0.03)
    x = speech_like(44100, 3.0, snr_db=30)
    stereo = analyse_voice(load_wav(wav_bytes(np.stack([x, x], axis=1), 44100)))
    assert stereo.channels == 2 and stereo.median_f0_hz == pytest.approx(140.0, rel=0.03)


def test_only_unreadable_files_raise():
    with pytest.raises(AudioError):
        load_wav(b"RIFF\x00\x00")


# --- speaker embedding ------------------------------------------------------------------------


def test_speaker_embedding_shape_norm_and_same_voice_closer_than_different():
    reference = synthesize(PASSAGE, voice="en-us", pitch=20)
    same = synthesize(OTHER_PASSAGE, voice="en-us", pitch=20)
    other = synthesize(OTHER_PASSAGE, voice="en-us+f3", pitch=80)
    emb_ref = speaker_embedding(reference.samples, reference.sample_rate)
    emb_same = speaker_embedding(same.samples, same.sample_rate)
    emb_other = speaker_embedding(other.samples, other.sample_rate)
    assert emb_ref.shape == (256,) and emb_ref.dtype == np.float32
    assert np.linalg.norm(emb_ref) == pytest.approx(1.0, abs=1e-5)
    same_score = embedding_similarity(emb_ref, emb_same)
    other_score = embedding_similarity(emb_ref, emb_other)
    # Measured: ~0.96 same voice / different text, ~0.64 for the female variant.
    assert same_score > other_score + 0.15
    assert embedding_similarity(emb_ref, emb_ref) == pytest.approx(1.0)


def test_speaker_embedding_of_8khz_input():
    synth = synthesize(PASSAGE)
    narrow = resample(synth.samples, synth.sample_rate, 8000)
    full = speaker_embedding(synth.samples, synth.sample_rate)
    assert embedding_similarity(full, speaker_embedding(narrow, 8000)) > 0.8


def test_speaker_embedding_of_silence_is_an_audio_error():
    with pytest.raises(AudioError, match="silent"):
        speaker_embedding(np.zeros(16000, np.float32), 16000)


def test_media_modules_import_without_heavy_dependencies():
    code = (
        "import sys, avatar_assets.media.audio, avatar_assets.media.voice, "
        "avatar_assets.media.tts, avatar_assets.media.captions\n"
        "heavy = {'torch', 'resemblyzer', 'librosa', 'dagster'} & set(sys.modules)\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
