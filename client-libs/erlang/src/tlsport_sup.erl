%% Top supervisor: the port owner, then the supervisor of socket processes.
%% rest_for_one: when the daemon dies and its server restarts, the socket
%% processes of the old daemon go too (they have told their owners).
-module(tlsport_sup).
-behaviour(supervisor).

-export([start_link/0, init/1]).

start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

init([]) ->
    Flags = #{strategy => rest_for_one, intensity => 5, period => 10},
    Children =
        [#{id => tlsport_server,
           start => {tlsport_server, start_link, []},
           restart => permanent, shutdown => 5000, type => worker,
           modules => [tlsport_server]},
         #{id => tlsport_socket_sup,
           start => {tlsport_socket_sup, start_link, []},
           restart => permanent, shutdown => infinity, type => supervisor,
           modules => [tlsport_socket_sup]}],
    {ok, {Flags, Children}}.
