"""On CI a skip fails the run unless tests/skip_allowlist.py allows it (helpers/skips.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.skips import PLUGIN_NAME, AllowedSkip, SkipsFailOnCI, on_ci, skip_reason
from skip_allowlist import ALLOWED_SKIPS

TESTS = Path(__file__).resolve().parents[1]

SKIPPING = """
import pytest

@pytest.mark.skipif(True, reason="umoci is not installed")
def test_marked():
    pass

def test_in_body():
    pytest.skip("buildah is not installed")

@pytest.fixture
def tool():
    pytest.skip("crun is not installed")

def test_in_fixture(tool):
    pass

def test_runs():
    pass

@pytest.mark.xfail(strict=True, reason="a known lamina bug")
def test_known_bug():
    assert False
"""


def test_on_ci_reads_the_ci_variable() -> None:
    assert on_ci({"CI": "true"})
    assert on_ci({"CI": "1"})
    assert not on_ci({})
    assert not on_ci({"CI": ""})
    assert not on_ci({"CI": "false"})
    assert not on_ci({"CI": "0"})


def test_an_allowed_skip_matches_ids_with_parameters() -> None:
    entry = AllowedSkip("tests/t.py::test_chain[native-legacy]", "overlay", "a test of it")
    assert entry.matches("tests/t.py::test_chain[native-legacy]", "only overlay")
    assert not entry.matches("tests/t.py::test_chain[native-legacy]", "no tool")
    assert not entry.matches("tests/t.py::test_chain[overlay-legacy]", "only overlay")
    assert not entry.matches("tests/t.py::test_chain[n]", "only overlay")
    wild = AllowedSkip("tests/t.py::test_chain[*-legacy]", "overlay", "a test of it")
    assert wild.matches("tests/t.py::test_chain[native-legacy]", "only overlay")
    assert not wild.matches("tests/t.py::test_chain[native-auto]", "only overlay")


def test_skips_fail_when_the_plugin_is_active(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_skipping=SKIPPING)
    result = pytester.runpytest_inprocess(plugins=[SkipsFailOnCI([])])
    # A skip in the setup phase (a skipif mark, a skipping fixture) is an error; one in
    # the test body a failure; an xfail stays an xfail.
    result.assert_outcomes(passed=1, failed=1, errors=2, xfailed=1)
    result.stdout.fnmatch_lines(["*skipped on CI: buildah is not installed*"])
    result.stdout.fnmatch_lines(["*skipped on CI: umoci is not installed*"])
    result.stdout.fnmatch_lines(["*skipped on CI: crun is not installed*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_skips_stay_skips_without_the_plugin(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_skipping=SKIPPING)
    result = pytester.runpytest_inprocess()
    result.assert_outcomes(passed=1, skipped=3, xfailed=1)
    assert result.ret == pytest.ExitCode.OK


def test_an_allowed_skip_stays_a_skip(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_skipping=SKIPPING)
    allowed = [
        AllowedSkip("test_skipping.py::test_in_body", "buildah is not", "a test of the list"),
        # The right test, the wrong reason: still a failure.
        AllowedSkip("test_skipping.py::test_marked", "skopeo", "a test of the list"),
        AllowedSkip("*::test_in_fix*", "crun", "a test of the pattern"),
    ]
    result = pytester.runpytest_inprocess(plugins=[SkipsFailOnCI(allowed)])
    result.assert_outcomes(passed=1, skipped=2, errors=1, xfailed=1)
    result.stdout.fnmatch_lines(["*skipped on CI: umoci is not installed*"])


def test_a_module_level_skip_fails(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_gone="import pytest\npytest.importorskip('no_such_module_here')\n"
        "def test_a():\n    pass\n",
        test_here="def test_b():\n    pass\n",
    )
    result = pytester.runpytest_inprocess(plugins=[SkipsFailOnCI([])])
    # A collection error stops the run before any test, as any broken test file does.
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*skipped on CI: could not import 'no_such_module_here'*"])
    assert result.ret == pytest.ExitCode.INTERRUPTED


def _run_with_ci(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_skipping.py").write_text(SKIPPING)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "CI"))}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = str(TESTS)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "helpers.skips", "-p", "no:cacheprovider", "-q"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_ci_variable_switches_the_plugin_on(tmp_path: Path) -> None:
    proc = _run_with_ci(tmp_path, "true")
    assert proc.returncode == pytest.ExitCode.TESTS_FAILED, proc.stdout
    assert "1 failed, 1 passed, 1 xfailed, 2 errors" in proc.stdout


def test_without_ci_skips_are_skips(tmp_path: Path) -> None:
    for ci in (None, "false"):
        proc = _run_with_ci(tmp_path, ci)
        assert proc.returncode == pytest.ExitCode.OK, proc.stdout
        assert "1 passed, 3 skipped, 1 xfailed" in proc.stdout


def test_this_suite_loads_the_plugin(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.has_plugin("helpers.skips")
    active = pytestconfig.pluginmanager.get_plugin(PLUGIN_NAME)
    assert (active is not None) == on_ci()
    if active is not None:
        assert active.allowed == ALLOWED_SKIPS


def test_every_allowed_skip_says_why() -> None:
    for entry in ALLOWED_SKIPS:
        assert entry.nodeid.startswith("tests/") and "::" in entry.nodeid, entry
        assert entry.message.strip(), entry
        assert len(entry.why.split()) >= 5, entry


def test_skip_reason_reads_the_report() -> None:
    report = pytest.TestReport(
        "t.py::t", ("t.py", 1, "t"), {}, "skipped", ("t.py", 3, "Skipped: no tool"), "call"
    )
    assert skip_reason(report) == "no tool"
