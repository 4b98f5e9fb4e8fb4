#!/usr/bin/env bash
# one_liners.sh -- tlsportd straight from the prompt: no library, no coprocess.
#
#   examples/one_liners.sh [HOST PORT]
#
# Runs the one-liners below (the third only when HOST PORT of a TLS web
# server are given). Paste them at a prompt with tlsportd on your PATH.
# At EOF on its input the daemon closes everything and exits, so a command
# that must wait for the network keeps stdin open with a sleep.
set -uo pipefail

# "tlsportd" below is $TLSPORTD, the build tree's daemon, or the one on PATH.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
daemon=${TLSPORTD:-$here/../../../build/daemon/tlsportd}
[[ -x $daemon ]] || daemon=tlsportd
tlsportd() { "$daemon" "$@"; }

echo '# 1. lines encoding: one JSON object per line each way'
printf '{"op":"hello","ref":1}\n' | tlsportd --control lines

echo '# 2. binary encoding: a 4-byte length (0x17 = 23), 0x00 (CONTROL), the JSON'
printf '\x00\x00\x00\x17\x00{"op":"hello","ref":1}' | tlsportd | od -A d -c

if (( $# == 2 )); then
  echo "# 3. lines: connect to $1:$2, send a request as \"text\", wait for the answer"
  { printf '{"op":"connect","ref":1,"host":"%s","port":%s,"tls":{"verify":0}}\n' "$1" "$2"
    sleep 1
    printf '{"op":"deliver","ref":2,"id":1,"text":"GET / HTTP/1.0\\r\\n\\r\\n"}\n'
    sleep 1; } | tlsportd --control lines
fi
