"""Per-frame enhancement: unsharp mask and a gentle saturation lift."""

from __future__ import annotations

import threading

import cv2
import numpy as np


def enhance_frame(frame: np.ndarray, *, sharpen: float = 0.35, saturation: float = 1.06) -> np.ndarray:
    """Sharpen by `sharpen` (0 = unchanged) and scale saturation; luma stays where it was."""
    out = frame
    if sharpen > 0:
        blurred = cv2.GaussianBlur(frame, (0, 0), sigmaX=1.2)
        out = cv2.addWeighted(frame, 1 + sharpen, blurred, -sharpen, 0)
    if saturation != 1.0:  # away from the pixel's own grey: its luma stays, at half the cost of an HSV round trip
        grey = cv2.cvtColor(cv2.cvtColor(out, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
        out = cv2.addWeighted(out, saturation, grey, 1.0 - saturation, 0)
    return out


class EnhancedFrames:
    """`frames` (indexable) enhanced once per index: every rendition asks for the same index, from its own
    thread (`media.video.encode_renditions`), and a crossfade for two, so the last `keep` are kept."""

    def __init__(self, frames, sharpen: float, saturation: float, keep: int = 4) -> None:
        self.frames, self.sharpen, self.saturation, self.keep = frames, sharpen, saturation, keep
        self.enhanced: dict[int, np.ndarray] = {}
        self.lock = threading.Lock()

    def __getitem__(self, index: int) -> np.ndarray:
        with self.lock:
            if index not in self.enhanced:
                if len(self.enhanced) >= self.keep:
                    del self.enhanced[next(iter(self.enhanced))]
                self.enhanced[index] = enhance_frame(self.frames[index], sharpen=self.sharpen, saturation=self.saturation)
            return self.enhanced[index]
