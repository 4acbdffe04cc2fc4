"""Root on a site never trusts what spse (the documents) or postgres (the data dirs) control.

Each test plants the real thing an attacker with that account could plant (a symlink, a FIFO, a folder
whose name holds a newline), as that account where it matters (a forked child that drops to uid 65534),
then runs the site tool's operation as root and asserts that a root-owned file elsewhere kept its
content, owner and mode, that nothing outside the documents reached restic, and that what was skipped
is reported with its reason. Anything that could block is bounded by ``signal.alarm``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from lpse_ops.site import checkpoint, documents, engine, restore, run, safefs, scratch
from tests.unit.test_site_status import site_settings

ATTACKER = 65534  # nobody: stands for spse or postgres, an account less privileged than root
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the site tool runs as root; these attacks need root")


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail (instead of hanging the suite) when the block has not finished in *seconds*."""
    def expired(_signum, _frame):
        raise TimeoutError(f"hung: still blocked after {seconds} s (a FIFO or a device was opened)")
    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def as_attacker(folder: Path, plant: Callable[[int], None]) -> None:
    """Run *plant(dir_fd)* in a child that has dropped to uid/gid 65534, relative to *folder*'s descriptor
    (opened while still root: the attacker owns the folder, not the test's private tmp parents)."""
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        code = 1
        try:
            os.setgroups([])
            os.setgid(ATTACKER)
            os.setuid(ATTACKER)
            plant(dir_fd)
            code = 0
        finally:
            os._exit(code)
    os.close(dir_fd)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the attacker could not plant its trap"


def subprocess_rm(path: str) -> None:
    """Clean up a deep tree whatever the code under test did (pytest's rmtree recurses once per folder)."""
    import subprocess

    subprocess.run(["rm", "-rf", "--one-file-system", "--", path], check=False)


def owned_by_attacker(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, ATTACKER, ATTACKER)
    path.chmod(0o750)
    return path


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A root-owned file the attacker must never get rewritten, chowned or read: its content, owner, mode."""
    folder = tmp_path / "etc"
    folder.mkdir()
    path = folder / "shadow"
    path.write_bytes(b"root:$6$secret:19000:0:99999:7:::\n")
    path.chmod(0o600)
    return path


def untouched(path: Path) -> tuple[bytes, int, int, int]:
    info = os.lstat(path)
    return path.read_bytes(), info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


ROOT_0600 = (b"root:$6$secret:19000:0:99999:7:::\n", 0, 0, 0o600)


# --- 1. a restore brings documents back without following what spse planted --------------------------

def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_bring_back_never_writes_through_a_link_spse_planted_at_the_staging_name(tmp_path: Path, victim: Path):
    """The copy used to land at the predictable ``<document>.lpse-restore`` (copy2 and chown follow links)."""
    docs, aside = owned_by_attacker(tmp_path / "documents"), tmp_path / "aside"
    (aside / "ab").mkdir(parents=True)
    (aside / "ab" / "doc").write_bytes(b"tender document")
    owned_by_attacker(docs / "ab")
    as_attacker(docs / "ab", lambda fd: os.symlink(str(victim), "doc.lpse-restore", dir_fd=fd))
    wanted = documents.Document("1", _sha(b"tender document"), "ab/doc")
    skipped: list[dict] = []
    still = documents.bring_back([wanted], str(aside), str(docs), skipped)
    assert untouched(victim) == ROOT_0600, "root rewrote or chowned a file through spse's symlink"
    assert still == [] and (docs / "ab" / "doc").read_bytes() == b"tender document"
    placed = os.lstat(docs / "ab" / "doc")
    assert (placed.st_uid, placed.st_gid) == (ATTACKER, ATTACKER) and stat.S_ISREG(placed.st_mode)
    assert [p for p in os.listdir(docs / "ab") if p.startswith(".lpse-restore")] == []  # no staging left behind


def test_bring_back_never_follows_a_folder_spse_replaced_with_a_link(tmp_path: Path, victim: Path):
    """A document's folder turned into a link to /etc: chown and copy used to follow it."""
    docs, aside = owned_by_attacker(tmp_path / "documents"), tmp_path / "aside"
    (aside / "ab").mkdir(parents=True)
    (aside / "ab" / "doc").write_bytes(b"tender document")
    as_attacker(docs, lambda fd: os.symlink(str(victim.parent), "ab", dir_fd=fd))
    wanted = documents.Document("1", _sha(b"tender document"), "ab/doc")
    skipped: list[dict] = []
    still = documents.bring_back([wanted], str(aside), str(docs), skipped)
    assert untouched(victim) == ROOT_0600
    assert os.listdir(victim.parent) == ["shadow"], "root created a file inside the folder the link points at"
    assert os.lstat(victim.parent).st_uid == 0, "root chowned the folder the link points at"
    assert still == [wanted]
    assert skipped == [{"document": "1:ab/doc", "reason": "ab is a symlink, not a directory"}], skipped


def test_bring_back_copies_only_regular_files_and_reports_links_and_fifos(tmp_path: Path, victim: Path):
    """The set-aside folder is spse's: a link there to a root-only file must not be copied (and chowned to
    spse, so readable); a FIFO must not block the restore."""
    docs, aside = owned_by_attacker(tmp_path / "documents"), owned_by_attacker(tmp_path / "aside")
    owned_by_attacker(aside / "ab")

    def plant(fd: int) -> None:
        os.symlink(str(victim), "link", dir_fd=fd)
        os.mkfifo("pipe", dir_fd=fd)
    as_attacker(aside / "ab", plant)
    link = documents.Document("1", _sha(victim.read_bytes()), "ab/link")  # spse knows /etc/passwd's hash
    pipe = documents.Document("2", _sha(b""), "ab/pipe")
    skipped: list[dict] = []
    with deadline(10):
        still = documents.bring_back([link, pipe], str(aside), str(docs), skipped)
    assert still == [link, pipe] and not (docs / "ab" / "link").exists() and not (docs / "ab" / "pipe").exists()
    assert untouched(victim) == ROOT_0600
    assert skipped == [{"document": "1:ab/link", "reason": "ab/link is a symlink, not a regular file"},
                       {"document": "2:ab/pipe", "reason": "ab/pipe is a fifo, not a regular file"}], skipped


@pytest.mark.parametrize("stored", ["../etc/shadow", "ab/../../etc/shadow", "/ETC/shadow", "ab//doc", "./ab/doc",
                                    "ab/doc/", ""])
def test_a_documents_row_naming_a_path_outside_the_documents_is_refused(tmp_path: Path, victim: Path, stored: str):
    """stored_path comes from the database spse writes: ``../etc/shadow`` joined to the documents dir is
    /etc/shadow, and a matching copy used to be chowned to spse."""
    docs = owned_by_attacker(tmp_path / "documents")
    stored = stored.replace("/ETC/shadow", str(victim))
    source = tmp_path / "sources"
    (source / "ab").mkdir(parents=True)
    row = documents.Document("7", _sha(victim.read_bytes()), stored)
    skipped: list[dict] = []
    assert documents.bring_back([row], str(source), str(docs), skipped) == [row]
    assert untouched(victim) == ROOT_0600
    assert skipped and skipped[0]["document"] == f"7:{stored}" and "unsafe document path" in skipped[0]["reason"]
    missing, mismatched = documents.check([row], str(docs))
    assert missing == [f"7:{stored} (unsafe document path)"] or missing[0].startswith(f"7:{stored} (unsafe")
    assert not documents.matches(row, str(docs))


def test_documents_check_reports_a_link_or_fifo_as_not_a_document_and_never_blocks(tmp_path: Path, victim: Path):
    root = owned_by_attacker(tmp_path / "restored")

    def plant(fd: int) -> None:
        os.symlink(str(victim), "link", dir_fd=fd)
        os.symlink("/dev/zero", "zero", dir_fd=fd)
        os.mkfifo("pipe", dir_fd=fd)
    as_attacker(root, plant)
    rows = [documents.Document("1", _sha(victim.read_bytes()), "link"), documents.Document("2", "00" * 32, "zero"),
            documents.Document("3", "00" * 32, "pipe")]
    with deadline(10):
        missing, mismatched = documents.check(rows, str(root))
    assert missing == ["1:link (a symlink, not a regular file)", "2:zero (a symlink, not a regular file)",
                       "3:pipe (a fifo, not a regular file)"] and mismatched == []


def test_a_restore_stages_documents_in_a_root_owned_folder_not_at_a_predictable_name_in_spse_s(
        tmp_path: Path, victim: Path, monkeypatch: pytest.MonkeyPatch):
    """spse owns the documents' parent: a link planted there at ``.lpse-restore-<stamp>`` (the restore's start,
    to the second) used to receive restic's whole restore, as root."""
    parent = owned_by_attacker(tmp_path / "spse")
    docs = owned_by_attacker(parent / "documents")
    config = site_settings(tmp_path)
    config = config.__class__(**{**config.__dict__, "docs_dir": str(docs)})
    Path(config.state_dir).mkdir()
    stamp = "20261203T101010Z"
    def plant(fd: int) -> None:
        os.symlink(str(victim.parent), f".lpse-restore-{stamp}", dir_fd=fd)
        os.mkdir(f"documents.before-restore-{stamp}", dir_fd=fd)  # the old aside name, filled: rename failed
        os.mkdir(f"documents.before-restore-{stamp}/full", dir_fd=fd)
    as_attacker(parent, plant)
    targets = []

    def fake_restic(settings, name, args, **kwargs):  # what restic does with --target: write below it
        target = args[args.index("--target") + 1]
        targets.append(target)
        os.makedirs(target + str(docs), exist_ok=True)
        Path(target + str(docs), "restored.pdf").write_bytes(b"from the snapshot")
        return SimpleNamespace(returncode=0, stdout="", stderr="")
    monkeypatch.setattr(engine, "restic_call", fake_restic)
    current = restore.Restore(config, "1", None, "latest", {"steps": [], "moved_aside": {}}, stamp,
                              snapshot=SimpleNamespace(short_id="abc", id="abc"))
    restore.stage_documents(current)
    current.staging_thread.join(10)
    assert not current.staging_failure, current.staging_failure
    assert os.listdir(victim.parent) == ["shadow"], "restic restored into the folder spse's link points at"
    staging = os.lstat(current.staging)
    assert stat.S_ISDIR(staging.st_mode) and staging.st_uid == 0 and stat.S_IMODE(staging.st_mode) == 0o700
    assert not current.staging.startswith(str(parent) + "/"), "staged inside the folder spse owns"
    assert os.lstat(current.staging).st_dev == os.lstat(docs).st_dev  # renamed into place, never copied
    (docs / "live.pdf").write_bytes(b"the live one")
    restore.put_documents_in_place(current)
    assert (docs / "restored.pdf").read_bytes() == b"from the snapshot"
    aside = current.result["moved_aside"]["documents"]["to"]
    assert aside != f"{docs}.before-restore-{stamp}" and aside.startswith(f"{docs}.before-restore-{stamp}-")
    assert (Path(aside) / "live.pdf").read_bytes() == b"the live one"
    assert os.listdir(parent / f"documents.before-restore-{stamp}") == ["full"]


def test_a_new_data_dir_is_chowned_by_descriptor_never_through_a_link(tmp_path: Path):
    """Between mkdir and chown, postgres (owner of the data dir's parent) can swap in a link; chown must
    not follow it (shutil.chown did)."""
    victim_dir = tmp_path / "etc"
    victim_dir.mkdir(mode=0o755)
    parent = owned_by_attacker(tmp_path / "postgresql")
    as_attacker(parent, lambda fd: os.symlink(str(victim_dir), "main", dir_fd=fd))
    with pytest.raises(OSError, match="(?i)not a directory|symbolic link|too many levels"):
        safefs.chown_new_dir(str(parent / "main"), ATTACKER, ATTACKER, 0o700)
    assert os.lstat(victim_dir).st_uid == 0 and stat.S_IMODE(os.lstat(victim_dir).st_mode) == 0o755
    made = tmp_path / "made"
    safefs.make_owned_dir(str(made), ATTACKER, ATTACKER, 0o700)
    info = os.lstat(made)
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (ATTACKER, 0o700)


# --- 2. the scratch instance's configuration is never written through postgres's data dir ------------

@pytest.fixture
def scratch_site(tmp_path: Path):
    config = site_settings(tmp_path)
    where = scratch.Scratch(str(tmp_path / "scratch"), 55499)
    os.makedirs(where.root, mode=0o755)
    return config, where


@pytest.mark.parametrize("name", ["pg_hba.conf", "postgresql.conf", "pg_ident.conf"])
def test_scratch_configuration_never_follows_a_link_postgres_planted_in_the_data_dir(scratch_site, victim: Path,
                                                                                     name: str):
    """The restored data dir is postgres's: a link there at pg_hba.conf used to get root's rewrite and a chown
    to postgres, every week, from the verify timer."""
    config, where = scratch_site
    owned_by_attacker(Path(where.pgdata))
    as_attacker(Path(where.pgdata), lambda fd: os.symlink(str(victim), name, dir_fd=fd))
    with deadline(60):
        scratch.configure(config, where)
    assert untouched(victim) == ROOT_0600, "root wrote the scratch configuration through postgres's link"
    assert os.readlink(Path(where.pgdata) / name) == str(victim)  # left alone: never read, never written
    for conf in ("postgresql.conf", "pg_hba.conf", "pg_ident.conf"):
        info = os.lstat(Path(where.conf_dir) / conf)
        assert stat.S_ISREG(info.st_mode) and info.st_uid == 0 and not info.st_mode & 0o022
    assert os.lstat(where.conf_dir).st_uid == 0
    text = (Path(where.conf_dir) / "postgresql.conf").read_text()
    assert f"hba_file = '{where.conf_dir}/pg_hba.conf'" in text and f"ident_file = '{where.conf_dir}/pg_ident.conf'" \
        in text
    assert f"config_file={where.conf_dir}/postgresql.conf" in " ".join(scratch.server_options(where))


# --- 3. the 30-second delta hands restic nothing outside the documents --------------------------------

@pytest.fixture
def delta_site(tmp_path: Path):
    config = site_settings(tmp_path)
    docs = owned_by_attacker(tmp_path / "documents")
    (tmp_path / "state").mkdir()
    return config.__class__(**{**config.__dict__, "docs_dir": str(docs), "lock_path": str(tmp_path / "lock")})


def listed_paths(args: list[str]) -> list[bytes]:
    """The paths a ``restic backup`` argv names, read the way restic reads its list file."""
    if "--files-from-raw" in args:
        data = Path(args[args.index("--files-from-raw") + 1]).read_bytes()
        assert data.endswith(b"\0"), "restic refuses a raw list without its trailing NUL"
        return data[:-1].split(b"\0")
    data = Path(args[args.index("--files-from-verbatim") + 1]).read_bytes()
    return [line for line in data.split(b"\n") if line]


def test_a_folder_named_with_a_newline_never_puts_a_path_outside_the_documents_in_the_delta(
        delta_site, monkeypatch: pytest.MonkeyPatch):
    """spse makes ``documents/a\\n/etc/shadow``; one path a line, restic used to read ``/etc/shadow``."""
    docs = Path(delta_site.docs_dir)
    run.write_stamp(delta_site, 0.0)

    def plant(fd: int) -> None:
        os.mkdir("a\n", dir_fd=fd)
        os.mkdir("a\n/etc", dir_fd=fd)
        with open(os.open("a\n/etc/shadow", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as handle:
            handle.write(b"a document")
    as_attacker(docs, plant)
    calls = []

    def fake(settings, name, args, **kwargs):
        calls.append((name, args, listed_paths(args)))
        return SimpleNamespace(returncode=0, stdout='{"message_type":"summary","snapshot_id":"abc"}\n', stderr="")
    monkeypatch.setattr(engine, "restic_call", fake)
    result = run.main(delta_site, SimpleNamespace(type="delta"))
    assert result["ok"], result
    assert [name for name, _, _ in calls] == ["local", "offsite"]
    for _, args, paths in calls:
        assert b"/etc/shadow" not in paths, f"restic was told to back up /etc/shadow: {paths}"
        assert paths == [os.fsencode(str(docs / "a\n" / "etc" / "shadow"))]
        assert "--files-from-raw" in args and "--files-from-verbatim" not in args


def test_the_delta_list_refuses_any_path_outside_the_documents():
    from lpse_ops.site import restic

    assert restic.delta_listing("/var/lib/spse/documents", ["/var/lib/spse/documents/a\n/b"]) == \
        b"/var/lib/spse/documents/a\n/b\0"
    for bad in ("/etc/shadow", "/var/lib/spse/documents/../../../etc/shadow", "/var/lib/spse/documents-x/a",
                "/var/lib/spse/documents", "relative/a", "/var/lib/spse/documents/a\0/etc/shadow"):
        with pytest.raises(ValueError, match="outside the documents"):
            restic.delta_listing("/var/lib/spse/documents", [bad])


def test_the_delta_takes_only_regular_files_and_reports_the_rest(delta_site, monkeypatch: pytest.MonkeyPatch):
    docs = Path(delta_site.docs_dir)
    run.write_stamp(delta_site, 0.0)
    (docs / "real.pdf").write_bytes(b"x")

    def plant(fd: int) -> None:
        os.mkfifo("pipe", dir_fd=fd)
        os.symlink("/etc/shadow", "link", dir_fd=fd)
    as_attacker(docs, plant)
    calls = []
    confined = []
    monkeypatch.setattr(engine, "restic_call", lambda settings, name, args, **k: confined.append(k.get("confine"))
                        or calls.append(listed_paths(args)) or SimpleNamespace(returncode=0, stdout="", stderr=""))
    with deadline(10):
        result = run.main(delta_site, SimpleNamespace(type="delta"))
    assert result["ok"] and calls == [[os.fsencode(str(docs / "real.pdf"))]] * 2, (result, calls)
    assert confined == [delta_site.docs_dir] * 2  # restic reads them where no link is followed
    assert result["skipped_files"] == [{"path": "link", "reason": "a symlink, not a regular file"},
                                 {"path": "pipe", "reason": "a fifo, not a regular file"}], result


# --- 4. the upgrade checkpoint hashes regular files only ---------------------------------------------

def test_the_checkpoint_fingerprint_skips_fifos_and_device_links_and_never_hangs(tmp_path: Path, victim: Path):
    """A FIFO, or a link to /dev/zero, used to hang the upgrade while the site showed the maintenance page."""
    docs = owned_by_attacker(tmp_path / "documents")
    (docs / "ab").mkdir()
    (docs / "ab" / "one").write_bytes(b"first document")
    owned_by_attacker(docs / "cd")

    def plant(fd: int) -> None:
        os.mkfifo("pipe", dir_fd=fd)
        os.symlink("/dev/zero", "zero", dir_fd=fd)
        os.symlink(str(victim), "shadow", dir_fd=fd)
        os.symlink(str(victim.parent), "etc", dir_fd=fd)
    as_attacker(docs / "cd", plant)
    with deadline(10):
        found = checkpoint.documents_fingerprint(str(docs))
    assert found["files"] == 1 and found["entries"] == [f"ab/one {_sha(b'first document')}"], found
    assert found["skipped"] == [{"path": "cd/etc", "reason": "a symlink, not a regular file"},
                                {"path": "cd/pipe", "reason": "a fifo, not a regular file"},
                                {"path": "cd/shadow", "reason": "a symlink, not a regular file"},
                                {"path": "cd/zero", "reason": "a symlink, not a regular file"}], found
    assert untouched(victim) == ROOT_0600


@pytest.mark.skipif(not os.path.exists("/usr/lib/postgresql/15/bin/initdb"), reason="needs PostgreSQL 15's binaries")
def test_the_scratch_instance_starts_on_root_s_configuration_and_ignores_postgres_s_links(tmp_path: Path,
                                                                                          victim: Path):
    """The real thing: a data dir whose pg_hba.conf is postgres's link to a root-only file and whose
    postgresql.auto.conf asks for another port; the scratch instance still starts, on its own port and
    socket, reading root's configuration, and the linked file is untouched."""
    import pwd
    import shutil
    import tempfile

    config = site_settings(tmp_path)
    base = tempfile.mkdtemp(prefix="lpse-scratch-test-", dir="/tmp")  # postgres must reach it: not under tmp_path
    os.chmod(base, 0o755)
    where = scratch.Scratch(os.path.join(base, "scratch"), 55498)
    account = pwd.getpwnam("postgres")
    try:
        os.makedirs(where.root, mode=0o755)
        scratch.make_dirs(where)
        from lpse_ops.site.proc import run as run_command
        run_command(["/usr/lib/postgresql/15/bin/initdb", "--pgdata", where.pgdata, "--auth=peer", "--no-sync"],
                    user="postgres", timeout=120)
        pgdata = Path(where.pgdata)
        for name in ("pg_hba.conf", "postgresql.conf", "pg_ident.conf"):  # Debian keeps them in /etc
            (pgdata / name).unlink()
        os.symlink(str(victim), pgdata / "pg_hba.conf")
        os.lchown(pgdata / "pg_hba.conf", account.pw_uid, account.pw_gid)
        (pgdata / "postgresql.auto.conf").write_text("port = 5999\narchive_mode = on\n")
        with deadline(120):
            scratch.configure(config, where)
            started, detail = scratch.start(config, where)
            assert started, detail
            assert scratch.wait_promoted(config, where, timeout=60)
            lines = scratch.postgres.psql(config, "SELECT current_setting('hba_file'), current_setting('config_file'), "
                                          "current_setting('port'), current_setting('archive_mode');",
                                          database="postgres", port=where.port, host=where.socket_dir)
        assert lines == [f"{where.conf_dir}/pg_hba.conf\t{where.conf_dir}/postgresql.conf\t{where.port}\toff"], lines
        assert untouched(victim) == ROOT_0600
    finally:
        with deadline(120):
            scratch.remove(config, where)
        shutil.rmtree(base, ignore_errors=True)


# --- 5. the documents folder itself swapped for a link (spse owns its parent) ------------------------

def test_a_documents_folder_replaced_with_a_link_is_refused_by_every_operation(tmp_path: Path, victim: Path,
                                                                               monkeypatch: pytest.MonkeyPatch):
    from lpse_ops.site.errors import Failure

    parent = owned_by_attacker(tmp_path / "spse")
    as_attacker(parent, lambda fd: os.symlink(str(victim.parent), "documents", dir_fd=fd))
    docs = parent / "documents"
    with deadline(10), pytest.raises(Failure) as raised:
        checkpoint.documents_fingerprint(str(docs))
    assert raised.value.code == "documents_unsafe" and "a symlink, not a directory" in raised.value.message
    config = site_settings(tmp_path)
    config = config.__class__(**{**config.__dict__, "docs_dir": str(docs), "lock_path": str(tmp_path / "lock")})
    Path(config.state_dir).mkdir()
    run.write_stamp(config, 0.0)
    calls = []
    monkeypatch.setattr(engine, "restic_call", lambda *a, **k: calls.append(a))
    result = run.main(config, SimpleNamespace(type="delta"))
    assert not result["ok"] and result["code"] == "documents_unsafe" and calls == [], result
    skipped: list[dict] = []
    row = documents.Document("1", _sha(victim.read_bytes()), "shadow")
    assert documents.bring_back([row], str(tmp_path), str(docs), skipped) == [row]
    assert skipped == [{"document": "1:shadow", "reason": "documents folder: documents is a symlink, not a directory"}]
    assert untouched(victim) == ROOT_0600 and os.lstat(victim.parent).st_uid == 0


def test_bring_back_gives_every_folder_it_makes_to_the_documents_owner(tmp_path: Path):
    """Every folder made on the way belongs to spse with the documents dir's mode (makedirs left the
    intermediate ones root's, so spse could not write its own documents folder afterwards)."""
    docs, source = owned_by_attacker(tmp_path / "documents"), tmp_path / "source"
    (source / "x" / "y").mkdir(parents=True)
    (source / "x" / "y" / "doc").write_bytes(b"deep document")
    (source / "x" / "y" / "doc").chmod(0o640)
    row = documents.Document("1", _sha(b"deep document"), "x/y/doc")
    assert documents.bring_back([row], str(source), str(docs)) == []
    for made in (docs / "x", docs / "x" / "y"):
        info = os.lstat(made)
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (ATTACKER, ATTACKER, 0o750), made
    info = os.lstat(docs / "x" / "y" / "doc")
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (ATTACKER, 0o640)
    assert info.st_mtime_ns == os.lstat(source / "x" / "y" / "doc").st_mtime_ns


def test_a_tree_nested_a_thousand_folders_deep_is_reported_not_a_crash(tmp_path: Path):
    """os.walk recursed once per folder: spse's 1,100-deep tree raised RecursionError out of the checkpoint."""
    docs = owned_by_attacker(tmp_path / "documents")
    (docs / "top.pdf").write_bytes(b"top")

    def plant(fd: int) -> None:
        os.fchdir(fd)
        for _ in range(1100):
            os.mkdir("d")
            os.chdir("d")
        with open("bottom.pdf", "wb") as handle:
            handle.write(b"bottom")
    try:
        as_attacker(docs, plant)
        with deadline(60):
            found = checkpoint.documents_fingerprint(str(docs))
            changed = run.changed_since(str(docs), 0.0, skipped := [])
        deep = "/".join(["d"] * safefs.MAX_WALK_DEPTH)
        assert found["entries"] == [f"top.pdf {_sha(b'top')}"], found
        assert found["skipped"] == [{"path": deep, "reason": f"nested deeper than {safefs.MAX_WALK_DEPTH} "
                                                             "folders: not entered"}]
        assert changed == [str(docs / "top.pdf")] and skipped == found["skipped"]
        safefs.remove_tree(str(docs))
        assert not docs.exists()
    finally:
        subprocess_rm(str(docs))


def test_verify_s_scratch_folder_is_removed_however_deep_spse_nested_its_documents(scratch_site, victim: Path):
    """A verify restores the snapshot (spse's documents too) into the scratch folder; shutil.rmtree raised
    RecursionError on a 1,100-deep tree, so the folder stayed and every later verify failed to prepare it.
    A link in there pointing out is removed as a link, never followed."""
    config, where = scratch_site
    docs = owned_by_attacker(Path(where.files) / "var" / "lib" / "spse" / "documents")

    def plant(fd: int) -> None:
        os.symlink(str(victim.parent), "etc", dir_fd=fd)
        os.fchdir(fd)
        for _ in range(1100):
            os.mkdir("d")
            os.chdir("d")
    as_attacker(docs, plant)
    try:
        with deadline(60):
            scratch.remove(config, where)
    finally:
        subprocess_rm(where.root)
    assert not os.path.lexists(where.root)
    assert untouched(victim) == ROOT_0600 and os.listdir(victim.parent) == ["shadow"]


def test_staging_uses_the_state_dir_only_while_only_root_can_change_it(tmp_path: Path):
    config = site_settings(tmp_path)
    docs = owned_by_attacker(tmp_path / "spse" / "documents")
    os.chown(docs.parent, ATTACKER, ATTACKER)
    config = config.__class__(**{**config.__dict__, "docs_dir": str(docs)})
    Path(config.state_dir).mkdir(mode=0o755)
    assert restore.staging_parent(config) == (config.state_dir, None)
    os.chmod(config.state_dir, 0o775)  # group-writable: someone else could swap the staging folder
    assert restore.staging_parent(config)[0] != config.state_dir


def test_documents_on_their_own_spse_owned_disk_are_staged_at_a_random_name_with_a_warning(tmp_path: Path):
    """/var/lib/spse as its own filesystem, its root spse's: no root-only folder there, so the staging is a
    random 0700 folder next to the documents and the result says that spse could still race it."""
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=1m,mode=0750,uid={ATTACKER},gid={ATTACKER}",
                              "tmpfs", str(disk)], capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        docs = owned_by_attacker(disk / "documents")
        config = site_settings(tmp_path)
        config = config.__class__(**{**config.__dict__, "docs_dir": str(docs)})
        Path(config.state_dir).mkdir(mode=0o755)
        parent, warning = restore.staging_parent(config)
        assert parent == str(disk) and "spse could still swap it" in warning, (parent, warning)
        current = restore.Restore(config, "1", None, "latest", {"steps": [], "moved_aside": {}}, "20261203T101010Z",
                                  snapshot=SimpleNamespace(short_id="abc", id="abc"))
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(engine, "restic_call", lambda *a, **k: SimpleNamespace(returncode=0, stdout="", stderr=""))
            restore.stage_documents(current)
            current.staging_thread.join(10)
        made = os.lstat(current.staging)
        assert os.path.dirname(current.staging) == str(disk) and made.st_uid == 0
        assert stat.S_IMODE(made.st_mode) == 0o700 and len(os.path.basename(current.staging)) > 16
        assert current.result["staging_warning"] == warning
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_restic_reads_the_documents_where_no_link_is_followed_whenever_spse_swaps_one_in(tmp_path: Path):
    """The race the listing cannot close: spse swaps a listed folder for a link to a root-only folder after
    the listing and before restic reads. Under ``confined_argv`` the read through the link fails with
    ELOOP while a regular file next to it reads, and the link itself still reads as a link."""
    import subprocess

    from lpse_ops.site import restic

    secret = tmp_path / "root-only"
    secret.mkdir()
    (secret / "shadow").write_text("root:$6$secret\n")
    docs = tmp_path / "documents; $(touch pwned)"  # a folder name is data, never shell
    docs.mkdir()
    (docs / "real.pdf").write_text("%PDF-1.4 real\n")
    os.symlink(secret, docs / "swapped")  # the folder spse swapped for a link after the listing
    read = "cat -- \"$1\"/real.pdf; cat -- \"$1\"/swapped/shadow; echo rc=$?; readlink -- \"$1\"/swapped"
    argv = ["sh", "-c", read, "reader", str(docs)]
    plain = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert "root:$6$secret" in plain.stdout  # the fault the confinement exists for, without it
    confined = subprocess.run(restic.confined_argv(str(docs), argv), capture_output=True, text=True, timeout=30,
                              cwd=tmp_path)
    assert confined.stdout.splitlines() == ["%PDF-1.4 real", "rc=1", str(secret)], (confined.stdout, confined.stderr)
    assert "Too many levels of symbolic links" in confined.stderr, confined.stderr
    assert not (tmp_path / "pwned").exists()
    assert "nosymfollow" not in Path("/proc/self/mountinfo").read_text()  # the mount stayed in its namespace
    with pytest.raises(ValueError, match="not an absolute path"):
        restic.confined_argv("documents", argv)


def test_a_child_run_as_another_account_has_its_own_session_and_no_stdin_of_roots():
    """Fourth review: ``runuser -u postgres`` kept root's session and terminal, so a postgres process could
    push keystrokes into root's terminal (TIOCSTI) while root waited for it."""
    from lpse_ops.site.proc import run

    out = run(["sh", "-c", "cat /proc/self/stat; readlink /proc/self/fd/0"], user="nobody").stdout.split("\n")
    session = int(out[0].rsplit(")", 1)[1].split()[3])  # the 6th field: after the name, the 4th
    assert session != os.getsid(0) and out[1] == "/dev/null", out
