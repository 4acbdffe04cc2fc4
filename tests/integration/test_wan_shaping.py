"""The lab's WAN shaping on the real kernel (lab/wan.py's commands, run as a lab site runs them): two network
namespaces joined by a veth pair stand for a site and the offsite host, and real TCP transfers are timed. The
shaped rate holds both ways (90-100 % here, >= 85 % asserted for a loaded CI machine), and a flow to another
address is not shaped. Needs root (ip netns): skipped, with that reason, otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from lpse_ops.lab import wan

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root (ip netns)")

SITE_IP, OFFSITE_IP, OTHER_IP = "10.231.0.1", "10.231.0.2", "10.231.0.3"
MBIT = 40.0
# One side sends COUNT bytes, the other times them from the first byte to the last: Mbit/s on stdout.
RECEIVER = """
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((sys.argv[1], 5201)); s.listen()
print("listening", flush=True)
c, _ = s.accept(); n = 0; first = None
while True:
    b = c.recv(1 << 16)
    if not b: break
    first = first or time.monotonic(); n += len(b)
print(n * 8 / (time.monotonic() - first) / 1e6, flush=True)
"""
SENDER = """
import socket, sys
c = socket.create_connection((sys.argv[1], 5201), timeout=30); c.sendall(b"x" * int(sys.argv[2])); c.close()
"""


@pytest.fixture
def namespaces():
    tag = uuid.uuid4().hex[:6]
    site, offsite = f"lpse-site-{tag}", f"lpse-off-{tag}"

    def ip(*argv: str) -> None:
        subprocess.run(["ip", *argv], check=True, capture_output=True, timeout=30)

    ip("netns", "add", site)
    ip("netns", "add", offsite)
    try:
        ip("link", "add", "eth0", "netns", site, "type", "veth", "peer", "name", "eth0", "netns", offsite)
        ip("-n", site, "addr", "add", f"{SITE_IP}/24", "dev", "eth0")
        ip("-n", offsite, "addr", "add", f"{OFFSITE_IP}/24", "dev", "eth0")
        ip("-n", offsite, "addr", "add", f"{OTHER_IP}/24", "dev", "eth0")
        for ns in (site, offsite):
            ip("-n", ns, "link", "set", "eth0", "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield site, offsite
    finally:
        for ns in (site, offsite):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False, timeout=30)


def in_ns(ns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def transfer(sender_ns: str, receiver_ns: str, receiver_ip: str, size: int) -> float:
    receiver = subprocess.Popen(in_ns(receiver_ns, sys.executable, "-c", RECEIVER, receiver_ip),
                                stdout=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout.readline().strip() == "listening"
        subprocess.run(in_ns(sender_ns, sys.executable, "-c", SENDER, receiver_ip, str(size)), check=True,
                       timeout=120)
        return float(receiver.stdout.readline())
    finally:
        receiver.wait(timeout=60)


def test_the_link_is_shaped_both_ways_to_the_offsite_address_only(namespaces):
    site, offsite = namespaces
    for argv in wan.shape_commands(wan.Link(MBIT), OFFSITE_IP):
        subprocess.run(in_ns(site, *argv), check=True, capture_output=True, timeout=30)
    size = wan.transfer_size(MBIT, 3)
    down = transfer(offsite, site, SITE_IP, size)  # offsite -> site: a restore's direction (ifb)
    up = transfer(site, offsite, OFFSITE_IP, size)  # site -> offsite: a backup's direction
    other = transfer(site, offsite, OTHER_IP, size)  # another address: not shaped
    assert 0.85 * MBIT <= down <= 1.02 * MBIT, down
    assert 0.85 * MBIT <= up <= 1.02 * MBIT, up
    assert other > 3 * MBIT, other
    shown = subprocess.run(in_ns(site, "tc", "class", "show", "dev", wan.IFB), capture_output=True, text=True,
                           check=True, timeout=30).stdout
    assert wan.parse_rates(shown) == [MBIT]
    for argv in wan.clear_commands():
        subprocess.run(in_ns(site, *argv), capture_output=True, check=False, timeout=30)
    assert transfer(offsite, site, SITE_IP, size) > 3 * MBIT  # removed: full speed again
