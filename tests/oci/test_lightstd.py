"""lamina.lightstd: the JSON of the start-up path gives json's answers without importing it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lamina.lightstd import dumps, loads, suppress

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=30,
)


@given(_json_values)
def test_same_as_json(value: object) -> None:
    text = dumps(value, sort_keys=True)
    assert text == json.dumps(value, sort_keys=True, separators=(",", ":"))
    assert loads(text) == value
    assert loads(json.dumps(value, indent=2)) == value
    assert loads(text.encode()) == value


@pytest.mark.parametrize("bad", ["", " ", "{", "{}x", "[1,]", "NaN", "Infinity", "'a'", "\x00"])
def test_invalid_documents_are_value_errors(bad: str) -> None:
    with pytest.raises(ValueError):
        loads(bad)


def test_refuses_what_json_cannot_hold() -> None:
    with pytest.raises(ValueError):
        dumps(float("nan"))
    with pytest.raises(TypeError):
        dumps({"a": {1, 2}})
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(ValueError):
        dumps(loop)


def test_suppress() -> None:
    with suppress(KeyError, FileNotFoundError):
        raise FileNotFoundError
    with pytest.raises(ValueError), suppress(KeyError):
        raise ValueError


def test_the_fast_run_path_imports_no_heavy_modules() -> None:
    """What `lamina run`'s fast path imports stays light (start-up time is a feature)."""
    code = (
        "import sys, lamina.cli.main, lamina.runtime.plans.replay, lamina.runtime.driver.process, "
        "lamina.runtime.plans.cache, lamina.stateroot, lamina.snapshot.raw_metadata, "
        "lamina.snapshot.mount, lamina.snapshot.fsutil; "
        "print(' '.join(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.split())
    heavy = {"json", "re", "enum", "typing", "dataclasses", "argparse", "contextlib", "shutil"}
    assert not loaded & heavy, sorted(loaded & heavy)
