"""A cache of ``ansible-inventory --list`` output, keyed by everything that output depends on.

Ansible stays the one parser of inventories; this only spares re-running it (about 0.45 s of CPU each time
here) when nothing it reads has changed. The key is a sha256 over the content of every file Ansible reads
for the inventory (the file or folder given, and a file's ``group_vars/`` and ``host_vars/`` beside it), the
project's ``ansible.cfg``, the ansible-core version and the ``ANSIBLE_*`` environment Ansible runs with.

Nothing is cached when Ansible's output could change without those files changing, or would hold a secret
the files do not: an inventory plugin or script (a YAML file with a ``plugin:`` key, an executable file), or
any vault-encrypted content (its plaintext is decrypted into the output and must never reach a disk).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path

VAULT_MARK = b"$ANSIBLE_VAULT"
KEPT = 64
"""Cache entries kept (the newest); older ones are removed when one is written."""


def source_files(inventory: Path) -> list[Path] | None:
    """Return every file Ansible reads for *inventory*, sorted, or None when the output must not be cached
    (a dynamic source or vault content: module docstring). Missing paths give an empty list."""
    inventory = inventory.resolve()
    if inventory.is_dir():
        roots = [inventory]
    elif inventory.is_file():
        roots = [inventory, inventory.parent / "group_vars", inventory.parent / "host_vars"]
    else:
        return []
    files: list[Path] = []
    for root in roots:
        if root.is_file():
            files.append(root)
        elif root.is_dir():
            files += [path for path in root.rglob("*") if path.is_file()]
    for path in files:
        if path.stat().st_mode & stat.S_IXUSR:
            return None
    return sorted(files)


def _dynamic_or_vault(content: bytes) -> bool:
    if VAULT_MARK in content:
        return True
    return any(line.startswith((b"plugin:", b"plugin :")) for line in content.splitlines())


def key(inventory: Path, env: Mapping[str, str], extra: bytes = b"") -> str | None:
    """Return the cache key of *inventory* read with *env* (its ``ANSIBLE_*`` entries count), or None when
    its output must not be cached. *extra*: other bytes the output depends on (ansible.cfg, the version)."""
    files = source_files(inventory)
    if files is None:
        return None
    digest = hashlib.sha256(extra)
    digest.update(str(inventory.resolve()).encode())
    for name in sorted(name for name in env if name.startswith("ANSIBLE_")):
        digest.update(f"\0env {name}={env[name]}".encode())
    for path in files:
        content = path.read_bytes()
        if _dynamic_or_vault(content):
            return None
        digest.update(f"\0file {path}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()


def load(folder: Path, cache_key: str) -> dict | None:
    """Return the cached output under *cache_key*, or None (absent or unreadable: the caller runs Ansible)."""
    try:
        return json.loads((folder / f"{cache_key}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def store(folder: Path, cache_key: str, data: dict) -> None:
    """Keep *data* under *cache_key* (0600, written whole then renamed), and only the newest KEPT entries."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = folder / f".{cache_key}.{os.getpid()}.tmp"
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
    written = folder / f"{cache_key}.json"
    os.replace(partial, written)
    entries = []
    for path in folder.glob("*.json"):
        if path == written:
            continue
        try:
            entries.append((path.stat().st_mtime_ns, path))
        except FileNotFoundError:  # another process removed it
            continue
    for _, old in sorted(entries, reverse=True)[KEPT - 1:]:
        old.unlink(missing_ok=True)
