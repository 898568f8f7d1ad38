"""Identity QA thresholds and the pure rules behind the photo and voice gates; checks and assets share them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from avatar_assets.contracts import PhotoRow, VoiceMetricsModel

if TYPE_CHECKING:  # media.faces loads OpenCV, and the checks import these rules at definitions load
    from avatar_assets.media.faces import PhotoMetrics

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


def photo_row(path: str, metrics: PhotoMetrics) -> PhotoRow:
    """A decoded photo's measurements, judged: usable, or why not."""
    row = PhotoRow(
        path=path,
        usable=False,
        problem=None,
        width=metrics.width,
        height=metrics.height,
        face_count=metrics.face_count,
        face_box=metrics.face_box,
        face_fraction=metrics.face_fraction,
        sharpness=metrics.sharpness,
        exposure=metrics.exposure,
        clipped_fraction=metrics.clipped_fraction,
        colour_cast=metrics.colour_cast,
        eye_angle_deg=metrics.eye_angle_deg,
    )
    problem = photo_problem(row)
    return row.model_copy(update={"usable": problem is None, "problem": problem})


def best_photo(rows: list[PhotoRow]) -> str | None:
    """Largest sharp face among usable photos; exposure nearest mid-grey breaks ties."""
    usable = [row for row in rows if row.usable]
    if not usable:
        return None
    return max(
        usable,
        key=lambda r: (round(r.face_fraction or 0, 2), r.sharpness or 0, -abs((r.exposure or 0.5) - 0.5)),
    ).path


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
