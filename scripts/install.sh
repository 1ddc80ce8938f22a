#!/usr/bin/env bash
# Create .venv in the checkout and install the project into it (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first, pinned: on CPU machines this is the local 2.13.0 CPU wheel; letting another
# package pull "torch" would download multi-GB CUDA wheels.
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[dev]"
# One-off model preparation (Anny's asset cache, compiled render kernels) so that no
# request pays for it.
.venv/bin/avatars models prepare
touch .venv/.installed
