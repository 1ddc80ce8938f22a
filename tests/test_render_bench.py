"""``bench/render.py --quick`` runs end to end (builds an avatar with the real pipeline,
serves it with a real uvicorn gateway) and writes every figure with a sane value.

Speed targets are not asserted here: CI machines are noisy. The full run
(``python bench/render.py --json out.json``) prints each figure next to its target.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

POSITIVE = [
    "single_stream_fps",
    "single_stream_fps_uncached_pose",
    "baseline_single_stream_fps",
    "speedup_vs_baseline",
    "four_streams_total_fps",
    "single_http_stream_fps",
    "first_frame_ms_cached",
    "first_frame_ms_cold",
    "first_frame_ms_new_process",
    "gateway_start_s",
    "mp4_120_frames_seconds",
    "mp4_120_frames_seconds_inprocess",
    "avatar_arrays_mb",
    "ms_pose_uncached",
    "ms_skin_clip",
    "ms_rasterize_texture_aa",
    "ms_jpeg",
]


def test_render_bench_quick(tmp_path: Path) -> None:
    out = tmp_path / "render.json"
    proc = subprocess.run(
        [sys.executable, "bench/render.py", "--quick", "--json", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert all(not isinstance(v, (dict, list)) for v in figures.values())  # flat
    for key in POSITIVE:
        value = figures[key]
        assert isinstance(value, float) and math.isfinite(value) and value > 0, (key, value)
    # Memory per cached avatar: RSS growth can be ~0 when freed heap is reused, never huge.
    assert -50 < figures["avatar_cache_mb"] < 500
    assert 1 < figures["avatar_arrays_mb"] < 200
    assert figures["four_streams_frames"] == 4 * figures["frames_per_stream"]
    assert figures["mp4_bytes"] > 1000
    assert figures["size"] == 512 and figures["jpeg_quality"] == 85
    assert figures["vertices"] > 1000 and figures["triangles"] > 1000
    assert figures["backend"] in ("cpu", "cuda")
    # The fast rasterizer beats the numpy baseline (by ~60x on 2 cores; 3x is safe).
    assert figures["single_stream_fps"] > 3 * figures["baseline_single_stream_fps"]
    # The report names the targets.
    assert "target >= 60" in proc.stdout
