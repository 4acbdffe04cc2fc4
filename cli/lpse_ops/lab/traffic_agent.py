"""The lab's synthetic SPSE user: steady READ-ONLY requests through nginx, installed on each lab site.

``lpse-ops lab traffic start`` copies this file (standard library only) to
``/usr/local/lib/lpse-lab/traffic_agent.py`` on each lab site and runs it as ``lpse-lab-traffic.service``::

    python3 traffic_agent.py --rate 5 [--base-url https://127.0.0.1] [--state PATH] [--max-requests N]

It keeps one keep-alive connection to nginx and, *rate* times a second (less when SPSE answers slower
than 1/rate: each request waits for the previous answer), sends ``GET /tenders?limit=20``
or ``GET /documents/<id>``. SPSE's tender listing carries no document ids, so the agent learns them by
probing ``GET /documents/1, 2, ...`` (at most one probe in ten requests, a pass stopping after
``PROBE_MISSES`` 404s in a row, a new pass each ``REPROBE_S`` seconds); known ids are then read in turn.
It never writes. Certificate checks are skipped, and only for 127.0.0.1 (the lab's self-signed
certificate): any other host is refused. Its counts go to a JSON state file about once a second.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import ssl
import sys
import time
from urllib.parse import urlsplit

MAX_RATE = 50.0
LOOPBACK = ("127.0.0.1", "localhost", "::1")
PROBE_EVERY = 10
PROBE_MISSES = 3
REPROBE_S = 60.0
STATE_EVERY_S = 1.0
TIMEOUT_S = 10.0


class Plan:
    """Which path comes next: tenders and known documents in turn, with a probe for new document ids."""

    def __init__(self) -> None:
        self.documents: list[int] = []
        self.turn = 0
        self.probe_id = 1
        self.misses = 0
        self.probing = True
        self.next_pass_at = 0.0

    def next_path(self, now: float) -> tuple[str, int | None]:
        """Return (path, probed document id or None) for the request to send at *now*."""
        self.turn += 1
        if not self.probing and now >= self.next_pass_at:
            self.probing, self.misses = True, 0
            self.probe_id = max(self.documents, default=0) + 1
        if self.probing and self.turn % PROBE_EVERY == 0:
            return f"/documents/{self.probe_id}", self.probe_id
        if self.documents and self.turn % 2 == 0:
            return f"/documents/{self.documents[(self.turn // 2) % len(self.documents)]}", None
        return "/tenders?limit=20", None

    def learn(self, probed: int | None, status: int, now: float) -> None:
        """Record a probe's answer: 200 adds the id; PROBE_MISSES misses in a row end the pass."""
        if probed is None:
            return
        if status == 200:
            if probed not in self.documents:
                self.documents.append(probed)
            self.misses = 0
        else:
            self.misses += 1
        self.probe_id = probed + 1
        if self.misses >= PROBE_MISSES:
            self.probing, self.next_pass_at = False, now + REPROBE_S


def connection_factory(base_url: str):
    """Return a function that opens a keep-alive connection to *base_url* (loopback only)."""
    parts = urlsplit(base_url)
    if parts.hostname not in LOOPBACK or parts.scheme not in ("http", "https"):
        raise SystemExit(f"refusing {base_url}: the lab traffic agent talks to this host's nginx only "
                         "(http or https on 127.0.0.1)")
    if parts.scheme == "http":
        return lambda: http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=TIMEOUT_S)
    context = ssl.create_default_context()
    context.check_hostname = False  # the lab's self-signed certificate, on the loopback address only
    context.verify_mode = ssl.CERT_NONE
    return lambda: http.client.HTTPSConnection(parts.hostname, parts.port or 443, timeout=TIMEOUT_S,
                                               context=context)


class Counts:
    """What the agent did: requests by status class, transport errors, connections opened."""

    def __init__(self, rate: float) -> None:
        self.data = {"rate": rate, "pid": os.getpid(), "started_at": time.time(), "requests": 0, "by_status": {},
                     "transport_errors": 0, "connections": 0, "documents_known": 0, "last_error": None,
                     "updated_at": None}

    def answered(self, status: int) -> None:
        self.data["requests"] += 1
        key = f"{status // 100}xx"
        self.data["by_status"][key] = self.data["by_status"].get(key, 0) + 1

    def write(self, path: str | None, plan: Plan) -> None:
        """Write the counts to *path* atomically (a reader never sees half a file)."""
        self.data["documents_known"] = len(plan.documents)
        self.data["updated_at"] = time.time()
        if not path:
            return
        temporary = f"{path}.tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(self.data, handle)
        os.replace(temporary, path)


def run(rate: float, base_url: str, state_path: str | None, max_requests: int | None = None) -> dict:
    """Send requests at *rate* per second until SIGTERM (or *max_requests*); return the final counts."""
    if not 0 < rate <= MAX_RATE:
        raise SystemExit(f"--rate must be above 0 and at most {MAX_RATE:g} requests per second (got {rate:g})")
    connect = connection_factory(base_url)
    plan, counts = Plan(), Counts(rate)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    connection = None
    interval = 1.0 / rate
    next_at = written_at = time.monotonic()
    while not stopping and (max_requests is None or counts.data["requests"] < max_requests):
        now = time.monotonic()
        if next_at > now:
            time.sleep(next_at - now)  # pacing between requests, not waiting for a state
        next_at = max(next_at + interval, time.monotonic() - interval)  # no burst after a slow answer
        path, probed = plan.next_path(time.time())
        try:
            if connection is None:
                connection = connect()
                counts.data["connections"] += 1
            connection.request("GET", path, headers={"User-Agent": "lpse-lab-traffic"})
            answer = connection.getresponse()
            answer.read()
            counts.answered(answer.status)
            plan.learn(probed, answer.status, time.time())
            if answer.will_close:
                connection.close()
                connection = None
        except (OSError, http.client.HTTPException) as error:
            counts.data["transport_errors"] += 1
            counts.data["last_error"] = f"{type(error).__name__}: {error}"
            if connection is not None:
                connection.close()
            connection = None
        if time.monotonic() - written_at >= STATE_EVERY_S:
            counts.write(state_path, plan)
            written_at = time.monotonic()
    counts.write(state_path, plan)
    if connection is not None:
        connection.close()
    return counts.data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Steady read-only requests to this host's SPSE through nginx.")
    parser.add_argument("--rate", type=float, default=5.0, help=f"requests per second (at most {MAX_RATE:g})")
    parser.add_argument("--base-url", default="https://127.0.0.1")
    parser.add_argument("--state", help="where to write the counts (JSON)")
    parser.add_argument("--max-requests", type=int, help="stop after this many answered requests")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.rate, args.base_url, args.state, args.max_requests)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
