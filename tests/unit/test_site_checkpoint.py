"""The site tool's upgrade checkpoint: the documents fingerprint, names, and the rollback restore's arguments."""

from __future__ import annotations

from pathlib import Path

import pytest

from lpse_ops.site import checkpoint
from lpse_ops.site.errors import Failure


def _tree(root: Path) -> None:
    (root / "ab").mkdir(parents=True)
    (root / "ab" / "one").write_bytes(b"first document")
    (root / "cd").mkdir()
    (root / "cd" / "two").write_bytes(b"second document")


def test_fingerprint_changes_with_any_byte_name_or_file_and_not_otherwise(tmp_path: Path) -> None:
    _tree(tmp_path / "a")
    _tree(tmp_path / "b")
    first = checkpoint.documents_fingerprint(str(tmp_path / "a"))
    assert first["files"] == 2 and first["bytes"] == len(b"first document") + len(b"second document")
    assert checkpoint.documents_fingerprint(str(tmp_path / "b"))["sha256"] == first["sha256"]
    (tmp_path / "b" / "cd" / "two").write_bytes(b"second documenT")
    assert checkpoint.documents_fingerprint(str(tmp_path / "b"))["sha256"] != first["sha256"]
    (tmp_path / "b" / "cd" / "two").write_bytes(b"second document")
    (tmp_path / "b" / "cd" / "two").rename(tmp_path / "b" / "cd" / "three")
    assert checkpoint.documents_fingerprint(str(tmp_path / "b"))["sha256"] != first["sha256"]
    (tmp_path / "b" / "cd" / "three").rename(tmp_path / "b" / "cd" / "two")
    (tmp_path / "b" / "extra").write_bytes(b"")
    moved = checkpoint.documents_fingerprint(str(tmp_path / "b"))
    assert moved["files"] == 3 and set(moved["entries"]) - set(first["entries"]) == {
        "extra e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}


@pytest.mark.parametrize("name", ["", "../etc", "a b", "x;rm", "-rf"])
def test_checkpoint_names_are_plain(name: str) -> None:
    with pytest.raises(Failure) as raised:
        checkpoint.checked_name(name)
    assert raised.value.code == "bad_argument"


def test_rollback_restores_the_set_to_its_restore_point_on_the_live_timeline() -> None:
    label = "20261128-101010F_20261128-111111I"
    args = checkpoint.rollback_to_point_args(label, f"lpse-{label}")
    assert "--set=20261128-101010F_20261128-111111I" in args and "--type=name" in args
    assert "--target=lpse-20261128-101010F_20261128-111111I" in args
    assert "--target-timeline=current" in args and "--target-action=promote" in args
    assert not any(a.startswith("--archive-mode") or a.startswith("--pg1-path") for a in args)
