"""An upgrade's phases on the site, each one call (playbooks/upgrade.yml is their table of contents).

    lpse-backup upgrade-prepare --base DIR --from V --to V --database DB --baseline-seconds S [--log PATH]
    lpse-backup upgrade-apply --base DIR --path V1,V2 --unit U --port P --env-file F [--schema N] [--known-* ...]
    lpse-backup upgrade-bake --baseline-json JSON|FILE | --baseline-since E --baseline-until E
                             --warmup S --bake S --min-requests N [limits] [--log PATH]

``upgrade-prepare`` reads what the upgrade starts from, changing nothing: the version ``current`` runs
and the guard's outcome (``proceed``, ``already`` on the target, ``refused`` on another version than
the plan found, with the reason text), the release ``current`` points at, the baseline of nginx's log
(the last ``--baseline-seconds`` before now) and the newest tender and document (with its sha256) for
the smoke test.

``upgrade-apply`` is the change: SPSE stopped, every release's migrations in order (as the SPSE user,
with the service's environment file), ``current`` switched to the target, SPSE started, ``/health``
waited for until it reports the target (and ``--schema``), the known tender and document read through
SPSE (the document by its sha256). Its record says how far it went (``migrated``, ``switched``,
``stopped_at``, ``serving_at``), on failure too, so the playbook's rollback knows what to undo.

``upgrade-bake`` waits out the warm-up (a fresh JVM is slow at first), lets the site's own traffic run
for ``--bake`` seconds, measures that window from nginx's log and decides with ``canary.decide``
against the baseline; it fails (code ``canary_failed``, step ``canary``) when the verdict is ``fail``.

Both print one JSON record. Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable

from lpse_ops.site import canary, nginxlog
from lpse_ops.site.errors import Failure, failed
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


def own_sha256(path: str | None = None) -> str:
    """The sha256 of this site tool's own file (the zipapp being run: ``sys.argv[0]``)."""
    with open(path or sys.argv[0], "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def prepare(_settings, args, clock: Callable[[], float] = time.time) -> dict:
    """``upgrade-prepare``: the guard's outcome and, when it proceeds, what the upgrade starts from."""
    if args.tool_sha256 and own_sha256() != args.tool_sha256:
        raise Failure("site_tool_changed", "the site tool changed since the plan read this site: plan again "
                      "(lpse-ops upgrade plan)", step="guard")
    found = version_found(args.base)
    outcome, reason = guard(found, args.from_version, args.to_version)
    record = {"action": "upgrade-prepare", "ok": True, "outcome": outcome, "version_found": found,
              "reason": reason, "previous_release": None, "baseline": None, "known": None, "began": clock()}
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
    ready.add_argument("--tool-sha256", default="", help="refuse unless this site tool's own file has this sha256 "
                                                         "(the plan found it installed, so the play copied none)")
    add_bake_arguments(sub.add_parser("upgrade-bake", help="an upgrade's canary: warm-up, bake, the verdict against "
                                                           "the baseline"))
    add_apply_parser(sub)


def add_bake_arguments(judge) -> None:
    """The options of ``upgrade-bake`` (``upgrade-complete`` takes them too)."""
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


# ---- apply: stop, migrate, switch, start, the health gate and the smoke test ---------------------------

MIGRATE_SCRIPT = 'set -a && . "$1" && set +a && exec "$2" -jar "$3" migrate'
SMOKE_TIMEOUT_S = 30


def migrate(base: str, version: str, env_file: str, java: str, user: str) -> dict:
    """Run release *version*'s migrations as *user* with the service's environment file (the password stays
    in the file, never on a command line); return the tool's JSON (its last stdout line: ``applied``, ...)."""
    jar = os.path.join(base, "releases", version, "lib", "spse.jar")
    result = run(["/bin/sh", "-c", MIGRATE_SCRIPT, "spse-migrate", env_file, java, jar], user=user, step="migrate")
    lines = [text for text in result.stdout.splitlines() if text.strip()]
    try:
        return json.loads(lines[-1]) if lines else {}
    except ValueError:
        return {"output": lines[-1]}


def switch(base: str, version: str) -> str:
    """Point ``base/current`` at ``releases/<version>``; see ``point_current``."""
    target = os.path.join(base, "releases", version)
    if not os.path.isdir(target):
        raise Failure("release_missing", f"{target} is not unpacked", step="switch")
    return point_current(base, target)


def point_current(base: str, target: str) -> str:
    """Point ``base/current`` at *target* atomically (a new link renamed over the old one)."""
    staging = os.path.join(base, ".current.switching")
    if os.path.lexists(staging):
        os.unlink(staging)
    os.symlink(target, staging)
    os.replace(staging, os.path.join(base, "current"))
    return target


def health_ready(status: int, body: dict | None, version: str) -> bool:
    """True when /health answered 200 with status ok and the wanted version."""
    return (status == 200 and isinstance(body, dict) and body.get("status") == "ok"
            and str(body.get("version")) == version)


def get(url: str, timeout: float) -> tuple[int, bytes]:
    """GET *url*; return (status, body); (0, b'') when nothing answered."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (a local http URL)
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (OSError, ValueError):
        return 0, b""


def get_sha256(url: str, timeout: float) -> tuple[int, str]:
    """GET *url* streaming; return (status, sha256 of the body); (0, '') when nothing answered."""
    import hashlib
    import urllib.error
    import urllib.request

    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (a local http URL)
            for block in iter(lambda: response.read(1024 * 1024), b""):
                digest.update(block)
            return response.status, digest.hexdigest()
    except urllib.error.HTTPError as error:
        return error.code, ""
    except (OSError, ValueError):
        return 0, ""


def json_of(body: bytes):
    """*body* parsed as JSON, None when it is not JSON."""
    try:
        return json.loads(body.decode("utf-8", "replace"))
    except ValueError:
        return None


def wait_healthy(port: int, version: str, timeout_s: float, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep, fetch: Callable = get) -> dict:
    """Poll /health until it reports *version* with status ok; return its JSON, or raise Failure(unhealthy)."""
    deadline = clock() + timeout_s
    status, body = 0, None
    while True:
        status, raw = fetch(f"http://127.0.0.1:{port}/health", 5)
        body = json_of(raw)
        if health_ready(status, body, version):
            return body
        if clock() >= deadline:
            raise Failure("unhealthy", f"/health did not report {version} with status ok within {timeout_s:.0f} s "
                          f"(last: HTTP {status} {json.dumps(body)[:300]})", step="health")
        sleep(1)


def smoke(port: int, known: dict, fetch: Callable = get, fetch_sha256: Callable = get_sha256) -> dict:
    """Read the known tender (the newest listed) and document (by its sha256) through SPSE; raise on a miss."""
    checked = {"tender": None, "document": None}
    if known.get("tender"):
        status, raw = fetch(f"http://127.0.0.1:{port}/tenders?limit=1", 10)
        listed = json_of(raw)
        first = str(listed[0].get("id")) if isinstance(listed, list) and listed and isinstance(listed[0], dict) else ""
        if status != 200 or first != known["tender"]:
            raise Failure("smoke_tender", f"/tenders?limit=1 answered HTTP {status} with tender {first or 'none'}, "
                          f"expected {known['tender']}", step="health")
        checked["tender"] = first
    if known.get("document"):
        status, digest = fetch_sha256(f"http://127.0.0.1:{port}/documents/{known['document']}", SMOKE_TIMEOUT_S)
        if status != 200 or digest != known.get("sha256"):
            raise Failure("smoke_document", f"/documents/{known['document']} answered HTTP {status} with sha256 "
                          f"{digest}, expected {known.get('sha256')}", step="health")
        checked["document"] = known["document"]
    return checked


def systemctl(verb: str, unit: str, step: str) -> None:
    """``systemctl VERB UNIT``; a failure is a Failure at *step*."""
    run(["systemctl", verb, unit], step=step)


def apply(_settings, args, clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
          fetch: Callable = get, fetch_sha256: Callable = get_sha256, command: Callable = systemctl,
          migrator: Callable = migrate) -> dict:
    """``upgrade-apply``: stop SPSE, every hop's migrations in order, current to the target, start, the health
    gate (version, status, schema) and the smoke test. The record says how far it went (``migrated``: a
    migration was started, so the database must come back on a rollback; ``switched``), on failure too."""
    path = [version for version in args.path.split(",") if version]
    record = {"action": "upgrade-apply", "ok": False, "to_version": path[-1] if path else "", "path": path,
              "migrated": False, "migrations": [], "switched": False, "stopped_at": None, "serving_at": None,
              "health": None, "smoke": None}
    try:
        if not path:
            raise Failure("bad_arguments", "--path names no release", step="migrate")
        command("stop", args.unit, "migrate")
        record["stopped_at"] = clock()
        for version in path:
            record["migrated"] = True
            record["migrations"].append({"version": version, **migrator(args.base, version, args.env_file,
                                                                          args.java, args.user)})
        record["switched"] = True  # from here on, current may point at the target
        switch(args.base, path[-1])
        command("start", args.unit, "switch")
        record["health"] = wait_healthy(args.port, path[-1], args.health_timeout, clock, sleep, fetch)
        record["serving_at"] = clock()
        if args.schema and str(record["health"].get("schema_version")) != str(args.schema):
            raise Failure("wrong_schema", f"/health reports schema {record['health'].get('schema_version')}, the "
                          f"bundle's migrations end at {args.schema}", step="health")
        known = {"tender": args.known_tender, "document": args.known_document, "sha256": args.known_sha256}
        record["smoke"] = smoke(args.port, known, fetch, fetch_sha256)
    except Exception as error:  # noqa: BLE001 (the record must still say how far the change went)
        return failed(record, error)
    record["ok"] = True
    return record


def add_apply_parser(sub) -> None:
    """Add ``upgrade-apply`` to the site tool's subparsers."""
    add_apply_arguments(sub.add_parser("upgrade-apply", help="an upgrade's switch: stop, migrate, switch, start, "
                                                             "health, smoke"))


def add_apply_arguments(go) -> None:
    """The options of ``upgrade-apply`` (``upgrade-change`` takes them too)."""
    go.add_argument("--base", required=True, help="SPSE's base directory (releases/, current)")
    go.add_argument("--path", required=True, help="the releases to migrate through, in order, comma-separated")
    go.add_argument("--unit", required=True, help="SPSE's systemd unit")
    go.add_argument("--port", type=int, required=True, help="SPSE's HTTP port on 127.0.0.1")
    go.add_argument("--env-file", required=True, help="the service's environment file (the migrations read it)")
    go.add_argument("--user", default="spse", help="the user SPSE and its migrations run as")
    go.add_argument("--java", default="/usr/bin/java")
    go.add_argument("--schema", help="the schema /health must report (default or empty: not checked)")
    go.add_argument("--health-timeout", type=float, default=90)
    go.add_argument("--known-tender", default="", help="the newest tender's id (smoke test; empty: none)")
    go.add_argument("--known-document", default="", help="the newest document's id (smoke test; empty: none)")
    go.add_argument("--known-sha256", default="", help="that document's sha256")
