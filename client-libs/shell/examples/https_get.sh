#!/usr/bin/env bash
# https_get.sh -- fetch a page over HTTPS through tlsportd.
#
#   examples/https_get.sh [OPTIONS] https://HOST[:PORT]/PATH
#
#   -k, --insecure     do not check the server's certificate
#   --cacert FILE      trust this CA / self-signed certificate
#   -i, --include      print the response headers too
#   --timeout SECONDS  connect timeout and idle timeout (default 10)
#
# Prints the body on stdout; exits non-zero on any error (message on stderr).
# Uses HTTP/1.0, so the server closes the connection after the response.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=SCRIPTDIR/../tlsport.sh
source "$here/../tlsport.sh"

opts=() include=0 timeout=10 url=''
while (( $# )); do
  case $1 in
    -k|--insecure) opts+=(--insecure); shift ;;
    --cacert) opts+=(--cacert "$2"); shift 2 ;;
    -i|--include) include=1; shift ;;
    --timeout) timeout=$2; shift 2 ;;
    -h|--help) sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0 ;;
    -*) echo "https_get.sh: unknown option $1" >&2; exit 2 ;;
    *) url=$1; shift ;;
  esac
done
if [[ ! $url =~ ^https://(\[[^]]+\]|[^/:]+)(:([0-9]+))?(/.*)?$ ]]; then
  echo "usage: https_get.sh [-k] [--cacert FILE] [-i] https://HOST[:PORT]/PATH" >&2
  exit 2
fi
host=${BASH_REMATCH[1]} port=${BASH_REMATCH[3]:-443} path=${BASH_REMATCH[4]:-/}
host=${host#[}; host=${host%]}

tlsport_start
trap tlsport_stop EXIT

sock=$(tlsport_connect "$host" "$port" --timeout "$timeout" ${opts[@]+"${opts[@]}"})
tlsport_printf "$sock" 'GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: tlsport-shell\r\nConnection: close\r\n\r\n' \
  "$path" "$host"

response=$(mktemp)
trap 'rm -f "$response"; tlsport_stop' EXIT
tlsport_recv_all "$sock" "$timeout" > "$response"

# Split the headers from the body (byte-exact, the body may be binary).
export LC_ALL=C
hdrlen=0 status=
while IFS= read -r line; do
  hdrlen=$(( hdrlen + ${#line} + 1 ))
  [[ -z $status ]] && status=$line
  [[ $line == $'\r' || -z $line ]] && break
done < "$response"
if [[ $status != HTTP/* ]]; then
  echo "https_get.sh: not an HTTP response" >&2
  exit 1
fi
if (( include )); then cat "$response"; else tail -c +$(( hdrlen + 1 )) "$response"; fi
