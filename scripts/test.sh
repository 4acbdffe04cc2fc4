#!/usr/bin/env bash
# The README's second command, and what CI runs (.ci/run): set up, lint, then the tests.
#
#   bash scripts/test.sh [--fast] [PYTEST ARGS...]
#
# Full (default): ruff, ansible-lint (production profile), every test: unit, integration and lab. The lab
# tests run in two streams at once, each bringing up its own lab (lpse-test, ports 2420+; lpse-testb, ports
# 2720+) and taking it down at the end.
# --fast: ruff, ansible-lint and the unit and integration tests only (no lab; about 8 CPU-minutes in all).
# Both also run the unit tests again with the clock a year ahead (--clock-ahead-days 365: tests/conftest.py,
# time-machine), so a test that fixes a date while the code reads the real clock fails now, not in a year.
# Every pytest run writes JUnit XML into .ci-artifacts/ and prints its 20 slowest tests. Extra arguments
# go to the unit and integration run and to lab stream a (--fast: to its one run).
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
echo "==> pytest: unit tests with the clock a year ahead (--clock-ahead-days 365), in the background (nice 10)"
ahead_tmp="${TMPDIR:-/tmp}/lpse-ops-year-ahead-$$"
# At a lower priority: it is never on the critical path (a lab stream is), so it takes the CPU they leave.
nice -n 10 pytest -ra --durations=20 -p no:cacheprovider --basetemp="$ahead_tmp" --clock-ahead-days 365 \
  --junitxml="$artifacts/junit-unit-year-ahead.xml" tests/unit >"$artifacts/unit-year-ahead.log" 2>&1 &
ahead=$!
status=0
# Wait for a pytest run started in the background (name, pid, its temp folder, its log); print how it ended and
# its summary; a failure fails the whole run.
finish_background() {
  local rc=0
  wait "$2" || rc=$?
  rm -rf "$3"
  echo "==> pytest: $1: exit $rc ($4)"
  sed -n '/short test summary info\|slowest 20 durations/,$p' "$4"
  [ "$rc" -eq 0 ] || status=$rc
}
if [ "$tier" = fast ]; then
  echo "==> pytest: unit and integration tests (--fast: no lab)"
  pytest -ra --durations=20 --junitxml="$artifacts/junit-fast.xml" tests/unit tests/integration "$@" || status=$?
else
  # Three runs at once. The lab tests run in two streams, each on a lab of its own (tests/lab/conftest.py
  # STREAM_B): stream b (lab lpse-testb, ports from 2720) in the background and stream a (lab lpse-test, ports
  # from 2420) here, both from the start; the host-free tiers (unit and integration) run in the background
  # (nice 5) while the labs come up and whenever a stream waits on a site. The lab streams are the critical path.
  echo "==> pytest: unit and integration tests, in the background (nice 5)"
  hostfree_tmp="${TMPDIR:-/tmp}/lpse-ops-hostfree-$$"
  nice -n 5 pytest -ra --durations=20 -p no:cacheprovider --basetemp="$hostfree_tmp" \
    --junitxml="$artifacts/junit-hostfree.xml" tests/unit tests/integration "$@" >"$artifacts/hostfree.log" 2>&1 &
  hostfree=$!
  echo "==> pytest: lab stream b (its own lab), in the background"
  b_tmp="${TMPDIR:-/tmp}/lpse-ops-lab-b-$$"
  LPSE_OPS_TEST_LAB_NAME=lpse-testb LPSE_OPS_TEST_PORT_BASE=2720 \
    pytest -ra --durations=20 -p no:cacheprovider --basetemp="$b_tmp" --lab-stream b \
    --junitxml="$artifacts/junit-lab-b.xml" tests/lab >"$artifacts/lab-b.log" 2>&1 &
  lab_b=$!
  echo "==> pytest: lab stream a (its own lab)"
  pytest -ra --durations=20 --lab-stream a --junitxml="$artifacts/junit-lab-a.xml" tests/lab "$@" || status=$?
  finish_background "unit and integration tests" "$hostfree" "$hostfree_tmp" "$artifacts/hostfree.log"
  finish_background "lab stream b" "$lab_b" "$b_tmp" "$artifacts/lab-b.log"
fi
finish_background "unit tests a year ahead (--clock-ahead-days 365)" "$ahead" "$ahead_tmp" \
  "$artifacts/unit-year-ahead.log"
echo "==> JUnit XML: $artifacts"
exit "$status"
