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
  tlsport_listen 0 --host 127.0.0.1 --cert "$CERT" --key "$KEY" > /dev/null || fail "listen"
  # shellcheck disable=SC2153
  [[ $TLSPORT_PORT =~ ^[1-9][0-9]*$ && $TLSPORT_ID =~ ^[0-9]+$ ]] || fail "TLSPORT_PORT/TLSPORT_ID not set"
  tlsport_accept "$TLSPORT_ID" 0.1 2>/dev/null; [[ $? == 124 ]] || fail "accept timeout"
  info=$(tlsport_info "$C") || fail info
  [[ $(jq -r .protocol <<<"$info") == TLSv1.* ]] || fail "info: $info"
  [[ $(jq -r .verify_result.code <<<"$info") == 0 ]] || fail "verify result: $info"
  check "close client" tlsport_close "$C"
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

# ---------------------------------------------------------------- runner

ALL_TESTS=(
  test_find_daemon test_start_stop test_text_roundtrip test_binary_file_and_stdin
  test_events_kept_while_waiting test_large_transfers test_line_mode test_recv_timeout
  test_peer_close_and_recv_all test_abnormal_close test_accept_timeout_and_cancel
  test_connect_errors test_connect_timeout test_request test_daemon_dies
  test_set_e_script test_unix_attach test_example_https_get
  test_example_echo_server test_example_raw_frames test_example_one_liners
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
  timeout -k 2 "$PER_TEST_TIMEOUT" bash ${TEST_TRACE:+-x} "$0" --one "$WORK/$t" "$CERT" "$KEY" "$t" \
    > "$WORK/$t.log" 2>&1
  rc=$?
  ms=$(( (${EPOCHREALTIME/./} - t0) / 1000 ))
  if (( rc == 0 )); then
    echo "ok   $t (${ms} ms)"; passed=$(( passed + 1 ))
  else
    (( rc == 124 || rc == 137 )) && echo "timed out after ${PER_TEST_TIMEOUT}s" >> "$WORK/$t.log"
    echo "FAIL $t (${ms} ms)"; failed=$(( failed + 1 ))
    sed 's/^/     | /' "$WORK/$t.log" | tail -n 20
  fi
done
echo "$passed passed, $failed failed"
(( failed == 0 ))
