#!/usr/bin/env bash
# raw_frames.sh -- talk to tlsportd in its binary encoding (docs/protocol.md
# §1.1, §6.2) with nothing but printf, dd and od: no library, no jq.
#
#   examples/raw_frames.sh HOST PORT          GET / over TLS, every frame decoded
#   examples/raw_frames.sh --dump HOST PORT   hello + connect piped into tlsportd,
#                                             the reply frames shown by od
#
# The server's certificate is not checked ("tls":{"verify":0}).
#
# A frame is a 4-byte big-endian length, then the body. A body starting with
# 0x00 is a CONTROL frame (JSON text follows); 0x01 is a DATA frame (4-byte
# socket id, then the raw bytes). The frame for {"op":"hello","ref":1}:
#   00 00 00 17  00  7b 22 6f 70 22 ...        (length 23 = 1 + 22)
set -euo pipefail
export LC_ALL=C   # ${#s} counts bytes

daemon=${TLSPORTD:-}
if [[ -z $daemon ]]; then
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  daemon=$here/../../../build/daemon/tlsportd
  [[ -x $daemon ]] || daemon=$(command -v tlsportd) \
    || { echo "raw_frames.sh: tlsportd not found (set TLSPORTD)" >&2; exit 2; }
fi

dump=0
[[ ${1:-} == --dump ]] && { dump=1; shift; }
if (( $# != 2 )); then
  echo "usage: raw_frames.sh [--dump] HOST PORT" >&2; exit 2
fi
host=$1 port=$2

# be32 N -- printf escapes of N as 4 big-endian bytes.
be32() {
  printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(( $1 >> 24 & 255 )) $(( $1 >> 16 & 255 )) \
    $(( $1 >> 8 & 255 )) $(( $1 & 255 ))
}
# control JSON -- a CONTROL frame: length, 0x00, the JSON text.
control() {
  # shellcheck disable=SC2059
  printf "$(be32 $(( ${#1} + 1 )))\\x00%s" "$1"
}
# data ID BYTES -- a DATA frame: length, 0x01, the socket id, the bytes.
data() {
  # shellcheck disable=SC2059
  printf "$(be32 $(( ${#2} + 5 )))\\x01$(be32 "$1")%s" "$2"
}

connect="{\"op\":\"connect\",\"ref\":2,\"host\":\"$host\",\"port\":$port,\"tls\":{\"verify\":0}}"

if (( dump )); then
  # What you would type at a prompt: the frames go in, the replies come out.
  # stdin stays open for a second (at EOF the daemon exits at once).
  { control '{"op":"hello","ref":1}'; control "$connect"; sleep 1; } \
    | "$daemon" | od -A d -c
  exit
fi

# Interactive: run the daemon as a coprocess and read its frames one by one.
coproc DAEMON { exec "$daemon"; }
exec {in}<&"${DAEMON[0]}" {out}>&"${DAEMON[1]}"
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT

# read_bytes N -- exactly N bytes from the daemon (dd bs=1 never reads ahead).
read_bytes() { timeout 10 dd bs=1 count="$1" 2>/dev/null <&"$in"; }

# read_frame -- sets TYPE (0 or 1) and BODY (CONTROL: the JSON text) or
# ID and the file $tmp (DATA: the bytes).
read_frame() {
  local h
  read -r -a h < <(read_bytes 5 | od -An -tu1)
  (( ${#h[@]} == 5 )) || { echo "raw_frames.sh: the daemon closed its output" >&2; return 1; }
  local len=$(( h[0] << 24 | h[1] << 16 | h[2] << 8 | h[3] ))
  TYPE=${h[4]}
  if (( TYPE == 0 )); then
    IFS= read -r -t 10 -N $(( len - 1 )) -u "$in" BODY
    echo "<- CONTROL ($len bytes) $BODY"
  else
    read -r -a h < <(read_bytes 4 | od -An -tu1)
    ID=$(( h[0] << 24 | h[1] << 16 | h[2] << 8 | h[3] ))
    read_bytes $(( len - 5 )) > "$tmp"
    echo "<- DATA socket $ID ($(( len - 5 )) bytes):"
    cat "$tmp"; echo
  fi
}

echo "-> CONTROL {\"op\":\"hello\",\"ref\":1} as bytes:"
control '{"op":"hello","ref":1}' | od -A n -t x1 | head -2
control '{"op":"hello","ref":1}' >&"$out"
read_frame

echo "-> CONTROL $connect"
control "$connect" >&"$out"
read_frame
if [[ ! $BODY =~ \"ok\":true ]] || [[ ! $BODY =~ \"id\":([0-9]+) ]]; then
  echo "raw_frames.sh: connect failed" >&2; exit 1
fi
sock=${BASH_REMATCH[1]}

request=$'GET / HTTP/1.0\r\nHost: '"$host"$'\r\n\r\n'
echo "-> DATA socket $sock: GET / HTTP/1.0"
data "$sock" "$request" >&"$out"

# Frames until the server closes the connection.
while read_frame; do
  if (( TYPE == 0 )) && [[ $BODY == *'"event":"socket_closed"'* ]]; then break; fi
done

echo '-> CONTROL {"op":"stop","ref":3}'
control '{"op":"stop","ref":3}' >&"$out"
read_frame
exec {out}>&-
wait
