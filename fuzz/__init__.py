"""Coverage-guided fuzzing of every lamina parser that reads outside bytes (atheris).

- :mod:`fuzz.harness`: the contract of a harness (lamina's own errors are fine, any
  other exception is a crash, an input slower than the time limit is a finding) and
  the worker that runs one target under atheris;
- :mod:`fuzz.targets`: one module per parser, each with ``one_input(data: bytes)``;
- ``python -m fuzz``: runs targets one at a time in subprocesses and reports
  executions, findings and the slowest input of each (``make fuzz``).

Seed inputs live in ``fuzz/corpus/<target>/``; what a run discovers goes to a
temporary directory, findings to ``fuzz/findings/<target>/`` (not checked in).
"""
