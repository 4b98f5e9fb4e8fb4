#!/usr/bin/env bash
# Installs what is missing, builds from scratch, and runs every test suite:
# C++ unit tests, daemon integration tests, each client library's tests, and
# the operations tests (install, Debian package, units, the docs' commands).
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

failed=()
run_suite() {
  local name=$1; shift
  echo "=== $name"
  if "$@"; then echo "=== $name: ok"; else echo "=== $name: FAILED"; failed+=("$name"); fi
}

run_suite "unit (ctest)" ctest --test-dir build --output-on-failure -j2
run_suite "daemon integration (pytest)" "$PY" -m pytest -q tests/integration
if [ -d client-libs/python/tests ]; then
  run_suite "python client (pytest)" env PYTHONPATH="$root/client-libs/python" \
    "$PY" -m pytest -q client-libs/python/tests
fi
if [ -f client-libs/erlang/rebar.config ]; then
  run_suite "erlang client (rebar3 eunit)" bash -c 'cd client-libs/erlang && rebar3 eunit'
fi
if [ -x client-libs/shell/tests/run_tests.sh ]; then
  run_suite "shell client" client-libs/shell/tests/run_tests.sh
fi
run_suite "operations (pytest)" "$PY" -m pytest -q tests/ops

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
    "$PY" -m pytest -q tests/integration
else
  echo "=== sanitizer build: FAILED"; failed+=("sanitizer build")
fi

if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED suites: ${failed[*]}"
  exit 1
fi
echo "all suites passed"
