%% Benchmark: tlsport (through tlsportd) against OTP's own ssl, in one run,
%% on loopback. Run it with scripts/bench_erlang.sh.
%%
%%  bulk      one connection receives a file from `openssl s_server -WWW'
%%            (the same external sender for both); MB/s into one process.
%%  echo      64 connections, 100-byte {packet,2} messages echoed; both ends
%%            in this node with the library under test; round trips/s, p50
%%            and p99 latency.
%%  handshake full TLS 1.3 handshakes (ECDSA P-256, peer verified), both ends
%%            with the library under test, 8 at a time; per second.
%%  idle      memory per idle TLS connection end: Erlang memory plus, for
%%            tlsport, the daemon's resident size.
%% bulk, echo and handshake run `rounds' times (default 3), the two
%% libraries alternating, and the median of each figure is reported: the
%% machine may be shared, and one run of each can mislead.
%% Every loop is bounded by a duration or a count.
-module(tlsport_bench).

-export([main/0, main/1]).

-include_lib("kernel/include/file.hrl").

-define(TIMEOUT, 15000).

main() -> main([]).

main(Args) ->
    Opts = parse(Args, #{seconds => 5, conns => 64, idle => 1000, bulk_mb => 512,
                         handshake_concurrency => 8, only => all, rounds => 3}),
    logger:set_primary_config(level, error),
    Dir = certs(),
    {ok, _} = application:ensure_all_started(ssl),
    {ok, _} = application:ensure_all_started(tlsport),
    io:format("tlsport benchmark: loopback, ~p schedulers, OTP ~s, tlsportd ~s~n",
              [erlang:system_info(schedulers_online), erlang:system_info(otp_release),
               maps:get(version, tlsport:daemon_info(), <<"?">>)]),
    io:format("settings: ~p~nERL_FLAGS: ~s~n~n", [Opts, case os:getenv("ERL_FLAGS") of
                                                          false -> "(none)";
                                                          F -> F
                                                      end]),
    Ctx = Opts#{dir => Dir},
    Run = fun(Phase, F, Rounds) ->
                  case maps:get(only, Opts) of
                      Only when Only =:= all; Only =:= Phase ->
                          Runs = [[{Lib, F(Lib, Ctx)} || Lib <- [tlsport, ssl]]
                                  || _ <- lists:seq(1, Rounds)],
                          Rounds > 1 andalso show_rounds(Phase, Runs),
                          [{Lib, median([proplists:get_value(Lib, R) || R <- Runs])}
                           || Lib <- [tlsport, ssl]];
                      _ -> [{Lib, #{}} || Lib <- [tlsport, ssl]]
                  end
          end,
    Rounds = max(1, maps:get(rounds, Opts)),
    %% Memory first, each library on a fresh start (a daemon's resident size
    %% does not shrink after earlier phases).
    Idle = Run(idle, fun idle/2, 1),
    Bulk = Run(bulk, fun bulk/2, Rounds),
    Echo = Run(echo, fun echo/2, Rounds),
    Hs = Run(handshake, fun handshakes/2, Rounds),
    report(Bulk, Echo, Hs, Idle),
    application:stop(tlsport),
    _ = os:cmd("rm -rf '" ++ Dir ++ "'"),
    ok.

%% The median of each figure over the rounds.
median(Maps) ->
    maps:map(fun(K, _) ->
                     Sorted = lists:sort([maps:get(K, M) || M <- Maps]),
                     lists:nth((length(Sorted) + 1) div 2, Sorted)
             end, hd(Maps)).

show_rounds(Phase, Runs) ->
    Keys = case Phase of bulk -> [mb_s]; echo -> [rtt_s, cpu_us_per_rt]; handshake -> [per_s] end,
    [begin
         Figures = [{fmt(maps:get(Key, proplists:get_value(tlsport, R))),
                     fmt(maps:get(Key, proplists:get_value(ssl, R)))} || R <- Runs],
         io:format("~p rounds (~p, tlsport/ssl): ~s~n",
                   [Phase, Key, lists:join(", ", [[T, "/", S] || {T, S} <- Figures])])
     end || Key <- Keys],
    ok.

parse([], M) -> M;
parse(["only", V | T], M) ->
    parse(T, M#{only => list_to_atom(V)});
parse([K, V | T], M) ->
    parse(T, M#{list_to_atom(K) => list_to_integer(V)}).

%%% ---------------------------------------------------------------- certificates

certs() ->
    Dir = filename:join("/tmp", "tlsport-bench-" ++ os:getpid()),
    ok = filelib:ensure_dir(filename:join(Dir, "x")),
    Key = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes",
    Run = fun(Cmd) ->
                  Out = os:cmd("cd " ++ Dir ++ " && " ++ Cmd ++ " 2>&1; echo rc=$?"),
                  nomatch =/= string:find(Out, "rc=0") orelse error({openssl, Cmd, Out})
          end,
    Run("printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > san.ext"),
    Run("openssl req -x509 " ++ Key ++ " -keyout ca.key -out ca.pem -days 2 -subj /CN=bench-CA"),
    Run("openssl req -new " ++ Key ++ " -keyout server.key -out server.csr -subj /CN=localhost"),
    Run("openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
        "-extfile san.ext -out server.pem"),
    Dir.

f(#{dir := Dir}, Name) -> filename:join(Dir, Name).

tlsport_server_opts(Ctx) -> [{certfile, f(Ctx, "server.pem")}, {keyfile, f(Ctx, "server.key")}].
tlsport_client_opts(Ctx) -> [{cacertfile, f(Ctx, "ca.pem")}].
ssl_server_opts(Ctx) -> [{certfile, f(Ctx, "server.pem")}, {keyfile, f(Ctx, "server.key")},
                         {versions, ['tlsv1.3']}, {reuseaddr, true}].
ssl_client_opts(Ctx) -> [{verify, verify_peer}, {cacertfile, f(Ctx, "ca.pem")},
                         {server_name_indication, "localhost"}, {versions, ['tlsv1.3']}].

%%% ---------------------------------------------------------------- bulk receive

bulk(Lib, #{bulk_mb := MB} = Ctx) ->
    File = "bulk.bin",
    Path = f(Ctx, File),
    case file:read_file_info(Path) of
        {ok, #file_info{size = S}} when S =:= MB * 1024 * 1024 -> ok;
        _ -> "" = os:cmd("head -c " ++ integer_to_list(MB * 1024 * 1024) ++ " /dev/zero > " ++ Path)
    end,
    Port = free_port(),
    Srv = open_port({spawn_executable, os:find_executable("openssl")},
                    [{args, ["s_server", "-accept", "127.0.0.1:" ++ integer_to_list(Port),
                             "-cert", "server.pem", "-key", "server.key", "-WWW", "-quiet",
                             "-naccept", "1"]},
                     {cd, maps:get(dir, Ctx)}, binary, exit_status, stderr_to_stdout]),
    Request = ["GET /", File, " HTTP/1.0\r\n\r\n"],
    T0 = erlang:monotonic_time(microsecond),
    Bytes = case Lib of
                tlsport ->
                    {ok, TS} = retry(fun() -> tlsport:connect("127.0.0.1", Port,
                                                              tlsport_client_opts(Ctx), ?TIMEOUT) end),
                    ok = tlsport:send(TS, Request),
                    count_tlsport(TS, 0);
                ssl ->
                    {ok, SS} = retry(fun() -> ssl:connect("127.0.0.1", Port,
                                                          [binary, {active, true} | ssl_client_opts(Ctx)],
                                                          ?TIMEOUT) end),
                    ok = ssl:send(SS, Request),
                    count_ssl(SS, 0)
            end,
    T1 = erlang:monotonic_time(microsecond),
    catch port_close(Srv),
    Secs = (T1 - T0) / 1.0e6,
    #{mb_s => Bytes / Secs / (1024 * 1024), bytes => Bytes, seconds => Secs}.

retry(F) -> retry(F, 100).
retry(F, N) ->
    case F() of
        {ok, _} = R -> R;
        {error, _} when N > 0 -> timer:sleep(30), retry(F, N - 1);
        E -> error(E)
    end.

count_tlsport(S, N) ->
    receive
        {tlsport, S, D} -> count_tlsport(S, N + byte_size(D));
        {tlsport_closed, S} -> N;
        {tlsport_error, S, _} -> N
    after ?TIMEOUT -> N
    end.

count_ssl(S, N) ->
    receive
        {ssl, S, D} -> count_ssl(S, N + byte_size(D));
        {ssl_closed, S} -> N;
        {ssl_error, S, _} -> N
    after ?TIMEOUT -> N
    end.

%%% ---------------------------------------------------------------- echo

echo(Lib, #{conns := Conns, seconds := Secs} = Ctx) ->
    {Clients, Cleanup} = connect_pairs(Lib, Conns, [{packet, 2}], Ctx, echo),
    Msg = binary:copy(<<"e">>, 100),
    Self = self(),
    %% One second of warm-up, then Secs measured.
    Warm = erlang:monotonic_time(microsecond) + 1000000,
    Deadline = Warm + Secs * 1000000,
    Sampler = spawn_link(fun() -> Self ! {cpu, self(), cpu_between(Lib, Warm, Deadline)} end),
    Pids = [begin
                Pid = spawn_link(fun() ->
                                         own(C),
                                         Self ! {lat, self(), echo_loop(Lib, C, Msg, Warm, Deadline + 1000000, [])}
                                 end),
                ok = lib_controlling(Lib, C, Pid),
                Pid ! {owner, C},
                Pid
            end || C <- Clients],
    Lats = lists:append([receive {lat, P, L} -> L after (Secs + 30) * 1000 -> [] end || P <- Pids]),
    {NodeCpu, DaemonCpu} = receive {cpu, Sampler, C} -> C after (Secs + 30) * 1000 -> {0, 0} end,
    Cleanup(),
    Sorted = lists:sort(Lats),
    N = length(Sorted),
    #{rtt_s => N / Secs, p50_us => pct(Sorted, N, 0.50), p99_us => pct(Sorted, N, 0.99),
      cpu_us_per_rt => case N of 0 -> 0; _ -> (NodeCpu + DaemonCpu) / N end,
      daemon_cpu_us_per_rt => case N of 0 -> 0; _ -> DaemonCpu / N end}.

%% CPU time (microseconds) the node and, for tlsport, the daemon used
%% between two moments.
cpu_between(Lib, From, To) ->
    sleep_until(From),
    {N0, D0} = cpu_us(Lib),
    sleep_until(To),
    {N1, D1} = cpu_us(Lib),
    {N1 - N0, D1 - D0}.

sleep_until(T) ->
    timer:sleep(max(0, (T - erlang:monotonic_time(microsecond)) div 1000)).

cpu_us(Lib) ->
    Tck = clock_ticks(),
    Daemon = case Lib of
                 tlsport -> proc_ticks(integer_to_list(tlsport_server:os_pid()));
                 ssl -> 0
             end,
    {proc_ticks("self") * 1000000 div Tck, Daemon * 1000000 div Tck}.

proc_ticks(Pid) ->
    case file:read_file("/proc/" ++ Pid ++ "/stat") of
        {ok, Stat} ->
            %% utime and stime: fields 14 and 15, counted after the ")".
            [_, After] = string:split(Stat, ")", trailing),
            Fields = string:lexemes(After, " "),
            binary_to_integer(lists:nth(12, Fields)) + binary_to_integer(lists:nth(13, Fields));
        _ -> 0
    end.

clock_ticks() ->
    case string:to_integer(os:cmd("getconf CLK_TCK")) of
        {N, _} when is_integer(N), N > 0 -> N;
        _ -> 100
    end.

pct(_, 0, _) -> 0;
pct(Sorted, N, P) -> lists:nth(max(1, round(N * P)), Sorted).

own(C) -> receive {owner, C} -> ok after ?TIMEOUT -> ok end.

%% Round trips until the deadline; latencies counted after the warm-up.
echo_loop(Lib, C, Msg, Warm, Deadline, Acc) ->
    T0 = erlang:monotonic_time(microsecond),
    if
        T0 >= Deadline -> Acc;
        true ->
            ok = lib_send(Lib, C, Msg),
            receive
                {tlsport, C, _} -> ok;
                {ssl, C, _} -> ok
            after ?TIMEOUT -> error(echo_timeout)
            end,
            T1 = erlang:monotonic_time(microsecond),
            Acc1 = if T0 >= Warm, T1 =< Deadline - 1000000 -> [T1 - T0 | Acc]; true -> Acc end,
            echo_loop(Lib, C, Msg, Warm, Deadline, Acc1)
    end.

lib_send(tlsport, S, D) -> tlsport:send(S, D);
lib_send(ssl, S, D) -> ssl:send(S, D).

%% N connected pairs; server ends run Mode (echo | idle) in their own
%% processes. The client ends are handed to whoever sends {owner, C}.
connect_pairs(Lib, N, SockOpts, Ctx, Mode) ->
    Self = self(),
    {Port, LClose} = lib_listen(Lib, SockOpts, Ctx),
    Acceptor = spawn_link(fun() -> accept_n(Lib, Port, N, Mode, Self) end),
    Clients = [begin
                   {ok, C} = lib_connect(Lib, Port, SockOpts, Ctx),
                   C
               end || _ <- lists:seq(1, N)],
    Servers = [receive {served, S} -> S after ?TIMEOUT -> error(accept_timeout) end
               || _ <- lists:seq(1, N)],
    unlink(Acceptor),
    Cleanup = fun() ->
                      %% Clients close; each server end sees it and ends.
                      Mons = [erlang:monitor(process, S) || S <- Servers],
                      [S ! stop || S <- Servers],
                      [lib_close(Lib, C) || C <- Clients],
                      [receive {'DOWN', M, _, _, _} -> ok after ?TIMEOUT -> ok end || M <- Mons],
                      LClose()
              end,
    {Clients, Cleanup}.

lib_listen(tlsport, SockOpts, Ctx) ->
    {ok, L} = tlsport:listen(0, [{ip, {127, 0, 0, 1}}, {backlog, 1024} | SockOpts ++ tlsport_server_opts(Ctx)]),
    {ok, {_, Port}} = tlsport:sockname(L),
    {{L, Port}, fun() -> tlsport:close(L) end};
lib_listen(ssl, SockOpts, Ctx) ->
    {ok, L} = ssl:listen(0, [binary, {ip, {127, 0, 0, 1}}, {backlog, 1024} | SockOpts ++ ssl_server_opts(Ctx)]),
    {ok, {_, Port}} = ssl:sockname(L),
    {{L, Port}, fun() -> ssl:close(L) end}.

lib_connect(Lib, {_L, Port}, SockOpts, Ctx) ->
    case Lib of
        tlsport -> tlsport:connect("localhost", Port, SockOpts ++ tlsport_client_opts(Ctx), ?TIMEOUT);
        ssl -> ssl:connect("localhost", Port, [binary | SockOpts ++ ssl_client_opts(Ctx)], ?TIMEOUT)
    end.

lib_close(tlsport, S) -> tlsport:close(S);
lib_close(ssl, S) -> ssl:close(S).

accept_n(_Lib, _L, 0, _Mode, _Parent) -> ok;
accept_n(Lib, {L, _} = LL, N, Mode, Parent) ->
    S = case Lib of
            tlsport -> {ok, S0} = tlsport:accept(L, ?TIMEOUT), S0;
            ssl -> {ok, T} = ssl:transport_accept(L, ?TIMEOUT), {ok, S0} = ssl:handshake(T, ?TIMEOUT), S0
        end,
    Pid = spawn(fun() -> serve(Lib, S, Mode) end),
    ok = lib_controlling(Lib, S, Pid),
    Pid ! go,
    Parent ! {served, Pid},
    accept_n(Lib, LL, N - 1, Mode, Parent).

lib_controlling(tlsport, S, Pid) -> tlsport:controlling_process(S, Pid);
lib_controlling(ssl, S, Pid) -> ssl:controlling_process(S, Pid).

serve(Lib, S, Mode) ->
    receive go -> ok after ?TIMEOUT -> ok end,
    case Mode of
        echo -> echo_server(Lib, S);
        idle -> receive stop -> wait_closed(S) end
    end.

wait_closed(S) ->
    receive
        {tlsport_closed, S} -> ok;
        {ssl_closed, S} -> ok
    after ?TIMEOUT -> ok
    end.

echo_server(Lib, S) ->
    receive
        {tlsport, S, D} -> ok = tlsport:send(S, D), echo_server(Lib, S);
        {ssl, S, D} -> ok = ssl:send(S, D), echo_server(Lib, S);
        stop -> echo_server(Lib, S);
        _ -> ok
    end.

%%% ---------------------------------------------------------------- handshakes

handshakes(Lib, #{seconds := Secs, handshake_concurrency := K} = Ctx) ->
    Self = self(),
    {LL, LClose} = lib_listen(Lib, [], Ctx),
    Acceptors = [spawn_link(fun() -> accept_close(Lib, LL) end) || _ <- lists:seq(1, K)],
    Deadline = erlang:monotonic_time(millisecond) + Secs * 1000,
    Clients = [spawn_link(fun() -> Self ! {count, self(), hs_loop(Lib, LL, Ctx, Deadline, 0)} end)
               || _ <- lists:seq(1, K)],
    Total = lists:sum([receive {count, P, C} -> C after (Secs + 30) * 1000 -> 0 end || P <- Clients]),
    [begin unlink(A), exit(A, kill) end || A <- Acceptors],
    LClose(),
    #{per_s => Total / Secs, total => Total}.

%% The server closes at once and the client waits for that close, then
%% closes its end: one full handshake and an orderly close per loop.
hs_loop(Lib, LL, Ctx, Deadline, N) ->
    case erlang:monotonic_time(millisecond) >= Deadline of
        true -> N;
        false ->
            {ok, C} = lib_connect(Lib, LL, [], Ctx),
            receive
                {tlsport_closed, C} -> ok;
                {ssl_closed, C} -> ok
            after ?TIMEOUT -> error(no_close)
            end,
            lib_close(Lib, C),
            hs_loop(Lib, LL, Ctx, Deadline, N + 1)
    end.

accept_close(Lib, {L, _} = LL) ->
    case Lib of
        tlsport ->
            case tlsport:accept(L, ?TIMEOUT) of
                {ok, S} -> tlsport:close(S);
                _ -> ok
            end;
        ssl ->
            case ssl:transport_accept(L, ?TIMEOUT) of
                {ok, T} -> case ssl:handshake(T, ?TIMEOUT) of
                               {ok, S} -> ssl:close(S);
                               _ -> ok
                           end;
                _ -> ok
            end
    end,
    accept_close(Lib, LL).

%%% ---------------------------------------------------------------- idle memory

idle(Lib, #{idle := N} = Ctx) ->
    case Lib of
        tlsport -> application:stop(tlsport), {ok, _} = application:ensure_all_started(tlsport);
        ssl -> ok
    end,
    garbage_collect_all(),
    timer:sleep(200),
    Erl0 = erlang:memory(total),
    Rss0 = daemon_rss(Lib),
    {Clients, Cleanup} = connect_pairs(Lib, N, [], Ctx, idle),
    garbage_collect_all(),
    timer:sleep(500),
    Erl1 = erlang:memory(total),
    Rss1 = daemon_rss(Lib),
    Cleanup(),
    _ = Clients,
    Ends = 2 * N,
    #{erlang_kib => (Erl1 - Erl0) / Ends / 1024,
      daemon_kib => (Rss1 - Rss0) / Ends / 1024,
      total_kib => ((Erl1 - Erl0) + (Rss1 - Rss0)) / Ends / 1024,
      ends => Ends}.

garbage_collect_all() ->
    [erlang:garbage_collect(P) || P <- processes()],
    ok.

daemon_rss(ssl) -> 0;
daemon_rss(tlsport) ->
    Pid = tlsport_server:os_pid(),
    {ok, Status} = file:read_file("/proc/" ++ integer_to_list(Pid) ++ "/status"),
    [Line] = [L || L <- binary:split(Status, <<"\n">>, [global]), binary:match(L, <<"VmRSS">>) =/= nomatch],
    [_, Kb | _] = string:lexemes(binary_to_list(Line), " \t"),
    list_to_integer(Kb) * 1024.

%%% ---------------------------------------------------------------- report

report(Bulk, Echo, Hs, Idle) ->
    G = fun(L, Lib, K) -> maps:get(K, proplists:get_value(Lib, L), 0) end,
    Row = fun(Name, T, S, Ratio) ->
                  io:format("~-44s ~14s ~14s ~10s~n", [Name, fmt(T), fmt(S), Ratio])
          end,
    io:format("~-44s ~14s ~14s ~10s~n", ["", "tlsport", "OTP ssl", "ratio"]),
    R = fun(A, B) when A == 0; B == 0 -> "-";
           (A, B) -> io_lib:format("~.2fx", [A / B])
        end,
    T1 = G(Bulk, tlsport, mb_s), S1 = G(Bulk, ssl, mb_s),
    Row("bulk receive, MB/s", T1, S1, R(T1, S1)),
    T2 = G(Echo, tlsport, rtt_s), S2 = G(Echo, ssl, rtt_s),
    Row("echo 100 B {packet,2} x64, round trips/s", T2, S2, R(T2, S2)),
    T3 = G(Echo, tlsport, p50_us), S3 = G(Echo, ssl, p50_us),
    Row("echo p50 latency, us (lower is better)", T3, S3, R(S3, T3)),
    T4 = G(Echo, tlsport, p99_us), S4 = G(Echo, ssl, p99_us),
    Row("echo p99 latency, us (lower is better)", T4, S4, R(S4, T4)),
    T7 = G(Echo, tlsport, cpu_us_per_rt), S7 = G(Echo, ssl, cpu_us_per_rt),
    Row("echo CPU per round trip, us (node+daemon)", T7, S7, R(S7, T7)),
    io:format("~-44s ~14s~n", ["  of which tlsportd, us", fmt(G(Echo, tlsport, daemon_cpu_us_per_rt))]),
    T5 = G(Hs, tlsport, per_s), S5 = G(Hs, ssl, per_s),
    Row("full TLS 1.3 handshakes/s", T5, S5, R(T5, S5)),
    T6 = G(Idle, tlsport, total_kib), S6 = G(Idle, ssl, total_kib),
    Row("memory per idle connection end, KiB", T6, S6, R(S6, T6)),
    io:format("~-44s ~14s~n", ["  of which tlsport Erlang side, KiB", fmt(G(Idle, tlsport, erlang_kib))]),
    io:format("~-44s ~14s~n", ["  of which tlsportd RSS, KiB", fmt(G(Idle, tlsport, daemon_kib))]),
    io:format("~nratio: tlsport/ssl for rates, ssl/tlsport for latency and memory (>1 = tlsport better)~n"),
    io:format("bulk bytes: tlsport ~p, ssl ~p; idle ends: ~p~n",
              [G(Bulk, tlsport, bytes), G(Bulk, ssl, bytes), G(Idle, tlsport, ends)]).

fmt(0) -> "-";
fmt(X) when is_float(X) -> float_to_list(X, [{decimals, 1}]);
fmt(X) -> integer_to_list(X).

free_port() ->
    {ok, L} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}]),
    {ok, P} = inet:port(L),
    gen_tcp:close(L),
    P.
