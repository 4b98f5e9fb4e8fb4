%% Seed 004's first version of the accept loop (before loop/2 and stop),
%% verbatim but for the module name and the "....." of connection/2.
-module(mymod_first).
-export([top/1, loop/1, connection/2]).

top(Port) ->
    Listen = ssl_socket:listen('STREAM', 'AF_INET', Port, {packet, 2}),
    loop(Listen).

loop(Listen) ->
    Pid = spawn(mymod_first, connection, [Listen, self()]),
    receive
        {Pid, ok} ->
            loop(Listen)
    end.

connection(Listen, Father) ->
    Socket = ssl_socket:accept(Listen, "-cert ssl_server.pem"),
    Father ! {self(), ok},
    Socket ! {self(), {deliver, "Hello there"}},
    %% seed: "....."
    receive
        {Socket, {fromsocket, Bytes}} ->
            Socket ! {self(), {deliver, lists:reverse(Bytes)}}
    after 5000 ->
        timeout
    end.
