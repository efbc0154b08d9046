"""Install, remove or inspect the start-up hook that plugs CSPLADE into Pyserini's CLIs.

Wheels install ``csplade_pyserini_hook.pth`` themselves; editable installs need this command::

    python -m csplade_pyserini.integration.hook install    # or: remove, status
"""

from __future__ import annotations

import argparse
import sys
import sysconfig
from pathlib import Path

PTH_NAME = "csplade_pyserini_hook.pth"
PTH_SOURCE = Path(__file__).with_name("hook.pth")  # the same line the wheel ships


def pth_path() -> Path:
    return Path(sysconfig.get_path("purelib")) / PTH_NAME


def install() -> Path:
    path = pth_path()
    line = PTH_SOURCE.read_text()
    if not path.exists() or path.read_text() != line:
        path.write_text(line)
    return path


def remove() -> bool:
    path = pth_path()
    if path.exists():
        path.unlink()
        return True
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m csplade_pyserini.integration.hook", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["install", "remove", "status"])
    args = parser.parse_args(argv)
    if args.action == "install":
        print(f"hook installed: {install()}")
    elif args.action == "remove":
        print("hook removed" if remove() else "hook was not installed")
    else:
        print(f"hook file: {pth_path()} ({'present' if pth_path().exists() else 'absent'})")
        print(f"active in this interpreter: {'csplade_pyserini._hook' in sys.modules}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
