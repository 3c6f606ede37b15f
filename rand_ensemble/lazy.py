"""Public names of a package imported on first use (PEP 562), so importing the package (or the
CLI, which reads config modules inside it) loads no JAX."""
from __future__ import annotations

import importlib
from typing import Callable


def lazy_names(package: str, exports: dict, namespace: dict) -> tuple[Callable, Callable]:
    """{module: (names, ...)} -> the package's (__getattr__, __dir__): a public name imports its
    module when first read; `package.submodule` works without importing it first."""
    module_of = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name):
        if name in module_of:
            return getattr(importlib.import_module(module_of[name]), name)
        try:
            return importlib.import_module(f"{package}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{package}.{name}":        # a missing dependency, not a missing name
                raise
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None

    def __dir__():
        return sorted(list(namespace) + list(module_of))

    return __getattr__, __dir__
