"""``--clock-ahead-days`` (tests/conftest.py) really moves the clock the code under test reads, and only then."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

import pytest


def test_the_clock_is_as_far_ahead_as_asked(pytestconfig: pytest.Config, tmp_path: Path):
    probe = tmp_path / "probe"
    probe.write_bytes(b"")
    real = os.lstat(probe).st_ctime  # the kernel's clock: never moved
    days = pytestconfig.getoption("--clock-ahead-days")
    ahead = time.time() - real
    assert abs(ahead - days * 86400) < 3600, (days, ahead)
    assert abs(datetime.now(UTC).timestamp() - time.time()) < 60
    assert (date.today() - datetime.fromtimestamp(real).date()).days in (days - 1, days, days + 1)


@pytest.mark.real_clock("proves the marker")
def test_a_real_clock_test_runs_at_the_real_clock(tmp_path: Path):
    probe = tmp_path / "probe"
    probe.write_bytes(b"")
    assert abs(time.time() - os.lstat(probe).st_ctime) < 3600


def _collected(*args: str) -> tuple[set[str], str]:
    """The unit tests pytest would run with *args (``--collect-only``, a pytest of its own): their node ids."""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args,
                           "tests/unit/test_reference.py", "tests/unit/test_clock_ahead.py"],
                          cwd=root, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return {line for line in done.stdout.splitlines() if "::" in line}, done.stdout


def test_clock_free_tests_are_left_out_only_when_the_clock_is_moved():
    everything, _ = _collected()
    ahead, output = _collected("--clock-ahead-days", "365")
    free = {node for node in everything if node.startswith("tests/unit/test_reference.py::")}
    assert free and free <= everything  # the main pass runs them
    assert ahead == everything - free, output  # the year-ahead pass leaves out exactly them
    assert f"{len(free)} deselected" in output, output
