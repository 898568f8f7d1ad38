"""WAV decoding/encoding and cheap signal measurements used by the voice and TTS gates.

Audio is float32 mono numpy in [-1, 1] plus an int sample rate everywhere.
"""

from __future__ import annotations

import dataclasses
import io
import struct
from dataclasses import dataclass

import numpy as np
import pyloudnorm
import soundfile as sf
import soxr
from scipy.ndimage import minimum_filter1d, uniform_filter1d

_ENERGY_FLOOR = 1e-12  # -120 dB: keeps log10 finite on digital silence
_LUFS_BLOCK_S = 0.4  # BS.1770 gating block length
_TRUE_PEAK_OVERSAMPLE = 4
_MIN_SPEECH_DBFS = -60.0  # anything quieter is silence whatever the noise floor
_DIGITAL_SILENCE_DBFS = -100.0  # below 16-bit dither: zeros, not a microphone's noise
_STEADY_FLOOR_DB = 6.0
_VAD_MARGIN_DB = 6.0
_VAD_FLOOR_PERCENTILE = 10.0
_MIN_NOISE_FRAMES = 5


class AudioError(ValueError):
    """Audio that cannot be used; the message is shown to users, so it names the problem."""


@dataclass(frozen=True, eq=False)
class LoadedAudio:
    """Decoded WAV as mono float32, with enough provenance for quality gates to explain a rejection."""

    samples: np.ndarray
    sample_rate: int
    channels: int
    original_sample_rate: int
    subtype: str
    duration_s: float

    def resampled(self, sample_rate: int) -> LoadedAudio:
        """Resample explicitly, keeping the original rate on record."""
        samples = resample(self.samples, self.sample_rate, sample_rate)
        return dataclasses.replace(
            self, samples=samples, sample_rate=sample_rate, duration_s=len(samples) / sample_rate
        )


def _riff_truncation(data: bytes) -> str | None:
    """libsndfile silently reads a cut-off data chunk, so compare its declared size with what is there."""
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RIFX", b"RF64") or data[8:12] != b"WAVE":
        return "missing RIFF/WAVE header"
    endian = ">" if data[:4] == b"RIFX" else "<"
    pos = 12
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack(endian + "I", data[pos + 4 : pos + 8])
        if chunk_id == b"data":
            present = len(data) - pos - 8
            if size not in (0, 0xFFFFFFFF) and present < size:
                return f"truncated (data chunk declares {size} bytes, {present} present)"
            return None
        pos += 8 + size + (size & 1)
    return "no data chunk"


def _compressed_audio(data: bytes) -> bool:
    """FLAC, Ogg (Vorbis, Opus) or MP3: formats libsndfile decodes and people record voices in."""
    return data[:4] in (b"fLaC", b"OggS") or data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0)


def load_wav(data: bytes) -> LoadedAudio:
    """Decode a voice recording to mono float32 at the file's own rate; stereo is downmixed by averaging.

    WAV is the upload contract's format; FLAC, Ogg and MP3 recordings are decoded too (libsndfile), since
    a person would call them perfectly usable voice samples.
    """
    if not data:
        raise AudioError("not a readable WAV file: empty file")
    if not _compressed_audio(data):
        problem = _riff_truncation(data)
        if problem == "missing RIFF/WAVE header":
            problem += " (nor a FLAC, Ogg or MP3 file)"
        if problem:
            raise AudioError(f"not a readable WAV file: {problem}")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            frames = f.read(dtype="float32", always_2d=True)
            sample_rate, subtype = f.samplerate, f.subtype
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioError(f"not a readable WAV file: {exc}") from exc
    if frames.shape[0] == 0:
        raise AudioError("not a readable WAV file: it contains no audio samples")
    samples = np.clip(np.nan_to_num(frames.mean(axis=1)), -1.0, 1.0).astype(np.float32)
    return LoadedAudio(
        samples=samples,
        sample_rate=int(sample_rate),
        channels=int(frames.shape[1]),
        original_sample_rate=int(sample_rate),
        subtype=str(subtype),
        duration_s=len(samples) / sample_rate,
    )


def encode_wav(samples: np.ndarray, sr: int, subtype: str = "PCM_16") -> bytes:
    """Encode mono samples as WAV; PCM subtypes are clipped first so overs don't wrap around."""
    x = _mono(samples)
    if subtype.startswith("PCM"):
        x = np.clip(x, -1.0, 1.0)
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV", subtype=subtype)
    return buf.getvalue()


def resample(samples: np.ndarray, sr_from: int, sr_to: int) -> np.ndarray:
    """High-quality (soxr) resampling; never implicit, callers decide when rates change."""
    x = _mono(samples)
    if sr_from == sr_to or len(x) == 0:
        return x.copy()
    return soxr.resample(x, sr_from, sr_to, quality="HQ").astype(np.float32)


def _mono(samples: np.ndarray) -> np.ndarray:
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 1:
        raise AudioError(f"expected mono samples (1-D array), got shape {x.shape}")
    return x


def clipping_fraction(samples: np.ndarray, threshold: float = 0.999) -> float:
    """Fraction of samples at or beyond full scale: hard-clipped recordings score high."""
    x = _mono(samples)
    if len(x) == 0:
        return 0.0
    return float(np.mean(np.abs(x) >= threshold))


def peak_dbfs(samples: np.ndarray) -> float:
    """Sample peak in dBFS; -inf for silence."""
    x = _mono(samples)
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    return float(20.0 * np.log10(peak)) if peak > 0 else float("-inf")


def integrated_lufs(samples: np.ndarray, sr: int) -> float:
    """ITU BS.1770 integrated loudness (pyloudnorm).

    Returns -inf for empty or silent audio. Audio shorter than one 400 ms gating block is
    repeated to fill the block, which keeps its mean-square (and so its loudness) unchanged.
    """
    x = _mono(samples).astype(np.float64)
    if len(x) == 0 or not np.any(x):
        return float("-inf")
    block = int(np.ceil(_LUFS_BLOCK_S * sr)) + 1
    if len(x) < block:
        x = np.tile(x, int(np.ceil(block / len(x))))
    return float(pyloudnorm.Meter(sr).integrated_loudness(x))


def _true_peak_envelope(x: np.ndarray, sr: int) -> np.ndarray:
    """Per-sample peak of the 4x oversampled signal, catching inter-sample overs."""
    up = soxr.resample(x, sr, sr * _TRUE_PEAK_OVERSAMPLE, quality="HQ")
    up = np.abs(up[: len(x) * _TRUE_PEAK_OVERSAMPLE])
    up = np.pad(up, (0, len(x) * _TRUE_PEAK_OVERSAMPLE - len(up)))
    return np.maximum(up.reshape(len(x), _TRUE_PEAK_OVERSAMPLE).max(axis=1), np.abs(x))


def _limit(x: np.ndarray, sr: int, ceiling: float, envelope: np.ndarray | None = None) -> np.ndarray:
    """Look-ahead peak limiter: a sliding-minimum gain, box-smoothed over the same window.

    Every smoothing window that touches a sample lies inside that sample's minimum window,
    so the smoothed gain never exceeds the gain the sample needs: no overs, no hard edges.
    `envelope` is x's true-peak envelope when the caller has it already.
    """
    envelope = _true_peak_envelope(x, sr) if envelope is None else envelope
    required = np.minimum(1.0, ceiling / np.maximum(envelope, 1e-9))
    if required.min() >= 1.0:
        return x
    width = max(3, int(0.02 * sr) | 1)
    gain = uniform_filter1d(minimum_filter1d(required, width, mode="nearest"), width, mode="nearest")
    return (x * np.minimum(gain, required)).astype(np.float32)


def normalize_loudness(
    samples: np.ndarray, sr: int, target_lufs: float = -16.0, peak_ceiling_dbfs: float = -1.0
) -> np.ndarray:
    """Gain to the target loudness, then limit peaks to the ceiling.

    Limiting removes some loudness, so the gain is corrected by secant steps on the measured
    result until it is within 0.1 LU; silent audio is returned unchanged (nothing to normalise).
    The true-peak envelope scales with the gain (oversampling is linear), so it is computed once.
    """
    x = _mono(samples)
    measured = integrated_lufs(x, sr)
    if not np.isfinite(measured):
        return x.copy()
    ceiling = 10.0 ** (peak_ceiling_dbfs / 20.0)
    envelope = _true_peak_envelope(x, sr)
    gain_db, previous = target_lufs - measured, (0.0, measured)
    for _ in range(8):
        gain = 10.0 ** (gain_db / 20.0)
        out = _limit((x * gain).astype(np.float32), sr, ceiling, envelope * gain)
        loudness = integrated_lufs(out, sr)
        error = target_lufs - loudness
        if abs(error) < 0.1:
            break
        # Loudness gained per dB of gain falls as the limiter works harder.
        slope = (loudness - previous[1]) / (gain_db - previous[0]) if gain_db != previous[0] else 1.0
        previous = (gain_db, loudness)
        gain_db += error / float(np.clip(slope, 0.1, 1.0))
    return np.clip(out, -ceiling, ceiling).astype(np.float32)


def _frame_power(x: np.ndarray, frame: int) -> np.ndarray:
    n_frames = -(-len(x) // frame)
    padded = np.zeros(n_frames * frame, dtype=np.float64)
    padded[: len(x)] = x
    counts = np.full(n_frames, frame, dtype=np.float64)
    if n_frames:
        counts[-1] = len(x) - (n_frames - 1) * frame
    return (padded.reshape(n_frames, frame) ** 2).sum(axis=1) / counts


def frame_energy_db(samples: np.ndarray, sr: int, frame_ms: float = 20) -> np.ndarray:
    """RMS level of consecutive non-overlapping frames in dBFS (floored at -120 dB)."""
    frame = max(1, round(sr * frame_ms / 1000))
    return 10.0 * np.log10(np.maximum(_frame_power(_mono(samples), frame), _ENERGY_FLOOR))


def _active_frames(energy_db: np.ndarray, margin_db: float, floor_percentile: float) -> np.ndarray:
    """Frames louder than the noise floor plus a margin (and never quieter than -60 dBFS).

    The floor is the `floor_percentile` level of the frames that aren't digital silence, if
    those frames have a steady floor (their 1st percentile within 6 dB of it), as a real
    noise floor does: then zeros from editing or muting don't pull the floor down. Otherwise
    the quiet frames are just soft speech (clean TTS with short pauses) and digital silence is
    the floor.
    """
    if len(energy_db) == 0:
        return np.zeros(0, dtype=bool)
    live = energy_db[energy_db > _DIGITAL_SILENCE_DBFS]
    if len(live) == 0:
        return np.zeros(len(energy_db), dtype=bool)
    lowest, floor = np.percentile(live, [1.0, floor_percentile])
    if len(live) < len(energy_db) and floor - lowest > _STEADY_FLOOR_DB:
        floor = _DIGITAL_SILENCE_DBFS
    return energy_db > max(floor + margin_db, _MIN_SPEECH_DBFS)


def _fill_short_gaps(mask: np.ndarray, max_gap: int) -> np.ndarray:
    """Mark non-speech runs of at most max_gap frames that lie between speech frames as speech."""
    out = mask.copy()
    idx = np.flatnonzero(mask)
    gaps = np.diff(idx) - 1
    short = (gaps > 0) & (gaps <= max_gap)
    starts, lengths = idx[:-1][short] + 1, gaps[short]
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[np.repeat(starts, lengths) + offsets] = True
    return out


def speech_mask(
    samples: np.ndarray,
    sr: int,
    frame_ms: float = 20,
    margin_db: float = _VAD_MARGIN_DB,
    hangover_ms: float = 250.0,
    floor_percentile: float = _VAD_FLOOR_PERCENTILE,
) -> np.ndarray:
    """Per-frame speech flags from an energy VAD with an adaptive threshold.

    Threshold = noise floor (the `floor_percentile` of frame levels, see _active_frames for
    digital silence) + `margin_db`, never below -60 dBFS. Hangover: dips shorter than
    `hangover_ms` between speech frames stay speech, so syllable gaps and stop closures don't
    split words; pauses longer than that are silence.
    Stationary audio (a steady tone or pure noise) has no level above its own floor and so
    yields no speech, which is what a gate wants.
    """
    energy = frame_energy_db(samples, sr, frame_ms)
    raw = _active_frames(energy, margin_db, floor_percentile)
    return _fill_short_gaps(raw, int(hangover_ms // frame_ms))


def longest_silence_s(samples: np.ndarray, sr: int, frame_ms: float = 20) -> float:
    """Longest pause between the first and last speech frame; the whole duration if there is no speech."""
    x = _mono(samples)
    mask = speech_mask(x, sr, frame_ms)
    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        return len(x) / sr
    gaps = np.diff(idx) - 1
    return float(gaps.max(initial=0) * frame_ms / 1000.0)


def snr_db(samples: np.ndarray, sr: int, frame_ms: float = 20) -> float:
    """Estimated SNR of a speech recording, in dB.

    Method: 20 ms frames are split by the energy VAD. Speech power is the mean power of the
    frames above the VAD threshold; noise power is the mean power of the non-speech frames
    (at least one frame away from speech, so word tails don't count as noise; digital silence
    only if there is no other noise), or of the quietest 10 % of frames when there are too few
    pauses. Noise power is subtracted from the
    speech-frame power (those frames hold speech + noise) before taking the ratio.
    Returns 0.0 when no speech is found; digital silence as noise caps the result near 100 dB.
    """
    x = _mono(samples)
    frame = max(1, round(sr * frame_ms / 1000))
    power = np.maximum(_frame_power(x, frame), _ENERGY_FLOOR)
    energy = 10.0 * np.log10(power)
    active = _active_frames(energy, _VAD_MARGIN_DB, _VAD_FLOOR_PERCENTILE)
    if not active.any():
        return 0.0
    noise = np.convolve(active, np.ones(3), mode="same") == 0
    live_noise = noise & (energy > _DIGITAL_SILENCE_DBFS)
    if live_noise.sum() >= _MIN_NOISE_FRAMES:
        noise = live_noise
    elif noise.sum() < _MIN_NOISE_FRAMES:
        noise = energy <= np.percentile(energy, _VAD_FLOOR_PERCENTILE)
    noise_power = power[noise].mean()
    speech_power = max(power[active].mean() - noise_power, _ENERGY_FLOOR)
    return float(10.0 * np.log10(speech_power / noise_power))


def envelope(samples: np.ndarray, sr: int, fps: float) -> np.ndarray:
    """RMS level per video frame (frame i covers [i/fps, (i+1)/fps)), for driving mouth movement."""
    x = _mono(samples).astype(np.float64)
    n_frames = int(np.ceil(len(x) * fps / sr))
    bounds = np.minimum(np.round(np.arange(n_frames + 1) * sr / fps).astype(np.int64), len(x))
    csum = np.concatenate([[0.0], np.cumsum(x * x)])
    counts = np.maximum(np.diff(bounds), 1)
    return np.sqrt(np.maximum(np.diff(csum[bounds]), 0.0) / counts).astype(np.float32)
