%% One connected TLS socket: the process seed 004 puts "between the user
%% and the actual socket".
%%
%% It writes its socket's commands and data to the daemon's port itself,
%% receives the socket's data and events from tlsport_server, and sends
%% them to its owner, in one of two styles:
%%   seed   - {Socket, {fromsocket, Bytes}}, {Socket, {socket_closed, R}};
%%            always active, as in seed 004;
%%   modern - {tlsport, S, Data}, {tlsport_closed, S}, {tlsport_error, S, R},
%%            {tlsport_passive, S}; active true | false | once | N, with the
%%            daemon's setopts and recv doing the flow control.
%% It monitors its owner and closes the socket when the owner dies.
%%
%% A socket given back by the daemon (attach mode, tlsport:reclaimed/0)
%% starts in the active mode the dead node left it in, which the daemon
%% keeps and does not tell: `inherited'. Whatever the daemon sends is then
%% handed out as an active socket's data (the daemon sends only what that
%% mode allows), a `passive' event makes it passive, and the first setopts
%% of `active' (or a recv) makes the mode known again.
%%
%% Receiving. While the socket is active (seed, or modern {active, true}
%% or {active, N}), its owner is on this node and no hand-over is in
%% progress, the data does not pass through this process: tlsport_server
%% sends it straight to the owner (the route is `direct'). With
%% {active, N} the daemon sends N packets and then a `passive' event,
%% which comes here after the packets reached the owner; the server counts
%% what it sent in the ?RECEIVED atomic, so that the count left is known
%% here (settle_count/1) when the owner adds to it or asks for it. Everything else (passive modes,
%% hand-overs, events) goes through here. Leaving the direct route is
%% synchronous (route_via/2: whatever the server sent the owner before is
%% in the owner's mailbox when it returns); taking it is a hand-shake
%% (route_direct / route_marker / route_confirm) during which the server
%% holds the socket's data, so that nothing this process still has to
%% pass on is overtaken.
%%
%% Sending, and the daemon's busy/ready flow control. Data goes to the
%% daemon's channel (tlsport_server:write_frame/2) as DATA frames, from this process (seed deliver messages) or from
%% the caller of tlsport:send/2 directly. Two atomics shared with the
%% handle say whether that is allowed:
%%   ?FLAGS        0 - write; 1 - closed; 2 - go through this process
%%                 (the socket is busy, or earlier data waits here);
%%   ?UNCONFIRMED  bytes written since the last barrier was issued.
%% The daemon reports `busy' when the socket's send buffer passes its mark
%% (1 MiB) and `ready' below a quarter of it. An event arrives a little
%% after the data that caused it, so writers also stop by themselves
%% after ?WINDOW unconfirmed bytes: this process then sends a cheap
%% command (a barrier) and lets them go on when its reply comes, by which
%% time any `busy' the data caused has arrived before it. The daemon's send
%% buffer therefore stays below its mark plus two windows (plus packets
%% larger than a window, which wait until everything before them is
%% confirmed), far below the 4x mark at which the daemon would stop
%% reading the whole control channel.
-module(tlsport_socket).
-behaviour(gen_server).

-export([start_link/1, handle/2, initial_route/2, state_size/0, count_received/1]).
-export([send/2, direct_send/2, close/1, controlling_process/2, recv/3, setopts/2, getopts/2,
         peername/1, sockname/1, info/1, starttls/3, stoptls/2, daemon_request/3]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-include_lib("kernel/include/logger.hrl").
-include("tlsport.hrl").

%% Atomics of a socket (see above).
-define(FLAGS, 1).
-define(UNCONFIRMED, 2).
-define(RECEIVED, 3).        % packets of an {active, N} sent to the owner directly
-define(OPEN, 0).
-define(CLOSED, 1).
-define(HOLD, 2).
%% Writers stop at this many unconfirmed bytes...
-define(WINDOW, (512 * 1024)).
%% ...and a barrier is sent once this many are unconfirmed.
-define(BARRIER_AT, (128 * 1024)).
%% How long a close waits for data still held here (the socket is busy).
-define(CLOSE_FLUSH_MS, 5000).
-define(RECV_FOREVER_MS, 86400000).

-type kind() :: modern_binary | modern_list | counted_binary | counted_list
              | seed_binary | seed_list.

-record(s, {
    id :: pos_integer(),
    port :: port() | pid(),           % the daemon's channel (tlsport_server:write_frame/2)
    server :: pid(),
    server_mon :: reference(),
    owner :: pid(),
    owner_mon :: reference(),
    style :: seed | modern,
    format :: list | binary,
    mode :: binary(),                 % the daemon's mode string
    handle :: pid() | #tlsport_socket{},
    peer :: term(),
    %% modern flow control: true | false | once | {n, Count}, or inherited
    %% (a reclaimed socket, see above)
    active = true :: true | false | once | {n, non_neg_integer()} | inherited,
    buf = queue:new() :: queue:queue(binary()),   % received, not yet handed out
    buf_bytes = 0 :: non_neg_integer(),
    recvq = queue:new() :: queue:queue({gen_server:from(), non_neg_integer(), reference() | undefined}),
    recv_ref :: integer() | undefined,             % daemon recv outstanding
    calls = #{} :: #{integer() => term()},         % daemon ref => what
    %% closed: false, or {true, Reason} once the daemon said socket_closed
    closed = false :: false | {true, term()},
    closing = false :: false | {true, gen_server:from() | none},
    %% controlling_process hand-over: events held for the new owner
    holding = [] :: [{pid(), reference()}],   % old owners still handing over
    held = [] :: [term()],
    state :: atomics:atomics_ref(),
    %% where tlsport_server sends received data
    route = via :: via | {direct, kind()} | {pending, integer(), kind()},
    gen = 0 :: non_neg_integer(),
    %% sending
    busy = false :: boolean(),
    barrier :: integer() | undefined,              % daemon ref of the barrier out
    outq = queue:new() :: queue:queue({gen_server:from() | none, non_neg_integer(), iodata()}),
    close_wait :: undefined | {gen_server:from() | none, reference()},
    %% starttls/stoptls: waiting for held data to leave, then for the
    %% daemon's reply; data is held here meanwhile (the daemon refuses a
    %% deliver between the command and its reply)
    switch = none :: none | {queued, map(), term(), gen_server:from()}
                   | {sent | settling, gen_server:from()}
}).

%%% ================================================================ API

start_link(Args) ->
    gen_server:start_link(?MODULE, Args, []).

%% @doc What the owner sees as the socket: the pid (seed) or a record.
handle(Pid, #{style := seed}) -> Pid;
handle(Pid, #{style := modern, id := Id, port := Port, mode := Mode, state := State}) ->
    #tlsport_socket{pid = Pid, id = Id, port = Port, mode = Mode, state = State}.

%% @doc How tlsport_server routes a new socket's data at first: straight
%% to its owner (`{direct, Owner, Kind, Tag, Pid}') or through its
%% process. The process starts with the same view (init/1).
-spec initial_route(map(), pid()) -> pid() | {direct, pid(), kind(), term(), pid()}.
initial_route(#{style := Style, owner := Owner} = Args, Pid) ->
    Active = case Style of
                 seed -> true;
                 modern -> active_state(maps:get(active, Args, true))
             end,
    case direct_mode(Active) andalso node(Owner) =:= node() of
        true ->
            Kind = kind(Style, maps:get(format, Args, list), Active),
            {direct, Owner, Kind, handle(Pid, Args), Pid};
        false ->
            Pid
    end.

%% @doc The atomics a socket's handle shares with tlsport_server.
state_size() -> ?RECEIVED.

%% @doc tlsport_server sent the owner a packet of an {active, N} directly.
count_received(#tlsport_socket{state = State}) ->
    atomics:add(State, ?RECEIVED, 1).

direct_mode(true) -> true;
direct_mode({n, _}) -> true;
direct_mode(_) -> false.

kind(seed, binary, _) -> seed_binary;
kind(seed, list, _) -> seed_list;
kind(modern, binary, {n, _}) -> counted_binary;
kind(modern, list, {n, _}) -> counted_list;
kind(modern, binary, _) -> modern_binary;
kind(modern, list, _) -> modern_list.

%% @doc Sends through the socket process (waits while the socket is busy).
send(Pid, Data) ->
    case call(Pid, mode, infinity) of
        {ok, Mode} ->
            case tlsport_lib:chunks(Mode, Data) of
                {ok, Chunks} -> call(Pid, {send, Chunks}, infinity);
                Error -> Error
            end;
        Error -> Error
    end.

%% @doc tlsport:send/2: the caller writes DATA frames to the port itself,
%% no round trip through the socket process, as long as the socket's
%% atomics allow it (see the top of this module). Otherwise the rest of
%% the data is handed to the socket process, which writes it once the
%% socket is ready; the caller waits for that, as for a busy port.
direct_send(#tlsport_socket{mode = Mode, state = State} = S, Data) ->
    case atomics:get(State, ?FLAGS) of
        ?CLOSED -> {error, closed};
        _ ->
            case tlsport_lib:chunks(Mode, Data) of
                {ok, Chunks} -> send_chunks(S, Chunks);
                Error -> Error
            end
    end.

send_chunks(_S, []) ->
    ok;
send_chunks(#tlsport_socket{port = Port, id = Id, state = State, pid = Pid} = S,
            [{Size, Chunk} | Rest] = All) ->
    case atomics:get(State, ?FLAGS) =:= ?OPEN andalso Size =< ?WINDOW
        andalso atomics:get(State, ?UNCONFIRMED) < ?WINDOW of
        true ->
            N = atomics:add_get(State, ?UNCONFIRMED, Size),
            case tlsport_server:write_frame(Port, [<<1, Id:32>> | Chunk]) of
                ok ->
                    %% The writer that crosses the mark has the barrier sent.
                    _ = N >= ?BARRIER_AT andalso N - Size < ?BARRIER_AT andalso (Pid ! window),
                    send_chunks(S, Rest);
                Error ->
                    Error
            end;
        false ->
            call(Pid, {send, All}, infinity)
    end.

close(Pid) -> call(Pid, close, infinity).

recv(Pid, Length, Timeout) -> call(Pid, {recv, Length, Timeout}, infinity).

%% @doc Options are checked here, in the caller, before the socket
%% process or the daemon sees any of them (tlsport_lib:setopts_options/1).
setopts(Pid, Opts) ->
    case tlsport_options:setopts_options(Opts) of
        {ok, Checked} -> call(Pid, {setopts, Checked}, infinity);
        Error -> Error
    end.

getopts(Pid, Names) ->
    case tlsport_options:getopts_names(Names) of
        ok -> call(Pid, {getopts, Names}, infinity);
        Error -> Error
    end.

peername(Pid) -> call(Pid, peername, infinity).

sockname(Pid) -> call(Pid, sockname, infinity).

info(Pid) -> call(Pid, info, infinity).

%% @doc Starts TLS on the plain socket (`Command': the daemon's starttls
%% fields besides op and id); `Cbs' answers the daemon's questions.
starttls(Pid, Command, Cbs) -> call(Pid, {switch, Command#{op => starttls}, Cbs}, infinity).

%% @doc Ends TLS, the TCP connection stays.
stoptls(Pid, Command) -> call(Pid, {switch, Command#{op => stoptls}, none}, infinity).

%% @doc A command about this socket (ciphers, inject_ca): the reply map,
%% given to Convert.
daemon_request(Pid, Command, Convert) -> call(Pid, {request, Command, Convert}, infinity).

%% @doc Makes NewOwner the owner. Runs in the old owner: what the socket
%% has already sent to it is taken out of its mailbox and handed, in order
%% and ahead of anything newer, to the new owner.
controlling_process(Pid, NewOwner) when is_pid(NewOwner) ->
    case call(Pid, {controlling_process, NewOwner}, infinity) of
        same ->
            ok;
        {ok, Handle} ->
            Pid ! {handover_done, self(), take_messages(Handle)},
            ok;
        {error, closed} = Error ->
            %% Already gone: still pass on what it left in our mailbox.
            case take_messages(Pid) ++ take_messages_modern(Pid) of
                [] -> Error;
                Msgs -> [NewOwner ! M || M <- Msgs], ok
            end;
        Other ->
            Other
    end;
controlling_process(_Pid, _NewOwner) ->
    {error, badarg}.

take_messages(Pid) when is_pid(Pid) ->
    receive
        {Pid, {fromsocket, _}} = M -> [M | take_messages(Pid)];
        {Pid, {socket_closed, _}} = M -> [M | take_messages(Pid)]
    after 0 -> []
    end;
take_messages(#tlsport_socket{} = S) ->
    receive
        {tlsport, S, _} = M -> [M | take_messages(S)];
        {tlsport_closed, S} = M -> [M | take_messages(S)];
        {tlsport_error, S, _} = M -> [M | take_messages(S)];
        {tlsport_passive, S} = M -> [M | take_messages(S)]
    after 0 -> []
    end.

take_messages_modern(Pid) ->
    receive
        {tlsport, #tlsport_socket{pid = Pid}, _} = M -> [M | take_messages_modern(Pid)];
        {tlsport_closed, #tlsport_socket{pid = Pid}} = M -> [M | take_messages_modern(Pid)];
        {tlsport_error, #tlsport_socket{pid = Pid}, _} = M -> [M | take_messages_modern(Pid)];
        {tlsport_passive, #tlsport_socket{pid = Pid}} = M -> [M | take_messages_modern(Pid)]
    after 0 -> []
    end.

call(Pid, Msg, Timeout) ->
    try gen_server:call(Pid, Msg, Timeout)
    catch exit:{_, _} -> {error, closed}
    end.

%%% ================================================================ gen_server

init(#{id := Id, port := Port, server := Server, owner := Owner, style := Style,
       mode := Mode, state := State} = Args) ->
    process_flag(trap_exit, true),
    %% The daemon starts the socket in the active mode connect/accept gave.
    Active = case Style of
                 seed -> true;
                 modern -> active_state(maps:get(active, Args, true))
             end,
    Route = case initial_route(Args, self()) of
                {direct, _, Kind, _, _} -> {direct, Kind};
                _ -> via
            end,
    {ok, #s{id = Id, port = Port, server = Server,
            server_mon = erlang:monitor(process, Server),
            owner = Owner, owner_mon = erlang:monitor(process, Owner),
            style = Style, format = maps:get(format, Args, list), mode = Mode,
            handle = handle(self(), Args), state = State, active = Active, route = Route,
            peer = tlsport_lib:peer(maps:get(peer, Args, undefined))}}.

active_state(true) -> true;
active_state(once) -> once;
active_state(inherited) -> inherited;
active_state(N) when is_integer(N), N > 0 -> {n, N};
active_state(_) -> false.

handle_call({send, Chunks}, From, S) ->
    continue(enqueue(Chunks, From, S));
handle_call(mode, _From, S) ->
    {reply, {ok, S#s.mode}, S};
handle_call(close, From, S) ->
    request_close(From, S);
handle_call({controlling_process, Caller}, {Caller, _}, #s{owner = Caller} = S) ->
    {reply, same, S};
handle_call({controlling_process, NewOwner}, {Caller, _}, #s{owner = Caller} = S) ->
    erlang:demonitor(S#s.owner_mon, [flush]),
    OldMon = erlang:monitor(process, Caller),
    S1 = S#s{owner = NewOwner, owner_mon = erlang:monitor(process, NewOwner),
             holding = [{Caller, OldMon} | S#s.holding]},
    %% Off the direct route before the old owner empties its mailbox.
    {reply, {ok, S#s.handle}, sync_route(S1)};
handle_call({controlling_process, _}, _From, S) ->
    {reply, {error, not_owner}, S};
handle_call(peername, _From, S) ->
    {reply, case S#s.peer of undefined -> {error, enotconn}; P -> {ok, P} end, S};
handle_call(sockname, From, S) ->
    daemon_call(#{op => sockname}, {endpoint, From}, S);
handle_call(info, From, S) ->
    daemon_call(#{op => info}, {info, From}, S);
handle_call({request, Command, Convert}, From, S) ->
    daemon_call(Command, {request, From, Convert}, S);
handle_call({switch, _Command, _Cbs}, _From, #s{switch = Switch} = S) when Switch =/= none ->
    {reply, {error, ealready}, S};
handle_call({switch, #{op := starttls}, _Cbs}, _From, #s{active = A} = S) when A =/= false ->
    %% The peer's first TLS bytes could be taken for plaintext.
    {reply, {error, einval}, S};
handle_call({switch, _Command, _Cbs}, _From, #s{closed = Closed, closing = Closing,
                                                close_wait = Wait} = S)
  when Closed =/= false; Closing =/= false; Wait =/= undefined ->
    {reply, {error, closed}, S};
handle_call({switch, Command, Cbs}, From, S) ->
    continue(pump(S#s{switch = {queued, Command, Cbs, From}}));
handle_call({recv, _Len, _Timeout} = Recv, From, #s{active = inherited} = S) ->
    %% The mode the dead node left is unknown: passive from now on (the
    %% daemon hears before the recv, data on its way is kept for it).
    _ = tlsport_server:command(S#s.port, S#s.server, #{op => setopts, id => S#s.id, active => false}),
    handle_call(Recv, From, S#s{active = false});
handle_call({recv, _Len, _Timeout}, _From, #s{style = modern, active = A} = S) when A =/= false ->
    {reply, {error, einval}, S};
handle_call({recv, Len, Timeout}, From, #s{style = modern} = S) ->
    TRef = case Timeout of
               infinity -> undefined;
               _ -> erlang:start_timer(Timeout, self(), recv_timeout)
           end,
    S1 = S#s{recvq = queue:in({From, Len, TRef}, S#s.recvq)},
    {noreply, serve_recv(S1)};
handle_call({setopts, Opts}, From, #s{style = modern} = S) ->
    setopts_call(Opts, From, S);
handle_call({getopts, Names}, _From, S) ->
    {reply, {ok, [{N, getopt(N, S)} || N <- Names, getopt(N, S) =/= undefined]}, S};
handle_call(_Other, _From, S) ->
    {reply, {error, einval}, S}.

handle_cast(_Msg, S) ->
    {noreply, S}.

%% Data and events from the daemon.
handle_info({tlsport_data, _Id, Data}, S) ->
    continue(packet(Data, S));
handle_info({tlsport_event, _Id, #{event := socket_closed, reason := Reason}}, S) ->
    continue(peer_closed(close_reason(Reason), S));
handle_info({tlsport_event, _Id, #{event := passive}}, S) ->
    continue(passive_event(S));
handle_info({tlsport_event, _Id, #{event := busy}}, S) ->
    continue(pump(S#s{busy = true}));
handle_info({tlsport_event, _Id, #{event := ready}}, S) ->
    continue(pump(S#s{busy = false}));
handle_info({tlsport_event, _Id, #{event := owned} = E}, S) ->
    continue(pump(S#s{busy = maps:get(busy, E, false) =:= true}));
handle_info({tlsport_event, _Id, _Other}, S) ->
    {noreply, S};
handle_info(window, S) ->
    continue(pump(S));
handle_info({route_marker, _Id, Gen}, S) ->
    {noreply, route_marker(Gen, S)};
handle_info({tlsport_deliver_error, _Id, #{kind := Kind} = Error}, S)
  when Kind =:= <<"closed">>; Kind =:= <<"no_such_socket">> ->
    %% Data that met the socket's close on the way: nothing to tell.
    ?LOG_DEBUG("tlsport: socket ~p: deliver after close: ~p", [S#s.id, Error]),
    {noreply, S};
handle_info({tlsport_deliver_error, _Id, Error}, S) ->
    ?LOG_WARNING("tlsport: socket ~p: deliver failed: ~p", [S#s.id, Error]),
    {noreply, S};
handle_info({tlsport_reply, Ref, Result}, S) ->
    case maps:take(Ref, S#s.calls) of
        {What, Calls} -> continue(reply(What, Result, S#s{calls = Calls}));
        error -> {noreply, S}
    end;
%% Seed 004 messages.
handle_info({_From, {deliver, Data}}, S) ->
    case tlsport_lib:chunks(S#s.mode, Data) of
        {ok, Chunks} ->
            continue(enqueue(Chunks, none, S));
        {error, Reason} ->
            ?LOG_WARNING("tlsport: socket ~p: deliver failed: ~p", [S#s.id, Reason]),
            {noreply, S}
    end;
handle_info({_From, close}, S) ->
    request_close(none, S);
%% controlling_process, second half.
handle_info({handover_done, Old, Msgs}, #s{} = S) ->
    case lists:keytake(Old, 1, S#s.holding) of
        {value, {Old, Mon}, Holding} ->
            erlang:demonitor(Mon, [flush]),
            [S#s.owner ! M || M <- Msgs],
            continue(release(S#s{holding = Holding}));
        false ->
            {noreply, S}
    end;
handle_info({'DOWN', Mon, process, _, _}, #s{owner_mon = Mon} = S) ->
    %% "automatically closed when the process terminates"
    start_close(none, S#s{holding = [], held = []});
handle_info({'DOWN', Mon, process, _, _} = Down, S) ->
    case lists:keytake(Mon, 2, S#s.holding) of
        {value, _, Holding} ->
            %% An old owner died during its hand-over.
            continue(release(S#s{holding = Holding}));
        false ->
            other_down(Down, S)
    end;
handle_info({timeout, TRef, recv_timeout}, S) ->
    {noreply, recv_timed_out(TRef, S)};
handle_info(close_flush_timeout, #s{close_wait = {From, _}} = S) ->
    %% The peer has not read for a long time: what is still held is dropped.
    start_close(From, S#s{close_wait = undefined});
handle_info({'EXIT', _Pid, shutdown}, S) ->
    {stop, shutdown, S};
handle_info({'EXIT', _Pid, _}, S) ->
    {noreply, S};
handle_info(_Other, S) ->
    {noreply, S}.

other_down({'DOWN', Mon, process, _, Reason}, #s{server_mon = Mon} = S) ->
    Why = server_down_reason(Reason),
    S1 = fail_all(closed, S),
    continue(peer_closed({error, Why}, S1#s{calls = #{}, recv_ref = undefined, barrier = undefined}));
other_down(_Down, S) ->
    {noreply, S}.

server_down_reason({shutdown, R}) -> R;
server_down_reason(shutdown) -> stopped;
server_down_reason(R) -> R.

terminate(shutdown, #s{closed = false} = S) ->
    %% tlsport is stopping, or restarting after the daemon died (then the
    %% supervisor's shutdown can overtake the server's 'DOWN'): the owner
    %% hears which.
    Why = case is_process_alive(S#s.server) of
              true -> stopped;
              false ->
                  Mon = S#s.server_mon,
                  receive {'DOWN', Mon, process, _, R} -> server_down_reason(R)
                  after 200 -> stopped
                  end
          end,
    notify_closed({error, Why}, S#s{holding = []}),
    ok;
terminate(_Reason, _S) ->
    ok.

%%% ================================================================ routing

%% Direct routing is for active sockets whose owner is on this node and
%% not being changed.
want_direct(#s{closed = false, closing = false, close_wait = undefined, holding = [],
               owner = Owner} = S) ->
    (S#s.style =:= seed orelse direct_mode(S#s.active)) andalso node(Owner) =:= node()
        andalso queue:is_empty(S#s.buf);
want_direct(_) ->
    false.

%% Brings the server's route in line with what the state calls for.
sync_route(S) ->
    Want = case want_direct(S) of
               true -> kind(S#s.style, S#s.format, S#s.active);
               false -> none
           end,
    case {S#s.route, Want} of
        {via, none} -> S;
        {via, Kind} -> request_direct(Kind, S);
        {{direct, Kind}, Kind} -> S;
        {{pending, _, Kind}, Kind} -> S;
        {_, none} -> to_via(S);
        {_, Kind} -> request_direct(Kind, to_via(S))
    end.

%% Synchronous: once the server has answered, it sends nothing more to
%% the owner directly, and what it sent is in the owner's mailbox.
to_via(#s{route = via} = S) ->
    S;
to_via(S) ->
    _ = tlsport_server:route_via(S#s.server, S#s.id),
    case settle_count(S#s{route = via}) of
        #s{active = {n, N}} = S1 when N =< 0 -> S1#s{active = false};  % its passive event follows
        S1 -> S1
    end.

%% Takes what the server counted on the direct route off an {active, N}
%% count: the count is then exact (and stays so on the via route).
settle_count(#s{active = {n, N}, state = State} = S) ->
    S#s{active = {n, N - atomics:exchange(State, ?RECEIVED, 0)}};
settle_count(S) ->
    S.

request_direct(Kind, S) ->
    Gen = S#s.gen + 1,
    Direct = {direct, S#s.owner, Kind, S#s.handle, self()},
    S#s.server ! {route_direct, S#s.id, self(), Gen, Direct},
    S#s{route = {pending, Gen, Kind}, gen = Gen}.

%% Everything the server sent here before it started holding the
%% socket's data has been handled: it may go direct.
route_marker(Gen, #s{route = {pending, Gen, Kind}} = S) ->
    S#s.server ! {route_confirm, S#s.id, Gen},
    S#s{route = {direct, Kind}};
route_marker(_Gen, S) ->
    S.

%%% ================================================================ sending

%% Queues chunks to write (From is answered once the last is written).
enqueue(_Chunks, From, #s{closed = Closed, closing = Closing, close_wait = Wait} = S)
  when Closed =/= false; Closing =/= false; Wait =/= undefined ->
    reply_to(From, {error, closed}),
    S;
enqueue([], From, S) ->
    reply_to(From, ok),
    S;
enqueue(Chunks, From, S) ->
    {Init, [{Size, Last}]} = lists:split(length(Chunks) - 1, Chunks),
    Q = lists:foldl(fun({Sz, C}, Q0) -> queue:in({none, Sz, C}, Q0) end, S#s.outq, Init),
    pump(S#s{outq = queue:in({From, Size, Last}, Q)}).

%% Writes what may be written now, sends a barrier when one is due, and
%% publishes the result in the flags.
pump(#s{closed = Closed, closing = Closing} = S) when Closed =/= false; Closing =/= false ->
    set_flags(fail_outq(S));
pump(S0) ->
    S = maybe_barrier(S0),
    case queue:peek(S#s.outq) of
        {value, {From, Size, Chunk}} ->
            case writable(Size, S) of
                true ->
                    atomics:add(S#s.state, ?UNCONFIRMED, Size),
                    Result = tlsport_server:write_frame(S#s.port, [<<1, (S#s.id):32>> | Chunk]),
                    reply_to(From, Result),
                    pump(S#s{outq = queue:drop(S#s.outq)});
                false ->
                    set_flags(S)
            end;
        empty ->
            set_flags(send_switch(S))
    end.

%% starttls/stoptls leave once everything delivered before them has.
send_switch(#s{switch = {queued, Command, Cbs, From}} = S) ->
    case tlsport_server:command(S#s.port, S#s.server, Command#{id => S#s.id}, Cbs) of
        {ok, Ref} ->
            S#s{switch = {sent, From}, calls = maps:put(Ref, {switch, From}, S#s.calls)};
        {error, closed} = Error ->
            gen_server:reply(From, Error),
            S#s{switch = none}
    end;
send_switch(S) ->
    S.

writable(_Size, #s{switch = {Stage, _}}) when Stage =:= sent; Stage =:= settling ->
    false;
writable(_Size, #s{busy = true}) ->
    false;
writable(Size, S) when Size > ?WINDOW ->
    %% A large packet waits until everything before it is confirmed.
    S#s.barrier =:= undefined andalso unconfirmed(S) =:= 0;
writable(_Size, S) ->
    unconfirmed(S) < ?WINDOW.

unconfirmed(S) -> atomics:get(S#s.state, ?UNCONFIRMED).

maybe_barrier(#s{barrier = undefined} = S) ->
    N = unconfirmed(S),
    LargeWaiting = case queue:peek(S#s.outq) of
                       {value, {_, Size, _}} -> Size > ?WINDOW;
                       empty -> false
                   end,
    case N >= ?BARRIER_AT orelse (N > 0 andalso LargeWaiting) of
        true ->
            atomics:sub(S#s.state, ?UNCONFIRMED, N),
            %% Any command answers; the daemon writes its reply after the
            %% events the data before it caused.
            case tlsport_server:command(S#s.port, S#s.server, #{op => peername, id => S#s.id}) of
                {ok, Ref} -> S#s{barrier = Ref, calls = maps:put(Ref, barrier, S#s.calls)};
                {error, closed} -> S
            end;
        false ->
            S
    end;
maybe_barrier(S) ->
    S.

set_flags(#s{state = State} = S) ->
    Flags = if
                S#s.closed =/= false; S#s.closing =/= false; S#s.close_wait =/= undefined -> ?CLOSED;
                S#s.busy; S#s.switch =/= none -> ?HOLD;
                true -> case queue:is_empty(S#s.outq) of
                            true -> ?OPEN;
                            false -> ?HOLD
                        end
            end,
    case atomics:get(State, ?FLAGS) of
        ?CLOSED -> ok;
        Flags -> ok;
        _ -> atomics:put(State, ?FLAGS, Flags)
    end,
    S.

fail_outq(S) ->
    [reply_to(From, {error, closed}) || {From, _, _} <- queue:to_list(S#s.outq)],
    Switch = case S#s.switch of
                 {queued, _, _, From} -> gen_server:reply(From, {error, closed}), none;
                 Other -> Other
             end,
    S#s{outq = queue:new(), switch = Switch}.

%% Sends a command about this socket; `What' says what to do with the reply.
daemon_call(Command, What, S) ->
    case S#s.closed of
        {true, _} ->
            {reply, {error, closed}, S};
        false ->
            case tlsport_server:command(S#s.port, S#s.server, Command#{id => S#s.id}) of
                {ok, Ref} -> {noreply, S#s{calls = maps:put(Ref, What, S#s.calls)}};
                Error -> {reply, Error, S}
            end
    end.

%% A close waits for data still held here (a busy socket), at most
%% ?CLOSE_FLUSH_MS; new data is refused meanwhile.
request_close(From, #s{close_wait = {_, _}} = S) ->
    reply_to(From, ok),
    {noreply, S};
request_close(From, S) ->
    case queue:is_empty(S#s.outq) orelse S#s.closed =/= false orelse S#s.closing =/= false of
        true ->
            start_close(From, S);
        false ->
            TRef = erlang:send_after(?CLOSE_FLUSH_MS, self(), close_flush_timeout),
            {noreply, set_flags(S#s{close_wait = {From, TRef}})}
    end.

start_close(From, #s{closed = {true, _}} = S) ->
    reply_to(From, ok),
    {stop, normal, fail_outq(S)};
start_close(From, #s{closing = {true, _}} = S) ->
    reply_to(From, ok),
    {noreply, S};
start_close(From, S0) ->
    S = fail_outq(S0),
    mark_closed(S),
    %% From here on the server forgets the id: events still on their way
    %% are dropped, as the daemon promises none after the close.
    S#s.server ! {socket_done, S#s.id},
    case tlsport_server:command(S#s.port, S#s.server, #{op => close, id => S#s.id}) of
        {ok, Ref} when From =/= none ->
            {noreply, S#s{closing = {true, From}, route = via,
                          calls = maps:put(Ref, closed, S#s.calls)}};
        _ ->
            reply_to(From, ok),
            {stop, normal, S#s{closing = {true, none}, route = via}}
    end.

reply_to(none, _) -> ok;
reply_to(From, Reply) -> gen_server:reply(From, Reply).

reply(closed, _Result, #s{closing = {true, From}} = S) ->
    reply_to(From, ok),
    S#s{closed = {true, closed}, closing = {true, none}};
reply(barrier, _Result, S) ->
    pump(S#s{barrier = undefined});
reply({endpoint, From}, {ok, #{host := H, port := P}}, S) ->
    gen_server:reply(From, {ok, {tlsport_lib:parse_ip(H), P}}),
    S;
reply({info, From}, {ok, M}, S) ->
    gen_server:reply(From, {ok, tlsport_peer_info:connection_info(M)}),
    S;
reply({request, From, Convert}, {ok, M}, S) ->
    gen_server:reply(From, Convert(maps:without([ok, ref], M))),
    S;
reply({request, From, _}, {error, E}, S) ->
    gen_server:reply(From, {error, tlsport_lib:error_reason(E)}),
    S;
reply({switch, From}, {ok, _}, S) ->
    gen_server:reply(From, ok),
    pump(S#s{switch = none});
reply({switch, From}, {error, E}, #s{closed = false} = S) ->
    %% A failed handshake or close_notify exchange closes the socket, and
    %% the daemon's socket_closed comes right after this reply; a command
    %% refused before it started (a bad option, a password that never
    %% came) leaves the socket as it was. One more command about the
    %% socket tells the two apart: its reply comes after that event.
    case tlsport_server:command(S#s.port, S#s.server, #{op => peername, id => S#s.id}) of
        {ok, Ref} ->
            S#s{switch = {settling, From},
                calls = maps:put(Ref, {switch_settled, From, E}, S#s.calls)};
        {error, closed} ->
            gen_server:reply(From, {error, tlsport_lib:error_reason(E)}),
            pump(S#s{switch = none})
    end;
reply({switch, From}, {error, E}, S) ->
    gen_server:reply(From, {error, tlsport_lib:error_reason(E)}),
    pump(S#s{switch = none});
reply({switch_settled, From, E}, _Result, S) ->
    %% Anything sent meanwhile fails if the socket closed, else goes out.
    gen_server:reply(From, {error, tlsport_lib:error_reason(E)}),
    pump(S#s{switch = none});
reply({setopts, From}, {ok, _}, S) ->
    reply_to(From, ok),
    S;
reply({recv, Ref}, Result, #s{recv_ref = Ref} = S) ->
    recv_reply(Result, S#s{recv_ref = undefined});
reply({recv, _}, _Result, S) ->
    S;
reply({_What, From}, {error, E}, S) when From =/= none ->
    gen_server:reply(From, {error, tlsport_lib:error_reason(E)}),
    S;
reply(_What, _Result, S) ->
    S.

%% Stops once there is nothing left to hand out.
continue(#s{close_wait = {From, TRef}} = S) ->
    case queue:is_empty(S#s.outq) orelse S#s.closed =/= false of
        true ->
            _ = erlang:cancel_timer(TRef),
            start_close(From, S#s{close_wait = undefined});
        false ->
            {noreply, S}
    end;
continue(#s{closing = {true, From}, closed = {true, _}} = S) ->
    reply_to(From, ok),
    {stop, normal, S};
continue(#s{switch = {settling, _}} = S) ->
    {noreply, S};                    % a starttls/stoptls caller waits for its answer
continue(#s{closed = {true, _}, holding = []} = S) ->
    case S#s.style =:= seed orelse (queue:is_empty(S#s.buf) andalso S#s.active =/= false) of
        true -> {stop, normal, S};
        false -> {noreply, S}
    end;
continue(S) ->
    {noreply, S}.

%%% ================================================================ receiving

packet(_Data, #s{closing = {true, _}} = S) ->
    S;
packet(Data, #s{style = seed} = S) ->
    emit({self(), {fromsocket, convert(Data, S)}}, S);
packet(Data, #s{active = Active} = S) when Active =:= true; Active =:= inherited ->
    emit({tlsport, S#s.handle, convert(Data, S)}, S);
packet(Data, #s{active = once} = S) ->
    emit({tlsport, S#s.handle, convert(Data, S)}, S#s{active = false});
packet(Data, #s{active = {n, N}} = S) when N > 0 ->
    S1 = emit({tlsport, S#s.handle, convert(Data, S)}, S),
    case N - 1 of
        0 -> S1#s{active = false};   % the daemon's passive event follows
        M -> S1#s{active = {n, M}}
    end;
packet(Data, S) ->
    %% Passive: kept for recv (data that was on its way when the owner
    %% switched to passive, or that a recv brought).
    serve_recv(buffer(Data, S)).

passive_event(#s{style = modern, active = inherited} = S) ->
    %% An {active, N} of the dead node's ran out.
    emit({tlsport_passive, S#s.handle}, S#s{active = false});
passive_event(#s{style = modern, active = {n, _}} = S0) ->
    %% The daemon's count ran out, unless the owner added to it since. Off
    %% the direct route first (synchronously): the server has then sent and
    %% counted every packet that came before this event, those it held while
    %% the route was being set up included. Back on it if the count goes on.
    S = sync_route(to_via(S0)),
    emit({tlsport_passive, S#s.handle}, S);
passive_event(#s{style = modern} = S) ->
    emit({tlsport_passive, S#s.handle}, S);
passive_event(S) ->
    S.

buffer(Data, S) ->
    S#s{buf = queue:in(Data, S#s.buf), buf_bytes = S#s.buf_bytes + byte_size(Data)}.

convert(Data, #s{format = binary}) -> Data;
convert(Data, #s{format = list}) -> binary_to_list(Data).

close_reason(<<"normal">>) -> normal;
close_reason(#{} = E) -> {error, tlsport_lib:error_reason(E)};
close_reason(Other) -> {error, Other}.

%% The server has forgotten the socket's route (socket_closed, or the
%% server is gone).
peer_closed(Reason, S) ->
    mark_closed(S),
    peer_closed1(Reason, fail_outq(S#s{route = via})).

mark_closed(#s{state = State}) -> atomics:put(State, ?FLAGS, ?CLOSED).

peer_closed1(_Reason, #s{closed = {true, R}} = S) when R =/= pending ->
    S;
peer_closed1(Reason, #s{closing = {true, _}} = S) ->
    S#s{closed = {true, Reason}};
peer_closed1(Reason, #s{style = seed} = S) ->
    S1 = S#s{closed = {true, Reason}},
    emit({self(), {socket_closed, Reason}}, S1);
peer_closed1(Reason, S) ->
    S1 = serve_recv(S#s{closed = {true, Reason}}),
    case S1#s.active of
        false -> S1;                 % told when active again, or by recv
        _ -> notify_closed(Reason, S1)
    end.

notify_closed(Reason, #s{style = seed} = S) ->
    emit({self(), {socket_closed, Reason}}, S);
notify_closed(normal, S) ->
    emit({tlsport_closed, S#s.handle}, S);
notify_closed({error, Why}, S) ->
    S1 = emit({tlsport_error, S#s.handle, Why}, S),
    emit({tlsport_closed, S#s.handle}, S1).

%% Every message to the owner goes through here: during a hand-over it is
%% held back until the old owner's mailbox has been passed on.
emit(Msg, #s{holding = [_ | _]} = S) ->
    S#s{held = [Msg | S#s.held]};
emit(Msg, S) ->
    S#s.owner ! Msg,
    S.

release(#s{holding = [_ | _]} = S) ->
    S;
release(S) ->
    Owner = S#s.owner,
    [Owner ! M || M <- lists:reverse(S#s.held)],
    sync_route(S#s{held = []}).

%%% ================================================================ passive mode

%% Answers waiting recv calls from the buffer; asks the daemon for more
%% when the buffer does not suffice.
serve_recv(S) ->
    case queue:peek(S#s.recvq) of
        empty -> S;
        {value, {From, Len, TRef}} ->
            case take(Len, S) of
                {ok, Data, S1} ->
                    cancel_timer(TRef),
                    gen_server:reply(From, {ok, convert(Data, S1)}),
                    serve_recv(S1#s{recvq = queue:drop(S1#s.recvq)});
                more ->
                    case S#s.closed of
                        {true, _} ->
                            cancel_timer(TRef),
                            gen_server:reply(From, {error, closed}),
                            serve_recv(S#s{recvq = queue:drop(S#s.recvq)});
                        false when S#s.recv_ref =:= undefined ->
                            ask_daemon(TRef, S);
                        false ->
                            S
                    end
            end
    end.

ask_daemon(TRef, S) ->
    Ms = case TRef of
             undefined -> ?RECV_FOREVER_MS;
             _ -> case erlang:read_timer(TRef) of
                      false -> 0;
                      T -> min(T, ?RECV_FOREVER_MS)
                  end
         end,
    case tlsport_server:command(S#s.port, S#s.server,
                                #{op => recv, id => S#s.id, timeout_ms => Ms}) of
        {ok, Ref} ->
            S#s{recv_ref = Ref, calls = maps:put(Ref, {recv, Ref}, S#s.calls)};
        {error, closed} ->
            mark_closed(S),
            serve_recv(S#s{closed = {true, {error, closed}}})
    end.

recv_reply({ok, #{data := Data}}, S) ->
    serve_recv(buffer(Data, S));
recv_reply({error, #{kind := <<"timeout">>}}, S) ->
    %% Callers are answered by their own timers; whoever still waits (a
    %% later caller, or one without a timeout) asks again.
    serve_recv(S);
recv_reply({error, #{kind := <<"closed">>}}, S) ->
    %% socket_closed follows and says how.
    mark_closed(S),
    serve_recv(S#s{closed = {true, pending}});
recv_reply({error, #{kind := <<"cancelled">>}}, S) ->
    serve_recv(S);
recv_reply({error, E}, S) ->
    case queue:out(S#s.recvq) of
        {{value, {From, _, TRef}}, Q} ->
            cancel_timer(TRef),
            gen_server:reply(From, {error, tlsport_lib:error_reason(E)}),
            serve_recv(S#s{recvq = Q});
        {empty, _} -> S
    end.

recv_timed_out(TRef, S) ->
    {Timed, Rest} = lists:partition(fun({_, _, T}) -> T =:= TRef end, queue:to_list(S#s.recvq)),
    [gen_server:reply(From, {error, timeout}) || {From, _, _} <- Timed],
    S#s{recvq = queue:from_list(Rest)}.

cancel_timer(undefined) -> ok;
cancel_timer(TRef) -> _ = erlang:cancel_timer(TRef), ok.

%% Takes Len bytes (raw mode; 0 = all there is) or one packet.
take(_Len, #s{buf_bytes = 0} = S) ->
    case queue:is_empty(S#s.buf) of
        true -> more;
        false -> take_packet(S)       % an empty packet is a packet
    end;
take(Len, #s{mode = Mode} = S) when Mode =:= <<"raw">>; Mode =:= <<"binary_packet:0">> ->
    if
        Len =:= 0 ->
            {ok, iolist_to_binary(queue:to_list(S#s.buf)), S#s{buf = queue:new(), buf_bytes = 0}};
        Len =< S#s.buf_bytes ->
            All = iolist_to_binary(queue:to_list(S#s.buf)),
            <<Data:Len/binary, Rest/binary>> = All,
            Buf = case Rest of <<>> -> queue:new(); _ -> queue:from_list([Rest]) end,
            {ok, Data, S#s{buf = Buf, buf_bytes = byte_size(Rest)}};
        true ->
            more
    end;
take(_Len, S) ->
    take_packet(S).

take_packet(S) ->
    {{value, P}, Q} = queue:out(S#s.buf),
    {ok, P, S#s{buf = Q, buf_bytes = S#s.buf_bytes - byte_size(P)}}.

%% Fails every waiting recv (the daemon is gone).
fail_all(Reason, S) ->
    [begin cancel_timer(T), gen_server:reply(F, {error, Reason}) end
     || {F, _, T} <- queue:to_list(S#s.recvq)],
    maps:foreach(fun(_Ref, {_, From}) when From =/= none, not is_integer(From) ->
                         catch gen_server:reply(From, {error, Reason});
                    (_, _) -> ok
                 end, S#s.calls),
    case S#s.closing of
        {true, From} -> reply_to(From, ok);
        false -> ok
    end,
    S#s{recvq = queue:new()}.

%%% ================================================================ options

setopts_call(Opts, From, S) ->
    try lists:foldl(fun setopt/2, {S, []}, normalize_opts(Opts)) of
        {S1, DaemonOpts} ->
            %% Off the direct route (if the options call for it) before
            %% the daemon hears of them: no data reaches the owner
            %% directly once this call has returned.
            S2 = sync_route(S1),
            case DaemonOpts of
                [] -> {reply, ok, S2};
                _ when S2#s.closed =/= false -> {reply, ok, S2};
                _ -> daemon_call((maps:from_list(DaemonOpts))#{op => setopts}, {setopts, From}, S2)
            end
    catch throw:Reason ->
        {reply, {error, Reason}, S}
    end.

normalize_opts(Opts) when is_map(Opts) -> maps:to_list(Opts);
normalize_opts(Opts) when is_list(Opts) ->
    [case O of
         binary -> {mode, binary};
         list -> {mode, list};
         {_, _} -> O;
         _ -> throw(einval)
     end || O <- Opts];
normalize_opts(_) -> throw(einval).

%% Returns the new state and the daemon setopts fields to send.
setopt({active, A}, {S, D}) ->
    Active = case A of
                 N when is_integer(N), N =< 0 -> false;   % as inet: the count is used up
                 N when is_integer(N), N > 32767 -> throw(einval);
                 N when is_integer(N) -> N;
                 _ when is_boolean(A); A =:= once -> A;
                 _ -> throw(einval)
             end,
    case apply_active(Active, settle_count(S)) of
        {S1, skip} -> {S1, lists:keydelete(active, 1, D)};
        {S1, DA} -> {S1, lists:keystore(active, 1, D, {active, DA})}
    end;
setopt({mode, M}, {S, D}) when M =:= binary; M =:= list ->
    {S#s{format = M}, D};
setopt({packet_size, N}, {S, D}) when is_integer(N), N > 0 ->
    {S, [{packet_size, N} | D]};
setopt(_, _) ->
    throw(einval).

%% Switches the active mode. Packets already buffered (they arrived while
%% passive) are handed out first and count against once/N. Returns what
%% the daemon is to be told, or skip.
apply_active(false, S) ->
    {S#s{active = false}, false};
apply_active(true, S) ->
    S1 = flush_buffer(S#s{active = true}),
    {closed_now_active(S1), true};
apply_active(once, S) ->
    case queue:out(S#s.buf) of
        {{value, P}, Q} ->
            S1 = S#s{buf = Q, buf_bytes = S#s.buf_bytes - byte_size(P), active = false},
            {emit({tlsport, S#s.handle, convert(P, S)}, S1), skip};
        {empty, _} ->
            {closed_now_active(S#s{active = once}), once}
    end;
apply_active(N, S) when is_integer(N) ->
    Have = case S#s.active of {n, C} -> C; _ -> 0 end,
    {S1, Left} = hand_out(N, S),
    if
        Left =:= 0, Have =:= 0 ->
            %% The buffer used the whole count: passive again at once.
            {emit({tlsport_passive, S1#s.handle}, S1#s{active = false}), skip};
        Left =:= 0 ->
            {S1, skip};
        true ->
            %% The daemon adds N to what it has left, as inet does.
            {closed_now_active(S1#s{active = {n, Have + Left}}), Left}
    end.

closed_now_active(#s{closed = {true, R}} = S) -> notify_closed(R, S);
closed_now_active(S) -> S.

hand_out(0, S) -> {S, 0};
hand_out(N, S) ->
    case queue:out(S#s.buf) of
        {{value, P}, Q} ->
            S1 = emit({tlsport, S#s.handle, convert(P, S)},
                      S#s{buf = Q, buf_bytes = S#s.buf_bytes - byte_size(P)}),
            hand_out(N - 1, S1);
        {empty, _} -> {S, N}
    end.

flush_buffer(S) ->
    S1 = lists:foldl(fun(P, Acc) -> emit({tlsport, S#s.handle, convert(P, S)}, Acc) end,
                     S, queue:to_list(S#s.buf)),
    S1#s{buf = queue:new(), buf_bytes = 0}.

getopt(active, #s{active = {n, N}, state = State}) ->
    case N - atomics:get(State, ?RECEIVED) of
        Left when Left > 0 -> Left;
        _ -> false
    end;
getopt(active, #s{active = inherited}) -> undefined;   % not known: left out
getopt(active, #s{active = A}) -> A;
getopt(mode, #s{format = F}) -> F;
getopt(packet, #s{mode = M}) -> packet_option(M);
getopt(_, _) -> undefined.

%% The daemon's mode string as the value of the `packet' option.
packet_option(<<"raw">>) -> raw;
packet_option(<<"binary_packet:0">>) -> raw;
packet_option(<<"packet:", N/binary>>) -> binary_to_integer(N);
packet_option(<<"binary_packet:", N/binary>>) -> binary_to_integer(N);
packet_option(Mode) -> binary_to_atom(Mode, utf8).     % asn1, line
