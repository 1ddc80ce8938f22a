# syntax=docker/dockerfile:1.7
#
# Gateway image (CPU only): the FastAPI gateway, `avatars serve`.
# With AVATARS_REDIS_URL set (see compose.yaml) it serves HTTP only; jobs go to Redis
# and are run by the worker image (docker/worker.Dockerfile).
#
# Build from the repository root (the build context must be the repo root):
#   docker build -f docker/gateway.Dockerfile -t avatars-gateway .
#
# The build context is filtered by docker/gateway.Dockerfile.dockerignore (BuildKit uses
# <Dockerfile>.dockerignore next to the Dockerfile instead of a root .dockerignore).
# No Docker engine on the dev machine: checked by review and tests/test_deploy_files.py.

# Bookworm is pinned on purpose: the apt package names below are bookworm's
# (trixie, the default for python:3.11-slim today, renamed libglib2.0-0 to libglib2.0-0t64).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE}

# torch must match the pin in pyproject.toml; the CPU wheel keeps the image free of CUDA libs.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# Same UID/GID as the worker image: both write to the shared `avatar-data` volume.
ARG APP_UID=10001

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    ANNY_CACHE_DIR=/opt/avatars/anny-cache \
    NUMBA_CACHE_DIR=/opt/avatars/numba-cache \
    AVATARS_DATA_DIR=/data

# libgl1 + libglib2.0-0: mediapipe pulls in opencv-contrib-python (the non-headless build),
# whose cv2 module links libGL.so.1 and libglib/libgthread at import time.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

# Non-root user. /data is created owned by it so that an empty named volume mounted
# there starts out with this ownership (Docker copies the image's directory on first use).
RUN groupadd --system --gid "${APP_UID}" app \
    && useradd --system --uid "${APP_UID}" --gid app --create-home --home-dir /home/app \
       --shell /usr/sbin/nologin app \
    && install -d -o app -g app /data "${ANNY_CACHE_DIR}" "${NUMBA_CACHE_DIR}"

# 1) torch from PyTorch's CPU index, before anything else can pull the (CUDA) PyPI build.
#    constraints.txt then holds torch at exactly this build for every later pip call.
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv /opt/venv \
    && pip install --upgrade pip "setuptools>=68" wheel \
    && pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}" \
    && pip freeze --all | grep -i '^torch==' > /opt/venv/constraints.txt

# 2) The project's dependencies, read from pyproject.toml only, so this layer is rebuilt
#    when dependencies change, not on every source edit.
WORKDIR /src
COPY pyproject.toml ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies']))" \
       > /tmp/requirements.txt \
    && pip install -c /opt/venv/constraints.txt -r /tmp/requirements.txt

# 3) The project itself (models/, workers/, service/ and the `avatars` entry point).
COPY . ./
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --no-build-isolation -c /opt/venv/constraints.txt .

# 4) Bake the model caches (Anny's assets in $ANNY_CACHE_DIR, numba kernels in
#    $NUMBA_CACHE_DIR: site-packages is read-only for the app user) into the image,
#    built as the runtime user so everything it writes (also under ~/.cache) is its own.
USER app
WORKDIR /home/app
RUN avatars models prepare

EXPOSE 8000

# No curl in the slim image: the stdlib does the probe (urlopen raises on HTTP errors).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"]

# Exec form, so the server is PID 1 and gets SIGTERM. `docker run IMAGE models prepare`
# and the like also work, since only CMD is replaced.
ENTRYPOINT ["avatars"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
