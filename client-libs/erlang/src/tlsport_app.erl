%% The tlsport application: starts the supervisor tree.
-module(tlsport_app).
-behaviour(application).

-export([start/2, stop/1]).

start(_Type, _Args) ->
    tlsport_sup:start_link().

stop(_State) ->
    ok.
