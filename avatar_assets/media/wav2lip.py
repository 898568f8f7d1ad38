"""Wav2Lip lip sync: the public generator architecture, its mel windows, face crops from landmarks and a
feathered paste-back of the lower face.

The module layout and parameter names are those of Rudrabha/Wav2Lip `models/wav2lip.py`, so a public
checkpoint's state_dict (saved under `state_dict`, often with DataParallel's `module.` prefixes) loads as
is. The mel follows Wav2Lip's hparams (16 kHz, 80 bands, hop 200, window 800, 55-7600 Hz, pre-emphasis,
symmetric [-4, 4] normalisation); each video frame gets the 16 mel frames (0.2 s) centred on it, as the
generator saw in training. Frames go to the model in BGR (Wav2Lip was trained on OpenCV frames).

Weights are only ever read from a local file; nothing here downloads. torch is imported by the functions
that need it, so importing this module stays light.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from avatar_assets.media.model_files import file_sha256

FACE_SIDE = 96
MEL_SAMPLE_RATE = 16_000
MEL_HOP = 200
MEL_WINDOW = 800
MEL_BANDS = 80
MEL_STEP = 16  # mel frames per video frame window (0.2 s)
MEL_FMIN, MEL_FMAX = 55.0, 7600.0
PREEMPHASIS = 0.97
MIN_LEVEL_DB, REF_LEVEL_DB, MAX_ABS_VALUE = -100.0, 20.0, 4.0
FEATHER = 0.12  # of the crop side: how far the paste-back mask ramps from 0 to 1

Box = tuple[int, int, int]  # x, y, side: a square crop in frame pixels


class ModelUnavailable(Exception):
    """The checkpoint is missing, unreadable or not a Wav2Lip generator: retrying will not help."""


class LipSyncFailed(Exception):
    """The model was loaded but a forward pass failed (out of memory, a device error)."""


# --------------------------------------------------------------------------- architecture


def build_generator():
    """A Wav2Lip generator (random weights), built inside a function so torch loads only when needed."""
    from torch import cat, nn

    class Conv2d(nn.Module):
        def __init__(self, cin, cout, kernel_size, stride, padding, residual=False):
            super().__init__()
            self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding), nn.BatchNorm2d(cout))
            self.act = nn.ReLU()
            self.residual = residual

        def forward(self, x):
            out = self.conv_block(x)
            return self.act(out + x if self.residual else out)

    class Conv2dTranspose(nn.Module):
        def __init__(self, cin, cout, kernel_size, stride, padding, output_padding=0):
            super().__init__()
            self.conv_block = nn.Sequential(
                nn.ConvTranspose2d(cin, cout, kernel_size, stride, padding, output_padding), nn.BatchNorm2d(cout)
            )
            self.act = nn.ReLU()

        def forward(self, x):
            return self.act(self.conv_block(x))

    def res(channels):
        return Conv2d(channels, channels, 3, 1, 1, residual=True)

    def up(cin, cout, stride=2, padding=1, output_padding=1, blocks=2):
        return nn.Sequential(Conv2dTranspose(cin, cout, 3, stride, padding, output_padding), *[res(cout) for _ in range(blocks)])

    class Wav2Lip(nn.Module):
        def __init__(self):
            super().__init__()
            self.face_encoder_blocks = nn.ModuleList([
                nn.Sequential(Conv2d(6, 16, 7, 1, 3)),  # 96
                nn.Sequential(Conv2d(16, 32, 3, 2, 1), res(32), res(32)),  # 48
                nn.Sequential(Conv2d(32, 64, 3, 2, 1), res(64), res(64), res(64)),  # 24
                nn.Sequential(Conv2d(64, 128, 3, 2, 1), res(128), res(128)),  # 12
                nn.Sequential(Conv2d(128, 256, 3, 2, 1), res(256), res(256)),  # 6
                nn.Sequential(Conv2d(256, 512, 3, 2, 1), res(512)),  # 3
                nn.Sequential(Conv2d(512, 512, 3, 1, 0), Conv2d(512, 512, 1, 1, 0)),  # 1
            ])
            self.audio_encoder = nn.Sequential(
                Conv2d(1, 32, 3, 1, 1), res(32), res(32),
                Conv2d(32, 64, 3, (3, 1), 1), res(64), res(64),
                Conv2d(64, 128, 3, 3, 1), res(128), res(128),
                Conv2d(128, 256, 3, (3, 2), 1), res(256),
                Conv2d(256, 512, 3, 1, 0), Conv2d(512, 512, 1, 1, 0),
            )
            self.face_decoder_blocks = nn.ModuleList([
                nn.Sequential(Conv2d(512, 512, 1, 1, 0)),
                up(1024, 512, stride=1, padding=0, output_padding=0, blocks=1),  # 3
                up(1024, 512),  # 6
                up(768, 384),  # 12
                up(512, 256),  # 24
                up(320, 128),  # 48
                up(160, 64),  # 96
            ])
            self.output_block = nn.Sequential(Conv2d(80, 32, 3, 1, 1), nn.Conv2d(32, 3, 1, 1, 0), nn.Sigmoid())

        def forward(self, mels, faces):
            """mels (B, 1, 80, 16), faces (B, 6, 96, 96) in [0, 1] -> (B, 3, 96, 96) in [0, 1]."""
            x = self.audio_encoder(mels)
            feats = []
            y = faces
            for block in self.face_encoder_blocks:
                y = block(y)
                feats.append(y)
            for block in self.face_decoder_blocks:
                x = cat((block(x), feats.pop()), dim=1)
            return self.output_block(x)

    return Wav2Lip()


def checkpoint_state(raw: Any) -> dict:
    """The generator's state_dict from a saved checkpoint: under `state_dict` or bare, `module.` stripped."""
    state = raw.get("state_dict", raw) if isinstance(raw, dict) else None
    if not isinstance(state, dict) or not state:
        raise ModelUnavailable("the file holds no state_dict")
    return {key.removeprefix("module."): value for key, value in state.items()}


def checkpoint_id(path: str | Path) -> tuple[str, str]:
    """(model id `<file name>@<sha256[:12]>`, full sha256) without loading the weights."""
    path = Path(path)
    if not path.is_file():
        raise ModelUnavailable(f"{path} does not exist or is not a file")
    sha = file_sha256(path)
    return f"{path.name}@{sha[:12]}", sha


@dataclass
class Wav2LipModel:
    """A loaded generator on one device; `load` raises ModelUnavailable naming the file and the problem."""

    path: Path
    device: str | None = None
    model: Any = None
    model_id: str = ""
    sha256: str = ""
    load_seconds: float = 0.0

    def load(self) -> Wav2LipModel:
        import torch

        started = time.perf_counter()
        self.model_id, self.sha256 = checkpoint_id(self.path)
        self.device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            raw = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as error:  # pickle, zip and tensor errors all mean "not a readable checkpoint"
            raise ModelUnavailable(f"{self.path} is not a readable torch checkpoint ({type(error).__name__}: {error})") from error
        generator = build_generator()
        try:
            generator.load_state_dict(checkpoint_state(raw), strict=True)
        except (RuntimeError, ModelUnavailable) as error:
            raise ModelUnavailable(f"{self.path} is not a Wav2Lip generator checkpoint: {str(error)[:300]}") from error
        self.model = generator.to(self.device).eval()
        self.load_seconds = time.perf_counter() - started
        return self

    def predict(self, mels: np.ndarray, faces: np.ndarray) -> np.ndarray:
        """(B, 80, 16) mels and (B, 96, 96, 6) uint8 BGR inputs -> (B, 96, 96, 3) uint8 BGR crops."""
        import torch

        try:
            with torch.inference_mode():
                mel = torch.from_numpy(np.ascontiguousarray(mels[:, None], np.float32)).to(self.device)
                face = torch.from_numpy(np.ascontiguousarray(faces.transpose(0, 3, 1, 2), np.float32) / 255.0).to(self.device)
                out = self.model(mel, face).float().cpu().numpy()
        except RuntimeError as error:
            raise LipSyncFailed(f"wav2lip forward pass failed: {error}") from error
        return np.clip(out.transpose(0, 2, 3, 1) * 255.0 + 0.5, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- audio


def melspectrogram(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Wav2Lip's normalised log-mel (80, T) at 80 frames per second, of mono float samples."""
    import librosa
    from scipy.signal import lfilter, resample_poly

    wav = np.asarray(samples, np.float64)
    if wav.ndim > 1:
        wav = wav.mean(axis=1)
    if sample_rate != MEL_SAMPLE_RATE:
        g = np.gcd(int(sample_rate), MEL_SAMPLE_RATE)
        wav = resample_poly(wav, MEL_SAMPLE_RATE // g, int(sample_rate) // g)
    wav = lfilter([1, -PREEMPHASIS], [1], wav)
    spectrum = np.abs(librosa.stft(y=wav.astype(np.float32), n_fft=MEL_WINDOW, hop_length=MEL_HOP, win_length=MEL_WINDOW))
    basis = librosa.filters.mel(sr=MEL_SAMPLE_RATE, n_fft=MEL_WINDOW, n_mels=MEL_BANDS, fmin=MEL_FMIN, fmax=MEL_FMAX)
    min_level = np.exp(MIN_LEVEL_DB / 20 * np.log(10))
    db = 20 * np.log10(np.maximum(min_level, basis @ spectrum)) - REF_LEVEL_DB
    scaled = 2 * MAX_ABS_VALUE * ((db - MIN_LEVEL_DB) / -MIN_LEVEL_DB) - MAX_ABS_VALUE
    return np.clip(scaled, -MAX_ABS_VALUE, MAX_ABS_VALUE).astype(np.float32)


def mel_windows(mel: np.ndarray, fps: float, frames: int) -> np.ndarray:
    """(frames, 80, 16): the 16 mel frames centred on each video frame; the ends are padded with silence."""
    per_frame = MEL_SAMPLE_RATE / MEL_HOP / fps
    pad = np.full((mel.shape[0], MEL_STEP), -MAX_ABS_VALUE, np.float32)
    padded = np.concatenate([pad, mel, pad], axis=1)
    starts = np.round((np.arange(frames) + 0.5) * per_frame - MEL_STEP / 2).astype(int) + MEL_STEP
    starts = np.clip(starts, 0, padded.shape[1] - MEL_STEP)
    return np.stack([padded[:, s:s + MEL_STEP] for s in starts]) if frames else np.zeros((0, MEL_BANDS, MEL_STEP), np.float32)


# --------------------------------------------------------------------------- faces


def face_crop_box(landmarks: np.ndarray, frame_size: tuple[int, int]) -> Box:
    """A square face crop from 68 landmarks, shaped like the detector boxes Wav2Lip was trained on:
    dlib's points stop at the brows, so the box reaches a fifth of the face higher and a little past the
    chin (Wav2Lip pads the chin). Shifted (and, if need be, shrunk) to stay inside the frame."""
    width, height = frame_size
    points = np.asarray(landmarks, np.float64)
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    face_h = y1 - y0
    y0, y1 = y0 - 0.2 * face_h, y1 + 0.08 * face_h
    side = int(round(min(max(x1 - x0, y1 - y0), width, height)))
    x = int(round(min(max((x0 + x1 - side) / 2, 0), width - side)))
    y = int(round(min(max((y0 + y1 - side) / 2, 0), height - side)))
    return x, y, side


def lower_face_mask(side: int) -> np.ndarray:
    """(side, side) float weights: 0 in the upper half and at the crop's edges, ramping to 1 inside the
    lower half over FEATHER of the side, so the pasted mouth blends in and nothing else changes."""
    feather = max(1.0, FEATHER * side)
    coords = np.arange(side, dtype=np.float32)
    rows = np.minimum(coords - side // 2, side - 1 - coords)
    cols = np.minimum(coords, side - 1 - coords)
    return np.clip(np.minimum(rows[:, None], cols[None, :]) / feather, 0.0, 1.0).astype(np.float32)


def model_inputs(frame_rgb: np.ndarray, reference_rgb: np.ndarray, box: Box) -> np.ndarray:
    """(96, 96, 6) uint8 BGR: the frame's crop with its lower half zeroed, then the reference crop."""
    x, y, side = box

    def crop(image: np.ndarray) -> np.ndarray:
        patch = image[y:y + side, x:x + side, ::-1]
        return cv2.resize(np.ascontiguousarray(patch), (FACE_SIDE, FACE_SIDE), interpolation=cv2.INTER_AREA)

    masked = crop(frame_rgb)
    masked[FACE_SIDE // 2:] = 0
    return np.concatenate([masked, crop(reference_rgb)], axis=2)


def paste_back(frame_rgb: np.ndarray, generated_bgr: np.ndarray, box: Box, mask: np.ndarray) -> np.ndarray:
    """The frame with the generated crop blended in through `mask`; pixels where the mask is 0 are untouched."""
    x, y, side = box
    out = frame_rgb.copy()
    patch = cv2.resize(generated_bgr, (side, side), interpolation=cv2.INTER_LINEAR)[:, :, ::-1].astype(np.float32)
    region = out[y:y + side, x:x + side].astype(np.float32)
    weight = mask[:, :, None]
    out[y:y + side, x:x + side] = np.clip(region + (patch - region) * weight + 0.5, 0, 255).astype(np.uint8)
    return out


@dataclass(frozen=True)
class FaceTarget:
    """Where one frame's face is: its crop box and the reference image (the scene keyframe) to crop."""

    box: Box
    reference: np.ndarray


def face_targets(tracks: Sequence[Any], total: int, fps: float) -> list[FaceTarget | None]:
    """Each frame's target: its scene keyframe's crop box (from the landmarks) and the keyframe as the
    reference (a closed-mouth view of the same face); None on b-roll."""
    from avatar_assets.media.talking_head import scene_of_frame

    per_scene = [
        None if t.mouth_box is None or t.landmarks is None
        else FaceTarget(face_crop_box(t.landmarks, (t.keyframe.shape[1], t.keyframe.shape[0])), t.keyframe)
        for t in tracks
    ]
    return [per_scene[i] for i in scene_of_frame(tracks, total, fps)]


def sync_frames(
    model: Wav2LipModel,
    frames: Iterable[np.ndarray],
    targets: Sequence[FaceTarget | None],
    windows: np.ndarray,
    *,
    batch_size: int,
) -> Iterator[np.ndarray]:
    """The frames with their lower faces regenerated, in order. Frames whose target is None (b-roll) pass
    through; the others go to the model `batch_size` at a time."""
    masks: dict[int, np.ndarray] = {}
    pending: list[tuple[np.ndarray, FaceTarget | None, int]] = []

    def flush() -> Iterator[np.ndarray]:
        faces = [(i, frame, target) for i, (frame, target, _) in enumerate(pending) if target is not None]
        done = [frame for frame, _, _ in pending]
        if faces:
            generated = model.predict(
                np.stack([windows[pending[i][2]] for i, _, _ in faces]),
                np.stack([model_inputs(frame, target.reference, target.box) for _, frame, target in faces]),
            )
            for (i, frame, target), crop in zip(faces, generated, strict=True):
                side = target.box[2]
                mask = masks.setdefault(side, lower_face_mask(side))
                done[i] = paste_back(frame, crop, target.box, mask)
        pending.clear()
        yield from done

    for index, frame in enumerate(frames):
        target = targets[index] if index < len(targets) else None
        pending.append((frame, target, min(index, len(windows) - 1)))
        if len(pending) >= batch_size:
            yield from flush()
    yield from flush()
