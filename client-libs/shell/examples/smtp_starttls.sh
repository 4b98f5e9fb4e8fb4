#!/usr/bin/env bash
# smtp_starttls.sh -- an SMTP-style dialogue that starts in plaintext and
# upgrades to TLS with STARTTLS, on either end.
#
#   examples/smtp_starttls.sh server [--port PORT] [--host ADDR]
#                                    [--cert FILE --key FILE] [--count N]
#   examples/smtp_starttls.sh client HOST PORT [--cacert FILE | -k]
#                                    [--from ADDR] [--to ADDR]
#
# server: listens in plaintext, greets, offers STARTTLS in its EHLO reply,
#   upgrades when asked, then takes one message per client (MAIL FROM, RCPT
#   TO, DATA) and prints it. Without --cert/--key it makes a self-signed
#   certificate for "localhost". It prints "smtp_starttls: listening on
#   ADDR:PORT" once ready and exits after --count clients (default: never).
#   Try it with:
#     openssl s_client -connect 127.0.0.1:2525 -starttls smtp -quiet
# client: sends one message (its body read from stdin) to an SMTP server
#   that offers STARTTLS, refusing to go on in plaintext, and prints the
#   dialogue on stderr.
#
# The upgrade must not race the peer's first TLS bytes (protocol.md,
# starttls): every plaintext line is read with "--active once" -- one line,
# then the daemon stops reading -- so that nothing after the STARTTLS
# exchange is taken for plaintext.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=SCRIPTDIR/../tlsport.sh
source "$here/../tlsport.sh"

usage() { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit "${1:-2}"; }
say() { echo "smtp_starttls: $*" >&2; }

role=${1:-}; shift || true
tmp=$(mktemp -d)
cleanup() { tlsport_stop; rm -rf "$tmp"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# read_line SOCK -- the next line from SOCK (CR LF removed) into $line,
# leaving the socket passive afterwards. Returns non-zero at the end.
read_line() {
  tlsport_setopts "$1" --active once
  tlsport_recv "$1" 30 > "$tmp/line" || return
  line=$(tr -d '\r\n' < "$tmp/line")
}

# send_line SOCK TEXT -- one line with CR LF.
send_line() { tlsport_printf "$1" '%s\r\n' "$2"; }

# ---------------------------------------------------------------- server

serve_client() {
  local s=$1 line cmd secure=0 from='' rcpt='' body
  send_line "$s" "220 localhost ESMTP tlsport"
  while read_line "$s"; do
    cmd=${line%% *}; cmd=${cmd^^}
    case $cmd in
      EHLO|HELO)
        if (( secure )); then
          send_line "$s" "250 localhost"
        else
          tlsport_printf "$s" '250-localhost\r\n250 STARTTLS\r\n'
        fi ;;
      STARTTLS)
        (( secure )) && { send_line "$s" "503 TLS already active"; continue; }
        send_line "$s" "220 Ready to start TLS"
        # The client's ClientHello may already be on its way: the socket is
        # passive since the STARTTLS line, so none of it is read as text.
        tlsport_starttls "$s" server --cert "$cert" --key "$key" --timeout 10 || return 0
        secure=1
        say "client $s: $(tlsport_info "$s" protocol) $(tlsport_info "$s" cipher)" ;;
      MAIL|RCPT|DATA)
        if (( ! secure )); then send_line "$s" "530 Must issue a STARTTLS command first"; continue; fi
        case $cmd in
          MAIL) from=${line#*:}; send_line "$s" "250 OK" ;;
          RCPT) rcpt=${line#*:}; send_line "$s" "250 OK" ;;
          DATA)
            send_line "$s" "354 End data with <CR><LF>.<CR><LF>"
            body=''
            while read_line "$s" && [[ $line != . ]]; do body+=${line#.}$'\n'; done
            say "message from $from to $rcpt:"
            printf '%s' "$body"
            send_line "$s" "250 OK: queued" ;;
        esac ;;
      NOOP) send_line "$s" "250 OK" ;;
      QUIT) send_line "$s" "221 Bye"; break ;;
      *) send_line "$s" "502 Command not implemented" ;;
    esac
  done
  tlsport_close "$s"
}

run_server() {
  local port=2525 host=127.0.0.1 count=0 served=0 lid s
  cert='' key=''
  while (( $# )); do
    case $1 in
      --port) port=$2; shift 2 ;;
      --host) host=$2; shift 2 ;;
      --cert) cert=$2; shift 2 ;;
      --key) key=$2; shift 2 ;;
      --count) count=$2; shift 2 ;;
      *) say "unknown option $1"; exit 2 ;;
    esac
  done
  if [[ -z $cert ]]; then
    cert=$tmp/cert.pem key=$tmp/key.pem
    openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
      -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
      -keyout "$key" -out "$cert" 2>/dev/null
  fi
  tlsport_start
  # Plain TCP, one line per packet, and accepted sockets start passive.
  tlsport_listen "$port" --host "$host" --plain --mode line --active false > /dev/null
  lid=$TLSPORT_ID
  say "listening on $host:$(tlsport_port "$lid")"
  while (( count == 0 || served < count )); do
    until s=$(TLSPORT_QUIET=1 tlsport_accept "$lid" 1); do
      (( $? == 124 )) || { say "accept failed"; exit 1; }
    done
    say "client $s from $(tlsport_peername "$s")"
    serve_client "$s"
    served=$(( served + 1 ))
  done
}

# ---------------------------------------------------------------- client

# reply SOCK -- read a (multi-line) reply into $code and $text (the lines).
reply() {
  text=''
  while read_line "$1"; do
    say "<- $line"
    text+=$line$'\n'
    [[ $line =~ ^([0-9]{3})([ -]) ]] || { say "not an SMTP reply: $line"; exit 1; }
    code=${BASH_REMATCH[1]}
    [[ ${BASH_REMATCH[2]} == ' ' ]] && return 0
  done
  say "the server closed the connection"; exit 1
}

# smtp_cmd SOCK LINE EXPECTED -- send LINE, expect a reply with code EXPECTED.
smtp_cmd() {
  say "-> $2"
  send_line "$1" "$2"
  reply "$1"
  [[ $code == "$3" ]] || { say "expected $3, got $code"; exit 1; }
}

run_client() {
  local host=${1:-} port=${2:-} tlsopts=() from=me@localhost to=you@localhost s line
  [[ -n $host && -n $port ]] || usage
  shift 2
  while (( $# )); do
    case $1 in
      --cacert) tlsopts+=(--cacert "$2"); shift 2 ;;
      -k|--insecure) tlsopts+=(--insecure); shift ;;
      --from) from=$2; shift 2 ;;
      --to) to=$2; shift 2 ;;
      *) say "unknown option $1"; exit 2 ;;
    esac
  done
  tlsport_start
  s=$(tlsport_connect "$host" "$port" --plain --mode line --active false)
  reply "$s"; [[ $code == 220 ]] || { say "no greeting"; exit 1; }
  smtp_cmd "$s" "EHLO localhost" 250
  [[ $text == *STARTTLS* ]] || { say "the server does not offer STARTTLS"; exit 1; }
  smtp_cmd "$s" STARTTLS 220
  # The name for SNI and the certificate check is HOST, from the connect.
  tlsport_starttls "$s" client ${tlsopts[@]+"${tlsopts[@]}"}
  say "TLS: $(tlsport_info "$s" protocol) $(tlsport_info "$s" cipher)"
  smtp_cmd "$s" "EHLO localhost" 250
  smtp_cmd "$s" "MAIL FROM:<$from>" 250
  smtp_cmd "$s" "RCPT TO:<$to>" 250
  smtp_cmd "$s" DATA 354
  while IFS= read -r line || [[ -n $line ]]; do
    [[ $line == .* ]] && line=.$line          # dot-stuffing
    send_line "$s" "$line"
  done
  smtp_cmd "$s" . 250
  smtp_cmd "$s" QUIT 221
  tlsport_close "$s"
}

case $role in
  server) run_server "$@" ;;
  client) run_client "$@" ;;
  -h|--help) usage 0 ;;
  *) usage ;;
esac
