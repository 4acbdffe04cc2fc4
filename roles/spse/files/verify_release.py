#!/usr/bin/python3
"""Check an unpacked SPSE release directory against the manifest.json of its bundle.

Usage: verify_release.py RELEASE_DIR BUNDLE_TARBALL

Every file listed in manifest.json must exist with the listed sha256, size and mode, and the
directory must hold no other files. Prints a JSON summary; exits 1 listing every mismatch.
"""

import hashlib
import json
import os
import stat
import sys
import tarfile


def main():
    root, bundle = sys.argv[1], sys.argv[2]
    with tarfile.open(bundle, "r:gz") as archive:
        member = archive.getmember("manifest.json")
        manifest = json.load(archive.extractfile(member))
    problems = []
    listed = set()
    for entry in manifest.get("files", []):
        rel = os.path.normpath(entry["path"])
        if rel.startswith("..") or os.path.isabs(rel):
            problems.append("unsafe path in manifest: {}".format(entry["path"]))
            continue
        listed.add(rel)
        path = os.path.join(root, rel)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            problems.append(f"missing: {rel}")
            continue
        if not stat.S_ISREG(info.st_mode):
            problems.append(f"not a regular file: {rel}")
            continue
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != entry["sha256"]:
            problems.append(f"sha256 mismatch: {rel}")
        if "size" in entry and info.st_size != int(entry["size"]):
            problems.append(f"size mismatch: {rel} ({info.st_size}, manifest {entry['size']})")
        if "mode" in entry:
            want = int(entry["mode"], 8) if isinstance(entry["mode"], str) else int(entry["mode"])
            if stat.S_IMODE(info.st_mode) != want:
                problems.append(f"mode mismatch: {rel} ({stat.S_IMODE(info.st_mode):o}, manifest {want:o})")
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            if rel not in listed:
                problems.append(f"not in manifest: {rel}")
    print(json.dumps({"release": root, "version": manifest.get("version"), "files": len(listed), "problems": problems}))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
