"""The public API of lamina.layers: every name in each ``__all__`` resolves, and the
package's lazy exports cost nothing for a caller that needs only fsops."""

from __future__ import annotations

import subprocess
import sys

import pytest

import lamina.layers
from lamina.layers import compression, diff, tar


@pytest.mark.parametrize("package", [lamina.layers, tar, compression, diff])
def test_every_name_in_all_resolves(package: object) -> None:
    for name in package.__all__:  # type: ignore[attr-defined]
        assert getattr(package, name) is not None, name


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError):
        lamina.layers.no_such_name  # noqa: B018


def test_fsops_alone_loads_no_codec() -> None:
    code = (
        "import sys\n"
        "from lamina.layers import fsops\n"
        "assert fsops.Root\n"
        "loaded = {'zstandard', 'isal'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
