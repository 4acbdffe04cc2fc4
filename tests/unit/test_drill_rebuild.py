"""The rebuild drills' pieces that need no host: a server-lost drill only on a lab site, and the bundle it
reinstalls: the release the site ran, found where the state store says bundles were used."""

from __future__ import annotations

import pytest

from lpse_ops.actions import drill_rebuild, drill_types
from lpse_ops.actions.operation import OperationRefused
from lpse_ops.state import StateStore


class NoShell:
    def run(self, script: str, timeout: float = 300.0, check: bool = True) -> str:
        raise AssertionError("nothing may run on the site")


def test_both_rebuild_scenarios_are_drill_scenarios():
    assert {"server-lost", "ransomware"} <= set(drill_types.SCENARIOS)


def test_server_lost_drill_refuses_a_site_outside_the_lab_before_touching_it():
    with pytest.raises(OperationRefused) as refused:
        drill_rebuild.server_lost("site1", NoShell(), {"lpse_environment": "staging"})
    assert "only the lab can do" in str(refused.value)


def record_install(store: StateStore, limit: str | None, bundle: str, result: str = "ok", check: bool = False) -> None:
    run_id = store.start_run("install", {"limit": limit, "bundle": bundle, "check": check}, ["site1", "site2"])
    store.finish_run(run_id, result)


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    """Signed reference bundles 1.0 and 1.1 in separate folders, the trusted key, and a foreign key's 1.1."""
    from lpse_ops import bundle, reference

    root = tmp_path_factory.mktemp("bundles")
    keys, trusted, foreign = root / "keys", root / "trusted", root / "foreign"
    for folder in (keys, trusted, foreign):
        folder.mkdir()
    bundle.keygen(keys / "release.key", trusted / "release.pub", "release key")
    bundle.keygen(foreign / "other.key", foreign / "other.pub", "someone else's key")
    made = {}
    for version in ("1.0", "1.1"):
        source = reference.build_reference_source(version, root / f"src-{version}")
        (root / version).mkdir()
        made[version] = bundle.build(source, keys / "release.key", root / version)
    (root / "forged").mkdir()
    made["forged"] = bundle.build(reference.build_reference_source("1.1", root / "src-forged"),
                                  foreign / "other.key", root / "forged")
    return {"root": root, "trusted": trusted, **made}


def test_the_bundle_reinstalled_is_the_release_the_site_runs_not_the_last_installed_one(signed, tmp_path,
                                                                                          monkeypatch):
    monkeypatch.setenv("LPSE_OPS_HOME", str(tmp_path))
    monkeypatch.delenv("LPSE_OPS_STATE_URL", raising=False)
    with StateStore.open() as store:
        record_install(store, None, str(signed["1.0"]))
        run_id = store.start_run("upgrade.plan", {"target": "1.1", "releases": str(signed["1.1"].parent)}, ["site1"])
        store.finish_run(run_id, "ok")
    # upgraded since its install: its database has 1.1's schema, which 1.0 refuses
    assert drill_rebuild.bundle_of("site1", "1.1", signed["trusted"]) == str(signed["1.1"])
    assert drill_rebuild.bundle_of("site1", "1.0", signed["trusted"]) == str(signed["1.0"])


def test_a_bundle_not_signed_by_a_trusted_key_is_never_chosen(signed, tmp_path, monkeypatch):
    monkeypatch.setenv("LPSE_OPS_HOME", str(tmp_path))
    monkeypatch.delenv("LPSE_OPS_STATE_URL", raising=False)
    with StateStore.open() as store:
        run_id = store.start_run("upgrade.plan", {"target": "1.1", "releases": str(signed["forged"].parent)},
                                 ["site1"])
        store.finish_run(run_id, "ok")
    with pytest.raises(OperationRefused) as refused:
        drill_rebuild.bundle_of("site1", "1.1", signed["trusted"])
    assert "runs SPSE 1.1, and no bundle of it signed by a key in" in str(refused.value)


class Readlink:
    def __init__(self, answer: str) -> None:
        self.answer, self.scripts = answer, []

    def run(self, script: str, timeout: float = 300.0, check: bool = True) -> str:
        self.scripts.append(script)
        return self.answer


def test_the_running_version_is_the_release_current_points_at():
    shell = Readlink("/srv/spse/releases/1.2\n")
    assert drill_rebuild.running_version(shell, {"site_spse_base_dir": "/srv/spse"}) == "1.2"
    assert shell.scripts == ["readlink -f /srv/spse/current"]
    with pytest.raises(OperationRefused) as refused:
        drill_rebuild.running_version(Readlink(""), {})
    assert "cannot tell which SPSE release the site runs (/opt/spse/current)" in str(refused.value)
