"""The reference SPSE 1.2 and the three bad releases, run for real against a throwaway PostgreSQL.

Each release is built into a signed bundle, verified with the trusted key and unpacked; its jar then
runs ``migrate`` and ``serve`` against a fresh database of ``pg_server`` (tests/integration/conftest.py)
over TCP on 127.0.0.1, as on a site. Waits are bounded polls, never fixed sleeps.

Skips when the JDK or Debian's PostgreSQL JDBC driver (libpostgresql-jdbc-java, the jar's Class-Path)
is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lpse_ops import bundle, reference

from .conftest import ROLE, ROLE_PASSWORD, PgServer

pytestmark = [
    pytest.mark.skipif(shutil.which("java") is None or shutil.which("javac") is None, reason="no JDK 17 on PATH"),
    pytest.mark.skipif(not Path(reference.JDBC_JAR).is_file(),
                       reason=f"{reference.JDBC_JAR} missing (apt-get install libpostgresql-jdbc-java)"),
]

COMMAND_TIMEOUT_S = 60
START_TIMEOUT_S = 30
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Signed, verified and unpacked: {"1.1", "1.2", *BAD_KINDS} -> the release dir (lib/spse.jar, migrations/)."""
    root = tmp_path_factory.mktemp("reference-releases")
    keys = root / "keys"
    bundle.keygen(keys / "release.key", keys / "release.pub", "reference releases test key")
    key, out = keys / "release.key", root / "out"
    built = {version: reference.build_reference_bundle(version, key, out) for version in ("1.1", "1.2")}
    built |= {kind: reference.build_bad_release(kind, key, out) for kind in reference.BAD_KINDS}
    unpacked = {}
    for name, path in built.items():
        bundle.verify(path, keys)
        target = root / "releases" / name
        with tarfile.open(path) as tar:
            tar.extractall(target, filter="data")
        unpacked[name] = target / "payload"
    return unpacked


@dataclass
class Site:
    """One database and documents folder, and how to run a release's jar against them."""

    pg: PgServer
    database: str
    docs: Path

    def env(self, port: int | None = None) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("SPSE_")}
        env |= {
            "SPSE_DB_URL": f"jdbc:postgresql://127.0.0.1:{self.pg.port}/{self.database}",
            "SPSE_DB_USER": ROLE,
            "SPSE_DB_PASSWORD": ROLE_PASSWORD,
            "SPSE_DOCS_DIR": str(self.docs),
            "SPSE_BIND": "127.0.0.1",
        }
        if port is not None:
            env["SPSE_PORT"] = str(port)
        return env

    def migrate(self, release: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["java", "-jar", str(release / "lib" / "spse.jar"), "migrate"], env=self.env(),
                              capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)

    def sql(self, statement: str) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.pg.role_url(self.database), autocommit=True) as connection:
            cursor = connection.execute(statement)
            return cursor.fetchall() if cursor.description else []


@pytest.fixture
def site(pg_server: PgServer, tmp_path: Path) -> Site:
    docs = tmp_path / "documents"
    docs.mkdir()
    return Site(pg_server, pg_server.new_database(), docs)


def request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/octet-stream")
    try:
        with _HTTP.open(req, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Running:
    process: subprocess.Popen[str]
    port: int


@pytest.fixture
def serve(site: Site, tmp_path: Path) -> Iterator[Any]:
    """serve(release) starts its jar and returns once /health answers (any status); stopped at the end."""
    started: list[subprocess.Popen[str]] = []

    def start(release: Path) -> Running:
        port = _free_port()
        log = open(tmp_path / f"serve-{port}.log", "w")  # noqa: SIM115 - closed with the process below
        process = subprocess.Popen(["java", "-jar", str(release / "lib" / "spse.jar"), "serve"],
                                   env=site.env(port), stdout=log, stderr=subprocess.STDOUT, text=True)
        started.append(process)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert process.poll() is None, f"spse exited {process.returncode}:\n{Path(log.name).read_text()}"
            try:
                request(port, "GET", "/health")
                return Running(process, port)
            except OSError:
                assert time.monotonic() < deadline, f"spse did not answer within {START_TIMEOUT_S}s"
                time.sleep(0.1)

    yield start
    for process in started:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def migrated(site: Site, release: Path) -> dict[str, Any]:
    result = site.migrate(release)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def seed(site: Site) -> None:
    """Two tenders (one published) and a document row, as SPSE 1.1 stores them."""
    site.sql("INSERT INTO tenders (code, title, agency, hps_amount, status) VALUES"
             " ('T-001', 'Jalan desa', 'Dinas PU', 1500000000.00, 'published'),"
             " ('T-002', 'Laptop sekolah', 'Dinas Pendidikan', 250000000.00, 'draft')")
    site.sql("INSERT INTO documents (tender_id, name, sha256, size_bytes, stored_path)"
             " SELECT id, 'rks.pdf', repeat('a', 64), 3, 'aa/' || repeat('a', 64) FROM tenders WHERE code = 'T-001'")


def columns(site: Site, table: str) -> set[str]:
    return {row[0] for row in site.sql(
        f"SELECT column_name FROM information_schema.columns WHERE table_name = '{table}'")}


# ------------------------------------------------------------------ 1.2


def test_release_1_2_migrate_on_1_1_database_keeps_rows_and_serves_schema_3(
        releases: dict[str, Path], site: Site, serve: Any) -> None:
    assert migrated(site, releases["1.1"]) == {"applied": ["0001_initial", "0002_tender_status"], "schema_version": 2}
    seed(site)

    assert migrated(site, releases["1.2"]) == {"applied": ["0003_tender_category"], "schema_version": 3}
    assert site.sql("SELECT code, status, category FROM tenders ORDER BY code") == [
        ("T-001", "published", "barang"), ("T-002", "draft", "barang")]
    assert site.sql("SELECT count(*) FROM documents") == [(1,)]
    assert site.sql("SELECT to_regclass('tenders_category_idx') IS NOT NULL") == [(True,)]

    running = serve(releases["1.2"])
    status, body = request(running.port, "GET", "/health")
    health = json.loads(body)
    assert status == 200, health
    assert (health["status"], health["version"], health["schema_version"]) == ("ok", "1.2", 3)
    status, body = request(running.port, "GET", "/tenders")
    assert status == 200 and [row["code"] for row in json.loads(body)] == ["T-002", "T-001"]


# ------------------------------------------------------------------ bad releases


def test_bad_migration_on_1_1_database_fails_nonzero_leaving_first_half_committed(
        releases: dict[str, Path], site: Site) -> None:
    migrated(site, releases["1.1"])
    seed(site)

    result = site.migrate(releases["migration-fails-halfway"])
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "0004_document_retention failed" in result.stderr and "retain_untill" in result.stderr

    # 0003 (its own transaction) is applied; 0004 is not recorded, yet its first half is committed.
    assert site.sql("SELECT id FROM schema_migrations ORDER BY id") == [
        ("0001_initial",), ("0002_tender_status",), ("0003_tender_category",)]
    assert "retain_until" in columns(site, "documents")
    assert site.sql("SELECT count(*) FROM documents WHERE retain_until IS NULL") == [(0,)]
    assert site.sql("SELECT to_regclass('document_holds') IS NOT NULL") == [(True,)]
    assert site.sql("SELECT to_regclass('documents_retain_until_idx') IS NULL") == [(True,)]

    # Neither forward nor back: the same release fails again, the old one refuses the newer schema.
    again = site.migrate(releases["migration-fails-halfway"])
    assert again.returncode == 1 and "retain_until" in again.stderr and "already exists" in again.stderr
    back = site.migrate(releases["1.1"])
    assert back.returncode == 2 and "0003_tender_category" in back.stderr


def test_bad_unhealthy_serves_traffic_but_health_is_degraded(
        releases: dict[str, Path], site: Site, serve: Any) -> None:
    migrated(site, releases["1.1"])
    seed(site)
    assert migrated(site, releases["unhealthy"])["schema_version"] == 3

    running = serve(releases["unhealthy"])
    for _ in range(3):
        status, body = request(running.port, "GET", "/health")
        health = json.loads(body)
        assert status == 503 and health["status"] == "degraded" and health["version"] == "1.2.2", health
        assert "self-check failed" in health["reason"]
    status, body = request(running.port, "GET", "/tenders")
    assert status == 200 and len(json.loads(body)) == 2
    assert running.process.poll() is None


def test_bad_partial_5xx_passes_health_gate_but_fails_a_fifth_of_traffic(
        releases: dict[str, Path], site: Site, serve: Any) -> None:
    migrated(site, releases["1.1"])
    migrated(site, releases["partial-5xx"])
    running = serve(releases["partial-5xx"])

    # What a health gate checks: /health, a tender and a document readable.
    status, body = request(running.port, "GET", "/health")
    health = json.loads(body)
    assert status == 200 and (health["status"], health["version"], health["schema_version"]) == ("ok", "1.2.3", 3)
    status, body = request(running.port, "POST", "/tenders",
                           json.dumps({"code": "T-9", "title": "Jembatan", "agency": "Dinas PU"}).encode())
    assert status == 201, body
    tender = json.loads(body)["id"]
    status, body = request(running.port, "POST", f"/tenders/{tender}/documents?name=rks.pdf", b"%PDF-1.4 rks")
    assert status == 201, body
    document = json.loads(body)["id"]
    assert request(running.port, "GET", "/tenders")[0] == 200
    assert request(running.port, "GET", f"/documents/{document}") == (200, b"%PDF-1.4 rks")

    # Steady traffic: one request in five answers 500; /health stays ok throughout.
    statuses = [request(running.port, "GET", "/tenders" if i % 2 else f"/documents/{document}")[0]
                for i in range(100)]
    assert set(statuses) == {200, 500}
    assert 15 <= statuses.count(500) <= 25, statuses
    assert request(running.port, "GET", "/health")[0] == 200
    assert running.process.poll() is None
