"""Write the README's frames: `python scripts/readme_frames.py` (or `make readme-frames`).

Face frames: both show the sample avatar as a close-up of a 720x1280 frame at the same instant of the
same espeak sentence (its loudest frame): `docs/img/face_before.png` with the envelope mouth the
platform used before (still the fallback without the landmark model), `docs/img/face_after.png`
with the landmark mesh warp. Cropped to the face.

Rendition frames: `docs/img/rendition_9x16.png`, `rendition_1x1.png`, `rendition_16x9.png`, one frame of
each native rendition as the encode path makes it (`media.video.encode_renditions`): the avatar framed for
that frame's safe area over a backdrop generated at its size, karaoke captions in its caption-safe band,
decoded back from the 1080-class H.264 file, mid-word.

Every image is scaled to at most 300 px wide and 256 colours, so they stay small.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

import tempfile

from avatar_assets.contracts import ASPECT_SIZE, CaptionStyle
from avatar_assets.media.backgrounds import classical_background
from avatar_assets.media.captions import CaptionLook, to_ass
from avatar_assets.media.compose import composite_shot
from avatar_assets.media.face_motion import face_controls
from avatar_assets.media.faces import detect_faces
from avatar_assets.media.images import load_photo
from avatar_assets.media.lipsync import mouth_openness
from avatar_assets.media.portrait import make_neutral_portrait
from avatar_assets.media.talking_head import SceneTrack, render_frames
from avatar_assets.media.tts import synthesize
from avatar_assets.media.video import RenditionJob, SceneClip, encode_renditions, poster_frame

OUT = Path(__file__).resolve().parents[1] / "docs" / "img"
SIZE, FPS, WIDTH = (720, 1280), 25, 300


def save_small(frame: np.ndarray, name: str) -> None:
    scale = min(1.0, WIDTH / frame.shape[1])
    small = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    Image.fromarray(small).quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(OUT / f"{name}.png", optimize=True)
    print(OUT / f"{name}.png")


def rendition_frames(portrait) -> None:
    """One frame of each native rendition, through the encode path the pipeline uses."""
    speech = synthesize("Hello! Welcome to our show about avatars.")
    words = speech.words[:4]
    duration = words[-1].end_s + 0.2
    look = CaptionLook(**CaptionStyle(preset="karaoke").model_dump(exclude={"preset"}))
    face = portrait.face
    jobs = []
    with tempfile.TemporaryDirectory() as tmp:
        for aspect, size in ASPECT_SIZE.items():
            background = classical_background("soft studio backdrop", *size, seed=0)
            shot = composite_shot(background, portrait.rgb, portrait.mask, shot="mid", out_size=size,
                                  face_box=(face.x, face.y, face.w, face.h), landmarks=portrait.landmarks.points)
            jobs.append(RenditionJob(size, [SceneClip(0.0, duration, frames=[shot.frame])],
                                     Path(tmp) / f"{aspect.replace(':', 'x')}.mp4",
                                     to_ass(words, look, size, avoid=[shot.mouth_box])))
        encode_renditions(jobs, fps=FPS, audio=None)
        middle = (words[2].start_s + words[2].end_s) / 2  # the third word, half highlighted
        for aspect, job in zip(ASPECT_SIZE, jobs):
            save_small(poster_frame(job.path, middle), f"rendition_{aspect.replace(':', 'x')}")


def main() -> None:
    photo = load_photo((files("avatar_assets") / "samples" / "astronaut.jpg").read_bytes()).rgb
    portrait = make_neutral_portrait(photo, detect_faces(photo)[0])
    face = portrait.face
    background = np.full((SIZE[1], SIZE[0], 3), (88, 112, 150), np.uint8)
    box = (face.x, face.y, face.w, face.h)
    shot = composite_shot(background, portrait.rgb, portrait.mask, shot="close_up", out_size=SIZE, face_box=box,
                          landmarks=portrait.landmarks.points)
    haar_shot = composite_shot(background, portrait.rgb, portrait.mask, shot="close_up", out_size=SIZE, face_box=box)
    speech = synthesize("Hello! Welcome to our show about avatars.")
    n = round(len(speech.samples) / speech.sample_rate * FPS)
    openness = mouth_openness(speech.samples, speech.sample_rate, FPS, words=speech.words, n_frames=n)
    controls = face_controls(openness, speech.phonemes, FPS, seed=0)
    index = int(np.argmax(controls[:, 0]))
    duration = n / FPS
    # Before: the mouth box came from the Haar face box, as it did without landmarks.
    before = list(render_frames([SceneTrack(0.0, duration, haar_shot.frame, haar_shot.mouth_box)], openness, FPS))[index]
    after = list(render_frames([SceneTrack(0.0, duration, shot.frame, shot.mouth_box, shot.landmarks)], controls, FPS))[index]
    x, y, w, h = shot.face_box
    top, bottom = max(0, y - h // 4), min(SIZE[1], y + h + h // 2)
    left, right = max(0, x - w // 4), min(SIZE[0], x + w + w // 4)
    OUT.mkdir(parents=True, exist_ok=True)
    for name, frame in (("face_before", before), ("face_after", after)):
        crop = frame[top:bottom, left:right]
        save_small(cv2.resize(crop, None, fx=WIDTH / crop.shape[1], fy=WIDTH / crop.shape[1], interpolation=cv2.INTER_AREA),
                   name)
    rendition_frames(portrait)


if __name__ == "__main__":
    main()
