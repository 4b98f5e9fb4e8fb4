%% The options of listen, connect, starttls, tls_context and setopts: checked
%% (badarg for what the daemon would refuse) and turned into the daemon's
%% command fields, TLS material (OTP's DER certificates and keys) included.
%% Pure: nothing here talks to the daemon.
-module(tlsport_options).

-export([option_names/1, tls_options/2, tls_callbacks/1, listen_options/1, connect_options/1,
         starttls_options/1, context_options/1, timeout_fields/1,
         setopts_options/1, getopts_names/1, pem_encode/2, pem_to_der/1]).

%%% ---------------------------------------------------------------- TLS options

%% The options of the modern API, by where they apply (docs/erlang.md
%% lists them). Bare `binary' and `list' stand for {mode, _}. Anything
%% else is refused with {badarg, Opt} before a command is sent: no option
%% is ever dropped unnoticed.
-define(SOCKET_OPTS, [packet, mode, active, packet_size]).
-define(LISTEN_OPTS, [ip, ifaddr, backlog]).
-define(TIMEOUT_OPTS, [handshake_timeout, idle_timeout, close_timeout]).
-define(STARTTLS_OPTS, [side, role]).
-define(TLS_OPTS, [tls, certfile, keyfile, password, cacertfile, cacertdir, verify, depth,
                   ciphers, ciphersuites, versions, ssl_flags, log,
                   cert, key, certs_keys, cacerts, password_file, crl_check, crlfile,
                   keep_secrets, keylog_file, verify_fun, ask_password, ask_verify,
                   callback_timeout]).
-define(CLIENT_TLS_OPTS, [server_name_indication, verify_hostname, alpn_advertised_protocols,
                          reuse_sessions, ocsp_stapling]).
-define(SERVER_TLS_OPTS, [sni_hosts, alpn_preferred_protocols, ticket_keys, ocsp_response_file,
                          dh, dhfile]).
-define(SETOPTS_OPTS, [active, mode, packet_size]).
%% Keys socket_options/2 adds to the options it returns.
-define(DERIVED, [daemon_mode, format]).
%% What an sni_hosts entry may say about its certificate.
-define(SNI_ENTRY_OPTS, [certfile, keyfile, cert, key, password]).
%% What a certs_keys entry may say.
-define(CERTS_KEYS_OPTS, [cert, key, certfile, keyfile, password]).

%% @doc The option names listen/2 (`listen'), connect/3,4 (`connect'),
%% starttls/2,3 (`starttls'), tls_context/2 (`tls_context') and setopts/2
%% (`setopts') take, besides the bare atoms `binary' and `list'.
-spec option_names(listen | connect | starttls | tls_context | setopts) -> [atom()].
option_names(listen) -> ?SOCKET_OPTS ++ ?LISTEN_OPTS ++ ?TIMEOUT_OPTS ++ ?TLS_OPTS ++ ?SERVER_TLS_OPTS;
option_names(connect) -> ?SOCKET_OPTS ++ ?TIMEOUT_OPTS ++ ?TLS_OPTS ++ ?CLIENT_TLS_OPTS;
option_names(starttls) ->
    ?STARTTLS_OPTS ++ ?TIMEOUT_OPTS ++ ?TLS_OPTS ++ ?CLIENT_TLS_OPTS ++ ?SERVER_TLS_OPTS;
option_names(tls_context) -> (?TLS_OPTS -- [tls]) ++ ?CLIENT_TLS_OPTS ++ ?SERVER_TLS_OPTS;
option_names(setopts) -> ?SETOPTS_OPTS.

%% The TLS options a role takes: a context serves both.
tls_names(client) -> ?TLS_OPTS ++ ?CLIENT_TLS_OPTS;
tls_names(server) -> ?TLS_OPTS ++ ?SERVER_TLS_OPTS;
tls_names(context) -> ?TLS_OPTS ++ ?CLIENT_TLS_OPTS ++ ?SERVER_TLS_OPTS.

%% @doc Modern TLS options (a map, as listen_options/1 and the others
%% return it) to the daemon's `tls' field: a map of section 4's fields,
%% `false' (plain TCP) or the name of a tls_context (`{tls, Name}').
%% `Role' is client, server or context (both). Socket options in the map
%% are passed over; an option that is neither, or a client's option given
%% to a server, is an error. An inline `dh' comes back under the key
%% '$dh' (the caller writes it to a file: the daemon reads DH parameters
%% from files only).
-spec tls_options(map(), client | server | context) ->
          {ok, map() | false | binary()} | {error, term()}.
tls_options(Opts, Role) when is_map(Opts) ->
    Tls = tls_names(Role),
    Other = ?SOCKET_OPTS ++ ?LISTEN_OPTS ++ ?TIMEOUT_OPTS ++ ?STARTTLS_OPTS ++ ?DERIVED,
    Fold = fun(K, V, Acc) ->
                   case lists:member(K, Tls) of
                       true -> tls_opt(K, V, Acc);
                       false ->
                           case lists:member(K, Other) of
                               true -> Acc;
                               false -> throw({badarg, {K, V}})
                           end
                   end
           end,
    try
        Fields = maps:fold(Fold, #{}, Opts),
        case maps:get(tls, Opts, true) of
            false -> {ok, false};
            true -> {ok, finish_tls(Fields, Opts)};
            Name ->
                %% A named context is the whole of the settings.
                case [{K, V} || {K, V} <- maps:to_list(Opts), lists:member(K, Tls), K =/= tls] of
                    [] -> {ok, str(tls, Name)};
                    [Clash | _] -> {error, {badarg, Clash}}
                end
        end
    catch throw:Error -> {error, Error}
    end;
tls_options(Other, _Role) ->
    {error, {badarg, Other}}.

%% Options that only make sense together.
finish_tls(Fields0, Opts) ->
    {CrlCheck, Fields1} = take('$crl_check', Fields0),
    Fields2 = case {CrlCheck, Fields1} of
                  {false, _} -> maps:remove(crlfile, Fields1);
                  {true, #{crlfile := _}} -> Fields1;
                  {true, _} -> throw({badarg, {crl_check, true}});   % nothing to check against
                  {undefined, _} -> Fields1
              end,
    {Keep, Fields3} = take('$keep_secrets', Fields2),
    Fields4 = case {Keep, Fields3} of
                  {false, _} -> maps:remove(keylog, Fields3);
                  {true, #{keylog := _}} -> Fields3;
                  {true, _} -> throw({badarg, {keep_secrets, true}});   % no keylog_file
                  {undefined, _} -> Fields3
              end,
    Clashes = [{verify_fun, ask_verify}, {dh, dhfile}, {certs_keys, certfile},
               {certs_keys, cert}, {certs_keys, keyfile}, {certs_keys, key}],
    [throw({badarg, {A, maps:get(A, Opts)}})
     || {A, B} <- Clashes, is_map_key(A, Opts), is_map_key(B, Opts)],
    case Opts of
        #{alpn_advertised_protocols := P1, alpn_preferred_protocols := P2} when P1 =/= P2 ->
            throw({badarg, {alpn_preferred_protocols, P2}});
        _ -> Fields4
    end.

take(K, M) ->
    case maps:take(K, M) of
        {V, M1} -> {V, M1};
        error -> {undefined, M}
    end.

%% One option to the daemon's `tls' fields (protocol.md section 4, and
%% nothing else); a value it cannot take is {badarg, {K, V}}.
tls_opt(tls, V, Acc) when is_boolean(V) -> Acc;
tls_opt(tls, V, Acc) ->
    case str(tls, V) of
        <<>> -> throw({badarg, {tls, V}});
        _ -> Acc
    end;
tls_opt(certfile, V, Acc) -> Acc#{certfile => str(certfile, V)};
tls_opt(keyfile, V, Acc) -> Acc#{keyfile => str(keyfile, V)};
tls_opt(password, F, Acc) when is_function(F, 0); is_function(F, 1) -> Acc#{ask_password => true};
tls_opt(password, V, Acc) -> Acc#{password => str(password, V)};
tls_opt(password_file, V, Acc) -> Acc#{password_file => str(password_file, V)};
tls_opt(ask_password, P, Acc) when is_pid(P) -> Acc#{ask_password => true};
tls_opt(cert, V, Acc) -> Acc#{cert => cert_pem(cert, V)};
tls_opt(key, V, Acc) -> Acc#{key => key_pem(V)};
tls_opt(certs_keys, [CK] = V, Acc) when is_map(CK) ->
    %% A bad value inside names the whole option, as OTP reports it.
    try maps:fold(fun(K, X, A) ->
                          case lists:member(K, ?CERTS_KEYS_OPTS) of
                              true -> tls_opt(K, X, A);
                              false -> throw({badarg, {certs_keys, V}})
                          end
                  end, Acc, CK)
    catch throw:{badarg, _} -> throw({badarg, {certs_keys, V}})
    end;
tls_opt(cacertfile, V, Acc) -> Acc#{cacertfile => str(cacertfile, V)};
tls_opt(cacertdir, V, Acc) -> Acc#{cacertdir => str(cacertdir, V)};
tls_opt(cacerts, [_ | _] = V, Acc) -> Acc#{cacert => cert_pem(cacerts, V)};
tls_opt(crl_check, V, Acc) when is_boolean(V) -> Acc#{'$crl_check' => V};
tls_opt(crlfile, V, Acc) -> Acc#{crlfile => str(crlfile, V)};
tls_opt(verify, verify_none, Acc) -> Acc#{verify => 0};
tls_opt(verify, verify_peer, Acc) -> Acc#{verify => 2};
tls_opt(verify, N, Acc) when N =:= 0; N =:= 1; N =:= 2 -> Acc#{verify => N};
tls_opt(verify_fun, {F, _State}, Acc) when is_function(F, 3); is_function(F, 4) ->
    Acc#{verify_callback => true};
tls_opt(ask_verify, P, Acc) when is_pid(P) -> Acc#{verify_callback => true};
tls_opt(callback_timeout, N, Acc) when is_integer(N), N > 0, N =< 3600000 ->
    Acc#{callback_timeout_ms => N};
tls_opt(depth, N, Acc) when is_integer(N), N >= 0, N =< 100 -> Acc#{depth => N};
tls_opt(ciphers, V, Acc) -> Acc#{ciphers => cipher_list(ciphers, V)};
tls_opt(ciphersuites, V, Acc) -> Acc#{ciphersuites => cipher_list(ciphersuites, V)};
tls_opt(versions, Vs, Acc) when is_list(Vs), Vs =/= [] ->
    Ranks = [version_rank(V) || V <- Vs],
    Acc#{min_version => version_name(lists:min(Ranks)),
         max_version => version_name(lists:max(Ranks))};
%% Turns SNI off only; the host-name check stays (verify_hostname).
tls_opt(server_name_indication, disable, Acc) -> Acc#{server_name => <<>>};
tls_opt(server_name_indication, V, Acc) -> Acc#{server_name => str(server_name_indication, V)};
tls_opt(verify_hostname, false, Acc) -> Acc#{verify_hostname => false};
tls_opt(verify_hostname, true, Acc) -> Acc;    % the default check
tls_opt(verify_hostname, V, Acc) ->
    case str(verify_hostname, V) of
        <<>> -> throw({badarg, {verify_hostname, V}});
        Name -> Acc#{verify_hostname => Name}
    end;
tls_opt(K, V, Acc) when K =:= alpn_advertised_protocols; K =:= alpn_preferred_protocols ->
    Acc#{alpn => alpn_list(K, V)};
tls_opt(reuse_sessions, V, Acc) when is_boolean(V) -> Acc#{session_reuse => V};
tls_opt(ocsp_stapling, V, Acc) when is_boolean(V) -> Acc#{ocsp_status_request => V};
tls_opt(ocsp_response_file, V, Acc) -> Acc#{ocsp_response_file => str(ocsp_response_file, V)};
tls_opt(sni_hosts, [_ | _] = V, Acc) when length(V) =< 256 ->
    Acc#{sni => [sni_entry(V, E) || E <- V]};
tls_opt(ticket_keys, [_ | _] = V, Acc) when length(V) =< 16 ->
    Acc#{ticket_keys => [str(ticket_keys, F) || F <- V]};
tls_opt(dhfile, V, Acc) -> Acc#{dhparamfile => str(dhfile, V)};
tls_opt(dh, V, Acc) when is_binary(V), byte_size(V) > 0 -> Acc#{'$dh' => V};
tls_opt(keep_secrets, V, Acc) when is_boolean(V) -> Acc#{'$keep_secrets' => V};
tls_opt(keylog_file, V, Acc) -> Acc#{keylog => str(keylog_file, V)};
tls_opt(ssl_flags, V, Acc) -> Acc#{flags => str(ssl_flags, V)};
tls_opt(log, V, Acc) -> Acc#{logfile => str(log, V)};
tls_opt(K, V, _Acc) -> throw({badarg, {K, V}}).

%% A string option's value as a binary.
str(K, V) ->
    try tlsport_lib:to_binary(V)
    catch throw:{badarg, _} -> throw({badarg, {K, V}})
    end.

cipher_list(_K, V) when is_binary(V) -> V;
cipher_list(K, [C | _] = V) when is_integer(C) -> str(K, V);
cipher_list(K, V) when is_list(V) ->
    try iolist_to_binary(lists:join(":", [tlsport_lib:to_binary(C) || C <- V]))
    catch throw:{badarg, _} -> throw({badarg, {K, V}})
    end;
cipher_list(K, V) -> throw({badarg, {K, V}}).

%% ALPN protocols as OTP gives them: a list of binaries (strings are
%% taken too), each 1..255 bytes.
alpn_list(K, [_ | _] = V) when length(V) =< 64 ->
    [case P of
         _ when is_binary(P), byte_size(P) > 0, byte_size(P) =< 255 -> P;
         [_ | _] ->
             case catch unicode:characters_to_binary(P) of
                 B when is_binary(B), byte_size(B) =< 255 -> B;
                 _ -> throw({badarg, {K, V}})
             end;
         _ -> throw({badarg, {K, V}})
     end || P <- V];
alpn_list(K, V) -> throw({badarg, {K, V}}).

%% One {Hostname, Options} of sni_hosts as the daemon's sni entry.
sni_entry(All, {Host, Opts}) when is_list(Opts); is_map(Opts) ->
    Name = case catch tlsport_lib:to_binary(Host) of
               B when is_binary(B), byte_size(B) > 0, byte_size(B) =< 253 -> B;
               _ -> throw({badarg, {sni_hosts, All}})
           end,
    List = if is_map(Opts) -> maps:to_list(Opts); true -> Opts end,
    Entry = lists:foldl(
              fun({K, V}, Acc) when is_atom(K) ->
                      case lists:member(K, ?SNI_ENTRY_OPTS) andalso not is_function(V) of
                          true -> tls_opt(K, V, Acc);
                          false -> throw({badarg, {sni_hosts, All}})
                      end;
                 (_, _) -> throw({badarg, {sni_hosts, All}})
              end, #{}, List),
    case Entry of
        #{certfile := _} -> Entry#{names => [Name]};
        #{cert := _} -> Entry#{names => [Name]};
        _ -> throw({badarg, {sni_hosts, All}})    % a certificate is what an entry is for
    end;
sni_entry(All, _) -> throw({badarg, {sni_hosts, All}}).

version_rank('tlsv1.2') -> 2;
version_rank('tlsv1.3') -> 3;
version_rank(V) -> throw({unsupported_protocol, io_lib:format("~p is not supported: use 'tlsv1.2' or 'tlsv1.3'", [V])}).

version_name(2) -> <<"tlsv1.2">>;
version_name(3) -> <<"tlsv1.3">>.

%% @doc What the library itself must do for the daemon's questions
%% (protocol.md 2.2): `none', `{context, Name}' (the named context's), or
%% a map with `password' (a fun or `{ask, Pid}'), `verify' (`{Fun,
%% UserState}' or `{ask, Pid}') and `timeout' (ms).
-spec tls_callbacks(map()) -> none | {context, binary()} | map().
tls_callbacks(#{tls := Name}) when not is_boolean(Name) ->
    {context, tlsport_lib:to_binary(Name)};
tls_callbacks(#{tls := false}) ->
    none;
tls_callbacks(Opts) ->
    Password = case Opts of
                   #{password := F} when is_function(F) -> #{password => F};
                   #{ask_password := P} -> #{password => {ask, P}};
                   #{certs_keys := [#{password := F}]} when is_function(F) -> #{password => F};
                   _ -> #{}
               end,
    Verify = case Opts of
                 #{verify_fun := VF} -> #{verify => VF};
                 #{ask_verify := P2} -> #{verify => {ask, P2}};
                 _ -> #{}
             end,
    case maps:merge(Password, Verify) of
        Empty when map_size(Empty) =:= 0 -> none;
        Cbs -> Cbs#{timeout => maps:get(callback_timeout, Opts, 30000)}
    end.

%%% ---------------------------------------------------------------- PEM and DER

%% OTP gives certificates as DER and keys as {Type, DER}; the daemon takes
%% inline certificates and keys as PEM text. PEM is passed as it is.
cert_pem(K, V) ->
    try
        case V of
            <<"-----BEGIN", _/binary>> -> V;
            [C | _] when is_integer(C) -> pem_text(K, V);
            Der when is_binary(Der), byte_size(Der) > 0 -> pem_encode(<<"CERTIFICATE">>, Der);
            [_ | _] -> iolist_to_binary([cert_pem(K, C) || C <- V]);
            _ -> throw({badarg, {K, V}})
        end
    catch throw:_ -> throw({badarg, {K, V}})
    end.

key_pem({Type, Der} = V) when is_binary(Der), byte_size(Der) > 0 ->
    case key_label(Type) of
        undefined -> throw({badarg, {key, V}});
        Label -> pem_encode(Label, Der)
    end;
key_pem(<<"-----BEGIN", _/binary>> = Pem) -> Pem;
key_pem([C | _] = V) when is_integer(C) -> pem_text(key, V);
key_pem(V) -> throw({badarg, {key, V}}).

key_label('RSAPrivateKey') -> <<"RSA PRIVATE KEY">>;
key_label('DSAPrivateKey') -> <<"DSA PRIVATE KEY">>;
key_label('ECPrivateKey') -> <<"EC PRIVATE KEY">>;
key_label('PrivateKeyInfo') -> <<"PRIVATE KEY">>;
key_label('EncryptedPrivateKeyInfo') -> <<"ENCRYPTED PRIVATE KEY">>;
key_label(_) -> undefined.

pem_text(K, V) ->
    case str(K, V) of
        <<"-----BEGIN", _/binary>> = B -> B;
        _ -> throw({badarg, {K, V}})
    end.

%% @doc DER as one PEM block with this label.
-spec pem_encode(binary(), binary()) -> binary().
pem_encode(Label, Der) ->
    B64 = base64:encode(Der),
    iolist_to_binary([<<"-----BEGIN ">>, Label, <<"-----\n">>, pem_lines(B64),
                      <<"-----END ">>, Label, <<"-----\n">>]).

pem_lines(<<Line:64/binary, Rest/binary>>) when Rest =/= <<>> -> [Line, $\n | pem_lines(Rest)];
pem_lines(Last) -> [Last, $\n].

%% @doc The DER of the first PEM block of a text (a certificate as the
%% daemon gives it), or `undefined'.
-spec pem_to_der(binary() | term()) -> binary() | undefined.
pem_to_der(Pem) when is_binary(Pem) ->
    case binary:split(Pem, <<"-----BEGIN ">>) of
        [_, AfterBegin] ->
            case binary:split(AfterBegin, <<"-----">>) of
                [_Label, Body0] ->
                    [Body | _] = binary:split(Body0, <<"-----END ">>),
                    try base64:decode(<< <<C>> || <<C>> <= Body, C > $\s >>)
                    catch error:_ -> undefined
                    end;
                _ -> undefined
            end;
        _ -> undefined
    end;
pem_to_der(_) -> undefined.

%%% ---------------------------------------------------------------- socket options

%% @doc Normalises modern listen options (map or proplist) to a map with
%% every socket option filled in; unknown options (and connect's
%% server_name_indication, verify_hostname) are `{badarg, Opt}'.
-spec listen_options(map() | list()) -> {ok, map()} | {error, term()}.
listen_options(Opts) -> socket_options(listen, Opts).

%% @doc As listen_options/1, for connect (listen's ip, ifaddr, backlog
%% and the server's TLS options are `{badarg, Opt}' here).
-spec connect_options(map() | list()) -> {ok, map()} | {error, term()}.
connect_options(Opts) -> socket_options(connect, Opts).

%% @doc Options of starttls/2,3 as a map: TLS options of the side the
%% daemon plays (`{side, client | server}', or `role'; default client),
%% and the timeouts. Socket options are `{badarg, Opt}' (the socket keeps
%% its framing and active mode).
-spec starttls_options(map() | list()) -> {ok, map()} | {error, term()}.
starttls_options(Opts) ->
    try
        M = norm_all(option_names(starttls), to_list(Opts), #{}),
        begin
            Side = case M of
                       #{side := S, role := R} when S =/= R -> throw({badarg, {role, R}});
                       #{side := S} -> S;
                       #{role := R} -> R;
                       _ -> client
                   end,
            Role = case Side of client -> client; server -> server end,
            Wrong = [K || K <- maps:keys(M), K =/= side, K =/= role,
                          not lists:member(K, ?TIMEOUT_OPTS ++ tls_names(Role))],
            case Wrong of
                [] -> ok;
                [K | _] -> throw({badarg, {K, maps:get(K, M)}})
            end,
            case M of
                #{tls := false} -> throw({badarg, {tls, false}});
                _ -> ok
            end,
            {ok, M#{side => Side}}
        end
    catch throw:Error -> {error, Error}
    end.

%% @doc Options of tls_context/2 as a map (TLS options of either side).
-spec context_options(map() | list()) -> {ok, map()} | {error, term()}.
context_options(Opts) ->
    try {ok, norm_all(option_names(tls_context), to_list(Opts), #{})}
    catch throw:Error -> {error, Error}
    end.

to_list(Opts) when is_map(Opts) -> maps:to_list(Opts);
to_list(Opts) when is_list(Opts) -> Opts;
to_list(Other) -> throw({badarg, Other}).

socket_options(Role, Opts) when is_map(Opts) -> socket_options(Role, maps:to_list(Opts));
socket_options(Role, Opts) when is_list(Opts) ->
    try norm_all(option_names(Role), Opts, #{}) of
        M ->
            {ok, Mode} = tlsport_lib:modern_mode(maps:get(packet, M, raw)),
            {ok, M#{daemon_mode => Mode,
                    format => maps:get(mode, M, binary),
                    active => maps:get(active, M, true)}}
    catch throw:Error -> {error, Error}
    end;
socket_options(_Role, Other) -> {error, {badarg, Other}}.

norm_all(_Names, [], M) -> M;
norm_all(Names, [O | Os], M) -> norm_all(Names, Os, norm(Names, O, M));
norm_all(_Names, Tail, _M) -> throw({badarg, Tail}).   % an improper list

norm(Names, binary, M) -> bare(Names, binary, M);
norm(Names, list, M) -> bare(Names, list, M);
norm(Names, {K, V} = O, M) when is_atom(K) ->
    case lists:member(K, Names) of
        true -> check_opt(K, V), M#{K => V};
        false -> throw({badarg, O})
    end;
norm(_Names, Other, _M) -> throw({badarg, Other}).

bare(Names, Format, M) ->
    case lists:member(mode, Names) of
        true -> M#{mode => Format};
        false -> throw({badarg, Format})
    end.

%% Refuses a value the option cannot take ({badarg, {K, V}}, or
%% {unsupported_protocol, _} for old TLS versions).
check_opt(packet, V) ->
    case tlsport_lib:modern_mode(V) of
        {ok, _} -> ok;
        {error, E} -> throw(E)
    end;
check_opt(mode, V) when V =:= binary; V =:= list -> ok;
check_opt(active, V) ->
    case valid_active(V) of
        true -> ok;
        false -> throw({badarg, {active, V}})
    end;
check_opt(K, V) when K =:= ip; K =:= ifaddr ->
    case tlsport_lib:host_string(V) of
        {ok, _} -> ok;
        {error, _} -> throw({badarg, {K, V}})
    end;
check_opt(K, N) when (K =:= packet_size orelse K =:= backlog), is_integer(N), N > 0 -> ok;
check_opt(K, N) when (K =:= handshake_timeout orelse K =:= close_timeout),
                     is_integer(N), N > 0, N =< 3600000 -> ok;
check_opt(idle_timeout, infinity) -> ok;
check_opt(idle_timeout, N) when is_integer(N), N > 0, N =< 86400000 -> ok;
check_opt(K, V) when (K =:= side orelse K =:= role), (V =:= client orelse V =:= server) -> ok;
check_opt(K, V) ->
    case lists:member(K, tls_names(context)) of
        true -> _ = tls_opt(K, V, #{}), ok;
        false -> throw({badarg, {K, V}})
    end.

%% @doc The daemon's timeout fields for the timeout options in a map.
-spec timeout_fields(map()) -> map().
timeout_fields(M) ->
    maps:from_list([{F, V} || {K, F} <- [{handshake_timeout, handshake_timeout_ms},
                                         {idle_timeout, idle_timeout_ms},
                                         {close_timeout, close_timeout_ms}],
                              V <- [maps:get(K, M, undefined)], is_integer(V)]).

valid_active(V) when is_boolean(V); V =:= once -> true;
valid_active(N) when is_integer(N), N >= -32768, N =< 32767 -> true;
valid_active(_) -> false.

%% @doc Options for setopts/2 (map or proplist): `{ok, [{Key, Value}]}'
%% with bare `binary' and `list' as `{mode, _}'. A value an option cannot
%% take, or an option that cannot be changed on a connected socket
%% (packet, certfile, ...), is `einval', as in inet; an option the library
%% does not know at all is `{badarg, Opt}'.
-spec setopts_options(map() | list()) -> {ok, [{atom(), term()}]} | {error, term()}.
setopts_options(Opts) when is_map(Opts) -> setopts_options(maps:to_list(Opts));
setopts_options(Opts) when is_list(Opts) ->
    try {ok, setopts_all(Opts)}
    catch throw:Error -> {error, Error}
    end;
setopts_options(_Other) ->
    {error, einval}.

setopts_all([]) -> [];
setopts_all([O | Os]) -> [setopt_option(O) | setopts_all(Os)];
setopts_all(_Tail) -> throw(einval).

setopt_option(binary) -> {mode, binary};
setopt_option(list) -> {mode, list};
setopt_option({active, A} = O) when is_boolean(A); A =:= once -> O;
setopt_option({active, N} = O) when is_integer(N), N =< 32767 -> O;   % =< 0: passive, as inet
setopt_option({mode, M} = O) when M =:= binary; M =:= list -> O;
setopt_option({packet_size, N} = O) when is_integer(N), N > 0 -> O;
setopt_option({K, _V} = O) when is_atom(K) ->
    case is_option(K) of
        true -> throw(einval);
        false -> throw({badarg, O})
    end;
setopt_option(O) ->
    throw({badarg, O}).

%% @doc The names getopts/2 takes: any option name (`{badarg, Name}'
%% otherwise); active, mode and packet have values to report.
-spec getopts_names(term()) -> ok | {error, term()}.
getopts_names([]) -> ok;
getopts_names([N | Ns]) when is_atom(N) ->
    case is_option(N) of
        true -> getopts_names(Ns);
        false -> {error, {badarg, N}}
    end;
getopts_names([N | _]) -> {error, {badarg, N}};
getopts_names(_Other) -> {error, einval}.

is_option(K) ->
    K =:= binary orelse K =:= list orelse
        lists:member(K, option_names(listen) ++ option_names(connect) ++ option_names(starttls)).

