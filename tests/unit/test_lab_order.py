"""The lab session's order (tests/lab/conftest.py): modules that change a lab host for good run late, and the
secrets scan runs after every module that used the lab's secrets."""

from __future__ import annotations

from pathlib import Path

from tests.lab import conftest as lab_conftest


class Item:
    def __init__(self, path: Path) -> None:
        self.fspath, self.markers = path, []

    def add_marker(self, marker) -> None:
        self.markers.append(marker)


def test_lab_modules_run_late_modules_last_and_the_secrets_scan_after_all():
    lab = Path(lab_conftest.__file__).parent
    modules = sorted(path.name for path in lab.glob("test_*.py"))
    items = [Item(lab / name) for name in modules]
    lab_conftest.pytest_collection_modifyitems(items)
    order = [Path(str(item.fspath)).name for item in items]
    assert order[-1] == "test_secrets.py", order
    late = list(lab_conftest.LATE_MODULES)
    assert order[-len(late):] == late and "test_upgrade.py" in order[:-len(late)], order
    assert set(late) <= set(modules)  # a renamed module would silently drop out of the late order
