#!/usr/bin/env bash
# Refresh requirements.lock: resolve the newest releases that pyproject.toml's ranges allow in
# a scratch virtual environment, write every version down, rebuild .venv from the new lock
# and run the tests. Upgrading is this one deliberate step; review the diff and commit it.
#
#   bash scripts/lock.sh            # new lock, fresh .venv, tests
#   bash scripts/lock.sh --no-test  # new lock only (then: rm -rf .venv && bash scripts/setup.sh --dev)
#
# When the tests fail, the previous lock is put back (the new one is left beside it as
# requirements.lock.failed) and .venv is rebuilt from the previous lock.
# torch is not in the lock: GPU users bring their own CUDA build, and setup.sh installs the
# CPU build torch==2.13.0 where none is present.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"$python" -m venv "$scratch/venv"
pip() { "$scratch/venv/bin/python" -m pip --disable-pip-version-check -q "$@"; }
pip install "torch==2.13.0"
pip install --upgrade setuptools
# No constraints here: this is where new releases come in.
PIP_CONSTRAINT= pip install -e ".[dev,qlora]"
{
    echo "# requirements.lock: the exact versions the tests passed with, used by scripts/setup.sh."
    echo "# Written by scripts/lock.sh on $(date -u +%Y-%m-%d) with $("$scratch/venv/bin/python" --version)."
    echo "# torch is left out on purpose: bring your own CUDA build, or setup.sh installs 2.13.0 (CPU)."
    "$scratch/venv/bin/python" -m pip --disable-pip-version-check freeze --all --exclude-editable |
        grep -viE '^(pip|torch|triton|cuda-[a-z0-9-]+)==' |
        awk -F'==' 'tolower($1) !~ /^nvidia-/ || tolower($1) == "nvidia-ml-py"' |  # torch's CUDA wheels out
        LC_ALL=C sort -f
} > requirements.lock.new
if [ -f requirements.lock ]; then
    cp requirements.lock "$scratch/previous.lock"
    changes=$({ diff -u "$scratch/previous.lock" requirements.lock.new || true; } | grep -E '^[-+][^-+#]' || true)
    echo "${changes:-lock: no version changed}"
fi
mv requirements.lock.new requirements.lock
[ "${1:-}" = "--no-test" ] && { echo "lock: wrote requirements.lock (tests not run)"; exit 0; }
rm -rf .venv
bash scripts/setup.sh --dev
if .venv/bin/python -m pytest -q; then
    echo "lock: requirements.lock refreshed and the tests pass; commit it"
else
    status=$?
    if [ -f "$scratch/previous.lock" ]; then
        mv requirements.lock requirements.lock.failed
        cp "$scratch/previous.lock" requirements.lock
        rm -rf .venv && bash scripts/setup.sh --dev
        echo "lock: the tests failed with the new versions (requirements.lock.failed); kept the previous lock" >&2
    fi
    exit "$status"
fi
