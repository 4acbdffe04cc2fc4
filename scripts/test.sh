#!/usr/bin/env bash
# The README's second command, and what CI runs: set up, lint, then every test (unit and lab).
# The lab tests bring up their own lab (named lpse-test, ports 2420+) and take it down at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
echo "==> ruff"
ruff check .
echo "==> ansible-lint (production profile)"
ansible-lint --profile production --offline playbooks roles
echo "==> pytest"
pytest -ra --durations=25 "$@"
