"""The AIDE baseline refresh at the end of lpse-ops's own changes (site/integrity.py; issue 21, clause 6.2.19)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from lpse_ops.site import integrity
from lpse_ops.site.errors import Failure


@pytest.mark.parametrize(("paths", "below", "expected"), [
    (["/etc/ssh"], True, r"^(?:/etc/ssh)(?:/|$)"),
    (["/etc/spse/", "/etc/nginx", "/etc/nginx"], True, r"^(?:/etc/nginx|/etc/spse)(?:/|$)"),
    (["/usr/bin/yes", "/etc/security/pwquality.conf"], False, r"^(?:/etc/security/pwquality\.conf|/usr/bin/yes)$"),
    (["/etc/a+b (1)"], False, r"^(?:/etc/a\+b\ \(1\))$"),
    (["/", "/etc"], True, "^/"),
])
def test_limit_regex_given_paths_matches_them_and_escapes_the_rest(paths, below, expected):
    assert integrity.limit_regex(paths, below=below) == expected


def test_limit_regex_below_matches_the_folder_and_its_entries_but_not_a_sibling_prefix():
    pattern = re.compile(integrity.limit_regex(["/etc/ssh"], below=True))
    assert pattern.match("/etc/ssh") and pattern.match("/etc/ssh/sshd_config")
    assert not pattern.match("/etc/sshd-other") and not pattern.match("/var/etc/ssh")
    exact = re.compile(integrity.limit_regex(["/usr/bin/yes"], below=False))
    assert exact.match("/usr/bin/yes") and not exact.match("/usr/bin/yes2") and not exact.match("/usr/bin")


@pytest.mark.parametrize("paths", [[], ["etc/ssh"], ["/etc/a\nb"]])
def test_limit_regex_given_no_or_a_relative_path_refuses(paths):
    with pytest.raises(ValueError, match="path"):
        integrity.limit_regex(paths, below=True)


def _lstat(times: dict[str, float]):
    def lstat(path: str):
        if path not in times:
            raise FileNotFoundError(path)
        return SimpleNamespace(st_ctime=times[path])
    return lstat


def test_split_by_time_accepts_only_what_was_stamped_during_the_change():
    found = {"added": ["/etc/new.conf", "/usr/bin/planted"], "removed": ["/etc/gone/old.conf", "/etc/older"],
             "changed": ["/etc/security/pwquality.conf", "/usr/bin/yes", "/etc/vanished"]}
    times = {"/etc/new.conf": 1000.0, "/usr/bin/planted": 500.0, "/etc/gone": 1001.0, "/etc": 10.0,
             "/etc/security/pwquality.conf": 1000.0, "/usr/bin/yes": 999.9}
    accepted, left = integrity.split_by_time(found, since=1000.0, lstat=_lstat(times))
    assert accepted == {"added": ["/etc/new.conf"], "removed": ["/etc/gone/old.conf"],
                        "changed": ["/etc/security/pwquality.conf"]}
    assert left == ["/etc/older", "/etc/vanished", "/usr/bin/planted", "/usr/bin/yes"]


class FakeAide:
    """Stands for ``_aide``: answers with *found*, records each call, writes the new database on update."""

    def __init__(self, database: str, found: dict[str, list[str]]):
        self.database, self.found, self.calls = database, found, []

    def __call__(self, mode: str, conf: str, regex: str | None, timeout: float = 900):
        self.calls.append((mode, regex))
        if mode == "update":
            with open(self.database + ".new", "w", encoding="utf-8") as handle:
                handle.write("new database")
        return (1 if any(self.found.values()) else 0), self.found


def _aide_files(tmp_path):
    conf, database = tmp_path / "aide.conf", tmp_path / "aide.db"
    conf.write_text("conf")
    database.write_text("old database")
    return str(conf), str(database)


def test_refresh_updates_exactly_the_paths_this_change_touched(tmp_path, monkeypatch):
    conf, database = _aide_files(tmp_path)
    mine, theirs = str(tmp_path / "mine.conf"), str(tmp_path / "theirs")
    fake = FakeAide(database, {"added": [], "removed": [], "changed": [mine, theirs]})
    monkeypatch.setattr(integrity, "_aide", fake)
    monkeypatch.setattr(integrity, "stamped_since", lambda path, kind, since, lstat=os.lstat: path == mine)
    record = integrity.refresh(["/etc/ssh"], 1000.0, conf, database)
    assert record["refreshed"] is True and record["accepted"]["changed"] == [mine]
    assert record["left"] == [theirs]
    assert fake.calls == [("check", r"^(?:/etc/ssh)(?:/|$)"), ("update", f"^(?:{re.escape(mine)})$")]
    assert Path(database).read_text(encoding="utf-8") == "new database" and not os.path.exists(database + ".new")


def test_refresh_with_nothing_of_its_own_leaves_the_database_alone(tmp_path, monkeypatch):
    conf, database = _aide_files(tmp_path)
    fake = FakeAide(database, {"added": ["/usr/bin/planted"], "removed": [], "changed": []})
    monkeypatch.setattr(integrity, "_aide", fake)
    record = integrity.refresh([], 2e9, conf, database)  # since: far in the future, nothing is this change's
    assert record["ran"] is True and record["refreshed"] is False and record["left"] == ["/usr/bin/planted"]
    assert fake.calls == [("check", None)]
    assert Path(database).read_text(encoding="utf-8") == "old database"


def test_refresh_on_a_site_without_aide_does_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(integrity, "_aide", lambda *args, **kwargs: pytest.fail("AIDE must not run"))
    record = integrity.refresh([], 0.0, str(tmp_path / "aide.conf"), str(tmp_path / "aide.db"))
    assert record["ok"] is True and record["ran"] is False and "not hardened" in record["reason"]


def test_refresh_when_aide_fails_raises_and_keeps_the_database(tmp_path, monkeypatch):
    conf, database = _aide_files(tmp_path)
    script = tmp_path / "aide"
    script.write_text("#!/bin/sh\necho 'cannot open database' >&2\nexit 17\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    with pytest.raises(Failure, match="exited 17"):
        integrity.refresh([], 0.0, conf, database)
    assert Path(database).read_text(encoding="utf-8") == "old database"


def test_aide_reads_the_json_report_of_a_real_aide_command_line(tmp_path, monkeypatch):
    script = tmp_path / "aide"
    script.write_text("#!/bin/sh\necho \"$@\" > " + str(tmp_path / "argv") + "\n"
                      "printf '{\"outline\": \"AIDE found differences\", \"changed\": {\"/usr/bin/yes\": {}}}'\n"
                      "exit 4\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    code, found = integrity._aide("update", "/etc/aide/aide.conf", "^(?:/usr/bin/yes)$")
    assert (code, found) == (4, {"added": [], "removed": [], "changed": ["/usr/bin/yes"]})
    assert (tmp_path / "argv").read_text().split() == ["--update", "--config=/etc/aide/aide.conf",
                                                       "--limit=^(?:/usr/bin/yes)$"]
