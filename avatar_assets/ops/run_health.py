"""Runs whose process died: found from the identity each run carries, failed with an engine event, cleaned up.

A run launched by the daemon is watched by the code server, which fails it when its subprocess dies. A run
that `avatarops` executes in its own process has no launcher watching it: killed with SIGKILL, it would stay
STARTED forever. Such runs carry the executing process's identity as tags (host, pid, and the pid's start
time, so a pid the kernel has since given to another process is not mistaken for the run's), and every
command that acts on runs (`process`, `status`, `retry`, `revoke`) reaps first: it fails the runs whose
process is gone, removes the scratch folders of runs that are over, and sweeps the partial files that dead
writers left beside their targets.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from avatar_assets import settings
from avatar_assets.media.partial import sweep_dead_writers

HOST_TAG = "avatar/host"
PID_TAG = "avatar/pid"
PID_STARTED_TAG = "avatar/pid_started_at"
CRASHED_TAG = "avatar/crashed"

ACTIVE = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
          dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
"""Statuses of a run that may still be working (or is waiting to)."""

TERMINATE_GRACE_S = 10.0


def process_started_at(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot), or None when no such process exists."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    # Fields after the command name (field 2, which may hold spaces): state is field 3, start time field 22.
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]  # a zombie has finished; only its exit status is left


def is_alive(pid: int) -> bool:
    return process_started_at(pid) is not None


def this_process_tags() -> dict[str, str]:
    """The tags that name the process executing a run in-process."""
    pid = os.getpid()
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(pid), PID_STARTED_TAG: process_started_at(pid) or ""}


def executing_process_alive(tags: Mapping[str, str]) -> bool | None:
    """Whether the process named in a run's tags still runs; None when this host cannot tell (a launched
    run, which its code server watches, or one executed on another host)."""
    if PID_TAG not in tags or tags.get(HOST_TAG) != socket.gethostname():
        return None
    started = process_started_at(int(tags[PID_TAG]))
    return started is not None and started == tags.get(PID_STARTED_TAG)


def fail_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark FAILURE every active run whose executing process is gone, with an engine event saying so."""
    failed = []
    for run in instance.get_runs(dg.RunsFilter(statuses=ACTIVE)):
        if executing_process_alive(run.tags) is not False:
            continue
        message = (
            f"The process that executed this run (pid {run.tags[PID_TAG]} on {run.tags[HOST_TAG]}) is gone: it "
            "crashed or was killed. Marked failed; `avatarops retry` resumes it from the stage it was in."
        )
        instance.add_run_tags(run.run_id, {CRASHED_TAG: "process gone"})
        instance.report_engine_event(message, run)
        instance.report_run_failed(run, message)
        failed.append(run.run_id)
    return failed


def remove_scratch(run_id: str) -> None:
    shutil.rmtree(settings.run_scratch_dir(run_id), ignore_errors=True)


@dataclass
class Reaped:
    failed_runs: list[str] = field(default_factory=list)
    removed_scratch: list[str] = field(default_factory=list)
    removed_partials: list[Path] = field(default_factory=list)


def reap(instance: dg.DagsterInstance, *, sweep_partials: bool = False) -> Reaped:
    """Fail runs whose process died; remove the scratch of every run that is over; when a run was found
    dead (here, or by a code server) or when asked, sweep the partial files of dead writers anywhere
    under the home."""
    reaped = Reaped(failed_runs=fail_dead_runs(instance))
    root = settings.scratch_root()
    folders = [path for path in root.iterdir() if path.is_dir()] if root.is_dir() else []
    if folders:
        active = {run.run_id for run in instance.get_runs(dg.RunsFilter(statuses=ACTIVE))}
        for folder in folders:
            if folder.name not in active:
                shutil.rmtree(folder, ignore_errors=True)
                reaped.removed_scratch.append(folder.name)
    if sweep_partials or reaped.failed_runs or reaped.removed_scratch:
        reaped.removed_partials = sweep_dead_writers(settings.avatar_home(), is_alive)
    return reaped


def stop_process(pid: int, started_at: str) -> None:
    """SIGTERM, then SIGKILL after `TERMINATE_GRACE_S`; never signals a pid that now names another process."""
    if process_started_at(pid) != started_at:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + TERMINATE_GRACE_S
    while time.monotonic() < deadline:
        if process_started_at(pid) != started_at:
            return
        time.sleep(0.1)
    if process_started_at(pid) == started_at:
        os.kill(pid, signal.SIGKILL)
        while process_started_at(pid) == started_at:
            time.sleep(0.05)
