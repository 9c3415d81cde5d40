"""Lazy public names for lamina's packages (PEP 562).

A package lists its public names in ``__all__`` and where each lives in a dict; this
module makes the package's ``__getattr__`` and ``__dir__`` from them, so that
``from lamina.layers import fsops`` or ``from lamina.runtime import run_container``
loads only the module that holds the name, not the whole package. Importing a package
therefore costs nothing, which ``lamina run``'s fast path counts on: this module
imports nothing at import time (not even :mod:`typing`).
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: importing typing costs the fast path milliseconds
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, MutableMapping


def lazy_exports(
    namespace: MutableMapping[str, object], homes: Mapping[str, str]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for the package whose ``globals()`` is ``namespace``.

    ``homes`` maps each public name to the module holding it: a full module name
    (``lamina.image.images``) or one relative to the package (``lifecycle``). A name
    is looked up once; the value is then kept in the package's namespace.
    """
    package = str(namespace["__name__"])

    def __getattr__(name: str) -> object:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        import importlib  # here, not at the top: see the module docstring

        module = home if home.startswith("lamina.") else f"{package}.{home}"
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        names = namespace.get("__all__", ())
        return sorted({*namespace, *(names if isinstance(names, (list, tuple)) else ())})

    return __getattr__, __dir__
