"""Lab traffic, host-free: the agent against a local HTTP server (keep-alive, read-only, learning document
ids), its request plan and bounds, and the control side's site choice and unit."""

from __future__ import annotations

import http.server
import threading
import time

import pytest

from lpse_ops.lab import traffic, traffic_agent
from lpse_ops.lab.lab import LabError


class FakeSpse(http.server.BaseHTTPRequestHandler):
    """Answers like SPSE: /tenders lists, /documents/1 and /2 exist, anything else is 404."""

    protocol_version = "HTTP/1.1"  # keep-alive
    seen: list[tuple[str, str]] = []
    connections: set[int] = set()

    def do_GET(self):  # noqa: N802 (http.server's name)
        FakeSpse.seen.append(("GET", self.path))
        FakeSpse.connections.add(id(self.connection))
        if self.path.startswith("/tenders"):
            body = b'[{"id": 1, "code": "T-1"}]'
        elif self.path in ("/documents/1", "/documents/2"):
            body = b"x" * 100
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # noqa: N802
        FakeSpse.seen.append(("POST", self.path))

    def log_message(self, *_args):
        pass


@pytest.fixture
def fake_spse():
    FakeSpse.seen, FakeSpse.connections = [], set()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeSpse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_agent_sends_read_only_requests_on_one_keep_alive_connection_and_learns_documents(fake_spse, tmp_path,
                                                                                          monkeypatch):
    monkeypatch.setattr(traffic_agent, "PROBE_EVERY", 2)
    state = tmp_path / "state.json"
    counts = traffic_agent.run(rate=50, base_url=fake_spse, state_path=str(state), max_requests=40)
    assert counts["requests"] == 40 and counts["transport_errors"] == 0
    assert {method for method, _path in FakeSpse.seen} == {"GET"}
    assert len(FakeSpse.connections) == 1 and counts["connections"] == 1
    paths = [path for _method, path in FakeSpse.seen]
    assert "/tenders?limit=20" in paths and "/documents/1" in paths and "/documents/2" in paths
    assert counts["documents_known"] == 2 and counts["by_status"]["4xx"] == traffic_agent.PROBE_MISSES
    assert state.exists() and '"requests": 40' in state.read_text()


def test_agent_keeps_its_pace(fake_spse):
    started = time.monotonic()
    traffic_agent.run(rate=20, base_url=fake_spse, state_path=None, max_requests=10)
    assert 0.4 <= time.monotonic() - started < 2.0  # 10 requests at 20/s: about half a second


@pytest.mark.parametrize("url", ["https://example.org", "http://10.0.0.5", "ftp://127.0.0.1"])
def test_agent_refuses_anything_but_this_hosts_nginx(url):
    with pytest.raises(SystemExit, match="refusing"):
        traffic_agent.connection_factory(url)


@pytest.mark.parametrize("rate", [0, -1, 50.5, 1000])
def test_rate_is_bounded_on_both_sides(rate):
    with pytest.raises(SystemExit, match="at most 50"):
        traffic_agent.run(rate=rate, base_url="http://127.0.0.1:1", state_path=None, max_requests=1)
    with pytest.raises(LabError, match="at most 50"):
        traffic.check_rate(rate)


def test_plan_stops_probing_after_misses_and_probes_again_later():
    plan = traffic_agent.Plan()
    probes = []
    now = 1000.0
    for _ in range(200):
        path, probed = plan.next_path(now)
        if probed is not None:
            probes.append(probed)
            plan.learn(probed, 200 if probed <= 2 else 404, now)
    assert probes == [1, 2, 3, 4, 5] and plan.documents == [1, 2]
    path, probed = plan.next_path(now + traffic_agent.REPROBE_S + 1)
    while probed is None:
        path, probed = plan.next_path(now + traffic_agent.REPROBE_S + 1)
    assert probed == 3 and path == "/documents/3"


LAB = {"name": "lpse-lab", "hosts": [{"name": "offsite", "role": "offsite"},
                                     {"name": "site1", "role": "site", "site_code": "lab01"},
                                     {"name": "site2", "role": "site", "site_code": "lab02"}]}


def test_choose_sites_takes_every_site_or_the_limit_by_name_or_code():
    assert traffic.choose_sites(LAB, None) == [("site1", "lpse-lab-site1"), ("site2", "lpse-lab-site2")]
    assert traffic.choose_sites(LAB, "lab02") == [("site2", "lpse-lab-site2")]


def test_choose_sites_names_unknown_sites_and_a_missing_lab():
    with pytest.raises(LabError, match="not lab sites: site9, offsite"):
        traffic.choose_sites(LAB, "site1,site9,offsite")
    with pytest.raises(LabError, match="no lab"):
        traffic.choose_sites(None, None)


def test_unit_runs_the_agent_at_the_rate_against_nginx_on_loopback():
    text = traffic.unit_text(7.5)
    assert f"ExecStart=/usr/bin/python3 {traffic.AGENT_PATH} --rate 7.5 --base-url https://127.0.0.1" in text
    assert f"--state {traffic.STATE_PATH}" in text and "StateDirectory=lpse-lab-traffic" in text
