"""Caption cues from word timings, as SRT/WebVTT files or for burning into video."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
    result: list[Cue] = []
    group: list[WordTiming] = []

    def flush() -> None:
        if group:
            result.append(Cue(group[0].start_s, group[-1].end_s, " ".join(w.word for w in group)))
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
