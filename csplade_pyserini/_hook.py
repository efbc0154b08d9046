"""Start-up hook (loaded by ``csplade_pyserini_hook.pth``) that plugs CSPLADE into Pyserini's own CLIs.

Pyserini has no plugin registry: ``pyserini.encode`` picks a document encoder by substring of
``--encoder`` and ``LuceneImpactSearcher`` does the same for query encoders, so ``csplade`` would be
taken for ``splade``. This module watches for those Pyserini modules being imported and, right after
each one executes, lets :mod:`csplade_pyserini.integration.patches` register the CSPLADE encoders in
front of the built-in ones. Before the JVM starts it also points pyjnius at a Java 21+ runtime and
makes the offline topics and qrels visible (see ``../shared/OFFLINE.md``).

Rules for this file: standard library only, no work at all unless Pyserini is imported, and
``CSPLADE_PYSERINI_HOOK=0`` switches it off entirely (checked in the ``.pth`` line).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

# module name -> function run before the module executes (it may return an undo, run once the module has
# executed or failed), and function run after it executed
_BEFORE = {
    "pyserini": "prepare_environment",
    "jnius": "prepare_jvm_options",
    # Pyserini 2.x fetches tables over HTTP in these two; offline they fall back to offline data
    "pyserini.prebuilt_index_info": "offline_fetches",
    "pyserini.search._base": "offline_fetches",
}
_AFTER = {
    "pyserini.search._base": "add_topic_aliases",
    "pyserini.encode": "patch_document_encoders",
    "pyserini.encode.optional": "patch_faiss_writer",
    "pyserini.search.faiss._searcher": "patch_faiss_searcher",
    "pyserini.search.lucene._impact_searcher": "patch_impact_searcher",
}


def _call(name: str, module=None):
    from csplade_pyserini.integration import patches

    return getattr(patches, name)(module) if module is not None else getattr(patches, name)()


class _HookedLoader(importlib.abc.Loader):
    def __init__(self, loader, fullname: str):
        self._loader = loader
        self._fullname = fullname

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        undo = _call(_BEFORE[self._fullname]) if self._fullname in _BEFORE else None
        try:
            self._loader.exec_module(module)
        finally:
            if callable(undo):
                undo()
        if self._fullname in _AFTER:
            _call(_AFTER[self._fullname], module)

    def __getattr__(self, item):  # get_source, is_package, resource readers...
        return getattr(self._loader, item)


class _PyseriniFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname not in _BEFORE and fullname not in _AFTER:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _HookedLoader(spec.loader, fullname)
        return spec


def install() -> None:
    if not any(isinstance(f, _PyseriniFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _PyseriniFinder())


install()
