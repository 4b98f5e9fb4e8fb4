#!/usr/bin/env bash
# shellcheck disable=SC2015  # "a && b || fail" is meant: fail when either fails
# Tests of the shell client library and its examples.
#
#   TLSPORTD=build/daemon/tlsportd client-libs/shell/tests/run_tests.sh [TEST...]
#
# Prints one line per test and "N passed, M failed"; exits 1 when a test
# failed. Each test runs in its own bash process under a time limit.
# Needs bash >= 5, jq, openssl, socat, python3, timeout.
set -uo pipefail

TESTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SHELL_DIR=$(cd "$TESTS_DIR/.." && pwd)
LIB=$SHELL_DIR/tlsport.sh
EX=$SHELL_DIR/examples
PER_TEST_TIMEOUT=${PER_TEST_TIMEOUT:-20}
# Tests that run several peers one after the other get three times as long.
LONG_TESTS=" test_large_transfers test_example_smtp_starttls test_starttls_server test_ticket_keys "

# ---------------------------------------------------------------- helpers
# (used inside the tests; each test runs with "set -e" off and fails through
# the fail/check helpers)

fail() { echo "FAILED: $*" >&2; exit 1; }
# check DESCRIPTION COMMAND... -- the command must succeed
check() { local d=$1; shift; "$@" || fail "$d"; }
# expect_rc RC DESCRIPTION COMMAND... -- the command must return RC
expect_rc() {
  local want=$1 d=$2 rc=0; shift 2
  "$@" || rc=$?
  [[ $rc == "$want" ]] || fail "$d: expected return code $want, got $rc"
}
contains() { [[ $1 == *"$2"* ]] || fail "expected to find '$2' in: ${1:0:300}"; }

# Start "openssl s_server -www" on a free port; sets SERVER_PORT, SERVER_PID.
start_web_server() {
  local i
  timeout 20 openssl s_server -www -accept 127.0.0.1:0 -cert "$CERT" -key "$KEY" \
    -naccept "${1:-1}" > "$T/s_server.out" 2>&1 < /dev/null &
  for (( i = 0; i < 100; i++ )); do
    SERVER_PORT=$(sed -n 's/^ACCEPT .*:\([0-9][0-9]*\)$/\1/p' "$T/s_server.out")
    [[ -n $SERVER_PORT ]] && return 0
    sleep 0.05
  done
  fail "openssl s_server did not start: $(cat "$T/s_server.out")"
}

# loopback [LISTEN_OPTS...] -- a listener and one connection to it in this
# session: sets L (listener), C (client side), S (server side), PORT.
loopback() {
  local h
  L=$(tlsport_listen 0 --host 127.0.0.1 --cert "$CERT" --key "$KEY" "$@") || fail "listen"
  PORT=$(tlsport_port "$L") || fail "tlsport_port"
  [[ $PORT =~ ^[1-9][0-9]*$ ]] || fail "listen gave no port"
  h=$(tlsport_accept_async "$L") || fail "accept_async"
  C=$(tlsport_connect localhost "$PORT" --cacert "$CERT" ${CONNECT_OPTS[@]+"${CONNECT_OPTS[@]}"}) \
    || fail "connect"
  S=$(tlsport_accept_wait "$h" 5) || fail "accept_wait"
}

wait_gone() {  # wait_gone PID [SECONDS]
  local i n=$(( ${2:-5} * 20 ))
  for (( i = 0; i < n; i++ )); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.05; done
  return 1
}

# ---------------------------------------------------------------- tests

test_find_daemon() {
  local d
  d=$(tlsport_find_daemon) || fail "find with TLSPORTD"
  [[ $d == "$TLSPORTD" ]] || fail "TLSPORTD not used: $d"
  # A bad TLSPORTD is an error.
  expect_rc 2 "bad TLSPORTD" env TLSPORTD=/nonexistent bash -c "source '$LIB'; tlsport_find_daemon"
  # Then tlsportd on PATH (an installed daemon), even next to a build tree.
  mkdir -p "$T/repo/client-libs/shell" "$T/repo/build/daemon" "$T/bin" "$T/lib"
  cp "$LIB" "$T/repo/client-libs/shell/"
  ln -s "$TLSPORTD" "$T/repo/build/daemon/tlsportd"
  cp "$LIB" "$T/lib/"
  ln -s "$TLSPORTD" "$T/bin/tlsportd"
  d=$(env -u TLSPORTD PATH="$T/bin:$PATH" bash -c "source '$T/lib/tlsport.sh'; tlsport_find_daemon") \
    || fail "PATH"
  [[ $d == "$T/bin/tlsportd" ]] || fail "PATH not used: $d"
  d=$(env -u TLSPORTD PATH="$T/bin:$PATH" \
        bash -c "source '$T/repo/client-libs/shell/tlsport.sh'; tlsport_find_daemon") || fail "PATH first"
  [[ $d == "$T/bin/tlsportd" ]] || fail "the build tree came before PATH: $d"
  # Then the build tree next to the library (<repo>/build/daemon/tlsportd).
  if PATH=/usr/bin:/bin type -P tlsportd >/dev/null; then
    echo "  (a tlsportd is installed in /usr/bin: build-tree lookup not checked)"
  else
    d=$(env -u TLSPORTD PATH=/usr/bin:/bin \
          bash -c "source '$T/repo/client-libs/shell/tlsport.sh'; tlsport_find_daemon") \
      || fail "build tree"
    [[ $d == "$T/repo/build/daemon/tlsportd" ]] || fail "build tree not used: $d"
  fi
  # And tlsport_start works with the daemon found on PATH.
  env -u TLSPORTD PATH="$T/bin:$PATH" bash -c \
    "source '$T/lib/tlsport.sh'; tlsport_start && tlsport_stop" || fail "start from PATH"
}

test_start_stop() {
  local pid dir n
  check "start" tlsport_start
  [[ $TLSPORT_CLIENT =~ ^[0-9]+$ ]] || fail "no client number after start"
  [[ $TLSPORT_MODE == spawned ]] || fail "mode $TLSPORT_MODE"
  pid=$TLSPORT_PID dir=$TLSPORT_DIR
  kill -0 "$pid" || fail "daemon not running"
  expect_rc 2 "second start" tlsport_start
  n=$(tlsport_hello worker-1) || fail "hello with a name"
  [[ $n == "$TLSPORT_CLIENT" ]] || fail "hello: client $n, expected $TLSPORT_CLIENT"
  check "stop" tlsport_stop
  wait_gone "$pid" 3 || fail "daemon still running after stop"
  [[ ! -d $dir ]] || fail "state directory left behind"
  check "stop again" tlsport_stop
  expect_rc 2 "connect without a session" tlsport_connect localhost 443
  # A second session in the same shell.
  check "restart" tlsport_start
  check "stop" tlsport_stop
  # A script that exits without tlsport_stop: the daemon sees EOF and exits,
  # and the state directory goes with it.
  bash -c "source '$LIB'; tlsport_start || exit 1; echo \"\$TLSPORT_PID \$TLSPORT_DIR\"" > "$T/s" \
    || fail "start in a script"
  read -r pid dir < "$T/s"
  wait_gone "$pid" 3 || fail "daemon still running after its script exited"
  for (( n = 0; n < 40; n++ )); do [[ -d $dir ]] || break; sleep 0.05; done
  [[ ! -d $dir ]] || fail "state directory left behind by a script without tlsport_stop"
}

test_text_roundtrip() {
  local out info hp
  tlsport_start || fail start
  loopback
  check "send" tlsport_send "$C" "hello, server"
  out=$(tlsport_recv "$S" 5) || fail "recv on server side"
  [[ $out == "hello, server" ]] || fail "got '$out'"
  check "printf" tlsport_printf "$S" 'line %d\r\n%s\n' 1 two
  tlsport_recv "$C" 5 > "$T/out" || fail "recv on client side"
  printf 'line 1\r\ntwo\n' | cmp -s - "$T/out" || fail "printf bytes differ: $(od -c "$T/out")"
  check "multi-word send" tlsport_send "$C" two words
  [[ $(tlsport_recv "$S" 5) == "two words" ]] || fail "arguments not joined by a space"
  hp=$(tlsport_peername "$C") || fail peername
  [[ $hp == "127.0.0.1 $PORT" ]] || fail "peername: $hp"
  hp=$(tlsport_sockname "$S") || fail sockname
  [[ $hp == "127.0.0.1 $PORT" ]] || fail "sockname: $hp"
  [[ $(tlsport_sockname "$L") == "127.0.0.1 $PORT" ]] || fail "sockname of the listener"
  expect_rc 2 "recv on a listener" tlsport_recv "$L" 5 2>/dev/null
  tlsport_listen 0 --host 127.0.0.1 --cert "$CERT" --key "$KEY" > /dev/null || fail "listen"
  # shellcheck disable=SC2153
  [[ $TLSPORT_PORT =~ ^[1-9][0-9]*$ && $TLSPORT_ID =~ ^[0-9]+$ ]] || fail "TLSPORT_PORT/TLSPORT_ID not set"
  tlsport_accept "$TLSPORT_ID" 0.1 2>/dev/null; [[ $? == 124 ]] || fail "accept timeout"
  info=$(tlsport_info "$C") || fail info
  [[ $(jq -r .protocol <<<"$info") == TLSv1.* ]] || fail "info: $info"
  [[ $(jq -r .verify_result.code <<<"$info") == 0 ]] || fail "verify result: $info"
  check "close client" tlsport_close "$C"
  expect_rc 3 "send after close" tlsport_send "$C" late 2>/dev/null
  expect_rc 3 "printf after close" tlsport_printf "$C" late 2>/dev/null
  check "close server" tlsport_close "$S"
  check "close listener" tlsport_close "$L"
  expect_rc 1 "close twice (unknown to the daemon)" tlsport_close 999999
  tlsport_stop
}

test_binary_file_and_stdin() {
  tlsport_start || fail start
  loopback
  head -c 300000 /dev/urandom > "$T/big"
  printf 'a\0b\0\377\r\n' > "$T/small"
  check "send_file" tlsport_send_file "$C" "$T/big"
  : > "$T/got"
  while (( $(wc -c < "$T/got") < 300000 )); do
    tlsport_recv "$S" 5 >> "$T/got" || fail "recv big"
  done
  cmp -s "$T/big" "$T/got" || fail "300 kB binary differs"
  check "send_file from stdin" tlsport_send_file "$S" - < "$T/small"
  tlsport_recv "$C" 5 > "$T/got2" || fail "recv small"
  cmp -s "$T/small" "$T/got2" || fail "NUL/0xff bytes differ: $(od -c "$T/got2")"
  # Piped into tlsport_send_file (runs in a subshell: state is in files).
  printf 'piped\n' | tlsport_send_file "$C" || fail "piped send"
  [[ $(tlsport_recv "$S" 5) == piped ]] || fail "piped data"
  expect_rc 2 "missing file" tlsport_send_file "$C" "$T/nonexistent"
  tlsport_stop
}

test_events_kept_while_waiting() {
  local a b c
  tlsport_start || fail start
  CONNECT_OPTS=(--mode packet:2)
  loopback --mode packet:2
  # Three packets arrive while we wait for replies to other commands.
  tlsport_send "$C" first && tlsport_send "$C" second && tlsport_send "$C" third \
    || fail "send"
  tlsport_send "$S" to-client || fail "send back"
  sleep 0.3
  tlsport_info "$S" > /dev/null || fail info
  tlsport_peername "$C" > /dev/null || fail peername
  tlsport_request '{"op":"resolve"}' > /dev/null || fail resolve
  a=$(tlsport_recv "$S" 5) && b=$(tlsport_recv "$S" 5) && c=$(tlsport_recv "$S" 5) \
    || fail "recv after other commands"
  [[ "$a $b $c" == "first second third" ]] || fail "got '$a $b $c'"
  [[ $(tlsport_recv "$C" 5) == to-client ]] || fail "other socket's data lost"
  # The queue is empty now.
  TLSPORT_QUIET=1 expect_rc 124 "nothing more" tlsport_recv "$S" 0.2
  tlsport_stop
}

test_large_transfers() {
  local i
  tlsport_start || fail start
  loopback
  head -c 1000000 /dev/urandom > "$T/m1"
  # Three 1 MB sends to our own socket without reading it in between: the
  # daemon's flow control must not deadlock the library.
  for i in 1 2 3; do tlsport_send_file "$C" "$T/m1" || fail "send $i"; done
  : > "$T/got"
  while (( $(wc -c < "$T/got") < 3000000 )); do
    tlsport_recv "$S" 5 >> "$T/got" || fail "recv after $(wc -c < "$T/got") bytes"
  done
  cat "$T/m1" "$T/m1" "$T/m1" | cmp -s - "$T/got" || fail "3 MB differ"
  # One 700 kB packet (one long line from the daemon), waited for with short
  # timeouts.
  CONNECT_OPTS=(--mode packet:4)
  loopback --mode packet:4
  head -c 700000 /dev/urandom > "$T/p"
  tlsport_send_file "$S" "$T/p" || fail "send packet"
  i=0
  until TLSPORT_QUIET=1 tlsport_recv "$C" 0.01 > "$T/pgot"; do
    (( $? == 124 && ++i < 1000 )) || fail "recv packet"
  done
  cmp -s "$T/p" "$T/pgot" || fail "700 kB packet differs"
  tlsport_stop
}

test_line_mode() {
  local l1 l2
  tlsport_start || fail start
  CONNECT_OPTS=(--mode line)
  loopback
  tlsport_send "$S" $'alpha\nbeta\ngam' || fail send
  tlsport_send "$S" $'ma\n' || fail send
  l1=$(tlsport_recv "$C" 5; echo x) && l2=$(tlsport_recv "$C" 5; echo x) || fail recv
  [[ $l1 == $'alpha\nx' && $l2 == $'beta\nx' ]] || fail "lines: '$l1' '$l2'"
  [[ $(tlsport_recv "$C" 5) == gamma ]] || fail "line split across sends"
  tlsport_stop
}

test_recv_timeout() {
  local t0 t1 err
  tlsport_start || fail start
  loopback
  t0=${EPOCHREALTIME/./}
  expect_rc 124 "recv timeout" tlsport_recv "$S" 0.3 2> "$T/err"
  t1=${EPOCHREALTIME/./}
  (( t1 - t0 >= 250000 && t1 - t0 < 3000000 )) || fail "timeout took $(( (t1 - t0) / 1000 )) ms"
  err=$(cat "$T/err")
  contains "$err" "tlsport_recv: timeout:"
  expect_rc 2 "bad timeout" tlsport_recv "$S" soon
  # Data after a timeout is still received.
  tlsport_send "$C" late || fail send
  [[ $(tlsport_recv "$S" 5) == late ]] || fail "data after a timeout"
  tlsport_stop
}

test_peer_close_and_recv_all() {
  local err
  tlsport_start || fail start
  loopback
  tlsport_send "$S" "part1 " && tlsport_send "$S" "part2 " && tlsport_send "$S" "part3" || fail send
  check "close server side" tlsport_close "$S"
  tlsport_recv_all "$C" 5 > "$T/all" 2> "$T/err" || fail "recv_all returned $?"
  [[ $(cat "$T/all") == "part1 part2 part3" ]] || fail "recv_all: $(cat "$T/all")"
  [[ ! -s $T/err ]] || fail "stderr on a normal close: $(cat "$T/err")"
  expect_rc 3 "recv after close" tlsport_recv "$C" 1
  check "close a socket the peer closed" tlsport_close "$C"
  # Peer close seen by recv directly.
  loopback
  tlsport_close "$C" || fail close
  expect_rc 3 "recv on closed" tlsport_recv "$S" 5 2> "$T/err"
  [[ ! -s $T/err ]] || fail "stderr on a normal close: $(cat "$T/err")"
  tlsport_stop
}

test_abnormal_close() {
  local err
  tlsport_start || fail start
  CONNECT_OPTS=(--mode packet:2)
  loopback --mode packet:2 --packet-size 10
  tlsport_send "$C" "more than ten bytes" || fail send
  expect_rc 3 "recv on a socket closed by emsgsize" tlsport_recv "$S" 5 2> "$T/err"
  err=$(cat "$T/err")
  contains "$err" "tlsport_recv: emsgsize:"
  contains "$err" "socket $S closed"
  # The other side sees the connection closed.
  expect_rc 0 "recv_all on the peer" tlsport_recv_all "$C" 5
  # recv_all returns 3 on an abnormal close.
  loopback --mode packet:2 --packet-size 10
  tlsport_send "$C" "more than ten bytes" || fail send
  TLSPORT_QUIET=1 expect_rc 3 "recv_all on an abnormal close" tlsport_recv_all "$S" 5
  tlsport_stop
}

test_accept_timeout_and_cancel() {
  local h
  tlsport_start || fail start
  L=$(tlsport_listen 0 --host 127.0.0.1 --cert "$CERT" --key "$KEY") || fail listen
  expect_rc 124 "accept timeout" tlsport_accept "$L" 0.3 2> "$T/err"
  contains "$(cat "$T/err")" "tlsport_accept: timeout:"
  # The listener still works after the cancelled accept.
  h=$(tlsport_accept_async "$L") || fail accept_async
  C=$(tlsport_connect 127.0.0.1 "$(tlsport_port "$L")" --insecure) || fail connect
  S=$(tlsport_accept_wait "$h" 5) || fail "accept after a cancel"
  tlsport_send "$C" ok && [[ $(tlsport_recv "$S" 5) == ok ]] || fail data
  # A connection from another process with plain tlsport_accept.
  python3 - "$(tlsport_port "$L")" <<'EOF' &
import socket, ssl, sys, time
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5) as raw:
    with ctx.wrap_socket(raw) as s:
        s.sendall(b"from python"); time.sleep(1)
EOF
  local py=$!
  S=$(tlsport_accept "$L" 5) || fail "accept a python client"
  [[ $(tlsport_recv "$S" 5) == "from python" ]] || fail "python data"
  wait "$py"   # not a bare "wait": that would wait for the daemon (a coprocess) too
  tlsport_stop
}

test_connect_errors() {
  local err port
  tlsport_start || fail start
  # A closed port: bind one, then close it.
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  expect_rc 1 "connect to a closed port" tlsport_connect 127.0.0.1 "$port" 2> "$T/err"
  err=$(cat "$T/err")
  contains "$err" "tlsport_connect: econnrefused:"
  tlsport_connect 127.0.0.1 "$port" 2>/dev/null
  [[ $TLSPORT_ERROR_KIND == econnrefused ]] || fail "TLSPORT_ERROR_KIND=$TLSPORT_ERROR_KIND"
  [[ $(tlsport_last_error) == econnrefused* ]] || fail "tlsport_last_error: $(tlsport_last_error)"
  expect_rc 1 "unknown host" tlsport_connect no-such-host.invalid 443 --timeout 5 2> "$T/err"
  contains "$(cat "$T/err")" "tlsport_connect: nxdomain:"
  # A self-signed certificate is refused by default, and by a wrong name.
  start_web_server 3
  expect_rc 1 "untrusted certificate" tlsport_connect localhost "$SERVER_PORT" 2> "$T/err"
  contains "$(cat "$T/err")" "tlsport_connect: tls:"
  expect_rc 1 "wrong host name" tlsport_connect 127.0.0.1 "$SERVER_PORT" --cacert "$CERT" \
    --verify-hostname other.example 2> "$T/err"
  contains "$(cat "$T/err")" "tlsport_connect: tls:"
  C=$(tlsport_connect localhost "$SERVER_PORT" --cacert "$CERT") || fail "trusted connect"
  # Usage errors.
  expect_rc 2 "no port" tlsport_connect localhost 2>/dev/null
  expect_rc 2 "bad option" tlsport_connect localhost 443 --bogus 2>/dev/null
  expect_rc 2 "bad --tls" tlsport_connect localhost 443 --tls '[1]' 2>/dev/null
  expect_rc 2 "bad id" tlsport_send abc hi 2>/dev/null
  expect_rc 2 "listen usage" tlsport_listen 2>/dev/null
  # Daemon errors on other commands.
  expect_rc 1 "send to an unknown socket" tlsport_send 999999 hi 2> "$T/err"
  contains "$(cat "$T/err")" "tlsport_send: no_such_socket:"
  expect_rc 1 "listen without a certificate" tlsport_listen 0 --host 127.0.0.1 2> "$T/err"
  [[ -s $T/err ]] || fail "no message for listen without a certificate"
  expect_rc 1 "listen on a port in use" tlsport_listen "$SERVER_PORT" --host 127.0.0.1 \
    --cert "$CERT" --key "$KEY" 2> "$T/err"
  contains "$(cat "$T/err")" "tlsport_listen: eaddrinuse:"
  expect_rc 1 "missing certificate file" tlsport_listen 0 --cert "$T/none.pem" --key "$KEY" 2> "$T/err"
  contains "$(cat "$T/err")" "tlsport_listen: bad_tls_config:"
  tlsport_stop
}

test_connect_timeout() {
  # A plain TCP listener never answers the TLS handshake: the daemon's
  # timeout_ms is answered as kind "timeout".
  local t0 t1
  tlsport_start || fail start
  L=$(tlsport_listen 0 --host 127.0.0.1 --plain) || fail listen
  t0=${EPOCHREALTIME/./}
  expect_rc 1 "handshake timeout" tlsport_connect 127.0.0.1 "$(tlsport_port "$L")" --insecure --timeout 0.5 2> "$T/err"
  t1=${EPOCHREALTIME/./}
  contains "$(cat "$T/err")" "tlsport_connect: timeout:"
  (( t1 - t0 < 3000000 )) || fail "connect timeout took $(( (t1 - t0) / 1000 )) ms"
  tlsport_stop
}

test_request() {
  local r
  tlsport_start || fail start
  r=$(tlsport_request '{"op":"resolve","address":"127.0.0.1"}') || fail "resolve"
  [[ $(jq -r .ok <<<"$r") == true ]] || fail "reply: $r"
  expect_rc 1 "unknown op" tlsport_request '{"op":"frobnicate"}' 2> "$T/err" > "$T/out"
  contains "$(cat "$T/err")" 'tlsport_request: bad_request: unknown op "frobnicate"'
  [[ $(jq -r .error.kind "$T/out") == bad_request ]] || fail "error reply not printed"
  expect_rc 2 "not JSON" tlsport_request 'hello' 2>/dev/null
  # setopts + the daemon's recv command through tlsport_request.
  loopback
  tlsport_request "{\"op\":\"setopts\",\"id\":$S,\"active\":false}" > /dev/null || fail setopts
  tlsport_send "$C" passive-data || fail send
  r=$(tlsport_request "{\"op\":\"recv\",\"id\":$S,\"timeout_ms\":3000}" 5) || fail "recv op"
  [[ $(jq -r .data <<<"$r" | base64 -d) == passive-data ]] || fail "recv op: $r"
  # active:1 -> one fromsocket, then a "passive" event (tlsport_event shows both).
  tlsport_request "{\"op\":\"setopts\",\"id\":$S,\"active\":1}" > /dev/null || fail "setopts 1"
  tlsport_send "$C" once || fail send
  r=$(tlsport_event "$S" 5) || fail "event 1"
  [[ $(jq -r '"\(.event) \(.data|@base64d)"' <<<"$r") == "fromsocket once" ]] || fail "event: $r"
  r=$(tlsport_event "$S" 5) || fail "event 2"
  [[ $(jq -r .event <<<"$r") == passive ]] || fail "passive event: $r"
  tlsport_stop
}

test_daemon_dies() {
  tlsport_start || fail start
  kill -KILL "$TLSPORT_PID"
  sleep 0.2
  expect_rc 4 "connect after the daemon died" tlsport_connect 127.0.0.1 1 2> "$T/err"
  contains "$(cat "$T/err")" "tlsport_connect: daemon:"
  expect_rc 4 "again" tlsport_hello 2>/dev/null
  check "stop cleans up" tlsport_stop
  check "start again" tlsport_start
  tlsport_stop
}

test_set_e_script() {
  # A user script with set -euo pipefail.
  cat > "$T/user.sh" <<EOF
set -euo pipefail
source '$LIB'
tlsport_start
trap tlsport_stop EXIT
L=\$(tlsport_listen 0 --host 127.0.0.1 --cert '$CERT' --key '$KEY')
h=\$(tlsport_accept_async "\$L")
C=\$(tlsport_connect localhost "\$(tlsport_port "\$L")" --cacert '$CERT')
S=\$(tlsport_accept_wait "\$h" 5)
tlsport_send "\$C" ping
[[ \$(tlsport_recv "\$S" 5) == ping ]]
if tlsport_recv "\$S" 0.1 2>/dev/null; then exit 1; fi
tlsport_close "\$C"
echo done
EOF
  [[ $(bash "$T/user.sh") == "done" ]] || fail "set -euo pipefail script"
}

test_unix_attach() {
  local sock=$T/d.sock dpid i
  "$TLSPORTD" --unix "$sock" --log-level error &
  dpid=$!
  for (( i = 0; i < 100; i++ )); do [[ -S $sock ]] && break; sleep 0.05; done
  [[ -S $sock ]] || fail "tlsportd --unix did not create its socket"
  check "attach" tlsport_attach "$sock"
  [[ $TLSPORT_MODE == attached ]] || fail "mode $TLSPORT_MODE"
  loopback
  tlsport_send "$C" via-unix && [[ $(tlsport_recv "$S" 5) == via-unix ]] || fail "data over the unix socket"
  check "detach" tlsport_detach
  kill -0 "$dpid" || fail "daemon gone after detach"
  # Another client, from another process, while we attach again.
  check "attach again" tlsport_attach "$sock"
  tlsport_hello taken > /dev/null || fail "hello with a name"
  bash -c "source '$LIB'; tlsport_attach '$sock' || exit 9; tlsport_hello free > /dev/null || exit 8
           tlsport_hello taken > /dev/null; rc=\$?; tlsport_detach; exit \$rc" 2> "$T/err"
  (( $? == 1 )) || fail "second client: a taken name: $(cat "$T/err")"
  contains "$(cat "$T/err")" "tlsport_hello: eaddrinuse:"
  check "stop (the shared daemon)" tlsport_stop
  wait_gone "$dpid" 5 || fail "daemon still running after stop"
  expect_rc 1 "attach to a missing socket" tlsport_attach "$T/none.sock" 2> "$T/err"
  contains "$(cat "$T/err")" "tlsport_attach: enoent:"
}

test_example_https_get() {
  local out
  start_web_server 4
  out=$("$EX/https_get.sh" --cacert "$CERT" "https://localhost:$SERVER_PORT/") || fail "https_get --cacert"
  contains "$out" "s_server -www"
  [[ $out != HTTP/* ]] || fail "headers printed without -i"
  out=$("$EX/https_get.sh" -k -i "https://127.0.0.1:$SERVER_PORT/") || fail "https_get -k -i"
  [[ $out == "HTTP/1.0 200 ok"* ]] || fail "no status line with -i: ${out:0:100}"
  expect_rc 1 "self-signed without --cacert" "$EX/https_get.sh" "https://localhost:$SERVER_PORT/" 2> "$T/err"
  contains "$(cat "$T/err")" "tlsport_connect: tls:"
  expect_rc 1 "closed port" "$EX/https_get.sh" -k "https://127.0.0.1:1/" 2> "$T/err"
  contains "$(cat "$T/err")" "econnrefused"
  expect_rc 2 "not a URL" "$EX/https_get.sh" "ftp://x/" 2>/dev/null
}

test_example_echo_server() {
  local port i pid
  "$EX/echo_server.sh" --port 0 --count 2 --idle 5 --cert "$CERT" --key "$KEY" > "$T/echo.out" 2>&1 &
  pid=$!
  for (( i = 0; i < 200; i++ )); do
    port=$(sed -n 's/^echo_server: listening on .*:\([0-9][0-9]*\)$/\1/p' "$T/echo.out")
    [[ -n $port ]] && break; sleep 0.05
  done
  [[ -n $port ]] || fail "echo server did not start: $(cat "$T/echo.out")"
  python3 - "$port" "$CERT" <<'EOF' || fail "python client"
import os, socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        for msg in [b"hello\n", os.urandom(70000), b"\x00\xff bye"]:
            s.sendall(msg)
            got = b""
            while len(got) < len(msg):
                chunk = s.recv(65536)
                assert chunk, "connection closed early"
                got += chunk
            assert got == msg, "echo differs"
print("python client ok")
EOF
  out=$( (printf 'hi from s_client\n'; sleep 1.5) \
         | timeout 8 openssl s_client -connect "127.0.0.1:$port" -CAfile "$CERT" -quiet -no_ign_eof 2>/dev/null)
  [[ $out == "hi from s_client" ]] || fail "s_client got '$out'"
  wait_gone "$pid" 8 || { kill "$pid"; fail "echo server did not exit after --count 2"; }
  wait "$pid" || fail "echo server exit status $?"
  contains "$(cat "$T/echo.out")" "70012 bytes echoed"
  # SIGTERM stops a server waiting for clients, with its daemon. (This one
  # makes its own self-signed certificate.)
  "$EX/echo_server.sh" --port 0 > "$T/echo2.out" 2>&1 &
  pid=$!
  for (( i = 0; i < 200; i++ )); do grep -q listening "$T/echo2.out" && break; sleep 0.05; done
  kill -TERM "$pid"
  wait_gone "$pid" 5 || fail "echo server ignored SIGTERM: $(cat "$T/echo2.out"; ps -o pid,stat,wchan:20,args --ppid "$pid")"
}

test_example_raw_frames() {
  local out
  start_web_server 2
  out=$(timeout 15 "$EX/raw_frames.sh" 127.0.0.1 "$SERVER_PORT") || fail "raw_frames.sh"
  contains "$out" " 00 00 00 17 00 7b 22 6f 70 22"
  contains "$out" '"protocol":1'
  contains "$out" '"ok":true,"peer"'
  contains "$out" "HTTP/1.0 200 ok"
  contains "$out" '"event":"socket_closed"'
  out=$(timeout 15 "$EX/raw_frames.sh" --dump 127.0.0.1 "$SERVER_PORT") || fail "raw_frames.sh --dump"
  # The first reply frame starts with its length and 0x00; the connect reply follows.
  [[ $out == "0000000  \\0  \\0 "* ]] || fail "dump: ${out:0:80}"
  contains "$out" "p   e   e   r"
  expect_rc 2 "usage" "$EX/raw_frames.sh" 2>/dev/null
}

test_example_one_liners() {
  local out
  start_web_server 1
  out=$(timeout 15 "$EX/one_liners.sh" 127.0.0.1 "$SERVER_PORT") || fail "one_liners.sh"
  contains "$out" '"ok":true,"protocol":1,"ref":1'
  # The hello reply's frame: a 4-byte length (its low bytes as od shows them), then CONTROL and '{'.
  [[ $out =~ 0000000\ +\\0\ +\\0\ +[^\ ]+\ +[^\ ]+\ +\\0\ +\{ ]] || fail "hello frame: $out"
  contains "$out" '"event":"fromsocket","id":1'
  contains "$out" '"event":"socket_closed","id":1,"reason":"normal"'
  # And the documented one-liner itself.
  out=$(printf '{"op":"hello","ref":1}\n' | timeout 5 "$TLSPORTD" --control lines)
  [[ $(jq -r '"\(.ok) \(.ref) \(.protocol)"' <<<"$out") == "true 1 1" ]] || fail "one-liner: $out"
}

# ---------------------------------------------------------------- TLS features

# A python3 SMTP-style STARTTLS peer, written to $T/smtp_peer.py.
#   server: python3 smtp_peer.py server CERT KEY   (prints its port, serves one client)
#   client: python3 smtp_peer.py client PORT CAFILE SNI (the dialogue of test_starttls_server)
# It logs what it saw to stderr (sni=, alpn=, got=, ...).
write_smtp_peer() {
  cat > "$T/smtp_peer.py" <<'EOF'
import socket, ssl, sys

def log(*a):
    print(*a, file=sys.stderr, flush=True)

def readline(s):
    # Byte by byte: nothing after the line is read (it may be a TLS record).
    line = b""
    while not line.endswith(b"\n"):
        c = s.recv(1)
        if not c:
            break
        line += c
    return line.decode().rstrip("\r\n")

def send(s, text):
    s.sendall(text.encode() + b"\r\n")

def unwrap_second(t):
    # The tlsport end sends its close_notify first (stoptls); wait for it,
    # then answer with ours. (A close_notify sent before the daemon's stoptls
    # is taken for the end of the connection.)
    if t.recv(1) != b"":
        raise RuntimeError("data instead of close_notify")
    return t.unwrap()

def server(cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["smtp", "x-other"])
    ctx.sni_callback = lambda sock, name, c: log("sni=%s" % name)
    ls = socket.create_server(("127.0.0.1", 0))
    print(ls.getsockname()[1], flush=True)
    ls.settimeout(10)
    s, _ = ls.accept()
    s.settimeout(10)
    conn = s
    send(conn, "220 py ESMTP")
    tls = False
    while True:
        line = readline(conn)
        if not line:
            log("eof")
            return
        log("got=%s" % line)
        cmd = line.split(" ")[0].upper()
        if cmd == "EHLO":
            send(conn, "250 py" if tls else "250-py\r\n250-SIZE 1000\r\n250 STARTTLS")
        elif cmd == "STARTTLS":
            send(conn, "220 Go ahead")
            conn = ctx.wrap_socket(conn, server_side=True)
            tls = True
            log("tls=%s alpn=%s" % (conn.version(), conn.selected_alpn_protocol()))
        elif cmd == "STOPTLS":
            send(conn, "220 plaintext follows")
            conn = unwrap_second(conn)
            tls = False
            log("unwrapped")
        elif cmd == "DATA":
            send(conn, "354 go ahead")
            while True:
                line = readline(conn)
                log("data=%s" % line)
                if line in (".", ""):
                    break
            send(conn, "250 queued")
        elif cmd == "QUIT":
            send(conn, "221 Bye")
            conn.close()
            return
        else:
            send(conn, "250 %s OK" % ("tls" if tls else "plain"))

def client(port, cafile, sni):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.set_alpn_protocols(["x-other", "smtp"])
    s = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
    log("greeting=%s" % readline(s))
    send(s, "STARTTLS")
    log("reply=%s" % readline(s))
    t = ctx.wrap_socket(s, server_hostname=sni)
    log("tls=%s alpn=%s" % (t.version(), t.selected_alpn_protocol()))
    send(t, "HELLO over tls")
    log("reply=%s" % readline(t))
    send(t, "STOPTLS")
    log("reply=%s" % readline(t))
    p = unwrap_second(t)
    log("unwrapped")
    send(p, "HELLO in plaintext")
    log("reply=%s" % readline(p))
    p.close()

if sys.argv[1] == "server":
    server(sys.argv[2], sys.argv[3])
else:
    client(*sys.argv[2:5])
EOF
}

# start_smtp_peer -- the python STARTTLS server; sets PEER_PORT, PEER_PID.
start_smtp_peer() {
  local i
  write_smtp_peer
  timeout 20 python3 "$T/smtp_peer.py" server "$CERT" "$KEY" > "$T/peer.out" 2> "$T/peer.err" &
  PEER_PID=$!
  for (( i = 0; i < 100; i++ )); do
    PEER_PORT=$(head -n 1 "$T/peer.out")
    [[ -n $PEER_PORT ]] && return 0
    sleep 0.05
  done
  fail "python STARTTLS server did not start: $(cat "$T/peer.err")"
}

# line_once SOCK -- one line from SOCK, read with active once (CR LF removed).
line_once() {
  tlsport_setopts "$1" --active once || return
  tlsport_recv "$1" 5 | tr -d '\r\n'
}

test_starttls_client() {
  local s l info
  tlsport_start || fail start
  tlsport_has starttls || fail "no starttls capability"
  start_smtp_peer
  s=$(tlsport_connect localhost "$PEER_PORT" --plain --mode line --active false) || fail "plain connect"
  [[ $(tlsport_info "$s" protocol) == tcp ]] || fail "plain socket: $(tlsport_info "$s")"
  [[ $(line_once "$s") == "220 py ESMTP" ]] || fail greeting
  tlsport_printf "$s" 'EHLO me\r\n' || fail send
  [[ $(line_once "$s") == 250-py ]] && [[ $(line_once "$s") == "250-SIZE 1000" ]] \
    && [[ $(line_once "$s") == "250 STARTTLS" ]] || fail "EHLO reply"
  tlsport_printf "$s" 'STARTTLS\r\n' || fail send
  [[ $(line_once "$s") == "220 Go ahead" ]] || fail "STARTTLS reply"
  check "starttls client" tlsport_starttls "$s" client --cacert "$CERT" --alpn smtp,x-other --timeout 5
  info=$(tlsport_info "$s") || fail info
  [[ $(jq -r .protocol <<<"$info") == TLSv1.3 ]] || fail "info protocol: $info"
  [[ $(tlsport_info "$s" cipher) == TLS_* ]] || fail "info cipher"
  [[ $(tlsport_info "$s" alpn) == smtp ]] || fail "alpn: $(tlsport_info "$s" alpn)"
  [[ $(tlsport_info "$s" server_name) == localhost ]] || fail "server_name (the host of the connect)"
  [[ $(tlsport_info "$s" verify_result.code) == 0 ]] || fail "verify_result"
  [[ $(tlsport_info "$s" peer_certificate.subject) == CN=localhost ]] || fail "peer subject"
  [[ $(tlsport_info "$s" '.peer_chain | length') == 1 ]] || fail "peer_chain"
  [[ $(tlsport_info "$s" session_reused) == false ]] || fail "session_reused"
  [[ -z $(tlsport_info "$s" ocsp) ]] || fail "null prints nothing"
  tlsport_ciphers "$s" > "$T/ciphers" || fail ciphers
  grep -qx TLS_AES_256_GCM_SHA384 "$T/ciphers" || fail "ciphers: $(head -3 "$T/ciphers")"
  # Over TLS, then back to plaintext.
  tlsport_printf "$s" 'EHLO me\r\n' && [[ $(line_once "$s") == "250 py" ]] || fail "EHLO over TLS"
  tlsport_printf "$s" 'STOPTLS\r\n' && [[ $(line_once "$s") == "220 plaintext follows" ]] || fail STOPTLS
  check "stoptls" tlsport_stoptls "$s" 5
  [[ $(tlsport_info "$s" protocol) == tcp ]] || fail "after stoptls: $(tlsport_info "$s")"
  tlsport_printf "$s" 'NOOP\r\n' && [[ $(line_once "$s") == "250 plain OK" ]] || fail "plaintext after stoptls"
  tlsport_printf "$s" 'QUIT\r\n' && [[ $(line_once "$s") == "221 Bye" ]] || fail QUIT
  wait "$PEER_PID" || fail "python server: $(cat "$T/peer.err")"
  l=$(cat "$T/peer.err")
  contains "$l" "sni=localhost"
  contains "$l" "tls=TLSv1.3 alpn=smtp"
  contains "$l" $'unwrapped\ngot=NOOP'
  # Usage and daemon errors.
  expect_rc 2 "bad side" tlsport_starttls "$s" both 2>/dev/null
  expect_rc 2 "--plain" tlsport_starttls "$s" client --plain 2>/dev/null
  expect_rc 1 "starttls on a closed socket" tlsport_starttls 999999 client 2> "$T/err"
  contains "$(cat "$T/err")" "tlsport_starttls: no_such_socket:"
  tlsport_stop
}

test_starttls_server() {
  # The shell as the server end of STARTTLS and stoptls, python as the client.
  local l s port py log
  tlsport_start || fail start
  write_smtp_peer
  l=$(tlsport_listen 0 --host 127.0.0.1 --plain --mode line --active false) || fail "plain listen"
  port=$(tlsport_port "$l")
  timeout 20 python3 "$T/smtp_peer.py" client "$port" "$CERT" localhost 2> "$T/py.err" &
  py=$!
  s=$(tlsport_accept "$l" 5) || fail accept
  tlsport_printf "$s" '220 sh ESMTP\r\n' || fail greet
  [[ $(line_once "$s") == STARTTLS ]] || fail "STARTTLS line"
  tlsport_printf "$s" '220 Go ahead\r\n' || fail send
  check "starttls server" tlsport_starttls "$s" server --cert "$CERT" --key "$KEY" --alpn smtp,x-other
  [[ $(tlsport_info "$s" server_name) == localhost ]] || fail "server_name seen: $(tlsport_info "$s")"
  [[ $(tlsport_info "$s" alpn) == smtp ]] || fail "alpn: the server's preference"
  [[ $(tlsport_info "$s" local_certificate.subject) == CN=localhost ]] || fail "local_certificate"
  [[ $(line_once "$s") == "HELLO over tls" ]] || fail "data over TLS"
  tlsport_printf "$s" '250 hello\r\n' || fail send
  [[ $(line_once "$s") == STOPTLS ]] || fail "STOPTLS line"
  tlsport_printf "$s" '220 plaintext follows\r\n' || fail send
  check "stoptls (server)" tlsport_stoptls "$s" 5
  [[ $(line_once "$s") == "HELLO in plaintext" ]] || fail "plaintext after stoptls"
  tlsport_printf "$s" '250 plain hello\r\n' || fail send
  wait "$py" || fail "python client: $(cat "$T/py.err")"
  log=$(cat "$T/py.err")
  contains "$log" "tls=TLSv1.3 alpn=smtp"
  contains "$log" "reply=250 plain hello"
  # A failed handshake closes the socket: the client is not TLS.
  timeout 10 python3 -c '
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
s.sendall(b"this is not a ClientHello\r\n"); time.sleep(2)' "$port" &
  py=$!
  s=$(tlsport_accept "$l" 5) || fail accept
  expect_rc 1 "starttls against a plaintext peer" tlsport_starttls "$s" server --cert "$CERT" --key "$KEY" \
    --timeout 3 2> "$T/err"
  contains "$(cat "$T/err")" "tlsport_starttls: tls:"
  TLSPORT_QUIET=1 expect_rc 3 "the socket is closed after a failed starttls" tlsport_recv "$s" 5
  wait "$py"
  tlsport_stop
}

test_example_smtp_starttls() {
  local port i pid out
  "$EX/smtp_starttls.sh" server --port 0 --count 3 --cert "$CERT" --key "$KEY" > "$T/srv.out" 2> "$T/srv.err" &
  pid=$!
  for (( i = 0; i < 200; i++ )); do
    port=$(sed -n 's/^smtp_starttls: listening on .*:\([0-9][0-9]*\)$/\1/p' "$T/srv.err")
    [[ -n $port ]] && break; sleep 0.05
  done
  [[ -n $port ]] || fail "smtp server did not start: $(cat "$T/srv.err")"
  # 1. openssl s_client does the STARTTLS dance, then the rest over TLS.
  out=$( (printf 'EHLO s-client\r\nMAIL FROM:<a@example>\r\nRCPT TO:<b@example>\r\nDATA\r\n'
          printf 'Subject: over s_client\r\n\r\nhello\r\n.\r\nQUIT\r\n') \
        | timeout 20 openssl s_client -connect "127.0.0.1:$port" -starttls smtp -CAfile "$CERT" \
            -verify_return_error -quiet 2> "$T/s_client.err")
  contains "$out" "250 localhost"
  contains "$out" "250 OK: queued"
  contains "$out" "221 Bye"
  # 2. The example's client against the example's server.
  printf 'Subject: from the client\n\n.leading dot\nbye\n' \
    | timeout 20 "$EX/smtp_starttls.sh" client localhost "$port" --cacert "$CERT" 2> "$T/cli.err" \
    || fail "example client: $(cat "$T/cli.err")"
  contains "$(cat "$T/cli.err")" "TLS: TLSv1.3"
  contains "$(cat "$T/cli.err")" "<- 221 Bye"
  # 3. A client that does not ask for STARTTLS cannot send mail.
  out=$(timeout 10 python3 -c '
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
f = s.makefile("rb")
print(f.readline().decode().strip())
s.sendall(b"MAIL FROM:<x@example>\r\n"); print(f.readline().decode().strip())
s.sendall(b"QUIT\r\n"); print(f.readline().decode().strip())' "$port") || fail "plaintext client"
  contains "$out" "530 Must issue a STARTTLS command first"
  wait_gone "$pid" 15 || { kill "$pid"; fail "smtp server did not exit after --count 3"; }
  wait "$pid" || fail "smtp server exit status $?: $(cat "$T/srv.err")"
  out=$(cat "$T/srv.out")
  contains "$out" "Subject: over s_client"
  contains "$out" $'Subject: from the client\n\n.leading dot\nbye'
  contains "$(cat "$T/srv.err")" "TLSv1.3 TLS_"
  # 4. The example's client against the python STARTTLS server.
  start_smtp_peer
  echo body | timeout 20 "$EX/smtp_starttls.sh" client localhost "$PEER_PORT" --cacert "$CERT" 2> "$T/cli2.err" \
    || fail "example client against python: $(cat "$T/cli2.err")"
  wait "$PEER_PID"
  contains "$(cat "$T/peer.err")" "got=MAIL FROM:<me@localhost>"
}

# start_s_server ARGS... -- openssl s_server on a free port with ARGS (for at
# most 20 s); sets SERVER_PORT, SERVER_PID.
start_s_server() {
  local i
  timeout 20 openssl s_server -accept 127.0.0.1:0 -cert "$CERT" -key "$KEY" "$@" \
    > "$T/s_server.out" 2>&1 < /dev/null &
  SERVER_PID=$!
  for (( i = 0; i < 100; i++ )); do
    SERVER_PORT=$(sed -n 's/^ACCEPT .*:\([0-9][0-9]*\)$/\1/p' "$T/s_server.out")
    [[ -n $SERVER_PORT ]] && return 0
    sleep 0.05
  done
  fail "openssl s_server did not start: $(cat "$T/s_server.out")"
}

# make_cert NAME CN -- a self-signed certificate $T/NAME.pem, key $T/NAME.key.
make_cert() {
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$2" -addext "subjectAltName=DNS:$2" \
    -keyout "$T/$1.key" -out "$T/$1.pem" 2>/dev/null || fail "openssl req $1"
}

test_sni_alpn_client() {
  # Our client's SNI and ALPN reach openssl s_server.
  local c
  make_cert other other.example
  tlsport_start || fail start
  start_s_server -www -naccept 10 -cert2 "$T/other.pem" -key2 "$T/other.key" -servername other.example \
    -alpn http/1.1,h2
  # (s_server negotiates ALPN only with its first certificate, not the
  # -servername one: ALPN is checked on the connections without SNI.)
  c=$(tlsport_connect 127.0.0.1 "$SERVER_PORT" --sni other.example --cacert "$T/other.pem") \
    || fail "connect with --sni"
  [[ $(tlsport_info "$c" peer_certificate.subject) == CN=other.example ]] || fail "SNI certificate: $(tlsport_info "$c")"
  [[ $(tlsport_info "$c" server_name) == other.example ]] || fail "server_name"
  tlsport_close "$c"
  # No SNI: the default certificate (checked against the host, 127.0.0.1);
  # the server picks from our ALPN offer by its own preference.
  c=$(tlsport_connect 127.0.0.1 "$SERVER_PORT" --cacert "$CERT" --alpn h2,http/1.1) || fail "connect without SNI"
  [[ $(tlsport_info "$c" peer_certificate.subject) == CN=localhost ]] || fail "default certificate"
  [[ $(tlsport_info "$c" alpn) == http/1.1 ]] || fail "alpn: $(tlsport_info "$c" alpn)"
  tlsport_close "$c"
  c=$(tlsport_connect 127.0.0.1 "$SERVER_PORT" --cacert "$CERT") || fail "connect without ALPN"
  [[ -z $(tlsport_info "$c" alpn) ]] || fail "alpn without an offer"
  tlsport_close "$c"
  # A name the certificate does not have: refused, unless the check is off.
  expect_rc 1 "wrong name" tlsport_connect 127.0.0.1 "$SERVER_PORT" --cacert "$T/other.pem" \
    --sni other.example --verify-hostname wrong.example 2> "$T/err"
  contains "$(cat "$T/err")" "tlsport_connect: tls:"
  c=$(tlsport_connect 127.0.0.1 "$SERVER_PORT" --cacert "$T/other.pem" --sni other.example \
      --verify-hostname false) || fail "--verify-hostname false"
  kill "$SERVER_PID" 2>/dev/null
  tlsport_stop
}

test_sni_alpn_server() {
  # Our listener's SNI certificates and ALPN preference, seen by s_client and by us.
  local l h s c out pid
  make_cert other other.example
  tlsport_start || fail start
  l=$(tlsport_listen 0 --host 127.0.0.1 --cert "$CERT" --key "$KEY" \
      --sni "other.example,*.wild.example=$T/other.pem:$T/other.key" --alpn h2,http/1.1) || fail listen
  h=$(tlsport_accept_async "$l") || fail accept_async
  (sleep 1.5) | timeout 5 openssl s_client -connect "127.0.0.1:$(tlsport_port "$l")" \
    -servername x.wild.example -alpn http/1.1,h2 > "$T/s_client.out" 2>&1 &
  pid=$!
  s=$(tlsport_accept_wait "$h" 5) || fail "accept s_client"
  [[ $(tlsport_info "$s" server_name) == x.wild.example ]] || fail "server_name: $(tlsport_info "$s")"
  [[ $(tlsport_info "$s" alpn) == h2 ]] || fail "alpn (server preference): $(tlsport_info "$s" alpn)"
  [[ $(tlsport_info "$s" local_certificate.subject) == CN=other.example ]] || fail "SNI certificate"
  wait "$pid"
  out=$(cat "$T/s_client.out")
  contains "$out" "ALPN protocol: h2"
  contains "$out" "CN = other.example"
  # Our own client: the exact name, and a name no SNI entry has.
  h=$(tlsport_accept_async "$l") || fail accept_async
  c=$(tlsport_connect localhost "$(tlsport_port "$l")" --sni other.example --cacert "$T/other.pem" \
      --alpn http/1.1) || fail "connect other.example"
  s=$(tlsport_accept_wait "$h" 5) || fail accept
  [[ $(tlsport_info "$c" alpn) == http/1.1 && $(tlsport_info "$s" alpn) == http/1.1 ]] || fail "alpn http/1.1"
  h=$(tlsport_accept_async "$l") || fail accept_async
  c=$(tlsport_connect localhost "$(tlsport_port "$l")" --cacert "$CERT") || fail "connect localhost"
  s=$(tlsport_accept_wait "$h" 5) || fail accept
  [[ $(tlsport_info "$c" peer_certificate.subject) == CN=localhost ]] || fail "default certificate"
  # No protocol in common: no_application_protocol.
  h=$(tlsport_accept_async "$l") || fail accept_async
  expect_rc 1 "no common ALPN protocol" tlsport_connect localhost "$(tlsport_port "$l")" \
    --cacert "$CERT" --alpn imap 2> "$T/err"
  contains "$(cat "$T/err")" "tlsport_connect: tls:"
  contains "$(cat "$T/err")" "no application protocol"
  expect_rc 2 "--sni without a certificate" tlsport_listen 0 --sni "a.example=" 2>/dev/null
  tlsport_stop
}

test_connect_before_accept() {
  # A listener with TLS settings handshakes ahead of the accepts; an accept
  # with TLS options of its own gets a connection made after it was asked.
  local l c s h
  make_cert other other.example
  tlsport_start || fail start
  l=$(tlsport_listen 0 --host 127.0.0.1 --cert "$CERT" --key "$KEY") || fail listen
  c=$(tlsport_connect localhost "$(tlsport_port "$l")" --cacert "$CERT") || fail "connect before accept"
  s=$(tlsport_accept "$l" 5) || fail "accept after connect"
  tlsport_send "$c" early && [[ $(tlsport_recv "$s" 5) == early ]] || fail data
  h=$(tlsport_accept_async "$l" --cert "$T/other.pem" --key "$T/other.key") || fail "accept_async with TLS options"
  c=$(tlsport_connect localhost "$(tlsport_port "$l")" --cacert "$T/other.pem" --verify-hostname other.example) \
    || fail "connect to the accept's own settings"
  s=$(tlsport_accept_wait "$h" 5) || fail accept_wait
  [[ $(tlsport_info "$s" local_certificate.subject) == CN=other.example ]] || fail "the accept's certificate"
  tlsport_stop
}

test_tls_context_and_inline() {
  local l h c s
  tlsport_start || fail start
  check "server context" tlsport_tls_context srv --cert-pem "$(cat "$CERT")" --key-pem "$(cat "$KEY")" --alpn h2
  [[ $(jq -r .server <<<"$TLSPORT_REPLY") == true ]] || fail "server context: $TLSPORT_REPLY"
  check "client context" tlsport_tls_context cli --cacert-pem "$(cat "$CERT")" --alpn h2
  [[ $(jq -r .server <<<"$TLSPORT_REPLY") == false ]] || fail "client context: $TLSPORT_REPLY"
  l=$(tlsport_listen 0 --host 127.0.0.1 --tls srv) || fail "listen --tls srv"
  h=$(tlsport_accept_async "$l") || fail accept_async
  c=$(tlsport_connect localhost "$(tlsport_port "$l")" --tls cli) || fail "connect --tls cli"
  s=$(tlsport_accept_wait "$h" 5) || fail accept
  [[ $(tlsport_info "$c" alpn) == h2 ]] || fail "alpn through contexts"
  tlsport_send "$c" ctx && [[ $(tlsport_recv "$s" 5) == ctx ]] || fail data
  expect_rc 2 "--tls NAME with other options" tlsport_connect localhost 1 --tls cli --alpn x 2>/dev/null
  expect_rc 1 "a missing file" tlsport_tls_context bad --cert "$T/none.pem" 2> "$T/err"
  contains "$(cat "$T/err")" "tlsport_tls_context: bad_tls_config:"
  expect_rc 1 "an unknown context" tlsport_connect localhost "$(tlsport_port "$l")" --tls nosuch 2> "$T/err"
  [[ -s $T/err ]] || fail "no message for an unknown context"
  expect_rc 2 "usage" tlsport_tls_context 2>/dev/null
  tlsport_stop
}

test_passwords() {
  local l
  openssl pkey -in "$KEY" -aes256 -passout pass:sesame -out "$T/enc.key" 2>/dev/null || fail "encrypt key"
  printf 'sesame\n' > "$T/pw"
  tlsport_start || fail start
  expect_rc 1 "encrypted key, no password" tlsport_listen 0 --cert "$CERT" --key "$T/enc.key" 2> "$T/err"
  contains "$(cat "$T/err")" "bad_tls_config:"
  contains "$(cat "$T/err")" "encrypted"
  expect_rc 1 "wrong password" tlsport_listen 0 --cert "$CERT" --key "$T/enc.key" --password nope 2> "$T/err"
  contains "$(cat "$T/err")" "wrong password"
  tlsport_listen 0 --cert "$CERT" --key "$T/enc.key" --password sesame > /dev/null || fail "--password"
  tlsport_listen 0 --cert "$CERT" --key "$T/enc.key" --password-file "$T/pw" > /dev/null || fail "--password-file"
  # Asked for, answered by a function of the script.
  # shellcheck disable=SC2317  # the handlers run through eval
  askpw() { printf '%s\n' "$1" >> "$T/asked"; echo sesame; }
  L=$(tlsport_listen 0 --host 127.0.0.1 --cert "$CERT" --key "$T/enc.key" --ask-password askpw) \
    || fail "--ask-password"
  contains "$(cat "$T/asked")" "enc.key"
  check "--ask-password on a tls_context" tlsport_tls_context enc --cert "$CERT" --key "$T/enc.key" --ask-password askpw
  # A handler that fails, and none at all: an error at once, not a wait.
  SECONDS=0
  expect_rc 1 "a failing handler" tlsport_listen 0 --cert "$CERT" --key "$T/enc.key" --ask-password false 2> "$T/err"
  contains "$(cat "$T/err")" "handler failed"
  expect_rc 1 "ask_password through --tls JSON, no handler" tlsport_listen 0 --cert "$CERT" \
    --key "$T/enc.key" --tls '{"ask_password":true}' 2> "$T/err"
  contains "$(cat "$T/err")" "no --ask-password handler"
  (( SECONDS < 15 )) || fail "unanswered questions waited ${SECONDS}s"
  tlsport_stop
}

test_verify_callback() {
  local l h c s
  # shellcheck disable=SC2317  # the handlers run through eval
  judge_ok() { jq -r '.peer_chain[0].subject, .verify_result.code' <<<"$1" >> "$T/judged"; return 0; }
  # shellcheck disable=SC2317
  judge_no() { return 1; }
  tlsport_start || fail start
  l=$(tlsport_listen 0 --host 127.0.0.1 --cert "$CERT" --key "$KEY") || fail listen
  # The self-signed certificate is not trusted: the judge accepts it anyway.
  h=$(tlsport_accept_async "$l") || fail accept_async
  c=$(tlsport_connect localhost "$(tlsport_port "$l")" --verify-callback judge_ok) || fail "judge accepts"
  s=$(tlsport_accept_wait "$h" 5) || fail accept
  [[ $(head -n 1 "$T/judged") == CN=localhost ]] || fail "judge saw: $(cat "$T/judged")"
  [[ $(sed -n 2p "$T/judged") != 0 ]] || fail "OpenSSL's verdict should be a failure"
  [[ $(tlsport_info "$c" verify_result.code) != 0 ]] || fail "info keeps OpenSSL's verify_result"
  # inject_ca: trust it afterwards, and the verdict becomes ok.
  [[ $(tlsport_inject_ca "$c" "$CERT" | jq -r .code) == 0 ]] || fail inject_ca
  [[ $(tlsport_info "$c" verify_result.code) == 0 ]] || fail "verify_result after inject_ca"
  h=$(tlsport_accept_async "$l") || fail accept_async
  # (Without --no-session-reuse the session the first judge accepted would be
  # resumed, and a resumed session is not judged again.)
  expect_rc 1 "judge rejects" tlsport_connect localhost "$(tlsport_port "$l")" --verify-callback judge_no \
    --no-session-reuse 2> "$T/err"
  contains "$(cat "$T/err")" "tlsport_connect: tls:"
  TLSPORT_QUIET=1 tlsport_accept_wait "$h" 0.5
  # A listener's judge sees its clients' certificates.
  : > "$T/judged"
  l=$(tlsport_listen 0 --host 127.0.0.1 --cert "$CERT" --key "$KEY" --verify 1 --verify-callback judge_ok) \
    || fail "listen --verify-callback"
  h=$(tlsport_accept_async "$l") || fail accept_async
  c=$(tlsport_connect localhost "$(tlsport_port "$l")" --cacert "$CERT" --cert "$CERT" --key "$KEY") \
    || fail "connect with a client certificate"
  s=$(tlsport_accept_wait "$h" 5) || fail "accept after the judge"
  [[ $(head -n 1 "$T/judged") == CN=localhost ]] || fail "listener judge saw: $(cat "$T/judged")"
  [[ $(tlsport_info "$s" peer_certificate.subject) == CN=localhost ]] || fail "client certificate"
  tlsport_stop
}

test_session_reuse_and_keylog() {
  local l h c s
  tlsport_start || fail start
  l=$(tlsport_listen 0 --host 127.0.0.1 --cert "$CERT" --key "$KEY") || fail listen
  connect_once() {  # connect_once [OPTS] -- a connection with a round trip; prints session_reused
    local h c s
    h=$(tlsport_accept_async "$l") || return
    c=$(tlsport_connect localhost "$(tlsport_port "$l")" --cacert "$CERT" "$@") || return
    s=$(tlsport_accept_wait "$h" 5) || return
    tlsport_send "$s" x && tlsport_recv "$c" 5 > /dev/null || return
    tlsport_info "$c" session_reused
    tlsport_close "$c"; tlsport_close "$s"
  }
  [[ $(connect_once --keylog "$T/keys") == false ]] || fail "first connection"
  [[ $(connect_once --keylog "$T/keys") == true ]] || fail "second connection not resumed"
  [[ $(connect_once --keylog "$T/keys" --no-session-reuse) == false ]] || fail "--no-session-reuse"
  grep -q '^CLIENT_HANDSHAKE_TRAFFIC_SECRET ' "$T/keys" || fail "key log: $(head -2 "$T/keys")"
  [[ $(stat -c %a "$T/keys") == 600 ]] || fail "key log mode $(stat -c %a "$T/keys")"
  tlsport_stop
}

test_ticket_keys() {
  # Two listeners with the same ticket key resume each other's sessions
  # (seen by openssl s_client -sess_out / -sess_in); a third with another key does not.
  local l1 l2 l3 h
  openssl rand 80 > "$T/k1" && openssl rand 80 > "$T/k2" || fail "openssl rand"
  tlsport_start || fail start
  l1=$(tlsport_listen 0 --host 127.0.0.1 --cert "$CERT" --key "$KEY" --ticket-keys "$T/k1") || fail listen
  l2=$(tlsport_listen 0 --host 127.0.0.1 --cert "$CERT" --key "$KEY" --ticket-keys "$T/k2,$T/k1") || fail listen
  l3=$(tlsport_listen 0 --host 127.0.0.1 --cert "$CERT" --key "$KEY" --ticket-keys "$T/k2") || fail listen
  s_client_to() {  # s_client_to LISTENER SESSION_OPTS... -- prints s_client's output
    local h s
    h=$(tlsport_accept_async "$1") || return
    (sleep 1) | timeout 5 openssl s_client -connect "127.0.0.1:$(tlsport_port "$1")" -CAfile "$CERT" \
      "${@:2}" > "$T/sc.out" 2>&1 &
    local pid=$!
    s=$(tlsport_accept_wait "$h" 5) || return
    wait "$pid"
    tlsport_close "$s"
    cat "$T/sc.out"
  }
  contains "$(s_client_to "$l1" -sess_out "$T/sess")" "New, TLSv1.3"
  [[ -s $T/sess ]] || fail "no session saved"
  contains "$(s_client_to "$l2" -sess_in "$T/sess")" "Reused, TLSv1.3"
  contains "$(s_client_to "$l3" -sess_in "$T/sess")" "New, TLSv1.3"
  expect_rc 1 "a ticket key of the wrong size" tlsport_listen 0 --cert "$CERT" --key "$KEY" \
    --ticket-keys "$CERT" 2> "$T/err"
  [[ -s $T/err ]] || fail "no message for a bad ticket key"
  tlsport_stop
}

# make_ca -- a CA ($T/ca.pem, ca.key), a good and a revoked certificate for
# localhost signed by it (good.pem/key, revoked.pem/key), a CRL (crl.pem) and
# an OCSP response for the good one (good.ocsp).
make_ca() {
  local n
  mkdir -p "$T/ca" && : > "$T/ca/index.txt" && echo 01 > "$T/ca/crlnumber"
  cat > "$T/ca/ca.cnf" <<EOF
[ca]
default_ca = d
[d]
database = $T/ca/index.txt
crlnumber = $T/ca/crlnumber
default_md = sha256
default_crl_days = 2
unique_subject = no
EOF
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-ca -keyout "$T/ca.key" -out "$T/ca.pem" \
    2>/dev/null || fail "CA"
  for n in good revoked; do
    openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout "$T/$n.key" -out "$T/$n.csr" 2>/dev/null \
      && openssl x509 -req -in "$T/$n.csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" -CAcreateserial -days 2 \
           -extfile <(printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n') -out "$T/$n.pem" 2>/dev/null \
      || fail "certificate $n"
  done
  openssl ca -config "$T/ca/ca.cnf" -keyfile "$T/ca.key" -cert "$T/ca.pem" -valid "$T/good.pem" 2>/dev/null \
    && openssl ca -config "$T/ca/ca.cnf" -keyfile "$T/ca.key" -cert "$T/ca.pem" -revoke "$T/revoked.pem" 2>/dev/null \
    && openssl ca -config "$T/ca/ca.cnf" -keyfile "$T/ca.key" -cert "$T/ca.pem" -gencrl -out "$T/crl.pem" 2>/dev/null \
    || fail "CRL"
  openssl ocsp -index "$T/ca/index.txt" -rsigner "$T/ca.pem" -rkey "$T/ca.key" -CA "$T/ca.pem" \
    -issuer "$T/ca.pem" -cert "$T/good.pem" -respout "$T/good.ocsp" -ndays 1 > /dev/null 2>&1 \
    && [[ -s $T/good.ocsp ]] || fail "OCSP response"
}

test_crl_and_ocsp() {
  local l h c s out pid
  make_ca
  tlsport_start || fail start
  # The revoked certificate is refused once the CRL is given.
  l=$(tlsport_listen 0 --host 127.0.0.1 --cert "$T/revoked.pem" --key "$T/revoked.key") || fail listen
  h=$(tlsport_accept_async "$l") || fail accept_async
  c=$(tlsport_connect localhost "$(tlsport_port "$l")" --cacert "$T/ca.pem") || fail "without the CRL"
  tlsport_accept_wait "$h" 5 > /dev/null || fail accept
  h=$(tlsport_accept_async "$l") || fail accept_async
  expect_rc 1 "revoked" tlsport_connect localhost "$(tlsport_port "$l")" --cacert "$T/ca.pem" \
    --crlfile "$T/crl.pem" 2> "$T/err"
  contains "$(cat "$T/err")" "revoked"
  TLSPORT_QUIET=1 tlsport_accept_wait "$h" 0.5
  # The good one, with its OCSP response stapled.
  l=$(tlsport_listen 0 --host 127.0.0.1 --cert "$T/good.pem" --key "$T/good.key" \
      --ocsp-response "$T/good.ocsp") || fail "listen --ocsp-response"
  h=$(tlsport_accept_async "$l") || fail accept_async
  c=$(tlsport_connect localhost "$(tlsport_port "$l")" --cacert "$T/ca.pem" --crlfile "$T/crl.pem" \
      --ocsp-status) || fail "connect --ocsp-status"
  s=$(tlsport_accept_wait "$h" 5) || fail accept
  [[ $(tlsport_info "$c" ocsp.status) == successful ]] || fail "ocsp: $(tlsport_info "$c" ocsp)"
  [[ $(tlsport_info "$c" ocsp.cert_status) == good ]] || fail "ocsp cert_status: $(tlsport_info "$c" ocsp)"
  h=$(tlsport_accept_async "$l") || fail accept_async
  (sleep 1) | timeout 5 openssl s_client -connect "127.0.0.1:$(tlsport_port "$l")" -status \
    -CAfile "$T/ca.pem" > "$T/sc.out" 2>&1 &
  pid=$!
  tlsport_accept_wait "$h" 5 > /dev/null || fail "accept s_client"
  wait "$pid"
  contains "$(cat "$T/sc.out")" "OCSP Response Status: successful"
  # Files that cannot be read are this command's error.
  expect_rc 1 "missing CRL" tlsport_connect localhost "$(tlsport_port "$l")" --cacert "$T/ca.pem" \
    --crlfile "$T/none.crl" 2> "$T/err"
  contains "$(cat "$T/err")" "bad_tls_config:"
  expect_rc 1 "missing OCSP response" tlsport_listen 0 --cert "$CERT" --key "$KEY" \
    --ocsp-response "$T/none.der" 2> "$T/err"
  contains "$(cat "$T/err")" "bad_tls_config:"
  tlsport_stop
}

test_dhparam_and_versions() {
  local l h c s
  openssl genpkey -genparam -algorithm DH -pkeyopt group:ffdhe2048 -out "$T/dh.pem" 2>/dev/null \
    || fail "DH parameters"
  tlsport_start || fail start
  l=$(tlsport_listen 0 --host 127.0.0.1 --cert "$CERT" --key "$KEY" --dhparamfile "$T/dh.pem") \
    || fail "listen --dhparamfile"
  h=$(tlsport_accept_async "$l") || fail accept_async
  c=$(tlsport_connect localhost "$(tlsport_port "$l")" --cacert "$CERT" --max-version tlsv1.2 \
      --ciphers DHE-RSA-AES128-GCM-SHA256) || fail "DHE connect"
  s=$(tlsport_accept_wait "$h" 5) || fail accept
  [[ $(tlsport_info "$c" protocol) == TLSv1.2 ]] || fail "protocol"
  [[ $(tlsport_info "$c" cipher) == DHE-RSA-AES128-GCM-SHA256 ]] || fail "cipher: $(tlsport_info "$c" cipher)"
  [[ $(tlsport_info "$c" cipher_description) == *Kx=DH* ]] || fail "cipher_description"
  expect_rc 1 "missing DH file" tlsport_listen 0 --cert "$CERT" --key "$KEY" --dhparamfile "$T/none.pem" 2> "$T/err"
  contains "$(cat "$T/err")" "bad_tls_config:"
  expect_rc 1 "TLS 1.1" tlsport_connect localhost 1 --min-version tlsv1.1 2> "$T/err"
  contains "$(cat "$T/err")" "unsupported_protocol"
  tlsport_stop
}

test_socket_timeouts_and_setopts() {
  local l h c s t0 t1
  tlsport_start || fail start
  # The client side's idle timeout closes it with kind timeout.
  CONNECT_OPTS=(--idle-timeout 300ms --close-timeout 1 --handshake-timeout 2)
  loopback
  t0=${EPOCHREALTIME/./}
  expect_rc 3 "idle timeout" tlsport_recv "$C" 5 2> "$T/err"
  t1=${EPOCHREALTIME/./}
  contains "$(cat "$T/err")" "tlsport_recv: timeout: socket $C closed"
  (( t1 - t0 < 3000000 )) || fail "idle timeout took $(( (t1 - t0) / 1000 )) ms"
  # On the listener, for the sockets it accepts; setopts; accept with its own options.
  CONNECT_OPTS=()
  loopback --idle-timeout 4 --active false
  tlsport_send "$C" held || fail send
  TLSPORT_QUIET=1 expect_rc 124 "passive socket" tlsport_recv "$S" 0.2
  check "setopts once" tlsport_setopts "$S" --active once
  [[ $(tlsport_recv "$S" 5) == held ]] || fail "data after setopts"
  expect_rc 2 "setopts usage" tlsport_setopts "$S" --active sometimes 2>/dev/null
  TLSPORT_QUIET=1 expect_rc 3 "idle timeout of an accepted socket" tlsport_recv "$S" 8
  h=$(tlsport_accept_async "$L" --active once --idle-timeout 5) || fail "accept_async with options"
  C=$(tlsport_connect localhost "$PORT" --cacert "$CERT") || fail connect
  S=$(tlsport_accept_wait "$h" 5) || fail accept_wait
  tlsport_send "$C" one && tlsport_send "$C" two || fail send
  [[ $(tlsport_recv "$S" 5) == one* ]] || fail "active once on accept"
  expect_rc 2 "bad duration" tlsport_connect localhost 1 --idle-timeout soon 2>/dev/null
  expect_rc 2 "--backlog on connect" tlsport_connect localhost 1 --backlog 3 2>/dev/null
  tlsport_stop
}

# ---------------------------------------------------------------- runner

ALL_TESTS=(
  test_find_daemon test_start_stop test_text_roundtrip test_binary_file_and_stdin
  test_events_kept_while_waiting test_large_transfers test_line_mode test_recv_timeout
  test_peer_close_and_recv_all test_abnormal_close test_accept_timeout_and_cancel
  test_connect_errors test_connect_timeout test_request test_daemon_dies
  test_set_e_script test_unix_attach test_example_https_get
  test_example_echo_server test_example_raw_frames test_example_one_liners
  test_starttls_client test_starttls_server test_example_smtp_starttls test_sni_alpn_client
  test_sni_alpn_server test_connect_before_accept test_tls_context_and_inline test_passwords test_verify_callback
  test_session_reuse_and_keylog test_ticket_keys test_crl_and_ocsp test_dhparam_and_versions
  test_socket_timeouts_and_setopts
)

if [[ ${1:-} == --one ]]; then
  # Child: run one test in a fresh shell with its own temp dir and certificate.
  T=$2 CERT=$3 KEY=$4
  trap 'exit 143' TERM
  trap 'tlsport_stop; kill $(jobs -p) 2>/dev/null' EXIT
  CONNECT_OPTS=()
  # shellcheck source=SCRIPTDIR/../tlsport.sh
  source "$LIB" || exit 1
  export TLSPORT_TIMEOUT=10
  "$5"
  exit 0
fi

for tool in jq openssl socat python3 timeout; do
  command -v "$tool" > /dev/null || { echo "run_tests.sh: $tool is required" >&2; exit 2; }
done
if [[ -z ${TLSPORTD:-} ]]; then
  TLSPORTD=$(bash -c "source '$LIB' && tlsport_find_daemon") || exit 2
fi
[[ -x $TLSPORTD ]] || { echo "run_tests.sh: TLSPORTD=$TLSPORTD is not executable" >&2; exit 2; }
TLSPORTD=$(cd "$(dirname "$TLSPORTD")" && pwd)/$(basename "$TLSPORTD")
export TLSPORTD

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tlsport-shell-tests.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
CERT=$WORK/cert.pem KEY=$WORK/key.pem
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -keyout "$KEY" -out "$CERT" 2> "$WORK/openssl.log" \
  || { echo "run_tests.sh: openssl req failed: $(cat "$WORK/openssl.log")" >&2; exit 2; }

tests=("$@")
(( ${#tests[@]} )) || tests=("${ALL_TESTS[@]}")
passed=0 failed=0
for t in "${tests[@]}"; do
  [[ $t == test_* ]] || t=test_$t
  declare -F "$t" > /dev/null || ! declare -F "test_example_${t#test_}" > /dev/null \
    || t=test_example_${t#test_}
  if ! declare -F "$t" > /dev/null; then
    echo "FAIL $t (no such test)"; failed=$(( failed + 1 )); continue
  fi
  mkdir -p "$WORK/$t"
  t0=${EPOCHREALTIME/./}
  limit=$PER_TEST_TIMEOUT
  [[ $LONG_TESTS == *" $t "* ]] && limit=$(( PER_TEST_TIMEOUT * 3 ))
  timeout -k 2 "$limit" bash ${TEST_TRACE:+-x} "$0" --one "$WORK/$t" "$CERT" "$KEY" "$t" \
    > "$WORK/$t.log" 2>&1
  rc=$?
  ms=$(( (${EPOCHREALTIME/./} - t0) / 1000 ))
  if (( rc == 0 )); then
    echo "ok   $t (${ms} ms)"; passed=$(( passed + 1 ))
  else
    (( rc == 124 || rc == 137 )) && echo "timed out after ${limit}s" >> "$WORK/$t.log"
    echo "FAIL $t (${ms} ms)"; failed=$(( failed + 1 ))
    sed 's/^/     | /' "$WORK/$t.log" | tail -n 20
  fi
done
echo "$passed passed, $failed failed"
(( failed == 0 ))
