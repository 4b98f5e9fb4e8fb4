#!/usr/bin/env bash
# Installs the Debian packages tlsport needs to build, run and test, when
# any is missing. Safe to run again.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  libssl-dev openssl ca-certificates
  libasio-dev nlohmann-json3-dev googletest libgtest-dev
  python3 python3-pytest python3-pytest-timeout python3-venv
  erlang-base erlang-ssl erlang-crypto erlang-public-key erlang-eunit erlang-dev
  erlang-inets erlang-tools erlang-common-test erlang-asn1 erlang-syntax-tools rebar3
  jq socat gnutls-bin
  clang libclang-rt-14-dev llvm
  stunnel4   # scripts/bench compares with it; its smoke run is a test suite
)

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
