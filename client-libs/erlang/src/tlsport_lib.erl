%% Pure helpers shared by the APIs: framing modes, host names, error terms
%% (options are tlsport_options). Nothing here talks to the daemon.
-module(tlsport_lib).

-export([seed_mode/1, modern_mode/1, max_deliver/1, check_deliver/2, chunks/2,
         daemon_active/1,
         host_string/1, parse_ip/1, peer/1,
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
