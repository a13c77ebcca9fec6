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
    # The wizard's real-terminal test drives `advisor` in tmux (skipped where tmux is missing).
    if ! command -v tmux >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        { DEBIAN_FRONTEND=noninteractive apt-get install -y -q tmux >/dev/null 2>&1 ||
          { apt-get update -q >/dev/null 2>&1 &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q tmux >/dev/null 2>&1; }; } ||
            echo "setup: could not install tmux; the wizard's tmux test will be skipped" >&2
    fi
fi
pip install -e ".${extras}"
