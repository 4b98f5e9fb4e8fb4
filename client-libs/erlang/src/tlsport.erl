%% The modern API: TLS sockets in the style of today's `ssl' and `gen_tcp',
%% carried by tlsportd.
%%
%%   {ok, L} = tlsport:listen(0, #{certfile => "server.pem", packet => 2}),
%%   {ok, S} = tlsport:accept(L),
%%   ok = tlsport:send(S, <<"hello">>),
%%   receive {tlsport, S, Data} -> Data end
%%
%% Options are a map or a proplist. Socket options: `{packet, raw | 0 | 1 |
%% 2 | 4 | asn1 | line}', `{mode, binary | list}' (or the bare atoms; default
%% binary), `{active, true | false | once | N}' (default true),
%% `{packet_size, Bytes}'. TLS options: certfile, keyfile, password,
%% cacertfile, cacertdir, verify (verify_none | verify_peer | 0 | 1 | 2),
%% depth, ciphers, ciphersuites, versions, ssl_flags (seed 004's string),
%% log, and `{tls, false}' for plain TCP. Listen only: ip (or ifaddr),
%% backlog, handshake_timeout (ms). Connect only: server_name_indication
%% (a name, or disable: no SNI, the host name is still checked),
%% verify_hostname (a name, or false: no host-name check). Any other
%% option, or one given to the wrong call, is `{error, {badarg, Opt}}'
%% and nothing is sent to the daemon.
%%
%% Messages to the controlling process: `{tlsport, S, Data}',
%% `{tlsport_closed, S}', `{tlsport_error, S, Reason}', `{tlsport_passive, S}'.
-module(tlsport).

-export([start/0, stop/0,
         listen/2, accept/1, accept/2, connect/3, connect/4,
         send/2, recv/2, recv/3, setopts/2, getopts/2, close/1,
         controlling_process/2, peername/1, sockname/1,
         connection_information/1, daemon_info/0]).

-include("tlsport.hrl").

-type socket() :: #tlsport_socket{}.
-type listen_socket() :: #tlsport_listen{}.
-type options() :: map() | [term()].
-type reason() :: tlsport_lib:error_reason().
-export_type([socket/0, listen_socket/0, options/0]).

%% @doc Starts the application (and its daemon). Other functions start it
%% on first use too.
-spec start() -> ok | {error, term()}.
start() ->
    case application:ensure_all_started(tlsport) of
        {ok, _} -> ok;
        Error -> Error
    end.

%% @doc Stops the application: every socket is closed.
-spec stop() -> ok.
stop() ->
    _ = application:stop(tlsport),
    ok.

%% @doc Listens on Port (0 picks one; sockname/1 or the record tells which).
%% The listener belongs to the caller and closes when it dies.
-spec listen(inet:port_number(), options()) -> {ok, listen_socket()} | {error, reason()}.
listen(Port, Opts) when is_integer(Port), Port >= 0, Port =< 65535 ->
    maybe_ok(
      fun() ->
              %% Options are checked before anything reaches the daemon.
              {ok, M} = ok(tlsport_lib:listen_options(Opts)),
              {ok, Tls} = ok(tlsport_lib:tls_options(M, server)),
              {ok, Host} = ok(tlsport_lib:host_string(maps:get(ip, M, maps:get(ifaddr, M, "0.0.0.0")))),
              ensure_started(),
              %% Accepted sockets start in their active mode: a passive one
              %% is not read before its owner asks.
              Params0 = #{host => Host, port => Port, mode => maps:get(daemon_mode, M), tls => Tls,
                          active => tlsport_lib:daemon_active(maps:get(active, M)),
                          sockopts => maps:with([format, active], M)},
              Params = add_opt(backlog, maps:get(backlog, M, undefined),
                       add_opt(packet_size, maps:get(packet_size, M, undefined),
                       add_opt(handshake_timeout_ms, maps:get(handshake_timeout, M, undefined),
                               Params0))),
              case tlsport_server:listen(modern, Params, self()) of
                  {ok, Key, Number} -> {ok, #tlsport_listen{key = Key, port = Number}};
                  {error, E} -> error_of(E)
              end
      end);
listen(Port, _Opts) ->
    {error, {badarg, Port}}.

%% @doc Waits for a connection and its TLS handshake. The caller owns
%% the new socket.
-spec accept(listen_socket()) -> {ok, socket()} | {error, reason()}.
accept(L) -> accept(L, infinity).

-spec accept(listen_socket(), timeout()) -> {ok, socket()} | {error, reason()}.
accept(#tlsport_listen{key = Key}, Timeout) ->
    case tlsport_server:accept(Key, {modern, #{}}, Timeout) of
        {ok, S} -> {ok, S};
        {error, E} -> error_of(E)
    end;
accept(Other, _Timeout) ->
    {error, {badarg, Other}}.

%% @doc Connects and completes the TLS handshake. Secure by default:
%% the peer's certificate and host name are verified against the system
%% trust store unless `verify' (or cacertfile...) says otherwise.
-spec connect(term(), inet:port_number(), options()) -> {ok, socket()} | {error, reason()}.
connect(Host, Port, Opts) -> connect(Host, Port, Opts, infinity).

-spec connect(term(), inet:port_number(), options(), timeout()) -> {ok, socket()} | {error, reason()}.
connect(Host, Port, Opts, Timeout) when is_integer(Port), Port > 0, Port =< 65535 ->
    maybe_ok(
      fun() ->
              %% Options are checked before anything reaches the daemon.
              {ok, M} = ok(tlsport_lib:connect_options(Opts)),
              {ok, Tls} = ok(tlsport_lib:tls_options(M, client)),
              {ok, H} = ok(tlsport_lib:host_string(Host)),
              ensure_started(),
              Mode = maps:get(daemon_mode, M),
              Command0 = #{host => H, port => Port, mode => Mode, tls => Tls,
                           active => tlsport_lib:daemon_active(maps:get(active, M))},
              Command = add_opt(timeout_ms, case Timeout of infinity -> undefined; T -> max(T, 1) end,
                        add_opt(packet_size, maps:get(packet_size, M, undefined), Command0)),
              SockArgs = #{style => modern, mode => Mode, format => maps:get(format, M),
                           active => maps:get(active, M)},
              case tlsport_server:connect(Command, SockArgs, Timeout) of
                  {ok, S} -> {ok, S};
                  {error, E} -> error_of(E)
              end
      end);
connect(_Host, Port, _Opts, _Timeout) ->
    {error, {badarg, Port}}.

%% @doc Sends iodata: one packet in packet modes. Returns once the data is
%% on its way to the daemon. While the socket is busy (the daemon holds
%% over 1 MiB for a peer that reads slowly) the caller waits, as with a
%% busy port in gen_tcp, until the socket is ready again (`ok') or closes
%% (`{error, closed}').
-spec send(socket(), iodata()) -> ok | {error, reason()}.
send(#tlsport_socket{} = S, Data) -> tlsport_socket:direct_send(S, Data).

%% @doc Passive mode ({active, false}): the next packet, or in raw mode
%% Length bytes (0: whatever is there).
-spec recv(socket(), non_neg_integer()) -> {ok, binary() | list()} | {error, reason()}.
recv(S, Length) -> recv(S, Length, infinity).

-spec recv(socket(), non_neg_integer(), timeout()) -> {ok, binary() | list()} | {error, reason()}.
recv(#tlsport_socket{pid = Pid}, Length, Timeout)
  when is_integer(Length), Length >= 0 ->
    tlsport_socket:recv(Pid, Length, Timeout).

%% @doc Socket options: active, mode (binary | list), packet_size. Other
%% options of listen/connect are `{error, einval}' (they cannot change on
%% a connected socket), unknown ones `{error, {badarg, Opt}}'.
-spec setopts(socket(), options()) -> ok | {error, reason()}.
setopts(#tlsport_socket{pid = Pid}, Opts) -> tlsport_socket:setopts(Pid, Opts);
setopts(_, _) -> {error, einval}.

%% @doc The values of active, mode and packet (other option names are
%% left out of the answer; a name that is no option is `{badarg, Name}').
-spec getopts(socket(), [atom()]) -> {ok, [{atom(), term()}]} | {error, reason()}.
getopts(#tlsport_socket{pid = Pid}, Names) -> tlsport_socket:getopts(Pid, Names).

%% @doc Closes a socket (orderly: queued data, close_notify, TCP close)
%% or a listener.
-spec close(socket() | listen_socket()) -> ok.
close(#tlsport_socket{pid = Pid}) ->
    _ = tlsport_socket:close(Pid),
    ok;
close(#tlsport_listen{key = Key}) ->
    _ = tlsport_server:close_listener(Key),
    ok.

%% @doc Makes Pid the controlling process; only the current one may.
%% Messages already sent to the caller are passed on in order.
-spec controlling_process(socket(), pid()) -> ok | {error, reason()}.
controlling_process(#tlsport_socket{pid = Pid}, NewOwner) ->
    tlsport_socket:controlling_process(Pid, NewOwner).

-spec peername(socket()) -> {ok, {inet:ip_address(), inet:port_number()}} | {error, reason()}.
peername(#tlsport_socket{pid = Pid}) -> tlsport_socket:peername(Pid).

-spec sockname(socket() | listen_socket()) ->
          {ok, {inet:ip_address(), inet:port_number()}} | {error, reason()}.
sockname(#tlsport_socket{pid = Pid}) ->
    tlsport_socket:sockname(Pid);
sockname(#tlsport_listen{key = Key}) ->
    case tlsport_server:listener_request(Key, #{op => sockname}, 30000) of
        {ok, #{host := H, port := P}} -> {ok, {tlsport_lib:parse_ip(H), P}};
        {error, E} -> error_of(E)
    end.

%% @doc TLS details of a connection: protocol, cipher, bits, peer
%% certificate (subject, issuer), verify result.
-spec connection_information(socket()) -> {ok, map()} | {error, reason()}.
connection_information(#tlsport_socket{pid = Pid}) -> tlsport_socket:info(Pid).

%% @doc The daemon's hello: version, protocol, capabilities.
-spec daemon_info() -> map().
daemon_info() ->
    ensure_started(),
    tlsport_server:hello().

%%% ----------------------------------------------------------------

ensure_started() ->
    case whereis(tlsport_server) of
        undefined -> _ = start(), ok;
        _ -> ok
    end.

add_opt(_K, undefined, M) -> M;
add_opt(K, V, M) -> M#{K => V}.

ok({ok, _} = R) -> R;
ok({error, E}) -> throw({tlsport_error, E}).

maybe_ok(F) ->
    try F()
    catch throw:{tlsport_error, E} -> error_of(E)
    end.

error_of(E) -> {error, tlsport_lib:set_last_error(E)}.
