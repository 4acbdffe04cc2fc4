"""``lpse-backup traffic``: what SPSE's users saw in a time window, from nginx's ``lpse_timed`` access log.

The role ``nginx`` writes ``/var/log/nginx/spse-access.log`` with ``log_format lpse_timed``
(``roles/nginx/templates/spse.conf.j2``): one line per request, fields separated by one TAB::

    $msec  $request_method  $request_uri  $status  $request_time  $upstream_response_time
    $body_bytes_sent  $spse_maintenance        (one line; more fields may follow later and are ignored)

Only requests that reached SPSE count: ``/health`` (monitoring, the health gate) is left out by path,
and every answer nginx gave by itself is left out by ``$upstream_response_time`` being ``-`` (nginx did
not ask SPSE: the maintenance page, a malformed request). A request SPSE could not answer (nginx tried
the upstream and got no answer: 502, 504) has an upstream time and counts, as a 5xx. Latency is
``$request_time`` (what the user waited) in milliseconds.

The upgrade's canary verdict is ``canary.decide`` (``lpse-backup upgrade-bake``), over two ``window_stats``
results; ``compare`` below is an older verdict with other limits that no command uses. Standard library only.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from lpse_ops.site.errors import Failure

DEFAULT_LOG = "/var/log/nginx/spse-access.log"
FIELD_COUNT = 8  # fields written today; lines with more are read (fields are only ever added at the end)
MIN_FIELDS = 6  # up to $upstream_response_time: what the statistics need
# nginx's workers write lines when requests end, so the log is in time order only to within a moment;
# the seek starts this many seconds early and the read stops this many seconds late.
SLACK_S = 5.0
BLOCK = 64 * 1024  # the binary search stops when the interval is this small; the rest is read forward
ROTATED_SUFFIX = ".1"  # Debian's logrotate for nginx: .1 stays uncompressed (delaycompress), .2.gz on


@dataclass(frozen=True)
class Request:
    """One parsed line: when it ended (epoch s), method, path (no query), status, seconds taken, SPSE's part."""

    time: float
    method: str
    path: str
    status: int
    request_s: float
    upstream_s: float | None  # None: nginx answered itself ("-")
    maintenance: str | None  # "full", "read-only"; None when off or the field is absent

    @property
    def answered_by_nginx(self) -> bool:
        """True when nginx answered without asking SPSE (the maintenance page, a bad request)."""
        return self.upstream_s is None


def _upstream_seconds(text: str) -> float | None:
    """Parse ``$upstream_response_time``: ``-`` -> None; ``0.010`` or ``0.004, 0.010`` (tries) -> their sum."""
    if text.strip() == "-":
        return None
    total = 0.0
    for part in text.replace(":", ",").split(","):
        part = part.strip()
        if part and part != "-":
            total += float(part)
    return total


def parse_line(line: str) -> Request | None:
    """Parse one ``lpse_timed`` line; return None for a line that is not one (blank, another format, cut)."""
    fields = line.rstrip("\r\n").split("\t")
    if len(fields) < MIN_FIELDS:
        return None
    try:
        moment = float(fields[0])
        status = int(fields[3])
        request_s = float(fields[4])
        upstream_s = _upstream_seconds(fields[5])
    except ValueError:
        return None
    maintenance = fields[7] if len(fields) > 7 and fields[7] not in ("-", "", "off") else None
    return Request(time=moment, method=fields[1], path=fields[2].split("?", 1)[0], status=status,
                   request_s=request_s, upstream_s=upstream_s, maintenance=maintenance)


def nearest_rank(sorted_values: list[float], percent: float) -> float | None:
    """Return the *percent* percentile of ascending *sorted_values* by nearest rank (None when empty).

    The nearest rank is ceil(percent/100 * n): the smallest value with at least *percent* % of the values
    at or below it (p95 of 1..20 is 19, p50 of 1..4 is 2).
    """
    if not sorted_values:
        return None
    rank = max(1, math.ceil(percent / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def window_stats(lines: Iterable[str], since_epoch: float, until_epoch: float,
                 exclude_paths: tuple[str, ...] = ("/health",)) -> dict:
    """Summarise the requests to SPSE that ended in ``since_epoch <= time < until_epoch``.

    Given log lines in any order. Returns ``requests``, ``errors_5xx``, ``rate_5xx`` (None without
    requests), ``p50_ms``, ``p95_ms``, ``max_ms`` (nearest rank over ``$request_time``; None without
    requests), ``first`` and ``last`` (epoch of the earliest and latest counted request, or None), and
    what was left out: ``excluded_paths`` (e.g. /health), ``answered_by_nginx`` (the maintenance page and
    other answers SPSE never saw) and ``unparsed`` (lines of another format).
    """
    excluded = set(exclude_paths)
    durations: list[float] = []
    errors = skipped_paths = by_nginx = unparsed = 0
    first: float | None = None
    last: float | None = None
    for line in lines:
        if not line.strip():
            continue
        request = parse_line(line)
        if request is None:
            unparsed += 1
            continue
        if not since_epoch <= request.time < until_epoch:
            continue
        if request.path in excluded:
            skipped_paths += 1
            continue
        if request.answered_by_nginx:
            by_nginx += 1
            continue
        durations.append(request.request_s * 1000.0)
        errors += request.status >= 500
        first = request.time if first is None else min(first, request.time)
        last = request.time if last is None else max(last, request.time)
    durations.sort()
    count = len(durations)
    return {"requests": count, "errors_5xx": errors, "rate_5xx": errors / count if count else None,
            "p50_ms": nearest_rank(durations, 50), "p95_ms": nearest_rank(durations, 95),
            "max_ms": durations[-1] if durations else None, "first": first, "last": last,
            "excluded_paths": skipped_paths, "answered_by_nginx": by_nginx, "unparsed": unparsed}


def compare(before: dict, after: dict, max_5xx_increase: float = 0.01, max_p95_ratio: float = 2.0,
            min_p95_slack_ms: float = 100, min_requests: int = 20) -> dict:
    """Judge a canary: *before* and *after* are ``window_stats`` results; return ``{verdict, reasons}``.

    ``inconclusive`` when either window has fewer than *min_requests* requests; ``fail`` when the 5xx
    rate rose by more than *max_5xx_increase* (absolute: 0.01 is one percentage point) or the p95 is above
    ``max(before p95 * max_p95_ratio, before p95 + min_p95_slack_ms)``; else ``pass``. Every reason is a
    sentence naming the numbers. This is the control machine's decision; the site only reports the stats.
    """
    short = [f"{name} window has {stats.get('requests', 0)} requests, fewer than {min_requests}"
             for name, stats in (("before", before), ("after", after)) if (stats.get("requests") or 0) < min_requests]
    if short:
        return {"verdict": "inconclusive", "reasons": short}
    reasons: list[str] = []
    failed = False
    rate_before, rate_after = before["rate_5xx"] or 0.0, after["rate_5xx"] or 0.0
    rate_limit = rate_before + max_5xx_increase
    if rate_after > rate_limit:
        failed = True
        reasons.append(f"5xx rate {rate_after:.4f} is above {rate_limit:.4f} (before {rate_before:.4f} "
                       f"+ {max_5xx_increase})")
    else:
        reasons.append(f"5xx rate {rate_after:.4f} is within {rate_limit:.4f}")
    p95_before, p95_after = before["p95_ms"], after["p95_ms"]
    p95_limit = max(p95_before * max_p95_ratio, p95_before + min_p95_slack_ms)
    if p95_after > p95_limit:
        failed = True
        reasons.append(f"p95 {p95_after:.0f} ms is above {p95_limit:.0f} ms (before {p95_before:.0f} ms: "
                       f"x{max_p95_ratio} or +{min_p95_slack_ms:.0f} ms, whichever is more)")
    else:
        reasons.append(f"p95 {p95_after:.0f} ms is within {p95_limit:.0f} ms")
    return {"verdict": "fail" if failed else "pass", "reasons": reasons}


# ---- reading a large, rotated log cheaply ---------------------------------------------------------------


def _line_time(raw: bytes) -> float | None:
    """The first field of a raw line as a time, or None."""
    fields = raw.split(b"\t", MIN_FIELDS)
    if len(fields) < MIN_FIELDS:
        return None
    try:
        return float(fields[0])
    except ValueError:
        return None


def _next_time(handle, limit: int = 50) -> float | None:
    """Read lines from the current position until one carries a time (at most *limit*); None at the end."""
    for _ in range(limit):
        raw = handle.readline()
        if not raw:
            return None
        moment = _line_time(raw)
        if moment is not None:
            return moment
    return None


def start_offset(handle, size: int, since_epoch: float) -> int:
    """Return an offset at or before the first line that ended at or after *since_epoch*.

    Binary search over byte offsets of the open binary *handle* (*size* bytes): each probe seeks, drops
    the partial line and reads the next dated one, so it costs O(log(size / BLOCK)) short reads.
    """
    low, high = 0, size
    while high - low > BLOCK:
        middle = (low + high) // 2
        handle.seek(middle)
        handle.readline()  # the rest of a line cut by the seek
        moment = _next_time(handle)
        if moment is None or moment >= since_epoch:
            high = middle
        else:
            low = middle
    return low


def file_lines(path: str, since_epoch: float, until_epoch: float, slack_s: float = SLACK_S) -> Iterator[str]:
    """Yield the lines of one log file from about *since_epoch* - slack to *until_epoch* + slack.

    Seeks to the window (``start_offset``) and reads forward, one line in memory at a time; stops at the
    first line dated later than the window's end plus the slack.
    """
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        offset = start_offset(handle, size, since_epoch - slack_s)
        handle.seek(offset)
        if offset:
            handle.readline()
        for raw in handle:
            moment = _line_time(raw)
            if moment is not None and moment >= until_epoch + slack_s:
                return
            yield raw.decode("utf-8", errors="replace")


def first_time(path: str) -> float | None:
    """Return the time of the first dated line of *path*, or None when it has none."""
    with open(path, "rb") as handle:
        return _next_time(handle)


def window_lines(path: str, since_epoch: float, until_epoch: float) -> Iterator[str]:
    """Yield the lines of the window from *path* and, when the window starts before its first line (or it is
    empty), from the rotated ``path.1`` first. Raises Failure(log_missing) when neither file exists."""
    current = os.path.exists(path)
    rotated = path + ROTATED_SUFFIX
    if not current and not os.path.exists(rotated):
        raise Failure("log_missing", f"{path} does not exist: run `lpse-ops install` (the nginx role writes it)",
                      step="traffic")
    starts = first_time(path) if current else None
    if (starts is None or starts > since_epoch - SLACK_S) and os.path.exists(rotated):
        yield from file_lines(rotated, since_epoch, until_epoch)
    if current:
        yield from file_lines(path, since_epoch, until_epoch)


def main(_settings, args) -> dict:
    """``lpse-backup traffic --since EPOCH [--until EPOCH] [--log PATH]``: the window's request facts."""
    until = args.until if args.until is not None else time.time()
    if until <= args.since:
        raise Failure("bad_window", f"--until ({until}) must be later than --since ({args.since})", step="traffic")
    stats = window_stats(window_lines(args.log, args.since, until), args.since, until)
    return {"action": "traffic", "ok": True, "log": args.log, "since": args.since, "until": until, **stats}
