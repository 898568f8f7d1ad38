"""Helpers for the video tests: a home with built identities at a small render size, requests, the
instance's materialization history, and decoding what the pipeline delivered.

Renders are real (espeak speech, x264/AAC files, the Dagster instance the CLI opens); only the master
size is small (`AVATAR_MASTER_SHORT_SIDE=240`). Packaging still produces the exact platform sizes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import numpy as np

from avatar_assets.contracts import OutputRequest
from partitions import cell_key
from tests.conftest import Home, avatar_home, copy_sample

SHORT_SIDE = 240
FPS = 25


@contextlib.contextmanager
def video_home(root: Path, sample_bundle: Path, avatars: tuple[str, ...] = ("astro-v",)) -> Iterator[Home]:
    """A home whose avatars' identities are built (through the upload sensor) at the small render size."""
    with avatar_home(root, AVATAR_MASTER_SHORT_SIDE=str(SHORT_SIDE), AVATAR_FPS=str(FPS)) as home:
        for avatar_id in avatars:
            copy_sample(sample_bundle, home.inbox, avatar_id)
        report = home.process()
        assert report.ok, report.as_dict()
        assert sorted(r.partition for r in report.runs) == sorted(avatars)
        yield home


def cell(avatar_id: str, slug: str) -> str:
    return str(cell_key(avatar_id, slug))


def submit(home: Home, avatar_id: str, slug: str, script: str, *, route: str = "single_scene", **fields) -> OutputRequest:
    """Put `inbox/outputs/<avatar>/<slug>.json` in the home's store the way `avatarops request` does."""
    from avatar_assets.video.requests import write_request

    request = OutputRequest(avatar_id=avatar_id, slug=slug, route=route, script=script, **fields)
    write_request(home.store, request)
    return request


def write_raw_request(home: Home, avatar_id: str, file_stem: str, document: dict | str) -> Path:
    """A request file as a person might drop it into the inbox (not validated on the way in)."""
    path = home.root / "inbox" / "outputs" / avatar_id / f"{file_stem}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


def record(home: Home, asset: str, avatar_id: str, slug: str | None = None):
    return home.record(asset, cell(avatar_id, slug) if slug else avatar_id)


def materialization_counts(instance: dg.DagsterInstance) -> Counter:
    """(asset, partition) -> number of materializations in the instance's event log."""
    records = instance.get_event_records(
        dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_MATERIALIZATION), limit=100_000
    )
    counts: Counter = Counter()
    for entry in records:
        event = entry.event_log_entry.dagster_event
        counts[(event.asset_key.to_user_string(), str(event.partition))] += 1
    return counts


def runs_for(instance: dg.DagsterInstance, partition: str) -> list[dg.DagsterRun]:
    return list(instance.get_runs(dg.RunsFilter(tags={"dagster/partition": partition})))


def run_messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [entry.user_message or "" for entry in instance.all_logs(run_id)]


def check_verdicts(instance: dg.DagsterInstance, partition: str) -> dict[str, bool]:
    """check name -> passed, newest evaluation for the partition."""
    records = instance.get_event_records(
        dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION), limit=10_000, ascending=False
    )
    verdicts: dict[str, bool] = {}
    for entry in records:
        evaluation = entry.event_log_entry.dagster_event.event_specific_data
        if str(evaluation.partition) == partition:
            verdicts.setdefault(evaluation.check_name, evaluation.passed)
    return verdicts


def package_dir(home: Home, avatar_id: str, slug: str) -> Path:
    return home.root / "packages" / avatar_id / slug


def sha256_path(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- decoding


def decoded_frames(path: Path, size: tuple[int, int] | None = None, gray: bool = False) -> np.ndarray:
    from avatar_assets.media.video import read_frames

    return np.stack(list(read_frames(path, size=size, gray=gray)))


def frame_at(path: Path, t: float) -> np.ndarray:
    from avatar_assets.media.video import poster_frame

    return poster_frame(path, t)


def cover_map(src_size: tuple[int, int], dst_size: tuple[int, int]):
    """Where a point of a `src_size` frame lands after ffmpeg's cover fit (scale up, centre crop) to `dst_size`."""
    (sw, sh), (dw, dh) = src_size, dst_size
    scale = max(dw / sw, dh / sh)
    ox, oy = (sw * scale - dw) / 2, (sh * scale - dh) / 2

    def box(b: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        x, y, w, h = b
        x0, y0 = max(0, round(x * scale - ox)), max(0, round(y * scale - oy))
        return x0, y0, min(dw - x0, round(w * scale)), min(dh - y0, round(h * scale))

    return box


def cover_resize(frame: np.ndarray, dst_size: tuple[int, int]) -> np.ndarray:
    from avatar_assets.media.compose import cover_resize as resize

    return resize(frame, dst_size)


def crop(frame: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x, y, w, h = box
    return frame[y:y + h, x:x + w]


def luma(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return frame.astype(np.float32)
    return (frame[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))


def audio_rms(samples: np.ndarray, sr: int, start_s: float, end_s: float) -> float:
    part = samples[int(start_s * sr):int(end_s * sr)]
    return float(np.sqrt(np.mean(part.astype(np.float64) ** 2))) if len(part) else 0.0
