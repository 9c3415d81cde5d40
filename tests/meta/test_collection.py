"""Every ``tests/**/test_*.py`` file on disk is collected by the suite.

pytest's default ``norecursedirs`` skips folders named ``build``, ``dist`` and others
without a word; ``tests/build/`` once hid all 626 builder tests from every run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.collection import collected_files, files_on_disk, uncollected_files

TESTS = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_every_test_file_on_disk_is_collected() -> None:
    missing = uncollected_files(TESTS)
    assert not missing, f"test files pytest does not collect: {missing}"


def _tree(root: Path, files: dict[str, str]) -> Path:
    # Its own ini pins pytest's rootdir to the tree, so test ids are relative to it.
    (root / "pytest.ini").write_text("[pytest]\n")
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "tests"


def test_the_check_catches_a_file_in_a_build_folder(tmp_path: Path) -> None:
    tests = _tree(
        tmp_path,
        {
            "tests/test_a.py": "def test_a():\n    pass\n",
            "tests/build/test_x.py": "def test_x():\n    pass\n",
            "tests/dist/sub/test_y.py": "def test_y():\n    pass\n",
        },
    )
    assert files_on_disk(tests) == {
        "tests/test_a.py",
        "tests/build/test_x.py",
        "tests/dist/sub/test_y.py",
    }
    assert collected_files(tests) == {"tests/test_a.py"}
    assert uncollected_files(tests) == ["tests/build/test_x.py", "tests/dist/sub/test_y.py"]


def test_the_check_catches_a_file_without_tests(tmp_path: Path) -> None:
    tests = _tree(
        tmp_path,
        {"tests/test_a.py": "def test_a():\n    pass\n", "tests/test_empty.py": "X = 1\n"},
    )
    assert uncollected_files(tests) == ["tests/test_empty.py"]


def test_the_check_fails_on_a_collection_error(tmp_path: Path) -> None:
    tests = _tree(tmp_path, {"tests/test_broken.py": "import no_such_module_here\n"})
    with pytest.raises(AssertionError, match="exited 2"):
        collected_files(tests)


def test_a_clean_tree_passes(tmp_path: Path) -> None:
    tests = _tree(
        tmp_path,
        {
            "tests/test_a.py": "def test_a():\n    pass\n",
            "tests/sub/test_b.py": "def test_b():\n    pass\n",
        },
    )
    assert uncollected_files(tests) == []
