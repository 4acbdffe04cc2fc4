"""The lab session's order (tests/lab/conftest.py): modules that change a lab host for good run late, and the
secrets scan runs after every module that used the lab's secrets; CI's two streams split the modules between
them, each keeping that order."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.lab import conftest as lab_conftest


class Item:
    def __init__(self, path: Path) -> None:
        self.fspath, self.markers = path, []

    def add_marker(self, marker) -> None:
        self.markers.append(marker)


def collected(stream: str = "all") -> list[str]:
    """The lab modules in the order the session runs them under ``--lab-stream STREAM``."""
    lab = Path(lab_conftest.__file__).parent
    items = [Item(lab / name) for name in sorted(path.name for path in lab.glob("test_*.py"))]
    dropped: list = []
    config = SimpleNamespace(getoption=lambda name: stream,
                             hook=SimpleNamespace(pytest_deselected=lambda items: dropped.extend(items)))
    lab_conftest.pytest_collection_modifyitems(config, items)
    assert not set(map(id, items)) & set(map(id, dropped))
    return [Path(str(item.fspath)).name for item in items]


def test_lab_modules_run_late_modules_last_and_the_secrets_scan_after_all():
    lab = Path(lab_conftest.__file__).parent
    modules = sorted(path.name for path in lab.glob("test_*.py"))
    order = collected()
    assert order[-1] == "test_secrets.py", order
    late = list(lab_conftest.LATE_MODULES)
    assert order[-len(late):] == late and "test_upgrade.py" in order[:-len(late)], order
    assert set(late) <= set(modules)  # a renamed module would silently drop out of the late order


@pytest.mark.parametrize("stream", ["a", "b"])
def test_each_stream_keeps_the_order_and_ends_with_its_own_secrets_scan(stream):
    order = collected(stream)
    assert order[-1] == "test_secrets.py" and order.count("test_secrets.py") == 1, order
    everything = collected()
    assert order == [name for name in everything if name in order], order  # the same order, a part of it


def test_the_two_streams_run_every_module_once_but_the_secrets_scan_in_both():
    a, b = collected("a"), collected("b")
    assert set(a) & set(b) == {"test_secrets.py"}
    assert sorted(set(a) | set(b)) == sorted(collected())
    assert set(lab_conftest.STREAM_B) <= set(collected())  # a renamed module would silently leave stream b
