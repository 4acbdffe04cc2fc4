"""The site tool's zipapp: deterministic, self-contained (stdlib + lpse_ops.site only), runnable."""

from __future__ import annotations

import ast
import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

from lpse_ops.site import build

SITE = Path(build.__file__).resolve().parent


def test_build_twice_is_byte_identical(tmp_path: Path):
    first, second = build.build(tmp_path / "a" / "lpse-backup"), build.build(tmp_path / "b" / "lpse-backup")
    assert first.read_bytes() == second.read_bytes()


def test_build_writes_an_executable_with_the_system_python_shebang(tmp_path: Path):
    out = build.build(tmp_path / "lpse-backup")
    assert out.read_bytes().startswith(b"#!/usr/bin/python3\n")
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
        assert {info.date_time for info in archive.infolist()} == {build.EPOCH}
    assert names[:2] == ["__main__.py", "lpse_ops/__init__.py"]
    assert "lpse_ops/site/cli.py" in names and "lpse_ops/site/build.py" not in names
    assert names[2:] == sorted(names[2:])


def test_build_script_runs_without_installing(tmp_path: Path):
    out = tmp_path / "tool"
    done = subprocess.run([sys.executable, "-I", str(SITE / "build.py"), "--out", str(out)], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == build.archive_bytes()


def test_zipapp_help_runs_isolated_without_site_packages(tmp_path: Path):
    out = build.build(tmp_path / "lpse-backup")
    done = subprocess.run([sys.executable, "-I", "-S", str(out), "--help"], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "run,list,status,verify,restore" in done.stdout


def test_zipapp_imports_every_module_isolated(tmp_path: Path):
    out = build.build(tmp_path / "lpse-backup")
    modules = sorted(f"lpse_ops.site.{p.stem}" for p in SITE.glob("*.py")
                     if p.stem not in ("__init__", "__main__", "build"))
    code = f"import sys; sys.path.insert(0, {str(out)!r}); import " + ", ".join(modules)
    done = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_zipapp_failure_is_one_json_object_with_a_code(tmp_path: Path):
    out = build.build(tmp_path / "lpse-backup")
    env = {**os.environ, "LPSE_BACKUP_CONFIG": str(tmp_path / "missing.json")}
    done = subprocess.run([sys.executable, "-I", "-S", str(out), "status"], capture_output=True, text=True,
                          env=env, check=False)
    result = json.loads(done.stdout)
    assert done.returncode == 1 and result["ok"] is False
    assert result["code"] == ("config_missing" if os.geteuid() == 0 else "not_root"), result
    assert result["error"] and result["step"]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module or "")
    return names


def test_site_package_imports_only_stdlib_and_itself():
    outside = {}
    for path in sorted(SITE.glob("*.py")):
        for name in imported_modules(path):
            top = name.split(".")[0]
            if not (name == "lpse_ops.site" or name.startswith("lpse_ops.site.") or top in sys.stdlib_module_names
                    or top == "__future__"):
                outside.setdefault(path.name, []).append(name)
    assert outside == {}
