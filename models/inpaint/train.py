"""Training of the texture inpainting model (DDPM) on pairs from ``models.inpaint.data``.

    avatars train data --n 6000 --out pairs/          # partial -> full texture pairs
    avatars train inpaint --data pairs/ --out run/     # resumable; re-run to continue

Writes into ``run/``:

- ``checkpoint/``: the UNet, its EMA copy, the optimizer, the step and the random state
  (every ``checkpoint_every`` steps and at the end); a second run with the same ``--out``
  continues from it;
- ``model/``: the exported model (EMA weights) in the diffusers layout, loadable with
  ``AVATARS_INPAINT_MODEL_DIR=run/model`` (see models/inpaint/registry.py);
- ``loss_log.csv``: step, loss (running mean), learning rate, seconds, pairs; and
  ``val_log.csv``: step, PSNR of unseen texels on held-out pairs (sampled, default steps);
- ``train.json``: the resolved settings.

The loss is the masked MSE of the prediction (the clean texture, or the noise, per
``InpaintConfig.prediction_type``) over covered texels, unseen ones weighted more. New
shards that appear in the data folder while training runs are picked up.
"""
from __future__ import annotations

import csv
import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from models.inpaint.data import load_pairs
from models.inpaint.model import (
    InpaintConfig,
    build_train_scheduler,
    build_unet,
    condition,
    save_model,
)

VAL_EVERY_SEED = 25  # pairs whose seed % 25 == 0 are held out


@dataclass
class TrainSettings:
    steps: int = 3000
    batch_size: int = 16
    lr: float = 4e-4
    warmup_steps: int = 100
    ema_decay: float = 0.995
    unseen_weight: float = 1.0
    observed_weight: float = 0.3
    checkpoint_every: int = 100
    val_every: int = 300
    val_pairs: int = 16
    max_minutes: float = 0.0  # 0 = no limit; otherwise stop (and save) after this long
    seed: int = 0
    threads: int = 0  # torch threads (0 = torch's default)
    # Targets in the photo's colours: each pair's ground truth (albedo) is matched per
    # channel to its partial texture over the observed texels (the colour_match the
    # pipeline applies to the model's output). The photo's light level cannot be known
    # from the partial texture; without this the model spends itself guessing it.
    match_target_colours: bool = True


def _lr(step: int, s: TrainSettings) -> float:
    warm = min(1.0, (step + 1) / max(1, s.warmup_steps))
    frac = min(1.0, step / max(1, s.steps))
    return s.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def _split(data: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    val = data["seed"] % VAL_EVERY_SEED == 0
    return np.flatnonzero(~val), np.flatnonzero(val)


def train(data_dir: Path, out_dir: Path, cfg: InpaintConfig | None = None, settings: TrainSettings | None = None,
          progress: Callable[[int, int, float], None] | None = None, command: str = "",
          init_from: Path | None = None) -> dict:
    """Train (or resume) into out_dir; -> summary dict (steps, seconds, final loss, model dir).

    ``init_from``: a model folder (``RUN/model`` or models/weights/inpaint_default) whose
    weights and architecture a *new* run starts from (fine-tuning); ignored on resume."""
    import torch
    from diffusers.training_utils import EMAModel

    from models.body.registry import get_body
    from models.inpaint.data import data_settings
    from models.inpaint.lowres import atlas_maps

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    s = settings or TrainSettings()
    ckpt = out_dir / "checkpoint"
    resume = (ckpt / "state.pt").exists()
    if resume:
        cfg = InpaintConfig.from_dict(json.loads((out_dir / "train.json").read_text())["model"])
        init_from = None
    elif init_from is not None:
        from models.inpaint.model import CONFIG_NAME

        init_from = Path(init_from)
        if not (init_from / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{init_from} is not a model folder (no {CONFIG_NAME})")
        cfg = InpaintConfig.from_dict(json.loads((init_from / CONFIG_NAME).read_text()))
    cfg = cfg or InpaintConfig()
    pairs_cfg = data_settings(data_dir)
    if pairs_cfg.size != cfg.atlas_size:
        raise ValueError(f"the pairs in {data_dir} are {pairs_cfg.size}x{pairs_cfg.size}; "
                         f"the model works at {cfg.atlas_size}")
    data = _prepared(load_pairs(data_dir), s)
    if not data:
        raise FileNotFoundError(f"no training pairs in {data_dir}; make them with `avatars train data --out {data_dir}`")
    if s.threads:
        torch.set_num_threads(s.threads)
    body = get_body(cfg.body_model)
    maps = atlas_maps(body, cfg.atlas_size)
    cfg.uv_fingerprint = maps.fingerprint
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {"model": asdict(cfg), "train": asdict(s), "data": str(data_dir), "pairs": asdict(pairs_cfg)}
    if resume:  # keep what the run started from
        record["init_from"] = json.loads((out_dir / "train.json").read_text()).get("init_from")
    elif init_from is not None:
        record["init_from"] = str(init_from)
    (out_dir / "train.json").write_text(json.dumps(record, indent=1))

    torch.manual_seed(s.seed)
    unet = build_unet(cfg)
    if init_from is not None:
        from diffusers import UNet2DModel

        unet.load_state_dict(UNet2DModel.from_pretrained(init_from / "unet", local_files_only=True).state_dict())
    ema = EMAModel(unet.parameters(), decay=s.ema_decay, use_ema_warmup=True, power=0.75)
    opt = torch.optim.AdamW(unet.parameters(), lr=s.lr, weight_decay=1e-4)
    sched = build_train_scheduler(cfg)
    step, seconds_before = 0, 0.0
    rng = np.random.default_rng(s.seed)
    if (ckpt / "state.pt").exists():
        state = torch.load(ckpt / "state.pt", weights_only=False)
        unet.load_state_dict(state["unet"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        step, seconds_before = int(state["step"]), float(state["seconds"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
    train_idx, val_idx = _split(data)
    cov = torch.as_tensor(maps.covered.astype(np.float32))[None, None]
    log_path = out_dir / "loss_log.csv"
    new_log = not log_path.exists()
    log = open(log_path, "a", newline="")  # noqa: SIM115 - closed below
    writer = csv.writer(log)
    if new_log:
        writer.writerow(["step", "loss", "lr", "seconds", "pairs"])
    t_start = time.perf_counter()
    running = None
    last_loaded = time.perf_counter()

    def save_checkpoint() -> None:
        ckpt.mkdir(parents=True, exist_ok=True)
        state = {"unet": unet.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "step": step,
                 "seconds": seconds_before + time.perf_counter() - t_start, "rng": rng.bit_generator.state,
                 "torch_rng": torch.get_rng_state()}
        tmp = ckpt / "state.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(ckpt / "state.pt")

    try:
        unet.train()
        while step < s.steps:
            if s.max_minutes and (time.perf_counter() - t_start) > 60 * s.max_minutes:
                break
            if time.perf_counter() - last_loaded > 300:  # pick up shards written meanwhile
                fresh = _prepared(load_pairs(data_dir), s)
                if len(fresh["seed"]) > len(data["seed"]):
                    data = fresh
                    train_idx, val_idx = _split(data)
                last_loaded = time.perf_counter()
            b = rng.choice(train_idx, size=s.batch_size, replace=len(train_idx) < s.batch_size)
            partial = data["partial"][b].astype(np.float32) / 255
            observed = data["observed"][b]
            target = torch.as_tensor(data["target"][b].astype(np.float32) / 255).permute(0, 3, 1, 2) * 2 - 1
            c = condition(partial, observed, maps, prefill=cfg.prefill)
            noise = torch.randn(target.shape)
            t = torch.randint(0, cfg.num_train_timesteps, (s.batch_size,))
            xt = sched.add_noise(target, noise, t)
            pred = unet(torch.cat([xt, c], 1), t).sample
            if cfg.prediction_type == "sample":
                goal = target
            elif cfg.prediction_type == "epsilon":
                goal = noise
            else:
                goal = sched.get_velocity(target, noise, t)
            obs = torch.as_tensor(observed.astype(np.float32))[:, None]
            w = cov * (s.unseen_weight * (1 - obs) + s.observed_weight * obs)
            loss = ((pred - goal) ** 2 * w).sum() / (w.sum() * 3 + 1e-8)
            for g in opt.param_groups:
                g["lr"] = _lr(step, s)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
            opt.step()
            ema.step(unet.parameters())
            step += 1
            val = float(loss.detach())
            running = val if running is None else 0.95 * running + 0.05 * val
            if step % 10 == 0 or step == s.steps:
                writer.writerow([step, f"{running:.5f}", f"{_lr(step, s):.2e}",
                                 f"{seconds_before + time.perf_counter() - t_start:.1f}", len(data["seed"])])
                log.flush()
            if progress:
                progress(step, s.steps, running)
            if step % s.checkpoint_every == 0:
                save_checkpoint()
            if s.val_every and step % s.val_every == 0 and len(val_idx):
                _validate(unet, ema, cfg, sched, data, val_idx[: s.val_pairs], maps, out_dir, step)
                unet.train()
    finally:
        log.close()
    save_checkpoint()
    seconds = seconds_before + time.perf_counter() - t_start
    cfg.training = {
        "command": command, "steps": step, "batch_size": s.batch_size, "seconds": round(seconds, 1),
        "loss": round(running, 5) if running is not None else None, "pairs": len(data["seed"]),
        "seeds": [int(data["seed"].min()), int(data["seed"].max())],
        "hardware": f"{platform.machine()} {platform.processor() or ''} CPU, torch threads {torch.get_num_threads()}".strip(),
    }
    model_dir = export(unet, ema, cfg, out_dir / "model")
    return {"steps": step, "seconds": round(seconds, 1), "loss": cfg.training["loss"], "model": str(model_dir)}


def export(unet, ema, cfg: InpaintConfig, model_dir: Path) -> Path:
    """Save the EMA weights in the diffusers layout (the live weights stay as they were)."""
    ema.store(unet.parameters())
    ema.copy_to(unet.parameters())
    try:
        return save_model(model_dir, unet, cfg)
    finally:
        ema.restore(unet.parameters())


def _prepared(data: dict, s: TrainSettings) -> dict:
    """The pairs as trained on (targets colour-matched to their partial texture when set)."""
    if data and s.match_target_colours:
        data["target"] = matched_targets(data["partial"], data["observed"], data["target"])
    return data


def matched_targets(partial: np.ndarray, observed: np.ndarray, target: np.ndarray) -> np.ndarray:
    """uint8 [N,S,S,3]: each target mapped per channel (alpha * t + beta, as
    models.inpaint.apply.colour_match) onto its partial texture's observed texels."""
    from models.inpaint.apply import colour_match

    out = np.empty_like(target)
    for i in range(len(target)):
        t = target[i].astype(np.float32) / 255
        a, b = colour_match(t, partial[i].astype(np.float32) / 255, observed[i])
        out[i] = np.clip((t * a + b) * 255 + 0.5, 0, 255).astype(np.uint8)
    return out


def _validate(unet, ema, cfg, sched, data, idx, maps, out_dir: Path, step: int) -> float:
    """PSNR over unseen covered texels of held-out pairs, sampled with the default sampler."""
    from models.inpaint.model import DiffusionInpainter

    ema.store(unet.parameters())
    ema.copy_to(unet.parameters())
    try:
        inp = DiffusionInpainter(unet, sched.config, cfg)
        errs = []
        for i in idx:
            r = inp(data["partial"][i].astype(np.float32) / 255, data["observed"][i], maps)
            tgt = data["target"][i].astype(np.float32) / 255
            m = maps.covered & ~data["observed"][i]
            errs.append(((r.texture[m] - tgt[m]) ** 2).mean())
        psnr = float(10 * np.log10(1 / max(float(np.mean(errs)), 1e-10)))
    finally:
        ema.restore(unet.parameters())
    path = out_dir / "val_log.csv"
    new = not path.exists()
    with open(path, "a") as f:
        if new:
            f.write("step,unseen_psnr,pairs\n")
        f.write(f"{step},{psnr:.3f},{len(idx)}\n")
    return psnr
