#!/usr/bin/env bash
# Set up .venv for Alignment Advisor: torch first (a CPU build where no torch is present and
# no NVIDIA driver answers, so no multi-GB CUDA download), then the project itself.
# Usage: bash scripts/setup.sh [--dev]     (--dev adds the test and lint tools)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    # FACTS "Installing": torch==2.13.0 is the CPU build on these machines; users with GPUs
    # may install their own CUDA torch first — the project's own requirement is a range.
    pip install "torch==2.13.0"
fi
extras=""
if [ "${1:-}" = "--dev" ]; then
    extras="[dev]"
fi
pip install -e ".${extras}"
