#!/usr/bin/env bash
# Idempotent set-up: virtual env, PyTorch (CPU build where no CUDA GPU), the project,
# the Jupyter kernel and the nbstripout git filter. Safe to run again and again.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"

if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
  # a CPU wheel on local disk (pip's find-links) wins; its small dependencies come from the index
  if "$VPY" -m pip install -q --no-deps --no-index torch==2.13.0 >/dev/null 2>&1; then
    "$VPY" -m pip install -q torch==2.13.0
    echo "[setup] torch 2.13.0 installed from a local wheel"
  elif command -v nvidia-smi >/dev/null 2>&1 || [ "$(uname -s)" != "Linux" ]; then
    echo "[setup] installing torch (CUDA GPU or non-Linux platform)"
    "$VPY" -m pip install -q "torch>=2.2"
  else
    echo "[setup] no CUDA GPU: installing the CPU build of torch"
    "$VPY" -m pip install -q torch --index-url "${WORKBENCH_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}" \
      || "$VPY" -m pip install -q "torch>=2.2"
  fi
fi

stamp="$VENV/.workbench-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "[setup] installing the workbench and its dependencies"
  "$VPY" -m pip install -q -e ".[dev]"
  touch "$stamp"
fi

if ! "$VPY" -m jupyter kernelspec list 2>/dev/null | grep -q "^ *python3 "; then
  "$VPY" -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (workbench)" >/dev/null
fi

if git rev-parse --git-dir >/dev/null 2>&1; then
  "$VENV/bin/nbstripout" --install --attributes .gitattributes >/dev/null 2>&1 || true
fi
