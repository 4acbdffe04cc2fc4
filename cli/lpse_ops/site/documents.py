"""The documents a database references, against the files on disk: checked by sha256, and brought back
into place after a restore from wherever a file with the same hash is (the store is content-addressed,
so a matching sha256 is proof)."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass

QUERY = "SELECT id, sha256, stored_path FROM documents ORDER BY id;"


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
    """Parse psql's ``id<TAB>sha256<TAB>stored_path`` lines."""
    found = []
    for row in rows:
        doc_id, sha, stored = row.split("\t")
        found.append(Document(doc_id.strip(), sha.strip(), stored.strip()))
    return found


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def matches(document: Document, root: str) -> bool:
    """True when *document*'s file is under *root* with its sha256."""
    path = os.path.join(root, document.stored_path)
    return os.path.isfile(path) and sha256_file(path) == document.sha256


def check(documents: list[Document], root: str) -> tuple[list[str], list[str]]:
    """Return (missing, mismatched) labels of the *documents* whose file under *root* is absent or differs."""
    missing, mismatched = [], []
    for document in documents:
        path = os.path.join(root, document.stored_path)
        if not os.path.isfile(path):
            missing.append(document.label)
        elif sha256_file(path) != document.sha256:
            mismatched.append(document.label)
    return missing, mismatched


def bring_back(documents: list[Document], source_root: str, root: str) -> list[Document]:
    """Copy into *root* each of *documents* found under *source_root* with its sha256; return those still absent.

    The copy keeps the owner and mode of the documents dir, and lands by rename (never half a file).
    """
    owner = os.stat(root)
    still = []
    for document in documents:
        source = os.path.join(source_root, document.stored_path)
        if not matches(document, source_root):
            still.append(document)
            continue
        target = os.path.join(root, document.stored_path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.chown(os.path.dirname(target), owner.st_uid, owner.st_gid)
        shutil.copy2(source, target + ".lpse-restore")
        os.chown(target + ".lpse-restore", owner.st_uid, owner.st_gid)
        os.replace(target + ".lpse-restore", target)
    return still
