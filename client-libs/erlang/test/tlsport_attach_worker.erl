%% A worker node for tlsport_attach_tests, run as its own OS process:
%%
%%   erl -noshell -pa EBIN -pa TESTDIR -run tlsport_attach_worker main \
%%       ROLE SOCKET NAME GRACE_MS CERTDIR [PAUSE_AT]
%%
%% It attaches to the daemon at SOCKET under NAME with a grace period and
%% plays ROLE:
%%   stream   - listens (TLS, line mode, passive), accepts one connection
%%              and reads numbered lines with {active, once};
%%   resume   - takes the socket back (tlsport:reclaimed/0) and reads on;
%%   listener - listens with an accept outstanding, and waits;
%%   relisten - takes the listener back, accepts on it, echoes one line.
%% A reader logs each number it has handled. With PAUSE_AT, after handling
%% that number it waits for a line on stdin before it reads again (the
%% test kills it there). Each step is a line on stdout starting "@@ ";
%% the node stops when its stdin closes, so a test that dies leaves no
%% worker behind.
-module(tlsport_attach_worker).

-export([main/1]).

-include("tlsport.hrl").

main([Role, Sock, Name, Grace, CertDir | Rest]) ->
    Main = self(),
    spawn_link(fun() -> stdin(Main) end),
    PauseAt = case Rest of
                  [P] -> list_to_integer(P);
                  [] -> 0
              end,
    try
        run(Role, Sock, Name, list_to_integer(Grace), CertDir, PauseAt)
    catch Class:Reason:Stack ->
        say("crashed ~p:~p ~p", [Class, Reason, Stack]),
        timer:sleep(100),
        erlang:halt(3)
    end.

run(Role, Sock, Name, Grace, CertDir, PauseAt) ->
    logger:set_primary_config(level, warning),
    ok = application:load(tlsport),
    ok = application:set_env(tlsport, attach, Sock),
    ok = application:set_env(tlsport, name, list_to_binary(Name)),
    ok = application:set_env(tlsport, grace_ms, Grace),
    ok = tlsport:start(),
    #{client := Client} = tlsport:daemon_info(),
    say("attached ~p", [Client]),
    Opts = [{certfile, filename:join(CertDir, "server.pem")},
            {keyfile, filename:join(CertDir, "server.key")},
            {ip, {127, 0, 0, 1}}, {packet, line}, {active, false}],
    case Role of
        "stream" ->
            {ok, L} = tlsport:listen(0, Opts),
            say("listening ~p", [L#tlsport_listen.port]),
            {ok, S} = tlsport:accept(L, 30000),
            say("accepted"),
            read(S, PauseAt);
        "resume" ->
            {ok, Back} = tlsport:reclaimed(),
            say("reclaimed ~s", [kinds(Back)]),
            [S] = [X || X <- Back, is_record(X, tlsport_socket)],
            %% The socket is in whatever active mode the dead node left
            %% (here a once, maybe armed). Passive first: what had come is
            %% then in the mailbox, and the next read is this node's own.
            ok = tlsport:setopts(S, [{active, false}]),
            held(S, PauseAt),
            read(S, PauseAt);
        "listener" ->
            {ok, L} = tlsport:listen(0, Opts),
            Self = self(),
            spawn(fun() -> Self ! accepting, Self ! {accepted, tlsport:accept(L)} end),
            receive accepting -> ok end,
            timer:sleep(200),               % the accept is on its way to the daemon
            say("listening ~p", [L#tlsport_listen.port]),
            receive {accepted, Result} -> say("accept returned ~p", [Result]) end,
            wait();
        "relisten" ->
            {ok, Back} = tlsport:reclaimed(),
            say("reclaimed ~s", [kinds(Back)]),
            [L] = [X || X <- Back, is_record(X, tlsport_listen)],
            say("port ~p", [L#tlsport_listen.port]),
            {ok, S} = tlsport:accept(L, 30000),
            ok = tlsport:setopts(S, [{active, once}]),
            receive
                {tlsport, S, Line} ->
                    ok = tlsport:send(S, ["echo:", Line]),
                    say("echoed ~s", [string:trim(Line)])
            after 30000 ->
                say("nothing received")
            end,
            wait()
    end.

%% Reads numbered lines one at a time, logging each one handled.
read(S, PauseAt) ->
    ok = tlsport:setopts(S, [{active, once}]),
    say("armed"),
    receive
        {tlsport, S, Line} ->
            handle(Line, PauseAt),
            read(S, PauseAt);
        {tlsport_error, S, Why} ->
            say("error ~p", [Why]),
            wait();
        {tlsport_closed, S} ->
            say("closed"),
            wait()
    end.

held(S, PauseAt) ->
    receive
        {tlsport, S, Line} ->
            handle(Line, PauseAt),
            held(S, PauseAt)
    after 0 ->
        ok
    end.

handle(Line, PauseAt) ->
    N = binary_to_integer(string:trim(Line)),
    say("handled ~p", [N]),
    N =:= PauseAt andalso pause().

pause() ->
    say("paused"),
    receive {stdin, _} -> ok end.

wait() ->
    receive {stdin, _} -> wait() end.

kinds(Handles) ->
    lists:join(" ", [atom_to_list(element(1, H)) || H <- Handles]).

stdin(Main) ->
    case io:get_line("") of
        eof -> erlang:halt(0);
        {error, _} -> erlang:halt(0);
        Line -> Main ! {stdin, Line}, stdin(Main)
    end.

say(Text) -> say(Text, []).

say(Format, Args) ->
    io:put_chars(["@@ ", io_lib:format(Format, Args), "\n"]).
