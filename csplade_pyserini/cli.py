"""Shared command-line plumbing: logging set-up and the flags every stage accepts."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from typing import Callable

from csplade_pyserini.errors import CspladeError


def add_model_args(parser: argparse.ArgumentParser, default: str = "csplade") -> None:
    parser.add_argument("--encoder", default=default, metavar="SPEC",
                        help="csplade[:MODEL][,key=value...] (MODEL: checkpoint, card, preset, HF folder, .gguf, hub id); "
                             "searching also takes a pre-encoded query file (.jsonl)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:0 ...")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch/Lucene threads (default: all cores)")


def set_threads(threads: int | None) -> int:
    import torch

    threads = threads or os.cpu_count() or 1
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
