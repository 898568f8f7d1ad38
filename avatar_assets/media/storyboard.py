"""Scene planning per route: which words each scene covers, its shot, background and pose."""

from __future__ import annotations

import math
from dataclasses import dataclass

WORDS_PER_SCENE = 22
DEFAULT_PROMPTS = ("soft studio backdrop", "modern office", "city at dusk", "calm ocean sunset")
POSE_VARIANTS = ("neutral", "turn_left", "smile", "turn_right", "close_up")


@dataclass(frozen=True)
class PlannedScene:
    index: int
    tokens: tuple[int, int]  # [start, end) into the script's token list
    shot: str
    background_prompt: str
    variant: str


def _split_points(sentence_lengths: list[int], scenes: int) -> list[int]:
    """Token indexes where scenes start, on sentence boundaries when there are enough sentences."""
    total = sum(sentence_lengths)
    boundaries = [0]
    for length in sentence_lengths[:-1]:
        boundaries.append(boundaries[-1] + length)
    if len(boundaries) >= scenes:
        targets = [round(total * i / scenes) for i in range(scenes)]
        chosen = [0]
        for index, target in enumerate(targets[1:], start=1):
            # Leave one boundary for each scene still to come, or a greedy early pick runs out of them.
            later = scenes - 1 - index
            candidates = [b for b in boundaries if b > chosen[-1]]
            candidates = candidates[: len(candidates) - later]
            chosen.append(min(candidates, key=lambda b: abs(b - target)))
        return chosen
    return [round(total * i / scenes) for i in range(scenes)]


def plan_scenes(route: str, sentence_lengths: list[int], prompts: list[str]) -> list[PlannedScene]:
    total = sum(sentence_lengths)
    if total < 1:
        raise ValueError("a storyboard needs at least one word")
    if route == "single_scene":
        count = 1
    else:
        count = max(2, math.ceil(total / WORDS_PER_SCENE))
        count = min(count, total)
        if count < 2:
            raise ValueError(f"route {route} needs at least 2 scenes, but the script has only {total} word")
    starts = _split_points(sentence_lengths, count)
    ends = [*starts[1:], total]
    prompts = prompts or list(DEFAULT_PROMPTS)
    scenes = []
    for index, (start, end) in enumerate(zip(starts, ends)):
        if route == "broll" and index % 2 == 1:
            shot = "broll"
        elif route == "single_scene":
            shot = "mid"
        else:
            shot = ("mid", "close_up")[index % 2]
        variant = POSE_VARIANTS[index % len(POSE_VARIANTS)] if route == "pose" else "neutral"
        scenes.append(PlannedScene(index, (start, end), shot, prompts[index % len(prompts)], variant))
    return scenes
