"""``--clock-ahead-days`` (tests/conftest.py) really moves the clock the code under test reads, and only then."""

from __future__ import annotations

import os
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
