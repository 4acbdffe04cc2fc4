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
lint() {
  echo "==> ansible-lint (production profile)"
  ansible-lint --profile production --offline playbooks roles
}
# The year-ahead pass: its own temp folder, no cache. tests/unit/test_clock_ahead.py fails that pass if the clock
# did not move. At a lower priority (nice 10): it is never on the critical path (a lab stream is).
ahead_tmp="${TMPDIR:-/tmp}/lpse-ops-year-ahead-$$"
year_ahead() {
  nice -n 10 pytest -ra --durations=20 -p no:cacheprovider --basetemp="$ahead_tmp" --clock-ahead-days 365 \
    --junitxml="$artifacts/junit-unit-year-ahead.xml" tests/unit
}
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
  lint
  # Beside the main pass: the tests are mostly one process each, so on two cores the two passes take little
  # more than the longer.
  echo "==> pytest: unit tests with the clock a year ahead (--clock-ahead-days 365), in the background (nice 10)"
  year_ahead >"$artifacts/unit-year-ahead.log" 2>&1 &
  ahead=$!
  echo "==> pytest: unit and integration tests (--fast: no lab)"
  pytest -ra --durations=20 --junitxml="$artifacts/junit-fast.xml" tests/unit tests/integration "$@" || status=$?
else
  # The lab tests run in two streams, each on a lab of its own (tests/lab/conftest.py STREAM_B), both from the
  # start: stream b (lab lpse-testb, ports from 2720; its output in a log) and stream a (lab lpse-test, ports from
  # 2420; its output here). They are the critical path. Their busiest minutes come first: two labs coming up, six
  # sites installing (packages, the roles), the first backup setups and full backups keep both cores busy. After
  # that a stream mostly waits on a site (a bake, a timer, a restore) and leaves about half a core idle. So the
  # host-free work (ansible-lint; the unit and integration tests and the year-ahead pass, nice 10) starts when
  # both streams say their busiest minutes are over (labkit.busiest_minutes_over touches a mark each), or when
  # a stream has ended, or after 15 minutes. (Started at the beginning, it only made those minutes longer.)
  marks="${TMPDIR:-/tmp}/lpse-ops-busy-$$"
  rm -rf "$marks" && mkdir -p "$marks"
  echo "==> pytest: lab stream b (its own lab), in the background"
  b_tmp="${TMPDIR:-/tmp}/lpse-ops-lab-b-$$"
  LPSE_OPS_TEST_LAB_NAME=lpse-testb LPSE_OPS_TEST_PORT_BASE=2720 LPSE_OPS_TEST_BUSY_MARK="$marks/b" \
    pytest -ra --durations=20 -p no:cacheprovider --basetemp="$b_tmp" --lab-stream b \
    --junitxml="$artifacts/junit-lab-b.xml" tests/lab >"$artifacts/lab-b.log" 2>&1 &
  lab_b=$!
  echo "==> pytest: lab stream a (its own lab)"
  LPSE_OPS_TEST_BUSY_MARK="$marks/a" \
    pytest -ra --durations=20 --lab-stream a --junitxml="$artifacts/junit-lab-a.xml" tests/lab "$@" &
  lab_a=$!
  # Returns once both marks exist, or a stream has ended, or after 15 minutes; says which (in each log).
  busiest_minutes_over() {
    local since=$SECONDS
    while [ $((SECONDS - since)) -lt 900 ]; do
      if [ -e "$marks/a" ] && [ -e "$marks/b" ]; then
        echo "==> both lab streams past their busiest minutes after $((SECONDS - since)) s: starting"
        return 0
      fi
      if ! kill -0 "$lab_a" 2>/dev/null || ! kill -0 "$lab_b" 2>/dev/null; then
        echo "==> a lab stream ended first: starting"
        return 0
      fi
      sleep 2
    done
    echo "==> the lab streams were still busy after 15 minutes: starting anyway"
  }
  hostfree_tmp="${TMPDIR:-/tmp}/lpse-ops-hostfree-$$"
  (busiest_minutes_over && exec nice -n 10 pytest -ra --durations=20 -p no:cacheprovider \
    --basetemp="$hostfree_tmp" --junitxml="$artifacts/junit-hostfree.xml" tests/unit tests/integration "$@") \
    >"$artifacts/hostfree.log" 2>&1 &
  hostfree=$!
  (busiest_minutes_over && year_ahead) >"$artifacts/unit-year-ahead.log" 2>&1 &
  ahead=$!
  (busiest_minutes_over && lint) >"$artifacts/ansible-lint.log" 2>&1 &
  linting=$!
  wait "$lab_a" || status=$?
  rc=0
  wait "$linting" || rc=$?
  echo "==> ansible-lint: exit $rc"
  cat "$artifacts/ansible-lint.log"
  [ "$rc" -eq 0 ] || status=$rc
  finish_background "unit and integration tests (nice 10, once the labs' busiest minutes were over)" \
    "$hostfree" "$hostfree_tmp" "$artifacts/hostfree.log"
  finish_background "lab stream b" "$lab_b" "$b_tmp" "$artifacts/lab-b.log"
  rm -rf "$marks"
fi
finish_background "unit tests a year ahead (--clock-ahead-days 365)" "$ahead" "$ahead_tmp" \
  "$artifacts/unit-year-ahead.log"
echo "==> JUnit XML: $artifacts"
exit "$status"
