%% The one process that owns the control channel to tlsportd: a port
%% (port mode: the daemon is this node's port program) or a connection to
%% a shared daemon's Unix socket (attach mode, see below).
%%
%% It sends the commands that are not about one socket (listen, accept,
%% connect, resolve, ...), matches every reply to its caller by `ref',
%% routes events and received data, and keeps the listeners. Socket
%% processes write their own commands to the port (so that everything
%% about one socket leaves in order, and a busy port suspends the sender,
%% not this server); they announce the ref of each command with an
%% `{expect, Ref, Pid}' message first.
%%
%% Received data goes to the socket's process or, while the socket
%% process allows it (an active socket, see tlsport_socket), straight to
%% the socket's owner as the message the owner expects: one process hop
%% instead of two.
%%
%% The daemon's questions (password_needed, verify_peer) are answered
%% here: by a fun the options gave (run in a process of its own, so that a
%% slow fun holds up nobody else), or by a process that asked for them as
%% messages. The command the question is about says which: its ref (a
%% connect, listen, starttls, tls_context), or the listener whose
%% connection it is; a named context lends its callbacks to the sockets
%% made with it.
%%
%% When the daemon exits, every caller waiting here gets `{error, closed}',
%% every socket process sees this server go down, and the supervisor starts
%% a new daemon.
%%
%% Attach mode (application environment `attach'): no daemon is spawned;
%% the server connects to a running daemon's Unix socket, says hello with
%% the configured `name' and `grace_ms', and reads the channel itself
%% (4-byte frames, as {packet,4} does for the port). Every frame to the
%% daemon goes through one writer process (write_frame/2): a frame is
%% written whole or the channel is gone, whoever asked for it and whatever
%% becomes of them. Sockets and listeners the daemon gives back (`owned'
%% events, e.g. those a killed node of the same name left) are held here,
%% with what arrives for them, until reclaimed/0 hands them to a process,
%% or closed after `reclaim_timeout_ms'. The channel's end is the daemon's
%% death as in port mode; the supervisor's restart attaches again.
-module(tlsport_server).
-behaviour(gen_server).

-export([start_link/0, find_daemon/0, port/0, os_pid/0, hello/0, reclaimed/0,
         request/2, command/3, command/4, send_command/2, write_frame/2, route_via/2,
         listen/3, accept/3, connect/3, connect/4, close_listener/1, listener_request/3,
         tls_context/3, answer/2]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-include_lib("kernel/include/logger.hrl").
-include("tlsport.hrl").

-define(SERVER, ?MODULE).
-define(CALL_TIMEOUT, 60000).
%% How long sockets given back wait for a claim (reclaim_timeout_ms).
-define(RECLAIM_TIMEOUT_MS, 60000).
%% An unclaimed socket that has received this much is made passive.
-define(HOLD_BYTES, (1024 * 1024)).
%% Attach mode: reads of the Unix socket per turn.
-define(READS_PER_TURN, 16).

%% Where a socket's data goes: its process; straight to its owner
%% ({direct, Owner, Kind, Tag, SocketPid}); or held here until the socket
%% process confirms the switch to direct ({pending, Gen, Direct,
%% SocketPid, HeldDataReversed}). Attach mode adds sockets held here with
%% their data and events: given back by the daemon and not claimed yet
%% ({unclaimed, Held}), or accepted on a reclaimed listener while their
%% framing mode is asked for ({probing, HeldReversed}).
-type held() :: {data, binary()} | {event, map()}.
-type route() :: pid()
               | {direct, pid(), atom(), term(), pid()}
               | {pending, integer(), tuple(), pid(), [binary()]}
               | {unclaimed, #{owned := map(), held := [held()], bytes := non_neg_integer(),
                               paused := boolean()}}
               | {probing, [held()]}.

-record(st, {
    %% port mode: the daemon's port; attach mode: the Unix socket
    port :: port() | undefined,
    sock :: socket:socket() | undefined,
    %% what frames are written to (write_frame/2): the port, or the
    %% attach-mode writer process
    chan :: port() | pid(),
    writer :: pid(),
    %% attach mode: a frame not complete yet (reversed chunks), its bytes
    %% so far, and its size with the header once known (0: not yet)
    inbuf = [] :: [binary()],
    inlen = 0 :: non_neg_integer(),
    need = 0 :: non_neg_integer(),
    %% attach mode: given back by the daemon, not claimed yet (newest first)
    unclaimed = [] :: [{socket, integer()} | {listener, integer()}],
    reclaim_ms = ?RECLAIM_TIMEOUT_MS :: timeout(),
    os_pid :: integer() | undefined,
    path :: string() | undefined,
    hello = #{} :: map(),
    hello_waiters = [] :: [gen_server:from()],
    %% daemon ref => what to do with the reply
    pending = #{} :: #{integer() => term()},
    %% replies that arrived before their {expect, ...} (should not happen)
    early = #{} :: #{integer() => term()},
    %% socket id => route (see route/0); monitor => socket id
    sockets = #{} :: #{integer() => route()},
    sock_mons = #{} :: #{reference() => integer()},
    %% listener key => listener; accept id => accept waiter
    listeners = #{} :: #{integer() => map()},
    accepts = #{} :: #{reference() => map()},
    %% monitors of accept callers and listener owners
    mons = #{} :: #{reference() => {accept, reference()} | {listener, integer()}},
    %% callbacks for the daemon's questions: by the ref of a command still
    %% waiting for its reply, and by tls_context name
    cbs = #{} :: #{integer() => callbacks()},
    contexts = #{} :: #{binary() => callbacks()},
    %% most sockets open since the last trim, and whether one is due (trim/1)
    peak = 0 :: non_neg_integer(),
    trim_due = false :: boolean()
}).

%% Heaps are trimmed only after a drop from at least this many sockets.
-define(TRIM_AFTER, 64).
-define(TRIM_DELAY_MS, 1000).

%% See tlsport_lib:tls_callbacks/1.
-type callbacks() :: none | {context, binary()} | map().

%%% ================================================================ API

start_link() ->
    gen_server:start_link({local, ?SERVER}, ?MODULE, [], []).

%% @doc Where the daemon binary is: the application environment
%% (`tlsportd'), $TLSPORTD, `tlsportd' on PATH (an installed daemon), then
%% the build tree (<repo>/build/daemon/tlsportd).
-spec find_daemon() -> {ok, string()} | {error, {tlsportd_not_found, [string()]}}.
find_daemon() ->
    Explicit = [case application:get_env(tlsport, tlsportd) of
                    {ok, Path} -> Path;
                    undefined -> undefined
                end,
                case os:getenv("TLSPORTD") of
                    false -> undefined;
                    "" -> undefined;
                    Env -> Env
                end],
    case [P || P <- Explicit, P =/= undefined] of
        [Given | _] ->
            %% A path given explicitly is used or reported, never skipped.
            case filelib:is_regular(Given) of
                true -> {ok, Given};
                false -> {error, {tlsportd_not_found, [Given]}}
            end;
        [] ->
            Candidates = case os:find_executable("tlsportd") of
                             false -> ["tlsportd on PATH"];
                             Installed -> [Installed]
                         end ++ build_tree_paths(),
            case [P || P <- Candidates, filelib:is_regular(P)] of
                [Found | _] -> {ok, Found};
                [] -> {error, {tlsportd_not_found, Candidates}}
            end
    end.

build_tree_paths() ->
    AppDirs =
        case code:lib_dir(tlsport) of
            {error, _} -> [];
            Lib ->
                Abs = filename:absname(Lib),
                %% Under rebar3 the application lives in <app>/_build/<profile>/lib/tlsport.
                case string:split(Abs, "/_build/", trailing) of
                    [Src, _] -> [Src, Abs];
                    _ -> [Abs]
                end
        end,
    lists:usort([normalize(filename:join([D, "..", "..", "build", "daemon", "tlsportd"]))
                 || D <- AppDirs]).

normalize(Path) ->
    normalize(filename:split(Path), []).
normalize([], Acc) -> filename:join(lists:reverse(Acc));
normalize([".." | T], [Prev | Acc]) when Prev =/= "/" -> normalize(T, Acc);
normalize(["." | T], Acc) -> normalize(T, Acc);
normalize([H | T], Acc) -> normalize(T, [H | Acc]).

%% @doc The daemon's port (socket processes write to it directly);
%% undefined in attach mode.
port() -> gen_server:call(?SERVER, port, ?CALL_TIMEOUT).

%% @doc The daemon's OS process id (undefined in attach mode).
os_pid() -> gen_server:call(?SERVER, os_pid, ?CALL_TIMEOUT).

%% @doc The daemon's answer to hello (version, capabilities; in attach
%% mode also this client's number, name and grace_ms).
hello() -> gen_server:call(?SERVER, hello, ?CALL_TIMEOUT).

%% @doc Attach mode: the sockets and listeners the daemon gave back and
%% nobody has claimed yet; the caller becomes their owner. Complete once
%% the application has started (init/1 waits for every `owned' event of
%% the hello). Port mode: always `{ok, []}'.
-spec reclaimed() -> {ok, [#tlsport_socket{} | #tlsport_listen{}]} | {error, term()}.
reclaimed() -> safe_call(reclaimed, ?CALL_TIMEOUT).

%% @doc Sends a command (a map without `ref') and waits for its reply:
%% `{ok, ReplyMap}' or `{error, ErrorMap | closed}'.
-spec request(map(), timeout()) -> {ok, map()} | {error, term()}.
request(Command, Timeout) ->
    safe_call({request, Command}, Timeout).

%% @doc Called by a socket process: writes a command about its own socket
%% to the port; the reply comes as `{tlsport_reply, Ref, Result}'.
-spec command(port(), pid(), map()) -> {ok, integer()} | {error, closed}.
command(Port, Server, Command) ->
    command(Port, Server, Command, none).

%% @doc As command/3, for a command whose TLS settings may make the daemon
%% ask questions (starttls): `Cbs' answers them.
-spec command(port(), pid(), map(), callbacks()) -> {ok, integer()} | {error, closed}.
command(Port, Server, Command, Cbs) ->
    Ref = erlang:unique_integer([positive, monotonic]),
    Server ! {expect, Ref, self(), Cbs},
    case send_command(Port, Command#{ref => Ref}) of
        ok -> {ok, Ref};
        Error -> Error
    end.

%% @doc Called by a socket process: from the moment this returns, the
%% socket's data goes through the socket process.
-spec route_via(pid(), integer()) -> ok | {error, closed}.
route_via(Server, Id) ->
    try gen_server:call(Server, {route_via, Id}, infinity)
    catch exit:_ -> {error, closed}
    end.

%% @doc Writes one command frame, no reply expected by anyone.
-spec send_command(port() | pid(), map()) -> ok | {error, closed}.
send_command(Chan, Command) ->
    write_frame(Chan, [0, term_to_binary(Command)]).

%% @doc Writes one frame body (CONTROL or DATA) to the daemon: every frame
%% the library writes goes through here. Port mode: straight to the port
%% (a busy port suspends the caller). Attach mode: to the writer process,
%% which alone writes to the Unix socket, so that frames are never
%% interleaved nor cut short by a writer that dies mid-write; how much
%% can wait there is bounded by the sockets' send windows
%% (tlsport_socket) and the commands in flight.
-spec write_frame(port() | pid(), iodata()) -> ok | {error, closed}.
write_frame(Port, Frame) when is_port(Port) ->
    try erlang:port_command(Port, Frame) of
        true -> ok
    catch error:badarg -> {error, closed}
    end;
write_frame(Writer, Frame) when is_pid(Writer) ->
    Writer ! {write, Frame},
    ok.

%% @doc Opens a listener. `Style' is seed (no TLS settings: every accept
%% brings its SSLFlags) or modern (the TLS settings are the listener's).
-spec listen(seed | modern, map(), pid()) -> {ok, integer(), inet:port_number()} | {error, term()}.
listen(Style, Params, Owner) ->
    safe_call({listen, Style, Params, Owner}, infinity).

%% @doc Waits for a connection on the listener `Key'. `How' is
%% `{seed, Flags}' or `{modern, SocketOpts}'. Killing the caller cancels it.
-spec accept(integer(), term(), timeout()) -> {ok, pid() | #tlsport_socket{}} | {error, term()}.
accept(Key, How, Timeout) ->
    safe_call({accept, Key, How, Timeout}, infinity).

%% @doc Connects; the new socket process is owned by the caller.
-spec connect(map(), map(), timeout()) -> {ok, pid() | #tlsport_socket{}} | {error, term()}.
connect(Command, SockArgs, Timeout) ->
    connect(Command, SockArgs, Timeout, none).

-spec connect(map(), map(), timeout(), callbacks()) ->
          {ok, pid() | #tlsport_socket{}} | {error, term()}.
connect(Command, SockArgs, _Timeout, Cbs) ->
    safe_call({connect, Command, SockArgs, Cbs}, infinity).

%% @doc Defines (or redefines) the named TLS context `Name'.
-spec tls_context(binary(), map(), callbacks()) -> {ok, map()} | {error, term()}.
tls_context(Name, Tls, Cbs) ->
    safe_call({tls_context, Name, Tls, Cbs}, infinity).

%% @doc Answers the daemon's question number N: `#{password => P}' or
%% `#{accept => Bool}'.
-spec answer(pos_integer(), map()) -> ok | {error, term()}.
answer(N, Fields) ->
    case request(Fields#{op => answer, request => N}, 30000) of
        {ok, _} -> ok;
        Error -> Error
    end.

%% @doc Closes a listener.
-spec close_listener(integer()) -> ok | {error, term()}.
close_listener(Key) ->
    safe_call({close_listener, Key}, ?CALL_TIMEOUT).

%% @doc A command about a listener (e.g. sockname), by key.
-spec listener_request(integer(), map(), timeout()) -> {ok, map()} | {error, term()}.
listener_request(Key, Command, Timeout) ->
    safe_call({listener_request, Key, Command}, Timeout).

safe_call(Msg, Timeout) ->
    try gen_server:call(?SERVER, Msg, Timeout)
    catch
        exit:{noproc, _} -> {error, not_started};
        exit:{timeout, _} -> {error, timeout};
        exit:{_, _} -> {error, closed}
    end.

%%% ================================================================ gen_server

init([]) ->
    process_flag(trap_exit, true),
    case application:get_env(tlsport, attach) of
        {ok, Path} -> init_attach(Path);
        undefined -> init_port()
    end.

init_port() ->
    case find_daemon() of
        {ok, Path} ->
            Args = application:get_env(tlsport, tlsportd_args, []),
            Env = application:get_env(tlsport, tlsportd_env, []),
            Cd = case application:get_env(tlsport, tlsportd_cd) of
                     {ok, Dir} -> [{cd, Dir}];
                     undefined -> []
                 end,
            try open_port({spawn_executable, Path},
                          [{packet, 4}, binary, exit_status, use_stdio,
                           {args, Args}, {env, Env} | Cd]) of
                Port ->
                    OsPid = case erlang:port_info(Port, os_pid) of
                                {os_pid, P} -> P;
                                undefined -> undefined
                            end,
                    %% The first command is ETF, so the daemon answers in ETF.
                    ok = send_command(Port, #{op => hello, ref => 0}),
                    %% This server's commands go through a writer process: a
                    %% busy port suspends the writer, never this server, which
                    %% keeps routing events and can always stop.
                    Writer = spawn_link(fun() -> writer(Port) end),
                    {ok, #st{port = Port, chan = Port, writer = Writer, os_pid = OsPid,
                             path = Path}}
            catch error:Reason ->
                ?LOG_ERROR("tlsport: cannot start ~s: ~p", [Path, Reason]),
                {stop, {cannot_start_tlsportd, Path, Reason}}
            end;
        {error, {tlsportd_not_found, Tried}} = Error ->
            ?LOG_ERROR("tlsport: no tlsportd binary found; set the application "
                       "environment tlsport/tlsportd or $TLSPORTD, install it on "
                       "PATH, or build it into <repo>/build/daemon. Tried: ~p", [Tried]),
            {stop, element(2, Error)}
    end.

%%% ================================================================ attach mode

init_attach(Path) ->
    try tlsport_attach:config(Path, #{reclaim_ms => ?RECLAIM_TIMEOUT_MS}) of
        Config ->
            case tlsport_attach:connect(Config) of
                {ok, Sock, Reply, Frames, Rest} -> {ok, attached(Sock, Config, Reply, Frames, Rest)};
                {stop, _} = Stop -> Stop
            end
    catch throw:{bad_config, What} ->
        ?LOG_ERROR("tlsport: bad attach configuration: ~p", [What]),
        {stop, {bad_config, What}}
    end.

%% The channel is up and hello answered: the state, with the frames that
%% came before hello's (and stats') reply handled, and reading started.
attached(Sock, #{name := Name, reclaim_ms := ReclaimMs}, Reply, Frames, Rest) ->
    Writer = spawn_link(fun() -> tlsport_attach:writer(Sock) end),
    St0 = #st{sock = Sock, chan = Writer, writer = Writer, hello = Reply, reclaim_ms = ReclaimMs},
    St1 = lists:foldl(fun(F, S) ->
                              {noreply, S1} = frame(F, S),
                              S1
                      end, St0, Frames),
    {noreply, St} = input(Rest, St1),
    self() ! {tlsport_read, Sock},
    ?LOG_INFO("tlsport: attached to tlsportd as client ~p~ts",
              [maps:get(client, Reply, undefined),
               case Name of undefined -> ""; _ -> [" (", Name, ")"] end]),
    St.

%% Reads what the Unix socket has, a few times per turn (then lets the
%% mailbox in), until the read would wait: the runtime then sends a
%% select message.
read_channel(St, 0) ->
    self() ! {tlsport_read, St#st.sock},
    {noreply, St};
read_channel(#st{sock = Sock} = St, N) ->
    case socket:recv(Sock, 0, nowait) of
        {ok, Data} ->
            case input(Data, St) of
                {noreply, St1} -> read_channel(St1, N - 1);
                Stop -> Stop
            end;
        {select, {_Info, Data}} ->
            input(Data, St);
        {select, _Info} ->
            {noreply, St};
        {error, Why} ->
            channel_end(Why, St)
    end.

channel_end(Why, St) ->
    ?LOG_WARNING("tlsport: the channel to tlsportd ended: ~p", [Why]),
    {stop, {shutdown, {tlsportd_exit, Why}}, St}.

%% Bytes from the Unix socket: whole frames are handled, the rest waits.
input(Data, #st{inlen = Len0, need = Need} = St) ->
    Len = Len0 + byte_size(Data),
    Buf = [Data | St#st.inbuf],
    case Need > 0 andalso Len < Need of
        true -> {noreply, St#st{inbuf = Buf, inlen = Len}};
        false -> frames(iolist_to_binary(lists:reverse(Buf)), St#st{inbuf = [], inlen = 0, need = 0})
    end.

frames(<<Len:32, Body:Len/binary, Rest/binary>> = All, St) ->
    %% A small frame is copied out of a large read, which it would
    %% otherwise keep alive for as long as its data is referenced.
    Frame = case byte_size(All) > 4 * Len of
                true -> binary:copy(Body);
                false -> Body
            end,
    case frame(Frame, St) of
        {noreply, St1} -> frames(Rest, St1);
        Stop -> Stop
    end;
frames(<<>>, St) ->
    {noreply, St};
frames(<<Len:32, _/binary>> = Part, St) ->
    {noreply, St#st{inbuf = [Part], inlen = byte_size(Part), need = Len + 4}};
frames(Part, St) ->
    {noreply, St#st{inbuf = [Part], inlen = byte_size(Part), need = 0}}.

%% Closes the channel: what the writer holds goes first (for a while).
%% The daemon keeps running; with a grace period it keeps this client's
%% sockets for a successor of the same name.
close_channel(#st{sock = Sock, writer = Writer}) ->
    unlink(Writer),
    Mon = erlang:monitor(process, Writer),
    Ref = make_ref(),
    Writer ! {flush, self(), Ref},
    receive
        {flushed, Ref} -> ok;
        {'DOWN', Mon, process, Writer, _} -> ok
    after 2000 -> ok
    end,
    erlang:demonitor(Mon, [flush]),
    exit(Writer, kill),
    _ = socket:close(Sock),
    ok.

handle_call(port, _From, St) ->
    {reply, St#st.port, St};
handle_call(os_pid, _From, St) ->
    {reply, St#st.os_pid, St};
handle_call(hello, From, #st{hello = Hello} = St) when map_size(Hello) =:= 0 ->
    {noreply, St#st{hello_waiters = [From | St#st.hello_waiters]}};
handle_call(hello, _From, St) ->
    {reply, St#st.hello, St};
handle_call({request, Command}, From, St) ->
    {noreply, send(Command, {call, From}, St)};
handle_call({listen, Style, Params, Owner}, From, St) ->
    Command0 = maps:with([host, port, mode, backlog, packet_size, handshake_timeout_ms,
                          idle_timeout_ms, close_timeout_ms, active],
                         Params),
    %% Without `tls' the daemon takes each accept's own (seed 004).
    Command = case Style of
                  seed -> Command0;
                  modern -> Command0#{tls => maps:get(tls, Params)}
              end,
    {noreply, send(Command#{op => listen}, {listen, From, Style, Params, Owner},
                   maps:get(callbacks, Params, none), St)};
handle_call({accept, Key, How, Timeout}, {Caller, _} = From, St) ->
    case maps:find(Key, St#st.listeners) of
        {ok, #{state := closed}} -> {reply, {error, closed}, St};
        {ok, #{style := Style}} when element(1, How) =/= Style -> {reply, {error, einval}, St};
        {ok, #{did := Did, params := Params, style := Style} = L} ->
            AId = make_ref(),
            Mon = erlang:monitor(process, Caller),
            Timer = case Timeout of
                        infinity -> undefined;
                        _ -> erlang:send_after(Timeout, self(), {accept_timeout, AId})
                    end,
            Extra = case How of
                        {seed, Flags} -> #{tls => #{flags => Flags}};
                        {modern, _} -> maps:with([active], Params)
                    end,
            Ref = erlang:unique_integer([positive, monotonic]),
            ok = write(Extra#{op => accept, id => Did, ref => Ref}, St),
            A = #{key => Key, from => From, mon => Mon, timer => Timer, dref => Ref,
                  status => issued, sock_args => sock_args(Style, Params)},
            {noreply, St#st{accepts = maps:put(AId, A, St#st.accepts),
                            mons = maps:put(Mon, {accept, AId}, St#st.mons),
                            pending = maps:put(Ref, {accept, AId}, St#st.pending),
                            listeners = maps:put(Key, L#{issued => maps:get(issued, L) + 1},
                                                 St#st.listeners)}};
        error -> {reply, {error, closed}, St}
    end;
handle_call({connect, Command, SockArgs, Cbs}, {Caller, _} = From, St) ->
    {noreply, send(Command#{op => connect}, {connect, From, SockArgs#{owner => Caller}}, Cbs, St)};
handle_call({tls_context, Name, Tls, Cbs}, From, St) ->
    {noreply, send(#{op => tls_context, name => Name, tls => Tls}, {context, From, Name, Cbs},
                   Cbs, St)};
handle_call({close_listener, Key}, _From, St) ->
    {reply, ok, close_listener(Key, closed, St)};
handle_call(reclaimed, {Caller, _}, St) ->
    {Handles, St1} = lists:foldl(fun(Item, {Acc, S}) ->
                                         case claim(Item, Caller, S) of
                                             {none, S1} -> {Acc, S1};
                                             {Handle, S1} -> {[Handle | Acc], S1}
                                         end
                                 end, {[], St#st{unclaimed = []}}, lists:reverse(St#st.unclaimed)),
    {reply, {ok, lists:reverse(Handles)}, St1};
handle_call({route_via, Id}, _From, St) ->
    {reply, ok, St#st{sockets = to_via(Id, St#st.sockets)}};
handle_call({listener_request, Key, Command}, From, St) ->
    case maps:find(Key, St#st.listeners) of
        {ok, #{did := Did}} when is_integer(Did) ->
            {noreply, send(Command#{id => Did}, {call, From}, St)};
        _ -> {reply, {error, closed}, St}
    end;
handle_call(_Other, _From, St) ->
    {reply, {error, badarg}, St}.

handle_cast(_Msg, St) ->
    {noreply, St}.

handle_info({Port, {data, Frame}}, #st{port = Port} = St) ->
    frame(Frame, St);
handle_info({'$socket', Sock, select, _}, #st{sock = Sock} = St) ->
    read_channel(St, ?READS_PER_TURN);
handle_info({tlsport_read, Sock}, #st{sock = Sock} = St) ->
    read_channel(St, ?READS_PER_TURN);
handle_info({'$socket', Sock, abort, {_, Why}}, #st{sock = Sock} = St) ->
    channel_end(Why, St);
handle_info({Port, {exit_status, Status}}, #st{port = Port} = St) ->
    ?LOG_WARNING("tlsport: tlsportd exited with status ~p", [Status]),
    {stop, {shutdown, {tlsportd_exit, Status}}, St};
handle_info({'EXIT', Port, Reason}, #st{port = Port} = St) ->
    ?LOG_WARNING("tlsport: the tlsportd port closed: ~p", [Reason]),
    {stop, {shutdown, {tlsportd_exit, Reason}}, St};
handle_info({expect, Ref, Pid}, St) ->

    handle_info({expect, Ref, Pid, none}, St);
handle_info({expect, Ref, Pid, Cbs}, St) ->
    case maps:take(Ref, St#st.early) of
        {Result, Early} ->
            Pid ! {tlsport_reply, Ref, Result},
            {noreply, St#st{early = Early}};
        error ->
            {noreply, with_cbs(Ref, Cbs, St#st{pending = maps:put(Ref, {expect, Pid}, St#st.pending)})}
    end;
handle_info({route_direct, Id, Pid, Gen, Direct}, #st{sockets = Sockets} = St) ->
    %% The socket process wants its data sent to the owner directly. Data
    %% is held from now on; the marker tells the socket process when it has
    %% handled everything sent to it before.
    case Sockets of
        #{Id := Route} ->
            case route_pid(Route) of
                Pid ->
                    Held = case Route of
                               {pending, _, _, _, H} -> H;
                               _ -> []
                           end,
                    Pid ! {route_marker, Id, Gen},
                    {noreply, St#st{sockets = Sockets#{Id := {pending, Gen, Direct, Pid, Held}}}};
                _ ->
                    {noreply, St}
            end;
        _ ->
            {noreply, St}
    end;
handle_info({route_confirm, Id, Gen}, #st{sockets = Sockets} = St) ->
    case Sockets of
        #{Id := {pending, Gen, {direct, Owner, Kind, Tag, _} = Direct, _, Held}} ->
            [Owner ! direct_message(Kind, Tag, D) || D <- lists:reverse(Held)],
            {noreply, St#st{sockets = Sockets#{Id := Direct}}};
        _ ->
            {noreply, St}
    end;
handle_info({socket_done, Id}, St) ->
    {noreply, trim(St#st{sockets = maps:remove(Id, St#st.sockets)})};
handle_info({reclaim_expired, Item}, St) ->
    case lists:member(Item, St#st.unclaimed) of
        true -> {noreply, expire(Item, St#st{unclaimed = lists:delete(Item, St#st.unclaimed)})};
        false -> {noreply, St}
    end;
handle_info({accept_timeout, AId}, St) ->
    {noreply, abandon_accept(AId, timeout, St)};
handle_info({'DOWN', Mon, process, _Pid, Reason}, St) ->
    case maps:take(Mon, St#st.sock_mons) of
        {Id, SockMons} ->
            St1 = St#st{sock_mons = SockMons},
            case maps:take(Id, St1#st.sockets) of
                {_, Sockets} when Reason =:= shutdown, St1#st.sock =/= undefined ->
                    %% Attach mode, the application is stopping: the socket
                    %% goes with the channel (with a grace period, the daemon
                    %% keeps it for a successor).
                    {noreply, St1#st{sockets = Sockets}};
                {_, Sockets} ->
                    %% The socket process died without closing its socket.
                    {noreply, trim(ignore(#{op => close, id => Id}, St1#st{sockets = Sockets}))};
                error ->
                    {noreply, St1}
            end;
        error ->
            case maps:take(Mon, St#st.mons) of
                {{accept, AId}, Mons} ->
                    {noreply, abandon_accept(AId, caller_down, St#st{mons = Mons})};
                {{listener, Key}, Mons} ->
                    {noreply, close_listener(Key, closed, St#st{mons = Mons})};
                error ->
                    {noreply, St}
            end
    end;
handle_info({'EXIT', Writer, Reason}, #st{writer = Writer} = St) ->
    {stop, {shutdown, {tlsportd_exit, Reason}}, St};
handle_info({'EXIT', _Pid, _Reason}, St) ->
    {noreply, St};
handle_info({trim, Count}, St) ->
    case map_size(St#st.sockets) of
        Count ->
            case whereis(tlsport_socket_sup) of
                undefined -> ok;
                Sup -> erlang:garbage_collect(Sup)
            end,
            %% Hibernating compacts the heap only if no message waits then
            %% (traffic of other sockets may): a full collection first.
            erlang:garbage_collect(),
            {noreply, St#st{peak = Count, trim_due = false}, hibernate};
        Now ->
            %% Still closing: a heap compacted now would grow back at once.
            erlang:send_after(?TRIM_DELAY_MS, self(), {trim, Now}),
            {noreply, St}
    end;
handle_info(Other, St) ->
    ?LOG_DEBUG("tlsport: unexpected message ~p", [Other]),
    {noreply, St}.

terminate(_Reason, St) ->
    %% Nobody waits forever: every caller still waiting here hears now.
    maps:foreach(fun(_Ref, W) -> fail_waiter(W, closed) end, St#st.pending),
    maps:foreach(fun(_AId, #{from := From}) -> gen_server:reply(From, {error, closed}) end,
                 St#st.accepts),
    case St#st.sock of
        undefined -> stop_daemon(St);
        _ -> close_channel(St)
    end.

%% Closes the port: the daemon sees EOF, sends close_notify to every peer
%% and exits (within a second, more when a peer is slow to take what is
%% left). The library holds data for busy sockets, so the daemon never
%% stops reading this node's commands on its account. A daemon that has
%% stopped all the same (something wrote past the daemon's hard limit, or a packet larger than
%% about 3 MiB went to a peer that does not read) keeps the port open:
%% the runtime flushes a closing port's output first, and the daemon
%% never sees the EOF (test stop_with_paused_daemon). Such a daemon gets
%% SIGTERM (the same orderly shutdown), then SIGKILL.
stop_daemon(St) ->
    unlink(St#st.writer),
    exit(St#st.writer, kill),
    catch erlang:port_close(St#st.port),
    case St#st.os_pid of
        OsPid when is_integer(OsPid) ->
            gone(OsPid, 2000) orelse
                begin
                    ?LOG_WARNING("tlsport: tlsportd (~p) did not exit after EOF; terminating it", [OsPid]),
                    _ = os:cmd("kill -TERM " ++ integer_to_list(OsPid)),
                    _ = gone(OsPid, 2000) orelse os:cmd("kill -KILL " ++ integer_to_list(OsPid))
                end,
            ok;
        _ ->
            ok
    end.

gone(OsPid, Ms) ->
    case filelib:is_dir("/proc/self") of
        false -> true;                      % no procfs: cannot tell, assume it left
        true -> gone_poll("/proc/" ++ integer_to_list(OsPid), Ms)
    end.

gone_poll(Dir, Ms) ->
    case filelib:is_dir(Dir) of
        false -> true;
        true when Ms =< 0 -> false;
        true -> timer:sleep(20), gone_poll(Dir, Ms - 20)
    end.

writer(Port) ->
    receive
        {write, Frame} ->
            case write_frame(Port, Frame) of
                ok -> writer(Port);
                {error, closed} -> exit(port_closed)
            end
    end.

%%% ================================================================ frames

%% One frame body from the daemon (port or Unix socket).
frame(<<1, Id:32, Data/binary>>, #st{sockets = Sockets} = St) ->
    case Sockets of
        #{Id := {direct, Owner, Kind, Tag, _}} ->
            Owner ! direct_message(Kind, Tag, Data),
            {noreply, St};
        #{Id := Pid} when is_pid(Pid) ->
            Pid ! {tlsport_data, Id, Data},
            {noreply, St};
        #{Id := {pending, Gen, Direct, Pid, Held}} ->
            {noreply, St#st{sockets = Sockets#{Id := {pending, Gen, Direct, Pid, [Data | Held]}}}};
        #{Id := {unclaimed, _}} ->
            {noreply, hold(Id, {data, Data}, St)};
        #{Id := {probing, Held}} ->
            {noreply, St#st{sockets = Sockets#{Id := {probing, [{data, Data} | Held]}}}};
        _ ->
            {noreply, St}   % a socket being closed by its owner: nobody wants it
    end;
frame(<<0, Term/binary>>, St) ->
    case binary_to_term(Term) of
        #{ok := false, error := #{kind := <<"emsgsize">>} = E} = M
          when not is_map_key(ref, M), not is_map_key(id, M) ->
            %% The daemon lost the framing of our input and drops us (a
            %% port daemon then exits too). Start again with a new one.
            ?LOG_ERROR("tlsport: tlsportd dropped the control channel: ~p", [E]),
            {stop, {shutdown, {tlsportd_exit, control_channel_lost}}, St};
        M ->
            {noreply, control(M, St)}
    end;
frame(Other, St) ->
    ?LOG_WARNING("tlsport: a frame of unknown type from tlsportd: ~P", [Other, 10]),
    {noreply, St}.

%%% ================================================================ replies

send(Command, Waiter, St) ->
    send(Command, Waiter, none, St).

send(Command, Waiter, Cbs, St) ->
    Ref = erlang:unique_integer([positive, monotonic]),
    write(Command#{ref => Ref}, St),
    with_cbs(Ref, Cbs, St#st{pending = maps:put(Ref, Waiter, St#st.pending)}).

with_cbs(_Ref, none, St) -> St;
with_cbs(Ref, Cbs, St) -> St#st{cbs = maps:put(Ref, Cbs, St#st.cbs)}.

write(Command, St) ->
    St#st.writer ! {write, [0, term_to_binary(Command)]},
    ok.

%% A command whose reply nobody needs (its errors are not worth a warning).
ignore(Command, St) ->
    send(Command, ignore, St).

fail_waiter({call, From}, Reason) -> gen_server:reply(From, {error, Reason});
fail_waiter({listen, From, _, _, _}, Reason) -> gen_server:reply(From, {error, Reason});
fail_waiter({connect, From, _}, Reason) -> gen_server:reply(From, {error, Reason});
fail_waiter({context, From, _, _}, Reason) -> gen_server:reply(From, {error, Reason});
fail_waiter(_, _) -> ok.

result(#{ok := true} = M) -> {ok, M};
result(#{error := E}) -> {error, E};
result(M) -> {error, M}.

control(#{event := <<"password_needed">>} = Question, St) ->
    question(password, Question, St);
control(#{event := <<"verify_peer">>} = Question, St) ->
    question(verify, Question, St);
control(#{event := <<"owned">>, id := Id} = Event, St) when not is_map_key(Id, St#st.sockets) ->
    adopt(Event#{event := owned}, St);
control(#{event := _, id := Id} = Event, St) ->
    Event1 = Event#{event := binary_to_atom(maps:get(event, Event), utf8)},
    case St#st.sockets of
        #{Id := {unclaimed, _}} ->
            hold(Id, {event, Event1}, St);
        #{Id := {probing, Held}} ->
            St#st{sockets = maps:put(Id, {probing, [{event, Event1} | Held]}, St#st.sockets)};
        #{Id := _} ->
            case Event1 of
                #{event := socket_closed} ->
                    %% After all the socket's data (held data included).
                    Sockets = to_via(Id, St#st.sockets),
                    maps:get(Id, Sockets) ! {tlsport_event, Id, Event1},
                    trim(St#st{sockets = maps:remove(Id, Sockets)});
                _ ->
                    route_pid(maps:get(Id, St#st.sockets)) ! {tlsport_event, Id, Event1},
                    St
            end;
        _ -> St
    end;
control(#{ref := 0} = Hello, St) ->
    [gen_server:reply(W, Hello) || W <- St#st.hello_waiters],
    St#st{hello = Hello, hello_waiters = []};
control(#{ref := Ref} = Reply, St0) ->
    St = St0#st{cbs = maps:remove(Ref, St0#st.cbs)},
    case maps:take(Ref, St#st.pending) of
        {{expect, Pid}, Pending} ->
            Pid ! {tlsport_reply, Ref, result(Reply)},
            St#st{pending = Pending};
        {Waiter, Pending} -> reply(Waiter, result(Reply), St#st{pending = Pending});
        error -> St#st{early = maps:put(Ref, result(Reply), St#st.early)}
    end;
control(#{ok := false, id := Id, error := E}, St) ->
    %% A deliver failed (no ref): tell the socket.
    case St#st.sockets of
        #{Id := Route} when is_pid(Route); element(1, Route) =:= direct;
                            element(1, Route) =:= pending ->
            route_pid(Route) ! {tlsport_deliver_error, Id, E};
        _ -> ok
    end,
    St;
control(#{ok := false, error := E}, St) ->
    ?LOG_WARNING("tlsport: tlsportd reported ~p", [E]),
    St;
control(_Other, St) ->
    St.

reply({call, From}, Result, St) ->
    gen_server:reply(From, Result),
    St;
reply(ignore, _Result, St) ->
    St;
reply({context, From, Name, Cbs}, {ok, M}, St) ->
    gen_server:reply(From, {ok, maps:with([server, replaced], M)}),
    St#st{contexts = maps:put(Name, Cbs, St#st.contexts)};
reply({context, From, _, _}, {error, _} = Error, St) ->
    gen_server:reply(From, Error),
    St;
reply({listen, From, Style, Params, Owner}, {ok, #{id := Did, port := Port}}, St) ->
    Key = erlang:unique_integer([positive]),
    L0 = #{key => Key, style => Style, did => Did, port => Port, state => ready,
           issued => 0, params => Params},
    {L, Mons} = case Style of
                    modern ->
                        Mon = erlang:monitor(process, Owner),
                        {L0#{owner_mon => Mon}, maps:put(Mon, {listener, Key}, St#st.mons)};
                    seed ->
                        {L0, St#st.mons}
                end,
    gen_server:reply(From, {ok, Key, Port}),
    St#st{listeners = maps:put(Key, L, St#st.listeners), mons = Mons};
reply({listen, From, _, _, _}, {error, _} = Error, St) ->
    gen_server:reply(From, Error),
    St;
reply({connect, From, SockArgs}, {ok, #{id := Id} = M}, St) ->
    {St1, Result} = start_socket(Id, SockArgs#{peer => maps:get(peer, M, undefined)}, St),
    gen_server:reply(From, Result),
    St1;
reply({connect, From, _}, {error, _} = Error, St) ->
    gen_server:reply(From, Error),
    St;
reply({accept, AId}, Result, St) ->
    accept_done(AId, Result, St);
reply({probe, AId, {ok, #{id := Id}} = Accepted}, Info, St) ->
    Mode = case Info of
               {ok, #{mode := M}} when is_binary(M) -> M;
               _ -> <<"raw">>      % closed meanwhile: its socket_closed is held
           end,
    Held = case maps:find(Id, St#st.sockets) of
               {ok, {probing, H}} -> lists:reverse(H);
               _ -> []
           end,
    St1 = St#st{sockets = maps:remove(Id, St#st.sockets)},
    case maps:find(AId, St1#st.accepts) of
        {ok, #{key := Key, sock_args := Args} = A} ->
            %% Later accepts on the listener know the mode at once.
            Listeners = case maps:find(Key, St1#st.listeners) of
                            {ok, #{params := Params} = L} ->
                                maps:put(Key, L#{params := Params#{mode => Mode}}, St1#st.listeners);
                            error ->
                                St1#st.listeners
                        end,
            St2 = St1#st{listeners = Listeners,
                         accepts = maps:put(AId, A#{sock_args := Args#{mode => Mode}}, St1#st.accepts)},
            replay(Id, Held, finish_accept(AId, Accepted, St2));
        error ->
            ignore(#{op => close, id => Id}, St1)
    end.

%%% ================================================================ sockets

start_socket(Id, Args, St) ->
    Full = Args#{id => Id, port => St#st.chan, server => self(), state => atomics:new(tlsport_socket:state_size(), [])},
    case tlsport_socket_sup:start_socket(Full) of
        {ok, Pid} ->
            Mon = erlang:monitor(process, Pid),
            Handle = tlsport_socket:handle(Pid, Full),
            Route = tlsport_socket:initial_route(Full, Pid),
            Sockets = maps:put(Id, Route, St#st.sockets),
            {St#st{sockets = Sockets, sock_mons = maps:put(Mon, Id, St#st.sock_mons),
                   peak = max(St#st.peak, map_size(Sockets))},
             {ok, Handle}};
        Error ->
            ?LOG_ERROR("tlsport: cannot start a socket process: ~p", [Error]),
            {ignore(#{op => close, id => Id}, St), {error, closed}}
    end.

%% Many sockets closed (a quarter of at least ?TRIM_AFTER since the peak):
%% this server's heap and the socket supervisor's grew with them and, being
%% long-lived and often idle, would keep that memory until a collection
%% that may never come (and a collection alone does not shrink a heap all
%% the way). Once the number of sockets has stayed the same for a second
%% (a mass close is over), this server has the supervisor collected, then
%% collects itself fully and hibernates once (the smallest heap, but only
%% if no message is waiting then; the next message wakes it). Never on the
%% data path, and at most once a second.
trim(#st{trim_due = false, peak = Peak, sockets = Sockets} = St) when Peak >= ?TRIM_AFTER ->
    case map_size(Sockets) =< Peak div 4 * 3 of
        true ->
            erlang:send_after(?TRIM_DELAY_MS, self(), {trim, map_size(Sockets)}),
            St#st{trim_due = true};
        false ->
            St
    end;
trim(St) ->
    St.

%%% ================================================================ questions

%% A password_needed or verify_peer event: whoever the command's options
%% named answers it. A question nobody here can answer is left to the
%% daemon's callback timeout (a password) or rejected (a peer).
question(Kind, #{request := N} = Q, St) ->
    Cbs = resolve_cbs(question_cbs(Q, St), St),
    case {Kind, Cbs} of
        {password, #{password := How, timeout := T}} ->
            Source = binary_to_list(maps:get(source, Q, <<>>)),
            ask(How, T, N, {tlsport_password, {tlsport_request, N}, Source},
                fun(F) when is_function(F, 0) -> #{password => iolist_to_binary(F())};
                   (F) -> #{password => iolist_to_binary(F(Source))}
                end, #{password => <<>>});
        {verify, #{verify := How, timeout := T}} ->
            Chain = [tlsport_peer_info:cert_map(C) || C <- maps:get(peer_chain, Q, [])],
            Result = maps:get(verify_result, Q, #{}),
            ask(How, T, N, {tlsport_verify, {tlsport_request, N},
                            #{peer_chain => Chain, verify_result => Result}},
                fun({F, UserState}) ->
                        #{accept => tlsport_peer_info:verify_chain(F, UserState, Chain, Result)}
                end, #{accept => false});
        {verify, _} ->
            ?LOG_WARNING("tlsport: nobody to judge a peer (~p): rejected", [Q]),
            spawn(fun() -> answer(N, #{accept => false}) end);
        {password, _} ->
            ?LOG_WARNING("tlsport: nobody to give the password for ~s", [maps:get(source, Q, <<>>)])
    end,
    St;
question(_Kind, Q, St) ->
    ?LOG_WARNING("tlsport: a question without a number: ~p", [Q]),
    St.

question_cbs(#{ref := Ref} = Q, St) when is_map_key(Ref, St#st.cbs) ->
    case maps:get(Ref, St#st.cbs) of
        none -> listener_cbs(Q, St);
        Cbs -> Cbs
    end;
question_cbs(Q, St) ->
    listener_cbs(Q, St).

listener_cbs(#{listener := Did}, St) ->
    case [L || L <- maps:values(St#st.listeners), maps:get(did, L) =:= Did] of
        [#{params := Params} | _] -> maps:get(callbacks, Params, none);
        [] -> none
    end;
listener_cbs(_Q, _St) ->
    none.

resolve_cbs({context, Name}, St) -> maps:get(Name, St#st.contexts, none);
resolve_cbs(Cbs, _St) -> Cbs.

%% A process that asked for questions as messages gets this one; a fun is
%% run in a process of its own, killed when the daemon stops waiting.
ask({ask, Pid}, _Timeout, _N, Message, _Work, _Failed) ->
    Pid ! Message,
    ok;
ask(Fun, Timeout, N, _Message, Work, Failed) ->
    _ = spawn(fun() -> answerer(N, fun() -> Work(Fun) end, Timeout, Failed) end),
    ok.

answerer(N, Work, Timeout, Failed) ->
    {Pid, Mon} = spawn_monitor(fun() -> exit({answer, Work()}) end),
    receive
        {'DOWN', Mon, process, Pid, {answer, Answer}} ->
            _ = answer(N, Answer);
        {'DOWN', Mon, process, Pid, Reason} ->
            ?LOG_WARNING("tlsport: a TLS callback failed: ~p", [Reason]),
            _ = answer(N, Failed)
    after Timeout ->
            exit(Pid, kill),
            ?LOG_WARNING("tlsport: a TLS callback took longer than ~p ms", [Timeout])
    end.

%%% ================================================================ routes

%% The message an owner gets for a packet, built here for direct routes.
direct_message(modern_binary, S, Data) -> {tlsport, S, Data};
direct_message(modern_list, S, Data) -> {tlsport, S, binary_to_list(Data)};
direct_message(counted_binary, S, Data) ->
    _ = tlsport_socket:count_received(S),
    {tlsport, S, Data};
direct_message(counted_list, S, Data) ->
    _ = tlsport_socket:count_received(S),
    {tlsport, S, binary_to_list(Data)};
direct_message(seed_binary, Pid, Data) -> {Pid, {fromsocket, Data}};
direct_message(seed_list, Pid, Data) -> {Pid, {fromsocket, binary_to_list(Data)}}.

route_pid(Pid) when is_pid(Pid) -> Pid;
route_pid({direct, _, _, _, Pid}) -> Pid;
route_pid({pending, _, _, Pid, _}) -> Pid;
route_pid(_Held) -> none.           % unclaimed or probing: no process yet

%% Back to the socket process; held data goes to it first.
to_via(Id, Sockets) ->
    case Sockets of
        #{Id := {pending, _, _, Pid, Held}} ->
            [Pid ! {tlsport_data, Id, D} || D <- lists:reverse(Held)],
            Sockets#{Id := Pid};
        #{Id := {direct, _, _, _, Pid}} ->
            Sockets#{Id := Pid};
        _ ->
            Sockets
    end.

%%% ================================================================ listeners

close_listener(Key, _Why, St) ->
    case maps:take(Key, St#st.listeners) of
        {L, Listeners} ->
            St0 = ignore(#{op => close, id => maps:get(did, L)}, St#st{listeners = Listeners}),
            Mons = case L of
                       #{owner_mon := Mon} ->
                           erlang:demonitor(Mon, [flush]),
                           maps:remove(Mon, St0#st.mons);
                       _ -> St0#st.mons
                   end,
            %% Its accepts are answered `closed' by the daemon; the entry
            %% stays (closed) until they are.
            case maps:get(issued, L) of
                0 -> St0#st{mons = Mons};
                _ -> St0#st{listeners = maps:put(Key, L#{state => closed}, St0#st.listeners),
                            mons = Mons}
            end;
        error ->
            St
    end.

%% The caller died or its timeout passed: cancel its accept (the daemon
%% answers it `cancelled', or with a connection that came first).
abandon_accept(AId, Why, St) ->
    case maps:find(AId, St#st.accepts) of
        {ok, #{status := issued, dref := Ref} = A} ->
            ignore(#{op => cancel, target => Ref},
                   St#st{accepts = maps:put(AId, A#{status => Why}, St#st.accepts)});
        _ ->
            St
    end.

accept_done(AId, Result, St) ->
    case maps:find(AId, St#st.accepts) of
        {ok, #{key := Key} = A} ->
            St1 = case maps:find(Key, St#st.listeners) of
                      {ok, L} ->
                          Issued = maps:get(issued, L) - 1,
                          case maps:get(state, L) of
                              closed when Issued =:= 0 ->
                                  St#st{listeners = maps:remove(Key, St#st.listeners)};
                              _ ->
                                  St#st{listeners = maps:put(Key, L#{issued => Issued}, St#st.listeners)}
                          end;
                      error -> St
                  end,
            Outcome =
                case {Result, maps:get(status, A)} of
                    {{error, _}, timeout} -> {error, timeout};
                    {{error, #{kind := <<"cancelled">>}}, _} -> {error, cancelled};
                    {{error, #{kind := <<"closed">>}}, _} -> {error, closed};
                    _ -> Result
                end,
            finish_accept(AId, Outcome, St1);
        error ->
            %% Unknown accept: if it brought a socket, nobody owns it.
            case Result of
                {ok, #{id := Id}} -> ignore(#{op => close, id => Id}, St);
                _ -> St
            end
    end.

%% Answers an accept and forgets it. On a reclaimed listener whose framing
%% mode is not known yet, the new socket's mode is asked for first (its
%% data and events are held meanwhile).
finish_accept(AId, {ok, #{id := Id}} = Result, St)
  when is_map_key(AId, St#st.accepts),
       not is_map_key(mode, map_get(sock_args, map_get(AId, St#st.accepts))) ->
    A = maps:get(AId, St#st.accepts),
    St1 = St#st{sockets = maps:put(Id, {probing, []}, St#st.sockets),
                accepts = maps:put(AId, A#{status := probing}, St#st.accepts)},
    send(#{op => info, id => Id}, {probe, AId, Result}, St1);
finish_accept(AId, Result, St) ->
    case maps:take(AId, St#st.accepts) of
        {#{from := {Caller, _} = From, mon := Mon, timer := Timer, sock_args := Args}, Accepts} ->
            erlang:demonitor(Mon, [flush]),
            _ = Timer =/= undefined andalso erlang:cancel_timer(Timer),
            St1 = St#st{accepts = Accepts, mons = maps:remove(Mon, St#st.mons)},
            case Result of
                {ok, #{id := Id} = M} ->
                    {St2, Reply} = start_socket(Id, Args#{owner => Caller,
                                                          peer => maps:get(peer, M, undefined)}, St1),
                    gen_server:reply(From, Reply),
                    St2;
                _ ->
                    gen_server:reply(From, Result),
                    St1
            end;
        error ->
            St
    end.

%% The socket process arguments of an accepted socket.
sock_args(seed, Params) ->
    Mode = maps:get(mode, Params, <<"raw">>),
    #{style => seed, mode => Mode,
      format => case Mode of <<"binary_packet", _/binary>> -> binary; _ -> list end};
sock_args(modern, #{reclaimed := true} = Params) ->
    %% A listener given back by the daemon: its sockets start in the
    %% active mode the listener was made with, unknown here.
    maps:merge(#{style => modern, format => binary, active => inherited},
               maps:with([mode], Params));
sock_args(modern, Params) ->
    (maps:get(sockopts, Params, #{}))#{style => modern, mode => maps:get(mode, Params, <<"raw">>)}.

%%% ================================================================ reclaiming

%% An `owned' event for a socket or listener this server does not know:
%% the daemon gives back what a predecessor of the same name left (or
%% another client hands one over). Held until reclaimed/0, at most
%% reclaim_ms.
adopt(#{id := Id} = Event, St) ->
    ?LOG_INFO("tlsport: tlsportd gave ~s ~p back (from client ~p)",
              [case Event of #{listener := true} -> "listener"; _ -> "socket" end,
               Id, maps:get(from, Event, undefined)]),
    {Item, St1} =
        case Event of
            #{listener := true} ->
                Key = erlang:unique_integer([positive]),
                Port = case Event of
                           #{sockname := #{port := P}} -> P;
                           _ -> 0
                       end,
                L = #{key => Key, style => modern, did => Id, port => Port, state => unclaimed,
                      issued => 0, params => #{reclaimed => true}},
                {{listener, Key}, St#st{listeners = maps:put(Key, L, St#st.listeners)}};
            _ ->
                U = #{owned => Event, held => [], bytes => 0, paused => false},
                {{socket, Id}, St#st{sockets = maps:put(Id, {unclaimed, U}, St#st.sockets)}}
        end,
    case St#st.reclaim_ms of
        infinity -> ok;
        Ms -> erlang:send_after(Ms, self(), {reclaim_expired, Item})
    end,
    St1#st{unclaimed = [Item | St1#st.unclaimed]}.

%% Data or an event for an unclaimed socket. Past ?HOLD_BYTES of data the
%% socket is made passive: the daemon then stops reading its peer (TCP
%% slows the peer down), and what is already on its way is all that
%% comes.
hold(Id, Item, St) ->
    {unclaimed, #{held := Held, bytes := Bytes, paused := Paused} = U} = maps:get(Id, St#st.sockets),
    Bytes1 = case Item of
                 {data, D} -> Bytes + byte_size(D);
                 _ -> Bytes
             end,
    U1 = U#{held := [Item | Held], bytes := Bytes1},
    St1 = St#st{sockets = maps:put(Id, {unclaimed, U1}, St#st.sockets)},
    case not Paused andalso Bytes1 > ?HOLD_BYTES of
        true ->
            St2 = St1#st{sockets = maps:put(Id, {unclaimed, U1#{paused := true}}, St1#st.sockets)},
            ignore(#{op => setopts, id => Id, active => false}, St2);
        false ->
            St1
    end.

%% Makes Caller the owner of a held socket or listener: a socket gets its
%% process, which is handed the `owned' event and everything held, in
%% order, before anything newer.
claim({listener, Key}, Caller, St) ->
    case maps:find(Key, St#st.listeners) of
        {ok, #{state := unclaimed, port := Port} = L} ->
            Mon = erlang:monitor(process, Caller),
            {#tlsport_listen{key = Key, port = Port},
             St#st{listeners = maps:put(Key, L#{state := ready, owner_mon => Mon}, St#st.listeners),
                   mons = maps:put(Mon, {listener, Key}, St#st.mons)}};
        _ ->
            {none, St}
    end;
claim({socket, Id}, Caller, St) ->
    case maps:find(Id, St#st.sockets) of
        {ok, {unclaimed, #{owned := Owned, held := Held, paused := Paused}}} ->
            Args = #{style => modern, format => binary, owner => Caller,
                     mode => maps:get(mode, Owned, <<"raw">>),
                     active => case Paused of true -> false; false -> inherited end,
                     peer => maps:get(peer, Owned, undefined)},
            case start_socket(Id, Args, St#st{sockets = maps:remove(Id, St#st.sockets)}) of
                {St1, {ok, Handle}} ->
                    {Handle, replay(Id, [{event, Owned} | lists:reverse(Held)], St1)};
                {St1, _} ->
                    {none, St1}
            end;
        _ ->
            {none, St}
    end.

%% Hands held data and events to a socket's new process.
replay(Id, Msgs, St) ->
    case maps:find(Id, St#st.sockets) of
        {ok, Route} ->
            Pid = route_pid(Route),
            lists:foldl(fun({data, D}, S) ->
                                Pid ! {tlsport_data, Id, D},
                                S;
                           ({event, #{event := socket_closed} = E}, S) ->
                                Pid ! {tlsport_event, Id, E},
                                S#st{sockets = maps:remove(Id, S#st.sockets)};
                           ({event, E}, S) ->
                                Pid ! {tlsport_event, Id, E},
                                S
                        end, St, Msgs);
        error ->
            St
    end.

%% Nobody claimed it in time: it is closed.
expire({socket, Id}, St) ->
    case maps:find(Id, St#st.sockets) of
        {ok, {unclaimed, #{held := Held}}} ->
            ?LOG_WARNING("tlsport: a socket given back (~p) was not claimed within ~p ms: "
                         "closed", [Id, St#st.reclaim_ms]),
            St1 = St#st{sockets = maps:remove(Id, St#st.sockets)},
            Closed = lists:any(fun({event, #{event := socket_closed}}) -> true;
                                  (_) -> false
                               end, Held),
            case Closed of
                true -> St1;
                false -> ignore(#{op => close, id => Id}, St1)
            end;
        _ ->
            St
    end;
expire({listener, Key}, St) ->
    case maps:find(Key, St#st.listeners) of
        {ok, #{state := unclaimed, did := Did}} ->
            ?LOG_WARNING("tlsport: a listener given back (~p) was not claimed within ~p ms: "
                         "closed", [Did, St#st.reclaim_ms]),
            close_listener(Key, closed, St);
        _ ->
            St
    end.
