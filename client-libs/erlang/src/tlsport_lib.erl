%% Pure helpers shared by the APIs: framing modes, TLS options, host names,
%% error terms. Nothing here talks to the daemon.
-module(tlsport_lib).

-export([seed_mode/1, modern_mode/1, max_deliver/1, check_deliver/2, chunks/2,
         daemon_active/1,
         host_string/1, parse_ip/1, peer/1,
         option_names/1, tls_options/2, listen_options/1, connect_options/1,
         setopts_options/1, getopts_names/1,
         error_reason/1, set_last_error/1, last_error/0,
         to_binary/1]).

-export_type([format/0, error_reason/0]).

%% How a socket hands received data to its owner.
-type format() :: list | binary.
%% `Kind' for errno-like errors (econnrefused, closed, timeout, ...);
%% `{Kind, Message}' when the daemon's message carries the substance
%% (tls, bad_tls_config, bad_request, unsupported_protocol).
-type error_reason() :: atom() | {atom(), string()} | term().

%% Largest body of one deliver: the daemon's default --max-message
%% (64 MiB + 64 KiB) less room for the frame envelope.
-define(MAX_FRAME_DATA, (64 * 1024 * 1024)).
%% Raw data is delivered in pieces of at most this size.
-define(RAW_CHUNK, (128 * 1024)).
%% Kinds whose message is kept in the reason.
-define(DETAILED, [tls, bad_tls_config, bad_request, unsupported_protocol, bad_packet]).

%%% ---------------------------------------------------------------- modes

%% @doc Seed 004 modes to the daemon's mode string and the data format.
-spec seed_mode(term()) -> {ok, binary(), format()} | {error, {badarg, term()}}.
seed_mode(raw) -> {ok, <<"raw">>, list};
seed_mode(onebyte) -> {ok, <<"packet:1">>, list};
seed_mode(twobytes) -> {ok, <<"packet:2">>, list};
seed_mode(fourbytes) -> {ok, <<"packet:4">>, list};
seed_mode(asn1) -> {ok, <<"asn1">>, list};
seed_mode({packet, 0}) -> {ok, <<"raw">>, list};
seed_mode({packet, N}) when N =:= 1; N =:= 2; N =:= 4 ->
    {ok, <<"packet:", (integer_to_binary(N))/binary>>, list};
seed_mode({binary_packet, N}) when N =:= 0; N =:= 1; N =:= 2; N =:= 4 ->
    {ok, <<"binary_packet:", (integer_to_binary(N))/binary>>, binary};
seed_mode(Other) -> {error, {badarg, Other}}.

%% @doc The modern `{packet, P}' option to the daemon's mode string.
-spec modern_mode(term()) -> {ok, binary()} | {error, {badarg, term()}}.
modern_mode(raw) -> {ok, <<"raw">>};
modern_mode(0) -> {ok, <<"raw">>};
modern_mode(N) when N =:= 1; N =:= 2; N =:= 4 ->
    {ok, <<"packet:", (integer_to_binary(N))/binary>>};
modern_mode(asn1) -> {ok, <<"asn1">>};
modern_mode(line) -> {ok, <<"line">>};
modern_mode(Other) -> {error, {badarg, {packet, Other}}}.

%% @doc Largest payload one deliver may carry in this mode.
-spec max_deliver(binary()) -> pos_integer().
max_deliver(<<"packet:1">>) -> 255;
max_deliver(<<"binary_packet:1">>) -> 255;
max_deliver(<<"packet:2">>) -> 65535;
max_deliver(<<"binary_packet:2">>) -> 65535;
max_deliver(_) -> ?MAX_FRAME_DATA.

%% @doc Checks data before it is delivered: `{ok, Chunks}' with the
%% iodata split into pieces the control channel carries (raw modes
%% only; a packet is never split), or an error.
-spec check_deliver(binary(), iodata()) -> {ok, [iodata()]} | {error, emsgsize | badarg}.
check_deliver(Mode, Data) ->
    case chunks(Mode, Data) of
        {ok, Sized} -> {ok, [C || {_, C} <- Sized]};
        Error -> Error
    end.

%% @doc As check_deliver/2, with the size of every chunk. Raw data is cut
%% into pieces of at most ?RAW_CHUNK bytes, so that flow control (see
%% tlsport_socket) can hold a long send between two of them; a packet is
%% one chunk whatever its size.
-spec chunks(binary(), iodata()) ->
          {ok, [{non_neg_integer(), iodata()}]} | {error, emsgsize | badarg}.
chunks(Mode, Data) ->
    try iolist_size(Data) of
        Size ->
            Raw = Mode =:= <<"raw">> orelse Mode =:= <<"binary_packet:0">>,
            if
                Raw, Size > ?RAW_CHUNK -> {ok, split(iolist_to_binary(Data), ?RAW_CHUNK)};
                Raw -> {ok, [{Size, Data}]};
                true ->
                    case Size =< max_deliver(Mode) of
                        true -> {ok, [{Size, Data}]};
                        false -> {error, emsgsize}
                    end
            end
    catch
        error:badarg -> {error, badarg}
    end.

split(Bin, Max) when byte_size(Bin) =< Max -> [{byte_size(Bin), Bin}];
split(Bin, Max) ->
    <<Head:Max/binary, Rest/binary>> = Bin,
    [{Max, Head} | split(Rest, Max)].

%% @doc A modern `{active, A}' value as the daemon's `active' field
%% (true, false, once or a count; a count =< 0 is passive, as in inet).
-spec daemon_active(boolean() | once | integer()) -> boolean() | once | pos_integer().
daemon_active(N) when is_integer(N), N > 0 -> N;
daemon_active(N) when is_integer(N) -> false;
daemon_active(A) when is_boolean(A); A =:= once -> A.

%%% ---------------------------------------------------------------- hosts

%% @doc Any host form (atom, string, binary, address tuple) as a binary.
-spec host_string(term()) -> {ok, binary()} | {error, {badarg, term()}}.
host_string(H) when is_atom(H) -> {ok, atom_to_binary(H, utf8)};
host_string(H) when is_binary(H) -> {ok, H};
host_string(H) when is_tuple(H) ->
    case inet:ntoa(H) of
        {error, _} -> {error, {badarg, H}};
        S -> {ok, list_to_binary(S)}
    end;
host_string(H) when is_list(H) ->
    try {ok, unicode:characters_to_binary(H)}
    catch _:_ -> {error, {badarg, H}}
    end;
host_string(H) -> {error, {badarg, H}}.

%% @doc An address text from the daemon as an address tuple (or the text
%% itself when it is not an address).
-spec parse_ip(binary()) -> inet:ip_address() | string().
parse_ip(Bin) ->
    S = binary_to_list(Bin),
    case inet:parse_address(S) of
        {ok, IP} -> IP;
        {error, _} -> S
    end.

%% @doc The daemon's `#{host, port}' as `{IP, Port}'.
-spec peer(map() | undefined) -> {inet:ip_address() | string(), inet:port_number()} | undefined.
peer(#{host := H, port := P}) -> {parse_ip(H), P};
peer(_) -> undefined.

%%% ---------------------------------------------------------------- options

%% The options of the modern API, by where they apply (docs/erlang.md
%% lists them). Bare `binary' and `list' stand for {mode, _}. Anything
%% else is refused with {badarg, Opt} before a command is sent: no option
%% is ever dropped unnoticed.
-define(SOCKET_OPTS, [packet, mode, active, packet_size]).
-define(LISTEN_OPTS, [ip, ifaddr, backlog, handshake_timeout]).
-define(TLS_OPTS, [tls, certfile, keyfile, password, cacertfile, cacertdir, verify, depth,
                   ciphers, ciphersuites, versions, ssl_flags, log]).
-define(CLIENT_TLS_OPTS, [server_name_indication, verify_hostname]).
-define(SETOPTS_OPTS, [active, mode, packet_size]).
%% Keys socket_options/2 adds to the options it returns.
-define(DERIVED, [daemon_mode, format]).

%% @doc The option names listen/2 (`listen'), connect/3,4 (`connect') and
%% setopts/2 (`setopts') take, besides the bare atoms `binary' and `list'.
-spec option_names(listen | connect | setopts) -> [atom()].
option_names(listen) -> ?SOCKET_OPTS ++ ?LISTEN_OPTS ++ ?TLS_OPTS;
option_names(connect) -> ?SOCKET_OPTS ++ ?TLS_OPTS ++ ?CLIENT_TLS_OPTS;
option_names(setopts) -> ?SETOPTS_OPTS.

%% @doc Modern TLS options (a map, as listen_options/1 and
%% connect_options/1 return it) to the daemon's `tls' field. `Role' is
%% client or server. Socket options in the map are passed over; an option
%% that is neither, or a client's option given to a server, is an error.
-spec tls_options(map(), client | server) -> {ok, map() | false} | {error, term()}.
tls_options(Opts, Role) when is_map(Opts) ->
    Tls = case Role of
              client -> ?TLS_OPTS ++ ?CLIENT_TLS_OPTS;
              server -> ?TLS_OPTS
          end,
    Other = ?SOCKET_OPTS ++ ?LISTEN_OPTS ++ ?DERIVED,
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
    try maps:fold(Fold, #{}, Opts) of
        Fields ->
            case maps:get(tls, Opts, true) of
                false -> {ok, false};
                true -> {ok, Fields}
            end
    catch throw:Error -> {error, Error}
    end;
tls_options(Other, _Role) ->
    {error, {badarg, Other}}.

%% One option to the daemon's `tls' fields (protocol.md section 4, and
%% nothing else); a value it cannot take is {badarg, {K, V}}.
tls_opt(tls, V, Acc) when is_boolean(V) -> Acc;
tls_opt(certfile, V, Acc) -> Acc#{certfile => str(certfile, V)};
tls_opt(keyfile, V, Acc) -> Acc#{keyfile => str(keyfile, V)};
tls_opt(password, V, Acc) -> Acc#{password => str(password, V)};
tls_opt(cacertfile, V, Acc) -> Acc#{cacertfile => str(cacertfile, V)};
tls_opt(cacertdir, V, Acc) -> Acc#{cacertdir => str(cacertdir, V)};
tls_opt(verify, verify_none, Acc) -> Acc#{verify => 0};
tls_opt(verify, verify_peer, Acc) -> Acc#{verify => 2};
tls_opt(verify, N, Acc) when N =:= 0; N =:= 1; N =:= 2 -> Acc#{verify => N};
tls_opt(depth, N, Acc) when is_integer(N), N >= 0 -> Acc#{depth => N};
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
tls_opt(ssl_flags, V, Acc) -> Acc#{flags => str(ssl_flags, V)};
tls_opt(log, V, Acc) -> Acc#{logfile => str(log, V)};
tls_opt(K, V, _Acc) -> throw({badarg, {K, V}}).

%% A string option's value as a binary.
str(K, V) ->
    try bin(V)
    catch throw:{badarg, _} -> throw({badarg, {K, V}})
    end.

cipher_list(_K, V) when is_binary(V) -> V;
cipher_list(K, [C | _] = V) when is_integer(C) -> str(K, V);
cipher_list(K, V) when is_list(V) ->
    try iolist_to_binary(lists:join(":", [bin(C) || C <- V]))
    catch throw:{badarg, _} -> throw({badarg, {K, V}})
    end;
cipher_list(K, V) -> throw({badarg, {K, V}}).

version_rank('tlsv1.2') -> 2;
version_rank('tlsv1.3') -> 3;
version_rank(V) -> throw({unsupported_protocol, io_lib:format("~p is not supported: use 'tlsv1.2' or 'tlsv1.3'", [V])}).

version_name(2) -> <<"tlsv1.2">>;
version_name(3) -> <<"tlsv1.3">>.

%% @doc Normalises modern listen options (map or proplist) to a map with
%% every socket option filled in; unknown options (and connect's
%% server_name_indication, verify_hostname) are `{badarg, Opt}'.
-spec listen_options(map() | list()) -> {ok, map()} | {error, term()}.
listen_options(Opts) -> socket_options(listen, Opts).

%% @doc As listen_options/1, for connect (listen's ip, ifaddr, backlog,
%% handshake_timeout are `{badarg, Opt}' here).
-spec connect_options(map() | list()) -> {ok, map()} | {error, term()}.
connect_options(Opts) -> socket_options(connect, Opts).

socket_options(Role, Opts) when is_map(Opts) -> socket_options(Role, maps:to_list(Opts));
socket_options(Role, Opts) when is_list(Opts) ->
    try norm_all(option_names(Role), Opts, #{}) of
        M ->
            {ok, Mode} = modern_mode(maps:get(packet, M, raw)),
            {ok, M#{daemon_mode => Mode,
                    format => maps:get(mode, M, binary),
                    active => maps:get(active, M, true)}}
    catch throw:Error -> {error, Error}
    end;
socket_options(_Role, Other) -> {error, {badarg, Other}}.

norm_all(_Names, [], M) -> M;
norm_all(Names, [O | Os], M) -> norm_all(Names, Os, norm(Names, O, M));
norm_all(_Names, Tail, _M) -> throw({badarg, Tail}).   % an improper list

norm(_Names, binary, M) -> M#{mode => binary};
norm(_Names, list, M) -> M#{mode => list};
norm(Names, {K, V} = O, M) when is_atom(K) ->
    case lists:member(K, Names) of
        true -> check_opt(K, V), M#{K => V};
        false -> throw({badarg, O})
    end;
norm(_Names, Other, _M) -> throw({badarg, Other}).

%% Refuses a value the option cannot take ({badarg, {K, V}}, or
%% {unsupported_protocol, _} for old TLS versions).
check_opt(packet, V) ->
    case modern_mode(V) of
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
    case host_string(V) of
        {ok, _} -> ok;
        {error, _} -> throw({badarg, {K, V}})
    end;
check_opt(K, N) when (K =:= packet_size orelse K =:= backlog orelse K =:= handshake_timeout),
                     is_integer(N), N > 0 -> ok;
check_opt(K, V) ->
    case lists:member(K, ?TLS_OPTS ++ ?CLIENT_TLS_OPTS) of
        true -> _ = tls_opt(K, V, #{}), ok;
        false -> throw({badarg, {K, V}})
    end.

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
        lists:member(K, option_names(listen) ++ option_names(connect)).

%%% ---------------------------------------------------------------- errors

%% @doc The daemon's `#{kind, message}' as an Erlang reason term.
-spec error_reason(map() | term()) -> error_reason().
error_reason(#{kind := K} = E) ->
    Kind = binary_to_atom(K, utf8),
    case lists:member(Kind, ?DETAILED) of
        true -> {Kind, binary_to_list(maps:get(message, E, <<>>))};
        false -> Kind
    end;
error_reason(Other) -> Other.

%% @doc Remembers the last error in the calling process (seed API:
%% ssl_socket:last_error/0) and returns it in its error_reason() form.
-spec set_last_error(term()) -> error_reason().
set_last_error(#{kind := K} = E) ->
    put(tlsport_last_error, {binary_to_atom(K, utf8), binary_to_list(maps:get(message, E, <<>>))}),
    error_reason(E);
set_last_error(Reason) ->
    put(tlsport_last_error, Reason),
    Reason.

%% @doc The last error seen by this process, `{Kind, Message}' when it
%% came from the daemon; `undefined' when there was none.
-spec last_error() -> term().
last_error() -> get(tlsport_last_error).

%% @doc Strings, atoms and binaries as a binary (the daemon's strings).
-spec to_binary(term()) -> binary().
to_binary(V) -> bin(V).

bin(V) when is_binary(V) -> V;
bin(V) when is_atom(V) -> atom_to_binary(V, utf8);
bin(V) when is_list(V) ->
    case unicode:characters_to_binary(V) of
        B when is_binary(B) -> B;
        _ -> throw({badarg, V})
    end;
bin(V) -> throw({badarg, V}).
