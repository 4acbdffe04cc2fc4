"""Options for every test tier: ``--clock-ahead-days DAYS`` runs the tests with the clock moved ahead.

CI runs the unit tests a second time with ``--clock-ahead-days 365`` (scripts/test.sh): a test that fixes a
date while the code under test reads the real clock then fails today, not in a year. The clock is moved
with time-machine for this process only, and keeps ticking: ``datetime.now()``, ``date.today()``,
``time.time()`` and their kin (in every thread) read a year ahead; ``time.monotonic()``, the times the
kernel stamps on files, and subprocesses keep the real clock. (Debian's libfaketime would move the
subprocesses too, but a process that changes user, as Ansible's ``become`` does, cannot open the shared
memory of the root process that started it, and fails.)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

_travel = None
_days = 0


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--clock-ahead-days", type=int, default=0, metavar="DAYS",
                     help="run with this process's clock DAYS ahead (time-machine, ticking); subprocesses and "
                          "file times keep the real clock")
    parser.addoption("--lab-stream", choices=("all", "a", "b"), default="all",
                     help="which lab modules to run: all (default), or stream a or b of the two CI runs at once, "
                          "each on a lab of its own (tests/lab/conftest.py STREAM_B)")


def pytest_configure(config: pytest.Config) -> None:
    global _travel, _days
    config.addinivalue_line("markers", "real_clock(reason): keep the real clock under --clock-ahead-days, because "
                                       "the test needs a clock time-machine cannot move (OpenSSL's, a subprocess's)")
    config.addinivalue_line("markers", "clock_free(reason): left out under --clock-ahead-days: nothing this process "
                                       "runs under test reads the clock; the work is in subprocesses (Ansible, "
                                       "javac), which keep the real clock anyway")
    _days = config.getoption("--clock-ahead-days", default=0)
    if _days:
        import time_machine

        _travel = time_machine.travel(datetime.now(UTC) + timedelta(days=_days), tick=True)
        _travel.start()


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    """Under --clock-ahead-days, leave out the tests marked ``clock_free``: a moved clock reaches nothing they test
    (CI's year-ahead pass is then that much shorter; they run in the main pass)."""
    if not config.getoption("--clock-ahead-days", default=0):
        return
    kept, dropped = [], []
    for item in items:
        (dropped if item.get_closest_marker("clock_free") else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(autouse=True)
def _real_clock_when_marked(request: pytest.FixtureRequest):
    """A test marked ``real_clock`` runs at the real clock (moved back by the days the session moved ahead)."""
    if _travel is None or request.node.get_closest_marker("real_clock") is None:
        yield
        return
    import time_machine

    with time_machine.travel(datetime.now(UTC) - timedelta(days=_days), tick=True):
        yield


def pytest_unconfigure(config: pytest.Config) -> None:
    global _travel
    if _travel is not None:
        _travel.stop()
        _travel = None
_days = 0


def pytest_report_header(config: pytest.Config) -> str | None:
    days = config.getoption("--clock-ahead-days", default=0)
    return (f"clock: {days} days ahead, now {datetime.now(UTC):%Y-%m-%d %H:%M} UTC (time-machine); tests marked "
            "clock_free are deselected") if days else None
