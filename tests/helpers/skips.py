"""On CI a skip is a failure, unless the allow-list (``tests/skip_allowlist.py``) says why.

`make test` installs every peer tool the suite drives (scripts/bootstrap.sh), so a test
that skips on CI because skopeo, buildah or crun is "missing" hides a gap: the run looks
green while the test never ran. When the ``CI`` environment variable is set (``.ci/run``
exports it), :class:`SkipsFailOnCI` turns every skipped test report, and every skipped
module, into a failure that names the skip's reason, except a skip an
:class:`AllowedSkip` entry matches by test id *and* skip reason.

An expected failure (``xfail``) is not a skip: it marks a known bug, runs, and stays as
it is.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

import pytest

# The values that still mean "not CI" when someone exports the variable by hand.
_NOT_CI = frozenset({"", "0", "false", "no"})


@dataclass(frozen=True)
class AllowedSkip:
    """A skip that is legitimate even on CI.

    ``nodeid`` is a pattern over the test id (``tests/x/test_y.py::test_z[p]``) where ``*``
    and ``?`` are wildcards and brackets are literal (they hold parameters in test ids);
    ``message`` must occur in the skip's reason, so the same test skipping for another
    reason (a tool gone missing) still fails; ``why`` says why the skip is honest.
    """

    nodeid: str
    message: str
    why: str

    def matches(self, nodeid: str, message: str) -> bool:
        pattern = self.nodeid.replace("[", "[[]")  # fnmatch's "[[]" is a literal "["
        return fnmatchcase(nodeid, pattern) and self.message in message


def on_ci(environ: dict[str, str] | None = None) -> bool:
    """Whether ``CI`` is set (GitHub, GitLab and ``.ci/run`` set ``CI=true``)."""
    value = (os.environ if environ is None else environ).get("CI", "")
    return value.strip().lower() not in _NOT_CI


def skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    """The reason a skipped report gives (pytest stores ``(path, line, "Skipped: why")``)."""
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return text.removeprefix("Skipped: ")


class SkipsFailOnCI:
    """A pytest plugin: turns skipped reports not in ``allowed`` into failures."""

    def __init__(self, allowed: Sequence[AllowedSkip]) -> None:
        self.allowed = tuple(allowed)

    def _allowed(self, nodeid: str, reason: str) -> bool:
        return any(entry.matches(nodeid, reason) for entry in self.allowed)

    def _fail(self, report: pytest.TestReport | pytest.CollectReport, reason: str) -> None:
        report.outcome = "failed"
        report.longrepr = (
            f"skipped on CI: {reason}\n"
            "CI installs every peer tool (scripts/bootstrap.sh), so this skip hides a gap: "
            "make the test run here, or add it to tests/skip_allowlist.py with the reason "
            "the skip is legitimate."
        )

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if report.skipped and not hasattr(report, "wasxfail"):
            reason = skip_reason(report)
            if not self._allowed(report.nodeid, reason):
                self._fail(report, reason)
        return report

    @pytest.hookimpl(wrapper=True)
    def pytest_make_collect_report(
        self, collector: pytest.Collector
    ) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
        # A module-level skip (pytest.importorskip, skip(allow_module_level=True)) skips
        # every test in the file without a single test report to catch.
        report = yield
        if report.skipped:
            reason = skip_reason(report)
            if not self._allowed(report.nodeid, reason):
                self._fail(report, reason)
        return report


PLUGIN_NAME = "lamina-skips-fail-on-ci"


def pytest_configure(config: pytest.Config) -> None:
    """Register :class:`SkipsFailOnCI` with ``tests/skip_allowlist.py`` when on CI."""
    if on_ci():
        from skip_allowlist import ALLOWED_SKIPS

        config.pluginmanager.register(SkipsFailOnCI(ALLOWED_SKIPS), PLUGIN_NAME)
