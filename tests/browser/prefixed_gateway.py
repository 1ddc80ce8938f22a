"""The gateway served under a path prefix, as a reverse proxy would mount it.

``python tests/browser/prefixed_gateway.py /proxy/avatars 8123`` serves
``create_app()`` (settings from the ``AVATARS_*`` environment) at
``http://127.0.0.1:8123/proxy/avatars/``: the app sees the prefix as its ASGI
``root_path``. No worker: jobs go to the queue of ``AVATARS_DATA_DIR``, where the
embedded worker of an ``avatars serve`` on the same data dir picks them up.
"""

from __future__ import annotations

import sys
from contextlib import asynccontextmanager

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from service.app import create_app


def build(prefix: str) -> Starlette:
    gateway = create_app()

    @asynccontextmanager
    async def lifespan(_: Starlette):
        # a Mount does not pass lifespan events on: run the gateway's own
        async with gateway.router.lifespan_context(gateway):
            yield

    return Starlette(routes=[Mount(prefix, app=gateway)], lifespan=lifespan)


if __name__ == "__main__":
    prefix, port = sys.argv[1], int(sys.argv[2])
    uvicorn.run(build(prefix), host="127.0.0.1", port=port, log_level="info")
