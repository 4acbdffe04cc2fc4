"""Host-free parts of the lab: layout, port checks, mirror discovery, image naming, clear errors."""

from __future__ import annotations

import socket

import pytest

from lpse_ops.backends import docker
from lpse_ops.lab import image
from lpse_ops.lab import lab as lab_actions


def test_plan_lays_out_ports_from_the_base():
    plan = lab_actions.plan(sites=2, port_base=3000, name="x")
    by_name = {h.name: h for h in plan.hosts}
    assert by_name["offsite"].ssh_port == 3000 and by_name["offsite"].s3_port == 3100
    assert by_name["site2"].ssh_port == 3002 and by_name["site2"].https_port == 3102
    assert by_name["site1"].site_code == "lab01" and plan.container("site1") == "x-site1"


@pytest.mark.parametrize("sites, port_base", [(0, 2220), (31, 2220), (3, 80)])
def test_plan_rejects_bad_sizes_with_a_message(sites, port_base):
    with pytest.raises(lab_actions.LabError, match="must be between"):
        lab_actions.plan(sites=sites, port_base=port_base)


def test_check_ports_names_the_busy_port_and_what_to_do():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        host = lab_actions.HostSpec("site1", "site", busy)
        with pytest.raises(lab_actions.LabError) as caught:
            lab_actions.check_ports([host])
    assert str(busy) in str(caught.value) and "--port-base" in str(caught.value)


def test_debian_sources_read_from_deb822(tmp_path, monkeypatch):
    monkeypatch.delenv("LPSE_OPS_DEBIAN_MIRROR", raising=False)
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n")
    mirror, text = image.debian_sources(tmp_path)
    assert mirror == "http://mirror.example/debian"
    assert "debian-security" in text


def test_debian_sources_missing_says_what_to_set(tmp_path, monkeypatch):
    monkeypatch.delenv("LPSE_OPS_DEBIAN_MIRROR", raising=False)
    with pytest.raises(RuntimeError, match="LPSE_OPS_DEBIAN_MIRROR"):
        image.debian_sources(tmp_path)


def test_image_tag_follows_the_recipe(monkeypatch):
    first = image.image_tag()
    assert first == image.image_tag() and first.startswith("lpse-ops-base:")
    monkeypatch.setattr(image, "PACKAGES", (*image.PACKAGES, "vim"))
    assert image.image_tag() != first


def test_the_image_downloads_every_package_a_role_installs(tmp_path, monkeypatch):
    import yaml

    from lpse_ops.config import PROJECT_DIR

    packages = image.role_packages()
    roles = PROJECT_DIR / "roles"
    for vars_file in roles.glob("*/vars/main.yml"):  # each role's own list, read here without the helper
        role = vars_file.parent.parent.name
        for name in yaml.safe_load(vars_file.read_text()).get(f"__{role}_packages") or []:
            assert name.replace("{{ postgresql_version }}", "15") in packages, (role, name)
    assert {"postgresql-15", "pgbackrest", "restic", "nginx", "certbot", "openjdk-17-jre-headless",
            "aide"} <= set(packages)
    # and the lab's own: pebble, the offsite host's ACME CA (not a role's: no site installs it)
    assert "pebble" not in packages and image.LAB_DOWNLOADS == ("pebble",)
    assert image.recipe()["downloaded"] == [*packages, "pebble"]
    first = image.image_tag()
    monkeypatch.setattr(image, "role_packages", lambda: [*packages, "vim"])  # a role that installs one more
    assert image.image_tag() != first


def test_a_role_package_the_image_cannot_name_is_refused(tmp_path):
    (tmp_path / "site" / "defaults").mkdir(parents=True)
    (tmp_path / "site" / "defaults" / "main.yml").write_text('site_pg_version: "15"\n')
    (tmp_path / "web" / "vars").mkdir(parents=True)
    (tmp_path / "web" / "vars" / "main.yml").write_text('__web_packages: ["nginx", "php{{ php_version }}"]\n')
    with pytest.raises(RuntimeError, match=r"php\{\{ php_version \}\}"):
        image.role_packages(tmp_path)


def test_missing_docker_client_says_how_to_install(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(docker.DockerError, match="docker.io"):
        docker.docker_binary()


def test_status_without_a_lab_says_how_to_start(tmp_path, monkeypatch):
    monkeypatch.setenv("LPSE_OPS_HOME", str(tmp_path))
    report = lab_actions.status()
    assert report["up"] is False and "lpse-ops lab up" in report["message"]


def test_pebble_validates_http01_on_the_sites_real_port_and_issues_for_at_most_90_days():
    config = lab_actions.pebble_config("/etc/pebble/offsite.crt", "/etc/pebble/offsite.key")["pebble"]
    assert config["listenAddress"] == "0.0.0.0:443"  # a hardened site may reach 80 and 443 only
    assert lab_actions.ACME_DIRECTORY_URL == "https://offsite/dir"
    assert config["managementListenAddress"] == f"0.0.0.0:{lab_actions.ACME_MANAGEMENT_PORT}"
    assert config["httpPort"] == 80
    assert config["certificate"] == "/etc/pebble/offsite.crt" and config["privateKey"] == "/etc/pebble/offsite.key"
    # pebble 2.4.0's own default is five years
    assert config["certificateValidityPeriod"] == 90 * 86400


def test_pebble_unit_never_skips_validation():
    unit = lab_actions.pebble_unit()
    assert "PEBBLE_VA_ALWAYS_VALID" not in unit
    assert "ExecStart=/usr/bin/pebble -config /etc/pebble/pebble.json" in unit


def test_acme_site_vars_point_at_pebble_through_the_lab_ca():
    assert lab_actions.acme_site_vars("/home/x/lab/tls/ca.crt") == {
        "nginx_acme_directory_url": "https://offsite/dir", "nginx_acme_email": "acme@lkpp.lab.test",
        "nginx_acme_ca_cert": "/home/x/lab/tls/ca.crt"}


def test_write_inventory_refuses_an_unknown_tls_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("LPSE_OPS_HOME", str(tmp_path))
    with pytest.raises(lab_actions.LabError, match="--tls-mode must be one of lab, acme"):
        lab_actions.write_inventory(lab_actions.plan(1, 2220, "x"), {}, tls_mode="provided")
