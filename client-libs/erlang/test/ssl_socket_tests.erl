%% Seed 004's ssl_socket interface against a real tlsportd: the manual's
%% own examples (test/mymod.erl), every mode, verify levels, errors,
%% controlling_process, owner death, stop/0.
-module(ssl_socket_tests).

-include_lib("eunit/include/eunit.hrl").

-define(T(F), {timeout, 20, fun F/0}).

seed_test_() ->
    {setup, fun tlsport_test_lib:start/0, fun(_) -> ok end,
     [?T(example_top_loop_connection),
      ?T(example_first_loop),
      ?T(example_loop_stop_keeps_listener),
      ?T(example_my_accept_run),
      ?T(example_three_clients),
      ?T(modes_packet),
      ?T(modes_raw),
      ?T(modes_asn1),
      ?T(modes_binary_sender_list_receiver),
      ?T(packet1_limits),
      ?T(listen_port_in_use),
      ?T(listen_bad_arguments),
      ?T(client_refused),
      ?T(client_address_forms),
      ?T(verify_client_levels),
      ?T(verify_server_level2_needs_client_cert),
      ?T(verify_server_level1_accepts_unknown_issuer),
      ?T(bad_flags),
      ?T(accept_flags_change),
      ?T(connect_before_first_accept),
      ?T(deliver_held_while_busy),
      ?T(controlling_process_stream),
      ?T(controlling_process_not_owner),
      ?T(owner_death_closes),
      ?T(close_message_and_close),
      ?T(close_listener_fails_accept),
      ?T(peername_and_resolve),
      ?T(large_packet),
      ?T(stop_closes_everything)]}.

%%% ---------------------------------------------------------------- helpers

client_retry(Addr, Mode, Flags) -> client_retry(Addr, Mode, Flags, 40).
client_retry(Addr, Mode, Flags, N) ->
    %% Only a listener that another process has not opened yet (mymod's
    %% top/1 runs in its own process) is a reason to try again: a
    %% connection made before the first accept waits for it.
    try ssl_socket:client('STREAM', 'AF_INET', Addr, Mode, Flags)
    catch exit:{client, econnrefused} when N > 0 ->
            timer:sleep(50),
            client_retry(Addr, Mode, Flags, N - 1)
    end.

%% A connected pair: {ServerSocket, ClientSocket}, both owned by the caller.
pair(Mode, SFlags, CFlags) -> pair(Mode, Mode, SFlags, CFlags).
pair(SMode, CMode, SFlags, CFlags) ->
    {_, Port} = L = ssl_socket:listen('STREAM', 'AF_INET', 0, SMode),
    Self = self(),
    A = spawn(fun() ->
                      S = ssl_socket:accept(L, SFlags),
                      ok = ssl_socket:controlling_process(S, Self),
                      Self ! {accepted, self(), S}
              end),
    C = client_retry({localhost, Port}, CMode, CFlags),
    S = receive {accepted, A, S0} -> S0 after 5000 -> error(no_accept) end,
    ssl_socket:close(L),
    {S, C}.

fromsocket(S) ->
    receive {S, {fromsocket, B}} -> B
    after 5000 -> error({timeout, fromsocket, S, process_info(self(), messages)})
    end.

closed(S) ->
    receive {S, {socket_closed, R}} -> R
    after 5000 -> error({timeout, socket_closed})
    end.

%% N bytes in raw mode, however they are split.
raw_bytes(_S, 0, Acc) -> Acc;
raw_bytes(S, N, Acc) ->
    B = fromsocket(S),
    raw_bytes(S, N - length(B), Acc ++ B).

no_message(S, Ms) ->
    receive {S, _} = M -> error({unexpected, M}) after Ms -> ok end.

%%% ---------------------------------------------------------------- the manual's examples

example_top_loop_connection() ->
    Port = tlsport_test_lib:free_port(),
    Top = spawn(mymod, top, [Port]),
    C1 = client_retry({localhost, Port}, {packet, 2}, ""),
    ?assertEqual("Hello there", fromsocket(C1)),
    C1 ! {self(), {deliver, "ping"}},
    ?assertEqual("ping", fromsocket(C1)),
    %% loop/1 spawned the next acceptor: a second client is served too.
    C2 = client_retry({'127.0.0.1', Port}, {packet, 2}, ""),
    ?assertEqual("Hello there", fromsocket(C2)),
    C2 ! {self(), {deliver, <<"binary in">>}},
    ?assertEqual("binary in", fromsocket(C2)),
    Top ! stop,
    ssl_socket:close(C1),
    ssl_socket:close(C2).

example_first_loop() ->
    Port = tlsport_test_lib:free_port(),
    Top = spawn(mymod_first, top, [Port]),
    C = client_retry({localhost, Port}, {packet, 2}, ""),
    ?assertEqual("Hello there", fromsocket(C)),
    C ! {self(), {deliver, "abc"}},
    ?assertEqual("cba", fromsocket(C)),
    %% connection/2 ends, its socket closes with it.
    ?assertEqual(normal, closed(C)),
    exit(Top, kill).

example_loop_stop_keeps_listener() ->
    Listen = ssl_socket:listen('STREAM', 'AF_INET', 0, {packet, 2}),
    {_, Port} = Listen,
    Loop1 = spawn(mymod, loop, [Listen]),
    C1 = client_retry({localhost, Port}, {packet, 2}, ""),
    ?assertEqual("Hello there", fromsocket(C1)),
    %% loop/1 has an acceptor waiting again; stop kills it (exit(Pid, abort)).
    timer:sleep(100),
    Mon = erlang:monitor(process, Loop1),
    Loop1 ! stop,
    receive {'DOWN', Mon, process, Loop1, normal} -> ok after 5000 -> error(no_stop) end,
    %% "there is no error in the Listen socket... it can be used again in
    %% a new call to loop/1": the aborted accept was cancelled, so the next
    %% connection goes to the new acceptor, not to the dead one.
    timer:sleep(100),
    Loop2 = spawn(mymod, loop, [Listen]),
    C2 = client_retry({localhost, Port}, {packet, 2}, ""),
    ?assertEqual("Hello there", fromsocket(C2)),
    C2 ! {self(), {deliver, "again"}},
    ?assertEqual("again", fromsocket(C2)),
    Loop2 ! stop,
    ssl_socket:close(C1),
    ssl_socket:close(C2),
    ssl_socket:close(Listen).

example_my_accept_run() ->
    register(mymod_collector, self()),
    try
        Listen = ssl_socket:listen('STREAM', 'AF_INET', 0, {packet, 2}),
        {_, Port} = Listen,
        User = spawn(mymod, run, [[]]),
        Acceptor = spawn(mymod, my_accept, [Listen, User]),
        Clients = [client_retry({localhost, Port}, {packet, 2}, "") || _ <- lists:seq(1, 3)],
        %% Each client speaks at once: its first bytes may reach the socket
        %% before my_accept hands it to User; none may be lost.
        [C ! {self(), {deliver, "hello from " ++ integer_to_list(I)}}
         || {I, C} <- lists:zip(lists:seq(1, 3), Clients)],
        Inputs = [receive {input, B} -> B after 5000 -> error(no_input) end || _ <- Clients],
        ?assertEqual(["hello from 1", "hello from 2", "hello from 3"], lists:sort(Inputs)),
        User ! {sockets, self()},
        Sockets = receive {sockets, Ss} -> Ss after 5000 -> error(no_sockets) end,
        ?assertEqual(3, length(Sockets)),
        hd(Clients) ! {self(), {deliver, "second"}},
        ?assertEqual("second", receive {input, B2} -> B2 after 5000 -> timeout end),
        [ssl_socket:close(C) || C <- Clients],
        tlsport_test_lib:wait_until(
          fun() -> User ! {sockets, self()},
                   receive {sockets, []} -> true; {sockets, _} -> false after 1000 -> false end
          end, 5000),
        exit(Acceptor, kill),
        exit(User, kill),
        ssl_socket:close(Listen)
    after
        unregister(mymod_collector)
    end.

example_three_clients() ->
    Self = self(),
    Serve = fun(Mode, Flags) ->
                    {_, Port} = L = ssl_socket:listen('STREAM', 'AF_INET', 0, Mode),
                    spawn(fun() ->
                                  S = ssl_socket:accept(L, Flags),
                                  ok = ssl_socket:controlling_process(S, Self),
                                  Self ! {accepted, Mode, S},
                                  ssl_socket:close(L)
                          end),
                    Port
            end,
    %% The servers check the client certificates of the first two calls.
    P1 = Serve(raw, "-cert ssl_server.pem -verify 2"),
    P2 = Serve(asn1, "-cert ssl_server.pem -verify 2"),
    P3 = Serve({binary_packet, 4}, "-cert ssl_server.pem"),
    timer:sleep(200),
    {Socket1, Socket2, Socket3} = mymod:clients(P1, P2, P3),
    S1 = receive {accepted, raw, A1} -> A1 after 5000 -> error(no_accept1) end,
    S2 = receive {accepted, asn1, A2} -> A2 after 5000 -> error(no_accept2) end,
    S3 = receive {accepted, {binary_packet, 4}, A3} -> A3 after 5000 -> error(no_accept3) end,
    Socket1 ! {self(), {deliver, "raw bytes"}},
    ?assertEqual("raw bytes", raw_bytes(S1, 9, [])),
    Tlv = [16#30, 3, 2, 1, 5],
    Socket2 ! {self(), {deliver, Tlv}},
    ?assertEqual(Tlv, fromsocket(S2)),
    Socket3 ! {self(), {deliver, "four"}},
    ?assertEqual(<<"four">>, fromsocket(S3)),
    S3 ! {self(), {deliver, <<"back">>}},
    ?assertEqual(<<"back">>, fromsocket(Socket3)),
    [ssl_socket:close(X) || X <- [Socket1, Socket2, Socket3, S1, S2, S3]],
    ok.

%%% ---------------------------------------------------------------- modes

modes_packet() ->
    Cases = [{{packet, 1}, list}, {{packet, 2}, list}, {{packet, 4}, list},
             {onebyte, list}, {twobytes, list}, {fourbytes, list},
             {{binary_packet, 1}, binary}, {{binary_packet, 2}, binary},
             {{binary_packet, 4}, binary}],
    lists:foreach(
      fun({Mode, Type}) ->
              {S, C} = pair(Mode, "-cert ssl_server.pem", ""),
              Msgs = ["a", "", "bc", lists:duplicate(200, $x), <<"bin">>],
              [C ! {self(), {deliver, M}} || M <- Msgs],
              Got = [fromsocket(S) || _ <- Msgs],
              Want = [case Type of
                          list -> binary_to_list(iolist_to_binary(M));
                          binary -> iolist_to_binary(M)
                      end || M <- Msgs],
              ?assertEqual({Mode, Want}, {Mode, Got}),
              S ! {self(), {deliver, "reply"}},
              ?assertEqual({Mode, "reply"},
                           {Mode, binary_to_list(iolist_to_binary([fromsocket(C)]))}),
              ssl_socket:close(C),
              ?assertEqual(normal, closed(S))
      end, Cases).

modes_raw() ->
    lists:foreach(
      fun({Mode, Type}) ->
              {S, C} = pair(Mode, "-cert ssl_server.pem", ""),
              Data = lists:flatten(lists:duplicate(1000, "0123456789")),
              C ! {self(), {deliver, Data}},
              C ! {self(), {deliver, <<"tail">>}},
              Got = recv_raw(S, length(Data) + 4, Type),
              ?assertEqual(Data ++ "tail", Got),
              ssl_socket:close(S),
              ?assertEqual(normal, closed(C))
      end, [{raw, list}, {{packet, 0}, list}, {{binary_packet, 0}, binary}]).

recv_raw(_S, 0, _Type) -> [];
recv_raw(S, N, Type) ->
    B = fromsocket(S),
    case Type of
        list -> ?assert(is_list(B));
        binary -> ?assert(is_binary(B))
    end,
    L = binary_to_list(iolist_to_binary([B])),
    L ++ recv_raw(S, N - length(L), Type).

modes_asn1() ->
    {S, C} = pair(asn1, "-cert ssl_server.pem", ""),
    Short = [16#04, 3, $a, $b, $c],
    Long = [16#04, 16#82, 1, 44 | lists:duplicate(300, $z)],
    MultiTag = [16#1F, 16#81, 16#00, 2, $h, $i],
    Constructed = [16#30, 8, 16#02, 1, 7, 16#04, 3, $x, $y, $z],
    %% Indefinite length: the seed could not; the daemon delivers it whole.
    Indefinite = [16#30, 16#80, 16#04, 2, $o, $k, 16#30, 16#80, 16#02, 1, 1, 0, 0, 0, 0],
    Tlvs = [Short, Long, MultiTag, Constructed, Indefinite],
    %% Sent as one byte stream: the receiver splits it into TLVs.
    C ! {self(), {deliver, lists:append(Tlvs)}},
    ?assertEqual(Tlvs, [fromsocket(S) || _ <- Tlvs]),
    S ! {self(), {deliver, Short}},
    ?assertEqual(Short, fromsocket(C)),
    ssl_socket:close(C),
    ?assertEqual(normal, closed(S)).

modes_binary_sender_list_receiver() ->
    %% "a sender may be in binary mode and the receiver in byte list mode"
    {S, C} = pair({binary_packet, 2}, {packet, 2}, "-cert ssl_server.pem", ""),
    C ! {self(), {deliver, <<"from list side">>}},
    ?assertEqual(<<"from list side">>, fromsocket(S)),
    S ! {self(), {deliver, "from binary side"}},
    ?assertEqual("from binary side", fromsocket(C)),
    ssl_socket:close(C),
    ssl_socket:close(S).

packet1_limits() ->
    {S, C} = pair({packet, 1}, "-cert ssl_server.pem", ""),
    Max = lists:duplicate(255, $m),
    C ! {self(), {deliver, Max}},
    ?assertEqual(Max, fromsocket(S)),
    %% Too long for a 1-byte header: never truncated, never sent.
    C ! {self(), {deliver, lists:duplicate(256, $n)}},
    C ! {self(), {deliver, "after"}},
    ?assertEqual("after", fromsocket(S)),
    ssl_socket:close(C),
    ssl_socket:close(S).

%%% ---------------------------------------------------------------- errors

listen_port_in_use() ->
    {_, Port} = L = ssl_socket:listen('STREAM', 'AF_INET', 0, raw),
    ?assert(Port > 0),
    ?assertEqual({'EXIT', {listen, syncerror}},
                 catch ssl_socket:listen('STREAM', 'AF_INET', Port, raw)),
    ?assertMatch({eaddrinuse, _}, ssl_socket:last_error()),
    %% A port given is the port reported.
    Free = tlsport_test_lib:free_port(),
    L2 = ssl_socket:listen('STREAM', 'AF_INET', Free, raw),
    ?assertMatch({_, Free}, L2),
    ssl_socket:close(L2),
    ssl_socket:close(L).

listen_bad_arguments() ->
    ?assertEqual({'EXIT', {listen, syncerror}},
                 catch ssl_socket:listen('STREAM', 'AF_INET', 0, {packet, 3})),
    ?assertMatch({badarg, _}, ssl_socket:last_error()),
    ?assertEqual({'EXIT', {listen, syncerror}},
                 catch ssl_socket:listen('DGRAM', 'AF_INET', 0, raw)),
    ?assertEqual({'EXIT', {listen, syncerror}},
                 catch ssl_socket:listen('STREAM', 'AF_UNIX', 0, raw)).

client_refused() ->
    Port = tlsport_test_lib:free_port(),
    ?assertEqual({'EXIT', {client, econnrefused}},
                 catch ssl_socket:client('STREAM', 'AF_INET', {localhost, Port}, raw, "")),
    ?assertMatch({econnrefused, _}, ssl_socket:last_error()),
    ?assertMatch({'EXIT', {client, nxdomain}},
                 catch ssl_socket:client('STREAM', 'AF_INET', {'no-such-host.invalid', 1}, raw, "")).

client_address_forms() ->
    {_, Port} = L = ssl_socket:listen('STREAM', 'AF_INET', 0, {packet, 2}),
    Self = self(),
    Hosts = [localhost, "localhost", '127.0.0.1', "127.0.0.1", {127, 0, 0, 1},
             tlsport_test_lib:short_hostname()],
    spawn(fun() -> accept_n(L, length(Hosts), Self) end),
    lists:foreach(
      fun(H) ->
              C = client_retry({H, Port}, {packet, 2}, ""),
              ?assertEqual({H, "hi"}, {H, fromsocket(C)}),
              ssl_socket:close(C)
      end, Hosts),
    ssl_socket:close(L).

accept_n(_L, 0, _) -> ok;
accept_n(L, N, Parent) ->
    S = ssl_socket:accept(L, "-cert ssl_server.pem"),
    S ! {self(), {deliver, "hi"}},
    accept_n(L, N - 1, Parent).

%% Verify levels on the client side (the server certificate is signed by
%% the CA that SSL_CERT_FILE names; self.pem is signed by nobody known;
%% expired.pem is signed by the CA but expired).
verify_client_levels() ->
    Cases = [{"ssl_server.pem", "-verify 0", ok},
             {"ssl_server.pem", "-verify 1", ok},
             {"ssl_server.pem", "-verify 2", ok},
             {"self_both.pem", "-verify 0", ok},
             {"self_both.pem", "-verify 1", ok},      % unknown issuer: still connects
             {"self_both.pem", "-verify 2", fail},
             {"expired_both.pem", "-verify 0", ok},
             {"expired_both.pem", "-verify 1", fail}, % other failures refuse
             {"expired_both.pem", "-verify 2", fail}],
    lists:foreach(
      fun({ServerCert, ClientFlags, Want}) ->
              {_, Port} = L = ssl_socket:listen('STREAM', 'AF_INET', 0, {packet, 2}),
              Self = self(),
              A = spawn(fun() ->
                                S = ssl_socket:accept(L, "-cert " ++ ServerCert),
                                S ! {self(), {deliver, "ok"}},
                                Self ! {served, self()},
                                timer:sleep(2000)
                        end),
              timer:sleep(100),
              Got = try ssl_socket:client('STREAM', 'AF_INET', {localhost, Port}, {packet, 2},
                                          ClientFlags) of
                        C -> "ok" = fromsocket(C), ssl_socket:close(C), ok
                    catch exit:{client, {tls, _}} -> fail
                    end,
              ?assertEqual({ServerCert, ClientFlags, Want}, {ServerCert, ClientFlags, Got}),
              exit(A, kill),
              ssl_socket:close(L)
      end, Cases).

%% Level 2 on the server: a client must present a certificate the server
%% trusts.
verify_server_level2_needs_client_cert() ->
    Cases = [{"", fail}, {"-cert ssl_client.pem", ok}, {"-cert self_both.pem", fail}],
    lists:foreach(
      fun({ClientFlags, Want}) ->
              ?assertEqual({ClientFlags, Want},
                           {ClientFlags, server_verdict("-cert ssl_server.pem -verify 2", ClientFlags)})
      end, Cases).

verify_server_level1_accepts_unknown_issuer() ->
    lists:foreach(
      fun(ClientFlags) ->
              ?assertEqual({ClientFlags, ok},
                           {ClientFlags, server_verdict("-cert ssl_server.pem -verify 1", ClientFlags)})
      end, ["", "-cert ssl_client.pem", "-cert self_both.pem"]),
    ?assertEqual(ok, server_verdict("-cert ssl_server.pem -verify 0", "-cert self_both.pem")).

%% ok when the server accepts the client, fail when the handshake is
%% refused (with TLS 1.3 the client may finish its side first and then
%% receive the server's alert).
server_verdict(ServerFlags, ClientFlags) ->
    {_, Port} = L = ssl_socket:listen('STREAM', 'AF_INET', 0, {packet, 2}),
    Self = self(),
    A = spawn(fun() ->
                      S = ssl_socket:accept(L, ServerFlags),
                      S ! {self(), {deliver, "welcome"}},
                      Self ! {served, self()},
                      timer:sleep(2000)
              end),
    timer:sleep(100),
    Verdict =
        try ssl_socket:client('STREAM', 'AF_INET', {localhost, Port}, {packet, 2}, ClientFlags) of
            C ->
                receive
                    {C, {fromsocket, "welcome"}} -> ssl_socket:close(C), ok;
                    {C, {socket_closed, {error, _}}} -> fail
                after 3000 -> timeout
                end
        catch exit:{client, _} -> fail
        end,
    Served = receive {served, A} -> true after 300 -> false end,
    exit(A, kill),
    ssl_socket:close(L),
    case {Verdict, Served} of
        {ok, true} -> ok;
        {fail, false} -> fail;
        Other -> {inconsistent, Other}
    end.

bad_flags() ->
    {_, Port} = L = ssl_socket:listen('STREAM', 'AF_INET', 0, raw),
    ?assertMatch({'EXIT', {accept, {bad_tls_config, _}}},
                 catch ssl_socket:accept(L, "-cert no-such-file.pem")),
    ?assertMatch({'EXIT', {accept, {bad_request, _}}},
                 catch ssl_socket:accept(L, "-verify 7 -cert ssl_server.pem")),
    ?assertMatch({'EXIT', {client, {bad_request, _}}},
                 catch ssl_socket:client('STREAM', 'AF_INET', {localhost, Port}, raw, "-bogus x")),
    %% The listener survived the bad flags.
    Self = self(),
    spawn(fun() -> S = ssl_socket:accept(L, "-cert ssl_server.pem"),
                   S ! {self(), {deliver, "fine"}}, Self ! done, timer:sleep(1000) end),
    C = client_retry({localhost, Port}, raw, ""),
    ?assertEqual("fine", raw_bytes(C, 4, [])),
    ssl_socket:close(C),
    ssl_socket:close(L).

%% Accepts on one listener with different SSLFlags: each connection gets
%% the certificate of its accept.
accept_flags_change() ->
    {_, Port} = L = ssl_socket:listen('STREAM', 'AF_INET', 0, {packet, 2}),
    Self = self(),
    Accept = fun(Flags) ->
                     spawn(fun() ->
                                   S = ssl_socket:accept(L, Flags),
                                   ok = ssl_socket:controlling_process(S, Self),
                                   Self ! {accepted, Flags, S}
                           end)
             end,
    Accept("-cert ssl_server.pem"),
    C1 = client_retry({localhost, Port}, {packet, 2}, "-verify 2"),
    receive {accepted, "-cert ssl_server.pem", S1} -> ssl_socket:close(S1) after 5000 -> error(a1) end,
    Accept("-cert self_both.pem"),
    timer:sleep(200),
    %% Now the server presents the self-signed certificate: -verify 2 fails.
    ?assertMatch({'EXIT', {client, {tls, _}}},
                 catch ssl_socket:client('STREAM', 'AF_INET', {localhost, Port}, {packet, 2}, "-verify 2")),
    C2 = client_retry({localhost, Port}, {packet, 2}, "-verify 1"),
    receive {accepted, "-cert self_both.pem", S2} -> ssl_socket:close(S2) after 5000 -> error(a2) end,
    ssl_socket:close(C1),
    ssl_socket:close(C2),
    ssl_socket:close(L).

%% Clients that connect right after listen/4, before any accept/2, wait
%% for their accept (its SSLFlags give the connection its certificate);
%% none is reset.
connect_before_first_accept() ->
    {_, Port} = L = ssl_socket:listen('STREAM', 'AF_INET', 0, {packet, 2}),
    Self = self(),
    Clients = [spawn_link(fun() ->
                                  C = ssl_socket:client('STREAM', 'AF_INET', {localhost, Port},
                                                        {packet, 2}, "-verify 2"),
                                  Self ! {client, self(), fromsocket(C)},
                                  ssl_socket:close(C)
                          end) || _ <- lists:seq(1, 3)],
    timer:sleep(500),                       % all three are waiting in the daemon
    Servers = [begin
                   S = ssl_socket:accept(L, "-cert ssl_server.pem"),
                   S ! {self(), {deliver, "welcome"}},
                   S
               end || _ <- Clients],
    ?assertEqual([welcome || _ <- Clients],
                 [receive {client, P, "welcome"} -> welcome after 5000 -> timeout end
                  || P <- Clients]),
    [ssl_socket:close(S) || S <- Servers],
    ssl_socket:close(L).

%% A seed sender to a peer that does not read: the socket gets busy in the
%% daemon and its process holds the deliver messages until it is ready
%% again. The daemon goes on serving the node's other commands; when the
%% peer reads, everything arrives in order, and a close sent after the
%% delivers comes after them.
deliver_held_while_busy() ->
    {ok, ML} = tlsport:listen(0, [{certfile, tlsport_test_lib:cert("server.pem")},
                                  {keyfile, tlsport_test_lib:cert("server.key")},
                                  {active, false}]),
    {ok, {_, Port}} = tlsport:sockname(ML),
    Self = self(),
    spawn_link(fun() -> {ok, S} = tlsport:accept(ML, 5000),
                        ok = tlsport:controlling_process(S, Self),
                        Self ! {accepted, S} end),
    C = ssl_socket:client('STREAM', 'AF_INET', {localhost, Port}, {binary_packet, 0}, ""),
    S = receive {accepted, S0} -> S0 after 5000 -> error(no_accept) end,
    1 = erlang:trace(C, true, ['receive']),
    Chunks = [crypto:strong_rand_bytes(64 * 1024) || _ <- lists:seq(1, 128)],   % 8 MiB
    [C ! {self(), {deliver, D}} || D <- Chunks],
    timer:sleep(500),
    %% Not paused: a daemon command of this node is answered.
    Resolver = spawn_link(fun() -> Self ! {resolved, self(), ssl_socket:resolve({127, 0, 0, 1})} end),
    ?assertEqual("localhost", receive {resolved, Resolver, R} -> R after 3000 -> paused end),
    C ! {self(), close},
    Want = iolist_to_binary(Chunks),
    ?assertEqual(Want, recv_all(S, byte_size(Want), [])),
    ?assertEqual({error, closed}, tlsport:recv(S, 0, 5000)),
    _ = catch erlang:trace(C, false, ['receive']),       % C has gone with its close
    Events = flow_events(C, []),
    ?assertMatch([busy, ready | _], Events),
    ?assertEqual(ready, lists:last(Events)),
    tlsport:close(S),
    tlsport:close(ML).

recv_all(_S, 0, Acc) -> iolist_to_binary(lists:reverse(Acc));
recv_all(S, Left, Acc) ->
    {ok, D} = tlsport:recv(S, 0, 5000),
    recv_all(S, Left - byte_size(D), [D | Acc]).

flow_events(Pid, Acc) ->
    receive
        {trace, Pid, 'receive', {tlsport_event, _, #{event := E}}} when E =:= busy; E =:= ready ->
            flow_events(Pid, [E | Acc]);
        {trace, Pid, 'receive', _} ->
            flow_events(Pid, Acc)
    after 200 -> lists:reverse(Acc)
    end.

%%% ---------------------------------------------------------------- ownership

%% The server streams numbered packets without pause; the client's owner
%% hands the socket over in the middle. The two owners together must see
%% every packet exactly once, in order.
controlling_process_stream() ->
    {S, C} = pair({packet, 4}, "-cert ssl_server.pem", ""),
    N = 3000,
    Streamer = spawn_link(fun() ->
                                  ok = ssl_socket:controlling_process(S, self()),
                                  [S ! {self(), {deliver, <<I:32>>}} || I <- lists:seq(1, N)],
                                  receive stop -> ok after 10000 -> ok end
                          end),
    ok = ssl_socket:controlling_process(S, Streamer),
    Self = self(),
    First = take_seq(C, 500, []),
    New = spawn_link(fun() -> Self ! {rest, take_seq(C, N - length(First), [])} end),
    ok = ssl_socket:controlling_process(C, New),
    Rest = receive {rest, R} -> R after 10000 -> error(no_rest) end,
    ?assertEqual(lists:seq(1, N), First ++ Rest),
    ?assertEqual([], [M || {C0, _} = M <- tlsport_test_lib:recv_msgs(5, 100), C0 =:= C]),
    Streamer ! stop,
    ssl_socket:close(C).

take_seq(_C, 0, Acc) -> lists:reverse(Acc);
take_seq(C, N, Acc) ->
    receive {C, {fromsocket, [A, B, D, E]}} -> take_seq(C, N - 1, [(A bsl 24) bor (B bsl 16) bor (D bsl 8) bor E | Acc])
    after 5000 -> error({stream_stalled, length(Acc)})
    end.

controlling_process_not_owner() ->
    {S, C} = pair({packet, 2}, "-cert ssl_server.pem", ""),
    Self = self(),
    spawn(fun() -> Self ! {result, ssl_socket:controlling_process(C, self())} end),
    ?assertEqual({error, not_owner}, receive {result, R} -> R after 5000 -> timeout end),
    ssl_socket:close(C),
    ssl_socket:close(S).

owner_death_closes() ->
    {S, C} = pair({packet, 2}, "-cert ssl_server.pem", ""),
    Owner = spawn(fun() -> receive go -> exit(crash) end end),
    ok = ssl_socket:controlling_process(C, Owner),
    Owner ! go,
    %% "automatically closed when the process terminates"
    ?assertEqual(normal, closed(S)),
    tlsport_test_lib:wait_until(fun() -> not is_process_alive(C) end, 2000).

close_message_and_close() ->
    {S, C} = pair({packet, 2}, "-cert ssl_server.pem", ""),
    C ! {self(), {deliver, "last words"}},
    C ! {self(), close},
    ?assertEqual("last words", fromsocket(S)),
    ?assertEqual(normal, closed(S)),
    no_message(C, 100),
    {S2, C2} = pair(raw, "-cert ssl_server.pem", ""),
    ?assertEqual(ok, ssl_socket:close(S2)),
    ?assertEqual(normal, closed(C2)),
    ?assertNot(is_process_alive(S2)).

close_listener_fails_accept() ->
    L = ssl_socket:listen('STREAM', 'AF_INET', 0, raw),
    Self = self(),
    spawn(fun() -> Self ! {accept_result, catch ssl_socket:accept(L, "-cert ssl_server.pem")} end),
    timer:sleep(300),
    ok = ssl_socket:close(L),
    ?assertEqual({'EXIT', {accept, closed}},
                 receive {accept_result, R} -> R after 5000 -> timeout end),
    ?assertEqual({'EXIT', {accept, closed}}, catch ssl_socket:accept(L, "-cert ssl_server.pem")).

peername_and_resolve() ->
    {S, C} = pair(raw, "-cert ssl_server.pem", ""),
    {SPort, SAddr} = ssl_socket:peername(S),
    ?assertEqual({127, 0, 0, 1}, SAddr),
    ?assert(is_integer(SPort) andalso SPort > 0),
    ?assertMatch({_, {127, 0, 0, 1}}, ssl_socket:peername(C)),
    {ok, Host} = inet:gethostname(),
    Official = ssl_socket:resolve(),
    ?assert(is_list(Official)),
    ?assertEqual(hd(string:split(Official, ".")), hd(string:split(Host, "."))),
    ?assertEqual("localhost", ssl_socket:resolve({127, 0, 0, 1})),
    ?assertEqual("localhost", ssl_socket:resolve("127.0.0.1")),
    ?assertMatch({error, _}, ssl_socket:resolve("not an address")),
    ssl_socket:close(C),
    ssl_socket:close(S).

large_packet() ->
    {S, C} = pair({binary_packet, 4}, "-cert ssl_server.pem", ""),
    Big = crypto:strong_rand_bytes(3 * 1024 * 1024),
    C ! {self(), {deliver, Big}},
    ?assertEqual(Big, fromsocket(S)),
    ssl_socket:close(C),
    ssl_socket:close(S).

%% stop/0 closes every socket: the owners hear of it, so does an OTP ssl
%% peer. Runs last; the application is started again afterwards.
stop_closes_everything() ->
    tlsport_test_lib:flush(),
    {ok, LS} = ssl:listen(0, [{certfile, tlsport_test_lib:cert("server.pem")},
                              {keyfile, tlsport_test_lib:cert("server.key")},
                              {reuseaddr, true}, {active, true}]),
    {ok, {_, Port}} = ssl:sockname(LS),
    Self = self(),
    spawn(fun() ->
                  {ok, T} = ssl:transport_accept(LS, 5000),
                  {ok, T2} = ssl:handshake(T, 5000),
                  Self ! {ssl_up, T2},
                  receive {ssl_closed, T2} -> Self ! ssl_peer_closed after 5000 -> ok end
          end),
    C = ssl_socket:client('STREAM', 'AF_INET', {localhost, Port}, raw, ""),
    receive {ssl_up, _} -> ok after 5000 -> error(no_ssl) end,
    L = ssl_socket:listen('STREAM', 'AF_INET', 0, raw),
    ok = ssl_socket:stop(),
    ?assertEqual({error, stopped}, closed(C)),
    ?assertEqual(ok, receive ssl_peer_closed -> ok after 5000 -> timeout end),
    ?assertEqual(undefined, whereis(tlsport_server)),
    ssl:close(LS),
    tlsport_test_lib:start(),
    ?assertEqual({'EXIT', {accept, closed}}, catch ssl_socket:accept(L, "")).
