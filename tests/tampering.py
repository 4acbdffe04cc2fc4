"""Bundles made bad on purpose, shared by the unit and lab tests."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path


def tamper_jar(source: Path, target: Path) -> Path:
    """Write *source* to *target* (the same path is fine) with one byte of its jar changed; the signature
    stays the old one, so verification must fail on the jar's sha256."""
    with tarfile.open(source, "r:gz") as tar:
        members = [(info, tar.extractfile(info).read() if info.isreg() else None) for info in tar.getmembers()]
    with tarfile.open(target, "w:gz") as tar:
        for info, data in members:
            if info.name == "payload/lib/spse.jar":
                data = b"X" + data[1:]
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return target
