"""Skip policy of the suite: under CI (``CI`` set to anything but "", "0" or "false") a skipped test
fails the run unless its reason matches an entry of ALLOWED_SKIPS. Every run prints how many tests
passed, were skipped, and how many of those skips are allowed.

Outside CI a skip stays a skip: a user without detectron2 or Slurm still runs the detectron2-free
core. In CI, .ci/run installs both, so every other skip is a test that silently did not run.
"""
import os
import re

# reason pattern (a regular expression searched in the skip reason) -> why it cannot run in CI.
# Keep this short: CI machines are CPU-only, so only tests that need an accelerator belong here.
ALLOWED_SKIPS = {
    r"needs a CUDA GPU": "CI machines have no GPU; these tests compare CPU and GPU results",
}

_skips = []
_passed = [0]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def allowed_reason(reason: str):
    """The allow-list entry a skip reason matches, or None."""
    return next((pattern for pattern in ALLOWED_SKIPS if re.search(pattern, reason)), None)


def pytest_runtest_logreport(report):
    if type(report).__name__ != "TestReport":
        return  # a subtest's report: its test is counted once
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _skips.append((report.nodeid, reason.removeprefix("Skipped: ")))
    elif report.passed and report.when == "call":
        _passed[0] += 1


def pytest_terminal_summary(terminalreporter):
    allowed = [(node, reason) for node, reason in _skips if allowed_reason(reason)]
    refused = [(node, reason) for node, reason in _skips if not allowed_reason(reason)]
    write = terminalreporter.write_line
    write(f"skip policy: {_passed[0]} passed, {len(_skips)} skipped, {len(allowed)} of them allowed"
          + (" (CI: other skips fail the run)" if in_ci() else ""))
    if in_ci() and refused:
        write(f"skip policy: {len(refused)} skipped test(s) not on the allow-list in tests/conftest.py:", red=True)
        for node, reason in refused:
            write(f"  {node}: {reason}", red=True)


def pytest_sessionfinish(session, exitstatus):
    if in_ci() and any(not allowed_reason(reason) for _, reason in _skips) and session.exitstatus == 0:
        session.exitstatus = 1
