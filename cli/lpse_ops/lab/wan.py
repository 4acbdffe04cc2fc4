"""A wide-area link between each lab site and the offsite host (issue 20).

A real LPSE reaches its offsite copy over a WAN, not the lab's bridge. Each site gets a link of its own to the
offsite host, shaped in its own network namespace (the lab's hosts have NET_ADMIN there) with the kernel's
HTB queueing discipline, both ways:

- what the site sends to the offsite host (uploads: backups) leaves ``eth0`` through an HTB class whose rate
  and ceiling are the link's rate, chosen by a u32 filter on the offsite host's address;
- what the offsite host sends to the site (downloads: restores) is redirected on ``eth0``'s ingress to an
  intermediate functional block device (``lpse-wan``, ifb) and shaped there the same way.

Every other flow (the control node, the Debian mirror) is left alone. A one-way delay (``delay_ms``) adds a
netem leaf under each class, when the kernel has sch_netem; without it a delay is refused with that reason
(the link is then shaped in rate only). ``measure`` proves the rate with a real transfer over the real path:
a presigned S3 object fetched and sent by curl on the site.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from dataclasses import dataclass

from lpse_ops.backends import docker

IFB = "lpse-wan"
"""The ifb device a site's downloads are shaped on."""
QUANTUM = "1514"


class WanError(Exception):
    """The link cannot be set as asked (the reason says why and what to do)."""


@dataclass(frozen=True)
class Link:
    """A site's link to the offsite host: *mbit* each way (0: no shaping) and a one-way *delay_ms*."""

    mbit: float
    delay_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.mbit < 0 or self.delay_ms < 0:
            raise WanError("the link's rate and delay must be 0 or more")
        if self.delay_ms and not self.mbit:
            raise WanError("a delay needs a rate (--wan-mbit)")

    def as_dict(self) -> dict:
        return {"mbit": self.mbit, "delay_ms": self.delay_ms}


def _rate(mbit: float) -> str:
    return f"{round(mbit * 1000)}kbit"


def clear_commands() -> list[list[str]]:
    """Remove any shaping this module set (each may fail when there is none: the caller ignores that)."""
    return [["tc", "qdisc", "del", "dev", "eth0", "root"], ["tc", "qdisc", "del", "dev", "eth0", "ingress"],
            ["ip", "link", "del", IFB]]


def shape_commands(link: Link, offsite_ip: str) -> list[list[str]]:
    """The ``tc``/``ip`` argv lists that shape a site's link to *offsite_ip* (pure; run in order, after
    :func:`clear_commands`)."""
    if not link.mbit:
        return []
    rate = _rate(link.mbit)
    target = f"{offsite_ip}/32"
    commands = [
        ["ip", "link", "add", IFB, "type", "ifb"],
        ["ip", "link", "set", IFB, "up"],
        # uploads: to the offsite host through class 1:10; everything else through 1:99, unshaped
        ["tc", "qdisc", "add", "dev", "eth0", "root", "handle", "1:", "htb", "default", "99"],
        ["tc", "class", "add", "dev", "eth0", "parent", "1:", "classid", "1:10", "htb", "rate", rate, "ceil", rate,
         "quantum", QUANTUM],
        ["tc", "class", "add", "dev", "eth0", "parent", "1:", "classid", "1:99", "htb", "rate", "10gbit",
         "quantum", "60000"],
        ["tc", "filter", "add", "dev", "eth0", "parent", "1:", "protocol", "ip", "prio", "1", "u32", "match", "ip",
         "dst", target, "flowid", "1:10"],
        # downloads: from the offsite host, redirected to the ifb and shaped there
        ["tc", "qdisc", "add", "dev", "eth0", "handle", "ffff:", "ingress"],
        ["tc", "filter", "add", "dev", "eth0", "parent", "ffff:", "protocol", "ip", "prio", "1", "u32", "match", "ip",
         "src", target, "action", "mirred", "egress", "redirect", "dev", IFB],
        ["tc", "qdisc", "add", "dev", IFB, "root", "handle", "1:", "htb", "default", "10"],
        ["tc", "class", "add", "dev", IFB, "parent", "1:", "classid", "1:10", "htb", "rate", rate, "ceil", rate,
         "quantum", QUANTUM],
    ]
    if link.delay_ms:
        delay = f"{link.delay_ms:g}ms"
        commands += [["tc", "qdisc", "add", "dev", "eth0", "parent", "1:10", "handle", "10:", "netem", "delay", delay,
                      "limit", "10000"],
                     ["tc", "qdisc", "add", "dev", IFB, "parent", "1:10", "handle", "10:", "netem", "delay", delay,
                      "limit", "10000"]]
    return commands


UNITS = {"bit": 1e-6, "kbit": 1e-3, "mbit": 1.0, "gbit": 1e3}


def parse_rates(tc_class_text: str) -> list[float]:
    """The rates in Mbit/s of the HTB classes in ``tc class show`` output (pure)."""
    rates = []
    for number, unit in re.findall(r"^class htb \S+ .*?\brate ([0-9.]+)([KMG]?bit)\b", tc_class_text, re.MULTILINE):
        rates.append(round(float(number) * UNITS[unit.lower()], 3))
    return rates


def apply(container: str, link: Link | None, offsite_ip: str) -> None:
    """Set (or with *link* None or 0 Mbit/s, remove) the shaping of *container*'s link to *offsite_ip*."""
    for argv in clear_commands():
        docker.exec_in(container, *argv, check=False, timeout=60)
    for argv in shape_commands(link, offsite_ip) if link else []:
        done = docker.exec_in(container, *argv, check=False, timeout=60)
        if done.returncode != 0:
            for undo in clear_commands():
                docker.exec_in(container, *undo, check=False, timeout=60)
            reason = done.stderr.strip()
            if "netem" in argv and "unknown" in reason.lower():
                raise WanError("this machine's kernel has no netem queueing discipline (sch_netem), so the link "
                               "cannot be delayed: leave out --wan-delay-ms (the rate is shaped with HTB alone)")
            raise WanError(f"{container}: `{' '.join(argv)}` failed: {reason}")


def shaped(container: str) -> dict:
    """What is set on *container* now: {"up_mbit", "down_mbit"} (None where nothing is shaped)."""
    def rate(device: str) -> float | None:
        done = docker.exec_in(container, "tc", "class", "show", "dev", device, check=False, timeout=60)
        rates = parse_rates(done.stdout) if done.returncode == 0 else []
        return min(rates) if rates else None

    return {"up_mbit": rate("eth0"), "down_mbit": rate(IFB)}


def transfer_size(mbit: float, seconds: float) -> int:
    """Bytes that take *seconds* at *mbit* (at least 2 MiB, at most 256 MiB): a bounded measurement."""
    return max(2 << 20, min(256 << 20, int(mbit * 1e6 / 8 * seconds)))


def parse_curl_rate(out: str) -> float:
    """Mbit/s from curl's ``-w '%{speed_download} %{speed_upload}'`` (bytes per second; the larger one)."""
    numbers = [float(n) for n in re.findall(r"[0-9.]+", out)]
    if not numbers:
        raise WanError(f"curl printed no transfer speed: {out!r}")
    return round(max(numbers) * 8 / 1e6, 2)


def measure(container: str, s3: dict, ca_cert_path: str, bucket: str, mbit: float, seconds: float = 4.0) -> dict:
    """Send and fetch one object through the site's link to the offsite S3 server (curl on the site, presigned
    URLs made here); return {"bytes", "down_mbit", "up_mbit"}. *s3*: the lab's S3 settings (s3-credentials.json)."""
    from lpse_ops.backends import s3 as s3_backend

    size = transfer_size(mbit or 100.0, seconds)
    admin = s3["credentials"]["admin"]
    signer = s3_backend.client(s3["endpoint_hosts"], ca_cert_path, admin["access_key"], admin["secret_key"])
    key = f"lab-wan-measure/{secrets.token_hex(8)}"
    put_url = signer.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=900)
    get_url = signer.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=900)
    ca_inside = "/run/lpse-lab-wan-ca.crt"
    with open(ca_cert_path, "rb") as handle:
        docker.write_file(container, ca_inside, handle.read())
    scratch = f"/root/lpse-wan-measure-{os.getpid()}"  # root's own folder on the site
    try:
        docker.exec_in(container, "sh", "-c", f"head -c {size} /dev/urandom > {scratch}", timeout=300)
        started = time.monotonic()
        up = docker.exec_in(container, "curl", "-sS", "--fail", "--cacert", ca_inside, "-T", scratch,
                            "-o", "/dev/null", "-w", "%{speed_upload}", put_url, timeout=900)
        down = docker.exec_in(container, "curl", "-sS", "--fail", "--cacert", ca_inside, "-o", "/dev/null",
                              "-w", "%{speed_download}", get_url, timeout=900)
        elapsed = time.monotonic() - started
    finally:
        docker.exec_in(container, "rm", "-f", scratch, check=False, timeout=60)
        s3_backend.client(s3["endpoint_control"], ca_cert_path, admin["access_key"],
                          admin["secret_key"]).delete_object(Bucket=bucket, Key=key)
    return {"bytes": size, "up_mbit": parse_curl_rate(up.stdout), "down_mbit": parse_curl_rate(down.stdout),
            "seconds": round(elapsed, 2)}
