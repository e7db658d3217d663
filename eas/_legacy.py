"""Import paths of earlier versions of eas, kept working.

HF exports written before the library was split into layers carry a copy of modeling_eas.py that
imports `eas.pia`, `eas.reparam`, `eas.skip` and `eas.export.*`; loading such a checkpoint with
trust_remote_code runs that copy. This finder answers those names with the modules that live at the
new paths (the same module objects, so a class is the same class whichever path imported it). New code
uses the new paths; nothing else is aliased.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

OLD_TO_NEW = {
    "eas.pia": "eas.method.pia",
    "eas.pia.context": "eas.models.prompt",
    "eas.reparam": "eas.method.reparam",
    "eas.skip": "eas.method.skip",
    "eas.hf": "eas.export",
}


def new_name(name: str) -> str | None:
    """The new path of a legacy module name (the longest legacy prefix wins), or None."""
    for old in sorted(OLD_TO_NEW, key=len, reverse=True):
        if name == old or name.startswith(old + "."):
            return OLD_TO_NEW[old] + name[len(old):]
    return None


class LegacyFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """First on sys.meta_path, so a legacy name never reaches the path finder (which would load the
    module file a second time under the old name)."""

    def find_spec(self, name, path=None, target=None):
        target_name = new_name(name)
        if target_name is None:
            return None
        is_package = importlib.util.find_spec(target_name).submodule_search_locations is not None
        return importlib.util.spec_from_loader(name, self, is_package=is_package)

    def create_module(self, spec):
        return importlib.import_module(new_name(spec.name))

    def exec_module(self, module):
        pass  # the module at the new path is already executed


def install() -> None:
    if not any(isinstance(f, LegacyFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, LegacyFinder())
