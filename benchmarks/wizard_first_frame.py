"""Benchmark: time from starting `advisor` to its first painted frame, against `python -c pass`.

`advisor` runs in a pseudo-terminal (80×24), as in a real one; the clock stops when the first
question's text has been written to the terminal. Target (issue #4): under 1 s.
Usage: python benchmarks/wizard_first_frame.py [--runs N]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import select
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

FIRST_FRAME = b"Question 1 of 9"


def python_start(runs: int) -> float:
    """Median seconds of `python -c pass`."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def first_frame_seconds(command: list[str], timeout: float = 30.0) -> float:
    """Seconds until `command`, in an 80×24 pseudo-terminal, writes its first question."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "80", "LINES": "24"}
    start = time.perf_counter()
    process = subprocess.Popen(
        command, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
    )
    os.close(slave)
    seen = b""
    try:
        while time.perf_counter() - start < timeout:
            ready, _, _ = select.select([master], [], [], 0.05)
            if not ready:
                continue
            try:
                seen += os.read(master, 65536)
            except OSError:
                break
            if FIRST_FRAME in seen:
                return time.perf_counter() - start
        raise RuntimeError(f"no first frame within {timeout} s; output began {seen[:200]!r}")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        os.close(master)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    advisor = str(Path(sys.executable).with_name("advisor"))
    if not Path(advisor).exists():
        advisor = shutil.which("advisor") or advisor
    baseline = python_start(args.runs)
    first_frame_seconds([advisor])  # warm the file cache once
    frames = [first_frame_seconds([advisor]) for _ in range(args.runs)]
    median = statistics.median(frames)
    print(f"{'':34} {'median s':>9} {'min s':>7} {'max s':>7}")
    print(f"{'python -c pass':34} {baseline:9.3f}")
    print(
        f"{'advisor: first painted frame':34} {median:9.3f} {min(frames):7.3f} {max(frames):7.3f}"
    )
    verdict = "meets" if median < 1.0 else "MISSES"
    print(
        f"\nfirst frame after {median:.3f} s ({median - baseline:.3f} s above Python's start): "
        f"{verdict} the 1 s target"
    )


if __name__ == "__main__":
    main()
