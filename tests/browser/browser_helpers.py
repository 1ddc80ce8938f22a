"""Helpers of the browser tests: find Debian's chromium, start gateways, check pages.

Playwright drives the system ``chromium`` (``apt-get install -y chromium``); it never
downloads a browser. Every wait is bounded; every process started here is stopped here.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from conftest import REPO_ROOT, avatars_command, free_port, service_env, stop_process, wait_until

BROWSER_DIR = Path(__file__).resolve().parent
ARTIFACTS = REPO_ROOT / "test-artifacts" / "browser"
AXE_JS = BROWSER_DIR / "node_modules" / "axe-core" / "axe.min.js"
#: Headless, offline, software WebGL (SwiftShader): what CI machines without a GPU have.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--enable-unsafe-swiftshader",
    "--use-angle=swiftshader",
]
JOB_TIMEOUT_S = 300


def chromium_path() -> str | None:
    """The system chromium: $AVATARS_TEST_CHROMIUM, else chromium on the PATH."""
    configured = os.environ.get("AVATARS_TEST_CHROMIUM")
    if configured:
        return configured
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class Gateway:
    url: str  # with a trailing slash: the page
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen = field(repr=False)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)


def _wait_ready(proc: subprocess.Popen, log_path: Path, url: str, path: str) -> None:
    with httpx.Client(timeout=5) as http:

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(log_path.read_text(errors="replace"))
            try:
                return http.get(url + path).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, 120, interval_s=0.5, what=f"{url}{path}")


@contextmanager
def _gateway_process(command: list[str], env: dict[str, str], data_dir: Path, log_path: Path,
                     url: str, ready_path: str, stop_timeout_s: float) -> Iterator[Gateway]:
    """Run a gateway ``command`` logging to ``log_path``; yield it once ``ready_path``
    answers, stop it afterwards."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
        gateway = Gateway(url, data_dir, log_path, proc)
        try:
            _wait_ready(proc, log_path, gateway.url, ready_path)
            yield gateway
        finally:
            stop_process(proc, timeout_s=stop_timeout_s)


@contextmanager
def serve(
    data_dir: Path, log_path: Path, extra_env: dict[str, str] | None = None
) -> Iterator[Gateway]:
    """``avatars serve`` (embedded mode: gateway + worker process) on a free port."""
    port = free_port()
    env = {**service_env(data_dir, redis_url=None), **(extra_env or {})}
    with _gateway_process(avatars_command("serve", "--host", "127.0.0.1", "--port", str(port)), env,
                          data_dir, log_path, f"http://127.0.0.1:{port}/", "readyz", 60) as gateway:
        yield gateway


@contextmanager
def serve_prefixed(data_dir: Path, log_path: Path, prefix: str) -> Iterator[Gateway]:
    """The gateway mounted under ``prefix`` (tests/browser/prefixed_gateway.py)."""
    port = free_port()
    env = service_env(data_dir, redis_url=None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    command = [sys.executable, str(BROWSER_DIR / "prefixed_gateway.py"), prefix, str(port)]
    with _gateway_process(command, env, data_dir, log_path, f"http://127.0.0.1:{port}{prefix}/",
                          "healthz", 30) as gateway:
        yield gateway


def build_avatar(gateway: Gateway, photo_png: bytes) -> str:
    """Upload through the API and wait (bounded) for the build; the avatar id."""
    with gateway.api() as http:
        created = http.post("v1/avatars", files=[("photos", ("person.png", photo_png, "image/png"))])
        assert created.status_code == 202, created.text
        body = created.json()

        def finished():
            job = http.get(f"v1/jobs/{body['job_id']}").json()
            return job if job["state"] in ("succeeded", "failed", "cancelled") else None

        job = wait_until(finished, JOB_TIMEOUT_S, interval_s=0.5, what="the avatar build")
        assert job["state"] == "succeeded", (job, gateway.log()[-3000:])
        return body["avatar_id"]


class PageWatch:
    """Console errors, uncaught exceptions and failed requests of a page."""

    def __init__(self, page) -> None:
        self.errors: list[str] = []
        self.http_errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on(
            "response",
            lambda r: r.status >= 400 and self.http_errors.append(f"{r.status} {r.url}"),
        )

    def _console(self, message) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")

    def unexpected(self) -> tuple[list[str], list[str]]:
        """Errors and failed requests, less the one the page expects on a gateway without
        job events: 404 from GET v1/jobs/{id}/events (it then polls the job instead)."""
        events = [e for e in self.http_errors if re.fullmatch(r"404 \S+/v1/jobs/[0-9a-f]{32}/events", e)]
        http = [e for e in self.http_errors if e not in events]
        errors = list(self.errors)
        for _ in events:
            text = "console: Failed to load resource: the server responded with a status of 404 (Not Found)"
            if text in errors:
                errors.remove(text)
        return errors, http


def image_difference(png_a: bytes, png_b: bytes) -> float:
    """Mean absolute difference of two screenshots, 0..255."""
    import numpy as np
    from PIL import Image

    a = np.asarray(Image.open(io.BytesIO(png_a)).convert("RGB"), np.float32)
    b = np.asarray(Image.open(io.BytesIO(png_b)).convert("RGB"), np.float32)
    if a.shape != b.shape:
        return 255.0
    return float(np.abs(a - b).mean())


def image_spread(png: bytes) -> float:
    """Standard deviation of a screenshot's pixels: about 0 for an empty picture."""
    import numpy as np
    from PIL import Image

    return float(np.asarray(Image.open(io.BytesIO(png)).convert("L"), np.float32).std())


def run_axe(page, name: str) -> list[dict]:
    """axe-core on the page as it is now; saves the report; the serious and critical
    violations."""
    page.evaluate(AXE_JS.read_text(encoding="utf-8"))
    result = page.evaluate(
        """async () => {
            const r = await axe.run(document, {resultTypes: ['violations']});
            return r.violations.map(v => ({
                id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5),
            }));
        }"""
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"axe-{name}.json").write_text(json.dumps(result, indent=2))
    return [v for v in result if v["impact"] in ("serious", "critical")]
