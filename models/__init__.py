"""Architectures, one module per family; importing this package registers them all.

Every public module in this folder (not ``base``, ``layers``, ``ops`` or a ``_private`` one) is
imported here, so a new family file registers its models with no other edit.
"""

import importlib
import pkgutil

_SKIP = {"base", "backbone", "layers", "ops"}

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name not in _SKIP and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")
