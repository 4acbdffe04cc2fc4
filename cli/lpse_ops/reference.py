"""Build the reference SPSE (a small real Java service) into a release source directory.

The Java sources, SQL migrations and release metadata live in ``tests/fixtures/spse``; one source
tree serves every version, the version (and the schema version it expects) being injected at build
time as a generated ``Version.java``. :func:`build_reference_source` compiles it with the JDK and
lays out a release *source* directory::

    <dir>/release.yml
    <dir>/payload/VERSION
    <dir>/payload/lib/spse.jar
    <dir>/payload/migrations/NNNN_name.sql

which ``lpse_ops.bundle.build`` turns into a signed ``spse-<version>.tar.gz``.

The normal releases are those of ``releases.yml`` (1.0, 1.1, 1.2). The *bad* releases of
``bad/releases.yml`` (:data:`BAD_KINDS`) are built only on demand, by the tests, with
:func:`build_bad_release_source` / :func:`build_bad_release`: validly signed bundles of the 1.2 code
and schema that each carry one defect (a migration that fails after committing part of its work, an
app whose /health is degraded, an app that answers 500 to part of its traffic) so that only an
upgrade's own checks can catch them. A bad build compiles the same sources as the normal ones (plus,
for the HTTP defects, the classes of ``bad/src/java``), so 1.0, 1.1 and 1.2 build exactly as before.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import yaml

from lpse_ops.config import PROJECT_DIR

FIXTURE_DIR = PROJECT_DIR / "tests" / "fixtures" / "spse"
"""Java sources (``src/main/java``), ``migrations/``, ``releases.yml`` and the bad releases (``bad/``)."""

BAD_DIR = FIXTURE_DIR / "bad"
"""The bad releases: ``releases.yml``, their extra ``migrations/`` and the defect classes (``src/java``)."""

BAD_KINDS = ("migration-fails-halfway", "unhealthy", "partial-5xx")
"""The kinds of bad release :func:`build_bad_release` builds (the keys of ``bad/releases.yml``)."""

DOCUMENTS_FIRST_QUERY = ("SELECT d.id FROM documents d JOIN tenders t ON t.id = d.tender_id "
                         "WHERE t.status = 'published' ORDER BY t.id DESC, d.id")
"""The reference releases' ``documents_first`` (schema 2 and later): the open tenders' documents, newest tender
first; a serve-first restore brings these back before SPSE opens (site/restore_first.py)."""
JDBC_JAR = "/usr/share/java/postgresql.jar"
"""Where Debian's libpostgresql-jdbc-java installs the driver; the jar's ``Class-Path`` points here."""

MAIN_CLASS = "id.go.lkpp.spse.Main"
JAR_DATE = "2024-01-01T00:00:00Z"
"""Fixed entry timestamps so that two builds of the same version give the same jar bytes."""

DEFECT_ATTRIBUTE = "SPSE-Defect"
"""The jar manifest attribute naming a bad build's defect (absent from normal builds)."""

_HTTP_PROVIDER_SERVICE = "META-INF/services/com.sun.net.httpserver.spi.HttpServerProvider"


def releases() -> dict[str, dict]:
    """Return the release metadata of ``releases.yml``, keyed by version string."""
    data = yaml.safe_load((FIXTURE_DIR / "releases.yml").read_text(encoding="utf-8"))
    return {str(version): meta for version, meta in data.items()}


def bad_releases() -> dict[str, dict]:
    """Return the metadata of ``bad/releases.yml``, keyed by kind (:data:`BAD_KINDS`)."""
    data = yaml.safe_load((BAD_DIR / "releases.yml").read_text(encoding="utf-8"))
    return {str(kind): meta for kind, meta in data.items()}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(
            f"{name} not found on PATH: the reference SPSE needs a JDK 17 to build (install openjdk-17-jdk-headless)"
        )
    return path


JAR_CACHE_ENV = "LPSE_OPS_REFERENCE_CACHE"
"""A folder for compiled reference jars, or ``off``; default ``$XDG_CACHE_HOME/lpse-ops/reference-jars``."""


def jar_cache_dir() -> Path | None:
    """Where compiled jars are kept between builds (None: caching is off)."""
    setting = os.environ.get(JAR_CACHE_ENV, "")
    if setting == "off":
        return None
    if setting:
        return Path(setting)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lpse-ops" / "reference-jars"


def _jar_key(javac: str, sources: list[Path], manifest_text: str, extra: dict[str, str]) -> str:
    """The cache key of one jar: the JDK's javac (path, size, time), every source's name and bytes, the
    manifest and the extra entries. The build is reproducible (fixed entry dates), so equal keys mean equal
    jars; a changed source, defect or JDK gives a new key."""
    digest = hashlib.sha256()
    tool = Path(javac).resolve()
    stat = tool.stat()
    digest.update(f"{tool}\0{stat.st_size}\0{stat.st_mtime_ns}\0{JAR_DATE}\0{manifest_text}\0".encode())
    for name, text in sorted(extra.items()):
        digest.update(f"{name}\0{text}\0".encode())
    for source in sources:
        digest.update(source.name.encode() + b"\0" + source.read_bytes() + b"\0")
    return digest.hexdigest()


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:2])} failed ({result.returncode}):\n{result.stderr}{result.stdout}")


def _version_java(version: str, schema_version: int) -> str:
    return (
        "package id.go.lkpp.spse;\n\n"
        "/** Generated by lpse_ops.reference at build time. */\n"
        "final class Version {\n"
        f'    static final String VERSION = "{version}";\n'
        f"    static final int SCHEMA_VERSION = {schema_version};\n\n"
        "    private Version() {\n    }\n}\n"
    )


def _defect_java(kind: str, fail_every: int, grace_requests: int) -> str:
    return (
        "package id.go.lkpp.spse;\n\n"
        "/** Generated by lpse_ops.reference for a BAD reference build: the defect DefectFilter applies. */\n"
        "final class Defect {\n"
        f'    static final String KIND = "{kind}";\n'
        f"    static final long FAIL_EVERY = {fail_every};\n"
        f"    static final long GRACE_REQUESTS = {grace_requests};\n\n"
        "    private Defect() {\n    }\n}\n"
    )


def _migration_file(migration_id: str, bad: bool) -> Path:
    src = FIXTURE_DIR / "migrations" / f"{migration_id}.sql"
    if bad and not src.is_file():
        src = BAD_DIR / "migrations" / f"{migration_id}.sql"
    return src


def _compile(javac: str, jar: str, build: Path, sources: list[Path], manifest_text: str, extra: dict[str, str],
             jar_path: Path) -> None:
    """Compile *sources* with javac and pack them, the manifest and the *extra* entries into *jar_path*."""
    classes = build / "classes"
    _run([javac, "--release", "17", "-encoding", "UTF-8", "-Xlint:all", "-d", str(classes), *map(str, sources)])
    for name, text in extra.items():
        entry = classes / name
        entry.parent.mkdir(parents=True, exist_ok=True)
        entry.write_text(text, encoding="utf-8")
    manifest = build / "MANIFEST.MF"
    manifest.write_text(manifest_text, encoding="utf-8")
    _run([jar, "--create", "--file", str(jar_path), "--manifest", str(manifest), f"--date={JAR_DATE}",
          "-C", str(classes), "."])


def _build(version: str, meta: dict, workdir: Path, *, defect: str | None = None, use_cache: bool = True) -> Path:
    """Compile one release described by *meta* (releases.yml's fields) into ``workdir/spse-<version>``.

    *defect* names a bad release kind; with it, ``meta["defect"]`` may add the HTTP defect filter
    (``bad/src/java``, a generated ``Defect.java`` and the service entry that installs it).
    """
    javac, jar = _tool("javac"), _tool("jar")
    spec = dict(meta.get("defect") or {}) if defect else {}
    http_defect = spec.get("filter")

    workdir = Path(workdir).resolve()
    build = workdir / f"build-{version}"
    source = workdir / f"spse-{version}"
    for path in (build, source):
        if path.exists():
            shutil.rmtree(path)
    generated = build / "generated" / "id" / "go" / "lkpp" / "spse"
    generated.mkdir(parents=True)
    (generated / "Version.java").write_text(_version_java(version, int(meta["schema_version"])), encoding="utf-8")

    sources = sorted((FIXTURE_DIR / "src" / "main" / "java").rglob("*.java")) + [generated / "Version.java"]
    if http_defect:
        (generated / "Defect.java").write_text(
            _defect_java(http_defect, int(spec.get("fail_every", 5)), int(spec.get("grace_requests", 0))),
            encoding="utf-8",
        )
        sources += sorted((BAD_DIR / "src" / "java").rglob("*.java")) + [generated / "Defect.java"]
    manifest_text = (
        f"Main-Class: {MAIN_CLASS}\nClass-Path: {JDBC_JAR}\nImplementation-Title: SPSE (reference)\n"
        f"Implementation-Version: {version}\n"
    )
    if defect:
        manifest_text += f"{DEFECT_ATTRIBUTE}: {defect}\n"
    extra: dict[str, str] = {}
    if http_defect:
        # DefectProvider wraps the JDK's own HTTP server provider, which lives in a non-exported package.
        manifest_text += "Add-Exports: jdk.httpserver/sun.net.httpserver\n"
        extra[_HTTP_PROVIDER_SERVICE] = "id.go.lkpp.spse.DefectProvider\n"
    payload = source / "payload"
    (payload / "lib").mkdir(parents=True)
    (payload / "migrations").mkdir()
    jar_path = payload / "lib" / "spse.jar"
    cache = jar_cache_dir() if use_cache else None
    cached = cache / f"{_jar_key(javac, sources, manifest_text, extra)}.jar" if cache else None
    if cached is not None and cached.is_file():
        shutil.copyfile(cached, jar_path)
    else:
        _compile(javac, jar, build, sources, manifest_text, extra, jar_path)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_name(f"{cached.name}.{os.getpid()}.part")
            shutil.copyfile(jar_path, partial)
            os.replace(partial, cached)  # whole or absent: a build beside this one never reads half a jar

    migrations = []
    for number, migration_id in enumerate(meta["migrations"], start=1):
        src = _migration_file(migration_id, bad=defect is not None)
        if not src.is_file():
            raise RuntimeError(f"release {version} lists migration {migration_id} but {src} does not exist")
        schema_version = int(migration_id.split("_", 1)[0])
        if schema_version != number:
            raise RuntimeError(f"migration {migration_id} is out of sequence (expected number {number})")
        shutil.copyfile(src, payload / "migrations" / src.name)
        migrations.append({"id": migration_id, "path": f"migrations/{src.name}", "schema_version": schema_version})
    (payload / "VERSION").write_text(f"{version}\n", encoding="utf-8")
    for path in payload.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)

    release = {
        "version": version,
        "min_upgrade_from": str(meta["min_upgrade_from"]),
        "migrations": migrations,
        "run": {"jar": "lib/spse.jar", "health_path": "/health"},
    }
    if int(meta["schema_version"]) >= 2:  # tenders.status: the published (open) tenders' documents come first
        release["documents_first"] = {"query": DOCUMENTS_FIRST_QUERY}
    (source / "release.yml").write_text(yaml.safe_dump(release, sort_keys=False), encoding="utf-8")
    shutil.rmtree(build)
    return source


def build_reference_source(version: str, workdir: Path, *, use_cache: bool = True) -> Path:
    """Compile reference SPSE ``version`` and return its release source dir ``workdir/spse-<version>``.

    Raises ``ValueError`` for a version not in ``releases.yml`` and ``RuntimeError`` when the JDK (javac,
    jar) is missing or compilation fails. The directory is rebuilt from scratch on each call; the jar comes
    from the jar cache (:func:`jar_cache_dir`) when the same sources were compiled before, unless
    *use_cache* is false.
    """
    known = releases()
    if version not in known:
        raise ValueError(f"unknown reference SPSE version {version!r} (known: {', '.join(sorted(known))})")
    return _build(version, known[version], workdir, use_cache=use_cache)


def build_bad_release_source(kind: str, workdir: Path, version: str | None = None) -> Path:
    """Compile the bad reference release *kind* and return its release source dir ``workdir/spse-<version>``.

    *version* defaults to the kind's version in ``bad/releases.yml`` (1.2.1, 1.2.2, 1.2.3); another may be
    passed (dotted integers, not older than the kind's ``min_upgrade_from``, 1.1). Raises ``ValueError``
    for an unknown kind or a bad version, ``RuntimeError`` as :func:`build_reference_source`.
    """
    from lpse_ops.bundle import BundleError, compare_versions, parse_version

    known = bad_releases()
    if kind not in known:
        raise ValueError(f"unknown bad reference release {kind!r} (known: {', '.join(BAD_KINDS)})")
    meta = known[kind]
    version = str(meta["version"]) if version is None else version
    try:
        parse_version(version)
    except BundleError as error:
        raise ValueError(f"bad release version {version!r}: {error}") from error
    if compare_versions(version, str(meta["min_upgrade_from"])) < 0:
        raise ValueError(f"bad release version {version} is older than its min_upgrade_from {meta['min_upgrade_from']}")
    return _build(version, meta, workdir, defect=kind)


def build_reference_bundle(version: str, private_key_path: Path, out_dir: Path) -> Path:
    """Build reference SPSE *version* into a signed ``out_dir/spse-<version>.tar.gz`` and return its path."""
    import tempfile

    from lpse_ops import bundle

    with tempfile.TemporaryDirectory(prefix="spse-reference-") as work:
        return bundle.build(build_reference_source(version, Path(work)), private_key_path, out_dir)


def build_bad_release(kind: str, private_key_path: Path, out_dir: Path, version: str | None = None) -> Path:
    """Build the bad release *kind* into a signed ``out_dir/spse-<version>.tar.gz`` and return its path.

    The bundle verifies like any release signed by that key: only the upgrade's own checks can catch it.
    """
    import tempfile

    from lpse_ops import bundle

    with tempfile.TemporaryDirectory(prefix="spse-bad-reference-") as work:
        return bundle.build(build_bad_release_source(kind, Path(work), version), private_key_path, out_dir)
