import io

import numpy as np
import pytest
import soundfile as sf

from avatar_assets.media.audio import (
    AudioError,
    LoadedAudio,
    clipping_fraction,
    encode_wav,
    envelope,
    frame_energy_db,
    integrated_lufs,
    load_wav,
    longest_silence_s,
    normalize_loudness,
    peak_dbfs,
    resample,
    snr_db,
    speech_mask,
)
from tests.media.audio_fixtures import EDGE_SILENCE_S, speech_like, wav_bytes


def sine(sr: int, duration_s: float, hz: float = 997.0, amplitude: float = 1.0) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * hz * np.arange(int(sr * duration_s)) / sr)).astype(np.float32)


# --- load / encode ----------------------------------------------------------------------------


def test_load_wav_mono_pcm16():
    x = speech_like(16000, 2.0)
    loaded = load_wav(wav_bytes(x, 16000))
    assert isinstance(loaded, LoadedAudio)
    assert loaded.samples.dtype == np.float32 and loaded.samples.ndim == 1
    assert (loaded.sample_rate, loaded.original_sample_rate, loaded.channels) == (16000, 16000, 1)
    assert loaded.subtype == "PCM_16"
    assert loaded.duration_s == pytest.approx(2.0)
    assert np.max(np.abs(loaded.samples - x)) < 1e-4  # 16-bit quantisation only


def test_load_wav_downmixes_stereo_and_records_channels():
    x = speech_like(22050, 2.0)
    loaded = load_wav(wav_bytes(np.stack([x, 0.5 * x], axis=1), 22050, "FLOAT"))
    assert loaded.channels == 2
    assert loaded.samples.shape == x.shape
    np.testing.assert_allclose(loaded.samples, 0.75 * x, atol=1e-6)


def test_load_wav_keeps_original_rate_and_resampling_is_explicit():
    x = sine(8000, 1.0, 440.0, 0.5)
    loaded = load_wav(wav_bytes(x, 8000))
    assert loaded.sample_rate == 8000
    up = loaded.resampled(16000)
    assert (up.sample_rate, up.original_sample_rate) == (16000, 8000)
    assert len(up.samples) == 16000 and up.duration_s == pytest.approx(1.0)
    assert peak_dbfs(up.samples) == pytest.approx(peak_dbfs(x), abs=0.1)


def test_resample_preserves_a_tone():
    y = resample(sine(44100, 1.0, 1000.0, 0.5), 44100, 16000)
    assert len(y) == 16000 and y.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(y))
    assert np.argmax(spectrum) == 1000  # 1 Hz bins for a 1 s signal


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "empty"),
        (np.random.default_rng(0).bytes(4096), "RIFF"),
        (wav_bytes(np.zeros(1000, np.float32), 16000)[:30], "data chunk"),
        (wav_bytes(np.zeros(16000, np.float32), 16000)[:20000], "truncated"),
    ],
    ids=["empty", "random-bytes", "truncated-header", "truncated-data"],
)
def test_load_wav_rejects_unreadable_files(data, problem):
    with pytest.raises(AudioError, match="not a readable WAV file") as err:
        load_wav(data)
    assert problem in str(err.value)


@pytest.mark.parametrize(("fmt", "subtype"), [("FLAC", None), ("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III")])
def test_load_wav_decodes_the_compressed_formats_voices_are_recorded_in(fmt, subtype):
    """A voice sample recorded as FLAC, Ogg or MP3 is usable: decoded at its own rate, never refused."""
    tone = sine(44100, 1.0, 440.0, 0.5)
    data = io.BytesIO()
    sf.write(data, tone, 44100, format=fmt, subtype=subtype)
    loaded = load_wav(data.getvalue())
    assert loaded.sample_rate == 44100 and abs(loaded.duration_s - 1.0) < 0.1
    spectrum = np.abs(np.fft.rfft(loaded.samples[:44100]))
    assert abs(np.argmax(spectrum) * 44100 / min(len(loaded.samples), 44100) - 440) < 5


def test_load_wav_rejects_empty_wavs():
    with pytest.raises(AudioError, match="no audio samples"):
        load_wav(wav_bytes(np.zeros(0, np.float32), 16000))


def test_encode_wav_round_trip_clips_overs():
    data = encode_wav(np.array([0.0, 0.5, 1.5, -2.0], np.float32), 16000)
    loaded = load_wav(data)
    assert loaded.subtype == "PCM_16"
    np.testing.assert_allclose(loaded.samples, [0.0, 0.5, 1.0, -1.0], atol=1e-4)
    assert load_wav(encode_wav(np.array([0.25], np.float32), 48000, subtype="FLOAT")).samples[0] == 0.25


def test_non_mono_input_is_an_audio_error():
    with pytest.raises(AudioError, match="mono"):
        peak_dbfs(np.zeros((10, 2), np.float32))


# --- levels -----------------------------------------------------------------------------------


def test_clipping_fraction_detects_hard_clipping():
    x = speech_like(16000, 3.0)
    assert clipping_fraction(x) == 0.0
    clipped = np.clip(x * 8, -1, 1)
    expected = np.mean(np.abs(x * 8) >= 0.999)
    assert clipping_fraction(clipped) == pytest.approx(expected)
    assert clipping_fraction(clipped) > 0.05


def test_peak_dbfs():
    assert peak_dbfs(sine(16000, 0.5, 250.0, 0.5)) == pytest.approx(-6.02, abs=0.01)
    assert peak_dbfs(np.zeros(100, np.float32)) == float("-inf")


def test_integrated_lufs_matches_bs1770_reference_tone():
    # BS.1770: a full-scale 997 Hz sine measures -3.01 LKFS.
    assert integrated_lufs(sine(48000, 3.0), 48000) == pytest.approx(-3.01, abs=0.05)
    assert integrated_lufs(sine(48000, 3.0, amplitude=0.1), 48000) == pytest.approx(-23.01, abs=0.05)


def test_integrated_lufs_short_and_silent_audio():
    assert integrated_lufs(sine(48000, 0.15, amplitude=0.1), 48000) == pytest.approx(-23.0, abs=0.3)
    assert integrated_lufs(np.zeros(48000, np.float32), 48000) == float("-inf")
    assert integrated_lufs(np.zeros(0, np.float32), 48000) == float("-inf")


@pytest.mark.parametrize(("peak", "target"), [(0.02, -16.0), (0.9, -16.0), (0.3, -23.0), (0.1, -10.0)])
def test_normalize_loudness_hits_target_without_clipping(peak, target):
    x = speech_like(24000, 6.0, snr_db=30, peak=peak)
    y = normalize_loudness(x, 24000, target_lufs=target)
    assert integrated_lufs(y, 24000) == pytest.approx(target, abs=0.5)
    assert peak_dbfs(y) <= -1.0 + 1e-3
    assert clipping_fraction(y) == 0.0


def test_normalize_loudness_leaves_silence_alone():
    silence = np.zeros(16000, np.float32)
    np.testing.assert_array_equal(normalize_loudness(silence, 16000), silence)


# --- frames, VAD, SNR, envelope ---------------------------------------------------------------


def test_frame_energy_db():
    energy = frame_energy_db(sine(16000, 1.01, 500.0), 16000, frame_ms=20)
    assert len(energy) == 51  # the last partial frame counts
    np.testing.assert_allclose(energy[:50], -3.01, atol=0.05)
    assert frame_energy_db(np.zeros(320, np.float32), 16000).tolist() == [-120.0]


def test_speech_mask_finds_syllables_not_silence_or_steady_sounds():
    sr = 16000
    x = speech_like(sr, 4.0, snr_db=25)
    mask = speech_mask(x, sr)
    assert len(mask) == 200
    lead = int(EDGE_SILENCE_S / 0.02)
    assert not mask[: lead - 1].any()
    assert mask[lead + 1 : lead + 40].mean() > 0.95  # syllable gaps are bridged by the hangover
    assert not speech_mask(np.zeros(sr, np.float32), sr).any()
    assert not speech_mask(sine(sr, 2.0, 200.0, 0.3), sr).any()


def test_longest_silence():
    sr = 16000
    x = speech_like(sr, 3.0, snr_db=30)
    with_gap = np.concatenate([x, np.zeros(int(1.5 * sr), np.float32), x])
    assert longest_silence_s(with_gap, sr) == pytest.approx(1.5 + 2 * EDGE_SILENCE_S, abs=0.08)
    assert longest_silence_s(np.zeros(2 * sr, np.float32), sr) == pytest.approx(2.0)


@pytest.mark.parametrize("sr", [16000, 44100])
@pytest.mark.parametrize("constructed", [10.0, 20.0, 30.0])
def test_snr_estimate_within_3_db(sr, constructed):
    x = speech_like(sr, 8.0, snr_db=constructed, seed=int(constructed))
    assert snr_db(x, sr) == pytest.approx(constructed, abs=3.0)


def test_snr_ignores_digitally_muted_sections():
    sr = 16000
    x = speech_like(sr, 6.0, snr_db=20.0)
    muted = np.concatenate([x, np.zeros(2 * sr, np.float32), x])
    assert snr_db(muted, sr) == pytest.approx(20.0, abs=3.0)


def test_snr_of_degenerate_audio():
    sr = 16000
    assert snr_db(np.zeros(sr, np.float32), sr) == 0.0
    noise = np.random.default_rng(3).standard_normal(3 * sr).astype(np.float32) * 0.05
    assert snr_db(noise, sr) == 0.0  # nothing rises above the noise floor
    assert snr_db(speech_like(sr, 3.0), sr) > 60  # digital silence between syllables


def test_envelope_per_video_frame():
    sr, fps = 16000, 25
    x = speech_like(sr, 3.0)
    env = envelope(x, sr, fps)
    assert env.dtype == np.float32 and len(env) == 75
    lead = int(EDGE_SILENCE_S * fps)
    assert np.all(env[: lead - 1] == 0)
    assert env[lead : lead + 25].max() > 0.05
    np.testing.assert_allclose(envelope(sine(sr, 1.0, 500.0, 0.5), sr, 30.0), 0.5 / np.sqrt(2), rtol=0.02)
    assert len(envelope(x[: sr // 10 + 1], sr, 30.0)) == 4  # a partial last frame still gets a value
