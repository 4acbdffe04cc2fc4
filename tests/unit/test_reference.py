"""The reference SPSE builds: release 1.2 and the three bad releases (built, signed, verified; each with its defect).

They compile Java, so they need a JDK 17 (skipped without one); running them against PostgreSQL is
tests/integration/test_reference_releases.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from lpse_ops import bundle, reference
from lpse_ops.commands.bundle import bundle as bundle_cli

pytestmark = [
    pytest.mark.clock_free("javac and the jar cache: subprocesses and file times, on the real clock"),
    pytest.mark.skipif(shutil.which("javac") is None or shutil.which("jar") is None,
                       reason="no JDK 17 (javac, jar) on PATH"),
]

SERVICE = "META-INF/services/com.sun.net.httpserver.spi.HttpServerProvider"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("keys")
    bundle.keygen(root / "release.key", root / "release.pub", "reference test key")
    return root


@pytest.fixture(scope="module")
def bundles(keys: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Signed bundles of 1.1, 1.2 and every bad kind, keyed by version or kind."""
    out = tmp_path_factory.mktemp("bundles")
    key = keys / "release.key"
    built = {version: reference.build_reference_bundle(version, key, out) for version in ("1.1", "1.2")}
    built |= {kind: reference.build_bad_release(kind, key, out) for kind in reference.BAD_KINDS}
    return built


def member(bundle_path: Path, name: str) -> bytes:
    with tarfile.open(bundle_path) as tar:
        handle = tar.extractfile(f"payload/{name}")
        assert handle is not None
        return handle.read()


def jar_of(bundle_path: Path, tmp_path: Path) -> Path:
    path = tmp_path / f"{bundle_path.name}.jar"
    path.write_bytes(member(bundle_path, "lib/spse.jar"))
    return path


def jar_entries(jar: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(jar) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def jar_manifest(jar: Path) -> dict[str, str]:
    text = jar_entries(jar)["META-INF/MANIFEST.MF"].decode()
    return dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)


# ------------------------------------------------------------------ 1.2


def test_build_reference_1_2_manifest_needs_1_1_and_ships_migrations_0001_to_0003(
        bundles: dict[str, Path], keys: Path) -> None:
    manifest = bundle.verify(bundles["1.2"], keys)
    assert (manifest.version, manifest.min_upgrade_from, manifest.schema_version) == ("1.2", "1.1", 3)
    assert [m.id for m in manifest.migrations] == ["0001_initial", "0002_tender_status", "0003_tender_category"]
    sql = member(bundles["1.2"], "migrations/0003_tender_category.sql").decode()
    assert "ALTER TABLE tenders ADD COLUMN category text NOT NULL DEFAULT 'barang'" in sql
    assert "CREATE INDEX tenders_category_idx" in sql


def test_build_reference_1_2_jar_reports_version_1_2_schema_3(bundles: dict[str, Path], tmp_path: Path) -> None:
    if shutil.which("java") is None:
        pytest.skip("no java on PATH")
    result = subprocess.run(["java", "-jar", str(jar_of(bundles["1.2"], tmp_path)), "version"],
                            capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(result.stdout) == {"version": "1.2", "schema_version": 3}


def test_build_reference_1_2_jar_same_classes_as_1_1_without_defect(bundles: dict[str, Path], tmp_path: Path) -> None:
    old, new = jar_entries(jar_of(bundles["1.1"], tmp_path)), jar_entries(jar_of(bundles["1.2"], tmp_path))
    assert old.keys() == new.keys()
    assert not any("Defect" in name for name in new) and SERVICE not in new
    assert old["id/go/lkpp/spse/Json.class"] == new["id/go/lkpp/spse/Json.class"]
    assert reference.DEFECT_ATTRIBUTE not in jar_manifest(jar_of(bundles["1.2"], tmp_path))


def test_build_reference_same_version_twice_gives_same_bytes(tmp_path: Path) -> None:
    # both compiled (no jar cache): the build itself is reproducible, which is what lets the cache exist
    first = reference.build_reference_source("1.2", tmp_path / "a", use_cache=False)
    second = reference.build_reference_source("1.2", tmp_path / "b", use_cache=False)
    for name in ("release.yml", "payload/lib/spse.jar", "payload/migrations/0003_tender_category.sql"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_a_cached_jar_is_the_compiled_one_and_other_sources_or_defects_compile_anew(tmp_path: Path,
                                                                                  monkeypatch) -> None:
    monkeypatch.setenv(reference.JAR_CACHE_ENV, str(tmp_path / "cache"))
    compiled = []
    real_compile = reference._compile
    monkeypatch.setattr(reference, "_compile", lambda *args: (compiled.append(args[-1]), real_compile(*args)))
    fresh = reference.build_reference_source("1.1", tmp_path / "a")
    again = reference.build_reference_source("1.1", tmp_path / "b")
    assert len(compiled) == 1  # the second build took the jar from the cache
    assert (again / "payload/lib/spse.jar").read_bytes() == (fresh / "payload/lib/spse.jar").read_bytes()
    uncached = reference.build_reference_source("1.1", tmp_path / "c", use_cache=False)
    assert (uncached / "payload/lib/spse.jar").read_bytes() == (fresh / "payload/lib/spse.jar").read_bytes()
    assert len(compiled) == 2
    # another version (its Version.java differs) and a bad build of that version (manifest, defect) miss it
    reference.build_reference_source("1.2", tmp_path / "d")
    reference.build_bad_release_source("unhealthy", tmp_path / "e", version="1.2")
    assert len(compiled) == 4
    assert len(list((tmp_path / "cache").glob("*.jar"))) == 3 and not list((tmp_path / "cache").glob("*.part"))


def test_the_jar_cache_can_be_switched_off(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(reference.JAR_CACHE_ENV, "off")
    assert reference.jar_cache_dir() is None
    monkeypatch.setenv(reference.JAR_CACHE_ENV, "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert reference.jar_cache_dir() == tmp_path / "lpse-ops" / "reference-jars"


# ------------------------------------------------------------------ bad releases


def test_bad_release_defaults_sort_after_1_2_and_upgrade_from_1_1() -> None:
    known = reference.bad_releases()
    assert tuple(known) == reference.BAD_KINDS
    versions = [str(meta["version"]) for meta in known.values()]
    assert len(set(versions)) == len(versions)
    for meta in known.values():
        assert bundle.compare_versions(str(meta["version"]), "1.2") > 0
        assert str(meta["min_upgrade_from"]) == "1.1"


@pytest.mark.parametrize("kind", reference.BAD_KINDS)
def test_build_bad_release_each_kind_verifies_with_trusted_key(
        kind: str, bundles: dict[str, Path], keys: Path, tmp_path: Path) -> None:
    manifest = bundle.verify(bundles[kind], keys)
    assert manifest.version == reference.bad_releases()[kind]["version"] and manifest.min_upgrade_from == "1.1"
    assert [m.id for m in manifest.migrations][:3] == ["0001_initial", "0002_tender_status", "0003_tender_category"]
    assert member(bundles[kind], "migrations/0003_tender_category.sql") == member(
        bundles["1.2"], "migrations/0003_tender_category.sql")
    assert jar_manifest(jar_of(bundles[kind], tmp_path))[reference.DEFECT_ATTRIBUTE] == kind


def test_build_bad_release_migration_commits_midway_then_fails(bundles: dict[str, Path], keys: Path) -> None:
    manifest = bundle.verify(bundles["migration-fails-halfway"], keys)
    assert [(m.id, m.schema_version) for m in manifest.migrations][-1] == ("0004_document_retention", 4)
    sql = member(bundles["migration-fails-halfway"], "migrations/0004_document_retention.sql").decode()
    statements = [s.strip() for s in re.sub(r"--[^\n]*", "", sql).split(";") if s.strip()]
    commit = statements.index("COMMIT")
    assert 0 < commit < len(statements) - 1, "work both before and after the COMMIT"
    assert statements[0].startswith("ALTER TABLE documents ADD COLUMN retain_until")
    assert "(retain_untill)" in statements[-1], "the statement after the COMMIT refers to a column that does not exist"


def test_build_bad_release_http_kinds_install_defect_filter(bundles: dict[str, Path], tmp_path: Path) -> None:
    for kind in ("unhealthy", "partial-5xx"):
        jar = jar_of(bundles[kind], tmp_path)
        entries = jar_entries(jar)
        assert entries[SERVICE].decode().strip() == "id.go.lkpp.spse.DefectProvider"
        assert {"id/go/lkpp/spse/DefectFilter.class", "id/go/lkpp/spse/Defect.class"} <= entries.keys()
        assert jar_manifest(jar)["Add-Exports"] == "jdk.httpserver/sun.net.httpserver"
    plain = jar_entries(jar_of(bundles["migration-fails-halfway"], tmp_path))
    assert SERVICE not in plain and "id/go/lkpp/spse/Defect.class" not in plain


def test_build_bad_release_partial_5xx_fails_every_fifth_after_grace(bundles: dict[str, Path], tmp_path: Path) -> None:
    if shutil.which("javap") is None:
        pytest.skip("no javap on PATH")
    result = subprocess.run(["javap", "-constants", "-cp", str(jar_of(bundles["partial-5xx"], tmp_path)),
                             "id.go.lkpp.spse.Defect"], capture_output=True, text=True, timeout=60, check=True)
    assert 'KIND = "partial-5xx"' in result.stdout
    assert "FAIL_EVERY = 5l" in result.stdout and "GRACE_REQUESTS = 10l" in result.stdout


def test_build_bad_release_unknown_kind_or_too_old_version_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown bad reference release 'slow'"):
        reference.build_bad_release_source("slow", tmp_path)
    with pytest.raises(ValueError, match="older than its min_upgrade_from 1.1"):
        reference.build_bad_release_source("unhealthy", tmp_path, version="1.0.9")
    with pytest.raises(ValueError, match="invalid version '1.3-bad'"):
        reference.build_bad_release_source("unhealthy", tmp_path, version="1.3-bad")


def test_build_bad_release_given_version_is_used(keys: Path, tmp_path: Path) -> None:
    path = reference.build_bad_release("unhealthy", keys / "release.key", tmp_path, version="1.3")
    assert path.name == "spse-1.3.tar.gz" and bundle.verify(path, keys).version == "1.3"


# ------------------------------------------------------------------ CLI


def test_cli_bundle_reference_bad_builds_signed_bundle(keys: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(bundle_cli, ["reference", "--bad", "partial-5xx", "--key", str(keys / "release.key"),
                                             "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    built = json.loads(result.stdout)
    assert built["version"] == "1.2.3" and built["min_upgrade_from"] == "1.1" and built["schema_version"] == 3
    assert bundle.verify(Path(built["bundle"]), keys).version == "1.2.3"


def test_cli_bundle_reference_version_1_2_builds(keys: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(bundle_cli, ["reference", "--version", "1.2", "--key", str(keys / "release.key"),
                                             "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["migrations"][-1] == "0003_tender_category"


def test_cli_bundle_reference_without_version_or_bad_is_usage_error(keys: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(bundle_cli, ["reference", "--key", str(keys / "release.key"), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "give --version" in result.output
    result = CliRunner().invoke(bundle_cli, ["reference", "--bad", "slow", "--key", str(keys / "release.key"),
                                             "--out", str(tmp_path)])
    assert result.exit_code == 2
