"""The nginx role's acme decisions (roles/nginx/vars/main.yml), evaluated by Ansible itself: when certbot is asked
for a certificate again, and which certificate the site file names.

A renewal configuration recorded from certbot 2.1.0 in the lab (``tests/fixtures/acme/renewal-site1.conf``) is what
``tasks/acme.yml`` reads on a site; each case sets what that task and the stat would have registered.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lpse_ops import config

pytestmark = pytest.mark.clock_free("the role's decision runs in ansible-playbook, a subprocess on the real clock")

ROLE = config.PROJECT_DIR / "roles" / "nginx"
RECORDED = (config.PROJECT_DIR / "tests" / "fixtures" / "acme" / "renewal-site1.conf").read_text()
PEBBLE = "https://offsite/dir"
LIVE = "/etc/letsencrypt/live/site1"

# name, mode, directory URL, server names, lineage on disk (renewal configuration or None) -> needs issue, served
CASES = [
    ("first run", "acme", PEBBLE, ["site1"], None, True, "/etc/nginx/tls/spse.crt"),
    ("lineage as asked", "acme", PEBBLE, ["site1"], RECORDED, False, f"{LIVE}/fullchain.pem"),
    ("another directory", "acme", "https://acme-v02.api.letsencrypt.org/directory", ["site1"], RECORDED, True,
     f"{LIVE}/fullchain.pem"),
    ("a name added", "acme", PEBBLE, ["site1", "www.site1"], RECORDED, True, f"{LIVE}/fullchain.pem"),
    ("back to lab", "lab", PEBBLE, ["site1"], RECORDED, False, "/etc/nginx/tls/spse.crt"),
    ("provided", "provided", PEBBLE, ["site1"], None, False, "/etc/nginx/tls/spse.crt"),
]


@pytest.fixture(scope="module")
def decisions(tmp_path_factory) -> dict[str, dict]:
    """Run one local playbook over every case; return case name -> {needs, cert, key}."""
    folder = tmp_path_factory.mktemp("acme-vars")
    items = [{"name": name, "mode": mode, "url": url, "names": names,
              "conf": {"content": base64.b64encode(conf.encode()).decode()} if conf else {"failed": True},
              "live": {"stat": {"exists": conf is not None}}}
             for name, mode, url, names, conf, *_ in CASES]
    play = [{"hosts": "localhost", "gather_facts": False,
             "vars_files": [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "main.yml")],
             "vars": {"site_tls_mode": "lab", "site_spse_url": "http://127.0.0.1:1"},
             "tasks": [{"name": "Decide", "ansible.builtin.copy": {
                 "dest": f"{folder}/{{{{ loop_index }}}}.json", "mode": "0644",
                 "content": "{{ {'case': item.name, 'needs': __nginx_acme_needs_issue | bool, "
                            "'cert': __nginx_served_cert, 'key': __nginx_served_key} | to_json }}"},
                 "loop": items, "loop_control": {"label": "{{ item.name }}", "index_var": "loop_index"},
                 "vars": {"nginx_tls_mode": "{{ item.mode }}", "nginx_acme_directory_url": "{{ item.url }}",
                          "nginx_server_names": "{{ item.names }}", "__nginx_acme_conf": "{{ item.conf }}",
                          "__nginx_acme_live": "{{ item.live }}"}}]}]
    playbook = folder / "decide.yml"
    playbook.write_text(yaml.safe_dump(play, sort_keys=False))
    env = {**os.environ, "ANSIBLE_LOCALHOST_WARNING": "false", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false"}
    done = subprocess.run([str(Path(sys.executable).with_name("ansible-playbook")), "-i", "localhost,", "-c", "local",
                           str(playbook)], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    decided = [json.loads((folder / f"{index}.json").read_text()) for index in range(len(CASES))]
    return {decision["case"]: decision for decision in decided}


@pytest.mark.parametrize(("name", "needs", "cert"), [(c[0], c[5], c[6]) for c in CASES], ids=[c[0] for c in CASES])
def test_nginx_acme_decision_per_case(decisions, name, needs, cert):
    decision = decisions[name]
    assert decision["needs"] is needs, decision
    assert decision["cert"] == cert, decision
    assert decision["key"] == cert.replace("fullchain.pem", "privkey.pem").replace("spse.crt", "spse.key"), decision
