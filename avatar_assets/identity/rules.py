"""Identity QA thresholds and the pure rules behind the photo and voice gates; checks and assets share them."""

from __future__ import annotations

from avatar_assets.contracts import PhotoRow, VoiceMetricsModel

FACE_FRACTION = (0.05, 0.80)  # face box height / image height
MIN_FACE_PIXELS = 48
MIN_SHARPNESS = 20.0  # contrast-normalised Laplacian variance of the face region (media.faces._sharpness)
EXPOSURE = (0.15, 0.85)  # mean luminance
MAX_CENTRE_OFFSET = 0.10  # of the frame
MAX_EYE_ANGLE_DEG = 3.0
VOICE_SECONDS = (8.0, 300.0)
MIN_SNR_DB = 15.0
MAX_CLIPPING = 0.001
MIN_VOICE_SAMPLE_RATE = 16_000


def photo_problem(row: PhotoRow) -> str | None:
    """Why a decoded photo cannot be the avatar's source, in words; None when it can."""
    if row.problem:
        return row.problem
    if row.face_count == 0:
        return "no face found"
    if row.face_count and row.face_count > 1:
        return f"{row.face_count} faces found (exactly one is needed)"
    box = row.face_box
    if box is not None and min(box[2], box[3]) < MIN_FACE_PIXELS:
        return f"face is only {box[2]}x{box[3]} px (at least {MIN_FACE_PIXELS} px needed)"
    if row.face_fraction is not None and not FACE_FRACTION[0] <= row.face_fraction <= FACE_FRACTION[1]:
        return (
            f"face fills {row.face_fraction:.0%} of the photo height "
            f"({FACE_FRACTION[0]:.0%}-{FACE_FRACTION[1]:.0%} needed)"
        )
    if row.sharpness is not None and row.sharpness < MIN_SHARPNESS:
        return f"too blurry: sharpness {row.sharpness:.1f} (at least {MIN_SHARPNESS} needed)"
    if row.exposure is not None and not EXPOSURE[0] <= row.exposure <= EXPOSURE[1]:
        return f"exposure {row.exposure:.2f} out of range {EXPOSURE[0]}-{EXPOSURE[1]}"
    return None


def voice_problems(metrics: VoiceMetricsModel) -> list[str]:
    problems = []
    if metrics.sample_rate < MIN_VOICE_SAMPLE_RATE:
        problems.append(
            f"sample rate {metrics.sample_rate} Hz is below the {MIN_VOICE_SAMPLE_RATE} Hz minimum"
        )
    if not VOICE_SECONDS[0] <= metrics.speech_s <= VOICE_SECONDS[1]:
        problems.append(
            f"{metrics.speech_s:.1f} s of speech ({VOICE_SECONDS[0]:.0f}-{VOICE_SECONDS[1]:.0f} s needed)"
        )
    if metrics.snr_db is None or metrics.snr_db < MIN_SNR_DB:
        snr = "unmeasurable" if metrics.snr_db is None else f"{metrics.snr_db:.1f} dB"
        problems.append(f"signal-to-noise {snr} (at least {MIN_SNR_DB:.0f} dB needed)")
    if metrics.clipping_fraction > MAX_CLIPPING:
        problems.append(
            f"{metrics.clipping_fraction:.2%} of samples clipped (at most {MAX_CLIPPING:.1%} allowed)"
        )
    return problems
