"""Caption cues from word timings, as SRT/WebVTT files, and as a styled ASS document that libass burns into
video and players can show: one Dialogue per cue, per-word karaoke timing (`{\\kf<centiseconds>}`)."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pysubs2
from PIL import ImageFont

from avatar_assets.media.tts import WordTiming

_SENTENCE_END = (".", "!", "?", "…", '."', '!"', '?"', ".'", "!'", "?'")


@dataclass(frozen=True)
class Cue:
    """One caption on screen from start_s to end_s."""

    start_s: float
    end_s: float
    text: str


def cues(
    words: Sequence[WordTiming],
    *,
    max_chars: int = 42,
    max_duration_s: float = 4.0,
    max_gap_s: float = 1.0,
) -> list[Cue]:
    """Group words into readable cues.

    A cue ends after a sentence-final word, before a word that would push it past max_chars
    or max_duration_s, and at pauses longer than max_gap_s (so no caption lingers over
    silence). A single word longer than max_chars gets a cue of its own.
    """
    return [Cue(group[0].start_s, group[-1].end_s, " ".join(w.word for w in group))
            for group in _groups(words, max_chars, max_duration_s, max_gap_s)]


def _groups(words: Sequence[WordTiming], max_chars: int, max_duration_s: float,
            max_gap_s: float) -> list[list[WordTiming]]:
    """The words of each cue (see `cues`)."""
    result: list[list[WordTiming]] = []
    group: list[WordTiming] = []

    def flush() -> None:
        if group:
            result.append(list(group))
            group.clear()

    for word in words:
        if group:
            text_len = sum(len(w.word) + 1 for w in group) + len(word.word)
            too_long = text_len > max_chars or word.end_s - group[0].start_s > max_duration_s
            if too_long or word.start_s - group[-1].end_s > max_gap_s:
                flush()
        group.append(word)
        if word.word.endswith(_SENTENCE_END):
            flush()
    flush()
    return result


def _timestamp(seconds: float, separator: str) -> str:
    ms = max(0, round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{ms:03d}"


def to_srt(
    words: Sequence[WordTiming],
    *,
    max_chars: int = 42,
    max_duration_s: float = 4.0,
    max_gap_s: float = 1.0,
) -> str:
    """SubRip captions: numbered cues, `HH:MM:SS,mmm` timestamps."""
    blocks = [
        f"{i}\n{_timestamp(c.start_s, ',')} --> {_timestamp(c.end_s, ',')}\n{c.text}\n"
        for i, c in enumerate(cues(words, max_chars=max_chars, max_duration_s=max_duration_s, max_gap_s=max_gap_s), 1)
    ]
    return "\n".join(blocks)


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_vtt(
    words: Sequence[WordTiming],
    *,
    max_chars: int = 42,
    max_duration_s: float = 4.0,
    max_gap_s: float = 1.0,
) -> str:
    """WebVTT captions: `WEBVTT` header, `HH:MM:SS.mmm` timestamps, cue text escaped."""
    blocks = [
        f"{_timestamp(c.start_s, '.')} --> {_timestamp(c.end_s, '.')}\n{_vtt_escape(c.text)}\n"
        for c in cues(words, max_chars=max_chars, max_duration_s=max_duration_s, max_gap_s=max_gap_s)
    ]
    return "\n".join(["WEBVTT\n", *blocks])


# --------------------------------------------------------------------------- styled captions (ASS)

FONT_FAMILY = "DejaVu Sans"
_FONT_FILE = "DejaVuSans-Bold.ttf"
_BOX_RGBA = (0, 0, 0, 145)  # ASS alpha counts transparency: 145 leaves the box 43 % opaque
Box = tuple[int, int, int, int]


def _fonts_dir() -> Path:
    """matplotlib's DejaVu fonts (found without importing matplotlib): captions look the same on every
    host, whatever fonts it has installed."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("matplotlib is not installed: its DejaVu fonts are the caption fonts")
    return Path(next(iter(spec.submodule_search_locations))) / "mpl-data" / "fonts" / "ttf"


FONTS_DIR = _fonts_dir()


@dataclass(frozen=True)
class CaptionLook:
    """A caption style as the media functions take it (the request's `CaptionStyle`, resolved):
    `font_size` is in pixels of a 1080-pixel short side, colours are #RRGGBB."""

    font_size: int
    position: str  # auto | top | middle | bottom
    text_colour: str
    highlight_colour: str
    background_box: bool
    word_highlight: bool


def safe_band(size: tuple[int, int]) -> tuple[float, float]:
    """Where a caption may go, as fractions of the frame height (top, bottom): clear of the buttons and
    descriptions that platforms lay over the bottom of vertical video."""
    w, h = size
    return (0.08, 0.84) if h > w else (0.08, 0.93)


def caption_top(
    size: tuple[int, int],
    block: tuple[int, int],
    position: str,
    *,
    band: tuple[float, float] | None = None,
    avoid: Sequence[Box] = (),
) -> int:
    """Top edge of a centred caption block (width, height) in `position` within `band` (default
    `safe_band(size)`). `auto` is the band's bottom unless that covers a box in `avoid` (the avatar's
    mouth), then its top."""
    w, h = size
    block_w, block_h = block
    top, bottom = band or safe_band(size)
    highest, lowest = round(top * h), max(round(top * h), round(bottom * h) - block_h)
    if position == "top":
        return highest
    if position == "middle":
        return min(max((h - block_h) // 2, highest), lowest)
    if position == "bottom":
        return lowest
    if position != "auto":
        raise ValueError(f"caption position must be auto, top, middle or bottom, got {position!r}")
    x = (w - block_w) // 2
    return highest if any(_overlaps((x, lowest, block_w, block_h), box) for box in avoid) else lowest


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


@lru_cache(maxsize=32)
def _measuring_font(ass_size: int) -> ImageFont.FreeTypeFont:
    """The caption font at the size libass draws it: an ASS font size is the line height (ascent +
    descent), not the em size Pillow takes."""
    path = str(FONTS_DIR / _FONT_FILE)
    ascent, descent = ImageFont.truetype(path, 1000).getmetrics()
    return ImageFont.truetype(path, max(1, round(ass_size * 1000 / (ascent + descent))))


def _wrap(words: Sequence[str], font: ImageFont.FreeTypeFont, max_w: float) -> list[list[str]]:
    """Greedy word wrap by rendered width (libass is told not to wrap, so this layout is the one shown)."""
    lines: list[list[str]] = []
    for word in words:
        if lines and font.getlength(" ".join([*lines[-1], word])) <= max_w:
            lines[-1].append(word)
        else:
            lines.append([word])
    return lines


def _ass_safe(word: str) -> str:
    """Braces and backslashes would be read as override tags."""
    return word.replace("\\", "/").replace("{", "(").replace("}", ")")


def _colour(hex_rgb: str, alpha: int = 0) -> pysubs2.Color:
    return pysubs2.Color(int(hex_rgb[1:3], 16), int(hex_rgb[3:5], 16), int(hex_rgb[5:7], 16), alpha)


def _dialogue(group: Sequence[WordTiming], lines: Sequence[Sequence[str]], karaoke: bool) -> str:
    """The cue's text with `\\N` line breaks; with `karaoke`, `{\\kf}` per word (its own duration, in
    centiseconds on a shared rounding grid so the tags add up to the cue) and `{\\k}` for the pauses."""
    breaks = {sum(len(line) for line in lines[:i]) for i in range(1, len(lines))}
    parts = []
    for i, word in enumerate(group):
        if i in breaks:
            parts.append("\\N")
        elif i:
            parts.append(" ")
        if karaoke:
            if i and (gap := _cs(word.start_s) - _cs(min(group[i - 1].end_s, word.start_s))) > 0:
                parts.append(f"{{\\k{gap}}}")
            end = min(word.end_s, group[i + 1].start_s) if i + 1 < len(group) else word.end_s
            parts.append(f"{{\\kf{max(0, _cs(end) - _cs(word.start_s))}}}")
        parts.append(_ass_safe(word.word))
    return "".join(parts)


def _cs(seconds: float) -> int:
    return round(seconds * 100)


@dataclass(frozen=True)
class CaptionBlock:
    """One cue laid out on a frame: its words, its lines and the box (x, y, w, h) it covers, in pixels."""

    words: tuple[WordTiming, ...]
    lines: tuple[tuple[str, ...], ...]
    box: Box

    @property
    def start_s(self) -> float:
        return self.words[0].start_s

    @property
    def end_s(self) -> float:
        return self.words[-1].end_s


def _metrics(look: CaptionLook, size: tuple[int, int]) -> tuple[int, int]:
    """Font size (ASS units = pixels of this frame) and outline width, scaled from a 1080-pixel short side."""
    font_px = max(10, round(look.font_size * min(size) / 1080))
    return font_px, max(1, round(font_px / 16))


def layout_captions(
    words: Sequence[WordTiming],
    look: CaptionLook,
    size: tuple[int, int],
    *,
    band: tuple[float, float] | None = None,
    avoid: Sequence[Box] = (),
    max_chars: int = 42,
    max_duration_s: float = 4.0,
    max_gap_s: float = 1.0,
) -> list[CaptionBlock]:
    """Cues wrapped to 84 % of the frame width and placed by `caption_top` in `band`. libass is told not to
    wrap, so this layout is the one drawn, and each caption's place is known before anything is drawn."""
    w, _ = size
    font_px, stroke = _metrics(look, size)
    font = _measuring_font(font_px)
    blocks = []
    for group in _groups(words, max_chars, max_duration_s, max_gap_s):
        lines = _wrap([_ass_safe(word.word) for word in group], font, 0.84 * w - 2 * stroke)
        block_w = round(max(font.getlength(" ".join(line)) for line in lines)) + 2 * stroke
        block_h = len(lines) * font_px + 2 * stroke
        top = caption_top(size, (block_w, block_h), look.position, band=band, avoid=avoid)
        blocks.append(CaptionBlock(tuple(group), tuple(map(tuple, lines)), ((w - block_w) // 2, top, block_w, block_h)))
    return blocks


def to_ass(
    words: Sequence[WordTiming],
    look: CaptionLook,
    size: tuple[int, int],
    *,
    band: tuple[float, float] | None = None,
    avoid: Sequence[Box] = (),
    max_chars: int = 42,
    max_duration_s: float = 4.0,
    max_gap_s: float = 1.0,
) -> str:
    """Captions styled by `look` for a `size` frame (PlayResX/Y, so ASS units are its pixels): one Dialogue
    per cue of `layout_captions`, top-centred at its block."""
    w, h = size
    font_px, stroke = _metrics(look, size)
    text, highlight = _colour(look.text_colour), _colour(look.highlight_colour)
    subs = pysubs2.SSAFile()
    subs.info.update({"PlayResX": str(w), "PlayResY": str(h), "WrapStyle": "2", "ScaledBorderAndShadow": "yes"})
    subs.styles.clear()
    # BorderStyle 4 (libass): one box per caption in BackColour behind text outlined in OutlineColour.
    subs.styles["Caption"] = pysubs2.SSAStyle(
        fontname=FONT_FAMILY, fontsize=font_px, bold=True,
        primarycolor=highlight if look.word_highlight else text, secondarycolor=text,
        outlinecolor=_colour("#000000"), backcolor=pysubs2.Color(*_BOX_RGBA),
        borderstyle=4 if look.background_box else 1, outline=stroke, shadow=0,
        alignment=pysubs2.Alignment.TOP_CENTER, marginl=0, marginr=0, marginv=0,
    )
    for block in layout_captions(words, look, size, band=band, avoid=avoid, max_chars=max_chars,
                                 max_duration_s=max_duration_s, max_gap_s=max_gap_s):
        subs.append(pysubs2.SSAEvent(
            start=_cs(block.start_s) * 10, end=_cs(block.end_s) * 10, style="Caption",
            marginv=block.box[1] + stroke, text=_dialogue(block.words, block.lines, look.word_highlight),
        ))
    return subs.to_string("ass")
