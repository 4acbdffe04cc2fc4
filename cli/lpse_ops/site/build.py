"""Build the site tool into one deterministic zipapp: ``python3 cli/lpse_ops/site/build.py --out PATH``.

The archive holds ``__main__.py``, ``lpse_ops/__init__.py`` and ``lpse_ops/site/*.py`` (not this
builder), stored uncompressed in name order with a fixed timestamp and mode, after a
``#!/usr/bin/python3`` line: the same sources give a byte-identical file, so the role's copy reports
no change when nothing changed. Standard library only; runs without installing lpse-ops.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import zipfile
from pathlib import Path

SHEBANG = b"#!/usr/bin/python3\n"
EPOCH = (1980, 1, 1, 0, 0, 0)
SITE = Path(__file__).resolve().parent
PACKAGE = SITE.parent
SKIP = {"build.py"}


def members(site: Path = SITE) -> list[tuple[str, Path]]:
    """Return (name in the archive, source file) pairs, in the order they are written."""
    files = [("__main__.py", site / "__main__.py"), ("lpse_ops/__init__.py", site.parent / "__init__.py")]
    files += [(f"lpse_ops/site/{path.name}", path) for path in sorted(site.glob("*.py")) if path.name not in SKIP]
    return files


def archive_bytes(site: Path = SITE) -> bytes:
    """Return the zipapp's bytes: shebang, then the zip of ``members``."""
    with tempfile.TemporaryFile() as buffer:
        buffer.write(SHEBANG)
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
            for name, source in members(site):
                info = zipfile.ZipInfo(name, date_time=EPOCH)
                info.external_attr = 0o100644 << 16
                info.create_system = 3
                archive.writestr(info, source.read_bytes())
        buffer.seek(0)
        return buffer.read()


def build(out: Path, site: Path = SITE) -> Path:
    """Write the zipapp to *out* (mode 0755, atomically); return *out*."""
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.tmp")
    temporary.write_bytes(archive_bytes(site))
    os.chmod(temporary, 0o755)  # noqa: S103 (an executable, like any tool in /usr/local/sbin)
    os.replace(temporary, out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the lpse-backup zipapp.")
    parser.add_argument("--out", required=True, type=Path, help="where to write the zipapp")
    args = parser.parse_args(argv)
    print(build(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
