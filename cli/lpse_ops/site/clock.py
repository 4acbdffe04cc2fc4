"""Time: now in UTC, ISO text out, and a parser for every time format the engines print."""

from __future__ import annotations

import datetime as dt
import re


def now_utc() -> dt.datetime:
    """Return the current time, timezone-aware, in UTC."""
    return dt.datetime.now(dt.UTC)


def iso(moment: dt.datetime | None) -> str | None:
    """Return *moment* as ISO 8601 in UTC to the second, or None."""
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds") if moment else None


def from_epoch(seconds: float | None) -> dt.datetime | None:
    """Return an aware UTC datetime for a Unix time (pgBackRest's timestamps), or None."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC) if seconds is not None else None


def parse_time(text: str | None) -> dt.datetime | None:
    """Parse restic's nanosecond RFC 3339, PostgreSQL's ``+00``/``+0700`` and plain ISO into an aware datetime.

    A time without a zone is taken as UTC. Raises ValueError on text that is not a time.
    """
    if text is None:
        return None
    value = str(text).strip().replace("T", " ", 1)
    value = re.sub(r"(\.\d{6})\d+", r"\1", value)
    value = re.sub(r"Z$", "+00:00", value)
    value = re.sub(r"([+-]\d\d)$", r"\1:00", value)
    value = re.sub(r"([+-]\d\d)(\d\d)$", r"\1:\2", value)
    moment = dt.datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def seconds_since(start: float, monotonic_now: float) -> float:
    """Return a duration rounded to a tenth of a second (the JSON's ``duration_s``)."""
    return round(monotonic_now - start, 1)
