"""The ``avatars`` command line: serve, worker, create, render, models prepare.

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
    import uvicorn

    from service.app import create_app
    from service.embedded import EmbeddedWorker

    base = get_settings()
    settings = base.model_copy(
        update={
            "data_dir": base.data_dir.resolve(),
            "host": host or base.host,
            "port": base.port if port is None else port,
        }
    )
    click.echo(f"data dir: {settings.data_dir}")
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
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port)
    except KeyboardInterrupt:
        pass
    finally:
        if worker is not None:
            click.echo("stopping the embedded worker")
            worker.stop()


def _exit_on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(0)


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
@click.option("--exit-with-parent", is_flag=True, hidden=True)
@friendly_errors
def worker(queues: str, concurrency: int, pool: str, loglevel: str, exit_with_parent: bool) -> None:
    """Run a Celery worker for the avatar pipeline."""
    from workers.celery_app import app

    settings = get_settings()
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
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes (each also writes files in a second thread).")
@click.option("--sheet", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write a contact sheet PNG of the first 8 samples.")
@click.option("-o", "--out", "out_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path), help="Output directory.")
@friendly_errors
def synth(n: int, seed: int, size: int, workers: int, sheet: Path | None, out_dir: Path) -> None:
    """Write N synthetic people with ground truth to DIR/00000, DIR/00001, ..."""
    from models.synth.generator import contact_sheet, get_generator, write_dataset

    stats = write_dataset(out_dir, n, seed=seed, size=size, workers=workers)
    click.echo(f"{n} samples in {out_dir}: {stats['samples_per_s']:.2f} samples/s "
               f"({stats['seconds']:.1f} s with {stats['setup_s']:.1f} s set-up)")
    if sheet is not None:
        gen = get_generator(size)
        click.echo(str(contact_sheet([gen.sample(seed + i) for i in range(min(n, 8))], sheet)))


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
