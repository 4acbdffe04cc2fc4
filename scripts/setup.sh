#!/usr/bin/env bash
# Install what lpse-ops needs on a fresh Debian 12 control machine (run as root):
# the Docker engine, debootstrap, a JDK (to build the reference SPSE), and the Python venv.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
command -v javac >/dev/null || need+=(openjdk-17-jdk-headless)
# The PostgreSQL JDBC driver, so the integration tests can run the reference SPSE against a real database.
[ -f /usr/share/java/postgresql.jar ] || need+=(libpostgresql-jdbc-java)
command -v iptables >/dev/null || need+=(iptables)
command -v ssh >/dev/null || need+=(openssh-client)
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)  # the audit's wire look tries TLS groups with s_client
# Outside auditors the lab tests check the wire controls against (nobody here wrote them).
command -v ssh-audit >/dev/null || need+=(ssh-audit)
command -v sslscan >/dev/null || need+=(sslscan)
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql)  # tests/integration run their own server
command -v chromium >/dev/null && command -v chromedriver >/dev/null && command -v pdftoppm >/dev/null \
  && command -v strace >/dev/null \
  || need+=(chromium chromium-driver poppler-utils fonts-dejavu-core strace)  # report PDFs; the report tests
if [ "${#need[@]}" -gt 0 ]; then
  echo "==> installing Debian packages: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Debian's postgresql package creates a "main" cluster on 5432 and starts it where it can: the tests
  # start their own, so a cluster this install made is left stopped and not started at boot.
  if [[ " ${need[*]} " == *" postgresql "* ]] && [ -f /etc/postgresql/15/main/start.conf ]; then
    pg_ctlcluster 15 main stop 2>/dev/null || true
    echo manual >/etc/postgresql/15/main/start.conf
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "==> creating the virtual environment in .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import lpse_ops, ansible_runner, testinfra" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.installed ]; then
  echo "==> installing lpse-ops and its tools into .venv"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[dev]'
  touch .venv/.installed
fi

# No systemd on the control machine: start the Docker engine ourselves when it is not running.
if ! docker info >/dev/null 2>&1; then
  echo "==> starting the Docker engine (log: /var/log/lpse-ops-dockerd.log)"
  nohup dockerd >/var/log/lpse-ops-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start: read /var/log/lpse-ops-dockerd.log" >&2; exit 1; }
fi
echo "==> ready: .venv/bin/lpse-ops --help"
