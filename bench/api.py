"""Job API: `GET /v1/renders/{id}` latency under 50 concurrent clients, SQLite and Postgres instance; upload overhead.

For each Dagster instance (SQLite under the home; Postgres, a database created and dropped here, when one answers)
a fresh home gets the sample avatar through the API (`avatarops serve` on loopback, a token from `avatarops
tokens create`), `avatarops process` builds its identity, a render request goes through the API and `avatarops
process` renders it (small frames: what is measured is the status route, not the render). Then C clients, each
its own httpx connection, poll `GET /v1/renders/{id}` R times each: per-request latency p50/p99 and the request
rate. On the SQLite home the upload overhead: the same bundle under new avatar ids, uploaded through the API
(multipart over HTTP) against `upload_bundle` in this process (what `avatarops upload` runs, without the
interpreter start-up), alternating, medians; the ratio is API / in-process. `avatarops upload` as a command
(start-up included) is reported beside it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import common
from bench.common import median, ratio, say

NAME = "api"
TENANT = "demo-studio"
SCOPES = "avatars:write,renders:write,renders:read"


def parameters(quick: bool) -> dict[str, Any]:
    return {
        "clients": 10 if quick else 50,
        "requests_per_client": 5 if quick else 20,
        "upload_pairs": 3 if quick else 9,
        "master_short_side": 240,
        "fps": 12,
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serving(env: dict[str, str], log: Path) -> Iterator[str]:
    """`avatarops serve` on a free loopback port; its base URL once the schema answers."""
    import httpx

    port = _free_port()
    with log.open("wb") as sink:
        process = subprocess.Popen([str(common.VENV_BIN / "avatarops"), "serve", "--host", "127.0.0.1", "--port",
                                    str(port)], env=env, stdout=sink, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/v1/openapi.json", timeout=5).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"avatarops serve did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def avatarops(env: dict[str, str], *args: str, timeout: float = 1200) -> str:
    done = subprocess.run([str(common.VENV_BIN / "avatarops"), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    common.check_ok(done, f"avatarops {' '.join(args)}")
    return done.stdout


def multipart(bundle: Path, avatar_id: str) -> dict:
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["avatar_id"] = avatar_id
    named = [*manifest["photos"], manifest["voice_sample"]]
    parts = [("manifest", (None, json.dumps(manifest).encode(), "application/json"))]
    parts += [("files", (path, (bundle / path).read_bytes(), "application/octet-stream")) for path in named]
    return {"files": parts}


def render_one(base: str, token: str, env: dict[str, str], bundle: Path) -> str:
    """The sample avatar uploaded, built and rendered through the API and `avatarops process`; its render id."""
    import httpx

    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=120) as client:
        uploaded = client.post("/v1/avatars", **multipart(bundle, "bench-api"))
        if uploaded.status_code != 202:
            raise RuntimeError(f"upload answered {uploaded.status_code}: {uploaded.text}")
        avatarops(env, "process")
        accepted = client.post("/v1/avatars/bench-api/renders", json={"slug": "poll", "script": "Hello there. Welcome."})
        if accepted.status_code != 202:
            raise RuntimeError(f"render answered {accepted.status_code}: {accepted.text}")
        avatarops(env, "process")
        render_id = accepted.json()["render_id"]
        state = client.get(f"/v1/renders/{render_id}").json()["state"]
        if state != "done":
            raise RuntimeError(f"the render is {state}, not done")
    return render_id


def poll(base: str, token: str, render_id: str, clients: int, per_client: int) -> dict[str, Any]:
    """C clients at once, each polling the render R times on its own connection: latencies and request rate."""
    import httpx

    latencies: list[float] = []
    failures: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def client_loop() -> None:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=120) as client:
            client.get(f"/v1/renders/{render_id}")  # connect first: the clock measures requests, not handshakes
            start.wait()
            for _ in range(per_client):
                began = time.perf_counter()
                status = client.get(f"/v1/renders/{render_id}").status_code
                elapsed = time.perf_counter() - began
                with lock:
                    latencies.append(elapsed)
                    if status != 200:
                        failures.append(status)

    began = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client_loop) for _ in range(clients)]:
            future.result()
    wall = time.perf_counter() - began
    latencies.sort()
    return {
        "requests": len(latencies),
        "non_200": len(failures),
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "max_ms": latencies[-1] * 1000,
        "requests_per_s": len(latencies) / wall,
    }


def upload_overhead(base: str, token: str, env: dict[str, str], bundle: Path, pairs: int, home: Path) -> dict[str, Any]:
    """The same bundle under new ids: through the API, and through `upload_bundle` in this process, alternating."""
    import httpx

    from avatar_assets.ops.uploads import upload_bundle
    from resources.media_store import LocalMediaStore

    store = LocalMediaStore(root=str(home))
    api_s, direct_s = [], []
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=120) as client:
        for index in range(pairs):
            body = multipart(bundle, f"bench-up-api-{index}")
            began = time.perf_counter()
            answer = client.post("/v1/avatars", **body)
            api_s.append(time.perf_counter() - began)
            if answer.status_code != 202:
                raise RuntimeError(f"upload answered {answer.status_code}: {answer.text}")
            copy = home.parent / f"bundle-{index}"
            shutil.copytree(bundle, copy)
            manifest = json.loads((copy / "manifest.json").read_text())
            (copy / "manifest.json").write_text(json.dumps({**manifest, "avatar_id": f"bench-up-direct-{index}"}))
            began = time.perf_counter()
            upload_bundle(store, copy)
            direct_s.append(time.perf_counter() - began)
    copy = home.parent / "bundle-cli"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "avatar_id": "bench-up-cli"}))
    cli_s, out = common.run_timed([str(common.VENV_BIN / "avatarops"), "upload", str(copy)], env)
    common.check_ok(out, "avatarops upload")
    return {"api_s": median(api_s), "in_process_s": median(direct_s), "cli_command_s": cli_s,
            "ratio": ratio(median(api_s), median(direct_s)), "api_all_s": api_s, "in_process_all_s": direct_s}


def measure(storage: str, root: Path, params: dict[str, Any], bundle: Path, extra_env: dict[str, str],
            with_uploads: bool) -> dict[str, Any]:
    home = common.prepare_home(root / "home")
    env = common.home_env(home, AVATAR_MASTER_SHORT_SIDE=str(params["master_short_side"]),
                          AVATAR_FPS=str(params["fps"]), **extra_env)
    token = avatarops(env, "tokens", "create", "--tenant", TENANT, "--scopes", SCOPES).strip().splitlines()[-1]
    with serving(env, root / "serve.log") as base:
        say(f"{storage}: building and rendering the sample through the API")
        render_id = render_one(base, token, env, bundle)
        say(f"{storage}: {params['clients']} clients x {params['requests_per_client']} GET /v1/renders/{{id}}")
        figures = {"get_render": poll(base, token, render_id, params["clients"], params["requests_per_client"])}
        if with_uploads:
            say(f"{storage}: {params['upload_pairs']} upload pairs, API against in-process")
            figures["upload"] = upload_overhead(base, token, env, bundle, params["upload_pairs"], home)
    return figures


def run(opts) -> dict[str, Any]:
    params = parameters(opts.quick)
    figures: dict[str, Any] = {}
    notes = []
    with common.workdir("api", opts.keep) as root:
        bundle = common.sample_bundle(root / "sample" / "astronaut")
        figures["sqlite"] = measure("sqlite", root / "sqlite", params, bundle, {}, with_uploads=True)
        if not opts.no_postgres:
            with common.postgres_database("bench_api") as database:
                home = common.prepare_home(root / "postgres" / "home")
                (home / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n"
                                                               + common.postgres_storage_yaml(database))
                figures["postgres"] = measure("postgres", root / "postgres", params, bundle, {}, with_uploads=False)
        else:
            notes.append("--no-postgres: the Postgres instance was not measured")
    return {
        "parameters": params,
        "figures": figures,
        "baseline": "upload: upload_bundle in this process (what `avatarops upload` runs) on the same bundle, "
                    "alternating with the API's uploads",
        "notes": notes + ["the server is one uvicorn process (the default `avatarops serve`); clients and server "
                          "share the machine's cores"],
    }


def summary(result: dict[str, Any]) -> list[str]:
    params, figures = result["parameters"], result["figures"]
    lines = []
    for storage in ("sqlite", "postgres"):
        if storage in figures:
            get = figures[storage]["get_render"]
            lines.append(f"GET /v1/renders/{{id}}, {params['clients']} clients x {params['requests_per_client']}, "
                         f"{storage} instance: p50 {get['p50_ms']:.0f} ms, p99 {get['p99_ms']:.0f} ms, "
                         f"{get['requests_per_s']:.1f} req/s, {get['non_200']} not 200")
    upload = figures["sqlite"]["upload"]
    lines.append(f"upload of the sample bundle: API {upload['api_s'] * 1000:.0f} ms against upload_bundle in-process "
                 f"{upload['in_process_s'] * 1000:.0f} ms (x{upload['ratio']:.2f}); `avatarops upload` as a command "
                 f"{upload['cli_command_s'] * 1000:.0f} ms")
    return lines
