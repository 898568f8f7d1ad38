"""Voice profile measurements (pitch, rate, level, noise) and speaker embeddings for a reference voice."""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import find_peaks

from avatar_assets.media.audio import (
    AudioError,
    LoadedAudio,
    clipping_fraction,
    frame_energy_db,
    integrated_lufs,
    peak_dbfs,
    resample,
    snr_db,
    speech_mask,
)

_ANALYSIS_SR = 16000  # pitch and rate analysis run at one rate, so thresholds mean the same everywhere
_HOP_MS = 10
_F0_MIN_HZ, _F0_MAX_HZ = 60.0, 400.0
_YIN_WINDOW_S = 0.025  # integration window: longer than the longest period (1/60 s)
_YIN_THRESHOLD = 0.15  # cumulative-mean-normalised difference below this = periodic
_EMBEDDING_SR = 16000


@dataclass(frozen=True)
class VoiceMetrics:
    """Numbers a voice-sample gate decides on; degenerate audio gives values that fail sane bounds.

    median_f0_hz / f0_p10_hz / f0_p90_hz are 0.0 when nothing is voiced, speaking_rate_sps and
    speech_s are 0.0 when no speech is found, loudness_lufs and peak_dbfs are -inf for silence.
    """

    duration_s: float
    speech_s: float
    sample_rate: int
    channels: int
    median_f0_hz: float
    f0_p10_hz: float
    f0_p90_hz: float
    speaking_rate_sps: float
    loudness_lufs: float
    snr_db: float
    clipping_fraction: float
    peak_dbfs: float


def yin_f0(samples: np.ndarray, sr: int, voiced_frames: np.ndarray | None = None) -> np.ndarray:
    """Per-10ms-frame F0 in Hz by YIN (de Cheveigné & Kawahara 2002), NaN where unvoiced.

    All frames are processed at once: the difference function comes from FFT cross-correlation
    and cumulative energies, the first dip below the threshold is refined by parabolic
    interpolation. `voiced_frames` (one flag per hop) skips frames known to be silent.
    """
    hop = int(sr * _HOP_MS / 1000)
    window = int(round(sr * _YIN_WINDOW_S))
    tau_min = int(np.floor(sr / _F0_MAX_HZ)) - 1
    tau_max = int(np.ceil(sr / _F0_MIN_HZ))
    span = window + tau_max + 1
    x = np.asarray(samples, dtype=np.float64)
    n_frames = -(-len(x) // hop) if len(x) else 0
    f0 = np.full(n_frames, np.nan)
    if n_frames == 0:
        return f0
    x = np.pad(x, (0, n_frames * hop + span - len(x)))
    frames = sliding_window_view(x, span)[::hop][:n_frames]
    selected = np.arange(n_frames)
    if voiced_frames is not None:
        selected = selected[np.asarray(voiced_frames[:n_frames], dtype=bool)]
    if len(selected) == 0:
        return f0
    seg = frames[selected]

    n_fft = 1 << int(np.ceil(np.log2(span + window)))
    spec_all = np.fft.rfft(seg, n_fft, axis=1)
    spec_head = np.fft.rfft(seg[:, :window], n_fft, axis=1)
    corr = np.fft.irfft(np.conj(spec_head) * spec_all, n_fft, axis=1)[:, : tau_max + 2]
    energy = np.concatenate([np.zeros((len(seg), 1)), np.cumsum(seg**2, axis=1)], axis=1)
    taus = np.arange(tau_max + 2)
    shifted_energy = energy[:, taus + window] - energy[:, taus]
    diff = energy[:, window : window + 1] + shifted_energy - 2.0 * corr
    diff[:, 0] = 0.0
    cumulative = np.cumsum(diff[:, 1:], axis=1)
    cmnd = np.ones_like(diff)
    # Silent frames have no difference to normalise: mark them aperiodic.
    cmnd[:, 1:] = np.where(cumulative > 1e-9, diff[:, 1:] * taus[1:] / np.maximum(cumulative, 1e-12), 1.0)

    search = cmnd[:, tau_min : tau_max + 1]
    is_min = np.zeros_like(search, dtype=bool)
    is_min[:, 1:-1] = (search[:, 1:-1] <= search[:, :-2]) & (search[:, 1:-1] <= search[:, 2:])
    below = search < _YIN_THRESHOLD
    first_below = np.where(below.any(axis=1), below.argmax(axis=1), search.shape[1])
    candidate = is_min & (np.arange(search.shape[1]) >= first_below[:, None])
    has_pitch = candidate.any(axis=1)
    idx = candidate.argmax(axis=1)
    rows = np.arange(len(seg))
    has_pitch &= search[rows, idx] < _YIN_THRESHOLD

    tau = idx + tau_min
    left, mid, right = cmnd[rows, tau - 1], cmnd[rows, tau], cmnd[rows, tau + 1]
    curvature = left - 2.0 * mid + right
    shift = 0.5 * (left - right) / np.where(np.abs(curvature) > 1e-12, curvature, np.inf)
    refined = tau + np.clip(shift, -1.0, 1.0)
    f0[selected[has_pitch]] = sr / refined[has_pitch]
    return f0


def _speaking_rate(x: np.ndarray, sr: int, mask_10ms: np.ndarray, speech_s: float) -> float:
    """Syllable-like nuclei per second of speech: prominent peaks of the smoothed level contour."""
    if speech_s <= 0:
        return 0.0
    power = 10.0 ** (frame_energy_db(x, sr, _HOP_MS) / 10.0)
    smooth_db = 10.0 * np.log10(np.convolve(power, np.ones(5) / 5.0, mode="same") + 1e-12)
    peaks, _ = find_peaks(smooth_db, prominence=3.0, distance=int(100 / _HOP_MS))
    peaks = peaks[mask_10ms[peaks]]
    return float(len(peaks) / speech_s)


def analyse_voice(loaded: LoadedAudio) -> VoiceMetrics:
    """Measure a reference voice recording; never raises on readable audio, however bad."""
    x = resample(loaded.samples, loaded.sample_rate, _ANALYSIS_SR)
    sr = _ANALYSIS_SR
    mask = speech_mask(x, sr, frame_ms=_HOP_MS)
    speech_s = float(mask.sum() * _HOP_MS / 1000.0)
    f0 = yin_f0(x, sr, mask)
    voiced = f0[np.isfinite(f0)]
    p10, median, p90 = np.percentile(voiced, [10, 50, 90]) if len(voiced) else (0.0, 0.0, 0.0)
    return VoiceMetrics(
        duration_s=loaded.duration_s,
        speech_s=speech_s,
        sample_rate=loaded.sample_rate,
        channels=loaded.channels,
        median_f0_hz=float(median),
        f0_p10_hz=float(p10),
        f0_p90_hz=float(p90),
        speaking_rate_sps=_speaking_rate(x, sr, mask, speech_s),
        loudness_lufs=integrated_lufs(loaded.samples, loaded.sample_rate),
        snr_db=snr_db(loaded.samples, loaded.sample_rate),
        clipping_fraction=clipping_fraction(loaded.samples),
        peak_dbfs=peak_dbfs(loaded.samples),
    )


_encoder: Any = None
_encoder_lock = threading.Lock()


def _voice_encoder() -> Any:
    """Load resemblyzer's encoder once per process: torch + weights cost ~1 s, embeddings ~20 ms."""
    global _encoder
    with _encoder_lock:
        if _encoder is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # webrtcvad imports the deprecated pkg_resources
                from resemblyzer import VoiceEncoder

            _encoder = VoiceEncoder("cpu", verbose=False)
        return _encoder


def speaker_embedding(samples: np.ndarray, sr: int) -> np.ndarray:
    """256-d L2-normalised speaker embedding (resemblyzer d-vector) for voice similarity checks.

    Raises AudioError for silent audio or audio in which the VAD finds no speech to embed.
    """
    wav = resample(samples, sr, _EMBEDDING_SR)  # soxr here keeps librosa's slow resampler out
    if not np.any(wav):
        raise AudioError("silent audio has no speaker embedding")
    encoder = _voice_encoder()
    from resemblyzer import preprocess_wav

    wav = preprocess_wav(wav)
    if len(wav) == 0:
        raise AudioError("no speech found to compute a speaker embedding")
    with _encoder_lock:
        embedding = np.asarray(encoder.embed_utterance(wav), dtype=np.float32)
    return embedding / max(float(np.linalg.norm(embedding)), 1e-12)


def embedding_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two speaker embeddings (1.0 = same direction)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
