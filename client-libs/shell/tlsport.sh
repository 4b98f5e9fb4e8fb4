# shellcheck shell=bash
# tlsport.sh - a bash library for tlsportd, over the daemon's "lines" encoding
# (one JSON object per line each way; see docs/protocol.md §1.2 and docs/shell.md).
#
#   source client-libs/shell/tlsport.sh
#   tlsport_start || exit 1                      # or: tlsport_attach /run/tlsportd.sock
#   trap tlsport_stop EXIT
#   s=$(tlsport_connect example.com 443) || exit 1
#   tlsport_send "$s" $'GET / HTTP/1.0\r\nHost: example.com\r\n\r\n'
#   tlsport_recv_all "$s" > page.html
#
# Requirements: bash >= 5.0, jq, base64; socat for tlsport_attach.
#
# One session (one daemon or one attachment) per shell. Start and stop it in the
# main shell (not inside $(...)); every other function may run in a subshell,
# e.g. id=$(tlsport_connect ...): the session's state (reference counter, queued
# events, pending replies) lives in files under $TLSPORT_DIR.
#
# Calls must not overlap (no two library calls in concurrent background jobs:
# they share one pipe). A bare "wait" also waits for the daemon, which is a
# coprocess of this shell: wait for specific PIDs instead.
#
# Return codes (all functions):
#   0   success
#   1   the daemon answered with an error (kind and message on stderr)
#   2   usage error (bad arguments, no session)
#   3   the socket is closed (tlsport_recv: the peer closed it)
#   4   the daemon (or socat) went away
#   124 timed out
# Error lines on stderr look like "tlsport_connect: econnrefused: Connection refused";
# the kind of the last error is also in $TLSPORT_ERROR_KIND (and tlsport_last_error).
# TLSPORT_QUIET=1 silences them.
#
# Timeouts are in seconds (fractions allowed); "none" waits forever. The default
# is $TLSPORT_TIMEOUT (30).

if [ -z "${BASH_VERSION:-}" ] || [ "${BASH_VERSINFO[0]}" -lt 5 ]; then
  echo "tlsport.sh: bash >= 5.0 is required" >&2
  # shellcheck disable=SC2317
  return 2 2>/dev/null || exit 2
fi

TLSPORT_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
: "${TLSPORT_TIMEOUT:=30}"
# Session state (kept when the file is sourced again).
: "${TLSPORT_DIR:=}" "${TLSPORT_IN:=}" "${TLSPORT_OUT:=}" "${TLSPORT_PID:=}" "${TLSPORT_MODE:=}"
: "${TLSPORT_CLIENT:=}"
TLSPORT_ERROR_KIND=${TLSPORT_ERROR_KIND:-} TLSPORT_ERROR_MESSAGE=${TLSPORT_ERROR_MESSAGE:-}
TLSPORT_REPLY=${TLSPORT_REPLY:-} TLSPORT_ID=${TLSPORT_ID:-} TLSPORT_PORT=${TLSPORT_PORT:-}
TLSPORT_PEER_HOST=${TLSPORT_PEER_HOST:-} TLSPORT_PEER_PORT=${TLSPORT_PEER_PORT:-}

# Above this many base64 characters a deliver is written by a background writer
# while replies and events are read, so that a large send cannot deadlock
# against the daemon's flow control.
_TLSPORT_BIG=16384

# ---------------------------------------------------------------- helpers

# _tlsport_err FUNC KIND MESSAGE -- record an error and print it on stderr.
_tlsport_err() {
  TLSPORT_ERROR_KIND=$2 TLSPORT_ERROR_MESSAGE=$3
  if [[ -n $TLSPORT_DIR && -d $TLSPORT_DIR ]]; then
    printf '%s\t%s\n' "$2" "$3" > "$TLSPORT_DIR/error" 2>/dev/null
  fi
  [[ ${TLSPORT_QUIET:-0} == 1 ]] || printf '%s: %s: %s\n' "$1" "$2" "$3" >&2
}

# tlsport_last_error -- print "KIND<TAB>MESSAGE" of the session's last error
# (works after an error inside $(...), where $TLSPORT_ERROR_KIND is not set).
tlsport_last_error() {
  [[ -n $TLSPORT_DIR && -f $TLSPORT_DIR/error ]] && cat "$TLSPORT_DIR/error"
}

# _tlsport_jstr STRING -- JSON string literal into _TLSPORT_J.
_tlsport_jstr() {
  local s=$1
  s=${s//\\/\\\\}; s=${s//\"/\\\"}
  s=${s//$'\n'/\\n}; s=${s//$'\r'/\\r}; s=${s//$'\t'/\\t}
  _TLSPORT_J="\"$s\""
}

# _tlsport_abspath PATH -- absolute path into _TLSPORT_J (an attached daemon
# has another working directory).
_tlsport_abspath() {
  if [[ $1 == /* ]]; then _TLSPORT_J=$1; else _TLSPORT_J=$PWD/$1; fi
}

# _tlsport_deadline SECONDS -- absolute deadline in microseconds into
# _TLSPORT_DL ("" = none). Returns 2 on a malformed value.
_tlsport_deadline() {
  local s=${1:-$TLSPORT_TIMEOUT} i f
  case $s in none|inf|forever) _TLSPORT_DL=; return 0 ;; esac
  [[ $s =~ ^([0-9]*)(\.([0-9]*))?$ && -n ${BASH_REMATCH[1]}${BASH_REMATCH[3]} ]] || return 2
  i=${BASH_REMATCH[1]:-0}; f=${BASH_REMATCH[3]}000000; f=${f:0:6}
  _TLSPORT_DL=$(( ${EPOCHREALTIME//[!0-9]/} + 10#$i * 1000000 + 10#$f ))
}

# _tlsport_ms SECONDS -- milliseconds into _TLSPORT_J (for timeout_ms).
_tlsport_ms() {
  local s=$1 i f
  [[ $s =~ ^([0-9]*)(\.([0-9]*))?$ ]] || return 2
  i=${BASH_REMATCH[1]:-0}; f=${BASH_REMATCH[3]}000; f=${f:0:3}
  _TLSPORT_J=$(( 10#$i * 1000 + 10#$f ))
}

_tlsport_running() {
  _TLSPORT_H_ASK='' _TLSPORT_H_VERIFY=''
  if [[ -z $TLSPORT_IN || -z $TLSPORT_DIR || ! -d $TLSPORT_DIR ]]; then
    _tlsport_err "$1" usage "no tlsportd session (call tlsport_start or tlsport_attach first)"
    return 2
  fi
  if [[ -f $TLSPORT_DIR/dead ]]; then
    _tlsport_err "$1" daemon "tlsportd has exited"
    return 4
  fi
}

_tlsport_is_id() { [[ $1 =~ ^[0-9]+$ ]]; }

# _tlsport_jget KEY JSON -- the value of KEY in the daemon's JSON object JSON
# into _TLSPORT_V (strings unquoted); returns 1 when KEY is absent. Without a
# jq process for the common case: the daemon writes compact JSON whose
# strings escape '"', so a key preceded by '{' or ',' is a key (the first one
# found: top-level keys come before nested ones here, or are unique). A string
# with escapes is decoded by jq.
_tlsport_jget() {
  local re='[{,][[:space:]]*"'"$1"'"[[:space:]]*:[[:space:]]*("(([^"\\]|\\.)*)"|(-?[0-9][0-9.eE+-]*|true|false|null))'
  if [[ $2 =~ $re ]]; then
    if [[ -n ${BASH_REMATCH[4]} ]]; then
      _TLSPORT_V=${BASH_REMATCH[4]}
    elif [[ ${BASH_REMATCH[2]} == *\\* ]]; then
      _TLSPORT_V=$(jq -rn --argjson s "${BASH_REMATCH[1]}" '$s')
    else
      _TLSPORT_V=${BASH_REMATCH[2]}
    fi
    return 0
  fi
  _TLSPORT_V=''
  return 1
}

# _tlsport_write JSON -- write one line to the daemon.
_tlsport_write() {
  ( trap '' PIPE; printf '%s\n' "$1" >&"$TLSPORT_OUT" ) 2>/dev/null && return 0
  : > "$TLSPORT_DIR/dead"
  return 4
}

# _tlsport_next_ref -- a fresh reference into _TLSPORT_NREF.
_tlsport_next_ref() {
  local n=0
  [[ -f $TLSPORT_DIR/ref ]] && read -r n < "$TLSPORT_DIR/ref"
  _TLSPORT_NREF=$(( n + 1 ))
  printf '%s\n' "$_TLSPORT_NREF" > "$TLSPORT_DIR/ref"
}

# _tlsport_read_msg DEADLINE -- next non-blank line from the daemon into
# _TLSPORT_MSG. Returns 124 at the deadline, 4 when the daemon went away.
# Only the first byte is read with a timeout: "read -t" is several times
# slower per byte, and the rest of a line the daemon has begun follows.
_tlsport_read_msg() {
  local dl=$1 line c rc t now
  while :; do
    if [[ -n $dl ]]; then
      now=${EPOCHREALTIME//[!0-9]/}
      (( now >= dl )) && return 124
      t=$(( dl - now ))
      printf -v t '%d.%06d' $(( t / 1000000 )) $(( t % 1000000 ))
      c=''
      IFS= read -r -N 1 -t "$t" -u "$TLSPORT_IN" c; rc=$?
      (( rc > 128 )) && return 124
      if (( rc == 0 )) && [[ $c != $'\n' ]]; then
        IFS= read -r -u "$TLSPORT_IN" line; rc=$?
        line=$c$line
      else
        line=''
      fi
    else
      IFS= read -r -u "$TLSPORT_IN" line; rc=$?
    fi
    if (( rc != 0 )); then
      : > "$TLSPORT_DIR/dead"
      [[ -z $line ]] && return 4
      # The last line had no newline: use it, the next read reports EOF.
    fi
    [[ -z ${line//[[:space:]]/} ]] && continue
    _TLSPORT_MSG=$line
    return 0
  done
}

# _tlsport_dispatch -- file _TLSPORT_MSG: an event goes to the queue of its
# socket (see _tlsport_push), a reply to rep/REF. Sets
# _TLSPORT_MREF to the reply's ref ("" for events).
_tlsport_dispatch() {
  local m=$_TLSPORT_MSG ev id
  _TLSPORT_MREF=''
  if [[ $m != \{*\} ]]; then
    _tlsport_err tlsportd protocol "unexpected line from the daemon: ${m:0:200}"
  elif _tlsport_jget event "$m"; then
    ev=$_TLSPORT_V
    if [[ $ev == password_needed || $ev == verify_peer ]]; then
      _tlsport_question "$ev" "$m"
      return 0
    fi
    _tlsport_jget id "$m" && _tlsport_is_id "$_TLSPORT_V" && id=$_TLSPORT_V || id=_
    _tlsport_push "$id" "$ev"$'\t'"$m"
  elif _tlsport_jget ref "$m"; then
    _TLSPORT_MREF=$_TLSPORT_V
    if [[ $_TLSPORT_V == q* ]]; then
      # The reply to an answer the library gave (see _tlsport_question).
      _TLSPORT_MREF=''
      if ! { _tlsport_jget ok "$m" && [[ $_TLSPORT_V == true ]]; }; then
        _tlsport_reply_error "$m"
        _tlsport_err tlsport_answer "$_TLSPORT_EKIND" "$_TLSPORT_EMSG"
      fi
      return 0
    fi
    printf '%s\n' "$m" > "$TLSPORT_DIR/rep/$_TLSPORT_V"
  else
    # A reply without ref: the daemon could not read one of our lines.
    _tlsport_reply_error "$m"
    _tlsport_err tlsportd "$_TLSPORT_EKIND" "$_TLSPORT_EMSG"
  fi
}

# Questions from the daemon (protocol.md §2.2): a command whose tls asks for
# a passphrase (ask_password) or for a judgement of the peer's chain
# (verify_callback) gets password_needed / verify_peer events while the
# library waits for its reply. The handler command given with
# --ask-password CMD / --verify-callback CMD answers them; its file is
# hand/ask.KEY or hand/verify.KEY, KEY being ref.REF (the command),
# listener.L (a listener's connections) or ctx.NAME (a tls_context).

# _tlsport_set_handlers KEY -- record _TLSPORT_H_ASK and _TLSPORT_H_VERIFY
# (when set) under KEY.
_tlsport_set_handlers() {
  [[ -n $_TLSPORT_H_ASK ]] && printf '%s\n' "$_TLSPORT_H_ASK" > "$TLSPORT_DIR/hand/ask.$1"
  [[ -n $_TLSPORT_H_VERIFY ]] && printf '%s\n' "$_TLSPORT_H_VERIFY" > "$TLSPORT_DIR/hand/verify.$1"
  return 0
}

# _tlsport_run_handler CMD ARG -- run the command line CMD with ARG appended,
# in a subshell (functions of the script are visible).
_tlsport_run_handler() {
  ( set +eu +o pipefail; eval "$1"' "$2"' )
}

# _tlsport_question EVENT JSON -- answer a password_needed or verify_peer
# event with its handler; without one, fail the question at once (an empty
# passphrase; the peer rejected) rather than let the command wait.
_tlsport_question() {
  local ev=$1 m=$2 request ref listener src h='' kind aref pw accept=false
  # Fields apart with a non-blank separator: read would merge empty ones.
  IFS=$'\x1f' read -r request ref listener src < <(jq -r \
    '[.request, .ref, .listener, .source] | map(. // "" | tostring | gsub("[\u001f\n]"; " ")) | join("\u001f")' <<<"$m")
  _tlsport_is_id "$request" || return 0
  kind=verify; [[ $ev == password_needed ]] && kind=ask
  if [[ -n $ref && -f $TLSPORT_DIR/hand/$kind.ref.$ref ]]; then
    h=$(<"$TLSPORT_DIR/hand/$kind.ref.$ref")
  elif [[ -n $listener && -f $TLSPORT_DIR/hand/$kind.listener.$listener ]]; then
    h=$(<"$TLSPORT_DIR/hand/$kind.listener.$listener")
  fi
  _tlsport_next_ref; aref=q$_TLSPORT_NREF
  if [[ $kind == ask ]]; then
    if [[ -z $h ]]; then
      _tlsport_err tlsport password_needed "no --ask-password handler for the key in $src: answered with an empty passphrase"
      pw=''
    elif ! pw=$(_tlsport_run_handler "$h" "$src"); then
      _tlsport_err tlsport password_needed "the --ask-password handler failed for the key in $src: answered with an empty passphrase"
      pw=''
    fi
    _tlsport_jstr "$pw"
    _tlsport_write "{\"op\":\"answer\",\"ref\":\"$aref\",\"request\":$request,\"password\":$_TLSPORT_J}"
  else
    if [[ -z $h ]]; then
      _tlsport_err tlsport verify_peer "no --verify-callback handler: the peer is rejected"
    elif _tlsport_run_handler "$h" "$m" >&2; then
      accept=true
    fi
    _tlsport_write "{\"op\":\"answer\",\"ref\":\"$aref\",\"request\":$request,\"accept\":$accept}"
  fi
}

# _tlsport_reply_error JSON -- error kind and message of a reply into
# _TLSPORT_EKIND and _TLSPORT_EMSG.
_tlsport_reply_error() {
  _tlsport_jget kind "$1"; _TLSPORT_EKIND=${_TLSPORT_V:-unknown}
  _tlsport_jget message "$1"; _TLSPORT_EMSG=$_TLSPORT_V
}

# _tlsport_wait_reply REF DEADLINE -- wait for the reply to REF, keeping
# everything else. The reply goes to _TLSPORT_RJSON.
_tlsport_wait_reply() {
  local ref=$1 dl=$2 rc
  while :; do
    if [[ -f $TLSPORT_DIR/rep/$ref ]]; then
      IFS= read -r _TLSPORT_RJSON < "$TLSPORT_DIR/rep/$ref"
      rm -f "$TLSPORT_DIR/rep/$ref"
      return 0
    fi
    _tlsport_read_msg "$dl"; rc=$?
    (( rc == 0 )) || return $rc
    _tlsport_dispatch
  done
}

# _tlsport_check_reply FUNC -- 0 when _TLSPORT_RJSON is ok, else report it.
_tlsport_check_reply() {
  TLSPORT_REPLY=$_TLSPORT_RJSON
  _tlsport_jget ok "$TLSPORT_REPLY" && [[ $_TLSPORT_V == true ]] && return 0
  _tlsport_reply_error "$TLSPORT_REPLY"
  _tlsport_err "$1" "$_TLSPORT_EKIND" "$_TLSPORT_EMSG"
  return 1
}

# _tlsport_call FUNC TIMEOUT JSON -- send a command (a ref is added) and wait
# for its reply (in TLSPORT_REPLY). Returns 0, 1 (error reply), 4, 124.
_tlsport_call() {
  local fn=$1 json=$3 ref rc dl
  _tlsport_deadline "$2" || { _tlsport_err "$fn" usage "bad timeout: $2"; return 2; }
  dl=$_TLSPORT_DL
  _tlsport_next_ref; ref=$_TLSPORT_NREF
  _tlsport_set_handlers "ref.$ref"
  json="{\"ref\":$ref,${json#\{}"
  _tlsport_write "$json" || { _tlsport_err "$fn" daemon "tlsportd is not running"; return 4; }
  _tlsport_wait_reply "$ref" "$dl"; rc=$?
  rm -f "$TLSPORT_DIR/hand/ask.ref.$ref" "$TLSPORT_DIR/hand/verify.ref.$ref"
  case $rc in
    0) _tlsport_check_reply "$fn"; return ;;
    124) _tlsport_err "$fn" timeout "no reply within ${2:-$TLSPORT_TIMEOUT}s"; return 124 ;;
    *) _tlsport_err "$fn" daemon "tlsportd has exited"; return 4 ;;
  esac
}


# _tlsport_dur_ms VALUE -- a duration into milliseconds in _TLSPORT_J: seconds
# ("2", "0.5", "2s") or milliseconds with "ms" ("500ms"). Returns 2 when
# malformed.
_tlsport_dur_ms() {
  local v=$1
  if [[ $v =~ ^([0-9]+)ms$ ]]; then
    _TLSPORT_J=$(( 10#${BASH_REMATCH[1]} ))
  else
    v=${v%s}
    [[ -n $v && $v != . ]] || return 2
    _tlsport_ms "$v" || return 2
  fi
}

# _tlsport_jlist CSV [ABS] -- a JSON array of the comma-separated CSV into
# _TLSPORT_J (as absolute paths when ABS is 1).
_tlsport_jlist() {
  local parts=() p out=''
  IFS=, read -ra parts <<<"$1"
  for p in ${parts[@]+"${parts[@]}"}; do
    [[ -n $p ]] || continue
    if [[ ${2:-0} == 1 ]]; then _tlsport_abspath "$p"; p=$_TLSPORT_J; fi
    _tlsport_jstr "$p"
    out+=${out:+,}$_TLSPORT_J
  done
  _TLSPORT_J="[$out]"
}

# The tls fields that take a file name (made absolute) and those that take
# text as it is, by option.
declare -gA _TLSPORT_FILE_OPTS=(
  [--cacert]=cacertfile [--cacertfile]=cacertfile [--cacertdir]=cacertdir
  [--cert]=certfile [--certfile]=certfile [--key]=keyfile [--keyfile]=keyfile
  [--password-file]=password_file [--crlfile]=crlfile [--crl]=crlfile
  [--ocsp-response]=ocsp_response_file [--ocsp-response-file]=ocsp_response_file
  [--keylog]=keylog [--logfile]=logfile [--dhparamfile]=dhparamfile [--dhparam]=dhparamfile
)
declare -gA _TLSPORT_TEXT_OPTS=(
  [--cert-pem]=cert [--key-pem]=key [--cacert-pem]=cacert [--password]=password
  [--server-name]=server_name [--min-version]=min_version [--max-version]=max_version
  [--ciphers]=ciphers [--ciphersuites]=ciphersuites [--flags]=flags
)

# _tlsport_tls_opts FUNC KIND ARGS... -- parse the TLS and socket options of
# connect, listen, accept, starttls and tls_context (KIND says which apply)
# into _TLSPORT_TLS (a JSON object, "false", or a context name as a JSON
# string; "" for an accept or starttls without TLS options), _TLSPORT_MODEJ,
# _TLSPORT_EXTRA (more JSON members), _TLSPORT_TO (--timeout), _TLSPORT_HS
# (--handshake-timeout in ms), _TLSPORT_HOST, and the question handlers
# _TLSPORT_H_ASK and _TLSPORT_H_VERIFY.
_tlsport_tls_opts() {
  local fn=$1 kind=$2 tls=() users=() sni=() plain=0 name='' alpn='' keys='' k o v u
  shift 2
  _TLSPORT_MODEJ='' _TLSPORT_EXTRA='' _TLSPORT_TO='' _TLSPORT_HS='' _TLSPORT_HOST=''
  _TLSPORT_H_ASK='' _TLSPORT_H_VERIFY=''
  while (( $# )); do
    o=$1
    case $o in
      --insecure|-k) tls+=('"verify":0'); shift; continue ;;
      --no-session-reuse) tls+=('"session_reuse":false'); shift; continue ;;
      --ocsp-status) tls+=('"ocsp_status_request":true'); shift; continue ;;
      --no-verify-hostname) tls+=('"verify_hostname":false'); shift; continue ;;
      --plain|--no-tls)
        [[ $kind == @(connect|listen|accept) ]] || { _tlsport_err "$fn" usage "$o is not an option of $fn"; return 2; }
        plain=1; shift; continue ;;
    esac
    if (( $# < 2 )); then _tlsport_err "$fn" usage "option $o needs a value (or is unknown)"; return 2; fi
    v=$2
    if [[ -n ${_TLSPORT_FILE_OPTS[$o]:-} ]]; then
      _tlsport_abspath "$v"; _tlsport_jstr "$_TLSPORT_J"; tls+=("\"${_TLSPORT_FILE_OPTS[$o]}\":$_TLSPORT_J")
      shift 2; continue
    fi
    if [[ -n ${_TLSPORT_TEXT_OPTS[$o]:-} ]]; then
      _tlsport_jstr "$v"; tls+=("\"${_TLSPORT_TEXT_OPTS[$o]}\":$_TLSPORT_J")
      shift 2; continue
    fi
    case $o in
      --verify)
        [[ $v =~ ^[012]$ ]] || { _tlsport_err "$fn" usage "--verify takes 0, 1 or 2"; return 2; }
        tls+=("\"verify\":$v") ;;
      --depth)
        _tlsport_is_id "$v" || { _tlsport_err "$fn" usage "--depth takes a number"; return 2; }
        tls+=("\"depth\":$v") ;;
      --sni)
        if [[ $v == *=* ]]; then
          # NAMES=CERTFILE[:KEYFILE]: a server certificate for those names.
          local names=${v%%=*} files=${v#*=} cf kf entry
          cf=$files kf=''
          if [[ $files == *:* ]]; then cf=${files%:*} kf=${files##*:}; fi
          [[ -n $names && -n $cf ]] || { _tlsport_err "$fn" usage "--sni takes NAME (client) or NAMES=CERTFILE[:KEYFILE] (server)"; return 2; }
          _tlsport_jlist "$names"; entry="{\"names\":$_TLSPORT_J"
          _tlsport_abspath "$cf"; _tlsport_jstr "$_TLSPORT_J"; entry+=",\"certfile\":$_TLSPORT_J"
          if [[ -n $kf ]]; then _tlsport_abspath "$kf"; _tlsport_jstr "$_TLSPORT_J"; entry+=",\"keyfile\":$_TLSPORT_J"; fi
          sni+=("$entry}")
        else
          _tlsport_jstr "$v"; tls+=("\"server_name\":$_TLSPORT_J")
        fi ;;
      --verify-hostname)
        if [[ $v == false ]]; then tls+=('"verify_hostname":false')
        else _tlsport_jstr "$v"; tls+=("\"verify_hostname\":$_TLSPORT_J"); fi ;;
      --alpn) alpn+=${alpn:+,}$v ;;
      --ticket-keys) keys+=${keys:+,}$v ;;
      --callback-timeout)
        _tlsport_dur_ms "$v" || { _tlsport_err "$fn" usage "bad duration for $o: $v"; return 2; }
        tls+=("\"callback_timeout_ms\":$_TLSPORT_J") ;;
      --ask-password) tls+=('"ask_password":true'); _TLSPORT_H_ASK=$v ;;
      --verify-callback) tls+=('"verify_callback":true'); _TLSPORT_H_VERIFY=$v ;;
      --tls|--tls-json)
        u=$v
        if [[ $o == --tls && ${u#"${u%%[![:space:]]*}"} != [\{\[]* ]]; then
          [[ $kind != context ]] || { _tlsport_err "$fn" usage "a tls_context cannot name another one"; return 2; }
          name=$u
        else
          users+=("$u")
        fi ;;
      --mode)
        [[ $kind == @(connect|listen) ]] || { _tlsport_err "$fn" usage "$o is not an option of $fn"; return 2; }
        _tlsport_jstr "$v"; _TLSPORT_MODEJ=$_TLSPORT_J ;;
      --packet-size)
        [[ $kind == @(connect|listen) ]] || { _tlsport_err "$fn" usage "$o is not an option of $fn"; return 2; }
        _tlsport_is_id "$v" || { _tlsport_err "$fn" usage "--packet-size takes bytes"; return 2; }
        _TLSPORT_EXTRA+=",\"packet_size\":$v" ;;
      --active)
        [[ $kind == @(connect|listen|accept) ]] || { _tlsport_err "$fn" usage "$o is not an option of $fn (see tlsport_setopts)"; return 2; }
        _tlsport_active_json "$fn" "$v" || return
        _TLSPORT_EXTRA+=",\"active\":$_TLSPORT_J" ;;
      --backlog)
        [[ $kind == listen ]] || { _tlsport_err "$fn" usage "$o is not an option of $fn"; return 2; }
        _tlsport_is_id "$v" || { _tlsport_err "$fn" usage "--backlog takes a number"; return 2; }
        _TLSPORT_EXTRA+=",\"backlog\":$v" ;;
      --host)
        [[ $kind == listen ]] || { _tlsport_err "$fn" usage "$o is not an option of $fn"; return 2; }
        _TLSPORT_HOST=$v ;;
      --handshake-timeout|--idle-timeout|--close-timeout)
        [[ $kind != context ]] || { _tlsport_err "$fn" usage "$o is not an option of $fn"; return 2; }
        _tlsport_dur_ms "$v" || { _tlsport_err "$fn" usage "bad duration for $o: $v"; return 2; }
        k=${o#--}; k=${k%-timeout}
        [[ $k == handshake ]] && _TLSPORT_HS=$_TLSPORT_J
        _TLSPORT_EXTRA+=",\"${k}_timeout_ms\":$_TLSPORT_J" ;;
      --timeout)
        [[ $kind != accept ]] || { _tlsport_err "$fn" usage "$o is not an option of $fn (give the TIMEOUT argument)"; return 2; }
        _TLSPORT_TO=$v ;;
      *) _tlsport_err "$fn" usage "unknown option $o"; return 2 ;;
    esac
    shift 2
  done
  if [[ -n $alpn ]]; then _tlsport_jlist "$alpn"; tls+=("\"alpn\":$_TLSPORT_J"); fi
  if [[ -n $keys ]]; then _tlsport_jlist "$keys" 1; tls+=("\"ticket_keys\":$_TLSPORT_J"); fi
  if (( ${#sni[@]} )); then k=$(IFS=,; printf '%s' "${sni[*]}"); tls+=("\"sni\":[$k]"); fi
  if [[ -n $name ]]; then
    if (( plain || ${#tls[@]} || ${#users[@]} )); then
      _tlsport_err "$fn" usage "--tls NAME (a tls_context) cannot be combined with other TLS options"; return 2
    fi
    _tlsport_jstr "$name"; _TLSPORT_TLS=$_TLSPORT_J
    # A context defined with --verify-callback brings its handler along.
    [[ -f $TLSPORT_DIR/hand/ctx.$name ]] && _TLSPORT_H_VERIFY=$(<"$TLSPORT_DIR/hand/ctx.$name")
    return 0
  fi
  if (( plain )); then
    if (( ${#tls[@]} || ${#users[@]} )); then
      _tlsport_err "$fn" usage "--plain cannot be combined with TLS options"; return 2
    fi
    _TLSPORT_TLS=false; return 0
  fi
  _TLSPORT_TLS=''
  (( ${#tls[@]} || ${#users[@]} )) || [[ $kind != @(accept|starttls) ]] || return 0
  k=$(IFS=,; printf '%s' "${tls[*]}")
  _TLSPORT_TLS="{$k}"
  for u in ${users[@]+"${users[@]}"}; do
    _TLSPORT_TLS=$(jq -nc --argjson a "$_TLSPORT_TLS" --argjson b "$u" \
      'if ($b|type) == "object" then $a + $b else error("not an object") end' 2>/dev/null) \
      || { _tlsport_err "$fn" usage "--tls takes a JSON object or a tls_context name"; return 2; }
  done
  return 0
}

# _tlsport_active_json FUNC VALUE -- an active mode (true, false, once, N)
# as JSON into _TLSPORT_J.
_tlsport_active_json() {
  case $2 in
    true|false) _TLSPORT_J=$2 ;;
    once) _TLSPORT_J='"once"' ;;
    *) if [[ $2 =~ ^[1-9][0-9]*$ ]]; then _TLSPORT_J=$2
       else _tlsport_err "$1" usage "--active takes true, false, once or a count N >= 1"; return 2; fi ;;
  esac
}

# ---------------------------------------------------------------- session

# tlsport_find_daemon -- print the tlsportd to use: $TLSPORTD, else tlsportd
# on PATH (an installed daemon), else the build tree (<repo>/build/daemon/tlsportd).
tlsport_find_daemon() {
  local p
  if [[ -n ${TLSPORTD:-} ]]; then
    p=$TLSPORTD
    [[ $p == */* ]] || p=$(command -v -- "$p")   # a bare name: look it up in PATH
    if [[ -n $p && -f $p && -x $p ]]; then
      [[ $p == /* ]] || p=$PWD/$p                 # relative: keep working after a cd
      printf '%s\n' "$p"
      return 0
    fi
    _tlsport_err tlsport_find_daemon enoent "TLSPORTD=$TLSPORTD is not an executable"
    return 2
  fi
  p=$(type -P tlsportd) && { printf '%s\n' "$p"; return 0; }
  p=$TLSPORT_LIB_DIR/../../build/daemon/tlsportd
  if [[ -x $p ]]; then
    (cd "$(dirname "$p")" && printf '%s/tlsportd\n' "$(pwd)")
    return 0
  fi
  _tlsport_err tlsport_find_daemon enoent "tlsportd not found (set TLSPORTD, install it on PATH, or build it)"
  return 2
}

_tlsport_new_session() {
  local d
  d=$(mktemp -d "${TMPDIR:-/tmp}/tlsport.XXXXXX") || return 2
  TLSPORT_DIR=$d
  mkdir "$d/ev" "$d/rep" "$d/closed" "$d/hand"
  TLSPORT_ERROR_KIND='' TLSPORT_ERROR_MESSAGE=''
  # A guard removes the directory once this shell and the daemon (which
  # inherits the pipe) are both gone, even without tlsport_stop.
  exec {TLSPORT_GUARD}> >(exec > /dev/null 2>&1; cat; rm -rf -- "$d")
}

# Take the coprocess's pipe ends as ordinary descriptors (usable in
# subshells) and close bash's own copies.
_tlsport_take_fds() {
  local f
  exec {TLSPORT_IN}<&"${TLSPORT_COPROC[0]}" {TLSPORT_OUT}>&"${TLSPORT_COPROC[1]}"
  f=${TLSPORT_COPROC[0]}; exec {f}<&-
  f=${TLSPORT_COPROC[1]}; exec {f}>&-
  TLSPORT_PID=$TLSPORT_COPROC_PID
}

# Close the pipes, wait (up to 5 s) for the coprocess, remove the state.
_tlsport_teardown() {
  local i pid=$TLSPORT_PID
  [[ -n $TLSPORT_OUT ]] && exec {TLSPORT_OUT}>&-
  [[ -n ${TLSPORT_GUARD:-} ]] && exec {TLSPORT_GUARD}>&-
  TLSPORT_GUARD=
  [[ -n $TLSPORT_IN ]] && exec {TLSPORT_IN}<&-
  TLSPORT_IN='' TLSPORT_OUT=''
  if [[ -n $pid ]]; then
    for (( i = 0; i < 100; i++ )); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.05
    done
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null; sleep 0.2
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
  fi
  [[ -n $TLSPORT_DIR ]] && rm -rf "$TLSPORT_DIR"
  TLSPORT_DIR='' TLSPORT_PID='' TLSPORT_MODE='' TLSPORT_CLIENT=''
}

_tlsport_hello_check() {
  if ! _tlsport_call "$1" 10 '{"op":"hello"}'; then
    _tlsport_teardown
    return 4
  fi
  _tlsport_jget client "$TLSPORT_REPLY"; TLSPORT_CLIENT=$_TLSPORT_V
  printf '%s\n' "$TLSPORT_REPLY" > "$TLSPORT_DIR/hello"
}

# tlsport_start [DAEMON_ARGS...] -- spawn tlsportd --control lines as a
# coprocess. Extra arguments go to the daemon (e.g. --log-level error).
tlsport_start() {
  local - bin
  set +eu +o pipefail
  if [[ -n $TLSPORT_IN ]]; then
    _tlsport_err tlsport_start usage "a session is already open (tlsport_stop first)"; return 2
  fi
  bin=$(tlsport_find_daemon) || return 2
  _tlsport_new_session || { _tlsport_err tlsport_start enoent "cannot create a temporary directory"; return 2; }
  coproc TLSPORT_COPROC { exec "$bin" --control lines "$@"; }
  _tlsport_take_fds
  TLSPORT_MODE=spawned
  _tlsport_hello_check tlsport_start
}

# tlsport_attach SOCKET_PATH -- connect to a running "tlsportd --unix PATH"
# through socat (the lines encoding is chosen by our first byte, "{").
tlsport_attach() {
  local - path=${1:-}
  set +eu +o pipefail
  if [[ -n $TLSPORT_IN ]]; then
    _tlsport_err tlsport_attach usage "a session is already open (tlsport_stop first)"; return 2
  fi
  [[ -n $path ]] || { _tlsport_err tlsport_attach usage "usage: tlsport_attach SOCKET_PATH"; return 2; }
  [[ -S $path ]] || { _tlsport_err tlsport_attach enoent "$path is not a Unix socket"; return 1; }
  command -v socat >/dev/null || { _tlsport_err tlsport_attach enoent "socat is not installed"; return 2; }
  _tlsport_new_session || return 2
  coproc TLSPORT_COPROC { exec socat - "UNIX-CONNECT:$path"; }
  _tlsport_take_fds
  TLSPORT_MODE=attached
  _tlsport_hello_check tlsport_attach
}

# tlsport_stop -- stop the daemon ("stop" command: every socket is closed and
# the daemon exits; when attached this stops the shared daemon too) and end
# the session. Without a session it does nothing (safe in an EXIT trap).
tlsport_stop() {
  local -
  set +eu +o pipefail
  [[ -z $TLSPORT_IN ]] && return 0
  [[ -f $TLSPORT_DIR/dead ]] || TLSPORT_QUIET=1 _tlsport_call tlsport_stop 5 '{"op":"stop"}'
  _tlsport_teardown
  return 0
}

# tlsport_detach -- end the session, leaving an attached daemon running (its
# sockets for this client are closed). A spawned daemon sees EOF and exits.
tlsport_detach() {
  local -
  set +eu +o pipefail
  [[ -z $TLSPORT_IN ]] && return 0
  _tlsport_teardown
  return 0
}

# tlsport_hello [NAME] -- say hello (optionally naming this client); prints
# the client number.
tlsport_hello() {
  local - json='{"op":"hello"}'
  set +eu +o pipefail
  _tlsport_running tlsport_hello || return
  if [[ -n ${1:-} ]]; then _tlsport_jstr "$1"; json="{\"op\":\"hello\",\"name\":$_TLSPORT_J}"; fi
  _tlsport_call tlsport_hello "" "$json" || return
  _tlsport_jget client "$TLSPORT_REPLY"; TLSPORT_CLIENT=$_TLSPORT_V
  printf '%s\n' "$TLSPORT_CLIENT"
}

# tlsport_request JSON [TIMEOUT] -- send any command (a ref is added) and print
# the reply, e.g. tlsport_request '{"op":"setopts","id":3,"active":false}'.
tlsport_request() {
  local - json=${1:-}
  set +eu +o pipefail
  _tlsport_running tlsport_request || return
  json=$(jq -c 'if type == "object" and has("op") then del(.ref) else error("x") end' <<<"$json" 2>/dev/null) \
    || { _tlsport_err tlsport_request usage "usage: tlsport_request JSON_OBJECT_WITH_OP [TIMEOUT]"; return 2; }
  _tlsport_call tlsport_request "${2:-}" "$json"
  local rc=$?
  [[ -n $TLSPORT_REPLY && ( $rc == 0 || $rc == 1 ) ]] && printf '%s\n' "$TLSPORT_REPLY"
  return $rc
}

# ---------------------------------------------------------------- sockets

# TLS options, of tlsport_connect, tlsport_listen, tlsport_accept,
# tlsport_starttls and tlsport_tls_context (docs/shell.md §3.2 lists them all;
# files are made absolute, since an attached daemon runs elsewhere):
#   --insecure|-k  --verify 0|1|2  --depth N
#   --cacert FILE  --cacertdir DIR  --cacert-pem PEM  --crlfile FILE
#   --cert FILE  --key FILE  --cert-pem PEM  --key-pem PEM
#   --password P  --password-file FILE  --ask-password CMD
#   --sni NAME (client: the name sent; "" sends none)
#   --sni NAMES=CERTFILE[:KEYFILE] (server: a certificate for NAMES, repeatable)
#   --verify-hostname NAME|false  --no-verify-hostname  --verify-callback CMD
#   --min-version tlsv1.2|tlsv1.3  --max-version V  --ciphers L  --ciphersuites L
#   --alpn P1,P2  --no-session-reuse  --ticket-keys F1,F2  --dhparamfile FILE
#   --ocsp-response FILE  --ocsp-status  --keylog FILE  --logfile FILE
#   --flags SSLFLAGS  --callback-timeout DURATION
#   --tls JSON           more tls fields, merged: '{"ciphers":"HIGH"}' (also --tls-json)
#   --tls NAME           a context made by tlsport_tls_context (alone)
# Socket options: --mode MODE --packet-size BYTES --active true|false|once|N
# (connect, listen; --active on accept too), --plain (connect, listen,
# accept), --handshake-timeout, --idle-timeout, --close-timeout DURATION
# (seconds, or "250ms").

# tlsport_connect HOST PORT [OPTIONS] -- open a TLS (or plain) connection;
# prints the socket id. Besides the TLS and socket options above:
#   --timeout SECONDS    name resolution, connection and handshake (default
#                        $TLSPORT_TIMEOUT)
tlsport_connect() {
  local - host=${1:-} port=${2:-} json to
  set +eu +o pipefail
  _tlsport_running tlsport_connect || return
  if [[ -z $host ]] || ! _tlsport_is_id "$port"; then
    _tlsport_err tlsport_connect usage "usage: tlsport_connect HOST PORT [OPTIONS]"; return 2
  fi
  shift 2
  _tlsport_tls_opts tlsport_connect connect "$@" || return
  to=${_TLSPORT_TO:-$TLSPORT_TIMEOUT}
  _tlsport_jstr "$host"
  json="{\"op\":\"connect\",\"host\":$_TLSPORT_J,\"port\":$port,\"tls\":$_TLSPORT_TLS"
  [[ -n $_TLSPORT_MODEJ ]] && json+=",\"mode\":$_TLSPORT_MODEJ"
  if [[ $to != none && $to != inf && $to != forever ]]; then
    _tlsport_ms "$to" || { _tlsport_err tlsport_connect usage "bad timeout: $to"; return 2; }
    json+=",\"timeout_ms\":$_TLSPORT_J"
    # The daemon answers "timeout" itself; wait a little longer than it.
    to=$(( _TLSPORT_J / 1000 + 3 ))
  fi
  json+="$_TLSPORT_EXTRA}"
  _tlsport_call tlsport_connect "$to" "$json" || return
  _tlsport_set_peer
  printf '%s\n' "$TLSPORT_ID"
}

_tlsport_set_peer() {
  local peer=''
  _tlsport_jget id "$TLSPORT_REPLY"; TLSPORT_ID=$_TLSPORT_V
  [[ $TLSPORT_REPLY =~ \"peer\"[[:space:]]*:[[:space:]]*(\{[^}]*\}) ]] && peer=${BASH_REMATCH[1]}
  _tlsport_jget host "$peer"; TLSPORT_PEER_HOST=$_TLSPORT_V
  _tlsport_jget port "$peer"; TLSPORT_PEER_PORT=$_TLSPORT_V
}

# tlsport_listen PORT [OPTIONS] -- listen (PORT 0 picks a free port); prints the
# listener id. The port: tlsport_port ID (or $TLSPORT_PORT when tlsport_listen
# was not run inside $(...)). Options: the TLS and socket options above
# (--cert FILE --key FILE, or --tls NAME, are required for TLS), and
#   --host ADDR (default 0.0.0.0)  --backlog N  --timeout SECONDS
tlsport_listen() {
  local - port=${1:-} json hver
  set +eu +o pipefail
  _tlsport_running tlsport_listen || return
  _tlsport_is_id "$port" || { _tlsport_err tlsport_listen usage "usage: tlsport_listen PORT [OPTIONS]"; return 2; }
  shift
  _tlsport_tls_opts tlsport_listen listen "$@" || return
  hver=$_TLSPORT_H_VERIFY
  json="{\"op\":\"listen\",\"port\":$port,\"tls\":$_TLSPORT_TLS"
  if [[ -n $_TLSPORT_HOST ]]; then _tlsport_jstr "$_TLSPORT_HOST"; json+=",\"host\":$_TLSPORT_J"; fi
  [[ -n $_TLSPORT_MODEJ ]] && json+=",\"mode\":$_TLSPORT_MODEJ"
  json+="$_TLSPORT_EXTRA}"
  _tlsport_call tlsport_listen "${_TLSPORT_TO:-}" "$json" || return
  _tlsport_jget id "$TLSPORT_REPLY"; TLSPORT_ID=$_TLSPORT_V
  _tlsport_jget port "$TLSPORT_REPLY"; TLSPORT_PORT=$_TLSPORT_V
  printf '%s\n' "$TLSPORT_PORT" > "$TLSPORT_DIR/port.$TLSPORT_ID"
  # The connections of the listener are judged by the same handler.
  [[ -n $hver ]] && printf '%s\n' "$hver" > "$TLSPORT_DIR/hand/verify.listener.$TLSPORT_ID"
  printf '%s\n' "$TLSPORT_ID"
}

# tlsport_accept LISTENER [TIMEOUT] [OPTIONS] -- wait for the next connection
# (TLS handshake done); prints its socket id. The peer: tlsport_peername ID
# (or $TLSPORT_PEER_HOST and $TLSPORT_PEER_PORT when not run inside $(...)).
# On timeout the accept is cancelled (return 124). OPTIONS: --active MODE,
# the timeouts, and TLS options, which give this accept its own TLS settings
# instead of the listener's (--plain: plain TCP).
# A listener with TLS settings (or --plain) runs handshakes ahead of the
# accepts; an accept with TLS options of its own starts its connection's
# handshake only once outstanding: to connect to your own listener from the
# same shell then, use tlsport_accept_async before tlsport_connect and
# tlsport_accept_wait after.
tlsport_accept() {
  local - h t=''
  set +eu +o pipefail
  if (( $# >= 2 )) && [[ $2 != -* ]]; then t=$2; set -- "$1" "${@:3}"; fi
  h=$(tlsport_accept_async "$@") || return
  tlsport_accept_wait "$h" "$t"
}

# tlsport_accept_async LISTENER [OPTIONS] -- ask for the next connection
# without waiting; prints a handle for tlsport_accept_wait.
tlsport_accept_async() {
  local - lid=${1:-} ref json
  set +eu +o pipefail
  _tlsport_running tlsport_accept || return
  _tlsport_is_id "$lid" || { _tlsport_err tlsport_accept usage "usage: tlsport_accept LISTENER_ID [TIMEOUT] [OPTIONS]"; return 2; }
  shift
  _tlsport_tls_opts tlsport_accept accept "$@" || return
  _tlsport_next_ref; ref=$_TLSPORT_NREF
  json="{\"op\":\"accept\",\"ref\":$ref,\"id\":$lid"
  [[ -n $_TLSPORT_TLS ]] && json+=",\"tls\":$_TLSPORT_TLS"
  json+="$_TLSPORT_EXTRA}"
  _tlsport_set_handlers "ref.$ref"
  _tlsport_write "$json" || { _tlsport_err tlsport_accept daemon "tlsportd is not running"; return 4; }
  printf '%s\n' "$ref"
}

# tlsport_accept_wait HANDLE [TIMEOUT] -- wait for the accept started by
# tlsport_accept_async; as tlsport_accept.
tlsport_accept_wait() {
  local - ref=${1:-} t=${2:-} dl rc
  set +eu +o pipefail
  _tlsport_running tlsport_accept || return
  _tlsport_is_id "$ref" || { _tlsport_err tlsport_accept usage "usage: tlsport_accept_wait HANDLE [TIMEOUT]"; return 2; }
  _tlsport_deadline "$t" || { _tlsport_err tlsport_accept usage "bad timeout: $t"; return 2; }
  dl=$_TLSPORT_DL
  _tlsport_wait_reply "$ref" "$dl"; rc=$?
  if (( rc == 124 )); then
    # Cancel it; the accept may still have succeeded in the meantime.
    TLSPORT_QUIET=1 _tlsport_call tlsport_accept 5 "{\"op\":\"cancel\",\"target\":$ref}"
    _tlsport_deadline 5
    _tlsport_wait_reply "$ref" "$_TLSPORT_DL"; rc=$?
    if (( rc == 0 )) && ! { _tlsport_jget ok "$_TLSPORT_RJSON" && [[ $_TLSPORT_V == true ]]; }; then
      rm -f "$TLSPORT_DIR/hand/ask.ref.$ref" "$TLSPORT_DIR/hand/verify.ref.$ref"
      _tlsport_err tlsport_accept timeout "no connection within ${t:-$TLSPORT_TIMEOUT}s"
      return 124
    fi
  fi
  rm -f "$TLSPORT_DIR/hand/ask.ref.$ref" "$TLSPORT_DIR/hand/verify.ref.$ref"
  case $rc in
    0) _tlsport_check_reply tlsport_accept || return 1 ;;
    124) _tlsport_err tlsport_accept timeout "no connection within ${t:-$TLSPORT_TIMEOUT}s"; return 124 ;;
    *) _tlsport_err tlsport_accept daemon "tlsportd has exited"; return 4 ;;
  esac
  _tlsport_set_peer
  printf '%s\n' "$TLSPORT_ID"
}

# tlsport_starttls ID client|server [OPTIONS] -- start TLS on the plain
# socket ID (connected or accepted with --plain, or after tlsport_stoptls),
# as the client or the server end of the handshake; returns once the
# handshake is done. OPTIONS: the TLS options (a server needs --cert/--key or
# --tls NAME), --idle-timeout, --close-timeout, and
#   --timeout SECONDS    the handshake (default $TLSPORT_TIMEOUT; also
#                        --handshake-timeout)
# Read the peer's last plaintext message with --active once (or false) before,
# never with the default active mode (protocol.md, starttls). On failure the
# socket is closed.
tlsport_starttls() {
  local - id=${1:-} side=${2:-} json to ms
  set +eu +o pipefail
  _tlsport_running tlsport_starttls || return
  if ! _tlsport_is_id "$id" || [[ $side != client && $side != server ]]; then
    _tlsport_err tlsport_starttls usage "usage: tlsport_starttls ID client|server [OPTIONS]"; return 2
  fi
  shift 2
  _tlsport_tls_opts tlsport_starttls starttls "$@" || return
  json="{\"op\":\"starttls\",\"id\":$id,\"side\":\"$side\""
  [[ -n $_TLSPORT_TLS ]] && json+=",\"tls\":$_TLSPORT_TLS"
  to=${_TLSPORT_TO:-}
  if [[ -z $to && -n $_TLSPORT_HS ]]; then
    ms=$_TLSPORT_HS             # --handshake-timeout alone
  else
    to=${to:-$TLSPORT_TIMEOUT} ms=''
    if [[ $to != none && $to != inf && $to != forever ]]; then
      _tlsport_ms "$to" || { _tlsport_err tlsport_starttls usage "bad timeout: $to"; return 2; }
      ms=$_TLSPORT_J
      json+=",\"timeout_ms\":$ms"
    fi
  fi
  # The daemon answers "timeout" itself; wait a little longer than it.
  [[ -n $ms ]] && to=$(( ms / 1000 + 3 ))
  json+="$_TLSPORT_EXTRA}"
  _tlsport_call tlsport_starttls "$to" "$json"
}

# tlsport_stoptls ID [TIMEOUT] -- end TLS on socket ID and go on in plaintext:
# close_notify is sent and the peer's awaited (at most TIMEOUT seconds;
# default: the socket's close timeout). A peer that does not answer in time
# or closes TCP instead is an error, and the socket is closed. The peer must
# answer the close_notify, not send its own first (docs/shell.md §3.6).
tlsport_stoptls() {
  local - id=${1:-} t=${2:-} json='' to=''
  set +eu +o pipefail
  _tlsport_running tlsport_stoptls || return
  _tlsport_is_id "$id" || { _tlsport_err tlsport_stoptls usage "usage: tlsport_stoptls ID [TIMEOUT]"; return 2; }
  if [[ -n $t && $t != none && $t != inf && $t != forever ]]; then
    _tlsport_ms "$t" || { _tlsport_err tlsport_stoptls usage "bad timeout: $t"; return 2; }
    json=",\"timeout_ms\":$_TLSPORT_J"
    to=$(( _TLSPORT_J / 1000 + 3 ))
  elif [[ -n $t ]]; then
    to=none
  fi
  _tlsport_call tlsport_stoptls "$to" "{\"op\":\"stoptls\",\"id\":$id$json}"
}

# tlsport_tls_context NAME [TLS OPTIONS] -- define (or redefine) the named
# TLS settings NAME in the daemon, for "--tls NAME" on connect, listen,
# accept and starttls. Errors in files, keys and passwords are reported here.
# Names are shared by every client of the daemon.
tlsport_tls_context() {
  local - name=${1:-} hver
  set +eu +o pipefail
  _tlsport_running tlsport_tls_context || return
  [[ -n $name && $name != -* ]] || { _tlsport_err tlsport_tls_context usage "usage: tlsport_tls_context NAME [TLS OPTIONS]"; return 2; }
  shift
  _tlsport_tls_opts tlsport_tls_context context "$@" || return
  hver=$_TLSPORT_H_VERIFY
  _tlsport_jstr "$name"
  _tlsport_call tlsport_tls_context "${_TLSPORT_TO:-}" \
    "{\"op\":\"tls_context\",\"name\":$_TLSPORT_J,\"tls\":$_TLSPORT_TLS}" || return
  if [[ -n $hver ]]; then
    printf '%s\n' "$hver" > "$TLSPORT_DIR/hand/ctx.$name"
  else
    rm -f "$TLSPORT_DIR/hand/ctx.$name"
  fi
}

# tlsport_setopts ID [--active true|false|once|N] [--packet-size BYTES] --
# change a socket's active mode (how the daemon reads from the peer) or
# packet size cap.
tlsport_setopts() {
  local - id=${1:-} json=''
  set +eu +o pipefail
  _tlsport_running tlsport_setopts || return
  _tlsport_is_id "$id" || { _tlsport_err tlsport_setopts usage "usage: tlsport_setopts ID [--active MODE] [--packet-size BYTES]"; return 2; }
  shift
  while (( $# )); do
    (( $# >= 2 )) || { _tlsport_err tlsport_setopts usage "option $1 needs a value"; return 2; }
    case $1 in
      --active) _tlsport_active_json tlsport_setopts "$2" || return; json+=",\"active\":$_TLSPORT_J" ;;
      --packet-size)
        _tlsport_is_id "$2" || { _tlsport_err tlsport_setopts usage "--packet-size takes bytes"; return 2; }
        json+=",\"packet_size\":$2" ;;
      *) _tlsport_err tlsport_setopts usage "unknown option $1"; return 2 ;;
    esac
    shift 2
  done
  _tlsport_call tlsport_setopts "" "{\"op\":\"setopts\",\"id\":$id$json}"
}

# _tlsport_deliver FUNC ID B64FILE -- deliver the base64 text in B64FILE.
_tlsport_deliver() {
  local fn=$1 id=$2 f=$3 ref size dl rc wpid
  if [[ -f $TLSPORT_DIR/closed/$id ]]; then
    _tlsport_err "$fn" closed "socket $id is closed"; return 3
  fi
  _tlsport_next_ref; ref=$_TLSPORT_NREF
  _tlsport_deadline ""; dl=$_TLSPORT_DL
  size=$(wc -c < "$f")
  if (( size <= _TLSPORT_BIG )); then
    local data
    data=$(<"$f")
    _tlsport_write "{\"op\":\"deliver\",\"ref\":$ref,\"id\":$id,\"data\":\"$data\"}" \
      || { _tlsport_err "$fn" daemon "tlsportd is not running"; return 4; }
    _tlsport_wait_reply "$ref" "$dl"; rc=$?
  else
    # A background writer (not a job of this shell: no job notices in an
    # interactive shell). The reply comes once the daemon has read the whole
    # line; meanwhile read (and keep) whatever it sends.
    local pidf=$TLSPORT_DIR/writer.$BASHPID
    ( ( trap '' PIPE; printf '%s\n' "$BASHPID" > "$pidf"
        { printf '{"op":"deliver","ref":%s,"id":%s,"data":"' "$ref" "$id"; cat "$f"; printf '"}\n'; } \
          >&"$TLSPORT_OUT" ) 2>/dev/null & )
    _tlsport_wait_reply "$ref" "$dl"; rc=$?
    if (( rc != 0 )) && [[ -f $pidf ]]; then
      read -r wpid < "$pidf" && kill "$wpid" 2>/dev/null
    fi
    rm -f "$pidf"
  fi
  case $rc in
    0) _tlsport_check_reply "$fn" ;;
    124) _tlsport_err "$fn" timeout "no reply within ${TLSPORT_TIMEOUT}s"; return 124 ;;
    *) _tlsport_err "$fn" daemon "tlsportd has exited"; return 4 ;;
  esac
}

# tlsport_send ID TEXT... -- send TEXT (the arguments joined by spaces, bytes
# as they are, no newline added). Use $'...' or tlsport_printf for escapes.
tlsport_send() {
  local - id=${1:-} f rc IFS=' '
  set +eu +o pipefail
  _tlsport_running tlsport_send || return
  if ! _tlsport_is_id "$id" || (( $# < 2 )); then
    _tlsport_err tlsport_send usage "usage: tlsport_send ID TEXT..."; return 2
  fi
  shift
  f=$TLSPORT_DIR/out.$BASHPID
  printf '%s' "$*" | base64 | tr -d '\n' > "$f"
  _tlsport_deliver tlsport_send "$id" "$f"; rc=$?
  rm -f "$f"
  return $rc
}

# tlsport_printf ID FORMAT [ARGS...] -- send printf FORMAT ARGS.
tlsport_printf() {
  local - id=${1:-} f rc
  set +eu +o pipefail
  _tlsport_running tlsport_printf || return
  if ! _tlsport_is_id "$id" || (( $# < 2 )); then
    _tlsport_err tlsport_printf usage "usage: tlsport_printf ID FORMAT [ARGS...]"; return 2
  fi
  shift
  f=$TLSPORT_DIR/out.$BASHPID
  # shellcheck disable=SC2059
  printf -- "$@" | base64 | tr -d '\n' > "$f"
  _tlsport_deliver tlsport_printf "$id" "$f"; rc=$?
  rm -f "$f"
  return $rc
}

# tlsport_send_file ID [FILE|-] -- send the bytes of FILE (or stdin) as one
# deliver (one packet in packet modes). Binary-safe.
tlsport_send_file() {
  local - id=${1:-} src=${2:--} f rc
  set +eu +o pipefail
  _tlsport_running tlsport_send_file || return
  _tlsport_is_id "$id" || { _tlsport_err tlsport_send_file usage "usage: tlsport_send_file ID [FILE|-]"; return 2; }
  if [[ $src != - && ! -r $src ]]; then
    _tlsport_err tlsport_send_file enoent "cannot read $src"; return 2
  fi
  f=$TLSPORT_DIR/out.$BASHPID
  if [[ $src == - ]]; then base64 | tr -d '\n' > "$f"; else base64 < "$src" | tr -d '\n' > "$f"; fi
  _tlsport_deliver tlsport_send_file "$id" "$f"; rc=$?
  rm -f "$f"
  return $rc
}

# The event queue of socket ID: one file per event, ev/ID.N (a line
# "EVENT<TAB>JSON"), N counting up from the head ev/ID.h to the tail ev/ID.t.
# _tlsport_push ID LINE -- append LINE.
_tlsport_push() {
  local q=$TLSPORT_DIR/ev/$1 t=0
  [[ -f $q.t ]] && read -r t < "$q.t"
  printf '%s\n' "$2" > "$q.$t"
  printf '%s\n' $(( t + 1 )) > "$q.t"
}

# _tlsport_queued ID -- true when socket ID has queued events.
_tlsport_queued() {
  local q=$TLSPORT_DIR/ev/$1 h=0
  [[ -f $q.h ]] && read -r h < "$q.h"
  [[ -f $q.$h ]]
}

# _tlsport_drop_queue ID -- forget the queued events of ID.
_tlsport_drop_queue() {
  rm -f "$TLSPORT_DIR/ev/$1".*
}

# _tlsport_pop ID -- take the first queued event of socket ID into
# _TLSPORT_EVNAME / _TLSPORT_EVJSON. Returns 1 when there is none.
_tlsport_pop() {
  local q=$TLSPORT_DIR/ev/$1 h=0 line
  [[ -f $q.h ]] && read -r h < "$q.h"
  [[ -f $q.$h ]] || return 1
  IFS= read -r line < "$q.$h"
  rm -f "$q.$h"
  printf '%s\n' $(( h + 1 )) > "$q.h"
  _TLSPORT_EVNAME=${line%%$'\t'*}
  _TLSPORT_EVJSON=${line#*$'\t'}
}

# _tlsport_next_event FUNC ID DEADLINE -- wait for the next event of ID.
_tlsport_next_event() {
  local fn=$1 id=$2 dl=$3 rc
  while :; do
    _tlsport_pop "$id" && return 0
    _tlsport_read_msg "$dl"; rc=$?
    (( rc == 0 )) || return $rc
    _tlsport_dispatch
  done
}

# _tlsport_mark_closed ID -- remember that the socket_closed event in
# _TLSPORT_EVJSON closed ID; its reason ("normal" or "KIND<TAB>MESSAGE") goes
# to TLSPORT_CLOSE_REASON.
_tlsport_mark_closed() {
  if _tlsport_jget reason "$_TLSPORT_EVJSON"; then
    TLSPORT_CLOSE_REASON=$_TLSPORT_V
  else
    _tlsport_reply_error "$_TLSPORT_EVJSON"
    TLSPORT_CLOSE_REASON=$_TLSPORT_EKIND$'\t'$_TLSPORT_EMSG
  fi
  printf '%s\n' "$TLSPORT_CLOSE_REASON" > "$TLSPORT_DIR/closed/$1"
}

# tlsport_recv ID [TIMEOUT] -- write the next data received on socket ID to
# stdout (decoded; one packet in packet modes, one line in line mode, a chunk
# in raw mode). Returns 3 once the peer has closed the socket (with a message
# on stderr unless it closed normally), 124 when nothing came in time.
tlsport_recv() {
  local - id=${1:-} t=${2:-} rc reason
  set +eu +o pipefail
  _tlsport_running tlsport_recv || return
  _tlsport_is_id "$id" || { _tlsport_err tlsport_recv usage "usage: tlsport_recv ID [TIMEOUT]"; return 2; }
  _tlsport_deadline "$t" || { _tlsport_err tlsport_recv usage "bad timeout: $t"; return 2; }
  if [[ -f $TLSPORT_DIR/port.$id ]]; then
    _tlsport_err tlsport_recv usage "$id is a listener: tlsport_accept takes its connections"; return 2
  fi
  local dl=$_TLSPORT_DL
  while :; do
    if [[ -f $TLSPORT_DIR/closed/$id ]] && ! _tlsport_queued "$id"; then
      TLSPORT_CLOSE_REASON=$(<"$TLSPORT_DIR/closed/$id")
      return 3
    fi
    _tlsport_next_event tlsport_recv "$id" "$dl"; rc=$?
    case $rc in
      0) ;;
      124) _tlsport_err tlsport_recv timeout "no data on socket $id within ${t:-$TLSPORT_TIMEOUT}s"; return 124 ;;
      *) _tlsport_err tlsport_recv daemon "tlsportd has exited"; return 4 ;;
    esac
    case $_TLSPORT_EVNAME in
      fromsocket)
        if [[ $_TLSPORT_EVJSON =~ \"data\"[[:space:]]*:[[:space:]]*\"([A-Za-z0-9+/=]*)\" ]]; then
          [[ -n ${BASH_REMATCH[1]} ]] && base64 -d <<<"${BASH_REMATCH[1]}"
        else
          jq -j '.data // ""' <<<"$_TLSPORT_EVJSON" | base64 -d
        fi
        return 0 ;;
      socket_closed)
        _tlsport_mark_closed "$id"
        reason=$TLSPORT_CLOSE_REASON
        if [[ $reason != normal ]]; then
          _tlsport_err tlsport_recv "${reason%%$'\t'*}" "socket $id closed: ${reason#*$'\t'}"
        fi
        return 3 ;;
      *) ;;  # owned, passive: not data (see tlsport_event)
    esac
  done
}

# tlsport_recv_all ID [IDLE_TIMEOUT] -- write everything received on ID to
# stdout until the peer closes it. Returns 0 on a normal close, 3 on an
# abnormal one, 124 when nothing came for IDLE_TIMEOUT seconds.
tlsport_recv_all() {
  local - rc
  set +eu +o pipefail
  while :; do
    tlsport_recv "$@"; rc=$?
    (( rc == 0 )) && continue
    if (( rc == 3 )); then [[ $TLSPORT_CLOSE_REASON == normal ]] && return 0; return 3; fi
    return $rc
  done
}

# tlsport_event ID [TIMEOUT] -- print the next event of socket ID as the
# daemon's JSON (fromsocket, socket_closed, owned, passive), undecoded.
tlsport_event() {
  local - id=${1:-} t=${2:-} rc
  set +eu +o pipefail
  _tlsport_running tlsport_event || return
  _tlsport_is_id "$id" || { _tlsport_err tlsport_event usage "usage: tlsport_event ID [TIMEOUT]"; return 2; }
  _tlsport_deadline "$t" || { _tlsport_err tlsport_event usage "bad timeout: $t"; return 2; }
  _tlsport_next_event tlsport_event "$id" "$_TLSPORT_DL"; rc=$?
  case $rc in
    0) [[ $_TLSPORT_EVNAME == socket_closed ]] && _tlsport_mark_closed "$id"
       printf '%s\n' "$_TLSPORT_EVJSON" ;;
    124) _tlsport_err tlsport_event timeout "no event on socket $id within ${t:-$TLSPORT_TIMEOUT}s" ;;
    *) _tlsport_err tlsport_event daemon "tlsportd has exited" ;;
  esac
  return $rc
}

# tlsport_close ID -- close a socket or listener (orderly: queued data, then
# close_notify). Closing a socket the peer already closed succeeds.
tlsport_close() {
  local - id=${1:-} rc
  set +eu +o pipefail
  _tlsport_running tlsport_close || return
  _tlsport_is_id "$id" || { _tlsport_err tlsport_close usage "usage: tlsport_close ID"; return 2; }
  if [[ -f $TLSPORT_DIR/closed/$id ]]; then
    _tlsport_drop_queue "$id"; return 0
  fi
  TLSPORT_QUIET=1 _tlsport_call tlsport_close "" "{\"op\":\"close\",\"id\":$id}"; rc=$?
  if (( rc == 1 )) && [[ $TLSPORT_ERROR_KIND == no_such_socket ]] \
     && cat "$TLSPORT_DIR/ev/$id".[0-9]* 2>/dev/null | grep -q '^socket_closed'; then
    rc=0   # the peer closed it first
  elif (( rc != 0 )); then
    _tlsport_err tlsport_close "$TLSPORT_ERROR_KIND" "$TLSPORT_ERROR_MESSAGE"
  fi
  if (( rc == 0 )); then
    _tlsport_drop_queue "$id"
    rm -f "$TLSPORT_DIR/port.$id" "$TLSPORT_DIR/hand/ask.listener.$id" "$TLSPORT_DIR/hand/verify.listener.$id"
    printf 'local\n' > "$TLSPORT_DIR/closed/$id"
  fi
  return $rc
}

# tlsport_peername ID / tlsport_sockname ID -- print "HOST PORT".
tlsport_peername() { _tlsport_name peername "$@"; }
tlsport_sockname() { _tlsport_name sockname "$@"; }
_tlsport_name() {
  local - op=$1 id=${2:-}
  set +eu +o pipefail
  _tlsport_running "tlsport_$op" || return
  _tlsport_is_id "$id" || { _tlsport_err "tlsport_$op" usage "usage: tlsport_$op ID"; return 2; }
  _tlsport_call "tlsport_$op" "" "{\"op\":\"$op\",\"id\":$id}" || return
  local host
  _tlsport_jget host "$TLSPORT_REPLY"; host=$_TLSPORT_V
  _tlsport_jget port "$TLSPORT_REPLY"
  printf '%s %s\n' "$host" "$_TLSPORT_V"
}

# tlsport_port ID -- print the local port of a socket or listener.
tlsport_port() {
  local hp p
  if [[ -n ${1:-} && -n $TLSPORT_DIR && -f $TLSPORT_DIR/port.$1 ]]; then
    read -r p < "$TLSPORT_DIR/port.$1" && [[ -n $p ]] && { printf '%s\n' "$p"; return 0; }
  fi
  hp=$(tlsport_sockname "$@") || return
  printf '%s\n' "${hp##* }"
}

# tlsport_info ID [FIELD] -- print what the daemon knows of connection ID as
# JSON (protocol, cipher, alpn, server_name, session_reused, verify_result,
# peer_certificate, ...; protocol.md, info). With FIELD, print that field
# only: a name or a dotted path (cipher, verify_result.code,
# peer_certificate.subject) or a jq filter starting with "." (.peer_chain[0].issuer).
# Strings are printed as they are, objects and arrays as JSON, null (or a
# missing field) as nothing.
tlsport_info() {
  local - id=${1:-} field=${2:-}
  set +eu +o pipefail
  _tlsport_running tlsport_info || return
  _tlsport_is_id "$id" || { _tlsport_err tlsport_info usage "usage: tlsport_info ID [FIELD]"; return 2; }
  _tlsport_call tlsport_info "" "{\"op\":\"info\",\"id\":$id}" || return
  if [[ -z $field ]]; then
    jq -c 'del(.ref, .ok)' <<<"$TLSPORT_REPLY"
  elif [[ $field == .* ]]; then
    jq -cr "$field | if . == null then empty else . end" <<<"$TLSPORT_REPLY" 2>/dev/null \
      || { _tlsport_err tlsport_info usage "bad jq filter: $field"; return 2; }
  else
    jq -cr --arg f "$field" \
      'getpath($f | split(".") | map(if test("^[0-9]+$") then tonumber else . end))
       | if . == null then empty else . end' <<<"$TLSPORT_REPLY"
  fi
}

# tlsport_ciphers ID -- print the cipher suites connection ID could use, in
# preference order, one a line.
tlsport_ciphers() {
  local - id=${1:-}
  set +eu +o pipefail
  _tlsport_running tlsport_ciphers || return
  _tlsport_is_id "$id" || { _tlsport_err tlsport_ciphers usage "usage: tlsport_ciphers ID"; return 2; }
  _tlsport_call tlsport_ciphers "" "{\"op\":\"ciphers\",\"id\":$id}" || return
  jq -r '.ciphers[]' <<<"$TLSPORT_REPLY"
}

# tlsport_inject_ca ID FILE | tlsport_inject_ca ID --pem PEM -- trust more CAs
# on connection ID and check the peer's chain again; prints the new
# verify_result ({"code":0,"text":"ok"}). The connection stays open whatever
# the result.
tlsport_inject_ca() {
  local - id=${1:-} arg
  set +eu +o pipefail
  _tlsport_running tlsport_inject_ca || return
  if ! _tlsport_is_id "$id" || [[ -z ${2:-} ]] || [[ $2 == --pem && -z ${3:-} ]]; then
    _tlsport_err tlsport_inject_ca usage "usage: tlsport_inject_ca ID FILE | tlsport_inject_ca ID --pem PEM"; return 2
  fi
  if [[ $2 == --pem ]]; then
    _tlsport_jstr "$3"; arg="\"cacert\":$_TLSPORT_J"
  else
    _tlsport_abspath "$2"; _tlsport_jstr "$_TLSPORT_J"; arg="\"cacertfile\":$_TLSPORT_J"
  fi
  _tlsport_call tlsport_inject_ca "" "{\"op\":\"inject_ca\",\"id\":$id,$arg}" || return
  jq -c '.verify_result' <<<"$TLSPORT_REPLY"
}

# tlsport_has WORD -- true when the daemon lists WORD among its capabilities
# (hello's "capabilities": starttls, sni, alpn, ...).
tlsport_has() {
  local - caps
  set +eu +o pipefail
  _tlsport_running tlsport_has || return
  [[ -n ${1:-} ]] || { _tlsport_err tlsport_has usage "usage: tlsport_has WORD"; return 2; }
  [[ -f $TLSPORT_DIR/hello ]] || return 1
  caps=$(<"$TLSPORT_DIR/hello")
  [[ $caps =~ \"capabilities\":\[([^]]*)\] ]] || return 1
  [[ ,${BASH_REMATCH[1]}, == *,\"$1\",* ]]
}
