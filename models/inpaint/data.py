"""Training pairs for the inpainting model, made from the project's synthetic people.

One pair = (the partial texture a single photo gives, the full ground-truth texture), both
at the model's low atlas resolution. The partial texture is made quickly from the
ground truth: the photo is unprojected through the ground-truth body, pose and camera
with the person mask (no fitting), exactly as the pipeline unprojects (depth test,
frontality, occlusion edges, gap filling), on a `texel_size` atlas instead of 1024 (the
low-resolution block means are the same up to sampling noise, at a fraction of the
cost). A share of the pairs (`jitter`) is unprojected through a slightly wrong body
(pose, shape and camera perturbed by about a fit's error) so the model learns to live
with misaligned partial textures.

Seeds: pair i uses the synthetic person with seed ``seed + i``; all must stay below
``TRAIN_SEED_LIMIT`` (the quality benchmark uses 1,000,000 and up).

On disk: ``DIR/pairs_<first index:07d>.npz`` shards (partial uint8 [N,S,S,3], observed
bool [N,S,S], target uint8 [N,S,S,3], seed int64 [N]) and ``DIR/data.json``. Writing
is resumable: complete shards are skipped.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from models.inpaint.lowres import downsample_partial, downsample_texture

TRAIN_SEED_LIMIT = 1_000_000  # = bench/quality.py SEED_OFFSET: benchmark people are never trained on
SHARD = 100


@dataclass
class PairSettings:
    size: int = 64  # model atlas
    photo_size: int = 512
    texel_size: int = 256  # unprojection atlas for training pairs
    jitter: float = 0.5  # share of pairs unprojected through a perturbed body
    pose_sigma_deg: float = 3.0
    shape_sigma: float = 0.05
    camera_sigma_m: float = 0.01
    clothed: bool = True  # the synthetic people: clothed (default) or skin-tight (painted clothes)


class PairMaker:
    """Holds the generator and the atlas maps; `pair(seed)` -> one training pair."""

    def __init__(self, settings: PairSettings | None = None):
        from models.synth.generator import get_generator
        from models.texture.atlas import texel_map
        from models.texture.unproject import limb_parts

        self.s = settings or PairSettings()
        self.gen = get_generator(self.s.photo_size, clothed=self.s.clothed)
        top = self.gen.body.topology
        self.faces = top.faces
        self.tm = texel_map(top.uvs, top.faces, self.s.texel_size)
        self.tm_full = texel_map(top.uvs, top.faces, self.gen.texture_size)
        self.face_part = limb_parts(top)

    def pair(self, seed: int) -> dict[str, np.ndarray]:
        from models.fit.camera import Camera
        from models.texture.unproject import unproject_photo

        if not 0 <= seed < TRAIN_SEED_LIMIT:
            raise ValueError(f"training seed {seed} is outside [0, {TRAIN_SEED_LIMIT})")
        st = self.s
        sample = self.gen.sample(seed, views=False)
        shape, pose, cam = sample.shape, sample.pose, sample.camera
        rng = np.random.default_rng([seed, 1])
        if rng.random() < st.jitter:
            pose = pose + rng.normal(0, np.radians(st.pose_sigma_deg), pose.shape).astype(np.float32)
            shape = np.clip(shape + rng.normal(0, st.shape_sigma, shape.shape), 0, 1).astype(np.float32)
            t = cam.t + np.r_[rng.normal(0, st.camera_sigma_m, 2), 0].astype(np.float32)
            cam = Camera(cam.K, cam.R, t.astype(np.float32), cam.width, cam.height)
        verts = self.gen.posed_split_vertices(shape, pose)
        part = unproject_photo(sample.image, sample.mask.astype(np.float32), verts, self.faces, cam, self.tm,
                               face_part=self.face_part)
        rgb, obs = downsample_partial(part.rgb, part.observed, self.tm.covered, st.size)
        target = downsample_texture(sample.texture, self.tm_full.covered, st.size)
        return {"partial": _u8(rgb), "observed": obs, "target": _u8(target)}


def _u8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def write_pairs(out_dir: Path, n: int, seed: int = 0, settings: PairSettings | None = None,
                progress: Callable[[int, int], None] | None = None) -> dict:
    """Write n pairs (seeds seed .. seed+n-1) as shards of SHARD; resumable. -> stats."""
    out_dir = Path(out_dir)
    if seed < 0 or seed + n > TRAIN_SEED_LIMIT:
        raise ValueError(f"seeds {seed}..{seed + n - 1} must stay below {TRAIN_SEED_LIMIT} "
                         "(the benchmark's people)")
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = settings or PairSettings()
    meta_path = out_dir / "data.json"
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if old.get("settings") != asdict(settings):
            raise ValueError(f"{out_dir} holds pairs made with other settings: {old.get('settings')}")
    meta_path.write_text(json.dumps({"settings": asdict(settings), "seed": seed, "n": n}, indent=1))
    maker = None
    t0 = time.perf_counter()
    made = 0
    for start in range(0, n, SHARD):
        path = out_dir / f"pairs_{seed + start:07d}.npz"
        count = min(SHARD, n - start)
        if path.exists():
            if progress:
                progress(start + count, n)
            continue
        if maker is None:
            maker = PairMaker(settings)
        rows = []
        for i in range(start, start + count):
            rows.append(maker.pair(seed + i))
            made += 1
            if progress:
                progress(i + 1, n)
        arrays = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
        arrays["seed"] = np.arange(seed + start, seed + start + count, dtype=np.int64)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        tmp.replace(path)
    sec = time.perf_counter() - t0
    return {"pairs": n, "made": made, "seconds": round(sec, 1),
            "pairs_per_s": round(made / sec, 3) if made and sec > 0 else None}


def load_pairs(data_dir: Path) -> dict[str, np.ndarray]:
    """All complete shards of `data_dir` -> stacked arrays (empty dict if none)."""
    shards = sorted(p for p in Path(data_dir).glob("pairs_*.npz") if not p.name.endswith(".tmp.npz"))
    parts = []
    for p in shards:
        with np.load(p) as z:
            parts.append({k: z[k] for k in z.files})
    if not parts:
        return {}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def data_settings(data_dir: Path) -> PairSettings:
    meta = json.loads((Path(data_dir) / "data.json").read_text())
    return PairSettings(**meta["settings"])
