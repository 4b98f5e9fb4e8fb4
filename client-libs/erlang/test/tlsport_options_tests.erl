%% Options of the modern API (tlsport): unknown ones are refused with
%% {error, {badarg, Opt}} before anything reaches the daemon, known ones
%% all work, and the library writes no command field that
%% docs/protocol.md does not define (the daemon refuses unknown fields).
-module(tlsport_options_tests).

-include_lib("eunit/include/eunit.hrl").
-include("tlsport.hrl").

-define(T(F), {??F, {timeout, 30, fun() -> tlsport_test_lib:flush(), F() end}}).

%% The `tls' fields of protocol.md section 4.
-define(TLS_FIELDS, [certfile, keyfile, cert, key, password, password_file, ask_password,
                     cacertfile, cacertdir, cacert, crlfile, verify, depth,
                     ciphers, ciphersuites, min_version, max_version, server_name,
                     verify_hostname, verify_callback, callback_timeout_ms, alpn, sni,
                     session_reuse, ticket_keys, ocsp_response_file, ocsp_status_request,
                     dhparamfile, keylog, flags, logfile]).
%% The fields of one entry of `sni'.
-define(SNI_FIELDS, [names, certfile, keyfile, cert, key, password]).
-define(TIMEOUT_FIELDS, [handshake_timeout_ms, idle_timeout_ms, close_timeout_ms]).

%% Command fields of protocol.md section 2.1, besides op and ref.
fields(hello) -> [name];
fields(listen) -> [host, port, mode, backlog, tls, packet_size, active | ?TIMEOUT_FIELDS];
fields(accept) -> [id, active, tls | ?TIMEOUT_FIELDS];
fields(cancel) -> [target];
fields(connect) -> [host, port, mode, tls, timeout_ms, packet_size, active | ?TIMEOUT_FIELDS];
fields(starttls) -> [id, side, tls, timeout_ms | ?TIMEOUT_FIELDS];
fields(stoptls) -> [id, timeout_ms];
fields(tls_context) -> [name, tls];
fields(inject_ca) -> [id, cacertfile, cacert];
fields(ciphers) -> [id];
fields(answer) -> [request, password, accept];
fields(deliver) -> [id, data, text];
fields(close) -> [id];
fields(controlling_process) -> [id, to];
fields(setopts) -> [id, active, packet_size];
fields(recv) -> [id, timeout_ms];
fields(peername) -> [id];
fields(sockname) -> [id];
fields(resolve) -> [address];
fields(info) -> [id];
fields(stop) -> [];
fields(_) -> undefined.

%% Unknown options as a user might misspell or expect them.
unknown() -> [{cafile, "x"}, {verfy, 2}, {alpn, [<<"h2">>]}, {timeout, 5000},
              {reuseaddr, true}, inet6, "certfile", {"packet", 2}, {packet, 2, extra}].

%%% ================================================================ without the daemon

unknown_options_refused_test() ->
    [begin
         ?assertEqual({Opt, {error, {badarg, Opt}}}, {Opt, tlsport_options:listen_options([Opt])}),
         ?assertEqual({Opt, {error, {badarg, Opt}}}, {Opt, tlsport_options:connect_options([Opt])}),
         ?assertEqual({Opt, {error, {badarg, Opt}}},
                      {Opt, tlsport_options:connect_options([{packet, 2}, Opt, {verify, 0}])})
     end || Opt <- unknown()],
    %% In a map too, and after valid options.
    ?assertEqual({error, {badarg, {cafile, "x"}}},
                 tlsport_options:connect_options(#{cafile => "x", packet => 2})),
    ?assertEqual({error, {badarg, {verfy, 2}}},
                 tlsport_options:listen_options(#{certfile => "c.pem", verfy => 2})),
    %% Not a list or map, or an improper list.
    ?assertEqual({error, {badarg, certfile}}, tlsport_options:listen_options(certfile)),
    ?assertEqual({error, {badarg, tail}}, tlsport_options:connect_options([binary | tail])).

options_of_the_other_call_refused_test() ->
    %% listen's options mean nothing to connect, and the client's TLS
    %% options nothing to a listener.
    [?assertEqual({error, {badarg, O}}, tlsport_options:connect_options([O]))
     || O <- [{ip, {127, 0, 0, 1}}, {ifaddr, "127.0.0.1"}, {backlog, 5}, {side, client},
              {sni_hosts, [{"a.example", [{certfile, "a.pem"}]}]}, {dh, <<1>>}, {dhfile, "dh.pem"},
              {ticket_keys, ["t.key"]}, {alpn_preferred_protocols, [<<"h2">>]},
              {ocsp_response_file, "o.der"}]],
    [?assertEqual({error, {badarg, O}}, tlsport_options:listen_options([O]))
     || O <- [{server_name_indication, "example.com"}, {server_name_indication, disable},
              {verify_hostname, false}, {verify_hostname, "example.com"}, {role, server},
              {alpn_advertised_protocols, [<<"h2">>]}, {reuse_sessions, true},
              {ocsp_stapling, true}]],
    ?assertEqual({error, {badarg, {verify_hostname, false}}},
                 tlsport_options:tls_options(#{verify_hostname => false}, server)),
    %% starttls: the options of its side, no socket options.
    [?assertEqual({error, {badarg, O}}, tlsport_options:starttls_options([{side, server}, O]))
     || O <- [{server_name_indication, "x"}, {packet, 2}, {active, true}, {backlog, 1}]],
    [?assertEqual({error, {badarg, O}}, tlsport_options:starttls_options([O]))
     || O <- [{sni_hosts, [{"a.example", [{certfile, "a.pem"}]}]}, {mode, list}, list,
              {tls, false}, {side, both}]],
    ?assertMatch({ok, #{side := server}},
                 tlsport_options:starttls_options([{role, server}, {dhfile, "dh.pem"}])),
    ?assertMatch({ok, #{side := client}}, tlsport_options:starttls_options(#{reuse_sessions => false})),
    %% tls_context: no socket options, no tls.
    [?assertEqual({error, {badarg, O}}, tlsport_options:context_options([O]))
     || O <- [{packet, 2}, {tls, true}, {side, client}, {handshake_timeout, 5}, binary]].

bad_values_refused_test() ->
    Bad = [{mode, text}, {active, sometimes}, {active, 40000}, {packet_size, 0},
           {packet_size, "big"}, {tls, {maybe}}, {certfile, 42}, {keyfile, {a}},
           {verify, 3}, {verify, verify_always}, {depth, -1}, {ciphers, 42},
           {ciphers, ["AES", 42]}, {versions, []}, {versions, 'tlsv1.3'},
           {verify_hostname, ""}, {verify_hostname, 42}, {server_name_indication, 42},
           {log, 1.5}, {ssl_flags, 7}, {reuse_sessions, save}, {crl_check, peer},
           {crlfile, 3}, {alpn_advertised_protocols, []}, {alpn_advertised_protocols, [h2]},
           {alpn_advertised_protocols, [<<>>]}, {alpn_advertised_protocols, <<"h2">>},
           {verify_fun, fun(_, _) -> ok end}, {verify_fun, {fun(_, _) -> ok end, 0}},
           {password, fun(_, _) -> ok end}, {ask_password, "me"}, {ask_verify, self},
           {callback_timeout, 0}, {idle_timeout, 0}, {close_timeout, infinity},
           {handshake_timeout, -1}, {handshake_timeout, 3600001}, {close_timeout, 3600001},
           {idle_timeout, 86400001}, {cacerts, []}, {cacerts, [42]}, {keep_secrets, yes},
           {keylog_file, 1}, {ocsp_stapling, 1}, {tls, ""}, {tls, 42}, {cert, <<>>},
           {key, {'RSAPrivateKey', <<>>}}, {key, <<"not pem">>}, {password_file, 1},
           {certs_keys, []}, {certs_keys, [#{cert => 42}]}],
    [?assertEqual({O, {error, {badarg, O}}}, {O, tlsport_options:connect_options([O])}) || O <- Bad],
    [?assertEqual({O, {error, {badarg, O}}}, {O, tlsport_options:listen_options([O])})
     || O <- [{backlog, 0}, {handshake_timeout, infinity}, {ip, {1, 2, 3}}, {ifaddr, 42},
              {sni_hosts, []}, {ticket_keys, []}, {dh, "text"}, {dhfile, 1},
              {alpn_preferred_protocols, [1]}, {ocsp_response_file, 2}]],
    ?assertEqual({error, {badarg, {packet, 3}}}, tlsport_options:connect_options([{packet, 3}])),
    ?assertMatch({error, {unsupported_protocol, _}},
                 tlsport_options:connect_options([{versions, ['tlsv1.3', 'tlsv1']}])).

%% Every documented option, as the guide spells it.
listen_opts() ->
    [{packet, 2}, binary, list, {mode, binary}, {active, once}, {packet_size, 4096},
     {ip, {127, 0, 0, 1}}, {ifaddr, "127.0.0.1"}, {backlog, 16}, {handshake_timeout, 5000},
     {certfile, "s.pem"}, {keyfile, <<"s.key">>}, {password, "pw"}, {cacertfile, "ca.pem"},
     {cacertdir, "/etc/ssl/certs"}, {verify, verify_peer}, {depth, 3},
     {ciphers, ["ECDHE-ECDSA-AES128-GCM-SHA256", 'ECDHE-RSA-AES128-GCM-SHA256']},
     {ciphersuites, "TLS_AES_128_GCM_SHA256"}, {versions, ['tlsv1.3', 'tlsv1.2']},
     {ssl_flags, "-verify 1"}, {log, "tls.log"}, {tls, true},
     {idle_timeout, 10000}, {close_timeout, 2000}, {password_file, "pw.txt"},
     {cacerts, [<<1, 2, 3>>]}, {crl_check, true}, {crlfile, "crl.pem"}, {keep_secrets, true},
     {keylog_file, "keys.log"}, {verify_fun, {fun verify_fun/3, 0}}, {callback_timeout, 5000},
     {ask_password, self()}]
        ++ server_only_opts().

server_only_opts() ->
    [{sni_hosts, [{"a.example", [{certfile, "a.pem"}, {keyfile, "a.key"}]},
                  {<<"*.b.example">>, #{cert => <<1>>, key => {'PrivateKeyInfo', <<2>>},
                                        password => "pw"}}]},
     {alpn_preferred_protocols, [<<"h2">>, "http/1.1"]}, {ticket_keys, ["t1.key", <<"t2.key">>]},
     {ocsp_response_file, "ocsp.der"}, {dhfile, "dh.pem"}].

verify_fun(_, _, S) -> {valid, S}.

%% Options that cannot go with some of listen_opts() (certfile, dhfile,
%% verify_fun), each valid on its own.
alone_opts() ->
    [{cert, [<<1>>, <<2>>]}, {key, {'ECPrivateKey', <<3>>}},
     {certs_keys, [#{certfile => "c.pem", keyfile => "k.pem", password => fun() -> "pw" end}]},
     {dh, <<4, 5>>}, {ask_verify, self()}, {password, fun(_Source) -> "pw" end}].

connect_opts() ->
    [O || {K, _} = O <- listen_opts(), not lists:member(K, [ip, ifaddr, backlog]),
          not lists:keymember(K, 1, server_only_opts())]
        ++ [{packet, line}, {active, -3}, {server_name_indication, "example.com"},
            {verify_hostname, "www.example.com"}, {alpn_advertised_protocols, [<<"h2">>]},
            {reuse_sessions, false}, {ocsp_stapling, true}].

known_options_accepted_test() ->
    {ok, L} = tlsport_options:listen_options(listen_opts()),
    ?assertMatch(#{daemon_mode := <<"packet:2">>, format := binary, active := once,
                   backlog := 16, handshake_timeout := 5000}, L),
    ?assertEqual(#{handshake_timeout_ms => 5000, idle_timeout_ms => 10000, close_timeout_ms => 2000},
                 tlsport_options:timeout_fields(L)),
    {ok, LT} = tlsport_options:tls_options(L, server),
    ?assertEqual(#{certfile => <<"s.pem">>, keyfile => <<"s.key">>, password => <<"pw">>,
                   cacertfile => <<"ca.pem">>, cacertdir => <<"/etc/ssl/certs">>, verify => 2,
                   depth => 3,
                   ciphers => <<"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256">>,
                   ciphersuites => <<"TLS_AES_128_GCM_SHA256">>, min_version => <<"tlsv1.2">>,
                   max_version => <<"tlsv1.3">>, flags => <<"-verify 1">>, logfile => <<"tls.log">>,
                   password_file => <<"pw.txt">>,
                   cacert => <<"-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n">>,
                   crlfile => <<"crl.pem">>, keylog => <<"keys.log">>, verify_callback => true,
                   callback_timeout_ms => 5000, ask_password => true,
                   sni => [#{names => [<<"a.example">>], certfile => <<"a.pem">>,
                             keyfile => <<"a.key">>},
                           #{names => [<<"*.b.example">>],
                             cert => <<"-----BEGIN CERTIFICATE-----\nAQ==\n-----END CERTIFICATE-----\n">>,
                             key => <<"-----BEGIN PRIVATE KEY-----\nAg==\n-----END PRIVATE KEY-----\n">>,
                             password => <<"pw">>}],
                   alpn => [<<"h2">>, <<"http/1.1">>], ticket_keys => [<<"t1.key">>, <<"t2.key">>],
                   ocsp_response_file => <<"ocsp.der">>, dhparamfile => <<"dh.pem">>},
                 LT),
    ?assertMatch(#{password := {ask, _}, verify := {_, 0}, timeout := 5000},
                 tlsport_options:tls_callbacks(L)),
    [begin
         {ok, A} = tlsport_options:listen_options([O]),
         ?assertMatch({O, {ok, #{}}}, {O, tlsport_options:tls_options(A, server)})
     end || O <- alone_opts()],
    {ok, C} = tlsport_options:connect_options(maps:from_list([O || {_, _} = O <- connect_opts()])),
    ?assertMatch(#{daemon_mode := <<"line">>, format := binary, active := -3}, C),
    {ok, CT} = tlsport_options:tls_options(C, client),
    ?assertMatch(#{server_name := <<"example.com">>, verify_hostname := <<"www.example.com">>,
                   alpn := [<<"h2">>], session_reuse := false, ocsp_status_request := true}, CT),
    ?assertEqual([], maps:keys(CT) -- ?TLS_FIELDS),
    %% A named context.
    {ok, N} = tlsport_options:connect_options([{tls, "web"}, {packet, 2}]),
    ?assertEqual({ok, <<"web">>}, tlsport_options:tls_options(N, client)),
    ?assertEqual({context, <<"web">>}, tlsport_options:tls_callbacks(N)),
    %% An atom other than true and false names a context too (the daemon
    %% refuses a name nobody defined).
    {ok, NA} = tlsport_options:connect_options([{tls, maybe}]),
    ?assertEqual({ok, <<"maybe">>}, tlsport_options:tls_options(NA, client)),
    %% Plain TCP.
    {ok, P} = tlsport_options:connect_options([{tls, false}, {verify, 0}]),
    ?assertEqual({ok, false}, tlsport_options:tls_options(P, client)),
    %% The guide's names are the library's.
    ?assertEqual(lists:usort([O || {O, _} <- listen_opts() ++ alone_opts()]),
                 lists:usort(tlsport_options:option_names(listen))),
    ?assertEqual(lists:usort([O || {O, _} <- connect_opts() ++ alone_opts(),
                                   not lists:member(O, [dh])]),
                 lists:usort(tlsport_options:option_names(connect))).

host_name_options_on_the_wire_test() ->
    Tls = fun(Opts) ->
                  {ok, M} = tlsport_options:connect_options(Opts),
                  {ok, T} = tlsport_options:tls_options(M, client),
                  T
          end,
    ?assertEqual(#{verify_hostname => false}, Tls([{verify_hostname, false}])),
    ?assertEqual(#{}, Tls([{verify_hostname, true}])),
    ?assertEqual(#{verify_hostname => <<"a.example">>}, Tls([{verify_hostname, 'a.example'}])),
    %% disable turns SNI off; it says nothing about the host-name check.
    ?assertEqual(#{server_name => <<>>}, Tls([{server_name_indication, disable}])),
    ?assertEqual(#{server_name => <<>>, verify_hostname => false},
                 Tls([{server_name_indication, disable}, {verify_hostname, false}])),
    ?assertEqual(#{verify => 0}, Tls([{verify, verify_none}])).

setopts_options_test() ->
    ?assertEqual({ok, [{active, once}, {mode, list}, {mode, binary}, {packet_size, 10}]},
                 tlsport_options:setopts_options([{active, once}, list, binary, {packet_size, 10}])),
    ?assertEqual({ok, [{active, -1}]}, tlsport_options:setopts_options(#{active => -1})),
    [?assertEqual({error, {badarg, O}}, tlsport_options:setopts_options([{active, true}, O]))
     || O <- unknown()],
    %% Options that cannot change on a connected socket, and bad values: einval.
    [?assertEqual({error, einval}, tlsport_options:setopts_options([O]))
     || O <- [{packet, 4}, {certfile, "x"}, {backlog, 5}, {verify_hostname, false},
              {active, maybe}, {active, 40000}, {mode, text}, {packet_size, 0}]],
    ?assertEqual({error, einval}, tlsport_options:setopts_options(active)),
    ?assertEqual(ok, tlsport_options:getopts_names([active, mode, packet, certfile, binary])),
    ?assertEqual({error, {badarg, bogus}}, tlsport_options:getopts_names([active, bogus])),
    ?assertEqual({error, {badarg, "active"}}, tlsport_options:getopts_names(["active"])),
    ?assertEqual({error, einval}, tlsport_options:getopts_names(active)).

%%% ================================================================ with the daemon

options_test_() ->
    {setup, fun tlsport_test_lib:start/0, fun(_) -> ok end,
     [?T(unknown_options_send_nothing),
      ?T(known_options_work),
      ?T(ssl_flags_and_ifaddr_work),
      ?T(setopts_getopts_unknown),
      ?T(only_protocol_fields_on_the_wire),
      ?T(host_name_checks),
      %% These two need a daemon that takes "verify_hostname": false and
      %% keeps the host-name check when "server_name" is "".
      ?T(verify_hostname_false),
      ?T(sni_disable_keeps_host_check)]}.

cert(F) -> tlsport_test_lib:cert(F).

server_opts() -> [{certfile, cert("server.pem")}, {keyfile, cert("server.key")}].

%% A listener with these options and one accept; the connect's result.
connect_to(ListenOpts, Host, ConnectOpts) ->
    {ok, L} = tlsport:listen(0, ListenOpts),
    Self = self(),
    Acceptor = spawn(fun() ->
                             case tlsport:accept(L, 5000) of
                                 {ok, S} -> ok = tlsport:controlling_process(S, Self),
                                            Self ! {accepted, self(), S};
                                 Error -> Self ! {accepted, self(), Error}
                             end
                     end),
    Result = tlsport:connect(Host, L#tlsport_listen.port, ConnectOpts, 5000),
    Server = case Result of
                 {ok, _} -> receive {accepted, Acceptor, S} -> S after 5000 -> error(no_accept) end;
                 _ -> undefined
             end,
    tlsport:close(L),
    {Result, Server}.

%% The commands (maps) written to the daemon while F runs, in order.
with_wire(F) ->
    Self = self(),
    Tracer = spawn_link(fun() -> tracer([]) end),
    1 = erlang:trace_pattern({erlang, port_command, 2}, true, [global]),
    _ = erlang:trace(all, true, [call, {tracer, Tracer}]),
    Result = try F()
             after
                 _ = erlang:trace(all, false, [call]),
                 _ = erlang:trace_pattern({erlang, port_command, 2}, false, [global])
             end,
    Ref = erlang:trace_delivered(all),
    receive {trace_delivered, all, Ref} -> ok after 5000 -> error(trace_not_delivered) end,
    Tracer ! {frames, Self},
    Frames = receive {frames, Tracer, Fs} -> Fs after 5000 -> error(no_tracer) end,
    unlink(Tracer),
    {Result, Frames}.

tracer(Acc) ->
    receive
        {trace, _Pid, call, {erlang, port_command, [_Port, Data]}} ->
            tracer(case command(Data) of
                       none -> Acc;
                       C -> [C | Acc]
                   end);
        {frames, From} ->
            From ! {frames, self(), lists:reverse(Acc)};
        _ ->
            tracer(Acc)
    end.

%% A CONTROL frame to tlsportd as its map; DATA frames as `deliver'.
command(Data) ->
    try iolist_to_binary(Data) of
        <<0, Term/binary>> when binary_part(Term, 0, 1) =:= <<131>> ->
            case binary_to_term(Term) of
                #{op := _} = M -> M;
                _ -> none
            end;
        <<1, _Id:32, _/binary>> -> #{op => deliver};
        _ -> none
    catch _:_ -> none
    end.

%% Every unknown option, to listen and connect: an error, nothing written.
unknown_options_send_nothing() ->
    {ok, L} = tlsport:listen(0, server_opts()),
    Port = L#tlsport_listen.port,
    {Results, Frames} =
        with_wire(fun() ->
                          [{tlsport:listen(0, [Opt | server_opts()]),
                            tlsport:connect("localhost", Port, [{verify, 0}, Opt], 5000)}
                           || Opt <- unknown()]
                  end),
    ?assertEqual([{{error, {badarg, Opt}}, {error, {badarg, Opt}}} || Opt <- unknown()], Results),
    ?assertEqual([], Frames),
    ?assertEqual({badarg, lists:last(unknown())}, tlsport_lib:last_error()),
    ?assertEqual({error, {badarg, {backlog, 5}}},
                 tlsport:connect("localhost", Port, [{backlog, 5}, {verify, 0}], 5000)),
    ?assertEqual({error, {badarg, {server_name_indication, "localhost"}}},
                 tlsport:listen(0, [{server_name_indication, "localhost"} | server_opts()])),
    tlsport:close(L).

%% Listen and connect with (nearly) every documented option at once.
known_options_work() ->
    Log = cert("options-test.log"),
    ListenOpts = [{packet, 2}, {mode, binary}, {active, true}, {packet_size, 65536},
                  {ip, {127, 0, 0, 1}}, {backlog, 8}, {handshake_timeout, 5000},
                  {password, "not needed"}, {cacertfile, cert("ca.pem")},
                  {verify, 2}, {depth, 4},
                  {ciphers, ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384"]},
                  {ciphersuites, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384"},
                  {versions, ['tlsv1.2', 'tlsv1.3']}, {log, Log}, {tls, true}
                  | server_opts()],
    ConnectOpts = [{packet, 2}, list, {active, once}, {packet_size, 65536},
                   {certfile, cert("client.pem")}, {keyfile, cert("client.key")},
                   {cacertfile, cert("ca.pem")}, {cacertdir, tlsport_test_lib:certs()},
                   {verify, verify_peer}, {depth, 4},
                   {ciphersuites, ["TLS_AES_256_GCM_SHA384"]}, {versions, ['tlsv1.3']},
                   {server_name_indication, "localhost"}, {verify_hostname, "localhost"},
                   {tls, true}],
    {{ok, C}, S} = connect_to(ListenOpts, "localhost", ConnectOpts),
    ok = tlsport:send(C, "known"),
    ?assertEqual(<<"known">>, receive {tlsport, S, D} -> D after 5000 -> timeout end),
    ok = tlsport:send(S, <<"options">>),
    ?assertEqual("options", receive {tlsport, C, D2} -> D2 after 5000 -> timeout end),
    {ok, Info} = tlsport:connection_information(C),
    ?assertMatch(#{protocol := 'tlsv1.3', cipher := <<"TLS_AES_256_GCM_SHA384">>}, Info),
    ?assertMatch(#{subject := <<"CN=tlsport-test-client">>},
                 maps:get(peer_certificate, element(2, tlsport:connection_information(S)))),
    tlsport:close(C),
    tlsport:close(S),
    %% The same as a map, with verify_hostname true (the default check).
    {{ok, C2}, S2} = connect_to(maps:from_list([O || {_, _} = O <- ListenOpts]), "localhost",
                                #{cacertfile => cert("ca.pem"), certfile => cert("client.pem"),
                                  keyfile => cert("client.key"), packet => 2,
                                  verify_hostname => true}),
    tlsport:close(C2),
    tlsport:close(S2).

ssl_flags_and_ifaddr_work() ->
    %% Seed flags, relative to the daemon's directory (the cert dir).
    {{ok, C}, S} = connect_to([{ssl_flags, "-cert server_both.pem"}, {ifaddr, {127, 0, 0, 1}}],
                              "localhost",
                              [{ssl_flags, "-verify 2"}, {cacertfile, cert("ca.pem")}]),
    ok = tlsport:send(C, <<"flags">>),
    ?assertEqual(<<"flags">>, receive {tlsport, S, D} -> D after 5000 -> timeout end),
    tlsport:close(C),
    tlsport:close(S).

setopts_getopts_unknown() ->
    {{ok, C}, S} = connect_to([{packet, 2} | server_opts()], "localhost",
                              [{packet, 2}, {cacertfile, cert("ca.pem")}]),
    ok = tlsport:send(S, <<"first">>),
    ?assertEqual(<<"first">>, receive {tlsport, C, D0} -> D0 after 5000 -> timeout end),
    {Results, Frames} =
        with_wire(fun() ->
                          [tlsport:setopts(C, [{bogus, 1}]),
                           tlsport:setopts(C, [{active, false}, {alpn, [<<"h2">>]}]),
                           tlsport:setopts(C, #{active => false, verfy => 2}),
                           tlsport:setopts(C, [list, inet6]),
                           tlsport:setopts(C, [{active, false}, {certfile, "x"}]),
                           tlsport:getopts(C, [active, bogus])]
                  end),
    ?assertEqual([{error, {badarg, {bogus, 1}}}, {error, {badarg, {alpn, [<<"h2">>]}}},
                  {error, {badarg, {verfy, 2}}}, {error, {badarg, inet6}}, {error, einval},
                  {error, {badarg, bogus}}],
                 Results),
    ?assertEqual([], Frames),
    %% Nothing changed: still active, still binary.
    ?assertEqual({ok, [{active, true}, {mode, binary}]},
                 tlsport:getopts(C, [active, mode, certfile])),
    ok = tlsport:send(S, <<"still">>),
    ?assertEqual(<<"still">>, receive {tlsport, C, D} -> D after 5000 -> timeout end),
    tlsport:close(C),
    tlsport:close(S).

%% A session using every command the library sends: each has only the
%% fields protocol.md defines for it, `tls' only the fields of section 4.
only_protocol_fields_on_the_wire() ->
    {ok, Frames} = with_wire(fun wire_session/0),
    Ops = lists:usort([Op || #{op := Op} <- Frames]),
    ?assertEqual([], [accept, answer, cancel, ciphers, close, connect, hello, info, inject_ca,
                      listen, peername, recv, resolve, setopts, sockname, starttls, stoptls,
                      tls_context] -- Ops),
    [begin
         ?assertNotEqual({Op, undefined}, {Op, fields(Op)}),
         ?assertEqual({Op, []}, {Op, maps:keys(M) -- [op, ref | fields(Op)]}),
         case M of
             #{tls := Tls} when is_map(Tls) ->
                 ?assertEqual({Op, tls, []}, {Op, tls, maps:keys(Tls) -- ?TLS_FIELDS}),
                 [?assertEqual({Op, sni, []}, {Op, sni, maps:keys(E) -- ?SNI_FIELDS})
                  || E <- maps:get(sni, Tls, [])];
             #{tls := Name} when is_binary(Name) ->
                 ok;
             #{tls := Tls} ->
                 ?assertEqual(false, Tls);
             _ -> ok
         end
     end || #{op := Op} = M <- Frames].

wire_session() ->
    %% hello: a new daemon.
    tlsport_test_lib:restart(),
    {ok, L} = tlsport:listen(0, [{packet, 4}, {ip, "127.0.0.1"}, {backlog, 8},
                                 {handshake_timeout, 5000}, {packet_size, 1 bsl 20},
                                 {active, false}, {verify, 0}, {versions, ['tlsv1.3']},
                                 {log, cert("wire.log")} | server_opts()]),
    {error, timeout} = tlsport:accept(L, 50),                         % cancel
    Self = self(),
    spawn(fun() -> {ok, S0} = tlsport:accept(L, 5000),
                   ok = tlsport:controlling_process(S0, Self),
                   Self ! {wire_server, S0} end),
    {ok, C} = tlsport:connect("localhost", L#tlsport_listen.port,
                              [{packet, 4}, {cacertfile, cert("ca.pem")}, {packet_size, 1 bsl 20},
                               {verify_hostname, "localhost"}, {server_name_indication, disable},
                               {ciphers, "ECDHE-ECDSA-AES128-GCM-SHA256"}], 5000),
    S = receive {wire_server, S1} -> S1 after 5000 -> error(no_accept) end,
    {ok, _} = tlsport:sockname(L),
    {ok, _} = tlsport:sockname(C),
    {ok, _} = tlsport:connection_information(S),
    %% Big enough for a flow-control barrier (a peername).
    ok = tlsport:send(C, binary:copy(<<"w">>, 300 * 1024)),
    {ok, Big} = tlsport:recv(S, 0, 5000),                                    % recv
    300 * 1024 = byte_size(Big),
    ok = tlsport:setopts(S, [{active, 2}, {packet_size, 1 bsl 21}]),
    ok = tlsport:send(C, <<"x">>),
    receive {tlsport, S, <<"x">>} -> ok after 5000 -> error(no_data) end,
    ok = tlsport:close(C),
    ok = tlsport:close(S),
    ok = tlsport:close(L),
    %% Plain TCP and the seed API.
    {ok, PL} = tlsport:listen(0, [{tls, false}]),
    ok = tlsport:close(PL),
    {_, SeedPort} = SL = ssl_socket:listen('STREAM', 'AF_INET', 0, {packet, 2}),
    spawn(fun() -> Self ! {seed_server, ssl_socket:accept(SL, "-cert ssl_server.pem")} end),
    SC = ssl_socket:client('STREAM', 'AF_INET', {localhost, SeedPort}, {packet, 2}, "-verify 2"),
    SS = receive {seed_server, SS0} -> SS0 after 5000 -> error(no_seed_accept) end,
    SC ! {self(), {deliver, "seed"}},
    ssl_socket:close(SC),
    ssl_socket:close(SS),
    ssl_socket:close(SL),
    _ = ssl_socket:resolve(),
    _ = ssl_socket:resolve({127, 0, 0, 1}),
    new_commands_session().

%% The commands and options that came with TLS on live connections.
new_commands_session() ->
    Self = self(),
    %% tls_context, with a password asked for as a message (answer).
    Asker = spawn(fun() -> receive {tlsport_password, Ref, _} ->
                                   Self ! {answered, tlsport:answer_password(Ref, "secret")}
                           after 5000 -> ok end end),
    {ok, _} = tlsport:tls_context("wire", [{certfile, cert("server.pem")},
                                           {keyfile, cert("server_enc.key")},
                                           {ask_password, Asker}, {callback_timeout, 5000},
                                           {alpn_preferred_protocols, [<<"h2">>]},
                                           {sni_hosts, [{"other.example",
                                                         [{certfile, cert("other.pem")},
                                                          {keyfile, cert("other.key")}]}]},
                                           {ticket_keys, [cert("ticket1.key")]},
                                           {dh, file_bin("dh.der")},
                                           {ocsp_response_file, cert("ocsp.der")}]),
    {answered, ok} = receive {answered, _} = A -> A after 5000 -> error(no_answer) end,
    {ok, L} = tlsport:listen(0, [{tls, "wire"}, {idle_timeout, 60000}, {close_timeout, 1000}]),
    spawn(fun() -> {ok, S0} = tlsport:accept(L, 5000),
                   ok = tlsport:controlling_process(S0, Self),
                   Self ! {wire_server, S0} end),
    {ok, C} = tlsport:connect("localhost", L#tlsport_listen.port,
                              [{cacerts, [ca_der()]}, {alpn_advertised_protocols, [<<"h2">>]},
                               {reuse_sessions, false}, {ocsp_stapling, true},
                               {keep_secrets, true}, {keylog_file, cert("wire-keys.log")},
                               {crl_check, true}, {crlfile, cert("crl.pem")},
                               {verify_fun, {fun(_, _, U) -> {valid, U} end, 0}},
                               {handshake_timeout, 5000}, {idle_timeout, 60000},
                               {close_timeout, 1000}], 5000),
    S = receive {wire_server, S1} -> S1 after 5000 -> error(no_accept) end,
    {ok, _} = tlsport:ciphers(C),
    {ok, _} = tlsport:inject_ca(C, {cacertfile, cert("ca.pem")}),
    {ok, _} = tlsport:inject_ca(C, {cacerts, [ca_der()]}),
    ok = tlsport:close(C),
    ok = tlsport:close(S),
    ok = tlsport:close(L),
    %% starttls and stoptls on a plain pair.
    {ok, PL} = tlsport:listen(0, [{tls, false}, {active, false}]),
    spawn(fun() -> {ok, S2} = tlsport:accept(PL, 5000),
                   ok = tlsport:starttls(S2, [{side, server}, {certfile, cert("server.pem")},
                                              {keyfile, cert("server.key")}, {idle_timeout, 60000}],
                                         5000),
                   Self ! {stopped, tlsport:stoptls(S2, 5000)},
                   tlsport:close(S2) end),
    {ok, PC} = tlsport:connect("localhost", PL#tlsport_listen.port, [{tls, false}, {active, false}],
                               5000),
    ok = tlsport:starttls(PC, [{cacertfile, cert("ca.pem")}, {handshake_timeout, 5000},
                               {close_timeout, 1000}], 5000),
    ok = tlsport:stoptls(PC, 5000),
    {stopped, ok} = receive {stopped, _} = St -> St after 5000 -> error(no_stoptls) end,
    ok = tlsport:close(PC),
    ok = tlsport:close(PL).

file_bin(F) ->
    {ok, B} = file:read_file(cert(F)),
    B.

ca_der() ->
    [{'Certificate', Der, _}] = public_key:pem_decode(file_bin("ca.pem")),
    Der.

%% Host-name checks a daemon of either generation does the same way.
host_name_checks() ->
    Other = [{certfile, cert("other.pem")}, {keyfile, cert("other.key")}],
    CA = [{cacertfile, cert("ca.pem")}],
    %% A certificate for other.example, reached as localhost: refused...
    ?assertMatch({{error, {tls, _}}, _}, connect_to(Other, "localhost", CA)),
    %% ...unless the name checked is other.example (verify_hostname, or the
    %% SNI name it defaults to), or nothing is verified.
    [begin
         {{ok, C}, S} = connect_to(Other, "localhost", Opts ++ CA),
         tlsport:close(C),
         tlsport:close(S)
     end || Opts <- [[{verify_hostname, "other.example"}],
                     [{server_name_indication, "other.example"}],
                     [{verify, verify_none}]]],
    %% Without SNI a matching certificate still connects.
    {{ok, C2}, S2} = connect_to(server_opts(), "localhost",
                                [{server_name_indication, disable} | CA]),
    tlsport:close(C2),
    tlsport:close(S2).

%% Needs the new daemon: {verify_hostname, false} turns the check off.
verify_hostname_false() ->
    Other = [{certfile, cert("other.pem")}, {keyfile, cert("other.key")}],
    CA = [{cacertfile, cert("ca.pem")}],
    [begin
         {Result, S} = connect_to(Other, "localhost", Opts ++ CA),
         ?assertMatch({Opts, {ok, _}}, {Opts, Result}),
         tlsport:close(element(2, Result)),
         tlsport:close(S)
     end || Opts <- [[{verify_hostname, false}],
                     [{server_name_indication, disable}, {verify_hostname, false}]]],
    %% The chain is still checked.
    ?assertMatch({{error, {tls, _}}, _},
                 connect_to([{certfile, cert("self.pem")}, {keyfile, cert("self.key")}],
                            "localhost", [{verify_hostname, false} | CA])).

%% Needs the new daemon: disabling SNI does not disable the host check.
sni_disable_keeps_host_check() ->
    Other = [{certfile, cert("other.pem")}, {keyfile, cert("other.key")}],
    ?assertMatch({{error, {tls, _}}, _},
                 connect_to(Other, "localhost",
                            [{server_name_indication, disable}, {cacertfile, cert("ca.pem")}])).
