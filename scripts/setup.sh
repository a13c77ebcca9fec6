#!/usr/bin/env bash
# Set up .venv for Alignment Advisor: torch first (the CPU build torch==2.13.0 where no torch is
# present, so no multi-GB CUDA download; GPU users install their CUDA build first), then the
# project with every other package at the exact version in requirements.lock, the versions
# the tests passed with. scripts/lock.sh moves the lock to newer releases.
# Usage: bash scripts/setup.sh [--dev]     (--dev adds the test and lint tools)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    # torch==2.13.0 is a CPU build on the development machines; users with GPUs
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
# The build backend at its locked version, then the project built with it (no isolated build
# environment, which would fetch the newest setuptools).
pip install -c requirements.lock setuptools
pip install -c requirements.lock --no-build-isolation -e ".${extras}"
