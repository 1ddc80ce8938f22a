"""Photo -> avatar through the real stages, on synthetic people the project makes itself."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from models.bundle.gltf import read_glb
from models.errors import PipelineError
from models.pipeline import fit_stage, inpaint_stage
from models.render.player import AvatarPlayer, render_mp4
from models.synth.quick import person


@pytest.fixture(scope="module")
def synthetic():
    return person(seed=3)


@pytest.fixture(scope="module")
def avatar_dir(tmp_path_factory, synthetic):
    d = tmp_path_factory.mktemp("avatar")
    (d / "originals").mkdir()
    Image.fromarray(synthetic.image).save(d / "originals" / "photo_0.png")
    stages = []
    timings = fit_stage(d, lambda s, f: stages.append(s))
    timings.update(inpaint_stage(d, lambda s, f: stages.append(s)))
    assert set(timings) == {"detect", "fit", "texture", "inpaint", "bake"}
    assert stages[0] == "detect" and stages[-1] == "bake"
    return d


def test_fit_matches_the_synthetic_person(avatar_dir):
    fit = json.loads((avatar_dir / "fit" / "fit.json").read_text())
    assert fit["keypoint_error_pct"][0] < 3.0
    assert fit["silhouette_iou"][0] > 0.8


def test_bundle_is_rigged_textured_and_reports_quality(avatar_dir):
    mesh = read_glb(avatar_dir / "avatar.glb")
    assert mesh.num_joints > 20 and mesh.joints.shape[1] == 4
    assert np.allclose(mesh.weights.sum(1), 1, atol=1e-3)
    assert mesh.texture.shape[0] >= 512 and mesh.texture.std() > 10
    assert mesh.extras["body_model"] == "anny"
    quality = json.loads((avatar_dir / "quality.json").read_text())
    assert quality["texture"]["observed_fraction"] > 0.2
    from models.inpaint.registry import inpaint_method

    assert quality["inpaint"]["method"] == inpaint_method()  # diffusion when the shipped model is present


def test_front_render_resembles_the_photo(avatar_dir, synthetic):
    """The textured avatar seen from the front carries the photo's clothing colours."""
    tex = np.asarray(Image.open(avatar_dir / "texture" / "observed.png")).astype(float)
    observed = np.asarray(Image.open(avatar_dir / "texture" / "observed_mask.png")) > 0
    gt = synthetic.texture.astype(float)
    import cv2

    gt = cv2.resize(gt, tex.shape[:2][::-1], interpolation=cv2.INTER_NEAREST)
    err = np.abs(tex[observed] - gt[observed]).mean()
    assert err < 40, err  # photo shading darkens it; a wrong mapping is far worse


def test_rerunning_a_stage_is_safe(avatar_dir):
    before = (avatar_dir / "avatar.glb").stat().st_size
    inpaint_stage(avatar_dir)
    assert (avatar_dir / "avatar.glb").stat().st_size > 0.5 * before
    assert not list(avatar_dir.rglob("*.tmp"))


def test_turntable_frames_change_and_show_the_person(avatar_dir):
    player = AvatarPlayer.from_glb(avatar_dir / "avatar.glb")
    frames = list(player.frames("turntable", 128, 4, 4))
    assert len(frames) == 4
    assert all(f.shape == (128, 128, 3) for f in frames)
    diffs = [np.abs(frames[i].astype(int) - frames[i + 1]).mean() for i in range(3)]
    assert min(diffs) > 1.0
    person_pixels = (np.abs(frames[0].astype(int) - 255).sum(-1) > 30).mean()
    assert 0.05 < person_pixels < 0.6
    jpegs = list(player.jpeg_frames("walk", 96, 10, 3))
    assert all(j[:2] == b"\xff\xd8" for j in jpegs)


def test_mp4(avatar_dir, tmp_path):
    import av

    out = tmp_path / "out.mp4"
    render_mp4(avatar_dir / "avatar.glb", out, motion="wave", size=128, fps=10, frames=12)
    with av.open(str(out)) as c:
        frames = list(c.decode(video=0))
    assert len(frames) == 12 and frames[0].width == 128


def test_render_path_never_imports_torch(avatar_dir):
    code = (
        "import sys\n"
        "from models.render.player import AvatarPlayer\n"
        f"p = AvatarPlayer.from_glb({str(avatar_dir / 'avatar.glb')!r})\n"
        "list(p.jpeg_frames('dance', 64, 10, 2))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_photo_without_a_person_fails_cleanly(tmp_path):
    (tmp_path / "originals").mkdir()
    g = np.linspace(0, 255, 256, dtype=np.uint8)
    Image.fromarray(np.stack([np.tile(g, (256, 1))] * 3, -1)).save(tmp_path / "originals" / "photo_0.png")
    with pytest.raises(PipelineError) as err:
        fit_stage(tmp_path)
    assert err.value.code == "no_person_detected"
    assert not (tmp_path / "fit" / "fit.json").exists()
    with pytest.raises(PipelineError) as err:
        inpaint_stage(tmp_path)
    assert err.value.code == "fit_missing"


def test_pipeline_bundle_passes_the_khronos_validator(avatar_dir):
    from tests.test_bundle import _run_validator

    report = _run_validator(avatar_dir / "avatar.glb")
    assert report["issues"]["numErrors"] == 0, report["issues"]
