%% Attach mode: nodes that share one running daemon (tlsportd --unix)
%% instead of spawning their own. Worker nodes are separate OS processes
%% (tlsport_attach_worker) that the tests SIGKILL; their successors, under
%% the same name, take back what they left within the grace period. The
%% peers are OTP's own ssl clients.
-module(tlsport_attach_tests).

-include_lib("eunit/include/eunit.hrl").
-include("tlsport.hrl").

-define(T(F), {??F, {timeout, 90, fun() -> tlsport_test_lib:flush(), F() end}}).
-define(WAIT, 20000).

attach_test_() ->
    {setup, fun setup/0, fun cleanup/1,
     fun(Daemon) ->
             {inorder,
              [?T(fun() -> survives_sigkill(Daemon) end),
               ?T(fun() -> listener_survives(Daemon) end),
               ?T(fun() -> unclaimed_close_after_grace(Daemon) end),
               ?T(fun() -> name_taken_is_retried(Daemon) end),
               ?T(fun() -> held_until_claimed(Daemon) end),
               ?T(fun() -> holding_is_bounded(Daemon) end),
               ?T(fun() -> bad_configuration(Daemon) end),
               ?T(fun() -> daemon_gone() end)]}
     end}.

setup() ->
    tlsport_test_lib:stop(),
    tlsport_test_lib:certs(),
    logger:set_primary_config(level, warning),
    {ok, _} = application:ensure_all_started(ssl),
    start_daemon(sock_path("shared")).

cleanup(Daemon) ->
    stop_app(),
    stop_daemon(Daemon).

cert(F) -> tlsport_test_lib:cert(F).

%%% ================================================================ tests

%% A reader with {active, once} is killed twice: once while a read is
%% armed (the line that comes meanwhile is held for the successor), once
%% between two reads. Three workers of one name handle the numbers 1..20
%% of one connection between them: each exactly once, in order.
survives_sigkill(#{path := Path}) ->
    W1 = worker(["stream", Path, "w-stream", "30000", certdir()]),
    try
        Port = list_to_integer(expect(W1, "listening ")),
        Peer = peer(Port),
        ok = ssl:send(Peer, lines(1, 5)),
        "" = expect(W1, "handled 5"),
        "" = expect(W1, "armed"),
        kill(W1),
        %% The daemon keeps the connection, its read still armed. Until it
        %% has seen W1's channel end it would give the next line to W1
        %% (lost with it, as anything a dead node had received): the peer
        %% goes on once a successor has attached, which shows it has.
        W2 = worker(["resume", Path, "w-stream", "30000", certdir(), "12"]),
        Kinds = expect(W2, "reclaimed "),
        ?assertEqual(["tlsport_listen", "tlsport_socket"], lists:sort(string:lexemes(Kinds, " "))),
        ok = ssl:send(Peer, lines(6, 10)),
        "" = expect(W2, "handled 10"),
        ok = ssl:send(Peer, lines(11, 15)),
        "" = expect(W2, "paused"),                % after 12, before the next read
        kill(W2),
        ok = ssl:send(Peer, lines(16, 20)),       % nothing is read for W2 any more
        W3 = worker(["resume", Path, "w-stream", "30000", certdir()]),
        "" = expect(W3, "handled 20"),
        Handled = handled(W1) ++ handled(W2) ++ handled(W3),
        ?assertEqual(lists:seq(1, 20), Handled),
        ?assertMatch([_ | _], handled(W2)),
        ?assertMatch([_ | _], handled(W3)),
        ssl:close(Peer),
        "" = expect(W3, "closed"),
        kill(W3)
    after
        kill_all()
    end.

%% A listener with an accept outstanding outlives its node; a peer that
%% connects while nobody owns it is accepted by the successor.
listener_survives(#{path := Path}) ->
    W1 = worker(["listener", Path, "w-listen", "30000", certdir()]),
    try
        Port = list_to_integer(expect(W1, "listening ")),
        kill(W1),
        Peer = peer(Port),                        % handshake done by the daemon meanwhile
        W2 = worker(["relisten", Path, "w-listen", "30000", certdir()]),
        ?assertEqual("tlsport_listen", expect(W2, "reclaimed ")),
        ?assertEqual(integer_to_list(Port), expect(W2, "port ")),
        ok = ssl:send(Peer, <<"hello\n">>),
        ?assertEqual({ok, <<"echo:hello\n">>}, ssl:recv(Peer, 0, ?WAIT)),
        "hello" = expect(W2, "echoed "),
        ssl:close(Peer),
        kill(W2)
    after
        kill_all()
    end.

%% Stopping the application only closes the channel: with a grace period
%% the daemon keeps the sockets, and closes them when it ends with no
%% successor. A successor after that gets nothing back.
unclaimed_close_after_grace(#{path := Path}) ->
    start_app(Path, <<"t-grace">>, #{grace_ms => 1500}),
    ?assertMatch(#{name := <<"t-grace">>, grace_ms := 1500, client := _}, tlsport:daemon_info()),
    ?assertEqual({ok, []}, tlsport:reclaimed()),
    {S, Peer} = tlsport_pair(),
    ok = tlsport:send(S, <<"before\n">>),
    ?assertEqual({ok, <<"before\n">>}, ssl:recv(Peer, 0, ?WAIT)),
    T0 = erlang:monotonic_time(millisecond),
    stop_app(),
    ?assertEqual({error, timeout}, ssl:recv(Peer, 0, 700)),      % still there
    ?assertEqual({error, closed}, ssl:recv(Peer, 0, ?WAIT)),     % closed in order
    ?assert(erlang:monotonic_time(millisecond) - T0 >= 1400),
    start_app(Path, <<"t-grace">>, #{}),
    ?assertEqual({ok, []}, tlsport:reclaimed()),
    stop_app().

%% A successor that says hello while its name is still taken (here by a
%% live client; after a crash, by a channel the daemon has not yet seen
%% end) gets eaddrinuse: the application tries again until the name is
%% free, within attach_timeout_ms.
name_taken_is_retried(#{path := Path}) ->
    Holder = hold_name(Path, "t-retry"),
    Self = self(),
    application:set_env(tlsport, attach_timeout_ms, 400),
    T0 = erlang:monotonic_time(millisecond),
    ?assertMatch({error, _}, start_app_result(Path, <<"t-retry">>, #{})),
    ?assert(erlang:monotonic_time(millisecond) - T0 >= 350),
    application:set_env(tlsport, attach_timeout_ms, 15000),
    Starter = spawn(fun() -> Self ! {started, start_app_result(Path, <<"t-retry">>, #{})} end),
    ?assertEqual(timeout, receive {started, R0} -> R0 after 800 -> timeout end),
    ?assert(is_process_alive(Starter)),
    ok = socket:close(Holder),
    ?assertEqual(ok, receive {started, R} -> R after ?WAIT -> timeout end),
    ?assertMatch(#{name := <<"t-retry">>}, tlsport:daemon_info()),
    stop_app(),
    application:unset_env(tlsport, attach_timeout_ms).

%% What arrives for a socket given back before anyone claims it is held,
%% in order, and reaches the claimer first; the socket stays active as
%% its old node left it. One that nobody claims is closed after
%% reclaim_timeout_ms.
held_until_claimed(#{path := Path}) ->
    start_app(Path, <<"t-held">>, #{grace_ms => 30000}),
    {S, Peer} = tlsport_pair(),
    ok = tlsport:setopts(S, [{active, true}]),
    stop_app(),
    tlsport_test_lib:flush(),                      % S's owner heard the stop
    %% Attached again (so the daemon has seen the old channel end: what it
    %% sent there before would be lost with it), not claimed yet.
    start_app(Path, <<"t-held">>, #{grace_ms => 30000}),
    ok = ssl:send(Peer, lines(1, 3)),
    timer:sleep(300),                              % the lines reach the node, unclaimed
    ?assertEqual(timeout, tlsport_test_lib:recv_msg(0)),
    {ok, [S2]} = tlsport:reclaimed(),
    ?assertMatch(#tlsport_socket{}, S2),
    ?assertEqual({ok, []}, tlsport:reclaimed()),
    ?assertEqual([<<"1\n">>, <<"2\n">>, <<"3\n">>],
                 [receive {tlsport, S2, D} -> D after ?WAIT -> timeout end || _ <- lists:seq(1, 3)]),
    ok = ssl:send(Peer, <<"4\n">>),
    ?assertEqual(<<"4\n">>, receive {tlsport, S2, D4} -> D4 after ?WAIT -> timeout end),
    ?assertEqual({ok, []}, tlsport:getopts(S2, [active])),       % not known
    ?assertEqual({ok, [{packet, line}]}, tlsport:getopts(S2, [packet])),
    ok = tlsport:send(S2, <<"back\n">>),
    ?assertEqual({ok, <<"back\n">>}, ssl:recv(Peer, 0, ?WAIT)),
    %% recv makes it passive.
    ?assertEqual({error, timeout}, tlsport:recv(S2, 0, 100)),
    ?assertEqual({ok, [{active, false}]}, tlsport:getopts(S2, [active])),
    ok = ssl:send(Peer, <<"5\n">>),
    ?assertEqual({ok, <<"5\n">>}, tlsport:recv(S2, 0, ?WAIT)),
    %% Given back again, and not claimed: closed after reclaim_timeout_ms.
    stop_app(),
    tlsport_test_lib:flush(),
    application:set_env(tlsport, reclaim_timeout_ms, 500),
    start_app(Path, <<"t-held">>, #{grace_ms => 30000}),
    ?assertEqual({error, closed}, ssl:recv(Peer, 0, ?WAIT)),
    ?assertEqual({ok, []}, tlsport:reclaimed()),
    application:unset_env(tlsport, reclaim_timeout_ms),
    stop_app().

%% An active socket given back while its peer sends a lot: past 1 MiB
%% held for nobody, the node makes it passive, and the daemon stops
%% reading the peer (whose sends then wait). The claimer finds it passive
%% and reads everything, in order.
holding_is_bounded(#{path := Path}) ->
    start_app(Path, <<"t-bound">>, #{grace_ms => 30000}),
    {S, Peer} = tlsport_pair(),
    ok = tlsport:setopts(S, [{active, true}]),
    stop_app(),
    tlsport_test_lib:flush(),
    start_app(Path, <<"t-bound">>, #{grace_ms => 30000}),
    In0 = bytes_in(),
    Lines = 2000,
    Pad = binary:copy(<<"x">>, 10000),               % 20 MB in all
    Self = self(),
    Sender = spawn(fun() ->
                           [ok = ssl:send(Peer, [integer_to_list(N), $\s, Pad, $\n])
                            || N <- lists:seq(1, Lines)],
                           Self ! sent
                   end),
    timer:sleep(1500),
    %% The daemon read a few MB at most (the node's 1 MiB, the daemon's own
    %% buffer for the node, what was on its way), not everything it could.
    ?assert(bytes_in() - In0 < 8 * 1024 * 1024),
    ?assertEqual(timeout, receive sent -> sent after 0 -> timeout end),   % held back
    {ok, [S2]} = tlsport:reclaimed(),
    ?assertEqual({ok, [{active, false}]}, tlsport:getopts(S2, [active])),
    Got = [begin
               {ok, Line} = tlsport:recv(S2, 0, ?WAIT),
               [Number, _] = binary:split(Line, <<" ">>),
               binary_to_integer(Number)
           end || _ <- lists:seq(1, Lines)],
    ?assertEqual(lists:seq(1, Lines), Got),
    ?assertEqual(sent, receive sent -> sent after ?WAIT -> timeout end),
    _ = Sender,
    ssl:close(Peer),
    stop_app().

bytes_in() ->
    {ok, #{bytes := #{in := In}}} = tlsport_server:request(#{op => stats}, ?WAIT),
    In.

%% Settings that cannot work are refused before anything is sent.
bad_configuration(#{path := Path}) ->
    Refused = fun(Name, Extra) ->
                      {error, {tlsport, {{shutdown, {failed_to_start_child, tlsport_server, Why}}, _}}} =
                          start_app_result(Path, Name, Extra),
                      Why
              end,
    ?assertEqual({bad_config, {grace_ms, needs_a_name}}, Refused(undefined, #{grace_ms => 1000})),
    ?assertEqual({bad_config, {grace_ms, -1}}, Refused(<<"t-bad">>, #{grace_ms => -1})),
    ?assertEqual({bad_config, {name, <<>>}}, Refused(<<>>, #{})),
    stop_app().

%% The daemon goes away: waiters get {error, closed}, owners hear; the
%% supervisor's restart attaches again once a daemon serves the path.
daemon_gone() ->
    Path = sock_path("gone"),
    D1 = start_daemon(Path),
    try
        start_app(Path, <<"t-gone">>, #{}),
        {ok, L} = tlsport:listen(0, [{certfile, cert("server.pem")}, {keyfile, cert("server.key")}]),
        {S, _Peer} = tlsport_pair(),
        Self = self(),
        spawn(fun() -> Self ! {accepted, tlsport:accept(L)} end),
        timer:sleep(200),
        stop_daemon(D1),
        ?assertEqual({error, closed}, receive {accepted, R} -> R after ?WAIT -> timeout end),
        ?assertEqual({error, closed}, tlsport:recv(S, 0, ?WAIT)),    % passive: told when it reads
        D2 = start_daemon(Path),
        try
            tlsport_test_lib:wait_until(
              fun() -> case catch tlsport:daemon_info() of
                           #{name := <<"t-gone">>} -> true;
                           _ -> false
                       end
              end, ?WAIT),
            {ok, L2} = tlsport:listen(0, [{certfile, cert("server.pem")}, {keyfile, cert("server.key")}]),
            tlsport:close(L2)
        after
            stop_app(),
            stop_daemon(D2)
        end
    after
        stop_app()
    end.

%%% ================================================================ the daemon

%% A Unix socket path must fit in 107 bytes: a long TMPDIR is not used.
sock_path(Tag) ->
    Name = "tlsport-attach-" ++ os:getpid() ++ "-" ++ Tag ++ ".sock",
    Dir = case os:getenv("TMPDIR") of
              T when is_list(T), T =/= "", length(T) + length(Name) < 100 -> T;
              _ -> "/tmp"
          end,
    filename:join(Dir, Name).

%% tlsportd --unix PATH, kept by a process of its own; --stdio as well, so
%% that the daemon ends with that process (the test node) whatever
%% happens. Ready once it has answered hello on stdio.
start_daemon(Path) ->
    {ok, Exe} = tlsport_server:find_daemon(),
    _ = file:delete(Path),
    Self = self(),
    Pid = spawn(fun() ->
                        Port = open_port({spawn_executable, Exe},
                                         [{args, ["--unix", Path, "--stdio"]}, {packet, 4},
                                          binary, exit_status, {cd, tlsport_test_lib:certs()}]),
                        true = port_command(Port, [0, term_to_binary(#{op => hello, ref => 1})]),
                        receive
                            {Port, {data, <<0, _/binary>>}} -> Self ! {daemon_ready, self()}
                        after ?WAIT -> exit(daemon_not_ready)
                        end,
                        receive
                            stop -> port_close(Port)
                        end
                end),
    receive {daemon_ready, Pid} -> #{pid => Pid, path => Path}
    after ?WAIT -> error(daemon_not_ready)
    end.

stop_daemon(#{pid := Pid, path := Path}) ->
    Mon = erlang:monitor(process, Pid),
    Pid ! stop,
    receive {'DOWN', Mon, process, Pid, _} -> ok after 5000 -> ok end,
    %% The daemon exits once it has seen its stdin close.
    tlsport_test_lib:wait_until(fun() -> socket_gone(Path) end, 5000).

socket_gone(Path) ->
    {ok, S} = socket:open(local, stream, default),
    try socket:connect(S, #{family => local, path => Path}) of
        ok -> false;
        {error, _} -> true
    after
        socket:close(S)
    end.

%% A raw client that takes a name (JSON lines) and keeps it.
hold_name(Path, Name) ->
    {ok, S} = socket:open(local, stream, default),
    ok = socket:connect(S, #{family => local, path => Path}),
    ok = socket:send(S, ["{\"op\":\"hello\",\"ref\":1,\"name\":\"", Name, "\"}\n"]),
    {ok, Reply} = socket:recv(S, 0, ?WAIT),
    ?assertNotEqual(nomatch, string:find(Reply, "\"ok\":true")),
    S.

%%% ================================================================ the app

start_app(Path, Name, Extra) ->
    ?assertEqual(ok, start_app_result(Path, Name, Extra)).

start_app_result(Path, Name, Extra) ->
    stop_app(),
    application:load(tlsport),
    application:set_env(tlsport, attach, Path),
    case Name of
        undefined -> application:unset_env(tlsport, name);
        _ -> application:set_env(tlsport, name, Name)
    end,
    case Extra of
        #{grace_ms := G} -> application:set_env(tlsport, grace_ms, G);
        _ -> application:unset_env(tlsport, grace_ms)
    end,
    tlsport:start().

stop_app() ->
    _ = application:stop(tlsport),
    [application:unset_env(tlsport, K) || K <- [attach, name, grace_ms]],
    ok.

%% A tlsport socket accepted from an OTP ssl peer (line mode, passive).
tlsport_pair() ->
    {ok, L} = tlsport:listen(0, [{certfile, cert("server.pem")}, {keyfile, cert("server.key")},
                                 {ip, {127, 0, 0, 1}}, {packet, line}, {active, false}]),
    Self = self(),
    spawn(fun() ->
                  P = peer(L#tlsport_listen.port),
                  ok = ssl:controlling_process(P, Self),
                  Self ! {peer, P}
          end),
    {ok, S} = tlsport:accept(L, ?WAIT),
    Peer = receive {peer, P} -> P after ?WAIT -> error(no_peer) end,
    tlsport:close(L),
    {S, Peer}.

%%% ================================================================ peers

peer(Port) ->
    {ok, P} = ssl:connect("localhost", Port,
                          [binary, {active, false}, {verify, verify_peer},
                           {cacertfile, cert("ca.pem")}, {server_name_indication, "localhost"}],
                          ?WAIT),
    P.

lines(From, To) ->
    [[integer_to_list(N), "\n"] || N <- lists:seq(From, To)].

certdir() -> tlsport_test_lib:certs().

%%% ================================================================ workers

%% A worker node as an OS process; its "@@ " lines are read by expect/2.
worker(Args) ->
    Erl = filename:join([code:root_dir(), "bin", "erl"]),
    Ebin = filename:dirname(code:which(tlsport)),
    TestDir = filename:dirname(code:which(tlsport_attach_worker)),
    Port = open_port({spawn_executable, Erl},
                     [{args, ["-noshell", "-pa", Ebin, "-pa", TestDir,
                              "-run", "tlsport_attach_worker", "main" | Args]},
                      binary, {line, 4096}, exit_status, use_stdio, stderr_to_stdout]),
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    put(workers, [{Port, OsPid} | get_list(workers)]),
    Port.

%% Reads the worker's lines until one that starts with "@@ " ++ Prefix:
%% the rest of that line. Every "handled N" is remembered.
expect(W, Prefix) ->
    Deadline = erlang:monotonic_time(millisecond) + ?WAIT,
    expect(W, Prefix, Deadline).

expect(W, Prefix, Deadline) ->
    Left = max(0, Deadline - erlang:monotonic_time(millisecond)),
    receive
        {W, {data, {_, Line}}} ->
            case record(W, Line) of
                {said, Text} ->
                    case lists:prefix(Prefix, Text) of
                        true -> lists:nthtail(length(Prefix), Text);
                        false -> expect(W, Prefix, Deadline)
                    end;
                other ->
                    expect(W, Prefix, Deadline)
            end;
        {W, {exit_status, Status}} ->
            error({worker_exited, Status, Prefix, get_list({log, W})})
    after Left ->
        error({worker_silent, Prefix, get_list({log, W})})
    end.

record(W, <<"@@ ", Line/binary>>) ->
    Text = binary_to_list(Line),
    put({log, W}, get_list({log, W}) ++ [Text]),
    case Text of
        "handled " ++ N -> put({handled, W}, get_list({handled, W}) ++ [list_to_integer(N)]);
        _ -> ok
    end,
    {said, Text};
record(W, Other) ->
    put({log, W}, get_list({log, W}) ++ [binary_to_list(Other)]),
    other.

handled(W) -> get_list({handled, W}).

get_list(Key) ->
    case get(Key) of
        undefined -> [];
        L -> L
    end.

%% SIGKILL, and wait until the node is gone.
kill(W) ->
    case lists:keyfind(W, 1, get_list(workers)) of
        {W, OsPid} ->
            _ = os:cmd("kill -KILL " ++ integer_to_list(OsPid)),
            wait_exit(W, OsPid),
            put(workers, lists:keydelete(W, 1, get_list(workers)));
        false ->
            ok
    end.

%% Every line the worker wrote comes before its exit status.
wait_exit(W, OsPid) ->
    receive
        {W, {data, {_, Line}}} -> _ = record(W, Line), wait_exit(W, OsPid);
        {W, {exit_status, _}} -> ok
    after ?WAIT -> error({worker_not_killed, OsPid})
    end.

kill_all() ->
    [kill(W) || {W, _} <- get_list(workers)],
    ok.
