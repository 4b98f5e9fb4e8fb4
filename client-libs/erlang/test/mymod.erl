%% The code examples of seed 004 (the ssl_socket manual), as close to
%% verbatim as today's Erlang allows. Differences, all marked "seed:":
%%  - the manual's "....." continuation of connection/2 is an echo loop, so
%%    that a test can talk to it;
%%  - run/1's `when list(Sockets)' guard is `is_list/1' today, and its
%%    "etc." handles socket_closed and lets a test ask for the socket list;
%%  - handle_input/1, which the manual leaves to the reader, passes the
%%    bytes to a registered collector process;
%%  - the three client calls take the ports as arguments instead of
%%    1000/1002/1003 (privileged) and use hosts of this machine instead of
%%    gin.eua.ericsson.se, 134.138.99.53 and gin.
%% The loop/1 here is the manual's second version (with loop/2 and stop);
%% mymod_first holds the first one.
-module(mymod).
-export([top/1, loop/1, loop/2, connection/2, my_accept/2, run/1, clients/3]).

top(Port) ->
    Listen = ssl_socket:listen('STREAM', 'AF_INET', Port, {packet, 2}),
    loop(Listen).

loop(Listen) ->
    Pid = spawn(mymod, connection, [Listen, self()]),
    loop(Pid, Listen).

loop(Pid, Listen) ->
    receive
        {Pid, ok} ->
            loop(Listen);
        stop ->
            exit(Pid, abort),
            exit(normal)
    end.

connection(Listen, Father) ->
    Socket = ssl_socket:accept(Listen, "-cert ssl_server.pem"),
    Father ! {self(), ok},
    Socket ! {self(), {deliver, "Hello there"}},
    %% seed: "....."
    echo(Socket).

echo(Socket) ->
    receive
        {Socket, {fromsocket, Bytes}} ->
            Socket ! {self(), {deliver, Bytes}},
            echo(Socket);
        {Socket, {socket_closed, _}} ->
            ok
    end.

my_accept(ListenFd, User) ->
    S = ssl_socket:accept(ListenFd, "-cert ssl_server.pem"),
    ssl_socket:controlling_process(S, User),
    my_accept(ListenFd, User).

run(Sockets) when is_list(Sockets) ->              % seed: `when list(Sockets)'
    receive
        {From, {fromsocket, Bytes}} ->
            case lists:member(From, Sockets) of
                true ->
                    %% old socket
                    handle_input(Bytes),
                    run(Sockets);
                false ->
                    %% new connection
                    handle_input(Bytes),
                    run([From|Sockets])
            end;
        %% seed: ".......... etc."
        {From, {socket_closed, _}} ->
            run(lists:delete(From, Sockets));
        {sockets, Pid} ->
            Pid ! {sockets, Sockets},
            run(Sockets)
    end.

handle_input(Bytes) ->
    mymod_collector ! {input, Bytes}.

%% The manual's three client calls.
clients(Port1, Port2, Port3) ->
    Gin = tlsport_test_lib:short_hostname(),
    Socket1 = ssl_socket:client('STREAM', 'AF_INET', {'localhost', Port1}, raw,
                                "-cert client_cert.pem -cert client_key.pem"),
    Socket2 = ssl_socket:client('STREAM', 'AF_INET', {'127.0.0.1', Port2}, asn1,
                                "-cert ssl_client.pem"),
    Socket3 = ssl_socket:client('STREAM', 'AF_INET', {Gin, Port3}, {binary_packet, 4}, ""),
    {Socket1, Socket2, Socket3}.
