"""The documents a database references, against the files on disk: checked by sha256, and brought back
into place after a restore from wherever a file with the same hash is (the store is content-addressed,
so a matching sha256 is proof)."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass

from lpse_ops.site import safefs
from lpse_ops.site.errors import Failure

QUERY = ("SELECT id, encode(convert_to(sha256::text, 'UTF8'), 'hex'), encode(convert_to(stored_path, 'UTF8'), 'hex') "
         "FROM documents ORDER BY id;")
"""The text columns in hex: spse writes them, and a newline or a tab in a name would otherwise split one row
into two psql lines or four fields (psql's unaligned output cannot quote them)."""


@dataclass(frozen=True)
class Document:
    """One ``documents`` row: its id, the sha256 of its content and its path under the documents dir."""

    id: str
    sha256: str
    stored_path: str

    @property
    def label(self) -> str:
        return f"{self.id}:{self.stored_path}"


def parse_rows(rows: Iterable[str]) -> list[Document]:
    """Parse the ``id<TAB>hex(sha256)<TAB>hex(stored_path)`` lines :data:`QUERY` prints.

    A path's bytes are decoded as the file system's names are (``os.fsdecode``). Raises
    Failure(documents_unreadable) for a line of any other shape.
    """
    found = []
    for row in rows:
        fields = row.split("\t")
        try:
            if len(fields) != 3:
                raise ValueError(f"{len(fields)} fields")
            sha, stored = (bytes.fromhex(field.strip()) for field in fields[1:])
        except ValueError as error:
            raise Failure("documents_unreadable", f"a documents row could not be read ({error}): {row[:200]!r}",
                          step="documents") from None
        found.append(Document(fields[0].strip(), sha.decode("utf-8", "replace").strip(), os.fsdecode(stored)))
    return found


def sha256_file(path: str) -> str:
    """Return the sha256 of the file at *path* (a path root chose, not one under another account's folder)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _state(document: Document, root: str) -> tuple[str, str | None]:
    """Return (``ok`` | ``missing`` | ``mismatched`` | ``refused``, why) for *document*'s file under *root*.

    The file is reached by :mod:`safefs` (no link followed, only a regular file read): *root* is spse's.
    """
    try:
        found = safefs.sha256_under(root, document.stored_path)
    except FileNotFoundError:
        return "missing", None
    except safefs.Unsafe as refused:
        return "refused", refused.reason
    except OSError as error:
        return "refused", f"unreadable ({error.strerror or error})"
    return ("ok", None) if found == document.sha256 else ("mismatched", None)


def matches(document: Document, root: str) -> bool:
    """True when *document*'s file is a regular file under *root* with its sha256."""
    return _state(document, root)[0] == "ok"


def check(documents: list[Document], root: str) -> tuple[list[str], list[str]]:
    """Return (missing, mismatched) labels of the *documents* whose file under *root* is absent or differs.

    A document whose place holds no regular file (a link, a FIFO) or whose row names an unsafe path is
    missing, its label followed by the reason: ``"7:ab/doc (a symlink, not a regular file)"``.
    """
    missing, mismatched = [], []
    for document in documents:
        state, why = _state(document, root)
        if state == "missing":
            missing.append(document.label)
        elif state == "refused":
            missing.append(f"{document.label} ({_short(why, document.stored_path)})")
        elif state == "mismatched":
            mismatched.append(document.label)
    return missing, mismatched


def _short(reason: str | None, stored_path: str) -> str:
    """``ab/doc is a symlink, not ...`` -> ``a symlink, not ...`` (the label already names the path)."""
    reason = reason or "refused"
    for prefix in (f"{stored_path} is ", f"{stored_path.rsplit('/', 1)[-1]} is "):
        if reason.startswith(prefix):
            return reason[len(prefix):]
    return "unsafe document path" if reason.startswith("unsafe document path") else reason


def bring_back(documents: list[Document], source_root: str, root: str,
               skipped: list[dict] | None = None) -> list[Document]:
    """Copy into *root* each of *documents* found under *source_root* with its sha256; return those still absent.

    Both folders are spse's (the set-aside documents, or a restore of a snapshot of them), so nothing there
    is trusted (:mod:`safefs`): the row's path must be plain names, only a regular source file is read, no
    link is followed on either side, the copy is written under a random name (O_EXCL), hashed while it is
    written, given the documents dir's owner and the source's mode on its descriptor, and renamed into
    place (never half a file, and a link at the document's name is replaced, not followed). A document
    refused for any of these reasons is added to *skipped* as ``{"document": label, "reason": why}``.
    """
    skipped = skipped if skipped is not None else []
    still: list[Document] = []
    try:
        root_fd = safefs.open_root(root)
    except (safefs.Unsafe, OSError) as error:
        reason = error.reason if isinstance(error, safefs.Unsafe) else str(error)
        skipped.extend({"document": d.label, "reason": f"documents folder: {reason}"} for d in documents)
        return list(documents)
    try:
        owner = os.fstat(root_fd)
        for document in documents:
            try:
                placed = _bring_one(document, source_root, root_fd, owner)
            except safefs.Unsafe as refused:
                skipped.append({"document": document.label, "reason": refused.reason})
                placed = False
            except OSError as error:
                skipped.append({"document": document.label, "reason": f"could not be copied ({error})"})
                placed = False
            if not placed:
                still.append(document)
    finally:
        os.close(root_fd)
    return still


def _bring_one(document: Document, source_root: str, root_fd: int, owner: os.stat_result) -> bool:
    """Copy one document (see bring_back); return False when the source lacks it or its hash differs."""
    parts = safefs.relative_parts(document.stored_path)
    try:
        source = safefs.open_under(source_root, document.stored_path)
    except FileNotFoundError:
        return False
    try:
        if safefs.sha256_fd(source) != document.sha256:
            return False
        os.lseek(source, 0, os.SEEK_SET)
        info = os.fstat(source)
        folder_mode = stat.S_IMODE(owner.st_mode)
        folder = safefs.open_dirs(root_fd, parts[:-1], create=(owner.st_uid, owner.st_gid, folder_mode))
        try:
            return _copy_into(document, source, info, folder, parts[-1], owner)
        finally:
            os.close(folder)
    finally:
        os.close(source)


def _copy_into(document: Document, source: int, info: os.stat_result, folder: int, name: str,
               owner: os.stat_result) -> bool:
    temporary = safefs.temporary_name()
    out = os.open(temporary, safefs.NEW_FILE, 0o600, dir_fd=folder)
    try:
        digest = hashlib.sha256()
        while block := os.read(source, safefs.BLOCK):
            digest.update(block)
            view = memoryview(block)
            while view:
                view = view[os.write(out, view):]
        if digest.hexdigest() != document.sha256:  # changed between the check and the copy
            safefs.unlink_quietly(temporary, folder)
            return False
        os.fchown(out, owner.st_uid, owner.st_gid)
        os.fchmod(out, stat.S_IMODE(info.st_mode) & 0o777)
        os.utime(out, ns=(info.st_atime_ns, info.st_mtime_ns))
        os.rename(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
        return True
    except BaseException:
        safefs.unlink_quietly(temporary, folder)
        raise
    finally:
        os.close(out)
