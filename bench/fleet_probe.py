"""The fleet probe against Ansible's ``setup`` on 50, 200 and 600 real SSH hosts (issue 11, item 1).

Targets: the probe's client CPU at most 5 ms per host beyond start-up; at least 10x less wall time and
client CPU than ``ansible -m setup`` on the same hosts in the same run; a second probe over the kept
connections at least 5x cheaper (client CPU) than the first.

**The hosts.** One container from the lab's base image (Debian 12, OpenSSH 9.2), on the host network,
runs one real ``sshd`` process per host, each on its own loopback address (``127.77.X.Y`` port 22), each
with its own ed25519 host key (a per-fleet known_hosts file of N lines), root logging in with one
ed25519 client key. So every connection is a real TCP connection, SSH handshake, key exchange,
authentication and session, served by its own sshd (which forks and re-executes itself per connection,
as on a site). The probe's command is the real one (``ssh_probe.probe_script`` of the roles' site facts),
run by ``sh`` on the host. The **host side** is a realistic fake only where this container is not a
site: ``systemctl is-active`` answers ``active`` (no systemd runs in it), ``apt`` prints an empty
upgradable list (the real one costs the *server* about 0.3 s CPU per call, on the 2 cores the clients
share), ``/usr/local/sbin/lpse-backup status`` prints the JSON the real site tool printed on lab site1
(``tests/fixtures/probe/site1-healthy-backups.txt``: the real one needs pgBackRest and restic), and
SPSE's ``/health`` is a file served by one ``python3 -m http.server`` (the inventory's ``site_spse_url``).
Everything else the script runs is real: ``date``, ``id``, ``df`` of three paths, ``/proc``, ``nproc``,
``openssl x509`` of a real certificate, ``curl``. Ansible's ``setup`` runs its real module with the
container's ``/usr/bin/python3``.

**What is measured**, per N (hosts 1..N of the fleet), in this order:

1. ``probe``: a fresh Python process (``python bench/fleet_probe.py child``) that imports
   ``lpse_ops.backends.ssh_probe``, builds the targets from the inventory's host variables
   (``target_from_hostvars``, as ``fleet status`` does), and runs ``--rounds`` rounds of
   ``KeptProbes.run`` (round 1 connects every host; later rounds open one new session on each kept
   connection), each result parsed and judged (``to_probe``: parser and fault rules). The child reports
   its own CPU (``getrusage(RUSAGE_SELF)``) at start-up (interpreter and imports), and before and after
   each round; the parent reads ``getrusage(RUSAGE_CHILDREN)`` around the child (its whole CPU, exit and
   connection close included).
2. ``cli``: ``lpse-ops fleet status --json -i INVENTORY --concurrency C`` end to end (``ansible-inventory``,
   the probe, backup rules, the state store of a bench home), RUSAGE_CHILDREN around it.
3. ``ansible``: ``ansible sites -i INVENTORY -m setup -f FORKS`` with the project's ``ansible.cfg``
   (pipelining, ControlPersist 60 s), the same known_hosts and ``KexAlgorithms=curve25519-sha256`` (the
   probe's exchange: both sides pay the same handshake, so the comparison is of the tools, not of the
   key exchanges), the JSON callback. The ControlPersist masters ssh leaves behind are reparented to this
   process (``PR_SET_CHILD_SUBREAPER``), stopped after ansible exits and reaped, so their CPU is in
   RUSAGE_CHILDREN too. At 600 hosts, a bounded sample (``--ansible-sample``, every k-th host) when the
   estimate from the 200-host run fits the ``--max-minutes`` budget, else skipped with the reason.

Every phase's answered hosts are checked against the hosts asked for: a missing host, an error or an
output that is not a complete probe is counted and listed, never dropped. The servers' CPU (the
container's cgroup ``cpuacct.usage``) is recorded per phase apart from the client's. Concurrency: the
probe's ``--concurrency`` (default 20) and Ansible's ``--forks`` (default 20): the same bound.

Writes ``bench/results/fleet_probe.json`` and ``bench/results/fleet_probe.png``. Usage::

    .venv/bin/python bench/fleet_probe.py                      # about 10-15 minutes on 2 busy cores
    .venv/bin/python bench/fleet_probe.py --sizes 20 --ansible-sizes 20 --out /tmp/smoke.json   # smoke

The container (``--name``, default ``lpse-fleetbench``) is removed at the end, and at the start if a
previous run left it.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "fleet_probe.json"
PYTHON = ROOT / ".venv" / "bin" / "python"
CLI = ROOT / ".venv" / "bin" / "lpse-ops"
ANSIBLE = ROOT / ".venv" / "bin" / "ansible"
PROBE_FIXTURE = ROOT / "tests" / "fixtures" / "probe" / "site1-healthy-backups.txt"
NET = "127.77"
HEALTH_ADDRESS = f"{NET}.255.254"
HEALTH_PORT = 8080
TARGET_CPU_MS_PER_HOST = 5.0
TARGET_SPEEDUP = 10.0
TARGET_KEPT = 5.0
PR_SET_CHILD_SUBREAPER = 36


def address(index: int) -> str:
    """Host *index* (0-based) of the fleet: 127.77.0.1 .. 127.77.0.250, 127.77.1.1 ..."""
    return f"{NET}.{index // 250}.{index % 250 + 1}"


def host_name(index: int) -> str:
    return f"h{index + 1:04d}"


def cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"min": None, "median": None, "max": None}
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3),
            "max": round(max(values), 3)}


# -- the hosts ----------------------------------------------------------------------------------

SSHD_CONFIG = """ListenAddress {address}:22
HostKey /bench/hostkeys/{name}
PidFile /run/fleetbench/{name}.pid
AuthorizedKeysFile /bench/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
LogLevel ERROR
MaxStartups 100:30:200
Subsystem sftp internal-sftp
"""

# Runs once in the container: the host side every sshd's sessions share (see the docstring).
HOST_SETUP = r"""
set -e
mkdir -p /run/sshd /run/fleetbench /opt/spse/current /var/lib/spse/documents /var/lib/postgresql/15/main \
  /etc/spse /etc/nginx/tls /srv/www
printf '#!/bin/sh\n[ "$1" = is-active ] && { echo active; exit 0; }\nexec /usr/bin/systemctl "$@"\n' \
  > /usr/local/sbin/systemctl
printf '#!/bin/sh\necho "Listing..."\n' > /usr/local/sbin/apt
printf '#!/bin/sh\n[ "$1" = status ] || exit 2\ncat /bench/backup-status.json\n' > /usr/local/sbin/lpse-backup
chmod 0755 /usr/local/sbin/systemctl /usr/local/sbin/apt /usr/local/sbin/lpse-backup
echo 1.2 > /opt/spse/current/VERSION
cp /bench/health.json /srv/www/health
openssl req -x509 -newkey ed25519 -keyout /etc/nginx/tls/spse.key -out /etc/nginx/tls/spse.crt -days 365 \
  -nodes -subj /CN=fleetbench >/dev/null 2>&1
nohup python3 -m http.server {port} --bind {health} --directory /srv/www >/dev/null 2>&1 &
for conf in /bench/sshd/*.conf; do /usr/sbin/sshd -f "$conf"; done
"""


def prepare(work: Path, count: int) -> None:
    """Write the client key, N host keys, known_hosts, sshd configs and the host side's files into *work*."""
    import asyncssh
    import yaml

    for folder in ("hostkeys", "sshd", "cp"):
        (work / folder).mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o755)
    client = asyncssh.generate_private_key("ssh-ed25519")
    client.write_private_key(str(work / "id_ed25519"))
    os.chmod(work / "id_ed25519", 0o600)
    (work / "authorized_keys").write_text(client.export_public_key().decode())
    known = []
    for index in range(count):
        key = asyncssh.generate_private_key("ssh-ed25519")
        key.write_private_key(str(work / "hostkeys" / host_name(index)))
        os.chmod(work / "hostkeys" / host_name(index), 0o600)
        known.append(f"{address(index)} {key.export_public_key().decode().strip()}\n")
        (work / "sshd" / f"{host_name(index)}.conf").write_text(
            SSHD_CONFIG.format(address=address(index), name=host_name(index)))
    (work / "known_hosts").write_text("".join(known))
    lines = {key: values for key, _, values in
             (line.partition("=") for line in PROBE_FIXTURE.read_text().splitlines())}
    (work / "backup-status.json").write_text(lines["backup"] + "\n")
    (work / "health.json").write_text(lines["health"] + "\n")
    del yaml


def inventory(work: Path, indexes: list[int], name: str) -> Path:
    """Write an Ansible inventory of the hosts *indexes* (group ``sites``) and return its path."""
    import yaml

    common = {"ansible_user": "root", "ansible_ssh_private_key_file": str(work / "id_ed25519"),
              "ansible_ssh_common_args": f"-o UserKnownHostsFile={work / 'known_hosts'} "
                                         "-o StrictHostKeyChecking=yes -o KexAlgorithms=curve25519-sha256",
              "ansible_python_interpreter": "/usr/bin/python3",
              "site_spse_url": f"http://{HEALTH_ADDRESS}:{HEALTH_PORT}"}
    hosts = {host_name(i): {"ansible_host": address(i), "ansible_port": 22} for i in indexes}
    path = work / f"{name}.yml"
    path.write_text(yaml.safe_dump({"all": {"vars": common, "children": {"sites": {"hosts": hosts}}}}))
    return path


def docker(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=timeout)


def base_image() -> str:
    sys.path.insert(0, str(ROOT / "cli"))
    from lpse_ops.lab import image

    found = docker("image", "ls", image.IMAGE_REPOSITORY, "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    if not found:
        raise SystemExit("no lpse-ops-base image: run `lpse-ops lab up` once to build it")
    return found[0]


def start_hosts(name: str, work: Path, count: int) -> None:
    docker("rm", "-f", name, check=False)
    docker("run", "-d", "--name", name, "--network", "host", "-v", f"{work}:/bench:ro", base_image(),
           "sleep", "infinity")
    script = HOST_SETUP.replace("{port}", str(HEALTH_PORT)).replace("{health}", HEALTH_ADDRESS)
    docker("exec", name, "sh", "-c", script, timeout=600)
    deadline = time.monotonic() + 120
    waiting = {address(i) for i in range(count)} | {HEALTH_ADDRESS}
    while waiting and time.monotonic() < deadline:
        for addr in sorted(waiting):
            with contextlib.suppress(OSError), socket.create_connection(
                    (addr, HEALTH_PORT if addr == HEALTH_ADDRESS else 22), timeout=1):
                waiting.discard(addr)
        if waiting:
            time.sleep(0.2)
    if waiting:
        raise SystemExit(f"{len(waiting)} host(s) never listened, e.g. {sorted(waiting)[:5]}")


def server_cpu(name: str) -> float:
    """The container's CPU seconds so far (every sshd, session, script and module), from its cgroup."""
    return int(docker("exec", name, "cat", "/sys/fs/cgroup/cpuacct/cpuacct.usage").stdout) / 1e9


# -- the probe (child process) ------------------------------------------------------------------


def child(args: argparse.Namespace) -> None:
    """Run in a fresh process: the probe of an inventory's hosts, --rounds rounds over kept connections."""
    import asyncio

    import asyncssh  # noqa: F401 - ssh_probe imports it on first use: start-up, not per host
    import yaml

    sys.path.insert(0, str(ROOT / "cli"))
    from lpse_ops.actions import probe_rules
    from lpse_ops.backends import ssh_probe

    startup_cpu = cpu_self()
    # libyaml's loader when PyYAML has it: the CLI reads ansible-inventory's JSON, never YAML in Python, so
    # the pure-Python parser's 0.7 ms a host would be the bench's cost, not the probe's
    data = yaml.load(Path(args.inventory).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    common = data["all"]["vars"]
    hosts = data["all"]["children"]["sites"]["hosts"]
    targets = [ssh_probe.target_from_hostvars(host, {**common, **hostvars}) for host, hostvars in hosts.items()]
    targets_cpu = cpu_self() - startup_cpu

    async def rounds() -> list[dict]:
        found = []
        async with ssh_probe.KeptProbes(timeout=args.timeout, concurrency=args.concurrency) as kept:
            for number in range(1, args.rounds + 1):
                opened = len(kept.connections)
                cpu, started = cpu_self(), time.monotonic()
                raws = await kept.run(targets)
                probes = [probe_rules.to_probe(raw) for raw in raws]
                wall, used = time.monotonic() - started, cpu_self() - cpu
                errors: dict[str, list[str]] = {}
                for probe in probes:
                    if not probe.reachable or probe.error_detail:
                        errors.setdefault(probe.error or "probe_failed", []).append(probe.host)
                answered = {probe.host for probe in probes if probe.reachable and not probe.error_detail}
                found.append({"round": number, "connections_kept_before": opened, "wall_s": round(wall, 3),
                              "cpu_s": round(used, 4), "answered": len(answered),
                              "missing": sorted({t.host for t in targets} - {p.host for p in probes}),
                              "errors": {code: hosts[:10] for code, hosts in errors.items()},
                              "error_counts": {code: len(hosts) for code, hosts in errors.items()},
                              "host_duration_s": spread([raw.duration_s for raw in raws]),
                              "fault_codes_seen": sorted({f.code for p in probes for f in p.faults})})
        return found

    result = {"startup_cpu_s": round(startup_cpu, 4), "targets_cpu_s": round(targets_cpu, 4),
              "rounds": asyncio.run(rounds())}
    result["exit_cpu_s_before"] = round(cpu_self(), 4)
    print(json.dumps(result))


def run_probe(inv: Path, count: int, args: argparse.Namespace, name: str) -> dict:
    cpu, server, started = cpu_children(), server_cpu(name), time.monotonic()
    done = subprocess.run([str(PYTHON), __file__, "child", "--inventory", str(inv), "--rounds", str(args.rounds),
                           "--concurrency", str(args.concurrency), "--timeout", str(args.timeout)],
                          capture_output=True, text=True, check=False, timeout=1800)
    wall, client = time.monotonic() - started, cpu_children() - cpu
    server_used = server_cpu(name) - server
    if done.returncode != 0:
        return {"error": done.stderr[-2000:]}
    report = json.loads(done.stdout)
    first, later = report["rounds"][0], report["rounds"][1:]
    kept_cpu, kept_wall = sum(r["cpu_s"] for r in later), sum(r["wall_s"] for r in later)
    # one probe: the whole process without its kept rounds (start-up, targets, round 1, close, exit)
    one_cpu, one_wall = client - kept_cpu, wall - kept_wall
    report.update({
        "hosts": count, "process_wall_s": round(wall, 3), "process_cpu_s": round(client, 3),
        "server_cpu_s": round(server_used, 2),
        "one_probe_wall_s": round(one_wall, 3), "one_probe_cpu_s": round(one_cpu, 3),
        "cpu_ms_per_host_beyond_startup": round(1000 * (one_cpu - report["startup_cpu_s"]) / count, 3),
        "first_round_cpu_ms_per_host": round(1000 * first["cpu_s"] / count, 3),
        "kept_round_cpu_ms_per_host": spread([1000 * r["cpu_s"] / count for r in later]),
        "kept_round_wall_s": spread([r["wall_s"] for r in later]),
        "kept_cheaper_cpu": round(first["cpu_s"] / statistics.median([r["cpu_s"] for r in later]), 2)
        if later else None,
        "kept_faster_wall": round(first["wall_s"] / statistics.median([r["wall_s"] for r in later]), 2)
        if later else None,
        "all_answered": all(r["answered"] == count and not r["missing"] for r in report["rounds"])})
    return report


def run_cli(inv: Path, count: int, args: argparse.Namespace, name: str, home: Path) -> dict:
    env = {**os.environ, "LPSE_OPS_HOME": str(home), "LPSE_OPS_INVENTORY": str(inv)}
    env.pop("LPSE_OPS_STATE_URL", None)
    cpu, server, started = cpu_children(), server_cpu(name), time.monotonic()
    done = subprocess.run([str(CLI), "fleet", "status", "--json", "-i", str(inv), "--concurrency",
                           str(args.concurrency), "--timeout", str(args.timeout)],
                          capture_output=True, text=True, check=False, timeout=1800, env=env)
    wall, client = time.monotonic() - started, cpu_children() - cpu
    server_used = server_cpu(name) - server
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        return {"error": f"exit {done.returncode}: {done.stderr[-2000:]}"}
    sites = report["sites"]
    unreachable = [s["host"] for s in sites if not s["reachable"]]
    return {"hosts": count, "exit_code": done.returncode, "wall_s": round(wall, 3), "cpu_s": round(client, 3),
            "cpu_ms_per_host": round(1000 * client / count, 3), "probe_duration_s": report["duration_s"],
            "probe_cpu_s": report["cpu_s"], "server_cpu_s": round(server_used, 2), "sites": len(sites),
            "unreachable": unreachable[:10], "unreachable_count": len(unreachable),
            "all_answered": len(sites) == count and not unreachable,
            "fault_codes_seen": sorted({f["code"] for s in sites for f in s["faults"]})}


# -- Ansible ------------------------------------------------------------------------------------


def reap_orphans(work: Path) -> int:
    """Stop the ControlPersist masters left to this process (a subreaper) and reap them; return how many."""
    stopped = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        if ppid == os.getpid() and str(work / "cp") in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGTERM)
                stopped += 1
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.05)
    return stopped


def run_ansible(inv: Path, count: int, args: argparse.Namespace, name: str, work: Path, sampled_from: int | None,
                bound_s: float) -> dict:
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_STDOUT_CALLBACK": "oneline",
           "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_SSH_CONTROL_PATH_DIR": str(work / "cp"),
           "ANSIBLE_TIMEOUT": str(int(max(args.timeout, 10)) * 3), "ANSIBLE_HOST_KEY_CHECKING": "True"}
    cpu, server, started = cpu_children(), server_cpu(name), time.monotonic()
    out = work / "ansible-out.txt"
    timed_out = False
    with out.open("w") as stdout:
        process = subprocess.Popen([str(ANSIBLE), "sites", "-i", str(inv), "-m", "ansible.builtin.setup", "-f",
                                    str(args.forks)], stdout=stdout, stderr=subprocess.PIPE, text=True, env=env,
                                   start_new_session=True)
        try:
            _, stderr = process.communicate(timeout=bound_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGTERM)
            _, stderr = process.communicate()
            timed_out = True
    done = subprocess.CompletedProcess(process.args, process.returncode, "", stderr)
    wall = time.monotonic() - started
    masters = reap_orphans(work)
    client = cpu_children() - cpu
    server_used = server_cpu(name) - server
    # the oneline callback: one "HOST | SUCCESS => {facts}" (or FAILED!, UNREACHABLE!) line per host
    stats: dict[str, str] = {}
    for line in out.read_text().splitlines():
        host, sep, rest = line.partition(" | ")
        if sep:
            stats[host] = rest.split(" ", 1)[0]
    if not stats:
        return {"error": f"exit {done.returncode}{' (timed out)' if timed_out else ''}: no host answered: "
                         f"{done.stderr[-1500:]}"}
    ok = [host for host, status in stats.items() if status == "SUCCESS"]
    bad = sorted(f"{host}: {status}" for host, status in stats.items() if status != "SUCCESS")
    out.unlink()
    return {"hosts": count, "sampled_from": sampled_from, "forks": args.forks, "exit_code": done.returncode,
            "timed_out_after_s": round(bound_s) if timed_out else None,
            "wall_s": round(wall, 3), "cpu_s": round(client, 3), "cpu_ms_per_host": round(1000 * client / count, 2),
            "wall_s_per_host": round(wall / count, 4), "server_cpu_s": round(server_used, 2),
            "control_persist_masters_reaped": masters, "answered": len(ok), "failed_or_unreachable": bad[:10],
            "missing": max(0, count - len(stats)), "all_answered": len(ok) == count}


# -- the run ------------------------------------------------------------------------------------


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    runs = result["runs"]
    sizes = [r["hosts"] for r in runs]
    fig, (wall_ax, cpu_ax) = plt.subplots(1, 2, figsize=(12, 4.8))

    colors = {"probe": "tab:blue", "kept": "tab:orange", "CLI": "tab:green", "ansible": "tab:red"}

    def series(ax, key_wall, pick, label, style):
        xs, ys = [], []
        for run in runs:
            value = pick(run)
            if value is not None:
                xs.append(run["hosts"])
                ys.append(value)
        if xs:
            kind = next(k for k in ("kept", "CLI", "ansible", "probe") if k in label)
            ax.plot(xs, ys, style, label=label, color=colors[kind])

    series(wall_ax, None, lambda r: r["probe"]["rounds"][0]["wall_s"] if "rounds" in r["probe"] else None,
           "probe, first round (connect)", "o-")
    series(wall_ax, None, lambda r: (r["probe"].get("kept_round_wall_s") or {}).get("median"),
           "probe, kept connections", "s-")
    series(wall_ax, None, lambda r: r.get("cli", {}).get("wall_s"), "lpse-ops fleet status (CLI)", "^-")
    series(wall_ax, None, lambda r: r["ansible"].get("wall_s") if r.get("ansible") and not
           r["ansible"].get("sampled_from") and "wall_s" in r["ansible"] else None, "ansible -m setup", "D-")
    series(wall_ax, None, lambda r: r["ansible"]["wall_s_per_host"] * r["hosts"] if r.get("ansible") and
           r["ansible"].get("sampled_from") and "wall_s" in r["ansible"] else None,
           "ansible -m setup (sample, scaled)", "D:")
    series(cpu_ax, None, lambda r: r["probe"].get("cpu_ms_per_host_beyond_startup"),
           "probe process, beyond start-up (one probe)", "o-")
    series(cpu_ax, None, lambda r: r["probe"].get("first_round_cpu_ms_per_host"),
           "probe, first round in process", "o:")
    series(cpu_ax, None, lambda r: (r["probe"].get("kept_round_cpu_ms_per_host") or {}).get("median"),
           "probe, kept round", "s-")
    series(cpu_ax, None, lambda r: r.get("cli", {}).get("cpu_ms_per_host"), "lpse-ops fleet status (CLI)", "^-")
    series(cpu_ax, None, lambda r: r["ansible"].get("cpu_ms_per_host") if r.get("ansible") else None,
           "ansible -m setup", "D-")
    cpu_ax.axhline(TARGET_CPU_MS_PER_HOST, color="grey", linestyle="--", label="target 5 ms/host")
    for ax, title, unit in ((wall_ax, "wall time", "s"), (cpu_ax, "client CPU per host", "ms")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("hosts")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"fleet probe vs ansible setup, real sshd hosts, {os.cpu_count()} shared cores "
                 f"({result['started'][:16]} UTC)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="mode")
    kid = sub.add_parser("child")
    kid.add_argument("--inventory", required=True)
    kid.add_argument("--rounds", type=int, default=3)
    kid.add_argument("--concurrency", type=int, default=20)
    kid.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--sizes", default="50,200,600")
    parser.add_argument("--ansible-sizes", default="50,200", help="sizes Ansible runs on every host")
    parser.add_argument("--ansible-sample", type=int, default=100,
                        help="at the other sizes, Ansible on this many hosts spread over the fleet (0: skip)")
    parser.add_argument("--rounds", type=int, default=3, help="probe rounds per size: 1 connects, the rest reuse")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--forks", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--no-cli", action="store_true", help="skip the lpse-ops fleet status runs")
    parser.add_argument("--max-minutes", type=float, default=15.0)
    parser.add_argument("--name", default="lpse-fleetbench", help="the hosts' container")
    parser.add_argument("--work", type=Path, default=Path("/tmp/lpse-fleetbench"))
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--replot", action="store_true", help="only draw the plot of --out's JSON again")
    args = parser.parse_args()
    if args.mode == "child":
        child(args)
        return
    if args.replot:
        plot(json.loads(args.out.read_text()), args.out.with_suffix(".png"))
        return
    if args.rounds < 2 or args.rounds > 10:
        raise SystemExit("--rounds must be 2..10 (round 1 connects, later rounds reuse the connections)")
    sizes = sorted(int(s) for s in args.sizes.split(","))
    ansible_sizes = {int(s) for s in args.ansible_sizes.split(",") if s}
    ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    begun = time.monotonic()
    budget = args.max_minutes * 60
    result: dict = {
        "bench": "fleet_probe", "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_before": os.getloadavg()},
        "settings": {"sizes": sizes, "ansible_sizes": sorted(ansible_sizes), "ansible_sample": args.ansible_sample,
                     "rounds": args.rounds, "concurrency": args.concurrency, "forks": args.forks,
                     "timeout_s": args.timeout, "kex": "curve25519-sha256 (probe and ansible)",
                     "ansible_cfg": "project ansible.cfg: pipelining, ControlPersist=60s"},
        "hosts_side": "one container (lpse-ops-base), one sshd per host on 127.77.x.y:22, own ed25519 host key; "
                      "fakes: systemctl is-active, apt (empty), lpse-backup status (recorded lab JSON), "
                      "/health (file over http.server); real: sh, date, df, /proc, nproc, openssl, curl, "
                      "python3 for setup",
        "targets": {"cpu_ms_per_host_beyond_startup": TARGET_CPU_MS_PER_HOST, "speedup_vs_ansible": TARGET_SPEEDUP,
                    "kept_cheaper": TARGET_KEPT},
        "runs": []}
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    prepare(work, max(sizes))
    home = work / "home"
    home.mkdir(exist_ok=True)
    print(f"starting {max(sizes)} sshd hosts in {args.name} ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    start_hosts(args.name, work, max(sizes))
    result["hosts_start_s"] = round(time.monotonic() - started, 1)
    try:
        for count in sizes:
            everyone = list(range(count))
            inv = inventory(work, everyone, f"inventory-{count}")
            run: dict = {"hosts": count}
            print(f"N={count}: probe ...", file=sys.stderr, flush=True)
            run["probe"] = run_probe(inv, count, args, args.name)
            if not args.no_cli:
                print(f"N={count}: lpse-ops fleet status ...", file=sys.stderr, flush=True)
                run["cli"] = run_cli(inv, count, args, args.name, home)
            run["ansible"] = plan_and_run_ansible(count, sizes, ansible_sizes, result, run, args, work, begun, budget)
            run["comparison"] = compare(run)
            result["runs"].append(run)
            args.out.write_text(json.dumps(result, indent=2) + "\n")
            print(json.dumps({"hosts": count, **run["comparison"]}), file=sys.stderr, flush=True)
    finally:
        docker("rm", "-f", args.name, check=False)
    result["machine"]["loadavg_after"] = os.getloadavg()
    result["duration_s"] = round(time.monotonic() - begun, 1)
    result["verdict"] = verdict(result)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out.with_suffix(".png"))
    print(json.dumps(result["verdict"], indent=2))


def plan_and_run_ansible(count: int, sizes: list[int], ansible_sizes: set[int], result: dict, run: dict,
                         args: argparse.Namespace, work: Path, begun: float, budget: float) -> dict:
    """Run Ansible's setup at this size: on every host, or on a sample spread over the fleet, within budget.

    Every host at --ansible-sizes, else --ansible-sample hosts (every k-th). Either is cut to a sample
    that fits the time left (after the probe runs still to come, estimated from this one) at the slowest
    per-host wall time Ansible has shown so far; fewer than 10 hosts' worth of time: skipped, with why.
    """
    everyone = list(range(count))
    wanted = count if count in ansible_sizes else min(count, args.ansible_sample)
    if wanted <= 0:
        return {"skipped": "no Ansible run at this size (--ansible-sample 0)"}
    done = [r["ansible"] for r in result["runs"] if r.get("ansible", {}).get("wall_s_per_host")]
    per_host = max((a["wall_s_per_host"] for a in done), default=None)
    probe_wall = run["probe"].get("process_wall_s", 0) + run.get("cli", {}).get("wall_s", 0)
    still_to_come = sum(size for size in sizes if size > count) / count * probe_wall * 1.2
    left = budget - (time.monotonic() - begun) - still_to_come
    if per_host:
        fits = int(left / (per_host * 1.3))
        if fits < 10:
            return {"skipped": f"{left:.0f} s of the {args.max_minutes:g}-minute budget left after the probe runs "
                               f"to come; Ansible needs about {per_host:.2f} s per host here"}
        wanted = min(wanted, fits)
    step = max(1, count // wanted)
    picked = everyone[::step][:wanted]
    print(f"N={count}: ansible -m setup on {len(picked)} host(s) ...", file=sys.stderr, flush=True)
    inv = inventory(work, picked, f"inventory-ansible-{count}")
    return run_ansible(inv, len(picked), args, args.name, work, count if len(picked) < count else None,
                       bound_s=max(60.0, budget - (time.monotonic() - begun)))


def compare(run: dict) -> dict:
    """Ratios of one size: Ansible per host over the probe's per host (a sample compares per host)."""
    probe, ansible = run["probe"], run.get("ansible") or {}
    found: dict = {}
    if "rounds" not in probe:
        return {"error": "probe failed"}
    count = run["hosts"]
    found["probe_cpu_ms_per_host_beyond_startup"] = probe["cpu_ms_per_host_beyond_startup"]
    found["probe_first_wall_s"] = probe["rounds"][0]["wall_s"]
    found["kept_cheaper_cpu"] = probe["kept_cheaper_cpu"]
    found["all_answered"] = probe["all_answered"] and run.get("cli", {}).get("all_answered", True) and \
        ansible.get("all_answered", True)
    if "wall_s" in ansible and ansible.get("answered"):
        hosts = ansible["hosts"]
        # one probe's whole process (start-up included) against ansible's whole run, per host
        found["wall_ratio"] = round((ansible["wall_s"] / hosts) / (probe["one_probe_wall_s"] / count), 1)
        found["cpu_ratio"] = round((ansible["cpu_s"] / hosts) / (probe["one_probe_cpu_s"] / count), 1)
        cli = run.get("cli") or {}
        if "wall_s" in cli:
            found["cli_wall_ratio"] = round((ansible["wall_s"] / hosts) / (cli["wall_s"] / count), 1)
            found["cli_cpu_ratio"] = round((ansible["cpu_s"] / hosts) / (cli["cpu_s"] / count), 1)
        found["per_host"] = (f"sample of {hosts} of the {count} hosts" if ansible.get("sampled_from")
                             else "the same hosts")
    return found


def verdict(result: dict) -> dict:
    runs = [r for r in result["runs"] if "rounds" in r["probe"]]
    compared = [r["comparison"] for r in runs if "wall_ratio" in r["comparison"]]
    cpu = max((r["probe"]["cpu_ms_per_host_beyond_startup"] for r in runs), default=None)
    kept = min((r["probe"]["kept_cheaper_cpu"] for r in runs if r["probe"]["kept_cheaper_cpu"]), default=None)
    return {
        "cpu_ms_per_host_beyond_startup_worst": cpu,
        "cpu_target_met": cpu is not None and cpu <= TARGET_CPU_MS_PER_HOST,
        "wall_ratio_lowest": min((c["wall_ratio"] for c in compared), default=None),
        "cpu_ratio_lowest": min((c["cpu_ratio"] for c in compared), default=None),
        "speedup_target_met": bool(compared) and all(c["wall_ratio"] >= TARGET_SPEEDUP and
                                                     c["cpu_ratio"] >= TARGET_SPEEDUP for c in compared),
        "kept_cheaper_lowest": kept, "kept_target_met": kept is not None and kept >= TARGET_KEPT,
        "every_host_answered_everywhere": all(r["comparison"].get("all_answered") for r in result["runs"]),
    }


if __name__ == "__main__":
    main()
