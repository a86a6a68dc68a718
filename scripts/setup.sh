#!/usr/bin/env bash
# Sets up a fresh Debian/Ubuntu machine for prospr-jax, idempotently:
#   - Debian's dataset-fashion-mnist (real Fashion-MNIST, the offline default data set),
#   - a virtualenv in .venv with the pinned requirements and this package (editable).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq dataset-fashion-mnist
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.txt
.venv/bin/python -m pip install -q --no-deps -e .
