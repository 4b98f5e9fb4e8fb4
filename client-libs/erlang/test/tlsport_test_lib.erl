%% Shared test helpers: test certificates made with the openssl CLI, the
%% application started against a real tlsportd ($TLSPORTD or the build
%% tree), openssl s_server/s_client through ports, small receive helpers.
%% Every receive here has a timeout.
-module(tlsport_test_lib).

-export([certs/0, cert/1, start/0, stop/0, restart/0,
         flush/0, recv_msg/1, recv_msgs/2, wait_until/2,
         free_port/0, openssl_port/1, port_lines/2, port_collect/3,
         short_hostname/0, tls13_or_12/0]).

-include_lib("eunit/include/eunit.hrl").

%% @doc Generates (once per node) a CA, certificates signed by it (server
%% with SANs localhost and 127.0.0.1, client, expired server, a server
%% named only other.example), a self-signed pair, and the seed's file
%% names (ssl_server.pem, ssl_client.pem, client_cert.pem,
%% client_key.pem) in a temp dir.
certs() ->
    case persistent_term:get({?MODULE, certs}, undefined) of
        undefined ->
            Dir = make_dir(),
            generate(Dir),
            persistent_term:put({?MODULE, certs}, Dir),
            Dir;
        Dir ->
            Dir
    end.

%% @doc Absolute path of a file in the cert dir.
cert(Name) -> filename:join(certs(), Name).

%% Under _build/test when run by rebar3 from the application directory
%% (cleaned by the next run), else in the temp directory.
make_dir() ->
    Dir = case filelib:is_dir("_build") of
              true -> filename:absname(filename:join(["_build", "test", "tlsport-certs"]));
              false ->
                  Base = case os:getenv("TMPDIR") of false -> "/tmp"; T -> T end,
                  filename:join(Base, "tlsport-erl-test-" ++ os:getpid())
          end,
    _ = os:cmd("rm -rf '" ++ Dir ++ "'"),
    ok = filelib:ensure_dir(filename:join(Dir, "x")),
    Dir.

generate(Dir) ->
    Key = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes",
    Run = fun(Cmd) ->
                  Out = os:cmd("cd '" ++ Dir ++ "' && " ++ Cmd ++ " 2>&1; echo \"rc=$?\""),
                  case string:find(Out, "rc=0") of
                      nomatch -> error({openssl_failed, Cmd, Out});
                      _ -> ok
                  end
          end,
    Ext = "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n' > san.ext",
    Run(Ext),
    Run("openssl req -x509 " ++ Key ++ " -keyout ca.key -out ca.pem -days 2 -subj /CN=tlsport-test-CA"),
    Signed = fun(Name, CN, Days) ->
                     Run("openssl req -new " ++ Key ++ " -keyout " ++ Name ++ ".key -out "
                         ++ Name ++ ".csr -subj /CN=" ++ CN),
                     Run("openssl x509 -req -in " ++ Name ++ ".csr -CA ca.pem -CAkey ca.key "
                         "-CAcreateserial -days " ++ Days ++ " -extfile san.ext -out " ++ Name ++ ".pem"),
                     Run("cat " ++ Name ++ ".pem " ++ Name ++ ".key > " ++ Name ++ "_both.pem")
             end,
    Signed("server", "localhost", "2"),
    Signed("client", "tlsport-test-client", "2"),
    Signed("expired", "localhost", "-1"),
    Run("openssl req -x509 " ++ Key ++ " -keyout self.key -out self.pem -days 2 -subj /CN=localhost "
        "-addext subjectAltName=DNS:localhost,IP:127.0.0.1"),
    Run("cat self.pem self.key > self_both.pem"),
    %% Signed by the CA, for a name that is not localhost (host-name checks).
    Run("printf 'subjectAltName=DNS:other.example\\nbasicConstraints=CA:FALSE\\n' > other.ext"),
    Run("openssl req -new " ++ Key ++ " -keyout other.key -out other.csr -subj /CN=other.example"),
    Run("openssl x509 -req -in other.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
        "-extfile other.ext -out other.pem"),
    %% The server's key encrypted (password "secret"), and the password in a file.
    Run("openssl pkey -in server.key -aes256 -passout pass:secret -out server_enc.key"),
    Run("printf 'secret\\n' > password.txt"),
    %% An RSA server certificate (DHE suites need one) and DH parameters.
    Run("openssl req -new -newkey rsa:2048 -nodes -keyout rsa.key -out rsa.csr -subj /CN=localhost"),
    Run("openssl x509 -req -in rsa.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
        "-extfile san.ext -out rsa.pem"),
    Run("openssl genpkey -genparam -algorithm DH -pkeyopt dh_param:ffdhe2048 -out dh.pem"),
    Run("openssl dhparam -in dh.pem -outform DER -out dh.der"),
    %% A second client certificate, revoked in crl.pem (the CA's CRL).
    Signed("revoked", "tlsport-test-revoked", "2"),
    Run("printf '[ca]\\ndefault_ca=myca\\n[myca]\\ndatabase=index.txt\\ncrlnumber=crlnumber\\n"
        "default_md=sha256\\ndefault_crl_days=2\\n' > ca.cnf && : > index.txt && "
        "echo 01 > crlnumber"),
    Run("openssl ca -config ca.cnf -keyfile ca.key -cert ca.pem -revoke revoked.pem"),
    Run("openssl ca -config ca.cnf -keyfile ca.key -cert ca.pem -gencrl -out crl.pem"),
    %% An OCSP response about server.pem (its status: unknown to this CA).
    Run("openssl ocsp -index index.txt -rsigner ca.pem -rkey ca.key -CA ca.pem -issuer ca.pem "
        "-cert server.pem -respout ocsp.der -ndays 2 </dev/null"),
    %% Keys for session tickets.
    Run("openssl rand 80 > ticket1.key && openssl rand 80 > ticket2.key"),
    %% The file names of seed 004's examples.
    Run("cp server_both.pem ssl_server.pem && cp client_both.pem ssl_client.pem && "
        "cp client.pem client_cert.pem && cp client.key client_key.pem"),
    ok.

%% @doc Starts tlsport with the daemon running in the cert dir (so the
%% seed's relative file names work) and trusting the test CA through
%% SSL_CERT_FILE, as seed 004 describes.
start() ->
    Dir = certs(),
    case application:get_env(tlsport, tlsportd_cd) of
        {ok, Dir} -> ok;
        _ -> _ = application:stop(tlsport)
    end,
    application:load(tlsport),
    application:set_env(tlsport, tlsportd_cd, Dir),
    application:set_env(tlsport, tlsportd_env, [{"SSL_CERT_FILE", filename:join(Dir, "ca.pem")}]),
    case tlsport_server:find_daemon() of
        {ok, _} -> ok;
        {error, E} -> error({no_daemon, E, "set TLSPORTD to a built tlsportd"})
    end,
    %% ssl_socket logs why a listen failed (notice); tests provoke that.
    logger:set_primary_config(level, warning),
    {ok, _} = application:ensure_all_started(ssl),
    {ok, _} = application:ensure_all_started(tlsport),
    wait_until(fun() -> is_pid(whereis(tlsport_server)) end, 5000),
    Dir.

stop() ->
    _ = application:stop(tlsport),
    ok.

restart() ->
    stop(),
    start().

flush() ->
    receive _ -> flush() after 0 -> ok end.

%% @doc The next message, or timeout.
recv_msg(Timeout) ->
    receive M -> M after Timeout -> timeout end.

%% @doc Up to N messages matching nothing in particular within Timeout.
recv_msgs(0, _) -> [];
recv_msgs(N, Timeout) ->
    receive M -> [M | recv_msgs(N - 1, Timeout)] after Timeout -> [] end.

wait_until(F, Timeout) when Timeout =< 0 ->
    ?assert(F());
wait_until(F, Timeout) ->
    case F() of
        true -> ok;
        false -> timer:sleep(20), wait_until(F, Timeout - 20)
    end.

%% @doc A TCP port free at the moment.
free_port() ->
    {ok, L} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}, {reuseaddr, true}]),
    {ok, P} = inet:port(L),
    gen_tcp:close(L),
    P.

%% @doc Runs openssl with these arguments in a port (stdin/stdout binary).
openssl_port(Args) ->
    Exe = os:find_executable("openssl"),
    open_port({spawn_executable, Exe},
              [{args, Args}, binary, use_stdio, exit_status, stderr_to_stdout,
               {cd, certs()}]).

%% @doc Everything the port prints until Pred(Acc) holds or Timeout.
port_lines(Port, Pred) -> port_collect(Port, Pred, 5000).

port_collect(Port, Pred, Timeout) ->
    Deadline = erlang:monotonic_time(millisecond) + Timeout,
    port_collect(Port, Pred, Deadline, <<>>).
port_collect(Port, Pred, Deadline, Acc) ->
    case Pred(Acc) of
        true -> {ok, Acc};
        false ->
            Left = max(0, Deadline - erlang:monotonic_time(millisecond)),
            receive
                {Port, {data, D}} -> port_collect(Port, Pred, Deadline, <<Acc/binary, D/binary>>);
                {Port, {exit_status, S}} -> {exit, S, Acc}
            after Left -> {timeout, Acc}
            end
    end.

%% @doc This host's short name as an atom, like the seed's 'gin', when it
%% resolves; else localhost.
short_hostname() ->
    {ok, Name} = inet:gethostname(),
    case inet:getaddr(Name, inet) of
        {ok, _} -> list_to_atom(Name);
        _ -> localhost
    end.

tls13_or_12() -> ['tlsv1.3', 'tlsv1.2'].
