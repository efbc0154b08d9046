"""Write-then-rename helpers, so that a failure never leaves a half-written run, vector file or index,
and the guards every command that writes an output folder goes through: an output never equals or
contains an input, an existing output is replaced only with ``--overwrite`` and only if this toolkit
wrote it, and two commands never write the same output at once (a lock file).

Temporary names carry the writer's process id (``.NAME.PID.xxxx.tmp``), so that a later run can clear
what a killed one left behind; files and folders get the user's umask (``tempfile`` makes them
0600 / 0700).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator

from csplade_pyserini.errors import InputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_tensors(tensors: dict, path: str | Path) -> None:
    """``safetensors.torch.save_file`` with the user's umask (it creates its file 0600)."""
    from safetensors.torch import save_file

    save_file(tensors, str(path))
    os.chmod(path, 0o666 & ~_umask())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True


def clear_stale_temporaries(path: str | Path) -> int:
    """Remove the temporaries that killed writers of ``path`` left beside it; returns how many."""
    path = Path(path)
    if not path.parent.is_dir():
        return 0
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(\d+)\..*\.(tmp|log)$")
    removed = 0
    for entry in path.parent.iterdir():
        match = pattern.match(entry.name)
        if match and not _alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
            removed += 1
    return removed


def check_output(output: str | Path, inputs: Iterable[str | Path], overwrite: bool,
                 ours: Callable[[Path], bool], what: str) -> None:
    """Refuse an output that equals or contains an input, or that exists (unless ``overwrite``, and then
    only when ``ours(output)`` says this toolkit wrote it)."""
    target = Path(output).resolve()
    for source in inputs:
        source = Path(source).resolve()
        if target == source or target in source.parents:
            raise InputError(f"the {what} would replace the input {source}: choose another output folder", path=output)
    if target.exists():
        if not overwrite:
            raise InputError(f"the {what} already exists; pass --overwrite to replace it", path=output)
        if not ours(target):
            raise InputError(f"the {what} exists and holds files this toolkit did not write; refusing to replace "
                             "it, even with --overwrite", path=output)


@contextlib.contextmanager
def output_lock(path: str | Path) -> Iterator[Path]:
    """``PATH.lock`` while a command writes ``path``: a second writer fails at once with a clear error (a
    lock whose process is gone is taken over)."""
    lock = Path(path).with_name(Path(path).name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666 & ~_umask())
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and _alive(pid):
                raise InputError(f"another process (pid {pid}) is writing this output right now", path=path) from None
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{os.getpid()}\n")
        break
    try:
        yield lock
    finally:
        lock.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file next to ``path``; rename it over ``path`` only if the block succeeds.

    A symlink is written through: the temporary file goes beside its target, which it replaces, and the link
    stays. Something that is not a regular file (``/dev/null``, a FIFO, a terminal) cannot be replaced by a
    rename without destroying it: the output is still written to a temporary file first, then copied into it
    once the block has succeeded."""
    path = Path(path)
    if path.is_symlink():
        path = path.resolve()
    special = path.exists() and not path.is_file()
    if not special:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp",
                               dir=None if special else path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        kwargs = {} if "b" in mode else {"encoding": encoding}
        with open(tmp, mode, **kwargs) as handle:
            yield handle
        if special:
            with open(tmp, "rb") as source, open(path, "wb") as target:
                shutil.copyfileobj(source, target)
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling directory that replaces ``path`` only when the block succeeds.

    Directory renames are atomic on POSIX only when the target does not exist, so an existing
    target is first moved aside and deleted after the swap; readers never see a partial directory.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists (pass --overwrite to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.{os.getpid()}.old.tmp")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
