"""Real test audio built from first principles, so expected measurements are known exactly."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf

SYLLABLE_S = 0.18  # voiced nucleus length
SYLLABLE_RAMP_S = 0.03
PAUSE_EVERY = 8  # syllables per phrase
PAUSE_S = 0.6
EDGE_SILENCE_S = 0.5


def harmonic(sr: int, duration_s: float, f0_hz: float, seed: int = 0) -> np.ndarray:
    """A vibrato-free voiced source: f0 plus harmonics falling off as 1/k, random phases."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * duration_s)) / sr
    x = np.zeros_like(t)
    for k in range(1, 9):
        if k * f0_hz < sr / 2:
            x += np.sin(2 * np.pi * k * f0_hz * t + rng.uniform(0, 2 * np.pi)) / k
    return x


def syllable_envelope(sr: int, duration_s: float, rate_hz: float = 4.0) -> np.ndarray:
    """Trapezoid syllables at `rate_hz` in phrases of 8 with 0.6 s pauses and 0.5 s silent edges."""
    t = np.arange(int(sr * duration_s)) / sr
    env = np.zeros_like(t)
    start, count = EDGE_SILENCE_S, 0
    while start + SYLLABLE_S < duration_s - EDGE_SILENCE_S:
        inside = (t >= start) & (t < start + SYLLABLE_S)
        local = t[inside] - start
        env[inside] = np.minimum(1.0, np.minimum(local, SYLLABLE_S - local) / SYLLABLE_RAMP_S)
        count += 1
        start += 1.0 / rate_hz + (PAUSE_S if count % PAUSE_EVERY == 0 else 0.0)
    assert count, f"{duration_s} s is too short for a syllable between the silent edges"
    return env


def speech_like(
    sr: int,
    duration_s: float,
    f0_hz: float = 140.0,
    snr_db: float | None = None,
    peak: float = 0.3,
    seed: int = 0,
) -> np.ndarray:
    """Speech-like test signal: harmonic source, ~4 Hz syllable amplitude modulation, pauses.

    With snr_db, white noise is added so that (mean clean power over the syllables, where the
    envelope is non-zero) / (noise power) equals snr_db exactly.
    """
    env = syllable_envelope(sr, duration_s)
    clean = harmonic(sr, duration_s, f0_hz, seed) * env
    clean *= peak / np.max(np.abs(clean))
    if snr_db is None:
        return clean.astype(np.float32)
    speech_power = np.mean(clean[env > 0] ** 2)
    noise = np.random.default_rng(seed + 1).standard_normal(len(clean))
    noise *= np.sqrt(speech_power / 10 ** (snr_db / 10) / np.mean(noise**2))
    return (clean + noise).astype(np.float32)


def wav_bytes(samples: np.ndarray, sr: int, subtype: str = "PCM_16") -> bytes:
    """Encode (frames,) or (frames, channels) samples with soundfile, independent of the code under test."""
    buf = io.BytesIO()
    sf.write(buf, samples, sr, format="WAV", subtype=subtype)
    return buf.getvalue()
