"""When each script word and each scene is heard: the synthesiser's words mapped back onto the script."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from avatar_assets.media.tts import WordTiming


class Spoken(Protocol):
    """A script token (`script.ScriptToken` or the record's copy of one)."""

    display: str
    spoken: str


@dataclass(frozen=True)
class TimedWord:
    """One display word of the script and when it is heard."""

    word: str
    start_s: float
    end_s: float


def display_timings(
    tokens: Sequence[Spoken], spoken_words: Sequence[WordTiming], spans: list[tuple[int, int]] | None = None
) -> list[TimedWord]:
    """Map the synthesiser's spoken words back onto the script's display words (overrides may span words).

    With `spans` (each token's place in the SSML) words are matched by text offset: a token gets the
    words that start inside it, and a token the synthesiser folded into the word before it ("Tom &",
    "Hello —") shares that word's timing, so every display word keeps its own place in the captions.
    """
    if spans is not None and spoken_words:
        timings = []
        for token, (start, end) in zip(tokens, spans):
            inside = [w for w in spoken_words if start <= w.text_offset < end]
            if not inside:
                before = [w for w in spoken_words if w.text_offset < start]
                inside = [before[-1] if before else spoken_words[0]]
            timings.append(TimedWord(token.display, inside[0].start_s, inside[-1].end_s))
        return timings
    timings, cursor = [], 0
    for token in tokens:
        count = max(1, len(token.spoken.split()))
        span = spoken_words[cursor : cursor + count]
        cursor += count
        if not span:
            break
        timings.append(TimedWord(token.display, span[0].start_s, span[-1].end_s))
    return timings


def scene_boundaries(first_tokens: Sequence[int], words: Sequence[TimedWord], duration: float) -> list[tuple[float, float]]:
    """Scene i (whose first token is `first_tokens[i]`) starts halfway between the word before it and its
    first word (the first scene at 0), and ends where the next starts."""
    starts = [0.0]
    for first in first_tokens[1:]:
        index = min(first, len(words) - 1)
        previous_end = words[index - 1].end_s if index > 0 else 0.0
        starts.append(round((previous_end + words[index].start_s) / 2, 4))
    ends = [*starts[1:], round(duration, 4)]
    return list(zip(starts, ends))
