"""The Dagster UI on a real webserver and a real browser: after the sample avatar's identity is built,
the asset page of neutral_image[astronaut] shows the materialization, its numbers and the inline
thumbnail, and the GraphQL API serves the same metadata.

Needs Chromium (scripts/install-browser.sh installs Debian's); without it the browser tests skip,
unless AVATAR_REQUIRE_BROWSER=1 makes that a failure. Screenshots are written to the test's temporary
folder, and also to AVATAR_UI_ARTIFACTS when that is set.
"""

import base64
import io
import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.servers import (
    build_sample,
    chromium_binary,
    chromium_page,
    clean_env,
    dagster_webserver,
    graphql,
    run_chromium,
    upload_and_process,
    wait_until,
    write_instance_yaml,
)

pytestmark = pytest.mark.slow

AVATAR = "astronaut"
DATA_PNG = re.compile(r"!\[([^\]]*)\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)")

METADATA_QUERY = """
query Materialization($partition: String!) {
  assetOrError(assetKey: {path: ["neutral_image"]}) {
    __typename
    ... on Asset {
      assetMaterializations(partitions: [$partition], limit: 1) {
        partition
        runId
        metadataEntries {
          __typename
          label
          ... on MarkdownMetadataEntry { mdStr }
          ... on FloatMetadataEntry { floatValue }
          ... on IntMetadataEntry { intValue }
          ... on TextMetadataEntry { text }
          ... on PathMetadataEntry { path }
        }
      }
    }
  }
  assetNodeOrError(assetKey: {path: ["neutral_image"]}) {
    __typename
    ... on AssetNode {
      partitionKeys
      assetChecksOrError {
        __typename
        ... on AssetChecks {
          checks { name blocking executionForLatestMaterialization { status evaluation { success partition } } }
        }
      }
    }
  }
}
"""


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """A home where the identity of the sample avatar was built, and a webserver on it."""
    root = tmp_path_factory.mktemp("ui")
    avatar_home = root / "avatar-home"
    dagster_home = avatar_home / "dagster"
    # nux off: the first-visit "Join the Dagster community" dialog would cover the page.
    write_instance_yaml(dagster_home, "nux:\n  enabled: false\n")
    env = clean_env(AVATAR_HOME=avatar_home, DAGSTER_HOME=dagster_home, AVATAR_UPLOAD_SETTLE_SECONDS="0")
    report = upload_and_process(build_sample(root / "bundle" / AVATAR), env=env)
    assert report["ok"] and report["runs"], report
    with dagster_webserver(env=env, log_path=root / "webserver.log") as server:
        yield {"base_url": server.base_url, "root": root, "avatar_home": avatar_home, "server": server}


@pytest.fixture(scope="module")
def browser() -> str:
    binary = chromium_binary()
    if binary is None:
        message = "no Chromium: run scripts/install-browser.sh (apt-get install chromium chromium-driver)"
        if os.environ.get("AVATAR_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return binary


def asset_page_url(base_url: str) -> str:
    return f"{base_url}/assets/neutral_image?view=partitions&partition={AVATAR}"


def keep_artifact(path: Path) -> Path:
    target_dir = os.environ.get("AVATAR_UI_ARTIFACTS")
    if target_dir:
        Path(target_dir).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(target_dir) / path.name)
    return path


def assert_real_screenshot(path: Path, size: tuple[int, int] = (1400, 1000)) -> Image.Image:
    image = Image.open(path)
    image.load()
    assert image.format == "PNG" and image.size == size, (image.format, image.size)
    colours = image.convert("L").resize((140, 100)).getcolors(maxcolors=140 * 100)
    assert colours is not None and len(colours) > 8, "the screenshot is (nearly) blank"
    return image


def test_graphql_serves_the_materialization_metadata(ui):
    data = graphql(ui["base_url"], METADATA_QUERY, {"partition": AVATAR})
    asset = data["assetOrError"]
    assert asset["__typename"] == "Asset", asset
    [materialization] = asset["assetMaterializations"]
    assert materialization["partition"] == AVATAR
    entries = {entry["label"]: entry for entry in materialization["metadataEntries"]}

    preview = entries["preview"]
    assert preview["__typename"] == "MarkdownMetadataEntry"
    assert "data:image/png;base64," in preview["mdStr"]
    match = DATA_PNG.search(preview["mdStr"])
    assert match, preview["mdStr"][:200]
    thumbnail = Image.open(io.BytesIO(base64.b64decode(match.group(2))))
    assert thumbnail.format == "PNG" and max(thumbnail.size) == 192 and min(thumbnail.size) > 64

    assert entries["face_count"]["__typename"] == "IntMetadataEntry" and entries["face_count"]["intValue"] == 1
    assert entries["centre_offset"]["__typename"] == "FloatMetadataEntry"
    assert 0 <= entries["centre_offset"]["floatValue"] < 0.25
    assert entries["eye_angle_deg"]["__typename"] == "FloatMetadataEntry"
    assert abs(entries["eye_angle_deg"]["floatValue"]) < 10
    assert entries["seed"]["__typename"] == "IntMetadataEntry"
    assert entries["source_photo"]["text"] == "photos/portrait.jpg"
    assert entries["image"]["path"].startswith("file://") and entries["image"]["path"].endswith(".png")

    # The numbers are the record's numbers.
    record_path = ui["avatar_home"] / "records" / "avatars" / AVATAR / "neutral_image.json"
    record = json.loads(record_path.read_text())["record"]
    assert entries["centre_offset"]["floatValue"] == pytest.approx(record["centre_offset"])
    assert entries["eye_angle_deg"]["floatValue"] == pytest.approx(record["eye_angle_deg"])
    assert entries["record"]["path"] == record_path.resolve().as_uri()

    node = data["assetNodeOrError"]
    assert node["partitionKeys"] == [AVATAR]
    checks = {c["name"]: c for c in node["assetChecksOrError"]["checks"]}
    gate = checks["neutral_face_geometry"]
    assert gate["blocking"]
    assert gate["executionForLatestMaterialization"]["status"] == "SUCCEEDED"
    assert gate["executionForLatestMaterialization"]["evaluation"]["partition"] == AVATAR


def test_asset_page_renders_in_headless_chromium(ui, browser):
    """Plain Chromium flags: --dump-dom after a virtual-time budget, and --screenshot."""
    url = asset_page_url(ui["base_url"])
    root = ui["root"]
    dom = run_chromium(browser, root / "profile-dom", ["--virtual-time-budget=15000", "--dump-dom", url])
    assert dom.returncode == 0, dom.stderr[-3000:]
    html = dom.stdout
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style)\b.*?</\1>", "", html, flags=re.S)))
    for expected in ["neutral_image", "Partitions", AVATAR, "Materialized", "build_identity",
                     "preview", "[Show Markdown]", "centre_offset", "eye_angle_deg", "face_count", "classical"]:
        assert expected in text, f"{expected!r} not rendered on {url}:\n{text[:3000]}"

    shot = root / "neutral_image-astronaut-page.png"
    result = run_chromium(
        browser, root / "profile-shot", ["--virtual-time-budget=15000", f"--screenshot={shot}", url]
    )
    assert result.returncode == 0 and shot.is_file(), result.stderr[-3000:]
    assert_real_screenshot(keep_artifact(shot))


def test_thumbnail_preview_opens_in_the_browser(ui, browser):
    """Drive the page like a person: open "[Show Markdown]" on `preview`; the thumbnail must decode."""
    root = ui["root"]
    with chromium_page(browser, root / "profile-cdp", log_path=root / "chromium.log") as page:
        page.navigate(asset_page_url(ui["base_url"]))
        find_link = """[...document.querySelectorAll('a')].find(a => a.textContent.trim() === '[Show Markdown]')"""
        wait_until(lambda: page.evaluate(f"!!({find_link})"), timeout=60, what="the metadata table")
        assert page.evaluate("document.title") == "Assets | neutral_image"
        page.evaluate(f"({find_link}).click()")

        images_js = """[...document.querySelectorAll('img')]
            .filter(i => i.src.startsWith('data:image/png;base64,'))
            .map(i => ({complete: i.complete, width: i.naturalWidth, height: i.naturalHeight, alt: i.alt,
                        shown: i.getBoundingClientRect().width > 0}))"""
        images = wait_until(
            lambda: [i for i in page.evaluate(images_js) if i["complete"] and i["width"] > 0 and i["shown"]],
            timeout=30,
            what="the preview thumbnail to load",
        )
        assert images[0]["alt"] == "neutral image"
        assert max(images[0]["width"], images[0]["height"]) == 192
        assert page.evaluate("!!document.querySelector('[role=dialog]')"), "the preview opens in a dialog"
        time.sleep(0.3)  # let the dialog's opening transition finish before the screenshot
        shot = page.screenshot(root / "neutral_image-astronaut-preview.png")
    assert_real_screenshot(keep_artifact(shot))
