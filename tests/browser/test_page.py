"""The web page in a real browser: headless Debian chromium driven by Playwright against a
real ``avatars serve`` (gateway + embedded worker) on a free loopback port.

A person's path: pick a photo, watch the build reach 100 %, see the avatar stream and
move, turn the camera by dragging, change the motion, download the .glb, the MP4 and
the texture, open the 3D view (WebGL in software here) without a console error; the
page passes axe-core with no serious or critical violation. Also: errors in words, the
page under a reverse proxy's path prefix, and a browser without WebGL.

Screenshots and axe reports: ``test-artifacts/browser/`` (git-ignored).
"""

from __future__ import annotations

import base64
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO_ROOT, avatars_command, service_env

from browser_helpers import (
    ARTIFACTS,
    AXE_JS,
    CHROMIUM_ARGS,
    JOB_TIMEOUT_S,
    Gateway,
    PageWatch,
    build_avatar,
    chromium_path,
    image_difference,
    image_spread,
    run_axe,
    serve,
    serve_prefixed,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")

VIEWPORT = {"width": 1100, "height": 1300}
MS = 1000


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def browser() -> Iterator:
    executable = chromium_path()
    if executable is None:
        pytest.skip("chromium is not installed (scripts/test-deps.sh: apt-get install chromium)")
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("web-gateway")
    (workdir / "data").mkdir()
    with serve(workdir / "data", workdir / "serve.log") as running:
        yield running


@pytest.fixture(scope="module")
def photo_file(tmp_path_factory: pytest.TempPathFactory, person_photo: bytes) -> Path:
    """The synthetic person (models.synth.quick.person_photo(seed=0)) as a PNG file."""
    path = tmp_path_factory.mktemp("photo") / "person.png"
    path.write_bytes(person_photo)
    return path


@pytest.fixture(scope="module")
def built_avatar(gateway: Gateway, person_photo: bytes) -> str:
    """An avatar built through the API (for the tests that do not upload themselves)."""
    return build_avatar(gateway, person_photo)


@pytest.fixture
def page(browser) -> Iterator:
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(30 * MS)
    try:
        yield page
    finally:
        context.close()


def shot(target, name: str) -> bytes:
    """Screenshot of a page or an element, kept under test-artifacts/browser/."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    if hasattr(target, "goto"):
        return target.screenshot(path=str(path), full_page=True)
    return target.screenshot(path=str(path))


def open_page(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("html[data-ready=true]", state="attached")


def wait_stream_frame(page) -> None:
    """Until the stream <img> shows a real frame (not the 1-pixel blank)."""
    page.wait_for_function(
        "() => { const i = document.getElementById('stream');"
        " return i.complete && i.naturalWidth > 16; }",
        timeout=60 * MS,
    )


def download(page, selector: str, name: str, timeout_s: float = 120) -> bytes:
    with page.expect_download(timeout=timeout_s * MS) as info:
        page.click(selector)
    dl = info.value
    assert dl.failure() is None, dl.failure()
    target = ARTIFACTS / "downloads" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    dl.save_as(str(target))
    return target.read_bytes()


def assert_accessible(page, name: str) -> None:
    if not AXE_JS.exists():
        pytest.fail("axe-core is missing: run scripts/test-deps.sh (npm ci --prefix tests/browser)")
    serious = run_axe(page, name)
    assert serious == [], serious


def open_3d_view(page, name: str) -> None:
    """Open the 3D view and check that WebGL draws the animated avatar."""
    page.click("#open-3d")
    page.wait_for_function(
        "() => { const t = document.getElementById('viewer-status').textContent;"
        " return t && !t.startsWith('Loading'); }",
        timeout=120 * MS,
    )
    status = page.text_content("#viewer-status")
    assert status.startswith("3D view ready"), status
    page.wait_for_function(
        "() => Number(document.getElementById('viewer').dataset.frames || 0) >= 10",
        timeout=60 * MS,
    )
    canvas = page.locator("#viewer canvas")
    assert canvas.get_attribute("aria-label")
    first = shot(canvas, f"{name}-3d-view")
    assert image_spread(first) > 10, "the 3D view is empty"
    # Software WebGL on a loaded CI machine draws few frames a second: wait (bounded) for
    # the animation to move the avatar visibly rather than sampling once after 1 s.
    moved = 0.0
    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline:
        time.sleep(1.0)
        second = shot(canvas, f"{name}-3d-view-later")
        moved = image_difference(first, second)
        if moved > 0.05:
            break
    assert moved > 0.05, f"the 3D avatar does not move (difference {moved:.3f})"


# --------------------------------------------------------------------- tests
def test_photo_to_avatar_in_the_browser(page, gateway: Gateway, photo_file: Path) -> None:
    watch = PageWatch(page)
    open_page(page, gateway.url)
    assert page.title().startswith("Avatars")
    assert page.locator("#motion option").count() >= 3  # from GET v1/motions
    assert_accessible(page, "start")

    # keyboard: the skip link, the API key panel, then the photo picker
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip-link"
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "photos"

    # pick the photo, upload, watch the build stage by stage
    page.set_input_files("#photos", str(photo_file))
    assert page.locator("#previews img").count() == 1
    assert page.is_enabled("#create")
    page.click("#create")
    seen: list[int] = []
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        if page.is_visible("#message.error"):
            pytest.fail(f"error shown: {page.text_content('#message')}\n{gateway.log()[-3000:]}")
        value = int(page.get_attribute("#progress", "value") or 0)
        if not seen or seen[-1] != value:
            seen.append(value)
            if len(seen) == 2:
                shot(page, "main-progress")
        if value >= 100:
            break
        time.sleep(0.3)
    assert seen and seen[-1] == 100, (seen, gateway.log()[-3000:])
    assert any(0 < v < 100 for v in seen), f"no progress between 0 and 100 %: {seen}"
    assert seen == sorted(seen), f"progress went backwards: {seen}"
    assert page.locator("#stages li.done").count() == 5
    events_missing = any(e.endswith("/events") for e in watch.http_errors)
    source = page.text_content("#progress-source")
    # Server-Sent Events where the gateway has them; polling otherwise
    assert source.startswith("Checking" if events_missing else "Live updates"), source
    assert "ready" in page.text_content("#progress-text")

    # the result: the streamed avatar moves
    page.wait_for_selector("#result-section", state="visible", timeout=60 * MS)
    assert re.fullmatch(r"#avatar=[0-9a-f]{32}", page.evaluate("location.hash"))
    wait_stream_frame(page)
    stream = page.locator("#stream")
    src = stream.get_attribute("src")
    assert src.startswith("v1/avatars/") and "motion=turntable" in src and "loop=true" in src
    first = shot(stream, "main-stream-1")
    time.sleep(1.0)
    second = shot(stream, "main-stream-2")
    assert image_difference(first, second) > 0.5, "the streamed avatar does not change"
    assert "Body fit" in page.text_content("#quality")
    assert "IoU" in page.text_content("#quality")
    shot(page, "main-result")

    # drag to orbit, arrow keys, motion and size pickers
    box = stream.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 - 120, box["y"] + box["height"] / 2, steps=6)
    page.mouse.up()
    src = stream.get_attribute("src")
    assert "yaw=60" in src, src
    assert "turned 60°" in page.text_content("#view-angles")
    stream.focus()
    page.keyboard.press("ArrowUp")
    assert "elevation=15" in stream.get_attribute("src")
    page.select_option("#motion", "wave")
    page.select_option("#size", "256")
    src = stream.get_attribute("src")
    assert "motion=wave" in src and "size=256" in src and "yaw=60" in src
    wait_stream_frame(page)
    time.sleep(0.5)
    shot(stream, "main-stream-orbit-wave")

    # downloads: the .glb, an MP4 of the chosen motion, the texture
    glb = download(page, "#dl-glb", "avatar.glb")
    assert glb[:4] == b"glTF" and int.from_bytes(glb[4:8], "little") == 2
    texture = download(page, "#dl-texture", "texture.png")
    assert texture[:8] == b"\x89PNG\r\n\x1a\n"
    mp4 = download(page, "#dl-mp4", "wave.mp4", timeout_s=180)
    assert mp4[4:8] == b"ftyp"

    # the 3D view in the browser, animated
    open_3d_view(page, "main")
    page.select_option("#viewer-motion", "arm_swing")
    time.sleep(0.5)
    shot(page, "main-with-3d-view")
    assert_accessible(page, "result")

    assert watch.unexpected() == ([], []), watch.unexpected()

    # start over: the form is back, the stream has stopped
    page.click("#start-over")
    assert page.is_hidden("#result-section") and page.evaluate("location.hash") == ""
    assert page.get_attribute("#stream", "src").startswith("data:")


def test_errors_are_shown_in_words(
    page, gateway: Gateway, tmp_path: Path, no_person_photo: bytes
) -> None:
    open_page(page, gateway.url)
    # not an image, although it is called .png: refused by the gateway (415)
    broken = tmp_path / "holiday.png"
    broken.write_bytes(b"this is not a picture at all")
    page.set_input_files("#photos", str(broken))
    page.click("#create")
    page.wait_for_selector("#message.error", state="visible")
    text = page.text_content("#message")
    assert "not a photo we can read" in text and "invalid_image" in text, text
    assert page.is_enabled("#create")  # the person can try again

    # a picture without a person, dropped on the page: the build fails at its first stage
    page.evaluate(
        """(b64) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const data = new DataTransfer();
            data.items.add(new File([bytes], 'wall.png', {type: 'image/png'}));
            const zone = document.getElementById('drop-zone');
            zone.dispatchEvent(new DragEvent('dragover', {dataTransfer: data, bubbles: true, cancelable: true}));
            zone.dispatchEvent(new DragEvent('drop', {dataTransfer: data, bubbles: true, cancelable: true}));
        }""",
        base64.b64encode(no_person_photo).decode("ascii"),
    )
    assert page.text_content("#previews") == "wall.png"
    assert page.is_hidden("#message")
    page.click("#create")
    page.wait_for_function(
        "() => document.getElementById('message').textContent.includes('could not find a person')",
        timeout=JOB_TIMEOUT_S * MS,
    )
    assert "no_person_detected" in page.text_content("#message")
    assert page.locator("#stages li.failed").count() == 1
    assert page.is_hidden("#result-section")
    shot(page, "errors-no-person")
    assert_accessible(page, "error")

    # a file that is not an image at all is refused in the browser, before any upload
    text_file = tmp_path / "notes.txt"
    text_file.write_text("hello")
    page.set_input_files("#photos", str(text_file))
    assert "notes.txt: not a photo we can use" in page.text_content("#message")
    assert page.is_disabled("#create")


def test_page_under_a_path_prefix(
    page, gateway: Gateway, built_avatar: str, tmp_path: Path
) -> None:
    """Behind a reverse proxy at /proxy/avatars/ every asset and API call keeps the prefix."""
    with serve_prefixed(gateway.data_dir, tmp_path / "prefixed.log", "/proxy/avatars") as proxied:
        assert proxied.url.endswith("/proxy/avatars/")
        watch = PageWatch(page)
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        open_page(page, f"{proxied.url}#avatar={built_avatar}")
        page.wait_for_selector("#result-section", state="visible", timeout=60 * MS)
        wait_stream_frame(page)
        glb = download(page, "#dl-glb", "prefixed-avatar.glb")
        assert glb[:4] == b"glTF"
        open_3d_view(page, "prefixed")
        shot(page, "prefixed-result")
        origin = proxied.url.split("/proxy/")[0]
        outside = [u for u in requests if u.startswith(origin) and "/proxy/avatars/" not in u]
        assert outside == [], outside
        assert not [u for u in requests if not u.startswith((origin, "data:", "blob:"))]
        assert watch.unexpected() == ([], []), watch.unexpected()


def test_without_webgl_the_page_says_so(page, gateway: Gateway, built_avatar: str) -> None:
    page.add_init_script(
        """(() => {
            const original = HTMLCanvasElement.prototype.getContext;
            HTMLCanvasElement.prototype.getContext = function (type, ...rest) {
                return /webgl/i.test(type) ? null : original.call(this, type, ...rest);
            };
        })();"""
    )
    watch = PageWatch(page)
    open_page(page, f"{gateway.url}#avatar={built_avatar}")
    page.wait_for_selector("#result-section", state="visible", timeout=60 * MS)
    page.click("#open-3d")
    page.wait_for_function(
        "() => document.getElementById('viewer-status').textContent.includes('WebGL')"
    )
    assert "cannot show 3D" in page.text_content("#viewer-status")
    assert page.is_hidden("#viewer")
    assert watch.unexpected() == ([], []), watch.unexpected()


def create_api_key(data_dir: Path, tenant: str) -> str:
    """``avatars keys create`` on ``data_dir``; skips where this checkout has no API keys."""
    result = subprocess.run(
        avatars_command("keys", "create", "--tenant", tenant),
        env=service_env(data_dir, redis_url=None),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0 and "No such command" in result.stderr:
        pytest.skip("this gateway has no API keys (avatars keys create)")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_with_an_api_key(page, tmp_path: Path, photo_file: Path) -> None:
    """Auth on: the page asks for the key, keeps it in sessionStorage only and sends it as
    'Authorization: Bearer' on every call, streams and downloads included (an <img> or a
    link cannot send a header: the page fetches them)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    key = create_api_key(data_dir, "web-test")
    env = {"AVATARS_ALLOW_ANONYMOUS": "false"}
    with serve(data_dir, tmp_path / "serve.log", extra_env=env) as gateway:
        watch = PageWatch(page)
        sent: list[str | None] = []
        page.on(
            "request",
            lambda r: "/v1/" in r.url and sent.append(r.headers.get("authorization")),
        )
        open_page(page, gateway.url)
        # without a key the API answers 401: the page opens the key field
        assert page.get_attribute("#key-panel", "open") is not None
        assert "asks for an API key" in page.text_content("#key-status")
        page.fill("#api-key", key)
        page.click("#key-form button[type=submit]")
        page.wait_for_function("() => document.getElementById('motion').options.length >= 3")
        stored = page.evaluate("sessionStorage.getItem('avatars.apiKey')")
        assert stored == key
        assert page.evaluate("localStorage.length") == 0
        assert page.evaluate("document.cookie") == ""

        page.set_input_files("#photos", str(photo_file))
        page.click("#create")
        page.wait_for_function(
            "() => document.getElementById('progress').value === 100 || "
            "!document.getElementById('message').hidden",
            timeout=JOB_TIMEOUT_S * MS,
        )
        assert page.is_hidden("#message"), (page.text_content("#message"), gateway.log()[-3000:])
        page.wait_for_selector("#result-section", state="visible", timeout=60 * MS)
        wait_stream_frame(page)
        stream = page.locator("#stream")
        assert stream.get_attribute("src").startswith("blob:")  # frames read with fetch
        first = shot(stream, "auth-stream-1")
        time.sleep(1.0)
        assert image_difference(first, shot(stream, "auth-stream-2")) > 0.5
        glb = download(page, "#dl-glb", "auth-avatar.glb")
        assert glb[:4] == b"glTF"
        open_3d_view(page, "auth")
        shot(page, "auth-result")

        after_key = sent[sent.index(f"Bearer {key}"):]
        assert after_key and all(h == f"Bearer {key}" for h in after_key), sent
        errors, http = watch.unexpected()
        # the calls made before the key was given were refused, as they should be
        assert all(e.startswith("401 ") for e in http), http
        assert all("401" in e for e in errors), errors
