#!/usr/bin/env bash
# Benchmarks the Erlang client: tlsport (through tlsportd) against OTP's own
# ssl, in one run, on loopback. Prints bulk receive MB/s, 100-byte
# {packet,2} echo over 64 connections (round trips/s, p50/p99), full TLS 1.3
# handshakes/s and memory per idle connection, with ratios.
#
#   scripts/bench_erlang.sh [seconds N] [conns N] [idle N] [bulk_mb N] [rounds N] [only PHASE]
#
# PHASE: idle, bulk, echo or handshake. Emulator flags go in ERL_FLAGS, e.g.
#   ERL_FLAGS="+sbwt none +sbwtdcpu none +sbwtdio none" scripts/bench_erlang.sh
# (idle schedulers then sleep instead of spinning, which leaves tlsportd
# more of a small machine's CPU).
#
# The daemon: $TLSPORTD, else build/daemon/tlsportd (scripts/build.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export TLSPORTD="${TLSPORTD:-$root/build/daemon/tlsportd}"
if [ ! -x "$TLSPORTD" ]; then
  echo "no tlsportd at $TLSPORTD: run scripts/build.sh or set TLSPORTD" >&2
  exit 1
fi
cd client-libs/erlang
rebar3 compile >/dev/null
lib=_build/default/lib/tlsport
args=""
for a in "$@"; do args="$args\"$a\","; done
args="[${args%,}]"
exec erl -noshell +A 4 -pa "$lib/ebin" -pa "$lib/bench" \
  -eval "tlsport_bench:main($args), halt()."
