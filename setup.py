"""Only here to ship the Pyserini hook: all other metadata lives in setup.cfg.

A ``.pth`` file must sit at the top of site-packages, which declarative config cannot express, so
``build_py`` copies it beside the packages and wheels carry it there. Editable installs
(``pip install -e``) leave such files out; ``python -m csplade_pyserini.integration.hook install``
writes it for them (``make install`` does).
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "csplade_pyserini_hook.pth"
PTH_SOURCE = "csplade_pyserini/integration/hook.pth"  # the one copy of the hook line


class BuildPyWithHook(build_py):
    def run(self):
        super().run()
        self.copy_file(PTH_SOURCE, str(Path(self.build_lib) / PTH), preserve_mode=0)

    def get_outputs(self, include_bytecode=1):
        return [*super().get_outputs(include_bytecode), str(Path(self.build_lib) / PTH)]


setup(cmdclass={"build_py": BuildPyWithHook})
