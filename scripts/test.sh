#!/usr/bin/env bash
# Installs what is missing, builds from scratch, and runs every test suite:
# C++ unit tests, a short run of the protocol fuzzers, daemon integration
# tests, each client library's tests, the operations tests (install, Debian
# package, units, the docs' commands), a benchmark smoke run and a short soak;
# then the daemon's and the Python library's suites against a sanitizer build.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
scripts/install-deps.sh test || exit 1
rm -rf build build-asan build-pkg
scripts/build.sh || exit 1
export TLSPORTD="$root/build/daemon/tlsportd"
# Debian's python3 has python3-pytest; another python3 first on PATH may not.
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

# A hung test fails its suite instead of stalling the run: pytest stops any
# one test after PYTEST_TIMEOUT seconds, and each suite ends after SUITE_LIMIT.
PYTEST_TIMEOUT=${PYTEST_TIMEOUT:-300}
SUITE_LIMIT=${SUITE_LIMIT:-1500}
failed=()
# Each suite's output is kept, so the end of the run can repeat what failed
# (a failure early in a long suite is otherwise far above the last lines).
suite_logs=$(mktemp -d)
trap 'rm -rf "$suite_logs"' EXIT
run_suite() {
  local name=$1; shift
  local log status
  log="$suite_logs/$((++suite_count)).log"
  echo "=== $name"
  # Into a file, printed when the suite ends (a pipe through tee would wait
  # for any process the suite leaves behind holding it: epmd, a daemon).
  timeout -k 10 "$SUITE_LIMIT" "$@" >"$log" 2>&1
  status=$?
  cat "$log"
  if [ "$status" -eq 0 ]; then
    echo "=== $name: ok"
  else
    echo "=== $name: FAILED (exit $status)"; failed+=("$name")
    failed_logs+=("$log")
  fi
}
failed_logs=()
suite_count=0

run_suite "unit (ctest)" ctest --test-dir build --output-on-failure -j2
# The libFuzzer harnesses of protocol/ (tests/fuzz), built with clang, ASan and
# UBSan, each run from its committed seeds for a bounded time.
run_suite "protocol fuzzers (libFuzzer, ${FUZZ_SECONDS:-8} s each)" \
  scripts/fuzz --fresh "${FUZZ_SECONDS:-8}"
run_suite "daemon integration (pytest)" "$PY" -m pytest -q --timeout "$PYTEST_TIMEOUT" tests/integration
if [ -d client-libs/python/tests ]; then
  run_suite "python client (pytest)" env PYTHONPATH="$root/client-libs/python" \
    "$PY" -m pytest -q --timeout "$PYTEST_TIMEOUT" client-libs/python/tests
fi
if [ -f client-libs/erlang/rebar.config ]; then
  run_suite "erlang client (rebar3 eunit)" bash -c 'cd client-libs/erlang && rebar3 eunit'
fi
if [ -x client-libs/shell/tests/run_tests.sh ]; then
  run_suite "shell client" client-libs/shell/tests/run_tests.sh
fi
# The benchmark at tiny sizes: every server and workload must still run.
run_suite "benchmark smoke (scripts/bench --smoke)" timeout 180 scripts/bench --smoke
# The operations tests build the Debian package from scratch (each step of theirs
# has its own bound, the package build 1200 seconds): longer limits here.
OPS_TIMEOUT=${OPS_TIMEOUT:-1300}
SUITE_LIMIT=${OPS_SUITE_LIMIT:-2400} run_suite "operations (pytest)" \
  "$PY" -m pytest -q --timeout "$OPS_TIMEOUT" tests/ops

run_suite "soak (seconds)" "$PY" scripts/soak --seconds 5 --peers 200 --workers 4 --interval 0.2

# The daemon again, built with AddressSanitizer, UBSan and LeakSanitizer: the
# integration suite fails on any report (tests/integration/conftest.py).
# verify_asan_link_order=0: one test preloads an SSL_new fault injector.
echo "=== building tlsportd with sanitizers"
if cmake -S . -B build-asan -DTLSPORT_SANITIZE=address,undefined -DBUILD_TESTING=OFF >/dev/null &&
   cmake --build build-asan -j"${JOBS:-2}" --target tlsportd >/dev/null; then
  run_suite "daemon integration under sanitizers (pytest)" env \
    TLSPORTD="$root/build-asan/daemon/tlsportd" TLSPORT_SANITIZED=1 \
    TLSPORT_TEST_TOOLS="$root/build/tests/tools" \
    ASAN_OPTIONS=detect_leaks=1:verify_asan_link_order=0 UBSAN_OPTIONS=print_stacktrace=1 \
    "$PY" -m pytest -q --timeout "$PYTEST_TIMEOUT" tests/integration
  # The Python library's suite against the same build: its daemons are spawned
  # by the library, so their reports go to files, and any file is a failure.
  asan_logs=$(mktemp -d)
  run_suite "python client under sanitizers (pytest)" env \
    TLSPORTD="$root/build-asan/daemon/tlsportd" PYTHONPATH="$root/client-libs/python" \
    ASAN_OPTIONS="detect_leaks=1:log_path=$asan_logs/asan" \
    UBSAN_OPTIONS="print_stacktrace=1:log_path=$asan_logs/ubsan" \
    bash -c '"$0" -m pytest -q --timeout "$1" client-libs/python/tests &&
      if [ -n "$(ls -A "$2")" ]; then cat "$2"/*; exit 1; fi' "$PY" "$PYTEST_TIMEOUT" "$asan_logs"
  rm -rf "$asan_logs"
  run_suite "soak under sanitizers (seconds)" env ASAN_OPTIONS=detect_leaks=1 \
    "$PY" scripts/soak --seconds 5 --peers 200 --workers 4 --interval 0.2 --sanitized \
    --daemon "$root/build-asan/daemon/tlsportd"
else
  echo "=== sanitizer build: FAILED"; failed+=("sanitizer build"); failed_logs+=("")
fi

if [ ${#failed[@]} -gt 0 ]; then
  for i in "${!failed[@]}"; do
    [ -n "${failed_logs[$i]}" ] || continue
    echo "--- what failed in ${failed[$i]}:"
    grep -a -A14 -E '\*failed\*|^FAILED |^ERROR |^_{5,} .* _{5,}$|: FAILED|error:|Error:' \
      "${failed_logs[$i]}" | head -80
    echo "--- its last lines:"
    tail -n 15 "${failed_logs[$i]}"
  done
  echo "FAILED suites: ${failed[*]}"
  exit 1
fi
echo "all suites passed"
