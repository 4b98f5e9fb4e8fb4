%% TLS on live connections and what OTP's ssl calls its options, against
%% real peers: STARTTLS both ways (openssl s_client -starttls smtp, OTP's
%% gen_tcp + ssl:handshake/3), stoptls, connection_information/1 and
%% peercert/1, password and verify callbacks, SNI and ALPN with OTP's ssl,
%% session reuse, named contexts, inline keys, CRLs, key logs, DHE, OCSP
%% stapling and timeouts. The STARTTLS example of docs/erlang.md is
%% compiled from the guide and run here.
-module(tlsport_tls_tests).

-include_lib("eunit/include/eunit.hrl").
-include_lib("kernel/include/file.hrl").
-include("tlsport.hrl").

-define(T(F), {??F, {timeout, 60, fun() -> tlsport_test_lib:flush(), F() end}}).

tls_test_() ->
    {setup, fun tlsport_test_lib:start/0, fun(_) -> ok end,
     [?T(guide_example_server_with_openssl_s_client),
      ?T(guide_example_client_with_ssl_server),
      ?T(guide_example_both_ends),
      ?T(starttls_rules),
      ?T(starttls_failure_closes),
      ?T(starttls_refused_keeps_the_socket),
      ?T(stoptls_and_again),
      ?T(stoptls_with_ssl_downgrade),
      ?T(connection_information_fields),
      ?T(peercert_is_the_certificate_file),
      ?T(ciphers_and_inject_ca),
      ?T(password_funs),
      ?T(password_messages),
      ?T(password_file_and_wrong_password),
      ?T(seed_pass_flag),
      ?T(verify_fun_client),
      ?T(verify_fun_server),
      ?T(verify_messages),
      ?T(sni_hosts_with_ssl_client),
      ?T(alpn_with_ssl),
      ?T(session_reuse),
      ?T(ticket_keys_across_listeners),
      ?T(named_contexts),
      ?T(inline_der_certificates),
      ?T(crl_check),
      ?T(keylog),
      ?T(dhe),
      ?T(ocsp_stapling),
      ?T(timeouts)]}.

cert(F) -> tlsport_test_lib:cert(F).

server_opts() -> [{certfile, cert("server.pem")}, {keyfile, cert("server.key")}].
ca() -> [{cacertfile, cert("ca.pem")}].

%% A listener with these options, one accept (the socket handed to the
%% caller), and a connect: {ConnectResult, ServerSocket | undefined}.
connect_to(ListenOpts, ConnectOpts) ->
    connect_to(ListenOpts, "localhost", ConnectOpts).

connect_to(ListenOpts, Host, ConnectOpts) ->
    {ok, L} = tlsport:listen(0, ListenOpts),
    Result = connect_to_listener(L, Host, ConnectOpts),
    tlsport:close(L),
    Result.

connect_to_listener(L, Host, ConnectOpts) ->
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
                 _ -> exit(Acceptor, kill), undefined
             end,
    {Result, Server}.

close_all(Sockets) -> [tlsport:close(S) || S <- Sockets, S =/= undefined].

data(S) ->
    receive {tlsport, S, D} -> D after 5000 -> timeout end.

%% An OTP ssl server on a free port, running Fun(SslSocket) after the
%% handshake and reporting {ssl_server, Result}.
ssl_server(Opts, Fun) ->
    {ok, LS} = ssl:listen(0, [{reuseaddr, true}, binary, {active, false} | Opts]),
    {ok, {_, Port}} = ssl:sockname(LS),
    Self = self(),
    spawn_link(fun() ->
                       R = case ssl:transport_accept(LS, 5000) of
                               {ok, T} ->
                                   case ssl:handshake(T, 5000) of
                                       {ok, T2} -> {ok, Fun(T2)};
                                       E -> E
                                   end;
                               E -> E
                           end,
                       Self ! {ssl_server, R},
                       timer:sleep(200),
                       ssl:close(LS)
               end),
    Port.

ssl_result() ->
    receive {ssl_server, R} -> R after 10000 -> timeout end.

%%% ================================================================ the guide's example

%% The module of the guide's STARTTLS section, compiled and loaded.
guide_example() ->
    Text = read_guide(),
    [_, After] = binary:split(Text, <<"```erlang\n-module(smtp_starttls).">>),
    [Body | _] = binary:split(After, <<"```">>),
    Source = binary_to_list(<<"-module(smtp_starttls).", Body/binary>>),
    {ok, Tokens, _} = erl_scan:string(Source),
    Forms = [begin {ok, F} = erl_parse:parse_form(Ts), F end || Ts <- split_forms(Tokens, [])],
    {ok, Mod, Bin} = compile:forms(Forms, [return_errors]),
    {module, Mod} = code:load_binary(Mod, "docs/erlang.md", Bin),
    Mod.

split_forms([], []) -> [];
split_forms([{dot, _} = Dot | Rest], Acc) -> [lists:reverse([Dot | Acc]) | split_forms(Rest, [])];
split_forms([T | Rest], Acc) -> split_forms(Rest, [T | Acc]).

%% docs/erlang.md, found from the working directory (rebar3 runs in
%% client-libs/erlang) upwards.
read_guide() ->
    read_guide(filename:absname("."), 6).
read_guide(_Dir, 0) ->
    error(guide_not_found);
read_guide(Dir, N) ->
    case file:read_file(filename:join([Dir, "docs", "erlang.md"])) of
        {ok, Text} -> Text;
        {error, _} -> read_guide(filename:dirname(Dir), N - 1)
    end.

guide_example_server_with_openssl_s_client() ->
    Mod = guide_example(),
    {ok, L} = Mod:listen(0),
    Self = self(),
    spawn(fun() -> Self ! {served, Mod:serve(L, server_opts())} end),
    Client = tlsport_test_lib:openssl_port(
               ["s_client", "-connect", "127.0.0.1:" ++ integer_to_list(L#tlsport_listen.port),
                "-starttls", "smtp", "-CAfile", "ca.pem", "-verify_return_error",
                "-servername", "localhost", "-crlf", "-quiet"]),
    timer:sleep(300),
    true = port_command(Client, "MAIL FROM:<a@example>\n"),
    {ok, Out} = tlsport_test_lib:port_collect(
                  Client, fun(Acc) -> binary:match(Acc, <<"250 2.0.0 OK">>) =/= nomatch end, 10000),
    ?assertMatch({_, _}, binary:match(Out, <<"250 2.0.0 OK">>)),
    ?assertEqual({served, {<<"MAIL FROM:<a@example>\r\n">>,
                           #{protocol => 'tlsv1.3', sni_hostname => "localhost"}}},
                 receive {served, _} = M -> M after 10000 -> timeout end),
    catch port_close(Client),
    tlsport:close(L).

%% OTP's own STARTTLS server: gen_tcp, then ssl:handshake/3 on its socket.
guide_example_client_with_ssl_server() ->
    Mod = guide_example(),
    {ok, LS} = gen_tcp:listen(0, [binary, {packet, line}, {active, false}, {reuseaddr, true},
                                  {ip, {127, 0, 0, 1}}]),
    {ok, Port} = inet:port(LS),
    Self = self(),
    spawn_link(fun() ->
                       {ok, T} = gen_tcp:accept(LS, 5000),
                       ok = gen_tcp:send(T, "220 otp.example ESMTP\r\n"),
                       {ok, <<"EHLO ", _/binary>>} = gen_tcp:recv(T, 0, 5000),
                       ok = gen_tcp:send(T, "250-otp.example\r\n250-PIPELINING\r\n250 STARTTLS\r\n"),
                       {ok, <<"STARTTLS\r\n">>} = gen_tcp:recv(T, 0, 5000),
                       ok = gen_tcp:send(T, "220 Go ahead\r\n"),
                       {ok, S} = ssl:handshake(T, server_opts(), 5000),
                       {ok, Command} = ssl:recv(S, 0, 5000),
                       ok = ssl:send(S, "250 OK\r\n"),
                       Self ! {ssl_got, Command, ssl:connection_information(S, [sni_hostname])},
                       receive after 500 -> ok end,
                       ssl:close(S),
                       gen_tcp:close(LS)
               end),
    ?assertEqual({<<"250 OK\r\n">>, #{protocol => 'tlsv1.3'}},
                 Mod:send_mail("localhost", Port, ca(), "RCPT TO:<b@example>")),
    ?assertEqual({ssl_got, <<"RCPT TO:<b@example>\r\n">>, {ok, [{sni_hostname, "localhost"}]}},
                 receive {ssl_got, _, _} = M -> M after 5000 -> timeout end).

guide_example_both_ends() ->
    Mod = guide_example(),
    {ok, L} = Mod:listen(0),
    Self = self(),
    spawn(fun() -> Self ! {served, Mod:serve(L, server_opts())} end),
    ?assertEqual({<<"250 2.0.0 OK\r\n">>, #{protocol => 'tlsv1.3'}},
                 Mod:send_mail("localhost", L#tlsport_listen.port, ca(), "DATA")),
    ?assertMatch({served, {<<"DATA\r\n">>, #{protocol := 'tlsv1.3'}}},
                 receive {served, _} = M -> M after 5000 -> timeout end),
    tlsport:close(L).

%%% ================================================================ starttls / stoptls

%% A plain pair: {Client, Server}, both passive, line framing.
plain_pair() ->
    {{ok, C}, S} = connect_to([{tls, false}, {packet, line}, {active, false}],
                              [{tls, false}, {packet, line}, {active, false}]),
    {C, S}.

%% Both ends upgrade at once (the server in another process).
upgrade(C, S, ServerOpts, ClientOpts) ->
    Self = self(),
    spawn(fun() -> Self ! {server_starttls, tlsport:starttls(S, [{side, server} | ServerOpts], 5000)} end),
    R = tlsport:starttls(C, ClientOpts, 5000),
    {R, receive {server_starttls, SR} -> SR after 10000 -> timeout end}.

starttls_rules() ->
    {C, S} = plain_pair(),
    %% Active sockets could take the peer's TLS bytes for plaintext.
    ok = tlsport:setopts(C, [{active, true}]),
    ?assertEqual({error, einval}, tlsport:starttls(C, ca())),
    ok = tlsport:setopts(C, [{active, false}]),
    %% Options are checked first: socket options, tls false, the other
    %% side's options, a clash of side and role.
    [?assertEqual({error, {badarg, O}}, tlsport:starttls(C, [O]))
     || O <- [{packet, 2}, {active, once}, {tls, false}, {backlog, 3}, {bogus, 1},
              {sni_hosts, [{"a.example", server_opts()}]}]],
    ?assertEqual({error, {badarg, {server_name_indication, "x"}}},
                 tlsport:starttls(S, [{side, server}, {server_name_indication, "x"}])),
    ?assertEqual({error, {badarg, {role, server}}},
                 tlsport:starttls(S, [{side, client}, {role, server}])),
    %% Plaintext before the upgrade, then the upgrade, then TLS.
    ok = tlsport:send(C, "plain\n"),
    ?assertEqual({ok, <<"plain\n">>}, tlsport:recv(S, 0, 5000)),
    ?assertEqual({ok, ok}, upgrade(C, S, server_opts(), ca())),
    {ok, #{protocol := 'tlsv1.3'}} = tlsport:connection_information(C, [protocol]),
    ok = tlsport:send(S, "secret\n"),
    ?assertEqual({ok, <<"secret\n">>}, tlsport:recv(C, 0, 5000)),
    %% The socket kept its framing and owner, and can turn active.
    ok = tlsport:setopts(C, [{active, once}]),
    ok = tlsport:send(S, "one\ntwo\n"),
    ?assertEqual(<<"one\n">>, data(C)),
    %% A second starttls on a TLS socket: the daemon's bad_request.
    ?assertMatch({error, {bad_request, _}}, tlsport:starttls(S, [{side, server} | server_opts()])),
    close_all([C, S]).

%% A handshake that fails: an error, then the socket is closed.
starttls_failure_closes() ->
    {ok, LS} = gen_tcp:listen(0, [binary, {active, false}, {reuseaddr, true}, {ip, {127, 0, 0, 1}}]),
    {ok, Port} = inet:port(LS),
    {ok, C} = tlsport:connect("localhost", Port, [{tls, false}, {active, false}], 5000),
    {ok, T} = gen_tcp:accept(LS, 5000),
    spawn(fun() -> {ok, _Hello} = gen_tcp:recv(T, 0, 5000),
                   gen_tcp:send(T, <<"this is no TLS at all\r\n">>),
                   timer:sleep(500),
                   gen_tcp:close(T) end),
    ?assertMatch({error, {tls, _}}, tlsport:starttls(C, ca(), 5000)),
    ?assertEqual({error, closed}, tlsport:send(C, <<"x">>)),
    tlsport:close(C),
    gen_tcp:close(LS).

%% A starttls the daemon refuses before any handshake (settings it cannot
%% build, a password that never came) leaves the socket open and plain.
starttls_refused_keeps_the_socket() ->
    {C, S} = plain_pair(),
    ?assertMatch({error, {bad_tls_config, _}},
                 tlsport:starttls(S, [{side, server}, {certfile, cert("no-such.pem")},
                                      {keyfile, cert("server.key")}], 5000)),
    Silent = spawn(fun() -> receive _ -> timer:sleep(5000) end end),
    ?assertEqual({error, timeout},
                 tlsport:starttls(S, [{side, server}, {ask_password, Silent}, {callback_timeout, 300}
                                      | enc_server_opts()], 5000)),
    ok = tlsport:send(S, "still plain\n"),
    ?assertEqual({ok, <<"still plain\n">>}, tlsport:recv(C, 0, 5000)),
    ok = tlsport:send(C, "and back\n"),
    ?assertEqual({ok, <<"and back\n">>}, tlsport:recv(S, 0, 5000)),
    ?assertEqual({ok, ok}, upgrade(C, S, server_opts(), ca())),
    close_all([C, S]).

stoptls_and_again() ->
    {C, S} = plain_pair(),
    ?assertEqual({ok, ok}, upgrade(C, S, server_opts(), ca())),
    ok = tlsport:send(C, "over tls\n"),
    ?assertEqual({ok, <<"over tls\n">>}, tlsport:recv(S, 0, 5000)),
    %% Both ends stop TLS (each waits for the other's close_notify).
    Self = self(),
    spawn(fun() -> Self ! {server_stoptls, tlsport:stoptls(S, 5000)} end),
    ?assertEqual(ok, tlsport:stoptls(C, 5000)),
    ?assertEqual({server_stoptls, ok}, receive {server_stoptls, _} = M -> M after 5000 -> timeout end),
    {ok, #{protocol := tcp}} = tlsport:connection_information(C, [protocol]),
    ok = tlsport:send(C, "plain again\n"),
    ?assertEqual({ok, <<"plain again\n">>}, tlsport:recv(S, 0, 5000)),
    ok = tlsport:send(S, "back\n"),
    ?assertEqual({ok, <<"back\n">>}, tlsport:recv(C, 0, 5000)),
    %% And TLS once more, the other way round (the accepted end is the client).
    ?assertEqual({ok, ok}, upgrade(S, C, server_opts(), [{verify, verify_none}])),
    ok = tlsport:send(C, "tls again\n"),
    ?assertEqual({ok, <<"tls again\n">>}, tlsport:recv(S, 0, 5000)),
    close_all([C, S]).

%% OTP's ssl downgrades with ssl:close/2 and a new controller.
stoptls_with_ssl_downgrade() ->
    Self = self(),
    Port = ssl_server(server_opts() ++ [{packet, line}],
                      fun(T) ->
                              {ok, <<"stop\n">>} = ssl:recv(T, 0, 5000),
                              {ok, Tcp} = ssl:close(T, {Self, 5000}),
                              Tcp
                      end),
    {ok, C} = tlsport:connect("localhost", Port, [{packet, line}, {active, false} | ca()], 5000),
    ok = tlsport:send(C, "stop\n"),
    ?assertEqual(ok, tlsport:stoptls(C, 5000)),
    {ok, Tcp} = ssl_result(),
    ok = gen_tcp:send(Tcp, "plain from otp\n"),
    ?assertEqual({ok, <<"plain from otp\n">>}, tlsport:recv(C, 0, 5000)),
    ok = tlsport:send(C, "plain from tlsport\n"),
    ?assertEqual({ok, <<"plain from tlsport\n">>}, gen_tcp:recv(Tcp, 0, 5000)),
    gen_tcp:close(Tcp),
    tlsport:close(C).

%%% ================================================================ information

connection_information_fields() ->
    {{ok, C}, S} = connect_to(server_opts() ++ [{verify, verify_peer} | ca()],
                              [{certfile, cert("client.pem")}, {keyfile, cert("client.key")},
                               {server_name_indication, "localhost"} | ca()]),
    {ok, CI} = tlsport:connection_information(C),
    ?assertMatch(#{protocol := 'tlsv1.3', cipher := <<"TLS_", _/binary>>, bits := _,
                   alg_bits := _, cipher_description := _, session_resumption := false,
                   alpn := undefined, sni_hostname := "localhost",
                   verify_result := #{code := 0, text := <<"ok">>},
                   peer_certificate := #{subject := <<"CN=localhost">>,
                                         issuer := <<"CN=tlsport-test-CA">>, der := <<_, _/binary>>},
                   local_certificate := #{subject := <<"CN=tlsport-test-client">>},
                   peer_chain := [#{subject := <<"CN=localhost">>} | _],
                   peer := {{127, 0, 0, 1}, _}, sockname := {{127, 0, 0, 1}, _}}, CI),
    %% OTP's map of the suite, as ssl:connection_information/2 has it.
    ?assertMatch(#{selected_cipher_suite := #{cipher := _, mac := _, prf := _}}, CI),
    {ok, SI} = tlsport:connection_information(S),
    ?assertMatch(#{sni_hostname := "localhost",
                   peer_certificate := #{subject := <<"CN=tlsport-test-client">>}}, SI),
    ?assertEqual({ok, #{protocol => 'tlsv1.3', session_resumption => false}},
                 tlsport:connection_information(C, [protocol, session_resumption])),
    ?assertEqual({error, protocol_not_negotiated}, tlsport:negotiated_protocol(C)),
    close_all([C, S]).

peercert_is_the_certificate_file() ->
    {{ok, C}, S} = connect_to(server_opts(), ca()),
    [{'Certificate', ServerDer, not_encrypted}] = public_key:pem_decode(file_bin("server.pem")),
    ?assertEqual({ok, ServerDer}, tlsport:peercert(C)),
    %% As OTP's ssl says when the peer sent none.
    ?assertEqual({error, no_peercert}, tlsport:peercert(S)),
    close_all([C, S]).

file_bin(F) ->
    {ok, B} = file:read_file(cert(F)),
    B.

ciphers_and_inject_ca() ->
    SelfSigned = [{certfile, cert("self.pem")}, {keyfile, cert("self.key")}],
    {{ok, C}, S} = connect_to(SelfSigned, [{verify, verify_none}]),
    {ok, Ciphers} = tlsport:ciphers(C),
    {ok, #{cipher := Cipher}} = tlsport:connection_information(C, [cipher]),
    ?assert(lists:member(Cipher, Ciphers)),
    {ok, #{verify_result := #{code := Code}}} = tlsport:connection_information(C, [verify_result]),
    ?assertNotEqual(0, Code),
    %% Trusting the self-signed certificate afterwards: the chain passes.
    ?assertMatch({ok, #{code := 0}}, tlsport:inject_ca(C, {cacertfile, cert("self.pem")})),
    ?assertMatch({ok, #{verify_result := #{code := 0}}},
                 tlsport:connection_information(C, [verify_result])),
    %% As DER, and as a file name.
    [{'Certificate', Der, _}] = public_key:pem_decode(file_bin("self.pem")),
    ?assertMatch({ok, #{code := 0}}, tlsport:inject_ca(C, {cacerts, [Der]})),
    ?assertMatch({ok, #{code := 0}}, tlsport:inject_ca(C, cert("self.pem"))),
    ?assertMatch({error, {bad_tls_config, _}}, tlsport:inject_ca(C, cert("no-such-ca.pem"))),
    close_all([C, S]).

%%% ================================================================ passwords

enc_server_opts() -> [{certfile, cert("server.pem")}, {keyfile, cert("server_enc.key")}].

works(ListenOpts) ->
    {{ok, C}, S} = connect_to(ListenOpts, ca()),
    ok = tlsport:send(C, <<"pw">>),
    ?assertEqual(<<"pw">>, data(S)),
    close_all([C, S]).

password_funs() ->
    %% OTP's form: a fun of no arguments.
    works([{password, fun() -> "secret" end} | enc_server_opts()]),
    %% Or of one: what the password is for.
    Self = self(),
    works([{password, fun(Source) -> Self ! {asked_for, Source}, <<"secret">> end}
           | enc_server_opts()]),
    {asked_for, Source} = receive {asked_for, _} = M -> M after 1000 -> timeout end,
    ?assertNotEqual(nomatch, string:find(Source, "server_enc.key")),
    %% The old way still works; a starttls asks as well.
    works([{password, "secret"} | enc_server_opts()]),
    {C, S} = plain_pair(),
    ?assertEqual({ok, ok}, upgrade(C, S, [{password, fun() -> "secret" end} | enc_server_opts()],
                                   ca())),
    close_all([C, S]).

password_messages() ->
    Self = self(),
    Asker = spawn_link(fun() ->
                               receive {tlsport_password, Ref, Source} ->
                                       Self ! {source, Source},
                                       Self ! {answered, tlsport:answer_password(Ref, "secret")}
                               after 5000 -> ok
                               end
                       end),
    works([{ask_password, Asker} | enc_server_opts()]),
    ?assertMatch({source, _}, receive {source, _} = M -> M after 1000 -> timeout end),
    ?assertEqual({answered, ok}, receive {answered, _} = M2 -> M2 after 1000 -> timeout end),
    %% A question that is not open.
    ?assertMatch({error, {bad_request, _}}, tlsport:answer_password({tlsport_request, 999999}, "x")),
    %% Nobody answers: the daemon's callback timeout.
    Silent = spawn(fun() -> receive _ -> timer:sleep(5000) end end),
    ?assertEqual({error, timeout},
                 tlsport:listen(0, [{ask_password, Silent}, {callback_timeout, 300}
                                    | enc_server_opts()])).

password_file_and_wrong_password() ->
    works([{password_file, cert("password.txt")} | enc_server_opts()]),
    ?assertMatch({error, {bad_tls_config, _}},
                 tlsport:listen(0, [{password, fun() -> "wrong" end} | enc_server_opts()])),
    ?assertMatch({error, {bad_tls_config, _}}, tlsport:listen(0, enc_server_opts())),
    %% A fun that fails gives the daemon no password.
    ?assertMatch({error, {bad_tls_config, _}},
                 tlsport:listen(0, [{password, fun() -> error(no_idea) end} | enc_server_opts()])).

%% Seed 004's SSLFlags with -pass (relative names: the daemon runs in
%% the cert dir).
seed_pass_flag() ->
    {_, Port} = L = ssl_socket:listen('STREAM', 'AF_INET', 0, {packet, 2}),
    Self = self(),
    spawn(fun() ->
                  S0 = ssl_socket:accept(L, "-cert server.pem -key server_enc.key -pass pass:secret"),
                  ok = ssl_socket:controlling_process(S0, Self),
                  Self ! {seed_accepted, S0}
          end),
    C = ssl_socket:client('STREAM', 'AF_INET', {localhost, Port}, {packet, 2}, "-verify 2"),
    S = receive {seed_accepted, S0} -> S0 after 5000 -> error(no_accept) end,
    C ! {self(), {deliver, "with -pass"}},
    ?assertEqual("with -pass", receive {S, {fromsocket, B}} -> B after 5000 -> timeout end),
    ssl_socket:close(C),
    ssl_socket:close(S),
    %% file:PATH too.
    spawn(fun() ->
                  Self ! {seed_accepted,
                          catch ssl_socket:accept(L, "-cert server.pem -key server_enc.key "
                                                     "-pass file:password.txt")}
          end),
    C2 = ssl_socket:client('STREAM', 'AF_INET', {localhost, Port}, {packet, 2}, "-verify 2"),
    S2 = receive {seed_accepted, S1} -> S1 after 5000 -> error(no_accept) end,
    ?assert(is_pid(S2)),
    ssl_socket:close(C2),
    ssl_socket:close(S2),
    ssl_socket:close(L).

%%% ================================================================ verification

%% A verify_fun that reports its calls and accepts what Accept says.
reporting_fun(Accept) ->
    Self = self(),
    fun(OtpCert, Event, UserState) ->
            Self ! {verify_call, element(1, OtpCert), Event, UserState},
            case Accept(Event) of
                true -> {valid, UserState + 1};
                false -> {fail, Event}
            end
    end.

verify_calls() ->
    receive {verify_call, _, _, _} = M -> [M | verify_calls()] after 300 -> [] end.

verify_fun_client() ->
    SelfSigned = [{certfile, cert("self.pem")}, {keyfile, cert("self.key")}],
    %% OpenSSL refuses a self-signed server; the fun has the last word, as in OTP.
    ?assertMatch({{error, {tls, _}}, _}, connect_to(SelfSigned, [])),
    AcceptSelfSigned = fun({bad_cert, selfsigned_peer}) -> true;
                          (valid_peer) -> true;
                          (_) -> false
                       end,
    {{ok, C}, S} = connect_to(SelfSigned, [{verify_fun, {reporting_fun(AcceptSelfSigned), 0}}]),
    ?assertEqual([{verify_call, 'OTPCertificate', {bad_cert, selfsigned_peer}, 0},
                  {verify_call, 'OTPCertificate', valid_peer, 1}], verify_calls()),
    %% The connection keeps OpenSSL's verdict.
    ?assertMatch({ok, #{verify_result := #{code := 18}}},
                 tlsport:connection_information(C, [verify_result])),
    close_all([C, S]),
    %% A chain OpenSSL likes, judged by the fun: the CA's certificate is
    %% not sent, so the peer's is the only call.
    {{ok, C2}, S2} = connect_to(server_opts(), [{verify_fun, {reporting_fun(fun(_) -> true end), 0}}
                                                | ca()]),
    ?assertEqual([{verify_call, 'OTPCertificate', valid_peer, 0}], verify_calls()),
    close_all([C2, S2]),
    %% The fun says no: the connect fails.
    ?assertMatch({{error, {tls, _}}, _},
                 connect_to(server_opts(), [{verify_fun, {reporting_fun(fun(_) -> false end), 0}}
                                            | ca()])),
    %% OTP 25.2's fun of four arguments gets the DER as well.
    Self = self(),
    Fun4 = fun(_Otp, Der, Event, US) -> Self ! {der, Der, Event}, {valid, US} end,
    {{ok, C3}, S3} = connect_to(server_opts(), [{verify_fun, {Fun4, []}} | ca()]),
    [{'Certificate', ServerDer, _}] = public_key:pem_decode(file_bin("server.pem")),
    ?assertEqual({der, ServerDer, valid_peer}, receive {der, _, _} = M -> M after 1000 -> timeout end),
    close_all([C3, S3]).

%% A tlsport server judging OTP ssl clients' certificates.
verify_fun_server() ->
    Only = fun(CN) ->
                   fun(OtpCert, valid_peer, US) ->
                           case subject_cn(OtpCert) of
                               CN -> {valid, [CN | US]};
                               _ -> {fail, not_allowed}
                           end;
                      (_, _, US) -> {valid, US}
                   end
           end,
    {ok, L} = tlsport:listen(0, server_opts() ++ [{verify, verify_peer},
                                                  {verify_fun, {Only("tlsport-test-client"), []}}
                                                  | ca()]),
    Self = self(),
    Acceptor = spawn_link(fun() -> accept_loop(L, Self) end),
    Client = fun(Name) ->
                     ssl:connect("localhost", L#tlsport_listen.port,
                                 [{certfile, cert(Name ++ ".pem")}, {keyfile, cert(Name ++ ".key")},
                                  {verify, verify_peer}, {cacertfile, cert("ca.pem")},
                                  binary, {active, false}], 5000)
             end,
    {ok, T} = Client("client"),
    S = receive {accepted, S0} -> S0 after 5000 -> error(no_accept) end,
    ok = ssl:send(T, <<"judged">>),
    ?assertEqual(<<"judged">>, data(S)),
    ssl:close(T),
    tlsport:close(S),
    %% Another certificate of the same CA is turned away.
    case Client("revoked") of
        {ok, T2} -> ?assertMatch({error, _}, ssl:recv(T2, 0, 3000));
        {error, _} -> ok
    end,
    ?assertEqual(none, receive {accepted, _} -> accepted after 300 -> none end),
    unlink(Acceptor),
    exit(Acceptor, kill),
    tlsport:close(L).

subject_cn(OtpCert) ->
    {rdnSequence, RDNs} = element(7, element(2, OtpCert)),   % tbsCertificate's subject
    hd([V || [{'AttributeTypeAndValue', {2, 5, 4, 3}, V0}] <- RDNs,
             V <- [case V0 of {utf8String, B} -> binary_to_list(B); {printableString, P} -> P;
                       B when is_binary(B) -> binary_to_list(B); P -> P end]]).

accept_loop(L, Parent) ->
    case tlsport:accept(L) of
        {ok, S} ->
            ok = tlsport:controlling_process(S, Parent),
            Parent ! {accepted, S},
            accept_loop(L, Parent);
        _ -> ok
    end.

%% ask_verify: the questions as messages.
verify_messages() ->
    Self = self(),
    Judge = spawn_link(fun Loop() ->
                               receive
                                   {tlsport_verify, Ref, #{peer_chain := [Peer | _]} = Info} ->
                                       Self ! {judged, maps:get(verify_result, Info)},
                                       Accept = maps:get(subject, Peer) =:= <<"CN=localhost">>,
                                       ok = tlsport:answer_verify(Ref, Accept),
                                       Loop()
                               after 10000 -> ok
                               end
                       end),
    SelfSigned = [{certfile, cert("self.pem")}, {keyfile, cert("self.key")}],
    {{ok, C}, S} = connect_to(SelfSigned, [{ask_verify, Judge}]),
    ?assertMatch({judged, #{code := 18}}, receive {judged, _} = M -> M after 1000 -> timeout end),
    close_all([C, S]),
    %% Rejected.
    Other = [{certfile, cert("other.pem")}, {keyfile, cert("other.key")}],
    ?assertMatch({{error, {tls, _}}, _}, connect_to(Other, [{ask_verify, Judge} | ca()])),
    %% Nobody answers within the callback timeout: rejected.
    Silent = spawn(fun() -> receive _ -> timer:sleep(5000) end end),
    ?assertMatch({{error, _}, _},
                 connect_to(server_opts(), [{ask_verify, Silent}, {callback_timeout, 300} | ca()])),
    ?assertMatch({error, {badarg, {verify_fun, _}}},
                 tlsport:connect("localhost", 1, [{verify_fun, {fun(_, _, U) -> {valid, U} end, 0}},
                                                  {ask_verify, Judge}], 1000)),
    unlink(Judge),
    exit(Judge, kill).

%%% ================================================================ SNI, ALPN, sessions

sni_hosts_with_ssl_client() ->
    Other = [{certfile, cert("other.pem")}, {keyfile, cert("other.key")}],
    {ok, L} = tlsport:listen(0, [{sni_hosts, [{"other.example", Other}]} | server_opts()]),
    Self = self(),
    Acceptor = spawn_link(fun() -> accept_loop(L, Self) end),
    Connect = fun(Name) ->
                      {ok, T} = ssl:connect("localhost", L#tlsport_listen.port,
                                            [{server_name_indication, Name}, {verify, verify_peer},
                                             {cacertfile, cert("ca.pem")}, binary, {active, false}],
                                            5000),
                      S = receive {accepted, S0} -> S0 after 5000 -> error(no_accept) end,
                      {ok, Der} = ssl:peercert(T),
                      {ok, #{sni_hostname := Sni}} = tlsport:connection_information(S, [sni_hostname]),
                      ssl:close(T),
                      tlsport:close(S),
                      {Der, Sni}
              end,
    [{'Certificate', OtherDer, _}] = public_key:pem_decode(file_bin("other.pem")),
    [{'Certificate', ServerDer, _}] = public_key:pem_decode(file_bin("server.pem")),
    ?assertEqual({OtherDer, "other.example"}, Connect("other.example")),
    ?assertEqual({ServerDer, "localhost"}, Connect("localhost")),
    unlink(Acceptor),
    exit(Acceptor, kill),
    tlsport:close(L),
    %% Entries are checked before anything is sent.
    [?assertEqual({error, {badarg, {sni_hosts, V}}}, tlsport:listen(0, [{sni_hosts, V}]))
     || V <- [[{"a.example", [{verify, verify_peer}]}], [{"a.example", [{keyfile, "k"}]}],
              [{"", Other}], [other]]].

alpn_with_ssl() ->
    %% An OTP ssl client offering h2 and http/1.1 to a tlsport server.
    {ok, L} = tlsport:listen(0, [{alpn_preferred_protocols, [<<"h2">>, <<"http/1.1">>]}
                                 | server_opts()]),
    Self = self(),
    Acceptor = spawn_link(fun() -> accept_loop(L, Self) end),
    {ok, T} = ssl:connect("localhost", L#tlsport_listen.port,
                          [{alpn_advertised_protocols, [<<"h2">>, <<"http/1.1">>]},
                           {verify, verify_peer}, {cacertfile, cert("ca.pem")}], 5000),
    S = receive {accepted, S0} -> S0 after 5000 -> error(no_accept) end,
    ?assertEqual({ok, <<"h2">>}, ssl:negotiated_protocol(T)),
    ?assertEqual({ok, <<"h2">>}, tlsport:negotiated_protocol(S)),
    ssl:close(T),
    tlsport:close(S),
    unlink(Acceptor),
    exit(Acceptor, kill),
    tlsport:close(L),
    %% A tlsport client offering to an OTP ssl server that prefers http/1.1.
    Port = ssl_server([{alpn_preferred_protocols, [<<"http/1.1">>, <<"h2">>]} | server_opts()],
                      fun(T2) -> ssl:negotiated_protocol(T2) end),
    {ok, C} = tlsport:connect("localhost", Port, [{alpn_advertised_protocols, [<<"h2">>, "http/1.1"]}
                                                  | ca()], 5000),
    ?assertEqual({ok, <<"http/1.1">>}, tlsport:negotiated_protocol(C)),
    ?assertEqual({ok, {ok, <<"http/1.1">>}}, ssl_result()),
    tlsport:close(C),
    %% A client option to a listener, and the reverse.
    ?assertEqual({error, {badarg, {alpn_advertised_protocols, [<<"h2">>]}}},
                 tlsport:listen(0, [{alpn_advertised_protocols, [<<"h2">>]} | server_opts()])),
    ?assertEqual({error, {badarg, {alpn_preferred_protocols, [<<"h2">>]}}},
                 tlsport:connect("localhost", 1, [{alpn_preferred_protocols, [<<"h2">>]}], 1000)).

%% Connects, reads one message (a TLS 1.3 ticket comes after the
%% handshake), and tells whether the session was resumed.
resumed(L, Opts) ->
    {{ok, C}, S} = connect_to_listener(L, "localhost", Opts),
    ok = tlsport:send(S, <<"ticket">>),
    <<"ticket">> = data(C),
    {ok, #{session_resumption := R}} = tlsport:connection_information(C, [session_resumption]),
    {ok, #{session_resumption := R}} = tlsport:connection_information(S, [session_resumption]),
    close_all([C, S]),
    R.

session_reuse() ->
    {ok, L} = tlsport:listen(0, server_opts()),
    ?assertEqual(false, resumed(L, ca())),
    ?assertEqual(true, resumed(L, ca())),
    ?assertEqual(false, resumed(L, [{reuse_sessions, false} | ca()])),
    %% TLS 1.2 sessions too.
    ?assertEqual(false, resumed(L, [{versions, ['tlsv1.2']} | ca()])),
    ?assertEqual(true, resumed(L, [{versions, ['tlsv1.2']} | ca()])),
    tlsport:close(L),
    %% OTP's server resumes a tlsport client's session as well.
    {ok, LS} = ssl:listen(0, [{reuseaddr, true}, {session_tickets, stateless} | server_opts()]),
    {ok, {_, Port}} = ssl:sockname(LS),
    Server = spawn_link(fun SLoop() ->
                                {ok, T0} = ssl:transport_accept(LS),
                                {ok, T} = ssl:handshake(T0, 5000),
                                ok = ssl:send(T, <<"x">>),
                                spawn(fun() -> timer:sleep(1000), ssl:close(T) end),
                                SLoop()
                        end),
    Twice = [begin
                 {ok, C} = tlsport:connect("localhost", Port, ca(), 5000),
                 <<"x">> = data(C),
                 {ok, #{session_resumption := R}} =
                     tlsport:connection_information(C, [session_resumption]),
                 tlsport:close(C),
                 R
             end || _ <- [1, 2]],
    ?assertEqual([false, true], Twice),
    unlink(Server),
    exit(Server, kill),
    ssl:close(LS).

%% Listeners given the same ticket keys resume each other's sessions.
ticket_keys_across_listeners() ->
    Keys = [{ticket_keys, [cert("ticket1.key"), cert("ticket2.key")]}],
    {ok, L1} = tlsport:listen(0, Keys ++ server_opts()),
    Port = L1#tlsport_listen.port,
    ?assertEqual(false, resumed(L1, ca())),
    tlsport:close(L1),
    timer:sleep(100),
    %% A new listener on the same port, the same keys: resumed.
    {ok, L2} = tlsport:listen(Port, Keys ++ server_opts()),
    ?assertEqual(true, resumed(L2, ca())),
    tlsport:close(L2),
    timer:sleep(100),
    %% Without them (random keys of its own): a full handshake.
    {ok, L3} = tlsport:listen(Port, server_opts()),
    ?assertEqual(false, resumed(L3, ca())),
    tlsport:close(L3).

%%% ================================================================ contexts, keys, checks

named_contexts() ->
    ?assertEqual({ok, #{server => true, replaced => false}},
                 tlsport:tls_context("test-srv", [{alpn_preferred_protocols, [<<"h2">>]}
                                                  | server_opts()])),
    Self = self(),
    {ok, #{server := false}} =
        tlsport:tls_context(<<"test-cli">>,
                            [{alpn_advertised_protocols, [<<"h2">>]},
                             {verify_fun, {fun(_, E, US) -> Self ! {context_fun, E}, {valid, US} end, 0}}
                             | ca()]),
    {{ok, C}, S} = connect_to([{tls, "test-srv"}, {packet, 2}], [{tls, 'test-cli'}, {packet, 2}]),
    ?assertEqual({context_fun, valid_peer}, receive {context_fun, _} = M -> M after 1000 -> timeout end),
    ?assertEqual({ok, <<"h2">>}, tlsport:negotiated_protocol(C)),
    ok = tlsport:send(C, <<"named">>),
    ?assertEqual(<<"named">>, data(S)),
    close_all([C, S]),
    %% starttls with a name.
    {PC, PS} = plain_pair(),
    ?assertEqual({ok, ok}, upgrade(PC, PS, [{tls, "test-srv"}], [{tls, "test-cli"}])),
    close_all([PC, PS]),
    %% Replaced; a client-only context cannot serve; unknown names.
    ?assertMatch({ok, #{replaced := true}}, tlsport:tls_context("test-srv", server_opts())),
    ?assertMatch({error, {bad_tls_config, _}}, tlsport:listen(0, [{tls, "test-cli"}])),
    ?assertMatch({error, {bad_request, _}}, tlsport:listen(0, [{tls, "no-such-context"}])),
    %% A name is the whole of the settings.
    ?assertEqual({error, {badarg, {verify, 0}}},
                 tlsport:connect("localhost", 1, [{tls, "test-cli"}, {verify, 0}], 1000)),
    ?assertMatch({error, {bad_tls_config, _}},
                 tlsport:tls_context("broken", [{certfile, cert("no-such.pem")}])),
    ?assertEqual({error, {badarg, {packet, 2}}}, tlsport:tls_context("x", [{packet, 2}])).

%% OTP's cert, key, cacerts and certs_keys: DER (PEM text works too).
inline_der_certificates() ->
    [{'Certificate', CertDer, _}] = public_key:pem_decode(file_bin("server.pem")),
    [{KeyType, KeyDer, _}] = public_key:pem_decode(file_bin("server.key")),
    [{'Certificate', CaDer, _}] = public_key:pem_decode(file_bin("ca.pem")),
    {{ok, C}, S} = connect_to([{cert, CertDer}, {key, {KeyType, KeyDer}}], [{cacerts, [CaDer]}]),
    close_all([C, S]),
    {{ok, C2}, S2} = connect_to([{certs_keys, [#{cert => file_bin("server.pem"),
                                                   key => file_bin("server.key")}]}],
                                [{cacerts, [file_bin("ca.pem")]}]),
    close_all([C2, S2]),
    {{ok, C3}, S3} = connect_to([{certs_keys, [#{certfile => cert("server.pem"),
                                                   keyfile => cert("server_enc.key"),
                                                   password => fun() -> "secret" end}]}], ca()),
    close_all([C3, S3]),
    [?assertEqual({error, {badarg, O}}, tlsport:listen(0, [O]))
     || O <- [{key, {'NoSuchKey', KeyDer}}, {cert, 42}, {certs_keys, [#{}, #{}]},
              {certs_keys, [#{verify => 0}]}, {cacerts, []}]].

crl_check() ->
    Server = server_opts() ++ [{verify, verify_peer}, {crl_check, true}, {crlfile, cert("crl.pem")}
                               | ca()],
    Client = fun(Name) -> [{certfile, cert(Name ++ ".pem")}, {keyfile, cert(Name ++ ".key")},
                           {crl_check, true}, {crlfile, cert("crl.pem")} | ca()]
             end,
    {{ok, C}, S} = connect_to(Server, Client("client")),
    close_all([C, S]),
    %% A revoked client certificate: the accept never sees the connection.
    {ok, L} = tlsport:listen(0, Server),
    Self = self(),
    spawn(fun() -> Self ! {accept_result, tlsport:accept(L, 1500)} end),
    case tlsport:connect("localhost", L#tlsport_listen.port, Client("revoked"), 5000) of
        %% TLS 1.3: the client learns of its rejection after the handshake,
        %% from the server's alert. (S may have seen C's close before its
        %% own: only C2's messages count here.)
        {ok, C2} -> ?assertMatch({tlsport_error, C2, {tls, "sslv3 alert certificate revoked" ++ _}},
                                 receive {tlsport_error, C2, _} = M -> M;
                                         {tlsport_closed, C2} = M -> M
                                 after 5000 -> timeout end),
                    tlsport:close(C2);
        {error, _} -> ok
    end,
    ?assertEqual({accept_result, {error, timeout}},
                 receive {accept_result, _} = A -> A after 5000 -> none end),
    tlsport:close(L),
    ?assertEqual({error, {badarg, {crl_check, true}}},
                 tlsport:listen(0, [{crl_check, true} | server_opts()])),
    %% crl_check false leaves the file out.
    {{ok, C3}, S3} = connect_to(server_opts() ++ [{verify, verify_peer}, {crl_check, false},
                                                  {crlfile, cert("crl.pem")} | ca()],
                                Client("revoked")),
    close_all([C3, S3]).

keylog() ->
    Log = cert("keylog.txt"),
    _ = file:delete(Log),
    {{ok, C}, S} = connect_to(server_opts(), [{keep_secrets, true}, {keylog_file, Log} | ca()]),
    ok = tlsport:send(C, <<"logged">>),
    <<"logged">> = data(S),
    close_all([C, S]),
    {ok, Text} = file:read_file(Log),
    ?assertNotEqual(nomatch, binary:match(Text, <<"CLIENT_HANDSHAKE_TRAFFIC_SECRET">>)),
    {ok, #file_info{mode = Mode}} = file:read_file_info(Log),
    ?assertEqual(8#600, Mode band 8#777),
    ?assertEqual({error, {badarg, {keep_secrets, true}}},
                 tlsport:connect("localhost", 1, [{keep_secrets, true}], 1000)).

dhe() ->
    Rsa = [{certfile, cert("rsa.pem")}, {keyfile, cert("rsa.key")}, {versions, ['tlsv1.2']},
           {ciphers, "DHE-RSA-AES128-GCM-SHA256"}],
    Check = fun(DhOpt) ->
                    {{ok, C}, S} = connect_to([DhOpt | Rsa], [{versions, ['tlsv1.2']} | ca()]),
                    {ok, #{cipher := Cipher}} = tlsport:connection_information(C, [cipher]),
                    close_all([C, S]),
                    Cipher
            end,
    ?assertEqual(<<"DHE-RSA-AES128-GCM-SHA256">>, Check({dhfile, cert("dh.pem")})),
    ?assertEqual(<<"DHE-RSA-AES128-GCM-SHA256">>, Check({dh, file_bin("dh.der")})),
    %% OTP's client agrees on the suite.
    {ok, L} = tlsport:listen(0, [{dh, file_bin("dh.der")} | Rsa]),
    Self = self(),
    Acceptor = spawn_link(fun() -> accept_loop(L, Self) end),
    {ok, T} = ssl:connect("localhost", L#tlsport_listen.port,
                          [{versions, ['tlsv1.2']}, {verify, verify_peer}, {cacertfile, cert("ca.pem")},
                           {ciphers, ssl:filter_cipher_suites(ssl:cipher_suites(all, 'tlsv1.2'),
                                                              [{key_exchange, fun(dhe_rsa) -> true;
                                                                                 (_) -> false end}])}],
                          5000),
    ?assertMatch({ok, [{selected_cipher_suite, #{key_exchange := dhe_rsa}}]},
                 ssl:connection_information(T, [selected_cipher_suite])),
    S = receive {accepted, S0} -> S0 after 5000 -> error(no_accept) end,
    ssl:close(T),
    tlsport:close(S),
    unlink(Acceptor),
    exit(Acceptor, kill),
    tlsport:close(L),
    ?assertEqual({error, {badarg, {dh, <<"x">>}}},
                 tlsport:listen(0, [{dh, <<"x">>}, {dhfile, "f"} | server_opts()])).

ocsp_stapling() ->
    {{ok, C}, S} = connect_to([{ocsp_response_file, cert("ocsp.der")} | server_opts()],
                              [{ocsp_stapling, true} | ca()]),
    {ok, #{ocsp := Ocsp}} = tlsport:connection_information(C, [ocsp]),
    ?assertMatch(#{status := <<"successful">>, cert_status := <<"unknown">>}, Ocsp),
    close_all([C, S]),
    %% Not asked for: none.
    {{ok, C2}, S2} = connect_to([{ocsp_response_file, cert("ocsp.der")} | server_opts()], ca()),
    ?assertEqual({ok, #{ocsp => undefined}}, tlsport:connection_information(C2, [ocsp])),
    close_all([C2, S2]).

timeouts() ->
    %% No byte either way for idle_timeout ms: closed with reason timeout.
    {{ok, C}, S} = connect_to([{idle_timeout, 5000} | server_opts()],
                              [{idle_timeout, 300}, {close_timeout, 1000} | ca()]),
    ?assertEqual({tlsport_error, C, timeout}, receive {tlsport_error, C, _} = M -> M after 3000 -> none end),
    close_all([C, S]),
    %% A server that never answers the ClientHello.
    {ok, LS} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}, {reuseaddr, true}]),
    {ok, Port} = inet:port(LS),
    T0 = erlang:monotonic_time(millisecond),
    ?assertEqual({error, timeout},
                 tlsport:connect("localhost", Port, [{handshake_timeout, 300} | ca()], 5000)),
    ?assert(erlang:monotonic_time(millisecond) - T0 < 3000),
    gen_tcp:close(LS),
    %% And on starttls.
    {PC, PS} = plain_pair(),
    ?assertEqual({error, timeout}, tlsport:starttls(PC, [{handshake_timeout, 300} | ca()])),
    close_all([PC, PS]).
