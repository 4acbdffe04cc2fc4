#!/usr/bin/env bash
# The README's second command, and what CI runs (.ci/run): set up, lint, then the tests.
#
#   bash scripts/test.sh [--fast] [PYTEST ARGS...]
#
# Full (default): ruff, ansible-lint (production profile), every test: unit, integration and lab. The lab
# tests bring up their own lab (named lpse-test, ports 2420+) and take it down at the end.
# --fast: ruff, ansible-lint and the unit and integration tests only (no lab; about 8 CPU-minutes in all).
# Both also run the unit tests again with the clock a year ahead (--clock-ahead-days 365: tests/conftest.py,
# time-machine), so a test that fixes a date while the code reads the real clock fails now, not in a year.
# Every pytest run writes JUnit XML into .ci-artifacts/ and prints its 20 slowest tests. Extra arguments
# go to the main pytest run only.
set -euo pipefail
cd "$(dirname "$0")/.."
tier=full
if [ "${1:-}" = "--fast" ]; then
  tier=fast
  shift
fi
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
artifacts="$PWD/.ci-artifacts"
mkdir -p "$artifacts"
echo "==> ruff"
ruff check .
echo "==> ansible-lint (production profile)"
ansible-lint --profile production --offline playbooks roles
# The year-ahead pass runs beside the main one (its own temp folder, no cache; output in a log printed after):
# the tests are mostly one process each, so on two cores the two passes take little more than the longer.
# tests/unit/test_clock_ahead.py fails that pass if the clock did not move.
echo "==> pytest: unit tests with the clock a year ahead (--clock-ahead-days 365), in the background"
ahead_tmp="${TMPDIR:-/tmp}/lpse-ops-year-ahead-$$"
pytest -ra --durations=20 -p no:cacheprovider --basetemp="$ahead_tmp" --clock-ahead-days 365 \
  --junitxml="$artifacts/junit-unit-year-ahead.xml" tests/unit >"$artifacts/unit-year-ahead.log" 2>&1 &
ahead=$!
status=0
if [ "$tier" = fast ]; then
  echo "==> pytest: unit and integration tests (--fast: no lab)"
  pytest -ra --durations=20 --junitxml="$artifacts/junit-fast.xml" tests/unit tests/integration "$@" || status=$?
else
  echo "==> pytest: every test (unit, integration, lab)"
  pytest -ra --durations=20 --junitxml="$artifacts/junit-full.xml" "$@" || status=$?
fi
ahead_status=0
wait "$ahead" || ahead_status=$?
rm -rf "$ahead_tmp"
echo "==> pytest: unit tests a year ahead (--clock-ahead-days 365): exit $ahead_status ($artifacts/unit-year-ahead.log)"
sed -n '/short test summary info\|slowest 20 durations/,$p' "$artifacts/unit-year-ahead.log"
[ "$ahead_status" -eq 0 ] || status=$ahead_status
echo "==> JUnit XML: $artifacts"
exit "$status"
