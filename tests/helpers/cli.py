"""Running the real `lamina` command from tests."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

LAMINA = [sys.executable, "-m", "lamina.cli.main"]

# the `lamina` fixture: lamina(*args, check=True, input=None, env=None)
Lamina = Callable[..., subprocess.CompletedProcess[str]]
