"""Time parsing for every format the engines and PostgreSQL print."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lpse_ops.site import clock


@pytest.mark.parametrize("text, expected", [
    ("2026-11-24T09:32:56.79517352Z", datetime(2026, 11, 24, 9, 32, 56, 795173, tzinfo=UTC)),  # restic
    ("2026-11-24 16:33:10.123+07", datetime(2026, 11, 24, 9, 33, 10, 123000, tzinfo=UTC)),  # psql, Asia/Jakarta
    ("2026-11-24 09:16:06+00", datetime(2026, 11, 24, 9, 16, 6, tzinfo=UTC)),  # --target-time
    ("2026-11-24 14:46:06+0530", datetime(2026, 11, 24, 9, 16, 6, tzinfo=UTC)),
    ("2026-11-24T09:16:06+00:00", datetime(2026, 11, 24, 9, 16, 6, tzinfo=UTC)),
    ("2026-11-24 09:16:06", datetime(2026, 11, 24, 9, 16, 6, tzinfo=UTC)),  # no zone: UTC
])
def test_parse_time_any_engine_format_gives_the_same_instant(text, expected):
    assert clock.parse_time(text) == expected


def test_parse_time_not_a_time_raises_value_error():
    with pytest.raises(ValueError):
        clock.parse_time("yesterday")


def test_iso_renders_in_utc_to_the_second():
    assert clock.iso(clock.parse_time("2026-11-24 16:33:10.9+07")) == "2026-11-24T09:33:10+00:00"
    assert clock.iso(None) is None and clock.from_epoch(None) is None
    assert clock.iso(clock.from_epoch(1795512768)) == "2026-11-24T09:32:48+00:00"
