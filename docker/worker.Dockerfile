# syntax=docker/dockerfile:1.7
#
# Worker image (CUDA): Celery workers, `avatars worker --queues ...`.
# Default CMD serves both queues; compose.yaml runs one service per queue
# (`--queues fit`, `--queues inpaint`).
#
# Build from the repository root (the build context must be the repo root):
#   docker build -f docker/worker.Dockerfile -t avatars-worker .
#   # fewer GPU archs = faster nvdiffrast build, e.g. only H100:
#   docker build -f docker/worker.Dockerfile --build-arg TORCH_CUDA_ARCH_LIST=9.0 -t avatars-worker .
#
# The build context is filtered by docker/worker.Dockerfile.dockerignore.
# No Docker engine on the dev machine: checked by review and tests/test_deploy_files.py.
#
# Two stages:
#   builder  nvidia/cuda *devel* (nvcc, headers): Python venv, torch, nvdiffrast compiled
#            from source, the project's dependencies.
#   runtime  nvidia/cuda *runtime*: gets the finished Python + venv from the builder, then
#            the project source. No compilers or CUDA headers in the shipped image; nvdiffrast
#            >= 0.4 compiles its CUDA ops at install time, so nothing is JIT-built at runtime
#            (only its OpenGL context would be; we use the CUDA rasterizer).
#            torch's wheels bring their own CUDA libraries (cuBLAS, cuDNN, ...) as pip packages;
#            `-base` instead of `-runtime` would shave off the system copies if size matters.
#
# CUDA version: torch 2.13.0 ships CUDA 12.6 and 13.0 builds (13.0 is the PyPI default).
# 13.0 is used because onnxruntime-gpu on PyPI is built against CUDA 13 too, so both share
# the same CUDA 13 libraries from torch's wheels. nvcc in the builder must have the same
# CUDA major version as torch (torch.utils.cpp_extension refuses a mismatch):
# change CUDA_VERSION and TORCH_CUDA together (e.g. 12.6.3 / cu126).
ARG CUDA_VERSION=13.0.2
ARG UBUNTU_VERSION=22.04
ARG UV_VERSION=0.13.9

# Ubuntu 22.04 ships Python 3.10. uv installs a standalone CPython 3.11 into /opt/python,
# which (unlike a PPA build) can be copied as-is from the builder to the runtime stage.
FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu${UBUNTU_VERSION} AS builder

ARG PYTHON_VERSION=3.11
# torch must match the pin in pyproject.toml; TORCH_CUDA must match CUDA_VERSION above.
ARG TORCH_VERSION=2.13.0
ARG TORCH_CUDA=cu130
# nvdiffrast release tag (0.4.0 builds its CUDA extension during `pip install`).
ARG NVDIFFRAST_REF=v0.4.0
# GPU architectures nvdiffrast is compiled for (no GPU is visible during `docker build`, so
# they cannot be detected). CUDA 13 supports sm_75 and newer; +PTX lets newer GPUs JIT.
ARG TORCH_CUDA_ARCH_LIST="7.5 8.0 8.6 8.9 9.0 10.0 12.0+PTX"
ARG MAX_JOBS=8

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON_PREFERENCE=only-managed \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    CUDA_HOME=/usr/local/cuda

RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential git ca-certificates \
    && rm -rf /var/lib/apt/lists/*

COPY --from=uv /uv /usr/local/bin/uv

# 1) Python 3.11 venv + torch (CUDA 13.0 build) from PyTorch's own index.
#    constraints.txt then holds torch at exactly this build for every later pip call.
RUN --mount=type=cache,target=/root/.cache/pip \
    uv python install "${PYTHON_VERSION}" \
    && uv venv --seed --python "${PYTHON_VERSION}" /opt/venv \
    && pip install --upgrade pip "setuptools>=68" wheel ninja \
    && pip install "torch==${TORCH_VERSION}" --index-url "https://download.pytorch.org/whl/${TORCH_CUDA}" \
    && pip freeze --all | grep -i '^torch==' > /opt/venv/constraints.txt

# 2) nvdiffrast, compiled from its source repository at a pinned tag against the torch above
#    (--no-build-isolation: its setup.py imports torch). CC/CXX pinned to the system gcc.
RUN --mount=type=cache,target=/root/.cache/pip \
    git clone --depth 1 --branch "${NVDIFFRAST_REF}" https://github.com/NVlabs/nvdiffrast /tmp/nvdiffrast \
    && cd /tmp/nvdiffrast \
    && CC=gcc CXX=g++ FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST}" MAX_JOBS="${MAX_JOBS}" \
       pip install --no-build-isolation -c /opt/venv/constraints.txt . \
    && cd / \
    && rm -rf /tmp/nvdiffrast \
    && pip show -f nvdiffrast | grep -E '\.so$'

# 3) The project's dependencies plus the `gpu` extra, read from pyproject.toml only, so this
#    layer is rebuilt when dependencies change, not on every source edit.
#    pyproject lists both onnxruntime (CPU) and, in `gpu`, onnxruntime-gpu. Both install into
#    the same `onnxruntime/` package, so the GPU wheel is reinstalled last to own the files;
#    the check fails the build if the CUDA provider is not the one that ended up installed.
WORKDIR /src
COPY pyproject.toml ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['gpu']))" \
       > /tmp/requirements.txt \
    && pip install -c /opt/venv/constraints.txt -r /tmp/requirements.txt \
    && ORT_VERSION="$(python -c 'import importlib.metadata as m; print(m.version("onnxruntime-gpu"))')" \
    && pip install --no-deps --force-reinstall "onnxruntime-gpu==${ORT_VERSION}" \
    && python -c "import onnxruntime as ort; assert 'CUDAExecutionProvider' in ort.get_available_providers(), ort.get_available_providers()"


FROM nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu${UBUNTU_VERSION} AS runtime

# Same UID/GID as the gateway image: both write to the shared `avatar-data` volume.
ARG APP_UID=10001

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
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
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# Non-root user (Celery also warns when run as root). /data is created owned by it so that
# an empty named volume mounted there starts out with this ownership.
RUN groupadd --system --gid "${APP_UID}" app \
    && useradd --system --uid "${APP_UID}" --gid app --create-home --home-dir /home/app \
       --shell /usr/sbin/nologin app \
    && install -d -o app -g app /data "${ANNY_CACHE_DIR}" "${NUMBA_CACHE_DIR}"

# The venv's python links to the uv-managed CPython: both keep their builder paths.
COPY --from=builder /opt/python /opt/python
COPY --from=builder /opt/venv /opt/venv

# 4) The project itself with the `gpu` extra. Every dependency is already in the venv, so
#    this only builds and installs the (pure Python) project: no compiler needed here.
WORKDIR /src
COPY . ./
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --no-build-isolation -c /opt/venv/constraints.txt ".[gpu]"

# 5) Bake the model caches (Anny's assets in $ANNY_CACHE_DIR, numba kernels in
#    $NUMBA_CACHE_DIR: site-packages is read-only for the app user) into the image, as the
#    runtime user. No GPU is visible during `docker build`: this step must work on CPU.
USER app
WORKDIR /home/app
RUN avatars models prepare

# Exec form, so the Celery worker is PID 1 and gets SIGTERM (warm shutdown).
# compose.yaml replaces CMD, e.g. `command: ["--queues", "inpaint"]`.
ENTRYPOINT ["avatars", "worker"]
CMD ["--queues", "fit,inpaint"]
