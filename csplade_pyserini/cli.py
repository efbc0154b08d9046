"""Shared command-line plumbing: logging set-up and the flags every stage accepts."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from pathlib import Path
from typing import Callable

from csplade_pyserini.errors import CspladeError


def prefer_passive_openmp() -> None:
    """OpenMP threads that spin-wait at every parallel step (libgomp's default) burn the cores a second
    process needs: two 2-thread encodes on 2 cores each fell to 16-26% of their speed alone, and to 53-61%
    with sleeping (passive) threads, which cost nothing alone (``make bench-concurrency``). OpenMP reads the
    policy when torch loads it, so this only acts before torch is imported; a user's own value wins."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


prefer_passive_openmp()  # our commands import this module before torch


def add_model_args(parser: argparse.ArgumentParser, default: str = "csplade") -> None:
    parser.add_argument("--encoder", default=default, metavar="SPEC",
                        help="csplade[:MODEL][,key=value...] (MODEL: checkpoint, card, preset, HF folder, .gguf, hub id); "
                             "searching also takes a pre-encoded query file (.jsonl)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:0 ...")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch/Lucene threads (default: OMP_NUM_THREADS, else the cores this process may use)")


def available_cores() -> int:
    """The cores this process may run on: those of its CPU affinity mask (``taskset``, a scheduler's
    allocation), capped by a cgroup CPU quota (a container's ``cpu.max``), not every core of the machine."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def default_threads() -> int:
    """``OMP_NUM_THREADS`` when the user set it, else :func:`available_cores`."""
    try:
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    except (KeyError, ValueError):
        return available_cores()


def set_threads(threads: int | None) -> int:
    """Torch's intra-op threads: ``threads`` (``--threads``), else :func:`default_threads`."""
    import torch

    threads = threads or default_threads()
    torch.set_num_threads(threads)
    return threads


_STORAGE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> None:
    """Run a CLI entry point: INFO logging; our own errors, and a full disk or size limit, as one clear line
    with exit status 2."""
    logging.basicConfig(level=os.environ.get("CSPLADE_LOG", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "filelock", "huggingface_hub", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        code = main(argv)
    except CspladeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    except OSError as exc:
        if exc.errno not in _STORAGE_ERRORS:
            raise
        # a full disk or a size limit is the machine's state, not a bug: one line, outputs left untouched
        print(f"error: {exc.strerror} while writing {exc.filename or 'an output'}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:  # Ctrl-C: one line, nothing half-written (outputs are renamed into place last)
        print("interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)
