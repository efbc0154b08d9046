"""Run a benchmark step in its own process, so that its peak memory is its own."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time


def run_measured(args: list[str], env: dict | None = None) -> dict:
    """Run ``python -m ...args`` and return exit code, wall seconds and the child's peak RSS (MB)."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, *args], env={**os.environ, **(env or {})})
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return {"returncode": process.returncode, "wall_s": time.perf_counter() - start,
            "peak_rss_mb": usage.ru_maxrss / 1024, "cpu_s": usage.ru_utime + usage.ru_stime}


def self_peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
