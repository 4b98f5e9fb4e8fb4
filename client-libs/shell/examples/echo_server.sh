#!/usr/bin/env bash
# echo_server.sh -- a TLS echo server on tlsportd: whatever a client sends
# comes back to it.
#
#   examples/echo_server.sh [--port PORT] [--host ADDR] [--cert FILE --key FILE]
#                           [--count N] [--idle SECONDS]
#
#   --port PORT     port to listen on (default 8443; 0 picks a free one)
#   --host ADDR     address to listen on (default 127.0.0.1)
#   --cert/--key    server certificate and key (default: a self-signed
#                   certificate for "localhost", made with openssl)
#   --count N       exit after serving N clients (default: serve forever)
#   --idle SECONDS  drop a client that sends nothing for this long (default 60)
#
# Prints "echo_server: listening on ADDR:PORT" once it is ready. Clients are
# served one after another. Try it with:
#   openssl s_client -connect 127.0.0.1:8443 -quiet
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=SCRIPTDIR/../tlsport.sh
source "$here/../tlsport.sh"

port=8443 host=127.0.0.1 cert='' key='' count=0 idle=60
while (( $# )); do
  case $1 in
    --port) port=$2; shift 2 ;;
    --host) host=$2; shift 2 ;;
    --cert) cert=$2; shift 2 ;;
    --key) key=$2; shift 2 ;;
    --count) count=$2; shift 2 ;;
    --idle) idle=$2; shift 2 ;;
    -h|--help) sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "echo_server.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

tmp=$(mktemp -d)
cleanup() { tlsport_stop; rm -rf "$tmp"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ -z $cert ]]; then
  cert=$tmp/cert.pem key=$tmp/key.pem
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$key" -out "$cert" 2>/dev/null
fi

tlsport_start
tlsport_listen "$port" --host "$host" --cert "$cert" --key "$key" > /dev/null
lid=$TLSPORT_ID
port=$(tlsport_port "$lid")
echo "echo_server: listening on $host:$port"

served=0
while (( count == 0 || served < count )); do
  # Wait for a client in one-second slices, so that Ctrl-C or a TERM signal
  # is handled promptly (bash runs traps between commands).
  until sock=$(TLSPORT_QUIET=1 tlsport_accept "$lid" 1); do
    rc=$?
    (( rc == 124 )) || { echo "echo_server: accept failed ($rc)" >&2; exit 1; }
  done
  peer=$(tlsport_peername "$sock")
  echo "echo_server: client $sock from ${peer/ /:}"
  bytes=0
  while :; do
    rc=0
    tlsport_recv "$sock" "$idle" > "$tmp/chunk" || rc=$?
    case $rc in
      0) tlsport_send_file "$sock" "$tmp/chunk"
         bytes=$(( bytes + $(wc -c < "$tmp/chunk") )) ;;
      3) break ;;                        # the client closed the connection
      124) tlsport_close "$sock"; break ;;  # idle too long
      *) exit "$rc" ;;
    esac
  done
  tlsport_close "$sock"
  echo "echo_server: client $sock done, $bytes bytes echoed"
  served=$(( served + 1 ))
done
