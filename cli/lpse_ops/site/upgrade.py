"""An upgrade's phases on the site, each one call (playbooks/upgrade.yml is their table of contents).

    lpse-backup upgrade-prepare --base DIR --from V --to V --database DB --baseline-seconds S [--log PATH]
    lpse-backup upgrade-bake --baseline-json JSON|FILE | --baseline-since E --baseline-until E
                             --warmup S --bake S --min-requests N [limits] [--log PATH]

``upgrade-prepare`` reads what the upgrade starts from, changing nothing: the version ``current`` runs
and the guard's outcome (``proceed``, ``already`` on the target, ``refused`` on another version than
the plan found, with the reason text), the release ``current`` points at, the baseline of nginx's log
(the last ``--baseline-seconds`` before now) and the newest tender and document (with its sha256) for
the smoke test.

``upgrade-bake`` waits out the warm-up (a fresh JVM is slow at first), lets the site's own traffic run
for ``--bake`` seconds, measures that window from nginx's log and decides with ``canary.decide``
against the baseline; it fails (code ``canary_failed``, step ``canary``) when the verdict is ``fail``.

Both print one JSON record. Standard library only.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

from lpse_ops.site import canary, nginxlog
from lpse_ops.site.errors import Failure
from lpse_ops.site.proc import run

KNOWN_SQL = ("SELECT (SELECT coalesce(max(id)::text, '') FROM tenders), "
             "(SELECT coalesce(max(id)::text, '') FROM documents), "
             "(SELECT coalesce(sha256, '') FROM documents ORDER BY id DESC LIMIT 1)")


def guard(found: str, from_version: str, to_version: str) -> tuple[str, str]:
    """Return the guard's (outcome, reason) for a site running *found* ('' when nothing).

    ``already`` when it runs *to_version*, ``proceed`` when it runs *from_version*, else ``refused`` with
    the reason an operator reads in the result record.
    """
    if found == to_version:
        return "already", ""
    if found == from_version:
        return "proceed", ""
    return "refused", (f"site runs SPSE {found or 'nothing'}, the plan expected {from_version}: "
                       "plan again (lpse-ops upgrade plan)")


def version_found(base: str) -> str:
    """The VERSION of the release ``base/current`` points at, '' when there is none."""
    try:
        with open(os.path.join(base, "current", "VERSION"), encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def parse_known(stdout: str) -> dict:
    """The smoke test's known tender and document from the psql line ``tender|document|sha256``."""
    fields = (stdout.strip().split("|") + ["", "", ""])[:3]
    return {"tender": fields[0], "document": fields[1], "sha256": fields[2]}


def known_items(database: str) -> dict:
    """Ask the database (as the postgres user) for its newest tender and document; see ``parse_known``."""
    result = run(["psql", "--no-psqlrc", "--tuples-only", "--no-align", "--field-separator=|",
                  f"--dbname={database}", "--command", KNOWN_SQL], user="postgres", step="smoke_query")
    return parse_known(result.stdout)


def measure(log: str, since: float, until: float) -> dict:
    """The window's traffic facts, as ``lpse-backup traffic`` reports them."""
    stats = nginxlog.window_stats(nginxlog.window_lines(log, since, until), since, until)
    return {"action": "traffic", "ok": True, "log": log, "since": since, "until": until, **stats}


def prepare(_settings, args, clock: Callable[[], float] = time.time) -> dict:
    """``upgrade-prepare``: the guard's outcome and, when it proceeds, what the upgrade starts from."""
    found = version_found(args.base)
    outcome, reason = guard(found, args.from_version, args.to_version)
    record = {"action": "upgrade-prepare", "ok": True, "outcome": outcome, "version_found": found,
              "reason": reason, "previous_release": None, "baseline": None, "known": None}
    if outcome != "proceed":
        return record
    record["previous_release"] = os.path.realpath(os.path.join(args.base, "current"))
    now = clock()
    try:
        record["baseline"] = measure(args.log, now - args.baseline_seconds, now)
    except Failure as failure:
        failure.step = "baseline"
        raise
    record["known"] = known_items(args.database)
    return record


def baseline_of(args) -> dict:
    """The baseline the bake is judged against: ``--baseline-json`` (JSON text or a file) or a window."""
    if args.baseline_json:
        text = args.baseline_json
        if not text.lstrip().startswith("{"):
            with open(text, encoding="utf-8") as handle:
                text = handle.read()
        return json.loads(text)
    if args.baseline_since is None or args.baseline_until is None:
        raise Failure("bad_arguments", "give --baseline-json, or --baseline-since and --baseline-until",
                      step="canary")
    return measure(args.log, args.baseline_since, args.baseline_until)


def bake(_settings, args, clock: Callable[[], float] = time.time,
         sleep: Callable[[float], None] = time.sleep) -> dict:
    """``upgrade-bake``: warm up, bake, measure the bake, decide; raise Failure(canary_failed) on ``fail``."""
    baseline = baseline_of(args)
    if args.bake > 0 and args.warmup > 0:
        sleep(args.warmup)
    started = clock()
    if args.bake > 0:
        sleep(args.bake)
    ended = clock()
    verdict = canary.decide(baseline, measure(args.log, started, ended), canary.limits_of(args))
    record = {"action": "upgrade-bake", "ok": verdict["verdict"] == "pass", "warmup_s": args.warmup,
              "bake_s": args.bake, **verdict}
    if not record["ok"]:
        record.update(code="canary_failed", step="canary",
                      error="canary analysis failed: " + "; ".join(verdict["reasons"]))
    return record


def add_parsers(sub) -> None:
    """Add ``upgrade-prepare`` and ``upgrade-bake`` to the site tool's subparsers."""
    ready = sub.add_parser("upgrade-prepare", help="an upgrade's guard, baseline and smoke-test items (read-only)")
    ready.add_argument("--base", required=True, help="SPSE's base directory (releases/, current)")
    ready.add_argument("--from", dest="from_version", required=True, help="the version the plan found")
    ready.add_argument("--to", dest="to_version", required=True, help="the target version")
    ready.add_argument("--database", required=True, help="SPSE's database")
    ready.add_argument("--baseline-seconds", type=float, required=True, help="the baseline window, up to now")
    ready.add_argument("--log", default=nginxlog.DEFAULT_LOG, help="the lpse_timed access log")
    judge = sub.add_parser("upgrade-bake", help="an upgrade's canary: warm-up, bake, the verdict against the baseline")
    judge.add_argument("--baseline-json", help="the baseline's traffic facts: JSON text, or a file holding it")
    judge.add_argument("--baseline-since", type=float, help="the baseline window's start, epoch seconds")
    judge.add_argument("--baseline-until", type=float, help="the baseline window's end, epoch seconds")
    judge.add_argument("--warmup", type=float, default=10, help="seconds before the bake is measured")
    judge.add_argument("--bake", type=float, default=120, help="seconds of the site's own traffic to judge")
    defaults = canary.Limits()
    judge.add_argument("--min-requests", type=int, default=defaults.min_requests)
    judge.add_argument("--max-5xx-increase", type=float, default=defaults.max_5xx_increase)
    judge.add_argument("--max-p95-ratio", type=float, default=defaults.max_p95_ratio)
    judge.add_argument("--p95-slack-ms", type=float, default=defaults.p95_slack_ms)
    judge.add_argument("--max-p95-ms", type=float, default=defaults.max_p95_ms)
    judge.add_argument("--log", default=nginxlog.DEFAULT_LOG, help="the lpse_timed access log")
