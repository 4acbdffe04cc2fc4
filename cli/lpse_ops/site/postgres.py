"""PostgreSQL: psql as the postgres user, and the table checksums a verification compares.

A checksum hashes each row's text form, and that text depends on session settings (a timestamptz
prints in the session's TimeZone, a float with extra_float_digits, money with lc_monetary...). So
every checksum session pins them first (``PINNED``), the same at backup time on the live server and
at verify time on the scratch instance, whatever either server's configuration says.
"""

from __future__ import annotations

import time

from lpse_ops.site.clock import iso, parse_time
from lpse_ops.site.errors import Failure
from lpse_ops.site.proc import run
from lpse_ops.site.settings import Settings

# Every setting that changes a column's text form, pinned with SET LOCAL inside the checksum transaction
# (each is settable by a superuser session on PostgreSQL 15). Values are SQL, quoted where needed;
# search_path puts pg_catalog first (built-ins cannot be shadowed) and keeps public tables' short names.
PINNED = (
    ("TimeZone", "'UTC'"),
    ("DateStyle", "'ISO, YMD'"),
    ("IntervalStyle", "'postgres'"),
    ("extra_float_digits", "3"),
    ("bytea_output", "'hex'"),
    ("lc_monetary", "'C'"),
    ("lc_numeric", "'C'"),
    ("lc_time", "'C'"),
    ("search_path", "pg_catalog, public"),
)

# The tables, each with a checksum over its rows in primary-key order, generated and run by \gexec in
# the session that holds the locks. Rows come out as: T <table> <count> <md5>.
CHECKSUM_SQL = r"""
SELECT format('LOCK TABLE %s IN SHARE MODE', string_agg(c.oid::regclass::text, ', '))
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
HAVING count(*) > 0
\gexec
SELECT format('SELECT %L, %L, count(*), coalesce(md5(string_agg(t::text, %L ORDER BY %s)), %L) FROM %s t',
              'T', c.oid::regclass::text, '|',
              coalesce((SELECT string_agg(format('t.%I', a.attname), ', ' ORDER BY array_position(i.indkey, a.attnum))
                          FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
                         WHERE i.indrelid = c.oid AND i.indisprimary), 't::text'),
              md5(''), c.oid::regclass::text)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
 ORDER BY 1
\gexec
"""

ARCHIVER_SQL = ("SELECT coalesce(last_archived_wal, ''), coalesce(last_archived_time::text, ''), failed_count, "
                "coalesce(last_failed_wal, ''), coalesce(last_failed_time::text, '') FROM pg_stat_archiver;")


def pin_settings_sql() -> str:
    """Return the SET LOCAL statements that make row text independent of server and session settings."""
    return "".join(f"SET LOCAL {name} = {value};\n" for name, value in PINNED)


def checksum_session(before_commit: str = "") -> str:
    """Return one transaction: pin the settings, lock and checksum every table, then *before_commit*."""
    return "BEGIN;\n" + pin_settings_sql() + CHECKSUM_SQL + before_commit + "COMMIT;\n"


def table_checksums(lines: list[str]) -> dict[str, dict]:
    """Parse the ``T <table> <count> <md5>`` lines into ``{table: {"rows", "md5"}}``."""
    tables = {}
    for line in lines:
        parts = line.split("\t")
        if len(parts) == 4 and parts[0] == "T":
            tables[parts[1]] = {"rows": int(parts[2]), "md5": parts[3]}
    return tables


def psql_argv(database: str, port: int, host: str | None = None) -> list[str]:
    """Return psql's argv: no psqlrc, tuples only, tab-separated, stop on the first error."""
    return ["psql", "--no-psqlrc", "--quiet", "--tuples-only", "--no-align", "--field-separator=\t",
            "--set=ON_ERROR_STOP=1", f"--port={port}", f"--dbname={database}", *([f"--host={host}"] if host else [])]


def psql(settings: Settings, sql: str, *, database: str | None = None, port: int | None = None,
         host: str | None = None, check: bool = True, step: str | None = None,
         timeout: float | None = None) -> list[str]:
    """Run *sql* in one session as the postgres OS user; return the non-empty output lines."""
    argv = psql_argv(database or settings.database, port or settings.pg_port, host)
    result = run(argv, user="postgres", stdin=sql, check=check, step=step, timeout=timeout)
    return [line for line in result.stdout.splitlines() if line.strip()]


def pg_bin(settings: Settings, name: str) -> str:
    """Return the path of a PostgreSQL server binary of the site's version."""
    return f"/usr/lib/postgresql/{settings.pg_version}/bin/{name}"


def cluster_size(settings: Settings) -> int:
    """Return the total size in bytes of every database of the live cluster."""
    lines = psql(settings, "SELECT sum(pg_database_size(datname)) FROM pg_database;", database="postgres",
                 step="preflight")
    return int((lines or ["0"])[0] or 0)


def parse_archiver(line: str) -> dict:
    """Parse one ``ARCHIVER_SQL`` row into the ``wal_archiving`` facts."""
    row = line.split("\t")
    return {"last_archived_wal": row[0] or None, "last_archived_time": iso(parse_time(row[1])) if row[1] else None,
            "failed_count": int(row[2]), "last_failed_wal": row[3] or None,
            "last_failed_time": iso(parse_time(row[4])) if row[4] else None}


def wal_at_or_after(last: str, wanted: str) -> bool:
    """True when WAL segment *last* is *wanted* or later (the timeline, the first 8 characters, aside)."""
    return bool(last) and last[8:] >= wanted[8:]


def wait_archived(settings: Settings, wal_file: str) -> str:
    """Wait until PostgreSQL reports *wal_file* (or a later one) archived; raise Failure(wal_not_archived)."""
    deadline = time.monotonic() + settings.archive_wait_s
    while time.monotonic() < deadline:
        lines = psql(settings, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver;",
                     database="postgres", step="wal archive")
        last = lines[0].strip() if lines else ""
        if wal_at_or_after(last, wal_file):
            return last
        time.sleep(2)
    raise Failure("wal_not_archived", f"WAL {wal_file} (holding the restore point) was not archived in time: "
                  "run `lpse-backup status` and read /var/log/pgbackrest", step="wal archive")
