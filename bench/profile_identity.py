"""Where `avatarops process` spends its time: pyinstrument over one identity build of N avatars.

    python -m bench.profile_identity [--avatars 5] [--out DIR]

Prepares a throwaway home with N bundle variants (as the `identity` benchmark does), then runs
`avatarops process --json` under pyinstrument in a subprocess (`pyinstrument .venv/bin/avatarops`), so
the profile covers what the benchmark times: interpreter start, imports, sensors, runs, automation.
Writes `profile.txt` (the call tree) and `top.txt` (the functions with the most self time, and the
project/Dagster frames with the most total time) into --out, and prints the top lists.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from bench import common


def _walk(frame, totals, selfs, stack=()):
    key = f"{frame['function']} ({Path(frame['file_path_short'] or frame['file_path'] or '?').as_posix()}:{frame['line_no']})"
    # A function that recurses counts once toward its total.
    if key not in stack:
        totals[key] += frame["time"]
    own = frame["time"] - sum(child["time"] for child in frame.get("children", []))
    selfs[key] += max(own, 0.0)
    for child in frame.get("children", []):
        _walk(child, totals, selfs, (*stack, key))


def top_items(session_json: Path, count: int = 15) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    data = json.loads(session_json.read_text())
    totals: dict[str, float] = defaultdict(float)
    selfs: dict[str, float] = defaultdict(float)
    _walk(data["root_frame"], totals, selfs)
    interesting = [
        (k, v) for k, v in totals.items()
        if any(part in k for part in ("avatar_assets/", "resources/", "sensors/", "dagster/", "great_expectations/"))
    ]
    return (sorted(selfs.items(), key=lambda kv: -kv[1])[:count],
            sorted(interesting, key=lambda kv: -kv[1])[:count * 3])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--avatars", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench/results/profile"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with common.workdir("profile") as work:
        common.activate_home(work / "setup-home")
        sample = common.sample_bundle(work / "sample" / "astronaut")
        bundles = common.bundle_variants(sample, work / "bundles", [f"bench-id-{i}" for i in range(args.avatars)])
        home = common.prepare_home(work / "home")
        common.copy_into_inbox(bundles, home)
        env = common.home_env(home)
        session = args.out / "session.pyisession"
        cmd = [sys.executable, "-m", "pyinstrument", "--interval", "0.002", "-r", "session", "-o", str(session),
               str(common.VENV_BIN / "avatarops"), "process", "--json"]
        wall, out = common.run_timed(cmd, env)
        common.check_ok(out, "pyinstrument avatarops process")
        for renderer, name in (("text", "profile.txt"), ("json", "profile.json")):
            subprocess.run([sys.executable, "-m", "pyinstrument", "--load", str(session), "-r", renderer,
                            "--show-all", "-o", str(args.out / name)], check=True, env=env, cwd=common.REPO_ROOT)
    own, total = top_items(args.out / "profile.json")
    lines = [f"avatarops process, {args.avatars} avatars, under pyinstrument: {wall:.1f} s wall", "",
             "self time (top 15):"]
    lines += [f"  {v:7.2f} s  {k}" for k, v in own]
    lines += ["", "total time, project / dagster / GX frames (top 45):"]
    lines += [f"  {v:7.2f} s  {k}" for k, v in total]
    (args.out / "top.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
