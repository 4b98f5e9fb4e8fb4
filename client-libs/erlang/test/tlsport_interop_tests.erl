%% tlsport against other TLS stacks: OTP's own ssl in both directions
%% (TLS 1.3 and 1.2, mutual authentication) and the openssl CLI
%% (s_server, s_client) through ports.
-module(tlsport_interop_tests).

-include_lib("eunit/include/eunit.hrl").
-include("tlsport.hrl").

-define(T(F), {??F, {timeout, 30, fun() -> tlsport_test_lib:flush(), F() end}}).

interop_test_() ->
    {setup, fun tlsport_test_lib:start/0, fun(_) -> ok end,
     [?T(tlsport_client_to_ssl_server),
      ?T(seed_client_to_ssl_server),
      ?T(ssl_client_to_tlsport_server),
      ?T(ssl_client_to_seed_server),
      ?T(mutual_auth_with_ssl),
      ?T(seed_cipher_flag_with_ssl),
      ?T(tlsport_client_to_openssl_s_server),
      ?T(seed_client_to_openssl_s_server),
      ?T(openssl_s_client_to_tlsport_server),
      ?T(openssl_s_client_to_seed_server)]}.

cert(F) -> tlsport_test_lib:cert(F).

%% An OTP ssl echo server; returns its port.
ssl_echo_server(Opts) ->
    {ok, LS} = ssl:listen(0, [{certfile, cert("server.pem")}, {keyfile, cert("server.key")},
                              {reuseaddr, true}, binary, {active, true} | Opts]),
    {ok, {_, Port}} = ssl:sockname(LS),
    Self = self(),
    spawn_link(fun() ->
                       R = case ssl:transport_accept(LS, 5000) of
                               {ok, T} -> ssl:handshake(T, 5000);
                               E -> E
                           end,
                       Self ! {ssl_handshake, R},
                       case R of
                           {ok, T2} -> echo_ssl(T2);
                           _ -> ok
                       end,
                       ssl:close(LS)
               end),
    Port.

echo_ssl(T) ->
    receive
        {ssl, T, D} -> ssl:send(T, D), echo_ssl(T);
        {ssl_closed, T} -> ok;
        {ssl_error, T, _} -> ok
    after 10000 -> ssl:close(T)
    end.

handshake_result() ->
    receive {ssl_handshake, R} -> R after 5000 -> timeout end.

tlsport_client_to_ssl_server() ->
    lists:foreach(
      fun(V) ->
              Port = ssl_echo_server([{packet, 2}, {versions, [V]}]),
              {ok, C} = tlsport:connect("localhost", Port,
                                        [{packet, 2}, {cacertfile, cert("ca.pem")}], 5000),
              ?assertMatch({ok, _}, handshake_result()),
              ok = tlsport:send(C, <<"to ssl">>),
              ?assertEqual(<<"to ssl">>, receive {tlsport, C, D} -> D after 5000 -> timeout end),
              {ok, #{protocol := P}} = tlsport:connection_information(C),
              ?assertEqual(V, P),
              tlsport:close(C)
      end, ['tlsv1.3', 'tlsv1.2']).

seed_client_to_ssl_server() ->
    Port = ssl_echo_server([]),
    %% -verify 2 against the CA named by SSL_CERT_FILE (the daemon's environment).
    C = ssl_socket:client('STREAM', 'AF_INET', {localhost, Port}, raw, "-verify 2"),
    ?assertMatch({ok, _}, handshake_result()),
    C ! {self(), {deliver, "seed to ssl"}},
    ?assertEqual("seed to ssl", raw(C, 11)),
    ssl_socket:close(C).

raw(_C, 0) -> [];
raw(C, N) ->
    receive {C, {fromsocket, B}} -> B ++ raw(C, N - length(B))
    after 5000 -> error(timeout)
    end.

ssl_client_to_tlsport_server() ->
    lists:foreach(
      fun(V) ->
              {ok, L} = tlsport:listen(0, [{packet, 2}, {certfile, cert("server.pem")},
                                           {keyfile, cert("server.key")}]),
              Self = self(),
              spawn_link(fun() ->
                                 {ok, S} = tlsport:accept(L, 5000),
                                 receive {tlsport, S, D} -> tlsport:send(S, <<"echo:", D/binary>>) end,
                                 Self ! served,
                                 receive {tlsport_closed, S} -> ok after 5000 -> ok end
                         end),
              {ok, T} = ssl:connect("localhost", L#tlsport_listen.port,
                                    [{verify, verify_peer}, {cacertfile, cert("ca.pem")},
                                     {versions, [V]}, {packet, 2}, binary, {active, true}], 5000),
              ok = ssl:send(T, <<"from ssl">>),
              ?assertEqual(<<"echo:from ssl">>, receive {ssl, T, D} -> D after 5000 -> timeout end),
              ?assertEqual({ok, [{protocol, V}]}, ssl:connection_information(T, [protocol])),
              ssl:close(T),
              tlsport:close(L)
      end, ['tlsv1.3', 'tlsv1.2']).

ssl_client_to_seed_server() ->
    {_, Port} = L = ssl_socket:listen('STREAM', 'AF_INET', 0, {binary_packet, 4}),
    Self = self(),
    spawn_link(fun() ->
                       S = ssl_socket:accept(L, "-cert ssl_server.pem"),
                       receive {S, {fromsocket, B}} ->
                               S ! {self(), {deliver, [<<"seed got ">>, B]}}
                       end,
                       Self ! served,
                       receive {S, {socket_closed, _}} -> ok after 5000 -> ok end
               end),
    {ok, T} = connect_retry(Port, [{verify, verify_peer}, {cacertfile, cert("ca.pem")},
                                   {packet, 4}, binary, {active, true}], 40),
    ok = ssl:send(T, <<"hello">>),
    ?assertEqual(<<"seed got hello">>, receive {ssl, T, D} -> D after 5000 -> timeout end),
    ssl:close(T),
    ssl_socket:close(L).

%% A seed listener opens with its first accept (docs/erlang.md): retry.
connect_retry(Port, Opts, N) ->
    case ssl:connect("localhost", Port, Opts, 5000) of
        {ok, T} -> {ok, T};
        {error, _} when N > 0 -> timer:sleep(50), connect_retry(Port, Opts, N - 1);
        E -> E
    end.

mutual_auth_with_ssl() ->
    {ok, L} = tlsport:listen(0, [{certfile, cert("server.pem")}, {keyfile, cert("server.key")},
                                 {cacertfile, cert("ca.pem")}, {verify, 2}]),
    Self = self(),
    Acceptor = spawn_link(fun() -> accept_loop(L, Self) end),
    Base = [{verify, verify_peer}, {cacertfile, cert("ca.pem")}, binary, {active, true}],
    %% With a certificate the server trusts: accepted, and the server sees it.
    {ok, T} = ssl:connect("localhost", L#tlsport_listen.port,
                          [{certfile, cert("client.pem")}, {keyfile, cert("client.key")} | Base], 5000),
    S = receive {accepted, S0} -> S0 after 5000 -> error(no_accept) end,
    {ok, Info} = tlsport:connection_information(S),
    ?assertMatch(#{subject := <<"CN=tlsport-test-client">>}, maps:get(peer_certificate, Info)),
    ssl:close(T),
    %% Without one: refused (TLS 1.3 reports it after the client's Finished).
    R = case ssl:connect("localhost", L#tlsport_listen.port, Base, 5000) of
            {error, _} -> refused;
            {ok, T2} -> receive {ssl_error, T2, _} -> refused;
                                {ssl_closed, T2} -> refused
                        after 3000 -> accepted
                        end
        end,
    ?assertEqual(refused, R),
    ?assertEqual(none, receive {accepted, _} -> accepted after 300 -> none end),
    unlink(Acceptor),
    exit(Acceptor, kill),
    tlsport:close(L).

accept_loop(L, Parent) ->
    case tlsport:accept(L) of
        {ok, S} ->
            ok = tlsport:controlling_process(S, Parent),
            Parent ! {accepted, S},
            accept_loop(L, Parent);
        _ -> ok
    end.

%% -cipher (TLS 1.2 cipher list) reaches OpenSSL: the server sees the suite.
seed_cipher_flag_with_ssl() ->
    {ok, LS} = ssl:listen(0, [{certfile, cert("server.pem")}, {keyfile, cert("server.key")},
                              {versions, ['tlsv1.2']}, {reuseaddr, true}]),
    {ok, {_, Port}} = ssl:sockname(LS),
    Self = self(),
    spawn_link(fun() ->
                       {ok, T} = ssl:transport_accept(LS, 5000),
                       {ok, T2} = ssl:handshake(T, 5000),
                       Self ! {suite, ssl:connection_information(T2, [selected_cipher_suite])},
                       receive _ -> ok after 2000 -> ok end
               end),
    C = ssl_socket:client('STREAM', 'AF_INET', {localhost, Port}, raw,
                          "-cipher ECDHE-ECDSA-AES128-GCM-SHA256"),
    ?assertMatch({suite, {ok, [{selected_cipher_suite, #{cipher := aes_128_gcm}}]}},
                 receive {suite, _} = M -> M after 5000 -> timeout end),
    ssl_socket:close(C),
    ssl:close(LS).

%%% ---------------------------------------------------------------- openssl CLI

s_server(Extra) ->
    Port = tlsport_test_lib:free_port(),
    Srv = tlsport_test_lib:openssl_port(
            ["s_server", "-accept", integer_to_list(Port), "-cert", "server.pem",
             "-key", "server.key", "-naccept", "1", "-quiet" | Extra]),
    {Srv, Port}.

connect_until_up(Port, Opts, N) ->
    case tlsport:connect("localhost", Port, Opts, 5000) of
        {error, econnrefused} when N > 0 -> timer:sleep(50), connect_until_up(Port, Opts, N - 1);
        R -> R
    end.

tlsport_client_to_openssl_s_server() ->
    {Srv, Port} = s_server([]),
    {ok, C} = connect_until_up(Port, [{packet, line}, {cacertfile, cert("ca.pem")}], 100),
    ok = tlsport:send(C, <<"hello from tlsport\n">>),
    ?assertMatch({ok, _}, tlsport_test_lib:port_lines(
                            Srv, fun(B) -> binary:match(B, <<"hello from tlsport\n">>) =/= nomatch end)),
    true = port_command(Srv, <<"hello from openssl\n">>),
    ?assertEqual(<<"hello from openssl\n">>, receive {tlsport, C, D} -> D after 5000 -> timeout end),
    tlsport:close(C),
    catch port_close(Srv).

seed_client_to_openssl_s_server() ->
    {Srv, Port} = s_server(["-tls1_2"]),
    C = seed_until_up(Port, 100),
    C ! {self(), {deliver, "seed says hi\n"}},
    ?assertMatch({ok, _}, tlsport_test_lib:port_lines(
                            Srv, fun(B) -> binary:match(B, <<"seed says hi\n">>) =/= nomatch end)),
    true = port_command(Srv, <<"openssl answers\n">>),
    ?assertEqual("openssl answers\n", raw(C, 16)),
    ssl_socket:close(C),
    catch port_close(Srv).

seed_until_up(Port, N) ->
    try ssl_socket:client('STREAM', 'AF_INET', {localhost, Port}, raw, "-verify 2")
    catch exit:{client, econnrefused} when N > 0 -> timer:sleep(50), seed_until_up(Port, N - 1)
    end.

openssl_s_client_to_tlsport_server() ->
    {ok, L} = tlsport:listen(0, [{packet, line}, {certfile, cert("server.pem")},
                                 {keyfile, cert("server.key")}]),
    Self = self(),
    spawn_link(fun() ->
                       {ok, S} = tlsport:accept(L, 5000),
                       ok = tlsport:controlling_process(S, Self),
                       Self ! {accepted, S}
               end),
    Cl = tlsport_test_lib:openssl_port(
           ["s_client", "-connect", "127.0.0.1:" ++ integer_to_list(L#tlsport_listen.port),
            "-CAfile", "ca.pem", "-verify_return_error", "-verify_hostname", "localhost",
            "-quiet"]),
    S = receive {accepted, S0} -> S0 after 5000 -> error(no_accept) end,
    ok = tlsport:send(S, <<"greetings, s_client\n">>),
    ?assertMatch({ok, _}, tlsport_test_lib:port_lines(
                            Cl, fun(B) -> binary:match(B, <<"greetings, s_client\n">>) =/= nomatch end)),
    true = port_command(Cl, <<"line from s_client\n">>),
    ?assertEqual(<<"line from s_client\n">>, receive {tlsport, S, D} -> D after 5000 -> timeout end),
    tlsport:close(S),
    tlsport:close(L),
    catch port_close(Cl).

openssl_s_client_to_seed_server() ->
    {_, Port} = L = ssl_socket:listen('STREAM', 'AF_INET', 0, raw),
    Self = self(),
    spawn_link(fun() ->
                       S = ssl_socket:accept(L, "-cert ssl_server.pem"),
                       ok = ssl_socket:controlling_process(S, Self),
                       Self ! {accepted, S}
               end),
    timer:sleep(200),   % the seed listener opens with its first accept
    Cl = tlsport_test_lib:openssl_port(
           ["s_client", "-connect", "127.0.0.1:" ++ integer_to_list(Port),
            "-CAfile", "ca.pem", "-verify_return_error", "-quiet", "-tls1_3"]),
    S = receive {accepted, S0} -> S0 after 5000 -> error(no_accept) end,
    S ! {self(), {deliver, "seed server here\n"}},
    ?assertMatch({ok, _}, tlsport_test_lib:port_lines(
                            Cl, fun(B) -> binary:match(B, <<"seed server here\n">>) =/= nomatch end)),
    true = port_command(Cl, <<"bye\n">>),
    ?assertEqual("bye\n", raw(S, 4)),
    ssl_socket:close(S),
    ssl_socket:close(L),
    catch port_close(Cl).
