"""Write the README's before/after face frames: `python scripts/readme_frames.py` (or `make readme-frames`).

Both frames show the sample avatar as a close-up of the 720x1280 master at the same instant of the
same espeak sentence (its loudest frame): `docs/img/face_before.png` with the envelope mouth the
platform used before (still the fallback without the landmark model), `docs/img/face_after.png`
with the landmark mesh warp. Cropped to the face and scaled to 300 px wide and 256 colours, so they stay small.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from avatar_assets.media.compose import composite_shot
from avatar_assets.media.face_motion import face_controls
from avatar_assets.media.faces import detect_faces
from avatar_assets.media.images import load_photo
from avatar_assets.media.lipsync import mouth_openness
from avatar_assets.media.portrait import make_neutral_portrait
from avatar_assets.media.talking_head import SceneTrack, render_frames
from avatar_assets.media.tts import synthesize

OUT = Path(__file__).resolve().parents[1] / "docs" / "img"
SIZE, FPS, WIDTH = (720, 1280), 25, 300


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
        scale = WIDTH / crop.shape[1]
        small = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        Image.fromarray(small).quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(OUT / f"{name}.png", optimize=True)
        print(OUT / f"{name}.png")


if __name__ == "__main__":
    main()
