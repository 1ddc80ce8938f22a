"""The texture-space diffusion model: a diffusers UNet2DModel conditioned on the partial texture.

Input of the UNet, all at the low atlas resolution S (``InpaintConfig.atlas_size``):

    channels 0-2   the noisy texture x_t (RGB, -1..1)
    channels 3-5   the partial texture (observed RGB, -1..1; 0 where unseen)
    channel  6     the observed mask (1 observed, 0 unseen)
    channel  7     the covered mask (1 on the body, 0 in the atlas gutters)
    channels 8-10  the template 3D position of each texel (-1..1), so the network knows
                   which body part a texel is wherever the UV layout put it
    channels 11-13 (``prefill``) a first guess: every unseen texel takes the inverse-distance
                   mean of its nearest observed texels on the template body in 3D; the
                   network learns what to change (back of the head is hair, prints are
                   front-only, ...) instead of starting from nothing

and the timestep. Trained as a DDPM (``DDPMScheduler``); sampled with DDIM or DPM-Solver++
in a configurable number of steps. On disk, the diffusers layout:

    DIR/unet/config.json, DIR/unet/diffusion_pytorch_model.safetensors   (save_pretrained)
    DIR/scheduler/scheduler_config.json                                   (save_pretrained)
    DIR/inpaint.json   InpaintConfig, training record, sha256 of every other file
"""
from __future__ import annotations

import hashlib
import json
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from models.inpaint.lowres import AtlasMaps
from models.ioutil import atomic_write_json

CONFIG_NAME = "inpaint.json"
COND_CHANNELS = 8  # + 3 with InpaintConfig.prefill
PREFILL_NEIGHBOURS = 4
SAMPLERS = ("ddim", "dpm")
WEIGHT_FILES = ("unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                "scheduler/scheduler_config.json")


@dataclass
class InpaintConfig:
    atlas_size: int = 64
    block_out_channels: tuple[int, ...] = (32, 64, 96, 128)
    layers_per_block: int = 1
    attention_levels: tuple[int, ...] = (3,)  # down levels with self-attention (0 = full res)
    norm_num_groups: int = 8
    attention_head_dim: int = 32
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "sample"  # the UNet predicts the clean texture
    prefill: bool = False  # condition on a nearest-surface first guess too (3 more channels)
    sampler: str = "ddim"  # default sampler at run time: ddim | dpm
    steps: int = 20  # default sampling steps at run time
    body_model: str = "anny"
    uv_fingerprint: str = ""
    training: dict = field(default_factory=dict)  # how the weights were made (filled by train)

    @classmethod
    def from_dict(cls, d: dict) -> InpaintConfig:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        for k in ("block_out_channels", "attention_levels"):
            if k in kw:
                kw[k] = tuple(kw[k])
        return cls(**kw)


def build_unet(cfg: InpaintConfig):
    from diffusers import UNet2DModel

    n = len(cfg.block_out_channels)
    down = tuple("AttnDownBlock2D" if i in cfg.attention_levels else "DownBlock2D" for i in range(n))
    up = tuple("AttnUpBlock2D" if (n - 1 - i) in cfg.attention_levels else "UpBlock2D" for i in range(n))
    return UNet2DModel(
        sample_size=cfg.atlas_size, in_channels=3 + cond_channels(cfg), out_channels=3,
        block_out_channels=tuple(cfg.block_out_channels), layers_per_block=cfg.layers_per_block,
        down_block_types=down, up_block_types=up, norm_num_groups=cfg.norm_num_groups,
        attention_head_dim=cfg.attention_head_dim,
    )


def build_train_scheduler(cfg: InpaintConfig):
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
                         prediction_type=cfg.prediction_type, clip_sample=True)


def sampling_scheduler(scheduler_config: dict, sampler: str):
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    if sampler == "ddim":
        return DDIMScheduler.from_config(scheduler_config, clip_sample=True, set_alpha_to_one=True)
    if sampler == "dpm":
        return DPMSolverMultistepScheduler.from_config(scheduler_config, algorithm_type="dpmsolver++",
                                                       solver_order=2)
    raise ValueError(f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")


def cond_channels(cfg: InpaintConfig) -> int:
    return COND_CHANNELS + (3 if cfg.prefill else 0)


def nearest_prefill(partial: np.ndarray, observed: np.ndarray, maps: AtlasMaps) -> np.ndarray:
    """Unseen covered texels <- inverse-distance mean of the nearest observed texels on the
    template body in 3D; [S,S,3] 0..1 (0 off the body; the observed mean if nothing was seen)."""
    from scipy.spatial import cKDTree

    cov = maps.covered
    src = observed & cov
    dst = cov & ~observed
    out = np.where(src[..., None], partial, 0.0).astype(np.float32)
    if not src.any():
        out[dst] = 0.5
        return out
    k = min(PREFILL_NEIGHBOURS, int(src.sum()))
    dist, j = cKDTree(maps.position[src]).query(maps.position[dst], k=k)
    if k == 1:
        dist, j = dist[:, None], j[:, None]
    w = 1.0 / (dist + 1e-3)
    out[dst] = (partial[src][j] * w[..., None]).sum(1) / w.sum(1, keepdims=True)
    return out


def condition(partial: np.ndarray, observed: np.ndarray, maps: AtlasMaps, prefill: bool = False):
    """-> float32 tensor [B, cond_channels, S, S] from partial [B,S,S,3] (0..1) and observed [B,S,S]."""
    import torch

    partial = np.asarray(partial, np.float32)
    p = torch.as_tensor(partial).permute(0, 3, 1, 2)
    o = torch.as_tensor(np.asarray(observed, np.float32))[:, None]
    B, S = p.shape[0], p.shape[-1]
    cov = torch.as_tensor(maps.covered.astype(np.float32))[None, None].expand(B, 1, S, S)
    pos = torch.as_tensor(maps.position).permute(2, 0, 1)[None].expand(B, 3, S, S)
    parts = [(p * 2 - 1) * o, o, cov, pos]
    if prefill:
        guess = np.stack([nearest_prefill(partial[i], np.asarray(observed[i], bool), maps) for i in range(B)])
        parts.append(torch.as_tensor(guess).permute(0, 3, 1, 2) * 2 - 1)
    return torch.cat(parts, 1).contiguous()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_model(out_dir: Path, unet, cfg: InpaintConfig) -> Path:
    """save_pretrained of the UNet and the scheduler, and inpaint.json with the checksums."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(out_dir / "unet", safe_serialization=True)
    build_train_scheduler(cfg).save_pretrained(out_dir / "scheduler")
    record = asdict(cfg)
    record["files"] = {name: sha256_file(out_dir / name) for name in WEIGHT_FILES}
    atomic_write_json(out_dir / CONFIG_NAME, record)
    return out_dir


@contextmanager
def torch_threads(n: int | None):
    """Run torch ops on `n` threads inside the block (None: leave as is). The model is small:
    one thread is as fast as two on an idle 2-core machine and 10x faster on a busy one
    (threads waiting on each other)."""
    import torch

    if not n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class InpaintResult:
    texture: np.ndarray  # float32 [S,S,3] 0..1, the model's whole texture
    steps: int
    sampler: str
    seconds: float


class DiffusionInpainter:
    """A loaded model (UNet + scheduler config + InpaintConfig) that fills a partial texture."""

    def __init__(self, unet, scheduler_config: dict, cfg: InpaintConfig, model_dir: Path | None = None):
        self.unet = unet.eval()
        self.scheduler_config = dict(scheduler_config)
        self.cfg = cfg
        self.model_dir = model_dir

    @classmethod
    def from_dir(cls, model_dir: Path) -> DiffusionInpainter:
        """Load a model folder (check it first with models.inpaint.registry.verify_model_dir)."""
        from diffusers import UNet2DModel

        model_dir = Path(model_dir)
        cfg = InpaintConfig.from_dict(json.loads((model_dir / CONFIG_NAME).read_text()))
        unet = UNet2DModel.from_pretrained(model_dir / "unet", local_files_only=True)
        sched = json.loads((model_dir / "scheduler" / "scheduler_config.json").read_text())
        return cls(unet, sched, cfg, model_dir)

    def __call__(self, partial: np.ndarray, observed: np.ndarray, maps: AtlasMaps,
                 steps: int | None = None, sampler: str | None = None, seed: int = 0,
                 threads: int | None = 1) -> InpaintResult:
        """partial [S,S,3] 0..1, observed [S,S] bool -> the model's full texture at S.

        threads: torch threads while sampling (None: the process setting)."""
        import torch

        cfg = self.cfg
        steps = int(steps or cfg.steps)
        sampler = sampler or cfg.sampler
        S = cfg.atlas_size
        if partial.shape != (S, S, 3) or observed.shape != (S, S) or maps.size != S:
            raise ValueError(f"expected a {S}x{S} partial texture, observed mask and maps; got "
                             f"{partial.shape}, {observed.shape}, {maps.size}")
        if steps < 1:
            raise ValueError("steps must be >= 1")
        t0 = time.perf_counter()
        sched = sampling_scheduler(self.scheduler_config, sampler)
        sched.set_timesteps(steps)
        cond = condition(partial[None], observed[None], maps, prefill=cfg.prefill)
        gen = torch.Generator().manual_seed(int(seed))
        x = torch.randn((1, 3, S, S), generator=gen) * sched.init_noise_sigma
        with torch.inference_mode(), torch_threads(threads):
            for t in sched.timesteps:
                inp = torch.cat([sched.scale_model_input(x, t), cond], 1)
                out = self.unet(inp, t).sample
                x = sched.step(out, t, x).prev_sample
        tex = ((x[0].permute(1, 2, 0).numpy() + 1) / 2).clip(0, 1).astype(np.float32)
        return InpaintResult(texture=tex, steps=steps, sampler=sampler, seconds=time.perf_counter() - t0)
