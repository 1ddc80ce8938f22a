"""Which inpainting method and which model weights the pipeline uses.

    AVATARS_INPAINT_METHOD     diffusion | classical (unset: diffusion when a model is available)
    AVATARS_INPAINT_MODEL_DIR  a model folder (diffusers layout, from `avatars train inpaint`);
                               unset: the default model shipped in models/weights/
    AVATARS_INPAINT_STEPS      sampling steps (unset: the model's default)
    AVATARS_INPAINT_SAMPLER    ddim | dpm (unset: the model's default)
    AVATARS_INPAINT_THREADS    torch threads while sampling (default 1: fastest on a busy CPU)

Weights never come from a hub. ``models/weights/registry.json`` lists every shipped file
with its sha256 and what it is for; a configured folder is checked against the sha256
list its own ``inpaint.json`` carries (written by training). A missing or corrupt file
raises one ``ModelAssetError`` naming the file and how to obtain it. Models load lazily,
once per process, under a lock.
"""
from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from models.errors import ModelAssetError, PipelineError
from models.ioutil import atomic_write_json

METHOD_SETTING = "AVATARS_INPAINT_METHOD"
MODEL_DIR_SETTING = "AVATARS_INPAINT_MODEL_DIR"
STEPS_SETTING = "AVATARS_INPAINT_STEPS"
SAMPLER_SETTING = "AVATARS_INPAINT_SAMPLER"
THREADS_SETTING = "AVATARS_INPAINT_THREADS"
METHODS = ("diffusion", "classical")
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
REGISTRY_PATH = WEIGHTS_DIR / "registry.json"
DEFAULT_MODEL = "inpaint_default"
HOW_TO_TRAIN = ("train one with `avatars train data --out PAIRS` then "
                "`avatars train inpaint --data PAIRS --out RUN` and point "
                f"{MODEL_DIR_SETTING} at RUN/model (see README, 'Texture inpainting')")

_lock = threading.Lock()
_cache: dict[str, object] = {}


@dataclass(frozen=True)
class ModelSource:
    name: str  # registry name, or "configured"
    path: Path
    expected: dict[str, str]  # relative file -> sha256


def read_registry() -> dict:
    try:
        return json.loads(REGISTRY_PATH.read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as exc:
        raise ModelAssetError(f"The model registry {REGISTRY_PATH} is not valid JSON ({exc}); "
                              "restore it from the repository.") from exc


def configured_method() -> str | None:
    """AVATARS_INPAINT_METHOD (checked), or None when unset."""
    raw = os.environ.get(METHOD_SETTING, "").strip().lower()
    if raw and raw not in METHODS:
        raise PipelineError("invalid_setting", f"Unknown {METHOD_SETTING} {raw!r}; choose one of: "
                            f"{', '.join(METHODS)}.")
    return raw or None


def inpaint_method() -> str:
    """The method from AVATARS_INPAINT_METHOD; unset: diffusion when a model is available."""
    return configured_method() or ("diffusion" if model_source() is not None else "classical")


def sampling_overrides() -> tuple[int | None, str | None, int]:
    """(steps, sampler, threads) from AVATARS_INPAINT_STEPS / _SAMPLER / _THREADS; None = model default."""
    from models.inpaint.model import SAMPLERS

    steps_raw = os.environ.get(STEPS_SETTING, "").strip()
    sampler = os.environ.get(SAMPLER_SETTING, "").strip().lower() or None
    steps = None
    if steps_raw:
        try:
            steps = int(steps_raw)
        except ValueError:
            steps = 0
        if not 1 <= steps <= 1000:
            raise PipelineError("invalid_setting", f"{STEPS_SETTING} must be an integer 1..1000, got {steps_raw!r}.")
    if sampler is not None and sampler not in SAMPLERS:
        raise PipelineError("invalid_setting", f"Unknown {SAMPLER_SETTING} {sampler!r}; choose one of: "
                            f"{', '.join(SAMPLERS)}.")
    threads_raw = os.environ.get(THREADS_SETTING, "").strip() or "1"
    if not threads_raw.isdigit() or not 1 <= int(threads_raw) <= 256:
        raise PipelineError("invalid_setting", f"{THREADS_SETTING} must be an integer 1..256, got {threads_raw!r}.")
    return steps, sampler, int(threads_raw)


def model_source() -> ModelSource | None:
    """Where the weights are: the configured folder, else the shipped default (None if absent)."""
    configured = os.environ.get(MODEL_DIR_SETTING, "").strip()
    if configured:
        path = Path(configured).expanduser()
        cfg = path / "inpaint.json"
        if not cfg.is_file():
            raise ModelAssetError(f"The inpainting model file {cfg} ({MODEL_DIR_SETTING}) does not exist; "
                                  f"{HOW_TO_TRAIN}.")
        try:
            files = json.loads(cfg.read_text()).get("files") or {}
        except json.JSONDecodeError as exc:
            raise ModelAssetError(f"The inpainting model file {cfg} is corrupt ({exc}); {HOW_TO_TRAIN}.") from exc
        if not files:
            raise ModelAssetError(f"The inpainting model file {cfg} lists no checksums; {HOW_TO_TRAIN}.")
        return ModelSource("configured", path, dict(files))
    entry = read_registry().get(DEFAULT_MODEL)
    if not entry:
        return None
    path = WEIGHTS_DIR / entry["path"]
    if not (path / "inpaint.json").exists():
        return None  # not shipped in this checkout: the classical fill is the default
    return ModelSource(DEFAULT_MODEL, path, {k: v["sha256"] for k, v in entry["files"].items()})


def shipped_source(name: str) -> ModelSource | None:
    """A model shipped in models/weights by its registry name (e.g. ``inpaint_tight64``, the
    model trained on the skin-tight people, kept for comparison); None if absent."""
    entry = read_registry().get(name)
    if not entry or entry.get("kind") != "inpaint":
        return None
    path = WEIGHTS_DIR / entry["path"]
    if not (path / "inpaint.json").exists():
        return None
    return ModelSource(name, path, {k: v["sha256"] for k, v in entry["files"].items()})


def verify(source: ModelSource) -> None:
    """Every expected file exists and has its sha256, else one clear ModelAssetError."""
    from models.inpaint.model import sha256_file

    for rel, digest in sorted(source.expected.items()):
        f = source.path / rel
        origin = (f"it ships in the repository (models/weights/registry.json: {source.name}); restore it "
                  f"with `git checkout -- {_repo_rel(f)}`, or {HOW_TO_TRAIN}" if source.name != "configured"
                  else HOW_TO_TRAIN)
        if not f.is_file():
            raise ModelAssetError(f"The inpainting model file {f} is missing; {origin}.")
        if sha256_file(f) != digest:
            raise ModelAssetError(f"The inpainting model file {f} is corrupt (sha256 mismatch); {origin}.")


def _repo_rel(p: Path) -> str:
    try:
        return str(p.relative_to(WEIGHTS_DIR.parents[1]))
    except ValueError:
        return str(p)


def get_inpainter(source: ModelSource | None = None):
    """The DiffusionInpainter of `source` (default: model_source()), checked and loaded once."""
    from models.inpaint.model import DiffusionInpainter

    source = source or model_source()
    if source is None:
        raise ModelAssetError(f"No inpainting model: {REGISTRY_PATH.parent / DEFAULT_MODEL} is missing and "
                              f"{MODEL_DIR_SETTING} is not set; {HOW_TO_TRAIN}.")
    key = str(source.path.resolve())
    with _lock:
        model = _cache.get(key)
        if model is None:
            verify(source)
            try:
                model = DiffusionInpainter.from_dir(source.path)
            except (OSError, ValueError, KeyError) as exc:
                raise ModelAssetError(f"The inpainting model in {source.path} could not be loaded ({exc}); "
                                      f"{HOW_TO_TRAIN}.") from exc
            model.source_name = source.name
            _cache[key] = model
        return model


def publish_default(model_dir: Path, purpose: str | None = None, name: str = DEFAULT_MODEL) -> Path:
    """Copy a trained model folder to models/weights/<name> (default: inpaint_default, the
    pipeline's model) and register its files (path, sha256, bytes) in
    models/weights/registry.json. -> the shipped folder."""
    import shutil

    from models.inpaint.model import CONFIG_NAME, WEIGHT_FILES, sha256_file

    model_dir = Path(model_dir)
    src = ModelSource("configured", model_dir, json.loads((model_dir / CONFIG_NAME).read_text())["files"])
    verify(src)
    dest = WEIGHTS_DIR / name
    tmp = WEIGHTS_DIR / (name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for rel in (CONFIG_NAME, *WEIGHT_FILES):
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(model_dir / rel, tmp / rel)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.replace(dest)
    reg = read_registry()
    reg[name] = {
        "path": name,
        "kind": "inpaint",
        "purpose": purpose or ("Default texture-space diffusion inpainting model (diffusers UNet2DModel + DDPM "
                               "scheduler config): fills the texels of the UV texture the photo does not show. "
                               "Trained by the project on its own synthetic people (Anny UV layout)."),
        "how_to_obtain": "Ships in the repository. Re-create: `avatars train data --out PAIRS`, "
                         "`avatars train inpaint --data PAIRS --out RUN`, `avatars train publish RUN/model` "
                         "(README, 'Texture inpainting').",
        "files": {rel: {"sha256": sha256_file(dest / rel), "bytes": (dest / rel).stat().st_size}
                  for rel in (CONFIG_NAME, *WEIGHT_FILES)},
    }
    atomic_write_json(REGISTRY_PATH, reg)
    with _lock:
        _cache.clear()
    return dest
