"""The ``avatars`` command line: serve, worker, keys, create, render, models prepare.

Errors the user can act on (bad photo, missing file, unknown motion, pipeline
errors) print one clear line and exit non-zero; tracebacks are shown only with
``--debug``.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from workers.settings import get_settings

F = TypeVar("F", bound=Callable[..., Any])

QUEUE_NAMES = ("fit", "inpaint")


def friendly_errors(fn: F) -> F:
    """Turn pipeline and OS errors into ``click`` errors (message + exit code 1)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except Exception as exc:
            if logging.getLogger().isEnabledFor(logging.DEBUG):
                logging.getLogger(__name__).exception("command failed")
            code = getattr(exc, "code", None)
            message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            raise click.ClickException(f"{code}: {message}" if code else message) from exc

    return wrapper  # type: ignore[return-value]


@click.group()
@click.option("--debug", is_flag=True, help="Verbose logs and tracebacks.")
def main(debug: bool) -> None:
    """Avatars: one photo of a person in, an animatable avatar out."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@main.command()
@click.option("--host", default=None, help="Bind address (default: AVATARS_HOST).")
@click.option("--port", type=int, default=None, help="Port (default: AVATARS_PORT).")
@friendly_errors
def serve(host: str | None, port: int | None) -> None:
    """Run the HTTP gateway (and, without Redis, an embedded worker process)."""
    base = get_settings()
    settings = base.model_copy(
        update={
            "data_dir": base.data_dir.resolve(),
            "host": host or base.host,
            "port": base.port if port is None else port,
        }
    )
    if settings.embedded and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # gateway and worker child share their metrics through files (before any import
        # of prometheus_client)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_fresh_metrics_dir(settings.data_dir))
    _configure_logging(settings.log_format)

    import uvicorn

    from service.app import create_app
    from service.embedded import EmbeddedWorker

    click.echo(f"data dir: {settings.data_dir}")
    if settings.anonymous_allowed:
        why = (
            "AVATARS_ALLOW_ANONYMOUS=true" if settings.allow_anonymous
            else f"embedded mode on the loopback address {settings.host}"
        )
        click.echo(f"auth: anonymous access ON ({why}); requests without a key are tenant "
                   "'anonymous'. Set AVATARS_ALLOW_ANONYMOUS=false to require API keys.")
    else:
        click.echo("auth: API keys required (create one with `avatars keys create --tenant NAME`)")
    worker = None
    if settings.embedded:
        click.echo("mode: embedded (filesystem queue, SQLite jobs); starting a worker process")
        env = {**os.environ, "AVATARS_DATA_DIR": str(settings.data_dir)}
        env.pop("AVATARS_REDIS_URL", None)
        worker = EmbeddedWorker(env)
        worker.start()
    else:
        click.echo("mode: redis (run workers with `avatars worker`)")
    # uvicorn shuts down gracefully on SIGTERM/SIGINT and then re-raises the signal
    # to the previous handler; for SIGTERM that is "die now", which would skip the
    # `finally` below and orphan the worker. Exiting via SystemExit keeps it.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        uvicorn.run(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            access_log=False,  # the gateway writes its own, with request ids
            log_config=None,  # keep our handlers
        )
    except KeyboardInterrupt:
        pass
    finally:
        if worker is not None:
            click.echo("stopping the embedded worker")
            worker.stop()


def _exit_on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(0)


def _configure_logging(fmt: str) -> None:
    from workers.observability import configure_logging

    configure_logging(fmt, logging.getLogger().getEffectiveLevel())


def _fresh_metrics_dir(data_dir: Path) -> Path:
    """``data_dir/metrics``, emptied: values of earlier runs must not be added to ours."""
    folder = data_dir / "metrics"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.db"):
        old.unlink(missing_ok=True)
    return folder


def _parse_queues(_: click.Context, __: click.Parameter, value: str) -> str:
    names = [q.strip() for q in value.split(",") if q.strip()]
    unknown = sorted(set(names) - set(QUEUE_NAMES))
    if not names or unknown:
        raise click.BadParameter(f"choose from {', '.join(QUEUE_NAMES)}; got {value!r}")
    return ",".join(dict.fromkeys(names))


@main.command()
@click.option(
    "--queues",
    "-Q",
    default="fit,inpaint",
    callback=_parse_queues,
    show_default=True,
    help="Comma-separated queues to consume.",
)
@click.option("--concurrency", "-c", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--pool",
    type=click.Choice(["prefork", "solo", "threads"]),
    default="prefork",
    show_default=True,
)
@click.option("--loglevel", default="INFO", show_default=True)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve this worker's Prometheus metrics (job seconds by stage, failures) on this port.",
)
@click.option("--exit-with-parent", is_flag=True, hidden=True)
@friendly_errors
def worker(
    queues: str,
    concurrency: int,
    pool: str,
    loglevel: str,
    metrics_port: int | None,
    exit_with_parent: bool,
) -> None:
    """Run a Celery worker for the avatar pipeline."""
    settings = get_settings()
    if metrics_port is not None and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        import tempfile

        # the pool processes record into files the main process serves
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="avatars-metrics-")
    _configure_logging(settings.log_format)
    from workers.celery_app import app

    if metrics_port is not None:
        from workers.observability import serve_metrics

        serve_metrics(metrics_port)
    argv = [
        "worker",
        "--queues",
        queues,
        "--concurrency",
        str(concurrency),
        "--pool",
        pool,
        "--loglevel",
        loglevel,
        "--hostname",
        f"avatars-{os.getpid()}@%h",
    ]
    os.environ["AVATARS_WORKER_POOL"] = pool  # which process warms the models (workers.tasks)
    if settings.embedded:
        # No broadcast traffic on the filesystem queue (see workers.celery_app).
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    if exit_with_parent:
        from service.embedded import exit_with_parent as watch_parent

        watch_parent()
    click.echo(
        f"worker: queues={queues} pool={pool} concurrency={concurrency} "
        f"mode={'embedded' if settings.embedded else 'redis'} data dir={settings.data_dir}"
    )
    app.worker_main(argv)


@main.group()
def keys() -> None:
    """API keys: create, list, revoke (stored where the jobs are: Redis or jobs.sqlite)."""


def _key_store():
    from service.auth import make_key_store

    return make_key_store(get_settings())


@keys.command(name="create")
@click.option("--tenant", required=True, help="Tenant the key acts for (a-z 0-9 . _ -).")
@click.option("--name", default="", help="A note to recognise the key by (who uses it).")
@friendly_errors
def keys_create(tenant: str, name: str) -> None:
    """Create a key; prints it once on stdout (only its SHA-256 is stored)."""
    from service.auth import InvalidTenantError

    store = _key_store()
    try:
        record, key = store.create(tenant, name)
    except InvalidTenantError as exc:
        raise click.BadParameter(str(exc), param_hint="--tenant") from None
    finally:
        store.close()
    click.echo(f"created key {record.id} for tenant {record.tenant} (shown once; store it now)",
               err=True)
    click.echo(key)


@keys.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array instead of a table.")
@friendly_errors
def keys_list(as_json: bool) -> None:
    """List keys (id, tenant, name, created, revoked); never the keys themselves."""
    import dataclasses
    import json

    store = _key_store()
    try:
        records = store.list()
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(r) for r in records], indent=2))
        return
    click.echo(f"{'id':<16}  {'tenant':<20}  {'created':<24}  {'revoked':<24}  name")
    for r in records:
        click.echo(
            f"{r.id:<16}  {r.tenant:<20}  {r.created_at:<24}  {r.revoked_at or '-':<24}  {r.name}"
        )


@keys.command(name="revoke")
@click.argument("key_id")
@friendly_errors
def keys_revoke(key_id: str) -> None:
    """Revoke the key KEY_ID (gateways stop accepting it within AVATARS_AUTH_CACHE_S)."""
    store = _key_store()
    try:
        found = store.revoke(key_id.strip())
    finally:
        store.close()
    if not found:
        raise click.ClickException(f"no key with id {key_id}")
    click.echo(f"revoked key {key_id}")


class _ProgressPrinter:
    """Prints a line per stage and per 10 % step of it."""

    def __init__(self) -> None:
        self.last: tuple[str, int] | None = None

    def __call__(self, stage: str, fraction: float) -> None:
        step = int(max(0.0, min(1.0, fraction)) * 10)
        if self.last == (stage, step):
            return
        self.last = (stage, step)
        click.echo(f"  {stage:<8} {step * 10:3d}%")


@main.command()
@click.argument(
    "photos", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "-o",
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory.",
)
@friendly_errors
def create(photos: tuple[Path, ...], out_dir: Path) -> None:
    """Build an avatar offline from PHOTO(s) into DIR; prints the .glb path."""
    from models.pipeline import create_avatar

    glb = create_avatar(list(photos), out_dir, progress=_ProgressPrinter())
    click.echo(str(glb))


def _bundle_glb(bundle: Path) -> Path:
    glb = bundle / "avatar.glb" if bundle.is_dir() else bundle
    if not glb.is_file():
        raise click.ClickException(f"no avatar.glb at {bundle}")
    return glb


@main.command()
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.option("--motion", default="turntable", show_default=True)
@click.option(
    "-o",
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Output .mp4 path.",
)
@click.option("--size", type=click.IntRange(64, 2048), default=512, show_default=True)
@click.option("--fps", type=click.IntRange(1, 60), default=30, show_default=True)
@click.option("--frames", type=click.IntRange(min=1), default=120, show_default=True)
@friendly_errors
def render(bundle: Path, motion: str, out_path: Path, size: int, fps: int, frames: int) -> None:
    """Render BUNDLE (an avatar.glb or its directory) in a motion to an MP4."""
    from models.animation.motions import MOTION_NAMES
    from models.render.player import render_mp4

    if motion not in MOTION_NAMES:
        raise click.BadParameter(
            f"unknown motion {motion!r}; choose from {', '.join(sorted(MOTION_NAMES))}",
            param_hint="--motion",
        )
    render_mp4(_bundle_glb(bundle), out_path, motion=motion, size=size, fps=fps, frames=frames)
    click.echo(str(out_path))


@main.command()
@click.option("--n", "n", type=click.IntRange(min=1), default=10, show_default=True,
              help="Number of people.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Sample i gets the seed SEED + i.")
@click.option("--size", type=click.IntRange(64, 2048), default=512, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Processes (each also writes files in a second thread); default: the cores, at most 2.")
@click.option("--set", "people", type=click.Choice(["clothed", "tight"]), default="clothed", show_default=True,
              help="clothed: clothes and hair as geometry; tight: the older skin-tight people (painted clothes).")
@click.option("--sheet", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write a contact sheet PNG of the first samples.")
@click.option("--sheet-rows", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Samples on the contact sheet.")
@click.option("-o", "--out", "out_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path), help="Output directory.")
@friendly_errors
def synth(n: int, seed: int, size: int, workers: int | None, people: str, sheet: Path | None, sheet_rows: int,
          out_dir: Path) -> None:
    """Write N synthetic people with ground truth to DIR/00000, DIR/00001, ..."""
    from models.synth.generator import contact_sheet, default_workers, get_generator, write_dataset

    clothed = people == "clothed"
    stats = write_dataset(out_dir, n, seed=seed, size=size, workers=workers or default_workers(), clothed=clothed)
    click.echo(f"{n} samples in {out_dir}: {stats['samples_per_s']:.2f} samples/s "
               f"({stats['seconds']:.1f} s with {stats['setup_s']:.1f} s set-up, {stats['workers']} workers)")
    if sheet is not None:
        gen = get_generator(size, clothed=clothed)
        click.echo(str(contact_sheet([gen.sample(seed + i) for i in range(min(n, sheet_rows))], sheet)))


@main.group(name="train")
def train_group() -> None:
    """Train the project's own models on its synthetic people."""


@train_group.command(name="data")
@click.option("--n", "n", type=click.IntRange(min=1), default=6000, show_default=True,
              help="Number of pairs (one synthetic person each).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Pair i uses the synthetic person SEED + i (must stay below 1,000,000).")
@click.option("--size", type=click.IntRange(16, 512), default=64, show_default=True,
              help="Atlas size of the model.")
@click.option("--photo-size", type=click.IntRange(64, 2048), default=512, show_default=True,
              help="Size of the synthetic photos.")
@click.option("--texel-size", type=click.IntRange(16, 1024), default=256, show_default=True,
              help="Atlas the photos are unprojected into (then averaged down to --size).")
@click.option("-o", "--out", "out_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path), help="Output directory.")
@click.option("--set", "people", type=click.Choice(["clothed", "tight"]), default="clothed", show_default=True,
              help="The synthetic people: clothed, or the older skin-tight ones.")
@friendly_errors
def train_data(n: int, seed: int, size: int, photo_size: int, texel_size: int, people: str, out_dir: Path) -> None:
    """Write inpainting training pairs (partial -> full texture) to DIR; resumable."""
    from tqdm import tqdm

    from models.inpaint.data import PairSettings, write_pairs

    with tqdm(total=n, unit="pair", desc="pairs") as bar:
        def progress(done: int, total: int) -> None:
            bar.update(done - bar.n)

        stats = write_pairs(out_dir, n, seed=seed, progress=progress,
                            settings=PairSettings(size=size, photo_size=photo_size, texel_size=texel_size,
                                                  clothed=people == "clothed"))
    click.echo(f"{n} pairs in {out_dir} ({stats['made']} made in {stats['seconds']} s)")


@train_group.command(name="inpaint")
@click.option("--data", "data_dir", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Pairs written by `avatars train data`.")
@click.option("-o", "--out", "out_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Run directory (checkpoint/, model/, loss_log.csv); re-run to resume.")
@click.option("--steps", type=click.IntRange(min=1), default=3000, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--lr", type=float, default=4e-4, show_default=True)
@click.option("--channels", default="32,64,96,128", show_default=True,
              help="UNet block_out_channels (a new run only).")
@click.option("--prefill/--no-prefill", default=True, show_default=True,
              help="Condition on a nearest-surface first guess too (a new run only).")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--val-every", type=click.IntRange(min=0), default=300, show_default=True,
              help="Steps between held-out evaluations (0 = never).")
@click.option("--max-minutes", type=float, default=0.0, show_default=True,
              help="Stop (and save) after this long; 0 = no limit.")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="torch threads (0 = default).")
@click.option("--init-from", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Start a new run from this model folder's weights and architecture (fine-tuning), "
                   "e.g. models/weights/inpaint_default.")
@friendly_errors
def train_inpaint(data_dir: Path, out_dir: Path, steps: int, batch_size: int, lr: float, channels: str,
                  prefill: bool, checkpoint_every: int, val_every: int, max_minutes: float, threads: int,
                  init_from: Path | None) -> None:
    """Train the texture inpainting diffusion model on pairs in DATA; the model lands in OUT/model."""
    from tqdm import tqdm

    from models.inpaint.data import data_settings
    from models.inpaint.model import InpaintConfig
    from models.inpaint.train import TrainSettings, train

    try:
        blocks = tuple(int(c) for c in channels.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {channels!r}",
                                 param_hint="--channels") from None
    cfg = InpaintConfig(atlas_size=data_settings(data_dir).size, block_out_channels=blocks,
                        attention_levels=(len(blocks) - 1,), attention_head_dim=min(32, blocks[-1]),
                        norm_num_groups=min(8, blocks[0]), prefill=prefill)
    settings = TrainSettings(steps=steps, batch_size=batch_size, lr=lr, checkpoint_every=checkpoint_every,
                             val_every=val_every, max_minutes=max_minutes, threads=threads)
    command = " ".join(["avatars", *sys.argv[1:]])
    with tqdm(total=steps, unit="step", desc="train") as bar:
        def progress(step: int, total: int, loss: float) -> None:
            bar.update(step - bar.n)
            bar.set_postfix(loss=f"{loss:.4f}")

        summary = train(data_dir, out_dir, cfg, settings, progress=progress, command=command,
                        init_from=init_from)
    click.echo(f"{summary['steps']} steps in {summary['seconds']:.0f} s, loss {summary['loss']}; "
               f"model: {summary['model']}")


@train_group.command(name="publish")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@friendly_errors
def train_publish(model_dir: Path) -> None:
    """Make MODEL_DIR (RUN/model) the shipped default: copy it to models/weights/ and register
    its files and checksums in models/weights/registry.json."""
    from models.inpaint.registry import publish_default

    click.echo(str(publish_default(model_dir)))


@main.group(name="models")
def models_group() -> None:
    """Model assets."""


@models_group.command()
@friendly_errors
def prepare() -> None:
    """Build the body model's asset cache (once; takes a minute or two)."""
    from models.pipeline import prepare_models

    prepare_models()
    click.echo("models ready")


if __name__ == "__main__":
    sys.exit(main())
