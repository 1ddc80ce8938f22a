"""Diffusion inpainting in texture space: low-resolution atlas, colour matching, the model
folder and its checksums, training (2 steps of a tiny model on tiny data) and resuming,
the CLI, and the inpaint stage with each method. Tiny seeded models only."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.errors import ModelAssetError, PipelineError
from models.inpaint.apply import colour_match, diffusion_fill
from models.inpaint.lowres import atlas_maps, downsample_partial
from models.inpaint.model import DiffusionInpainter, InpaintConfig, build_unet, save_model

TINY = {"atlas_size": 16, "block_out_channels": (8, 16), "attention_levels": (1,), "norm_num_groups": 4,
        "attention_head_dim": 8, "steps": 2}


@pytest.fixture(scope="module")
def anny():
    from models.body.registry import get_body

    return get_body("anny")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, anny) -> Path:
    import torch

    torch.manual_seed(0)
    cfg = InpaintConfig(**TINY, uv_fingerprint=atlas_maps(anny, 16).fingerprint)
    return save_model(tmp_path_factory.mktemp("model") / "model", build_unet(cfg), cfg)


def test_downsample_partial_counts_a_low_texel_observed_when_half_of_it_was():
    T, S = 8, 2
    rgb = np.zeros((T, T, 3), np.float32)
    rgb[:4, :4] = 0.5
    obs = np.zeros((T, T), bool)
    obs[:4, :2] = True  # half of block (0, 0)
    obs[4:, 4] = True  # a quarter of block (1, 1)
    low, low_obs = downsample_partial(rgb, obs, np.ones((T, T), bool), S)
    assert low_obs.tolist() == [[True, False], [False, False]]
    assert low[0, 0] == pytest.approx([0.5] * 3) and (low[1, 1] == 0).all()


def test_colour_match_recovers_a_shared_linear_adjustment():
    rng = np.random.default_rng(0)
    pred = rng.uniform(0.1, 0.9, (32, 32, 3)).astype(np.float32)
    alpha, beta = np.array([0.8, 0.9, 1.1]), np.array([0.05, -0.02, 0.0])
    obs = pred * alpha + beta
    where = np.zeros((32, 32), bool)
    where[:10] = True
    a, b = colour_match(pred, obs, where)
    assert a == pytest.approx(alpha, abs=1e-3) and b == pytest.approx(beta, abs=1e-3)
    a, b = colour_match(pred, obs, np.zeros((32, 32), bool))  # nothing observed: identity
    assert (a == 1).all() and (b == 0).all()


def test_sampling_is_seeded_and_uses_the_requested_steps_and_sampler(tiny_model, anny):
    model = DiffusionInpainter.from_dir(tiny_model)
    maps = atlas_maps(anny, 16)
    partial = np.full((16, 16, 3), 0.5, np.float32)
    observed = maps.covered.copy()
    observed[8:] = False
    a = model(partial, observed, maps, seed=1)
    b = model(partial, observed, maps, seed=1)
    assert a.texture.shape == (16, 16, 3) and np.array_equal(a.texture, b.texture)
    assert a.steps == 2 and a.sampler == "ddim"
    c = model(partial, observed, maps, steps=3, sampler="dpm", seed=1)
    assert c.steps == 3 and c.sampler == "dpm" and 0 <= c.texture.min() and c.texture.max() <= 1
    with pytest.raises(ValueError):
        model(partial[:8], observed, maps)


def test_diffusion_fill_keeps_observed_texels_at_full_resolution(tiny_model, anny):
    from models.texture.atlas import texel_map

    top = anny.topology
    tm = texel_map(top.uvs, top.faces, 64)
    rng = np.random.default_rng(0)
    rgb = rng.uniform(0, 1, (64, 64, 3)).astype(np.float32)
    observed = tm.covered.copy()
    observed[32:] = False
    res = diffusion_fill(rgb, observed, tm.covered, anny, DiffusionInpainter.from_dir(tiny_model))
    assert np.array_equal(res.texture[observed], rgb[observed])
    unseen = tm.covered & ~observed
    assert np.isfinite(res.texture).all() and res.texture[unseen].std() >= 0
    assert res.low.shape == (16, 16, 3) and res.steps == 2 and set(res.colour) == {"alpha", "beta"}


def test_model_folder_is_checked_and_errors_name_the_file(tiny_model, tmp_path, monkeypatch):
    import shutil

    from models.inpaint import registry

    monkeypatch.setenv(registry.MODEL_DIR_SETTING, str(tiny_model))
    monkeypatch.delenv(registry.METHOD_SETTING, raising=False)
    src = registry.model_source()
    assert src.name == "configured" and set(src.expected) >= {"unet/diffusion_pytorch_model.safetensors"}
    registry.verify(src)
    assert registry.inpaint_method() == "diffusion"

    bad = tmp_path / "bad"
    shutil.copytree(tiny_model, bad)
    weights = bad / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"corrupt!")
    monkeypatch.setenv(registry.MODEL_DIR_SETTING, str(bad))
    with pytest.raises(ModelAssetError) as err:
        registry.get_inpainter()
    assert str(weights) in err.value.message and "corrupt" in err.value.message
    assert "avatars train inpaint" in err.value.message
    weights.unlink()
    with pytest.raises(ModelAssetError, match="missing"):
        registry.get_inpainter()
    monkeypatch.setenv(registry.MODEL_DIR_SETTING, str(tmp_path / "nowhere"))
    with pytest.raises(ModelAssetError, match="avatars train inpaint"):
        registry.model_source()
    monkeypatch.setenv(registry.METHOD_SETTING, "magic")
    with pytest.raises(PipelineError) as err:
        registry.inpaint_method()
    assert err.value.code == "invalid_setting"


def test_shipped_weights_match_the_registry_and_the_body():
    """Every file the registry lists is in the repository with its sha256, <= 30 MB in all."""
    from models.inpaint import registry

    reg = registry.read_registry()
    if registry.DEFAULT_MODEL not in reg:
        pytest.skip("no default inpainting model is registered in this checkout")
    entry = reg[registry.DEFAULT_MODEL]
    assert entry["purpose"] and entry["how_to_obtain"]
    path = registry.WEIGHTS_DIR / entry["path"]
    src = registry.ModelSource(registry.DEFAULT_MODEL, path, {k: v["sha256"] for k, v in entry["files"].items()})
    registry.verify(src)
    total = sum((path / f).stat().st_size for f in entry["files"])
    assert total <= 30 * 1024 * 1024
    cfg = json.loads((path / "inpaint.json").read_text())
    from models.body.registry import get_body
    from models.inpaint.lowres import uv_fingerprint

    assert cfg["uv_fingerprint"] == uv_fingerprint(get_body("anny").topology)
    assert cfg["training"]["seeds"][1] < 1_000_000  # never the benchmark's people


def test_publish_makes_a_trained_model_the_checked_default(tiny_model, tmp_path, monkeypatch):
    from models.inpaint import registry

    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path / "weights")
    monkeypatch.setattr(registry, "REGISTRY_PATH", tmp_path / "weights" / "registry.json")
    monkeypatch.delenv(registry.MODEL_DIR_SETTING, raising=False)
    (tmp_path / "weights").mkdir()
    registry.REGISTRY_PATH.write_text("{}")
    assert registry.model_source() is None

    dest = registry.publish_default(tiny_model)
    assert dest == tmp_path / "weights" / registry.DEFAULT_MODEL
    entry = registry.read_registry()[registry.DEFAULT_MODEL]
    assert set(entry["files"]) == {"inpaint.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                                   "scheduler/scheduler_config.json"}
    src = registry.model_source()
    assert src.name == registry.DEFAULT_MODEL and src.path == dest
    registry.verify(src)  # every file with its sha256
    assert not list((tmp_path / "weights").glob("*.tmp*"))  # nothing half-written left


def test_train_cli_makes_pairs_trains_two_steps_and_resumes(tmp_path):
    from click.testing import CliRunner

    from service.cli import main

    runner = CliRunner()
    pairs, run = tmp_path / "pairs", tmp_path / "run"
    res = runner.invoke(main, ["train", "data", "--n", "3", "--seed", "10", "--size", "16", "--photo-size", "128",
                               "--texel-size", "64", "--out", str(pairs)])
    assert res.exit_code == 0, res.output
    from models.inpaint.data import load_pairs

    data = load_pairs(pairs)
    assert data["partial"].shape == (3, 16, 16, 3) and data["seed"].tolist() == [10, 11, 12]
    assert data["observed"].any() and not data["observed"].all()
    args = ["train", "inpaint", "--data", str(pairs), "--out", str(run), "--batch-size", "2",
            "--channels", "8,16", "--val-every", "0", "--checkpoint-every", "1"]
    res = runner.invoke(main, args + ["--steps", "2"])
    assert res.exit_code == 0, res.output
    assert (run / "model" / "unet" / "diffusion_pytorch_model.safetensors").exists()
    assert (run / "model" / "scheduler" / "scheduler_config.json").exists()
    res = runner.invoke(main, args + ["--steps", "3"])  # resumes at step 2
    assert res.exit_code == 0, res.output
    log = (run / "loss_log.csv").read_text().splitlines()
    assert log[0].startswith("step,loss") and log[-1].startswith("3,")
    cfg = json.loads((run / "model" / "inpaint.json").read_text())
    assert cfg["training"]["steps"] == 3 and cfg["training"]["seeds"] == [10, 12]
    model = DiffusionInpainter.from_dir(run / "model")
    assert model.cfg.atlas_size == 16
    res = runner.invoke(main, ["train", "data", "--n", "2", "--seed", "999999", "--out", str(tmp_path / "x")])
    assert res.exit_code != 0 and "1000000" in res.output  # benchmark seeds are refused


def test_train_init_from_starts_a_new_run_from_a_model_and_records_it(tmp_path):
    """--init-from: the run's first weights are the given model's (same architecture)."""
    import torch
    from click.testing import CliRunner
    from diffusers import UNet2DModel

    from service.cli import main

    runner = CliRunner()
    pairs, first, second = tmp_path / "pairs", tmp_path / "first", tmp_path / "second"
    assert runner.invoke(main, ["train", "data", "--n", "2", "--seed", "20", "--size", "16", "--photo-size", "128",
                                "--texel-size", "64", "--out", str(pairs)]).exit_code == 0
    base = ["train", "inpaint", "--data", str(pairs), "--batch-size", "2", "--val-every", "0"]
    res = runner.invoke(main, base + ["--out", str(first), "--steps", "1", "--channels", "8,16"])
    assert res.exit_code == 0, res.output
    # a tiny learning rate: the second run's weights stay next to the first run's model
    res = runner.invoke(main, base + ["--out", str(second), "--steps", "1", "--lr", "1e-9",
                                      "--init-from", str(first / "model")])
    assert res.exit_code == 0, res.output
    a = UNet2DModel.from_pretrained(first / "model" / "unet").state_dict()
    b = UNet2DModel.from_pretrained(second / "model" / "unet").state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)
    rec = json.loads((second / "train.json").read_text())
    assert rec["init_from"] == str(first / "model") and rec["model"]["block_out_channels"] == [8, 16]
    bad = runner.invoke(main, base + ["--out", str(tmp_path / "third"), "--init-from", str(pairs)])
    assert bad.exit_code != 0 and "inpaint.json" in bad.output


def test_training_targets_are_matched_to_the_photos_colours():
    """Each target is mapped per channel onto its partial texture's observed texels."""
    from models.inpaint.train import matched_targets

    rng = np.random.default_rng(0)
    target = rng.integers(40, 200, (2, 16, 16, 3)).astype(np.uint8)
    observed = np.zeros((2, 16, 16), bool)
    observed[:, :, :8] = True
    partial = np.clip(target.astype(np.float32) * 0.6 + 30, 0, 255).astype(np.uint8)  # a darker, lifted light
    partial[~observed] = 0
    got = matched_targets(partial, observed, target)
    want = np.clip(target.astype(np.float32) * 0.6 + 30, 0, 255)
    assert np.abs(got.astype(np.float32) - want).max() <= 2  # unseen texels too: same light


def test_the_model_before_retraining_stays_shipped_for_comparison():
    from models.inpaint import registry

    src = registry.shipped_source("inpaint_tight64")
    if src is None:
        pytest.skip("inpaint_tight64 is not in this checkout")
    registry.verify(src)
    assert registry.shipped_source("no_such_model") is None
    assert src.path != registry.model_source().path


def _avatar_from_ground_truth(root: Path) -> Path:
    """An avatar directory whose fit stage is replaced by the synthetic person's ground truth."""
    from models.synth.quick import person

    p = person(seed=3)
    d = root / "avatar"
    (d / "originals").mkdir(parents=True)
    (d / "fit").mkdir()
    Image.fromarray(p.image).save(d / "originals" / "photo_0.png")
    Image.fromarray(p.mask.astype(np.uint8) * 255).save(d / "fit" / "mask_0.png")
    (d / "fit" / "fit.json").write_text(json.dumps({
        "body_model": "anny", "shape": p.shape.tolist(), "poses": [p.pose.tolist()],
        "cameras": [p.camera.to_dict()], "photos": ["photo_0.png"], "keypoint_error_pct": [0.0],
        "silhouette_iou": [1.0], "warnings": [],
    }))
    return d


def test_inpaint_stage_records_the_method_and_writes_the_artefacts(tmp_path, tiny_model, monkeypatch):
    from models.inpaint import registry
    from models.pipeline import inpaint_stage

    d = _avatar_from_ground_truth(tmp_path)
    monkeypatch.setenv(registry.MODEL_DIR_SETTING, str(tiny_model))
    monkeypatch.setenv(registry.STEPS_SETTING, "3")
    monkeypatch.delenv(registry.METHOD_SETTING, raising=False)
    inpaint_stage(d)
    q = json.loads((d / "quality.json").read_text())["inpaint"]
    assert q["method"] == "diffusion" and q["steps"] == 3 and q["model"] == "configured"
    tex = d / "texture"
    for name in ("observed.png", "observed_mask.png", "sampled_mask.png", "gap_filled_mask.png",
                 "unseen_mask.png", "inpainted_low.png", "inpainted.png"):
        assert (tex / name).exists(), name
    seen = np.asarray(Image.open(tex / "observed_mask.png")) > 0
    unseen = np.asarray(Image.open(tex / "unseen_mask.png")) > 0
    assert not (seen & unseen).any() and unseen.any()
    obs = np.asarray(Image.open(tex / "observed.png"))
    final = np.asarray(Image.open(tex / "inpainted.png"))
    assert np.array_equal(final[seen], obs[seen])  # observed texels are kept as sampled

    monkeypatch.setenv(registry.METHOD_SETTING, "classical")
    inpaint_stage(d)
    q = json.loads((d / "quality.json").read_text())["inpaint"]
    assert q["method"] == "classical" and q["steps"] is None
    assert not (tex / "inpainted_low.png").exists()


def test_nearest_prefill_fills_unseen_texels_from_observed_ones(anny):
    from models.inpaint.model import nearest_prefill

    maps = atlas_maps(anny, 16)
    partial = np.zeros((16, 16, 3), np.float32)
    observed = maps.covered.copy()
    observed[8:] = False
    partial[observed] = (0.1, 0.5, 0.9)
    guess = nearest_prefill(partial, observed, maps)
    unseen = maps.covered & ~observed
    assert np.allclose(guess[unseen], (0.1, 0.5, 0.9), atol=1e-5)
    assert np.array_equal(guess[observed], partial[observed]) and (guess[~maps.covered] == 0).all()
