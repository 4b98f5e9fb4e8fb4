%% The modern API (tlsport) against a real tlsportd: modes, active
%% once/N/false with the daemon's flow control, recv, controlling_process,
%% errors, ownership.
-module(tlsport_tests).

-include_lib("eunit/include/eunit.hrl").
-include("tlsport.hrl").

-define(T(F), {??F, {timeout, 30, fun() -> tlsport_test_lib:flush(), F() end}}).

tlsport_test_() ->
    {setup, fun tlsport_test_lib:start/0, fun(_) -> ok end,
     [?T(active_true_binary_and_close),
      ?T(list_mode),
      ?T(packet_modes),
      ?T(line_and_asn1),
      ?T(active_once),
      ?T(active_n),
      ?T(active_n_goes_straight_to_the_owner_and_counts),
      ?T(active_one_at_a_time_from_passive),
      ?T(passive_recv),
      ?T(passive_recv_raw_lengths),
      ?T(switching_modes_keeps_order),
      ?T(flow_control_passive),
      ?T(flow_control_once),
      ?T(controlling_process_stream),
      ?T(handover_chain_keeps_order),
      ?T(mode_switches_keep_order),
      ?T(owner_death),
      ?T(listener_owner_death),
      ?T(accept_timeout_keeps_listener),
      ?T(accept_killed_keeps_listener),
      ?T(connect_errors),
      ?T(listen_errors),
      ?T(send_errors),
      ?T(names_and_information),
      ?T(tls12_only),
      ?T(plain_tcp),
      ?T(memory_comes_back_after_many_sockets_close),
      ?T(big_raw_send),
      ?T(bulk_same_node_passive),
      ?T(bulk_same_node_once),
      ?T(bulk_same_node_n),
      ?T(send_blocks_while_peer_does_not_read),
      ?T(blocked_send_fails_when_socket_closes),
      ?T(initial_active_modes_on_accept),
      ?T(initial_passive_connect),
      ?T(options_as_map),
      ?T(getopts_setopts_mode)]}.

%%% ---------------------------------------------------------------- helpers

cert(F) -> tlsport_test_lib:cert(F).

server_opts() -> [{certfile, cert("server.pem")}, {keyfile, cert("server.key")}].
client_opts() -> [{cacertfile, cert("ca.pem")}].

pair(Opts) -> pair(Opts, Opts).
pair(SOpts, COpts) ->
    {ok, L} = tlsport:listen(0, SOpts ++ server_opts()),
    Self = self(),
    spawn_link(fun() ->
                       {ok, S} = tlsport:accept(L, 5000),
                       ok = tlsport:controlling_process(S, Self),
                       Self ! {accepted, S}
               end),
    {ok, C} = tlsport:connect("localhost", L#tlsport_listen.port, COpts ++ client_opts(), 5000),
    S = receive {accepted, S0} -> S0 after 5000 -> error(no_accept) end,
    tlsport:close(L),
    {S, C}.

data(S) ->
    receive {tlsport, S, D} -> D
    after 5000 -> error({timeout, data, process_info(self(), messages)})
    end.

nothing_from(S, Ms) ->
    receive
        {tlsport, S, _} = M -> error({unexpected, M});
        {tlsport_passive, S} = M -> error({unexpected, M})
    after Ms -> ok
    end.

raw_collect(_S, 0) -> <<>>;
raw_collect(S, N) ->
    D = data(S),
    <<D/binary, (raw_collect(S, N - byte_size(D)))/binary>>.

%%% ---------------------------------------------------------------- tests

active_true_binary_and_close() ->
    {S, C} = pair([{packet, 2}]),
    ok = tlsport:send(C, <<"hello">>),
    ok = tlsport:send(C, ["io", $l, <<"ist">>]),
    ?assertEqual(<<"hello">>, data(S)),
    ?assertEqual(<<"iolist">>, data(S)),
    ok = tlsport:send(S, <<"back">>),
    ?assertEqual(<<"back">>, data(C)),
    ok = tlsport:close(C),
    ?assertEqual(ok, receive {tlsport_closed, S} -> ok after 5000 -> timeout end),
    ?assertEqual({error, closed}, tlsport:send(C, <<"late">>)).

list_mode() ->
    {S, C} = pair([{packet, 4}, list]),
    ok = tlsport:send(C, "abc"),
    ?assertEqual("abc", data(S)),
    tlsport:close(C),
    tlsport:close(S).

packet_modes() ->
    lists:foreach(
      fun(P) ->
              {S, C} = pair([{packet, P}]),
              Msgs = [<<"one">>, <<>>, binary:copy(<<"x">>, 250), <<"last">>],
              [ok = tlsport:send(C, M) || M <- Msgs],
              ?assertEqual({P, Msgs}, {P, [data(S) || _ <- Msgs]}),
              tlsport:close(C),
              tlsport:close(S)
      end, [1, 2, 4]),
    {S, C} = pair([{packet, raw}]),
    ?assertEqual({ok, [{packet, raw}]}, tlsport:getopts(C, [packet])),
    ok = tlsport:send(C, <<"stream ">>),
    ok = tlsport:send(C, <<"of bytes">>),
    ?assertEqual(<<"stream of bytes">>, raw_collect(S, 15)),
    tlsport:close(C),
    tlsport:close(S).

line_and_asn1() ->
    {S, C} = pair([{packet, line}]),
    ok = tlsport:send(C, <<"first line\nsecond ">>),
    ok = tlsport:send(C, <<"line\n">>),
    ?assertEqual(<<"first line\n">>, data(S)),
    ?assertEqual(<<"second line\n">>, data(S)),
    ?assertEqual({ok, [{packet, line}]}, tlsport:getopts(C, [packet])),
    tlsport:close(C),
    tlsport:close(S),
    {S2, C2} = pair([{packet, asn1}]),
    Tlv = <<16#30, 16#80, 16#04, 1, $a, 0, 0>>,
    ok = tlsport:send(C2, <<Tlv/binary, 16#02, 1, 9>>),
    ?assertEqual(Tlv, data(S2)),
    ?assertEqual(<<16#02, 1, 9>>, data(S2)),
    tlsport:close(C2),
    tlsport:close(S2).

active_once() ->
    {S, C} = pair([{packet, 2}], [{packet, 2}, {active, once}]),
    [ok = tlsport:send(S, <<I>>) || I <- lists:seq(1, 10)],
    Got = lists:map(fun(_) ->
                            D = data(C),
                            nothing_from(C, 50),
                            ok = tlsport:setopts(C, [{active, once}]),
                            D
                    end, lists:seq(1, 10)),
    ?assertEqual([<<I>> || I <- lists:seq(1, 10)], Got),
    tlsport:close(C),
    tlsport:close(S).

active_n() ->
    {S, C} = pair([{packet, 2}], [{packet, 2}, {active, 3}]),
    [ok = tlsport:send(S, <<I>>) || I <- lists:seq(1, 8)],
    ?assertEqual([<<1>>, <<2>>, <<3>>], [data(C) || _ <- lists:seq(1, 3)]),
    ?assertEqual(passive, receive {tlsport_passive, C} -> passive after 5000 -> timeout end),
    nothing_from(C, 100),
    ?assertEqual({ok, [{active, false}]}, tlsport:getopts(C, [active])),
    ok = tlsport:setopts(C, [{active, 2}]),
    ok = tlsport:setopts(C, [{active, 3}]),       % adds up, as inet does
    ?assertEqual([<<I>> || I <- lists:seq(4, 8)], [data(C) || _ <- lists:seq(4, 8)]),
    ?assertEqual(passive, receive {tlsport_passive, C} -> passive after 5000 -> timeout end),
    tlsport:close(C),
    tlsport:close(S).

%% {active, N} packets go from tlsport_server to the owner without passing
%% through the socket process, and the count stays exact: getopts, adding
%% to it before it runs out, the passive message after exactly N, then
%% recv through the socket process again.
active_n_goes_straight_to_the_owner_and_counts() ->
    {S, C} = pair([{packet, 2}], [{packet, 2}, {active, 5}]),
    #tlsport_socket{pid = Pid} = C,
    1 = erlang:trace(Pid, true, ['receive']),
    [ok = tlsport:send(S, <<I>>) || I <- [1, 2]],
    ?assertEqual([<<1>>, <<2>>], [data(C) || _ <- [1, 2]]),
    ?assertEqual({ok, [{active, 3}]}, tlsport:getopts(C, [active])),
    ok = tlsport:setopts(C, [{active, 2}]),          % 3 left + 2, as inet adds
    [ok = tlsport:send(S, <<I>>) || I <- lists:seq(3, 9)],
    ?assertEqual([<<I>> || I <- lists:seq(3, 7)], [data(C) || _ <- lists:seq(3, 7)]),
    ?assertEqual(passive, receive {tlsport_passive, C} -> passive after 5000 -> timeout end),
    ?assertEqual({ok, [{active, false}]}, tlsport:getopts(C, [active])),
    erlang:trace(Pid, false, ['receive']),
    ?assertEqual([], traced_data(Pid, [])),
    ?assertEqual({ok, <<8>>}, tlsport:recv(C, 0, 2000)),
    ok = tlsport:setopts(C, [{active, 1}]),
    ?assertEqual(<<9>>, data(C)),
    ?assertEqual(passive, receive {tlsport_passive, C} -> passive after 5000 -> timeout end),
    nothing_from(C, 100),
    tlsport:close(C),
    tlsport:close(S).

%% {active, 1} on a passive socket whose data waits in the daemon: the
%% packet comes at once, while the route to the owner is being set up, and
%% its passive event right after. Each time the socket is passive again
%% (getopts says so, recv works) and nothing is lost or reordered.
active_one_at_a_time_from_passive() ->
    {S, C} = pair([{packet, 2}], [{packet, 2}, {active, false}]),
    N = 200,
    [ok = tlsport:send(S, <<I:16>>) || I <- lists:seq(1, N)],
    Got = [begin
               ok = tlsport:setopts(C, [{active, 1}]),
               <<I:16>> = data(C),
               passive = receive {tlsport_passive, C} -> passive after 5000 -> timeout end,
               {ok, [{active, false}]} = tlsport:getopts(C, [active]),
               I
           end || _ <- lists:seq(1, N div 2)],
    Rest = [begin {ok, <<I:16>>} = tlsport:recv(C, 0, 2000), I end || _ <- lists:seq(1, N div 2)],
    ?assertEqual(lists:seq(1, N), Got ++ Rest),
    tlsport:close(C),
    tlsport:close(S).

%% The packets the traced socket process received from tlsport_server.
traced_data(Pid, Acc) ->
    receive
        {trace, Pid, 'receive', {tlsport_data, _, D}} -> traced_data(Pid, [D | Acc]);
        {trace, Pid, 'receive', _} -> traced_data(Pid, Acc)
    after 100 -> lists:reverse(Acc)
    end.

passive_recv() ->
    {S, C} = pair([{packet, 2}], [{packet, 2}, {active, false}]),
    ?assertEqual({error, einval}, tlsport:recv(S, 0, 100)),   % S is active
    [ok = tlsport:send(S, <<"p", I>>) || I <- lists:seq(1, 3)],
    ?assertEqual({ok, <<"p", 1>>}, tlsport:recv(C, 0, 2000)),
    ?assertEqual({ok, <<"p", 2>>}, tlsport:recv(C, 0, 2000)),
    ?assertEqual({ok, <<"p", 3>>}, tlsport:recv(C, 0)),
    T0 = erlang:monotonic_time(millisecond),
    ?assertEqual({error, timeout}, tlsport:recv(C, 0, 200)),
    ?assert(erlang:monotonic_time(millisecond) - T0 >= 190),
    %% A recv that waits gets the packet when it comes.
    Self = self(),
    spawn(fun() -> timer:sleep(100), tlsport:send(S, <<"later">>), Self ! sent end),
    ?assertEqual({ok, <<"later">>}, tlsport:recv(C, 0, 3000)),
    nothing_from(C, 50),
    ok = tlsport:close(S),
    ?assertEqual({error, closed}, tlsport:recv(C, 0, 3000)),
    ?assertEqual({error, closed}, tlsport:recv(C, 0, 100)),
    tlsport:close(C).

passive_recv_raw_lengths() ->
    {S, C} = pair([], [{active, false}]),
    ok = tlsport:send(S, <<"hello world">>),
    ?assertEqual({ok, <<"hello">>}, tlsport:recv(C, 5, 2000)),
    ?assertEqual({ok, <<" world">>}, tlsport:recv(C, 6, 2000)),
    Self = self(),
    spawn(fun() -> [begin tlsport:send(S, <<B>>), timer:sleep(20) end || B <- "abcdef"], Self ! done end),
    ?assertEqual({ok, <<"abcdef">>}, tlsport:recv(C, 6, 3000)),
    tlsport:close(C),
    tlsport:close(S).

%% Data on its way while the owner switches between active and passive
%% keeps its order across messages, the buffer and recv.
switching_modes_keeps_order() ->
    {S, C} = pair([{packet, 4}]),
    N = 2000,
    spawn_link(fun() -> [tlsport:send(S, <<I:32>>) || I <- lists:seq(1, N)] end),
    Got = switch_loop(C, N, 0, []),
    ?assertEqual(lists:seq(1, N), Got),
    tlsport:close(C),
    tlsport:close(S).

switch_loop(_C, N, _, Acc) when length(Acc) >= N -> lists:reverse(Acc);
switch_loop(C, N, K, Acc) ->
    Acc1 = case K rem 4 of
               0 -> ok = tlsport:setopts(C, [{active, false}]),
                    case tlsport:recv(C, 0, 2000) of
                        {ok, <<I:32>>} -> [I | drain(C, Acc)];
                        {error, timeout} -> drain(C, Acc)
                    end;
               1 -> ok = tlsport:setopts(C, [{active, once}]),
                    take(C, 1, Acc);
               2 -> ok = tlsport:setopts(C, [{active, 5}]),
                    take(C, 3, Acc);
               3 -> ok = tlsport:setopts(C, [{active, true}]),
                    take(C, 7, Acc)
           end,
    switch_loop(C, N, K + 1, Acc1).

%% Messages already in the mailbox come first.
drain(C, Acc) ->
    receive
        {tlsport, C, <<I:32>>} -> drain(C, [I | Acc]);
        {tlsport_passive, C} -> drain(C, Acc)
    after 0 -> Acc
    end.

take(_C, 0, Acc) -> Acc;
take(C, K, Acc) ->
    receive
        {tlsport, C, <<I:32>>} -> take(C, K - 1, [I | Acc]);
        {tlsport_passive, C} -> take(C, K, Acc)
    after 300 -> Acc
    end.

%% A tlsport socket in passive mode that is not read: the daemon stops
%% reading it, TCP pushes back, and an OTP ssl sender stalls. Then recv
%% drains everything.
flow_control_passive() ->
    flow_control([{active, false}],
                 fun(C, Total) -> recv_all(C, Total, 0) end).

%% The same with {active, once}: one message, then nothing until re-armed.
flow_control_once() ->
    flow_control([{active, once}],
                 fun(C, Total) -> once_all(C, Total, 0) end).

flow_control(ClientOpts, Drain) ->
    Total = 48 * 1024 * 1024,
    Chunk = binary:copy(<<"z">>, 64 * 1024),
    {ok, LS} = ssl:listen(0, [{certfile, cert("server.pem")}, {keyfile, cert("server.key")},
                              {reuseaddr, true}, binary, {active, false}]),
    {ok, {_, Port}} = ssl:sockname(LS),
    Counter = counters:new(1, []),
    Self = self(),
    Sender = spawn_link(fun() ->
                                {ok, T} = ssl:transport_accept(LS, 5000),
                                {ok, T2} = ssl:handshake(T, 5000),
                                [begin ok = ssl:send(T2, Chunk), counters:add(Counter, 1, byte_size(Chunk)) end
                                 || _ <- lists:seq(1, Total div byte_size(Chunk))],
                                Self ! {sent_all, self()},
                                receive stop -> ssl:close(T2) after 30000 -> ok end
                        end),
    {ok, C} = tlsport:connect("localhost", Port, ClientOpts ++ client_opts(), 5000),
    timer:sleep(1000),
    Stalled = counters:get(Counter, 1),
    %% Kernel buffers and the daemon's read hold a few MiB at most.
    ?assert(Stalled < Total div 3),
    {messages, Msgs} = process_info(self(), messages),
    ?assert(length([M || {tlsport, S, _} = M <- Msgs, S =:= C]) =< 1),
    timer:sleep(300),
    ?assert(counters:get(Counter, 1) - Stalled < 1024 * 1024),
    ?assertEqual(Total, Drain(C, Total)),
    ?assertEqual(ok, receive {sent_all, Sender} -> ok after 10000 -> timeout end),
    Sender ! stop,
    tlsport:close(C),
    ssl:close(LS).

recv_all(_C, Total, Total) -> Total;
recv_all(C, Total, Got) ->
    {ok, D} = tlsport:recv(C, 0, 5000),
    recv_all(C, Total, Got + byte_size(D)).

once_all(_C, Total, Total) -> Total;
once_all(C, Total, Got) ->
    D = data(C),
    ok = tlsport:setopts(C, [{active, once}]),
    once_all(C, Total, Got + byte_size(D)).

controlling_process_stream() ->
    {S, C} = pair([{packet, 4}]),
    N = 3000,
    spawn_link(fun() -> [tlsport:send(S, <<I:32>>) || I <- lists:seq(1, N)] end),
    First = seq(C, 700, []),
    Self = self(),
    New = spawn_link(fun() -> Self ! {rest, seq(C, N - 700, [])}, receive done -> ok end end),
    ok = tlsport:controlling_process(C, New),
    Rest = receive {rest, R} -> R after 10000 -> error(no_rest) end,
    ?assertEqual(lists:seq(1, N), First ++ Rest),
    ?assertEqual({error, not_owner}, tlsport:controlling_process(C, self())),
    New ! done,
    tlsport:close(S).

%% The socket passes through 30 owners in a row while the peer streams;
%% every packet arrives once, in order (data that reaches an owner
%% directly or through the socket process, during and between hand-overs).
handover_chain_keeps_order() ->
    {S, C} = pair([{packet, 4}]),
    N = 3000,
    paced_sender(S, N),
    Self = self(),
    relay(C, N, [], Self),
    Got = receive {all, All} -> All after 20000 -> error(no_result) end,
    ?assertEqual(lists:seq(1, N), Got),
    tlsport:close(S).

%% Sends <<1:32>> .. <<N:32>>, pausing a millisecond every 20 packets
%% (so that the receiving side's changes happen while data flows).
paced_sender(S, N) ->
    spawn_link(fun() ->
                       [begin
                            ok = tlsport:send(S, <<I:32>>),
                            I rem 20 =:= 0 andalso timer:sleep(1)
                        end || I <- lists:seq(1, N)]
               end).

relay(C, N, Acc, Parent) when length(Acc) >= N ->
    Parent ! {all, lists:reverse(Acc)},
    tlsport:close(C);
relay(C, N, Acc, Parent) ->
    Acc1 = lists:reverse(seq(C, min(100, N - length(Acc)), []), Acc),
    Next = spawn(fun() -> receive {go, A} -> relay(C, N, A, Parent) after 10000 -> ok end end),
    ok = tlsport:controlling_process(C, Next),
    Next ! {go, Acc1}.

%% Switching between binary and list while the peer streams keeps the
%% order; both forms arrive.
mode_switches_keep_order() ->
    {S, C} = pair([{packet, 4}]),
    N = 2000,
    paced_sender(S, N),
    Got = switch_mode(C, N, 0, []),
    ?assertEqual(lists:seq(1, N), [I || {_, I} <- Got]),
    ?assertEqual([binary, list], lists:usort([T || {T, _} <- Got])),
    tlsport:close(C),
    tlsport:close(S).

switch_mode(_C, N, _K, Acc) when length(Acc) >= N -> lists:reverse(Acc);
switch_mode(C, N, K, Acc) ->
    ok = tlsport:setopts(C, [case K rem 2 of 0 -> list; 1 -> binary end]),
    switch_mode(C, N, K + 1, take_typed(C, min(50, N - length(Acc)), Acc)).

take_typed(_C, 0, Acc) -> Acc;
take_typed(C, K, Acc) ->
    receive
        {tlsport, C, <<I:32>>} -> take_typed(C, K - 1, [{binary, I} | Acc]);
        {tlsport, C, [_, _, _, _] = L} -> <<I:32>> = list_to_binary(L),
                                          take_typed(C, K - 1, [{list, I} | Acc])
    after 5000 -> error({stalled, length(Acc)})
    end.

seq(_C, 0, Acc) -> lists:reverse(Acc);
seq(C, N, Acc) ->
    receive {tlsport, C, <<I:32>>} -> seq(C, N - 1, [I | Acc])
    after 5000 -> error({stalled, length(Acc)})
    end.

owner_death() ->
    {S, C} = pair([]),
    Owner = spawn(fun() -> receive go -> exit(boom) end end),
    ok = tlsport:controlling_process(C, Owner),
    Owner ! go,
    ?assertEqual(ok, receive {tlsport_closed, S} -> ok after 5000 -> timeout end).

listener_owner_death() ->
    Self = self(),
    Owner = spawn(fun() ->
                          {ok, L} = tlsport:listen(0, server_opts()),
                          Self ! {port, L#tlsport_listen.port},
                          receive go -> ok end
                  end),
    Port = receive {port, P} -> P after 5000 -> error(no_listen) end,
    Owner ! go,
    tlsport_test_lib:wait_until(
      fun() -> tlsport:connect("localhost", Port, client_opts(), 2000) =:= {error, econnrefused} end,
      3000).

accept_timeout_keeps_listener() ->
    {ok, L} = tlsport:listen(0, server_opts()),
    ?assertEqual({error, timeout}, tlsport:accept(L, 200)),
    Self = self(),
    spawn(fun() -> Self ! {acc, tlsport:accept(L, 5000)} end),
    {ok, C} = tlsport:connect("localhost", L#tlsport_listen.port, client_opts(), 5000),
    ?assertMatch({acc, {ok, #tlsport_socket{}}}, tlsport_test_lib:recv_msg(5000)),
    tlsport:close(C),
    tlsport:close(L),
    ?assertEqual({error, closed}, tlsport:accept(L, 100)).

accept_killed_keeps_listener() ->
    {ok, L} = tlsport:listen(0, server_opts()),
    Dead = spawn(fun() -> tlsport:accept(L) end),
    timer:sleep(100),
    exit(Dead, kill),
    timer:sleep(100),
    Self = self(),
    spawn(fun() -> {ok, S} = tlsport:accept(L, 5000),
                   tlsport:send(S, <<"alive">>), Self ! {served, S},
                   timer:sleep(500) end),
    {ok, C} = tlsport:connect("localhost", L#tlsport_listen.port, client_opts(), 5000),
    ?assertEqual(<<"alive">>, data(C)),
    tlsport:close(C),
    tlsport:close(L).

connect_errors() ->
    Free = tlsport_test_lib:free_port(),
    ?assertEqual({error, econnrefused}, tlsport:connect("localhost", Free, client_opts(), 5000)),
    ?assertEqual({error, nxdomain}, tlsport:connect("no-such-host.invalid", 443, client_opts(), 5000)),
    %% Secure by default: a self-signed server is refused...
    {ok, L} = tlsport:listen(0, [{certfile, cert("self.pem")}, {keyfile, cert("self.key")}]),
    Port = L#tlsport_listen.port,
    spawn(fun() -> tlsport:accept(L, 3000) end),
    ?assertMatch({error, {tls, _}}, tlsport:connect("localhost", Port, client_opts(), 5000)),
    %% ...and so is a host name the certificate does not name.
    {ok, L2} = tlsport:listen(0, server_opts()),
    spawn(fun() -> tlsport:accept(L2, 3000) end),
    ?assertMatch({error, {tls, _}},
                 tlsport:connect("localhost", L2#tlsport_listen.port,
                                 [{verify_hostname, "other.example"} | client_opts()], 5000)),
    ?assertMatch({error, {bad_tls_config, _}},
                 tlsport:connect("localhost", Port, [{cacertfile, "/no/such/ca.pem"}], 5000)),
    ?assertMatch({error, {unsupported_protocol, _}},
                 tlsport:connect("localhost", Port, [{versions, ['tlsv1']} | client_opts()], 5000)),
    ?assertMatch({error, {badarg, _}}, tlsport:connect("localhost", Port, [{packet, 3}], 5000)),
    %% A server that never answers the ClientHello: the connect times out.
    {ok, Mute} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}]),
    {ok, MutePort} = inet:port(Mute),
    T0 = erlang:monotonic_time(millisecond),
    ?assertEqual({error, timeout}, tlsport:connect("127.0.0.1", MutePort, [{verify, 0}], 300)),
    ?assert(erlang:monotonic_time(millisecond) - T0 < 2000),
    gen_tcp:close(Mute),
    tlsport:close(L),
    tlsport:close(L2).

listen_errors() ->
    ?assertMatch({error, {bad_tls_config, _}}, tlsport:listen(0, [])),
    ?assertMatch({error, {bad_tls_config, _}}, tlsport:listen(0, [{certfile, "/no/such.pem"}])),
    {ok, L} = tlsport:listen(0, server_opts()),
    ?assertEqual({error, eaddrinuse}, tlsport:listen(L#tlsport_listen.port, server_opts())),
    ?assertMatch({eaddrinuse, _}, tlsport_lib:last_error()),
    ?assertMatch({ok, {_, _}}, tlsport:sockname(L)),
    tlsport:close(L).

send_errors() ->
    {S, C} = pair([{packet, 1}]),
    ?assertEqual(ok, tlsport:send(C, binary:copy(<<"a">>, 255))),
    ?assertEqual({error, emsgsize}, tlsport:send(C, binary:copy(<<"a">>, 256))),
    ?assertEqual({error, badarg}, tlsport:send(C, [1000])),
    ?assertEqual(255, byte_size(data(S))),
    tlsport:close(C),
    ?assertEqual({error, closed}, tlsport:send(C, <<"x">>)),
    tlsport:close(S).

names_and_information() ->
    {S, C} = pair([]),
    {ok, {{127, 0, 0, 1}, CPort}} = tlsport:sockname(C),
    ?assertEqual({ok, {{127, 0, 0, 1}, CPort}}, tlsport:peername(S)),
    {ok, Info} = tlsport:connection_information(C),
    ?assertEqual('tlsv1.3', maps:get(protocol, Info)),
    ?assertMatch(#{subject := <<"CN=localhost">>}, maps:get(peer_certificate, Info)),
    ?assertMatch(#{code := 0}, maps:get(verify_result, Info)),
    #{version := _, protocol := 1} = tlsport:daemon_info(),
    tlsport:close(C),
    tlsport:close(S).

tls12_only() ->
    {S, C} = pair([{versions, ['tlsv1.2']}], []),
    {ok, Info} = tlsport:connection_information(C),
    ?assertEqual('tlsv1.2', maps:get(protocol, Info)),
    tlsport:close(C),
    tlsport:close(S).

plain_tcp() ->
    {ok, L} = tlsport:listen(0, [{tls, false}, {packet, 2}]),
    {ok, G} = gen_tcp:connect("localhost", L#tlsport_listen.port, [binary, {packet, 2}, {active, true}]),
    {ok, S} = tlsport:accept(L, 5000),
    ok = gen_tcp:send(G, <<"plain">>),
    ?assertEqual(<<"plain">>, data(S)),
    ok = tlsport:send(S, <<"text">>),
    ?assertEqual(<<"text">>, receive {tcp, G, D} -> D after 5000 -> timeout end),
    tlsport:close(S),
    tlsport:close(L),
    gen_tcp:close(G).

%% The library's long-lived processes grow with the number of sockets; when
%% most of them have closed, the memory goes back (tlsport_server trims).
memory_comes_back_after_many_sockets_close() ->
    N = 600,
    Memory = fun() ->
                     {memory, M} = process_info(whereis(tlsport_server), memory),
                     M
             end,
    erlang:garbage_collect(whereis(tlsport_server)),
    Start = Memory(),
    {ok, L} = tlsport:listen(0, [{tls, false}, {packet, 2}, {backlog, N}]),
    Pairs = [begin
                 {ok, G} = gen_tcp:connect("localhost", L#tlsport_listen.port,
                                           [binary, {packet, 2}, {active, false}]),
                 {ok, S} = tlsport:accept(L, 5000),
                 {G, S}
             end || _ <- lists:seq(1, N)],
    Peak = Memory(),
    ?assert(Peak > Start + 64 * 1024),   % the sockets did take memory here
    [gen_tcp:close(G) || {G, _} <- Pairs],
    [?assertEqual(ok, receive {tlsport_closed, S} -> ok after 5000 -> timeout end)
     || {_, S} <- Pairs],
    tlsport:close(L),
    Back = fun Wait(Tries) ->
                   case Memory() of
                       M when M =< Start + 32 * 1024 -> ok;
                       M when Tries =:= 0 -> {still, M, start, Start, peak, Peak};
                       _ -> timer:sleep(50), Wait(Tries - 1)
                   end
           end,
    ?assertEqual(ok, Back(200)).   % 10 s: the closes may trickle in on a loaded machine

%% 8 MiB in one send, received in raw chunks by an active receiver.
big_raw_send() ->
    {S, C} = pair([]),
    Big = crypto:strong_rand_bytes(8 * 1024 * 1024),
    spawn_link(fun() -> ok = tlsport:send(S, Big) end),
    ?assertEqual(Big, raw_collect(C, byte_size(Big))),
    tlsport:close(C),
    tlsport:close(S).

options_as_map() ->
    {ok, L} = tlsport:listen(0, #{certfile => cert("server.pem"), keyfile => cert("server.key"),
                                  packet => 2, ip => {127, 0, 0, 1}}),
    Self = self(),
    spawn(fun() -> {ok, S} = tlsport:accept(L), ok = tlsport:send(S, <<"map">>),
                   Self ! done, timer:sleep(500) end),
    {ok, C} = tlsport:connect({127, 0, 0, 1}, L#tlsport_listen.port,
                              #{cacertfile => cert("ca.pem"), packet => 2, mode => list}),
    ?assertEqual("map", data(C)),
    tlsport:close(C),
    tlsport:close(L).

getopts_setopts_mode() ->
    {S, C} = pair([{packet, 2}]),
    ?assertEqual({ok, [{active, true}, {mode, binary}]}, tlsport:getopts(C, [active, mode])),
    ?assertEqual({ok, [{packet, 2}]}, tlsport:getopts(C, [packet])),
    ok = tlsport:setopts(C, [list]),
    ok = tlsport:send(S, <<"now a list">>),
    ?assertEqual("now a list", data(C)),
    ?assertEqual({error, einval}, tlsport:setopts(C, [{active, maybe}])),
    ?assertEqual({error, einval}, tlsport:setopts(C, [{packet, 4}])),
    ok = tlsport:setopts(C, #{packet_size => 1000}),
    tlsport:close(C),
    tlsport:close(S).

%%% ---------------------------------------------------------------- busy/ready

%% 8 MiB between two tlsport sockets of this node, the receiver passive
%% and slow. The sender's data passes the daemon's 1 MiB mark for the
%% socket: it must hold further data (busy/ready), or the daemon stops
%% reading the node's whole control channel, the receiver's recv with it
%% (this used to deadlock).
bulk_same_node_passive() ->
    {S, C} = pair([], [{active, false}]),
    Big = crypto:strong_rand_bytes(8 * 1024 * 1024),
    watch_flow(S),
    Sender = send_in_background(S, [Big]),
    timer:sleep(300),                               % the buffers fill up
    Got = slow_recv(C, byte_size(Big), []),
    ?assertEqual(Big, Got),
    ?assertEqual(ok, sent(Sender)),
    ?assert(busy_then_ready(flow_events(S))),
    tlsport:close(C),
    tlsport:close(S).

%% The same with {active, once}, in 64 KiB {packet, 4} packets.
bulk_same_node_once() ->
    {S, C} = pair([{packet, 4}], [{packet, 4}, {active, once}]),
    Packets = [crypto:strong_rand_bytes(64 * 1024) || _ <- lists:seq(1, 128)],
    watch_flow(S),
    Sender = send_in_background(S, Packets),
    timer:sleep(300),
    Got = [begin
               D = data(C),
               slow(I),
               ok = tlsport:setopts(C, [{active, once}]),
               D
           end || I <- lists:seq(1, length(Packets))],
    ?assertEqual(Packets, Got),
    ?assertEqual(ok, sent(Sender)),
    ?assert(busy_then_ready(flow_events(S))),
    tlsport:close(C),
    tlsport:close(S).

%% The same with {active, N}, raw.
bulk_same_node_n() ->
    {S, C} = pair([], [{active, 4}]),
    Big = crypto:strong_rand_bytes(8 * 1024 * 1024),
    watch_flow(S),
    Sender = send_in_background(S, [Big]),
    timer:sleep(300),
    Got = n_collect(C, byte_size(Big), 0, []),
    ?assertEqual(Big, Got),
    ?assertEqual(ok, sent(Sender)),
    ?assert(busy_then_ready(flow_events(S))),
    tlsport:close(C),
    tlsport:close(S).

%% Traces what the socket process of S receives, to see its busy/ready
%% events.
watch_flow(#tlsport_socket{pid = Pid}) ->
    1 = erlang:trace(Pid, true, ['receive']).

%% The busy and ready events S has had, in order.
flow_events(#tlsport_socket{pid = Pid}) ->
    erlang:trace(Pid, false, ['receive']),
    flow_trace(Pid, []).

%% At least one busy, each followed by its ready.
busy_then_ready([busy, ready]) -> true;
busy_then_ready([busy, ready | Rest]) -> busy_then_ready(Rest);
busy_then_ready(Events) -> error({flow_events, Events}).

flow_trace(Pid, Acc) ->
    receive
        {trace, Pid, 'receive', {tlsport_event, _, #{event := E}}} when E =:= busy; E =:= ready ->
            flow_trace(Pid, [E | Acc]);
        {trace, Pid, 'receive', _} ->
            flow_trace(Pid, Acc)
    after 200 -> lists:reverse(Acc)
    end.

send_in_background(S, Chunks) ->
    Self = self(),
    spawn_link(fun() ->
                       R = lists:foldl(fun(D, ok) -> tlsport:send(S, D); (_, E) -> E end, ok, Chunks),
                       Self ! {sent, self(), R}
               end).

sent(Sender) ->
    receive {sent, Sender, R} -> R after 10000 -> timeout end.

%% A pause of 1 ms now and then: the receiver is slower than the sender.
slow(I) when I rem 8 =:= 0 -> timer:sleep(1);
slow(_) -> ok.

slow_recv(_C, 0, Acc) -> iolist_to_binary(lists:reverse(Acc));
slow_recv(C, Left, Acc) ->
    {ok, D} = tlsport:recv(C, 0, 5000),
    slow(length(Acc)),
    slow_recv(C, Left - byte_size(D), [D | Acc]).

n_collect(_C, 0, _, Acc) -> iolist_to_binary(lists:reverse(Acc));
n_collect(C, Left, I, Acc) ->
    receive
        {tlsport, C, D} -> slow(I), n_collect(C, Left - byte_size(D), I + 1, [D | Acc]);
        {tlsport_passive, C} -> ok = tlsport:setopts(C, [{active, 4}]), n_collect(C, Left, I, Acc)
    after 5000 -> error({stalled, Left})
    end.

%% tlsport:send/2 blocks while the socket is busy (the peer does not
%% read) and returns once it is ready again. Meanwhile the daemon goes on
%% serving the node's other commands.
send_blocks_while_peer_does_not_read() ->
    {S, C} = pair([], [{active, false}]),
    Chunk = binary:copy(<<"b">>, 64 * 1024),
    Total = 512,                                   % 32 MiB, far more than the buffers hold
    Count = counters:new(1, []),
    Self = self(),
    Sender = spawn_link(fun() ->
                                [begin ok = tlsport:send(S, Chunk), counters:add(Count, 1, 1) end
                                 || _ <- lists:seq(1, Total)],
                                Self ! {sent, self(), ok}
                        end),
    Blocked = stalled(Count, 10000),
    ?assert(Blocked < Total),
    ?assertMatch({status, waiting}, process_info(Sender, status)),
    %% Not paused: the control channel still serves commands of both sockets.
    ?assertMatch({ok, {{127, 0, 0, 1}, _}}, tlsport:sockname(S)),
    ?assertMatch({ok, {{127, 0, 0, 1}, _}}, tlsport:sockname(C)),
    %% The peer reads: the sender goes on and finishes.
    ?assertEqual(Total * byte_size(Chunk), recv_bytes(C, Total * byte_size(Chunk), 0)),
    ?assertEqual(ok, sent(Sender)),
    ?assertEqual(Total, counters:get(Count, 1)),
    tlsport:close(C),
    tlsport:close(S).

%% The counter once it has stopped moving for half a second.
stalled(Count, Left) when Left > 0 ->
    N0 = counters:get(Count, 1),
    timer:sleep(500),
    case counters:get(Count, 1) of
        N0 -> N0;
        _ -> stalled(Count, Left - 500)
    end.

recv_bytes(_C, Total, Total) -> Total;
recv_bytes(C, Total, Got) ->
    {ok, D} = tlsport:recv(C, 0, 5000),
    recv_bytes(C, Total, Got + byte_size(D)).

%% A sender blocked on a busy socket hears {error, closed} when the socket
%% closes.
blocked_send_fails_when_socket_closes() ->
    {S, C} = pair([], [{active, false}]),
    Chunk = binary:copy(<<"c">>, 64 * 1024),
    Count = counters:new(1, []),
    Self = self(),
    Sender = spawn_link(fun() ->
                                R = send_until_error(S, Chunk, Count),
                                Self ! {sent, self(), R}
                        end),
    _ = stalled(Count, 10000),
    ?assertMatch({status, waiting}, process_info(Sender, status)),
    ok = tlsport:close(C),
    ?assertEqual({error, closed}, sent(Sender)),
    tlsport:close(S).

send_until_error(S, Chunk, Count) ->
    case tlsport:send(S, Chunk) of
        ok -> counters:add(Count, 1, 1), send_until_error(S, Chunk, Count);
        Error -> Error
    end.

%%% ---------------------------------------------------------------- initial active mode

%% A listener's active mode is the accepted sockets' from the start.
initial_active_modes_on_accept() ->
    lists:foreach(
      fun({Active, Check}) ->
              {S, C} = pair([{packet, 2}, {active, Active}], [{packet, 2}]),
              ?assertEqual({ok, [{active, Active}]}, tlsport:getopts(S, [active])),
              [ok = tlsport:send(C, <<I>>) || I <- lists:seq(1, 3)],
              Check(S),
              tlsport:close(C),
              tlsport:close(S)
      end,
      [{false, fun(S) ->
                       nothing_from(S, 200),
                       ?assertEqual([{ok, <<I>>} || I <- lists:seq(1, 3)],
                                    [tlsport:recv(S, 0, 2000) || _ <- lists:seq(1, 3)])
               end},
       {once, fun(S) ->
                      ?assertEqual(<<1>>, data(S)),
                      nothing_from(S, 200),
                      ?assertEqual({ok, [{active, false}]}, tlsport:getopts(S, [active]))
              end},
       {2, fun(S) ->
                   ?assertEqual([<<1>>, <<2>>], [data(S), data(S)]),
                   ?assertEqual(ok, receive {tlsport_passive, S} -> ok after 5000 -> timeout end),
                   nothing_from(S, 200),
                   ?assertEqual({ok, <<3>>}, tlsport:recv(S, 0, 2000))
           end}]).

%% A socket connected passive: what the peer sends at once (here an OTP
%% ssl server) becomes no message, and recv has it.
initial_passive_connect() ->
    {ok, LS} = ssl:listen(0, [{certfile, cert("server.pem")}, {keyfile, cert("server.key")},
                              {reuseaddr, true}, binary, {active, false}]),
    {ok, {_, Port}} = ssl:sockname(LS),
    Self = self(),
    Hello = <<"first words">>,
    spawn_link(fun() ->
                       {ok, T} = ssl:transport_accept(LS, 5000),
                       {ok, T2} = ssl:handshake(T, 5000),
                       ok = ssl:send(T2, Hello),
                       Self ! {sent, self(), ok},
                       receive stop -> ssl:close(T2) after 10000 -> ok end
               end),
    {ok, C} = tlsport:connect("localhost", Port, [{active, false} | client_opts()], 5000),
    ?assertEqual({ok, [{active, false}]}, tlsport:getopts(C, [active])),
    receive {sent, _, ok} -> ok after 5000 -> error(not_sent) end,
    nothing_from(C, 300),
    ?assertEqual({ok, Hello}, tlsport:recv(C, 0, 2000)),
    tlsport:close(C),
    ssl:close(LS).
