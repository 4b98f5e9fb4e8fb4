%% The Erlang servers of scripts/bench (docs/benchmarks.md): one program,
%% written once, run on tlsport's modern API or on OTP's own ssl. Only the
%% calls differ, and they differ as little as the two APIs allow.
%%
%%   erl -noshell -pa ... -eval 'tlsport_bench_server:main(["tlsport", Cert, Key])'
%%   erl -noshell -pa ... -eval 'tlsport_bench_server:main(["ssl", Cert, Key])'
%%
%% Two listeners: the echo port ({packet,2}: every packet is sent back) and
%% the bulk port (raw: a 9-byte request, 'D' or 'U' and a 64-bit count N;
%% 'D': N bytes are sent, then the socket is closed; 'U': N bytes are
%% received, then one byte 'K' is sent). Both in {active,100}, binary.
%% A pool of acceptors: each accepts, starts its successor and serves the
%% connection it got, so every connection has its own process. Prints
%% "PORTS echo=E bulk=B" once listening, then runs until the node stops.
-module(tlsport_bench_server).

-export([main/1]).

-define(ACCEPTORS, 16).
-define(ACTIVE, 100).
-define(CHUNK, 65536).

main([LibName, Cert, Key]) ->
    Lib = list_to_atom(LibName),
    logger:set_primary_config(level, error),
    {ok, _} = application:ensure_all_started(Lib),
    TlsOpts = [{certfile, Cert}, {keyfile, Key}],
    {ok, Echo} = listen(Lib, [{packet, 2} | TlsOpts]),
    {ok, Bulk} = listen(Lib, [{packet, raw} | TlsOpts]),
    [spawn(fun() -> acceptor(Lib, Echo, echo) end) || _ <- lists:seq(1, ?ACCEPTORS)],
    [spawn(fun() -> acceptor(Lib, Bulk, bulk) end) || _ <- lists:seq(1, ?ACCEPTORS)],
    io:format("PORTS echo=~p bulk=~p~n", [port(Lib, Echo), port(Lib, Bulk)]),
    receive after infinity -> ok end.

%%% ---------------------------------------------------------------- the API calls

listen(tlsport, Opts) ->
    tlsport:listen(0, [{ip, {127, 0, 0, 1}}, {backlog, 4096}, {active, ?ACTIVE} | Opts]);
%% nodelay: tlsportd sets TCP_NODELAY on every connection, and so do
%% asyncio, stunnel (as configured here) and the in-process server; without
%% it a handshake's last flight waits for a delayed ACK (40 ms).
listen(ssl, Opts) ->
    ssl:listen(0, [binary, {ip, {127, 0, 0, 1}}, {backlog, 4096}, {active, ?ACTIVE},
                   {nodelay, true}, {reuseaddr, true}, {session_tickets, stateless} | Opts]).

port(tlsport, L) -> {ok, {_, P}} = tlsport:sockname(L), P;
port(ssl, L) -> {ok, {_, P}} = ssl:sockname(L), P.

%% A socket whose handshake is done. tlsport's accept includes the handshake;
%% with ssl it is a second step, taken after the successor is started.
accept(tlsport, L, Next) ->
    R = tlsport:accept(L),
    Next(),
    R;
accept(ssl, L, Next) ->
    case ssl:transport_accept(L) of
        {ok, T} -> Next(), ssl:handshake(T, 30000);
        Error -> Next(), Error
    end.

send(tlsport, S, Data) -> tlsport:send(S, Data);
send(ssl, S, Data) -> ssl:send(S, Data).

again(tlsport, S) -> tlsport:setopts(S, [{active, ?ACTIVE}]);
again(ssl, S) -> ssl:setopts(S, [{active, ?ACTIVE}]).

close(tlsport, S) -> tlsport:close(S);
close(ssl, S) -> ssl:close(S).

%%% ---------------------------------------------------------------- the server

acceptor(Lib, L, Kind) ->
    Next = fun() -> spawn(fun() -> acceptor(Lib, L, Kind) end) end,
    case accept(Lib, L, Next) of
        {ok, S} when Kind =:= echo -> echo(Lib, S);
        {ok, S} -> request(Lib, S, <<>>);
        _ -> ok  % a failed handshake: the successor goes on
    end.

echo(Lib, S) ->
    receive
        {Tag, S, Data} when Tag =:= tlsport; Tag =:= ssl ->
            _ = send(Lib, S, Data),
            echo(Lib, S);
        {Tag, S} when Tag =:= tlsport_passive; Tag =:= ssl_passive ->
            _ = again(Lib, S),
            echo(Lib, S);
        {Tag, S} when Tag =:= tlsport_closed; Tag =:= ssl_closed -> ok;
        {Tag, S, _} when Tag =:= tlsport_error; Tag =:= ssl_error -> close(Lib, S)
    end.

request(Lib, S, Acc) when byte_size(Acc) >= 9 ->
    case Acc of
        <<"D", N:64, _/binary>> ->
            download(Lib, S, N, binary:copy(<<0>>, ?CHUNK));
        <<"U", N:64, Rest/binary>> ->
            upload(Lib, S, N - byte_size(Rest))
    end;
request(Lib, S, Acc) ->
    case next(Lib, S) of
        {data, Data} -> request(Lib, S, <<Acc/binary, Data/binary>>);
        closed -> ok
    end.

download(Lib, S, N, Chunk) when N >= ?CHUNK ->
    case send(Lib, S, Chunk) of
        ok -> download(Lib, S, N - ?CHUNK, Chunk);
        _ -> close(Lib, S)
    end;
download(Lib, S, 0, _) ->
    close(Lib, S);
download(Lib, S, N, Chunk) ->
    _ = send(Lib, S, binary:part(Chunk, 0, N)),
    close(Lib, S).

upload(Lib, S, Left) when Left =< 0 ->
    _ = send(Lib, S, <<"K">>),
    drain(Lib, S);
upload(Lib, S, Left) ->
    case next(Lib, S) of
        {data, Data} -> upload(Lib, S, Left - byte_size(Data));
        closed -> ok
    end.

drain(Lib, S) ->
    case next(Lib, S) of
        {data, _} -> drain(Lib, S);
        closed -> ok
    end.

%% The next data of an active socket; re-arms {active, N} when it runs out.
next(Lib, S) ->
    receive
        {Tag, S, Data} when Tag =:= tlsport; Tag =:= ssl -> {data, Data};
        {Tag, S} when Tag =:= tlsport_passive; Tag =:= ssl_passive ->
            _ = again(Lib, S),
            next(Lib, S);
        {Tag, S} when Tag =:= tlsport_closed; Tag =:= ssl_closed -> closed;
        {Tag, S, _} when Tag =:= tlsport_error; Tag =:= ssl_error -> close(Lib, S), closed
    end.
