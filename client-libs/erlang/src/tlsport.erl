%% The modern API: TLS sockets in the style of today's `ssl' and `gen_tcp',
%% carried by tlsportd.
%%
%%   {ok, L} = tlsport:listen(0, #{certfile => "server.pem", packet => 2}),
%%   {ok, S} = tlsport:accept(L),
%%   ok = tlsport:send(S, <<"hello">>),
%%   receive {tlsport, S, Data} -> Data end
%%
%% Options are a map or a proplist, named as OTP's ssl names them where
%% ssl has the concept; docs/erlang.md lists every one. Socket options:
%% `{packet, raw | 0 | 1 | 2 | 4 | asn1 | line}', `{mode, binary | list}'
%% (or the bare atoms; default binary), `{active, true | false | once |
%% N}' (default true), `{packet_size, Bytes}'; timeouts handshake_timeout,
%% idle_timeout, close_timeout (ms). TLS options of both sides: certfile,
%% keyfile, cert, key, certs_keys, password (or a fun), password_file,
%% cacertfile, cacertdir, cacerts, verify, verify_fun, depth, crl_check,
%% crlfile, ciphers, ciphersuites, versions, keep_secrets, keylog_file,
%% ssl_flags (seed 004's string), log, ask_password, ask_verify,
%% callback_timeout, and `{tls, false}' for plain TCP or `{tls, Name}' for
%% a named context (tls_context/2). Client: server_name_indication,
%% verify_hostname, alpn_advertised_protocols, reuse_sessions,
%% ocsp_stapling. Server: sni_hosts, alpn_preferred_protocols,
%% ticket_keys, ocsp_response_file, dh, dhfile; listen also ip (or
%% ifaddr), backlog. Any other option, or one given to the wrong call, is
%% `{error, {badarg, Opt}}' and nothing is sent to the daemon.
%%
%% Messages to the controlling process: `{tlsport, S, Data}',
%% `{tlsport_closed, S}', `{tlsport_error, S, Reason}', `{tlsport_passive, S}'.
%% To a process named by ask_password / ask_verify:
%% `{tlsport_password, Ref, Source}', `{tlsport_verify, Ref, Info}'.
-module(tlsport).

-export([start/0, stop/0,
         listen/2, accept/1, accept/2, connect/3, connect/4,
         send/2, recv/2, recv/3, setopts/2, getopts/2, close/1,
         controlling_process/2, peername/1, sockname/1,
         connection_information/1, connection_information/2, peercert/1,
         negotiated_protocol/1, ciphers/1, inject_ca/2,
         starttls/2, starttls/3, stoptls/1, stoptls/2, tls_context/2,
         answer_password/2, answer_verify/2, daemon_info/0, reclaimed/0]).

-include("tlsport.hrl").

-type socket() :: #tlsport_socket{}.
-type listen_socket() :: #tlsport_listen{}.
-type options() :: map() | [term()].
-type reason() :: tlsport_lib:error_reason().
%% A question of the daemon's, as ask_password / ask_verify deliver it.
-type question() :: {tlsport_request, pos_integer()}.
-export_type([socket/0, listen_socket/0, options/0, question/0]).

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
              {ok, M} = ok(tlsport_options:listen_options(Opts)),
              {ok, Tls0} = ok(tlsport_options:tls_options(M, server)),
              {ok, Host} = ok(tlsport_lib:host_string(maps:get(ip, M, maps:get(ifaddr, M, "0.0.0.0")))),
              ensure_started(),
              with_dh(Tls0, fun(Tls) ->
                  %% Accepted sockets start in their active mode: a passive
                  %% one is not read before its owner asks.
                  Params0 = #{host => Host, port => Port, mode => maps:get(daemon_mode, M),
                              tls => Tls, callbacks => tlsport_options:tls_callbacks(M),
                              active => tlsport_lib:daemon_active(maps:get(active, M)),
                              sockopts => maps:with([format, active], M)},
                  Params = add_opt(backlog, maps:get(backlog, M, undefined),
                           add_opt(packet_size, maps:get(packet_size, M, undefined),
                                   maps:merge(Params0, tlsport_options:timeout_fields(M)))),
                  case tlsport_server:listen(modern, Params, self()) of
                      {ok, Key, Number} -> {ok, #tlsport_listen{key = Key, port = Number}};
                      {error, E} -> error_of(E)
                  end
              end)
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
              {ok, M} = ok(tlsport_options:connect_options(Opts)),
              {ok, Tls} = ok(tlsport_options:tls_options(M, client)),
              {ok, H} = ok(tlsport_lib:host_string(Host)),
              ensure_started(),
              Mode = maps:get(daemon_mode, M),
              Command0 = #{host => H, port => Port, mode => Mode, tls => Tls,
                           active => tlsport_lib:daemon_active(maps:get(active, M))},
              Command = add_opt(timeout_ms, ms(Timeout),
                        add_opt(packet_size, maps:get(packet_size, M, undefined),
                                maps:merge(Command0, tlsport_options:timeout_fields(M)))),
              SockArgs = #{style => modern, mode => Mode, format => maps:get(format, M),
                           active => maps:get(active, M)},
              case tlsport_server:connect(Command, SockArgs, Timeout,
                                          tlsport_options:tls_callbacks(M)) of
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

%% @doc Everything the connection can tell, as a map in the style of
%% ssl:connection_information/1: protocol ('tlsv1.3', 'tlsv1.2', or tcp
%% for a plain socket), selected_cipher_suite, cipher, bits, alg_bits,
%% cipher_description, session_resumption, alpn, sni_hostname,
%% verify_result, peer_certificate, peer_chain, local_certificate
%% (certificate maps: subject, issuer, serial, validity, san, sha256,
%% pem and der), ocsp, mode, peer, sockname. docs/erlang.md has the table.
-spec connection_information(socket()) -> {ok, map()} | {error, reason()}.
connection_information(#tlsport_socket{pid = Pid}) -> tlsport_socket:info(Pid).

%% @doc Only these items of connection_information/1.
-spec connection_information(socket(), [atom()]) -> {ok, map()} | {error, reason()}.
connection_information(S, Items) when is_list(Items) ->
    case connection_information(S) of
        {ok, Info} -> {ok, maps:with(Items, Info)};
        Error -> Error
    end.

%% @doc The peer's certificate as DER, as ssl:peercert/1 gives it.
-spec peercert(socket()) -> {ok, binary()} | {error, reason()}.
peercert(S) ->
    case connection_information(S, [peer_certificate]) of
        {ok, #{peer_certificate := #{der := Der}}} when is_binary(Der) -> {ok, Der};
        {ok, _} -> {error, no_peercert};
        Error -> Error
    end.

%% @doc The protocol ALPN settled on, as ssl:negotiated_protocol/1.
-spec negotiated_protocol(socket()) -> {ok, binary()} | {error, reason()}.
negotiated_protocol(S) ->
    case connection_information(S, [alpn]) of
        {ok, #{alpn := P}} when is_binary(P) -> {ok, P};
        {ok, _} -> {error, protocol_not_negotiated};
        Error -> Error
    end.

%% @doc The cipher suites this connection could use, in preference order
%% (OpenSSL's names).
-spec ciphers(socket()) -> {ok, [binary()]} | {error, reason()}.
ciphers(#tlsport_socket{pid = Pid}) ->
    tlsport_socket:daemon_request(Pid, #{op => ciphers},
                                  fun(#{ciphers := Cs}) -> {ok, Cs} end).

%% @doc Adds CAs to this connection's trust and verifies the peer's chain
%% again; returns the new verify result (`#{code := 0, text := <<"ok">>}'
%% when it passes). `CA' is a CA file's name, `{cacertfile, File}',
%% `{cacerts, [DER | PEM]}' or PEM text (a binary). The connection stays
%% open whatever the result.
-spec inject_ca(socket(), term()) -> {ok, map()} | {error, reason()}.
inject_ca(#tlsport_socket{pid = Pid}, CA) ->
    maybe_ok(
      fun() ->
              Fields = case CA of
                           {cacertfile, F} -> #{cacertfile => bin(cacertfile, F)};
                           {cacerts, Cs} -> ok(tlsport_options:tls_options(#{cacerts => Cs}, client));
                           <<"-----BEGIN", _/binary>> -> #{cacert => CA};
                           _ -> #{cacertfile => bin(inject_ca, CA)}
                       end,
              Command = case Fields of
                            {ok, #{cacert := Pem}} -> #{cacert => Pem};
                            #{} -> Fields
                        end,
              case tlsport_socket:daemon_request(Pid, Command#{op => inject_ca},
                                                 fun(#{verify_result := R}) -> {ok, R} end) of
                  {error, E} -> error_of(E);
                  Ok -> Ok
              end
      end).

%% @doc Starts TLS on a plain socket (connected or accepted with
%% `{tls, false}', or after stoptls/1), as ssl:connect/3 and
%% ssl:handshake/2 upgrade a gen_tcp socket. Options: `{side, client |
%% server}' (or `role'; default client: the daemon is the TLS client),
%% the TLS options of that side (or `{tls, Name}'), and the timeouts.
%% The socket keeps its owner, framing, active mode and handle.
%%
%% The socket must be passive (`{active, false}', or a once/N that has
%% run out: `{error, einval}' otherwise), so that no TLS byte of the peer
%% is taken for plaintext. Data sent before the call goes out as
%% plaintext first; data sent while it runs waits for it. On failure the
%% socket is closed.
-spec starttls(socket(), options()) -> ok | {error, reason()}.
starttls(S, Opts) -> starttls(S, Opts, infinity).

-spec starttls(socket(), options(), timeout()) -> ok | {error, reason()}.
starttls(#tlsport_socket{pid = Pid}, Opts, Timeout) ->
    maybe_ok(
      fun() ->
              {ok, M} = ok(tlsport_options:starttls_options(Opts)),
              Side = maps:get(side, M),
              {ok, Tls0} = ok(tlsport_options:tls_options(M, Side)),
              with_dh(Tls0, fun(Tls) ->
                  Command = add_opt(timeout_ms, ms(Timeout),
                                    maps:merge(#{side => Side, tls => Tls},
                                               tlsport_options:timeout_fields(M))),
                  case tlsport_socket:starttls(Pid, Command, tlsport_options:tls_callbacks(M)) of
                      ok -> ok;
                      {error, E} -> error_of(E)
                  end
              end)
      end);
starttls(Other, _Opts, _Timeout) ->
    {error, {badarg, Other}}.

%% @doc Ends TLS and keeps the TCP connection (ssl:close/2 with a new
%% controller): close_notify both ways, then the socket carries plaintext.
%% Data the peer sent before its close_notify is delivered as the active
%% mode allows. A peer that does not answer within Timeout (default: the
%% socket's close timeout), or closes TCP instead, closes the socket.
-spec stoptls(socket()) -> ok | {error, reason()}.
stoptls(S) -> stoptls(S, infinity).

-spec stoptls(socket(), timeout()) -> ok | {error, reason()}.
stoptls(#tlsport_socket{pid = Pid}, Timeout) ->
    case tlsport_socket:stoptls(Pid, add_opt(timeout_ms, ms(Timeout), #{})) of
        ok -> ok;
        {error, E} -> error_of(E)
    end.

%% @doc Builds TLS settings once under a name, for every later listen,
%% connect and starttls that says `{tls, Name}'. The options are the TLS
%% options of either side (a context with a certificate serves both;
%% without, clients only). Defining a name again replaces it for sockets
%% made from then on. Returns whether the context can serve and whether
%% it replaced another.
-spec tls_context(iodata() | atom(), options()) ->
          {ok, #{server := boolean(), replaced := boolean()}} | {error, reason()}.
tls_context(Name, Opts) ->
    maybe_ok(
      fun() ->
              N = case bin(tls_context, Name) of
                      <<>> -> throw({tlsport_error, {badarg, Name}});
                      B -> B
                  end,
              {ok, M} = ok(tlsport_options:context_options(Opts)),
              {ok, Tls0} = ok(tlsport_options:tls_options(M, context)),
              ensure_started(),
              with_dh(Tls0, fun(Tls) ->
                  case tlsport_server:tls_context(N, Tls, tlsport_options:tls_callbacks(M)) of
                      {ok, Info} -> {ok, Info};
                      {error, E} -> error_of(E)
                  end
              end)
      end).

%% @doc Answers a `{tlsport_password, Ref, Source}' message.
-spec answer_password(question(), iodata()) -> ok | {error, reason()}.
answer_password({tlsport_request, N}, Password) when is_integer(N) ->
    answer(N, #{password => iolist_to_binary(Password)});
answer_password(Ref, _) ->
    {error, {badarg, Ref}}.

%% @doc Answers a `{tlsport_verify, Ref, Info}' message: true accepts the
%% peer, false rejects it.
-spec answer_verify(question(), boolean()) -> ok | {error, reason()}.
answer_verify({tlsport_request, N}, Accept) when is_integer(N), is_boolean(Accept) ->
    answer(N, #{accept => Accept});
answer_verify(Ref, _) ->
    {error, {badarg, Ref}}.

answer(N, Fields) ->
    case tlsport_server:answer(N, Fields) of
        ok -> ok;
        {error, E} -> error_of(E)
    end.

%% @doc The daemon's hello: version, protocol, capabilities; in attach
%% mode also `client' (this node's client number), `name' and `grace_ms'
%% (the grace period in force).
-spec daemon_info() -> map().
daemon_info() ->
    ensure_started(),
    tlsport_server:hello().

%% @doc Attach mode: takes over the sockets and listeners the daemon gave
%% back when this node attached (those a killed node of the same name
%% left within its grace period), and any another client handed to this
%% node's name since. The caller becomes their owner, as after accept/1:
%% a socket's messages held so far reach the caller first, in order, and
%% the socket stays in the active mode the dead node set (getopts/2 leaves
%% `active' out until it is set again; recv/2,3 makes it passive); a
%% listener serves accept/1,2. Each is handed out once: a second call
%% returns only what came since. What nobody claims within
%% `reclaim_timeout_ms' is closed. In port mode there is never anything:
%% `{ok, []}'.
-spec reclaimed() -> {ok, [socket() | listen_socket()]} | {error, reason()}.
reclaimed() ->
    ensure_started(),
    tlsport_server:reclaimed().

%%% ----------------------------------------------------------------

ensure_started() ->
    case whereis(tlsport_server) of
        undefined -> _ = start(), ok;
        _ -> ok
    end.

%% An inline `dh' (OTP's DER DH parameters): the daemon reads DH
%% parameters from a file only, so they are written to a private file
%% that lives as long as the command (the daemon reads it at once).
with_dh(#{'$dh' := Dh} = Tls, F) ->
    Dir = case os:getenv("TMPDIR") of
              false -> "/tmp";
              "" -> "/tmp";
              T -> T
          end,
    Path = filename:join(Dir, io_lib:format("tlsport-dh-~s-~p.der",
                                            [os:getpid(), erlang:unique_integer([positive])])),
    ok = file:write_file(Path, <<>>),
    ok = file:change_mode(Path, 8#600),
    ok = file:write_file(Path, Dh),
    try F((maps:remove('$dh', Tls))#{dhparamfile => unicode:characters_to_binary(Path)})
    after file:delete(Path)
    end;
with_dh(Tls, F) ->
    F(Tls).

ms(infinity) -> undefined;
ms(T) when is_integer(T) -> max(T, 1).

bin(K, V) ->
    try tlsport_lib:to_binary(V)
    catch throw:_ -> throw({tlsport_error, {badarg, {K, V}}})
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
