#!/usr/bin/env bash
# Installs the Debian packages tlsport needs, when any is missing. Safe to
# run again.
#
#   scripts/install-deps.sh run       # to build and run the daemon (scripts/run.sh)
#   scripts/install-deps.sh package   # ... and to build its Debian package (scripts/package)
#   scripts/install-deps.sh test      # ... and everything the tests use (scripts/test.sh)
#   scripts/install-deps.sh --list GROUP   # print the group's packages, install nothing
set -euo pipefail

run=(
  build-essential cmake pkg-config
  libssl-dev openssl ca-certificates
  libasio-dev nlohmann-json3-dev
)
package=(dpkg-dev file binutils gzip)
test=(
  googletest libgtest-dev
  python3 python3-pytest python3-pytest-timeout python3-venv python3-setuptools python3-wheel
  erlang-base erlang-ssl erlang-crypto erlang-public-key erlang-eunit erlang-dev
  erlang-inets erlang-tools erlang-common-test erlang-asn1 erlang-syntax-tools rebar3 git
  jq socat gnutls-bin
  systemd passwd groff-base
  clang libclang-rt-14-dev llvm   # the fuzz harnesses (scripts/fuzz)
  stunnel4   # scripts/bench compares with it; its smoke run is a test suite
)

list=false
if [ "${1:-}" = --list ]; then list=true; shift; fi
case "${1:-test}" in
  run) packages=("${run[@]}") ;;
  package) packages=("${run[@]}" "${package[@]}") ;;
  test) packages=("${run[@]}" "${package[@]}" "${test[@]}") ;;
  *) echo "usage: $0 [--list] run|package|test" >&2; exit 2 ;;
esac
if $list; then printf '%s\n' "${packages[@]}"; exit 0; fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "Installing: ${missing[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
