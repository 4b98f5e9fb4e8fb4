%% The interface of seed 004 (Erlang's old `ssl_socket' module), rebuilt
%% on tlsportd. Every function and message is as that manual documents
%% it; see docs/erlang.md for the details it leaves open.
%%
%%   ListenSocket = ssl_socket:listen('STREAM', 'AF_INET', Port, Mode),
%%   Socket = ssl_socket:accept(ListenSocket, "-cert server.pem"),
%%   Socket ! {self(), {deliver, "Hello there"}},
%%   receive {Socket, {fromsocket, Bytes}} -> ... end
-module(ssl_socket).

-export([listen/4, accept/2, client/5, controlling_process/2, peername/1,
         resolve/0, resolve/1, close/1, start/0, stop/0, last_error/0]).

-include_lib("kernel/include/logger.hrl").

-type mode() :: {packet, 0 | 1 | 2 | 4} | {binary_packet, 0 | 1 | 2 | 4}
              | raw | onebyte | twobytes | fourbytes | asn1.
-type listen_socket() :: {integer(), inet:port_number()}.
-type socket() :: pid().
-export_type([mode/0, listen_socket/0, socket/0]).

%% @doc Sets up a socket listening to Port (0: a free port) on every
%% interface. Returns {Handle, PortNumber}; on failure the caller exits
%% with {listen, syncerror} and last_error/0 says why.
-spec listen('STREAM', 'AF_INET', inet:port_number(), mode()) -> listen_socket().
listen('STREAM', 'AF_INET', Port, Mode) when is_integer(Port), Port >= 0, Port =< 65535 ->
    ensure_started(),
    Host = tlsport_lib:to_binary(application:get_env(tlsport, listen_host, "0.0.0.0")),
    Result = case tlsport_lib:seed_mode(Mode) of
                 {ok, M, _Format} ->
                     tlsport_server:listen(seed, #{host => Host, port => Port, mode => M}, self());
                 Error -> Error
             end,
    case Result of
        {ok, Key, Number} -> {Key, Number};
        {error, Reason} -> sync_error(listen, Reason)
    end;
listen(Protocol, Family, Port, Mode) ->
    sync_error(listen, {badarg, {Protocol, Family, Port, Mode}}).

%% @doc Waits for a connection on ListenSocket and its TLS handshake, then
%% returns the socket's process. SSLFlags: "-cert F -key F -cipher L
%% -verify 0|1|2 -log F". Killing the caller aborts the accept; the
%% listener stays usable. On failure the caller exits with {accept, Reason}.
-spec accept(listen_socket(), string() | binary()) -> socket().
accept({Key, _Port}, SSLFlags) ->
    case tlsport_server:accept(Key, {seed, flags(SSLFlags)}, infinity) of
        {ok, Socket} -> Socket;
        {error, Reason} -> fail(accept, Reason)
    end;
accept(Other, _SSLFlags) ->
    fail(accept, {badarg, Other}).

%% @doc Connects to {Host, Port}: Host as an atom, a string, an address
%% string or an address tuple. On failure the caller exits with
%% {client, Reason}.
-spec client('STREAM', 'AF_INET', {term(), inet:port_number()}, mode(), string() | binary()) -> socket().
client('STREAM', 'AF_INET', {Host, Port}, Mode, SSLFlags) when is_integer(Port) ->
    ensure_started(),
    case {tlsport_lib:host_string(Host), tlsport_lib:seed_mode(Mode)} of
        {{ok, H}, {ok, M, Format}} ->
            Command = #{host => H, port => Port, mode => M, tls => #{flags => flags(SSLFlags)}},
            case tlsport_server:connect(Command, #{style => seed, mode => M, format => Format},
                                        infinity) of
                {ok, Socket} -> Socket;
                {error, Reason} -> fail(client, Reason)
            end;
        {{error, Reason}, _} -> fail(client, Reason);
        {_, {error, Reason}} -> fail(client, Reason)
    end;
client(Protocol, Family, Address, Mode, _SSLFlags) ->
    fail(client, {badarg, {Protocol, Family, Address, Mode}}).

%% @doc Makes Pid the receiver of everything the socket sends. Nothing is
%% lost or reordered: what the socket already sent to the caller is taken
%% from the caller's mailbox and passed to Pid ahead of anything newer.
%% Only the current controlling process may call it.
-spec controlling_process(socket(), pid()) -> ok | {error, term()}.
controlling_process(Socket, Pid) when is_pid(Socket), is_pid(Pid) ->
    tlsport_socket:controlling_process(Socket, Pid);
controlling_process(_, _) ->
    {error, badarg}.

%% @doc {PortNumber, IPAddress} of the peer.
-spec peername(socket()) -> {inet:port_number(), inet:ip_address()} | {error, term()}.
peername(Socket) when is_pid(Socket) ->
    case tlsport_socket:peername(Socket) of
        {ok, {IP, Port}} -> {Port, IP};
        Error -> Error
    end;
peername(_) ->
    {error, badarg}.

%% @doc The official name of this host.
-spec resolve() -> string() | {error, term()}.
resolve() ->
    ensure_started(),
    name(tlsport_server:request(#{op => resolve}, 30000)).

%% @doc The official name of the host with this address (a tuple, a
%% string or an atom).
-spec resolve(term()) -> string() | {error, term()}.
resolve(IPAddress) ->
    ensure_started(),
    case tlsport_lib:host_string(IPAddress) of
        {ok, A} -> name(tlsport_server:request(#{op => resolve, address => A}, 30000));
        {error, Reason} -> {error, tlsport_lib:set_last_error(Reason)}
    end.

name({ok, #{name := Name}}) -> binary_to_list(Name);
name({error, E}) -> {error, tlsport_lib:set_last_error(E)}.

%% @doc Closes a socket (as {self(), close} does) or a listen socket.
-spec close(socket() | listen_socket()) -> ok.
close(Socket) when is_pid(Socket) ->
    _ = tlsport_socket:close(Socket),
    ok;
close({Key, _Port}) ->
    _ = tlsport_server:close_listener(Key),
    ok.

%% @doc Starts the socket server (the tlsport application and its daemon).
-spec start() -> ok | {error, term()}.
start() ->
    case application:ensure_all_started(tlsport) of
        {ok, _} -> ok;
        Error -> Error
    end.

%% @doc Stops the socket server and closes all open sockets.
-spec stop() -> ok.
stop() ->
    _ = application:stop(tlsport),
    ok.

%% @doc Why the last listen/accept/client/resolve of this process failed:
%% {Kind, Message} as the daemon put it, or undefined.
-spec last_error() -> term().
last_error() ->
    tlsport_lib:last_error().

%%% ----------------------------------------------------------------

flags(F) when is_binary(F) -> F;
flags(F) when is_list(F) -> unicode:characters_to_binary(F);
flags(F) when is_atom(F) -> atom_to_binary(F, utf8).

-spec sync_error(atom(), term()) -> no_return().
sync_error(Op, Reason) ->
    R = tlsport_lib:set_last_error(Reason),
    ?LOG_NOTICE("ssl_socket:~p failed: ~p", [Op, R]),
    exit({Op, syncerror}).

-spec fail(atom(), term()) -> no_return().
fail(Op, Reason) ->
    R = tlsport_lib:set_last_error(Reason),
    exit({Op, R}).

ensure_started() ->
    case whereis(tlsport_server) of
        undefined -> _ = start(), ok;
        _ -> ok
    end.
