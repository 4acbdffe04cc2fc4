"""Files under folders that a less-privileged account owns, handled as root without trusting that account.

spse owns the documents (and their parent folder), postgres the data dirs: either can replace any name
there, at any moment, with a symlink, a FIFO or another folder. So, under such a folder, root:

- walks a path one name at a time from a directory descriptor, each directory opened with
  ``O_DIRECTORY | O_NOFOLLOW`` (a link or a non-directory in the way fails, never followed);
- reads only regular files: ``lstat`` first (a device is never opened), then ``O_NOFOLLOW | O_NONBLOCK``
  (a FIFO swapped in meanwhile cannot block) and ``fstat`` to confirm ``S_ISREG`` on what was opened;
- creates files with ``O_CREAT | O_EXCL | O_NOFOLLOW`` under random names, and sets owners and modes
  on descriptors (``fchown``, ``fchmod``), never on paths;
- accepts a relative path from elsewhere (a database row) only as plain names: no ``..``, ``.``, empty
  or absolute part.

What is refused raises :class:`Unsafe` with a reason meant for the JSON result.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from lpse_ops.site.proc import run

DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
REGULAR = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
BLOCK = 1 << 20


class Unsafe(Exception):
    """A path refused: a link, a FIFO or device, a non-directory in the way, or a path that leaves its root."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def kind(mode: int) -> str:
    """Name the file type of *mode* (an ``lstat`` result's ``st_mode``)."""
    for test, name in ((stat.S_ISLNK, "symlink"), (stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISDIR, "directory"), (stat.S_ISREG, "regular file")):
        if test(mode):
            return name
    return "unknown file type"


def not_regular(mode: int) -> str:
    return f"a {kind(mode)}, not a regular file"


def relative_parts(path: str) -> list[str]:
    """Split *path* (relative, from a database row) into its names; raise Unsafe when it is not plain.

    Refused: absolute, empty, an empty, ``.`` or ``..`` part (``a//b``, ``./a``, ``a/``), a NUL.
    """
    parts = path.split("/")
    if not path or "\0" in path or any(part in ("", ".", "..") for part in parts):
        raise Unsafe(f"unsafe document path {path!r}: only plain names below the documents folder")
    return parts


def open_root(path: str) -> int:
    """Open the folder *path* itself (it must be a directory, not a link); return its descriptor."""
    try:
        return os.open(path, DIRECTORY)
    except OSError as error:
        _refuse_open(error, os.path.basename(path) or path, "a directory", path)
        raise


def _refuse_open(error: OSError, label: str, wanted: str, name: str, dir_fd: int | None = None) -> None:
    """Raise Unsafe for the errors O_NOFOLLOW / O_DIRECTORY give (ELOOP, ENOTDIR), naming what is there."""
    if error.errno not in (errno.ELOOP, errno.ENOTDIR):
        return
    try:
        found = f"a {kind(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)}"
    except OSError:
        found = "no longer there"
    raise Unsafe(f"{label} is {found}, not {wanted}") from None


def open_dirs(dir_fd: int, names: list[str], create: tuple[int, int, int] | None = None,
              shown: str = "") -> int:
    """Open the directory *names* below *dir_fd*, one name at a time, never through a link; return its fd.

    With *create* ``(uid, gid, mode)``, a missing directory is made and given that owner and mode (on its
    descriptor). Raises Unsafe (a link or non-directory in the way), FileNotFoundError (missing).
    The caller closes the returned descriptor (a new one even when *names* is empty).
    """
    current = os.dup(dir_fd)
    walked = shown
    try:
        for name in names:
            walked = f"{walked}/{name}" if walked else name
            made = False
            if create:
                try:
                    os.mkdir(name, 0o700, dir_fd=current)
                    made = True
                except FileExistsError:
                    pass
            try:
                opened = os.open(name, DIRECTORY, dir_fd=current)
            except OSError as error:
                _refuse_open(error, walked, "a directory", name, current)
                raise
            os.close(current)
            current = opened
            if made and create:
                if os.fstat(current).st_uid != 0 or os.listdir(current):  # swapped after the mkdir: not ours
                    raise Unsafe(f"{walked} was replaced while it was being made")
                uid, gid, mode = create
                os.fchown(current, uid, gid)
                os.fchmod(current, mode)
        return current
    except BaseException:
        os.close(current)
        raise


def open_regular(dir_fd: int, name: str, shown: str = "") -> int:
    """Open the regular file *name* in *dir_fd* for reading; raise Unsafe for anything else.

    ``lstat`` first, so a device or FIFO is never opened; then O_NOFOLLOW | O_NONBLOCK and ``fstat``, so
    a swap between the two cannot make root open a link or block on a FIFO.
    """
    label = shown or name
    found = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if not stat.S_ISREG(found.st_mode):
        raise Unsafe(f"{label} is {not_regular(found.st_mode)}")
    try:
        fd = os.open(name, REGULAR, dir_fd=dir_fd)
    except OSError as error:
        _refuse_open(error, label, "a regular file", name, dir_fd)
        raise
    opened = os.fstat(fd)
    if not stat.S_ISREG(opened.st_mode):
        os.close(fd)
        raise Unsafe(f"{label} is {not_regular(opened.st_mode)}")
    return fd


def sha256_fd(fd: int) -> str:
    """Return the sha256 of what is left to read from *fd*."""
    digest = hashlib.sha256()
    while block := os.read(fd, BLOCK):
        digest.update(block)
    return digest.hexdigest()


def open_under(root: str, relative: str) -> int:
    """Open the regular file at *relative* (plain names, see :func:`relative_parts`) below the folder *root*.

    Raises Unsafe, FileNotFoundError, or another OSError.
    """
    parts = relative_parts(relative)
    root_fd = open_root(root)
    try:
        folder = open_dirs(root_fd, parts[:-1])
    finally:
        os.close(root_fd)
    try:
        return open_regular(folder, parts[-1], relative)
    finally:
        os.close(folder)


def sha256_under(root: str, relative: str) -> str:
    """Return the sha256 of the regular file at *relative* below *root* (same refusals as open_under)."""
    fd = open_under(root, relative)
    try:
        return sha256_fd(fd)
    finally:
        os.close(fd)


def aside_name(path: str, label: str, stamp: str) -> str:
    """``<path>.<label>-<stamp>-<8 random hex>``: where a folder is moved aside in a parent another account
    owns (a name it could foresee, it could fill beforehand, and the rename would fail half-way)."""
    return f"{path}.{label}-{stamp}-{secrets.token_hex(4)}"


def temporary_name(prefix: str = ".lpse-restore-") -> str:
    """A name nobody can predict (128 random bits), for a file root creates in someone else's folder."""
    return prefix + secrets.token_hex(16)


@dataclass(frozen=True)
class Entry:
    """One non-directory found by :func:`walk`: its path relative to the root, its folder's fd, its lstat."""

    path: str
    dir_fd: int
    name: str
    info: os.stat_result


MAX_WALK_DEPTH = 64
"""Folders nested deeper than this are not entered by ``walk`` (and are reported): a documents store is a few
levels deep, and each level holds a descriptor open."""


def walk(root: str, skipped: list[dict] | None = None) -> Iterator[Entry]:
    """Every non-directory below the folder *root*, folder by folder in name order; directories entered only
    by descriptor (O_DIRECTORY | O_NOFOLLOW), iteratively (no recursion), at most MAX_WALK_DEPTH deep.

    A directory that cannot be entered (replaced by a link meanwhile, gone, too deep) is added to *skipped*
    with its reason. A missing *root* yields nothing; a *root* that is a link raises Unsafe. The Entry's
    ``dir_fd`` is only valid until the next item is asked for.
    """
    skipped = skipped if skipped is not None else []
    try:
        top = open_root(root)
    except FileNotFoundError:
        return
    stack: list[tuple[int, str, Iterator[str]]] = [(top, "", iter(()))]
    try:
        stack[0] = (top, "", iter(_names(top)))
        while stack:
            dir_fd, prefix, names = stack[-1]
            name = next(names, None)
            if name is None:
                stack.pop()
                os.close(dir_fd)
                continue
            path = f"{prefix}{name}"
            try:
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(info.st_mode):
                yield Entry(path, dir_fd, name, info)
                continue
            if len(stack) >= MAX_WALK_DEPTH:
                skipped.append({"path": path, "reason": f"nested deeper than {MAX_WALK_DEPTH} folders: not entered"})
                continue
            try:
                child = os.open(name, DIRECTORY, dir_fd=dir_fd)
            except OSError as error:
                skipped.append({"path": path, "reason": f"could not be entered safely ({error.strerror})"})
                continue
            stack.append((child, f"{path}/", iter(())))
            try:
                stack[-1] = (child, f"{path}/", iter(_names(child)))
            except OSError as error:
                stack.pop()
                os.close(child)
                skipped.append({"path": path, "reason": f"could not be listed ({error.strerror})"})
    finally:
        for dir_fd, _prefix, _names_left in stack:
            os.close(dir_fd)


def _names(dir_fd: int) -> list[str]:
    with os.scandir(dir_fd) as listing:
        return sorted(entry.name for entry in listing)


def chown_new_dir(path: str, uid: int, gid: int, mode: int) -> None:
    """Give the directory root just made at *path* to *uid*/*gid* with *mode*, by descriptor.

    Its parent may be the other account's (a data dir's parent is postgres's): the parent is opened by
    ``open_parent`` and the name with O_NOFOLLOW | O_DIRECTORY, and what was opened must still be root's
    and empty, so a link or another folder swapped in after the mkdir is refused (OSError), never chowned.
    """
    folder, name = open_parent(path)
    try:
        _chown_made(folder, name, path, uid, gid, mode)
    finally:
        os.close(folder)


def _chown_made(folder: int, name: str, path: str, uid: int, gid: int, mode: int) -> None:
    made = os.open(name, DIRECTORY, dir_fd=folder)
    try:
        if os.fstat(made).st_uid != 0 or os.listdir(made):
            raise OSError(f"{path} is no longer the empty folder root just made: refusing to chown it")
        os.fchown(made, uid, gid)
        os.fchmod(made, mode)
    finally:
        os.close(made)


def root_only(path: str) -> bool:
    """True when no account but root can replace *path* or any folder above it.

    Every component from / down is a real directory owned by root, and none is writable by group or
    others unless sticky (``/tmp``: there only an entry's owner may rename it, and the next one is root's).
    """
    current = "/"
    for name in [""] + [part for part in os.path.abspath(path).split("/") if part]:
        current = os.path.join(current, name) if name else current
        try:
            info = os.lstat(current)
        except OSError:
            return False
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0:
            return False
        if info.st_mode & 0o022 and not (info.st_mode & stat.S_ISVTX and current != os.path.abspath(path)):
            return False
    return True


def open_parent(path: str) -> tuple[int, str]:
    """Open the folder holding *path* from / one name at a time, never through a link; return (fd, name).

    Another account may own a folder on the way (postgres owns /var/lib/postgresql and its version
    folder on Debian) and could swap in a link to make root rename or create in a folder of its choice:
    that raises Unsafe. Once opened, the folder is the one worked in, whatever is renamed later. The
    caller closes the descriptor.
    """
    parts = [part for part in os.path.abspath(path).split("/") if part]
    if not parts:
        raise Unsafe("/ has no parent folder")
    top = os.open("/", DIRECTORY)
    try:
        return open_dirs(top, parts[:-1]), parts[-1]
    finally:
        os.close(top)


def rename_beside(path: str, new_path: str) -> None:
    """Rename *path* to *new_path* in the same folder, that folder opened by ``open_parent``."""
    if os.path.dirname(os.path.abspath(path)) != os.path.dirname(os.path.abspath(new_path)):
        raise ValueError(f"{new_path} is not beside {path}")
    folder, name = open_parent(path)
    try:
        os.rename(name, os.path.basename(new_path), src_dir_fd=folder, dst_dir_fd=folder)
    finally:
        os.close(folder)


def lexists_beside(path: str) -> bool:
    """Whether *path* exists (a link counts), looked up in its folder opened by ``open_parent``."""
    folder, name = open_parent(path)
    try:
        os.stat(name, dir_fd=folder, follow_symlinks=False)
        return True
    except FileNotFoundError:
        return False
    finally:
        os.close(folder)


def make_owned_dir(path: str, uid: int, gid: int, mode: int) -> None:
    """Make the directory *path* (its parent must exist) owned by *uid*/*gid* with *mode*, safely: in its
    parent opened by ``open_parent``, chowned by descriptor only while it is still root's and empty."""
    folder, name = open_parent(path)
    try:
        os.mkdir(name, 0o700, dir_fd=folder)
        _chown_made(folder, name, path, uid, gid, mode)
    finally:
        os.close(folder)


def remove_tree(path: str, timeout: float = 3600) -> None:
    """Remove the folder *path* and everything in it, never following a link, however deep it nests.

    ``shutil.rmtree`` recurses once per folder: a tree spse nested a thousand folders deep (restored from
    a snapshot into a scratch or staging folder) raised RecursionError, and the folder stayed. GNU ``rm``
    walks without recursion and does not follow links; ``--one-file-system`` keeps it off any mount.
    Raises OSError when the folder is still there afterwards.
    """
    if not os.path.lexists(path):
        return
    done = run(["rm", "-rf", "--one-file-system", "--", path], timeout=timeout, check=False, step="clean up")
    if os.path.lexists(path):
        raise OSError(f"could not remove {path}: {(done.stderr or '').strip()[-400:]}")


def unlink_quietly(name: str, dir_fd: int) -> None:
    with contextlib.suppress(OSError):
        os.unlink(name, dir_fd=dir_fd)
