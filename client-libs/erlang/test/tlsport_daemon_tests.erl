%% The daemon's life: finding the binary, the daemon dying under load
%% (every caller gets an error, not a hang; a new daemon takes over),
%% stopping while the daemon has stopped reading.
-module(tlsport_daemon_tests).

-include_lib("eunit/include/eunit.hrl").
-include("tlsport.hrl").

%% A logger handler (this module) that passes tlsport's warnings to a test.
-export([log/2]).

-define(T(F), {??F, {timeout, 30, fun() -> tlsport_test_lib:flush(), F() end}}).

daemon_test_() ->
    {setup, fun tlsport_test_lib:start/0, fun(_) -> tlsport_test_lib:start() end,
     {inorder,
      [?T(find_daemon_order),
       ?T(daemon_args),
       ?T(daemon_death_fails_everyone),
       ?T(control_channel_lost),
       ?T(stop_with_busy_socket),
       ?T(stop_with_paused_daemon)]}}.

cert(F) -> tlsport_test_lib:cert(F).

find_daemon_order() ->
    {ok, Current} = tlsport_server:find_daemon(),
    Env = os:getenv("TLSPORTD"),
    Path = os:getenv("PATH"),
    Old = application:get_env(tlsport, tlsportd),
    Dir = filename:join(tlsport_test_lib:certs(), "find_daemon"),
    Bin = filename:join(Dir, "bin"),
    ok = filelib:ensure_dir(filename:join(Bin, "x")),
    Installed = filename:join(Bin, "tlsportd"),
    ok = file:write_file(Installed, "#!/bin/sh\n"),
    ok = file:change_mode(Installed, 8#755),
    try
        %% The application environment first...
        application:set_env(tlsport, tlsportd, "/bin/true"),
        os:putenv("TLSPORTD", Current),
        ?assertEqual({ok, "/bin/true"}, tlsport_server:find_daemon()),
        %% ...a path given but missing is an error, not skipped...
        application:set_env(tlsport, tlsportd, "/no/such/tlsportd"),
        ?assertEqual({error, {tlsportd_not_found, ["/no/such/tlsportd"]}},
                     tlsport_server:find_daemon()),
        %% ...then $TLSPORTD...
        application:unset_env(tlsport, tlsportd),
        ?assertEqual({ok, Current}, tlsport_server:find_daemon()),
        os:putenv("TLSPORTD", "/no/such/either"),
        ?assertEqual({error, {tlsportd_not_found, ["/no/such/either"]}},
                     tlsport_server:find_daemon()),
        %% ...then tlsportd on PATH (an installed daemon)...
        os:unsetenv("TLSPORTD"),
        os:putenv("PATH", filename:join(Dir, "empty") ++ ":" ++ Bin),
        ?assertEqual({ok, Installed}, tlsport_server:find_daemon()),
        %% ...then the build tree; nothing found names every place tried.
        os:putenv("PATH", filename:join(Dir, "empty")),
        case tlsport_server:find_daemon() of
            {ok, Found} ->
                ?assertEqual("tlsportd", filename:basename(Found)),
                ?assertEqual("daemon", filename:basename(filename:dirname(Found)));
            {error, {tlsportd_not_found, Tried}} ->
                ?assert(lists:member("tlsportd on PATH", Tried))
        end
    after
        case Env of false -> os:unsetenv("TLSPORTD"); _ -> os:putenv("TLSPORTD", Env) end,
        case Path of false -> os:unsetenv("PATH"); _ -> os:putenv("PATH", Path) end,
        case Old of
            {ok, V} -> application:set_env(tlsport, tlsportd, V);
            undefined -> application:unset_env(tlsport, tlsportd)
        end
    end.

daemon_args() ->
    tlsport_test_lib:stop(),
    application:set_env(tlsport, tlsportd_args, ["--log-level", "error"]),
    try
        tlsport_test_lib:start(),
        ?assertMatch(#{protocol := 1}, tlsport:daemon_info())
    after
        application:set_env(tlsport, tlsportd_args, []),
        tlsport_test_lib:restart()
    end.

%% kill -9 the daemon while a seed socket, a passive recv, a seed accept
%% and a modern accept are all in progress: each gets an error at once.
%% The supervisor starts a new daemon, which works.
daemon_death_fails_everyone() ->
    Self = self(),
    OldPid = tlsport_server:os_pid(),
    %% A seed socket pair (owner: this process).
    {_, Port} = L = ssl_socket:listen('STREAM', 'AF_INET', 0, raw),
    spawn(fun() -> S = ssl_socket:accept(L, "-cert ssl_server.pem"),
                   ssl_socket:controlling_process(S, Self), Self ! {seed_server, S} end),
    C = client_retry(Port, 40),
    receive {seed_server, _} -> ok after 5000 -> error(no_seed_accept) end,
    %% A modern pair with a recv waiting.
    {ok, ML} = tlsport:listen(0, [{certfile, cert("server.pem")}, {keyfile, cert("server.key")}]),
    spawn(fun() -> {ok, MS} = tlsport:accept(ML), tlsport:controlling_process(MS, Self),
                   Self ! {modern_server, MS} end),
    {ok, MC} = tlsport:connect("localhost", ML#tlsport_listen.port,
                               [{active, false}, {cacertfile, cert("ca.pem")}], 5000),
    receive {modern_server, _} -> ok after 5000 -> error(no_modern_accept) end,
    spawn(fun() -> Self ! {recv, tlsport:recv(MC, 0)} end),
    %% Accepts waiting.
    spawn(fun() -> Self ! {seed_accept, catch ssl_socket:accept(L, "-cert ssl_server.pem")} end),
    spawn(fun() -> Self ! {modern_accept, tlsport:accept(ML)} end),
    timer:sleep(300),
    os:cmd("kill -9 " ++ integer_to_list(OldPid)),
    Got = lists:sort([receive
                          {C, {socket_closed, R}} -> {seed_socket, R};
                          {recv, R} -> {recv, R};
                          {seed_accept, R} -> {seed_accept, R};
                          {modern_accept, R} -> {modern_accept, R}
                      after 5000 -> timeout
                      end || _ <- lists:seq(1, 4)]),
    ?assertMatch([{modern_accept, {error, closed}},
                  {recv, {error, closed}},
                  {seed_accept, {'EXIT', {accept, closed}}},
                  {seed_socket, {error, {tlsportd_exit, _}}}], Got),
    ?assertEqual({error, closed}, tlsport:send(MC, <<"x">>)),
    %% A new daemon serves new sockets.
    tlsport_test_lib:wait_until(
      fun() -> is_pid(whereis(tlsport_server)) andalso
                   tlsport_server:os_pid() =/= OldPid end, 5000),
    {ok, L2} = tlsport:listen(0, [{certfile, cert("server.pem")}, {keyfile, cert("server.key")}]),
    spawn(fun() -> {ok, S2} = tlsport:accept(L2), tlsport:send(S2, <<"new daemon">>),
                   timer:sleep(500) end),
    {ok, C2} = tlsport:connect("localhost", L2#tlsport_listen.port,
                               [{cacertfile, cert("ca.pem")}], 5000),
    ?assertEqual(<<"new daemon">>, receive {tlsport, C2, D} -> D after 5000 -> timeout end),
    tlsport:close(C2),
    tlsport:close(L2).

%% A frame over the daemon's --max-message breaks the framing: the daemon
%% drops the channel and exits. tlsport treats it as the daemon's death:
%% the owners hear, a new daemon takes over.
control_channel_lost() ->
    Self = self(),
    {ok, L} = tlsport:listen(0, [{certfile, cert("server.pem")}, {keyfile, cert("server.key")}]),
    spawn(fun() -> {ok, S} = tlsport:accept(L), tlsport:controlling_process(S, Self),
                   Self ! {server, S} end),
    {ok, C} = tlsport:connect("localhost", L#tlsport_listen.port, [{cacertfile, cert("ca.pem")}], 5000),
    receive {server, _} -> ok after 5000 -> error(no_accept) end,
    OldPid = tlsport_server:os_pid(),
    Port = tlsport_server:port(),
    Huge = binary:copy(<<0>>, 65 * 1024 * 1024 + 70000),
    spawn(fun() -> catch erlang:port_command(Port, Huge) end),
    %% control_channel_lost, or epipe when the write loses the race.
    ?assertEqual(ok, receive
                         {tlsport_error, C, {tlsportd_exit, _}} -> ok
                     after 10000 -> timeout
                     end),
    tlsport_test_lib:wait_until(
      fun() -> is_pid(whereis(tlsport_server)) andalso tlsport_server:os_pid() =/= OldPid end, 5000),
    tlsport_test_lib:wait_until(
      fun() -> not filelib:is_dir("/proc/" ++ integer_to_list(OldPid)) end, 5000),
    {ok, L2} = tlsport:listen(0, [{certfile, cert("server.pem")}, {keyfile, cert("server.key")}]),
    tlsport:close(L2).

client_retry(Port, N) ->
    try ssl_socket:client('STREAM', 'AF_INET', {localhost, Port}, raw, "")
    catch exit:{client, _} when N > 0 -> timer:sleep(50), client_retry(Port, N - 1)
    end.

%% A socket busy in the daemon (a sender blocked on a peer that does not
%% read) does not stop the daemon from reading the node's commands, so it
%% sees the end of its input and exits by itself: no signal is needed.
stop_with_busy_socket() ->
    {S, C} = pair([{active, false}]),
    OsPid = tlsport_server:os_pid(),
    Chunk = binary:copy(<<"p">>, 64 * 1024),
    Sender = spawn(fun() -> [tlsport:send(S, Chunk) || _ <- lists:seq(1, 256)] end),
    wait_blocked(Sender, 10000),
    {Ms, Forced} = timed_stop(),
    ?assertEqual([], Forced),
    ?assert(Ms < 3000),
    ?assertNot(filelib:is_dir("/proc/" ++ integer_to_list(OsPid))),
    _ = C,
    tlsport_test_lib:start().

%% A client that ignores busy and keeps delivering past 4x the mark gets
%% its whole control channel paused (protocol section 5). Here the test
%% plays that client, writing DATA frames to the port itself. tlsport
%% must still stop and take the daemon with it. (The daemon would notice
%% its input closing, but the runtime does not close the pipe while the
%% port holds output the daemon is not reading: this is where the
%% library's SIGTERM is needed.)
stop_with_paused_daemon() ->
    {S, _C} = pair([{active, false}]),
    OsPid = tlsport_server:os_pid(),
    Port = tlsport_server:port(),
    Id = S#tlsport_socket.id,
    Chunk = binary:copy(<<"p">>, 64 * 1024),
    Rogue = spawn(fun() ->
                          catch [erlang:port_command(Port, [<<1, Id:32>>, Chunk])
                                 || _ <- lists:seq(1, 512)]
                  end),
    wait_blocked(Rogue, 10000),
    {Ms, _Forced} = timed_stop(),
    ?assert(Ms < 8000),
    ?assertNot(filelib:is_dir("/proc/" ++ integer_to_list(OsPid))),
    tlsport_test_lib:start().

pair(COpts) ->
    {ok, L} = tlsport:listen(0, [{certfile, cert("server.pem")}, {keyfile, cert("server.key")}]),
    Self = self(),
    spawn(fun() -> {ok, S} = tlsport:accept(L), tlsport:controlling_process(S, Self),
                   Self ! {server, S} end),
    {ok, C} = tlsport:connect("localhost", L#tlsport_listen.port,
                              [{cacertfile, cert("ca.pem")} | COpts], 5000),
    S = receive {server, S0} -> S0 after 5000 -> error(no_accept) end,
    tlsport:close(L),
    {S, C}.

%% Until Pid has made no progress for half a second (it is blocked).
wait_blocked(Pid, Left) when Left > 0 ->
    R0 = process_info(Pid, reductions),
    timer:sleep(500),
    case process_info(Pid, reductions) of
        R0 -> ok;
        undefined -> error({finished, Pid});
        _ -> wait_blocked(Pid, Left - 500)
    end.

%% Stops tlsport: how long it took, and the warnings of a forced stop.
timed_stop() ->
    ok = logger:add_handler(?MODULE, ?MODULE, #{level => warning, config => #{pid => self()}}),
    try
        T0 = erlang:monotonic_time(millisecond),
        tlsport_test_lib:stop(),
        Ms = erlang:monotonic_time(millisecond) - T0,
        {Ms, forced_stops()}
    after
        logger:remove_handler(?MODULE)
    end.

forced_stops() ->
    receive
        {forced_stop, Text} -> [Text | forced_stops()]
    after 0 -> []
    end.

log(#{msg := Msg}, #{config := #{pid := Pid}}) ->
    Text = case Msg of
               {report, R} -> io_lib:format("~p", [R]);
               {string, Str} -> Str;
               {Format, Args} -> io_lib:format(Format, Args)
           end,
    Flat = lists:flatten(io_lib:format("~ts", [Text])),
    case string:find(Flat, "did not exit") of
        nomatch -> ok;
        _ -> Pid ! {forced_stop, Flat}
    end.
