%% Supervises the socket processes (temporary: a socket is not restarted).
-module(tlsport_socket_sup).
-behaviour(supervisor).

-export([start_link/0, start_socket/1, init/1]).

start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

%% @doc Starts the process of one connected socket.
-spec start_socket(map()) -> {ok, pid()} | {error, term()}.
start_socket(Args) ->
    supervisor:start_child(?MODULE, [Args]).

init([]) ->
    Flags = #{strategy => simple_one_for_one, intensity => 0, period => 1},
    Child = #{id => tlsport_socket,
              start => {tlsport_socket, start_link, []},
              restart => temporary, shutdown => 2000, type => worker,
              modules => [tlsport_socket]},
    {ok, {Flags, [Child]}}.
