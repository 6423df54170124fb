#!/usr/bin/env bash
# Download, on a machine with the package index, the wheels that bench/gpu_check.sh installs on a GPU machine that
# has Python 3.12 and torch but no fastai or albumentations (and no network). Versions: those installed here.
#     bash bench/gpu_wheels.sh [DIR]        # default .whl/ (ignored by git)
set -euo pipefail
dir=${1:-.whl}
mkdir -p "$dir"
# fastai, albumentations and torchmetrics (recipe evaluate's calibration) with the dependencies that image lacks (it has numpy, scipy, pandas, matplotlib,
# scikit-learn, pillow, opencv, pyyaml, rich, typing-extensions, safetensors, accelerate, pytest, anyio, click, h11,
# idna, python-dateutil, uvloop). fastprogress imports python-fasthtml, which brings a web stack.
pkgs="fastai fastcore fasttransform fastprogress fastdownload plum-dispatch beartype albumentations albucore simsimd
      stringzilla pydantic pydantic_core annotated-types typing-inspection
      python-fasthtml starlette uvicorn httpx2 httpcore2 beautifulsoup4 soupsieve itsdangerous oauthlib
      python-multipart python-dotenv truststore httptools watchfiles websockets torchmetrics lightning-utilities"
for p in $pkgs; do
  v=$(python3 -m pip show "$p" 2>/dev/null | sed -n 's/^Version: //p')
  [ -n "$v" ] || { echo "gpu_wheels: $p is not installed here (pip install -e .[dev] first)" >&2; exit 1; }
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$dir" "$p==$v"
done
ls "$dir"
