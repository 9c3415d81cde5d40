"""Each registry package states its public API in ``__all__``, and every name there
resolves; the top package and the client load their rooms only when asked."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

PACKAGES = [
    "lamina.registry",
    "lamina.registry.authn",
    "lamina.registry.client",
    "lamina.registry.server",
    "lamina.registry.storage",
    "lamina.registry.storage.s3",
]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_resolves(package: str) -> None:
    module = importlib.import_module(package)
    names = module.__all__
    assert names, package
    assert len(set(names)) == len(names)
    for name in names:
        if not hasattr(module, name):
            importlib.import_module(f"{package}.{name}")  # a public submodule
        assert hasattr(module, name), f"{package}.{name}"


def _loaded_after(statement: str) -> set[str]:
    script = f"import sys\n{statement}\nprint(' '.join(sorted(sys.modules)))\n"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return {m for m in out.stdout.split() if m.startswith("lamina.registry")}


def test_importing_the_registry_package_loads_no_room() -> None:
    assert _loaded_after("import lamina.registry") == {"lamina.registry"}


def test_credentials_do_not_load_the_http_stack() -> None:
    loaded = _loaded_after("from lamina.registry.client import load_credentials")
    assert "lamina.registry.client.credentials" in loaded
    assert "lamina.registry.client.transport" not in loaded
    assert "lamina.registry.client.remote" not in loaded
