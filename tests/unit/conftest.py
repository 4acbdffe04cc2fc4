"""Every unit test gets its own LPSE_OPS_HOME, so none reads or writes the operator's real one."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def lpse_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("LPSE_OPS_HOME", str(home))
    monkeypatch.delenv("LPSE_OPS_STATE_URL", raising=False)
    monkeypatch.delenv("LPSE_OPS_INVENTORY", raising=False)
    monkeypatch.setenv("LPSE_OPS_ACTOR", "tester@control")
    return home
