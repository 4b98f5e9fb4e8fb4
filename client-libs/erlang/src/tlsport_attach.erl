%% Attach mode's channel: a Unix socket to a daemon that is already
%% running (tlsportd --unix PATH), shared with other clients. Reads the
%% application environment, connects (trying again while no daemon listens
%% yet or the name is still taken), says hello, and writes frames from one
%% process, so that a frame always leaves whole. tlsport_server owns the
%% socket and reads it; frames are `<<Len:32, Body/binary>>' both ways, as
%% on the port (docs/protocol.md §1).
-module(tlsport_attach).

-export([config/2, connect/1, writer/1]).

-include_lib("kernel/include/logger.hrl").

%% How long connect/1 keeps trying by default, and the pause between tries.
-define(ATTACH_TIMEOUT_MS, 10000).
-define(ATTACH_RETRY_MS, 50).
%% The socket's receive buffer.
-define(READ_BYTES, (256 * 1024)).
%% Frames the writer joins into one write.
-define(WRITE_BATCH, 32).

%% @doc The attach settings from the application environment (`attach'
%% is `Path0'; `name', `grace_ms', `attach_timeout_ms',
%% `reclaim_timeout_ms'); throws `{bad_config, What}'. `Defaults' gives
%% `reclaim_ms'.
-spec config(term(), #{reclaim_ms := timeout()}) -> map().
config(Path0, Defaults) ->
    Path = try unicode:characters_to_list(Path0) of
               P when is_list(P), P =/= [] -> P;
               _ -> throw({bad_config, {attach, Path0}})
           catch _:_ -> throw({bad_config, {attach, Path0}})
           end,
    Name = case application:get_env(tlsport, name) of
               undefined -> undefined;
               {ok, N} ->
                   try tlsport_lib:to_binary(N) of
                       <<>> -> throw({bad_config, {name, N}});
                       B when byte_size(B) > 255 -> throw({bad_config, {name, N}});
                       B -> B
                   catch throw:_ -> throw({bad_config, {name, N}})
                   end
           end,
    Grace = case application:get_env(tlsport, grace_ms) of
                undefined -> 0;
                {ok, G} when is_integer(G), G >= 0 -> G;
                {ok, G} -> throw({bad_config, {grace_ms, G}})
            end,
    Grace > 0 andalso Name =:= undefined andalso throw({bad_config, {grace_ms, needs_a_name}}),
    Hello = maps:merge(#{op => hello, ref => 0},
                       maps:from_list([{name, Name} || Name =/= undefined] ++
                                      [{grace_ms, Grace} || Grace > 0])),
    #{path => Path, name => Name, hello => Hello,
      attach_ms => ms_env(attach_timeout_ms, ?ATTACH_TIMEOUT_MS, false),
      reclaim_ms => ms_env(reclaim_timeout_ms, maps:get(reclaim_ms, Defaults), true)}.

ms_env(Key, Default, InfinityOk) ->
    case application:get_env(tlsport, Key) of
        undefined -> Default;
        {ok, infinity} when InfinityOk -> infinity;
        {ok, Ms} when is_integer(Ms), Ms >= 0 -> Ms;
        {ok, Bad} -> throw({bad_config, {Key, Bad}})
    end.

%% @doc Connects and says hello: `{ok, Sock, HelloReply, Frames, Rest}'
%% (see hello/3), or `{stop, {cannot_attach, Path, Why}}' for init/1.
-spec connect(map()) -> {ok, socket:socket(), map(), [binary()], binary()} | {stop, term()}.
%% Tries again while the daemon is not there yet (restarting) or the name
%% is still taken (eaddrinuse: the daemon has not yet seen the channel of a
%% predecessor with that name end).
connect(#{path := Path, attach_ms := Ms} = Config) ->
    connect(Config, erlang:monotonic_time(millisecond) + Ms, Path).

connect(Config, Deadline, Path) ->
    case attach_once(Config, Deadline) of
        {ok, _, _, _, _} = Attached ->
            Attached;
        {retry, Why} ->
            case erlang:monotonic_time(millisecond) + ?ATTACH_RETRY_MS < Deadline of
                true ->
                    timer:sleep(?ATTACH_RETRY_MS),
                    connect(Config, Deadline, Path);
                false ->
                    ?LOG_ERROR("tlsport: cannot attach to tlsportd at ~ts: ~p", [Path, Why]),
                    {stop, {cannot_attach, Path, Why}}
            end;
        {error, Why} ->
            ?LOG_ERROR("tlsport: cannot attach to tlsportd at ~ts: ~p", [Path, Why]),
            {stop, {cannot_attach, Path, Why}}
    end.

attach_once(#{path := Path} = Config, Deadline) ->
    case socket:open(local, stream, default) of
        {ok, Sock} ->
            Left = max(1, Deadline - erlang:monotonic_time(millisecond)),
            case socket:connect(Sock, #{family => local, path => Path}, Left) of
                ok ->
                    case hello(Sock, Config, Deadline) of
                        {ok, Reply, Frames, Rest} -> {ok, Sock, Reply, Frames, Rest};
                        Other -> _ = socket:close(Sock), Other
                    end;
                {error, Why} ->
                    _ = socket:close(Sock),
                    case lists:member(Why, [enoent, econnrefused, eagain, timeout]) of
                        true -> {retry, Why};
                        false -> {error, Why}
                    end
            end;
        {error, Why} ->
            {error, Why}
    end.

%% hello, then (a named client) stats: the daemon sends the `owned' events
%% of what it gives back right after hello's reply, so everything before
%% the stats reply is the whole set. Returns hello's reply, the frames that
%% came before the last reply, and the bytes after it.
hello(Sock, #{hello := Hello, name := Name}, Deadline) ->
    _ = socket:setopt(Sock, {otp, rcvbuf}, ?READ_BYTES),
    case sync_call(Sock, Hello, Deadline, <<>>) of
        {ok, #{ok := true} = Reply, Before, Rest0} ->
            Got = case Name of
                      undefined -> {ok, #{}, [], Rest0};
                      _ -> sync_call(Sock, #{op => stats, ref => -1}, Deadline, Rest0)
                  end,
            case Got of
                {ok, _, After, Rest} -> {ok, Reply, Before ++ After, Rest};
                {error, Why} -> {retry, Why}
            end;
        {ok, #{error := #{kind := <<"eaddrinuse">>}}, _, _} ->
            {retry, eaddrinuse};
        {ok, #{error := E}, _, _} ->
            {error, tlsport_lib:error_reason(E)};
        {error, timeout} ->
            {error, timeout};
        {error, Why} ->
            %% The daemon refused the connection (a cap, a uid not let in)
            %% or is going away.
            {retry, Why}
    end.

%% Sends a command and reads frames until its reply: the reply, the
%% frames before it, the bytes after it.
sync_call(Sock, #{ref := Ref} = Command, Deadline, Buf) ->
    Body = term_to_binary(Command),
    case socket:send(Sock, [<<(byte_size(Body) + 1):32, 0>>, Body]) of
        ok -> sync_read(Sock, Ref, Deadline, Buf, []);
        {error, Why} -> {error, Why}
    end.

sync_read(Sock, Ref, Deadline, <<Len:32, Body:Len/binary, Rest/binary>>, Before) ->
    case Body of
        <<0, Term/binary>> ->
            case binary_to_term(Term) of
                #{ref := Ref} = Reply when not is_map_key(event, Reply) ->
                    {ok, Reply, lists:reverse(Before), Rest};
                _ ->
                    sync_read(Sock, Ref, Deadline, Rest, [Body | Before])
            end;
        _ ->
            sync_read(Sock, Ref, Deadline, Rest, [Body | Before])
    end;
sync_read(Sock, Ref, Deadline, Buf, Before) ->
    case Deadline - erlang:monotonic_time(millisecond) of
        Left when Left =< 0 ->
            {error, timeout};
        Left ->
            case socket:recv(Sock, 0, Left) of
                {ok, Data} -> sync_read(Sock, Ref, Deadline, <<Buf/binary, Data/binary>>, Before);
                {error, Why} -> {error, Why}
            end
    end.

%% The only process that writes to the Unix socket (see
%% tlsport_server:write_frame/2). Frames waiting are joined into one write.
writer(Sock) ->
    receive
        {write, Frame} ->
            Frames = gather([Frame], ?WRITE_BATCH - 1),
            case socket:send(Sock, [[<<(iolist_size(F)):32>>, F] || F <- Frames]) of
                ok -> writer(Sock);
                {error, Why} -> exit({channel, Why})
            end;
        {flush, From, Ref} ->
            From ! {flushed, Ref},
            writer(Sock)
    end.

gather(Acc, 0) ->
    lists:reverse(Acc);
gather(Acc, N) ->
    receive
        {write, Frame} -> gather([Frame | Acc], N - 1)
    after 0 ->
        lists:reverse(Acc)
    end.

