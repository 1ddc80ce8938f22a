"""bench/load.py runs end to end (short and small here) and writes its figures.

The targets (>= 1,000 status requests/s with p99 <= 50 ms; p95 <= 300 ms for 20
concurrent 3 MB uploads) are measured by the full run, ``bench/load.py --json``, on a
quiet machine; a test on a shared CI box checks that the benchmark works and that
every request was answered, not the figures.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("mode", ["redis", "embedded"])
def test_load_bench_quick(tmp_path: Path, mode: str) -> None:
    if mode == "redis" and shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    out = tmp_path / "load.json"
    result = subprocess.run(
        [sys.executable, "bench/load.py", "--mode", mode, "--seconds", "1", "--warmup", "0.3",
         "--concurrency", "4", "--uploads", "4", "--rounds", "1", "--upload-mb", "1",
         "--json", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    figures = json.loads(out.read_text())
    for key in ("status_rps", "status_p99_ms", "upload_p95_ms", "baseline_healthz_rps"):
        assert figures[key] > 0, key
    assert figures["status_errors"] == 0
    assert figures["status_requests"] > 0
    assert figures["upload_statuses"] == {"202": 4}
    assert figures["mode"] == mode
    assert "GET /v1/jobs/{id}" in result.stdout
