%% What the daemon tells of peers and connections, in OTP's terms:
%% certificates (with their DER), connection information as
%% ssl:connection_information/1 names it, and an OTP verify_fun run over
%% the chain and verdict of the daemon's verify_peer question. Pure: nothing
%% here talks to the daemon.
-module(tlsport_peer_info).

-export([cert_map/1, connection_info/1, verify_chain/4]).

%% @doc A certificate as the daemon describes it (protocol.md, info),
%% with its DER (`der', as ssl:peercert/1 gives it) added.
-spec cert_map(map() | term()) -> map() | undefined.
cert_map(#{} = C) -> C#{der => tlsport_options:pem_to_der(maps:get(pem, C, undefined))};
cert_map(_) -> undefined.

%% @doc The daemon's info reply in the style of ssl:connection_information/1:
%% OTP's names where OTP has the item (protocol as an atom,
%% session_resumption, sni_hostname, selected_cipher_suite when OTP's ssl
%% knows the suite), the daemon's for the rest, certificates as cert_map/1.
-spec connection_info(map()) -> map().
connection_info(M0) ->
    M = maps:without([ok, ref, id], M0),
    Renamed = maps:fold(fun info_item/3, #{}, M),
    case Renamed of
        #{cipher := Cipher} when is_binary(Cipher) ->
            case otp_suite(Cipher) of
                undefined -> Renamed;
                Suite -> Renamed#{selected_cipher_suite => Suite}
            end;
        _ -> Renamed
    end.

info_item(protocol, P, Acc) when is_binary(P) -> Acc#{protocol => protocol_atom(P)};
info_item(session_reused, V, Acc) -> Acc#{session_resumption => V};
info_item(server_name, V, Acc) when is_binary(V) -> Acc#{sni_hostname => binary_to_list(V)};
info_item(server_name, V, Acc) -> Acc#{sni_hostname => V};
info_item(K, C, Acc) when K =:= peer_certificate; K =:= local_certificate -> Acc#{K => cert_map(C)};
info_item(peer_chain, Cs, Acc) when is_list(Cs) -> Acc#{peer_chain => [cert_map(C) || C <- Cs]};
info_item(K, P, Acc) when K =:= peer; K =:= sockname -> Acc#{K => tlsport_lib:peer(P)};
info_item(mode, V, Acc) -> Acc#{mode => V};
info_item(K, V, Acc) -> Acc#{K => V}.

protocol_atom(<<"TLSv1.3">>) -> 'tlsv1.3';
protocol_atom(<<"TLSv1.2">>) -> 'tlsv1.2';
protocol_atom(<<"tcp">>) -> tcp;
protocol_atom(Other) -> binary_to_atom(string:lowercase(Other), utf8).

%% OTP's map of a suite (ssl:str_to_suite/1), when the ssl application
%% is there to say; the library does not need it.
otp_suite(Name) ->
    case code:ensure_loaded(ssl) of
        {module, ssl} ->
            try ssl:str_to_suite(binary_to_list(Name)) of
                #{} = Suite -> Suite;
                _ -> undefined
            catch _:_ -> undefined
            end;
        _ -> undefined
    end.

%% @doc Judges a peer's chain with an OTP verify_fun: Fun(OtpCert, Event,
%% UserState), or Fun(OtpCert, DerCert, Event, UserState) as OTP 25.2+
%% allows, called for each certificate from the one nearest the trust
%% anchor to the peer's own, with Event `valid', `valid_peer' or
%% `{bad_cert, Reason}' where OpenSSL's verdict failed (its depth). It
%% returns `{valid, UserState}' to go on (also `{unknown, UserState}' on
%% a good certificate) or `{fail, Reason}'. An empty chain (a client
%% that sent no certificate) is accepted when OpenSSL found it fine.
-spec verify_chain(function(), term(), [map()], map()) -> boolean().
verify_chain(_Fun, _UserState, [], Result) ->
    maps:get(code, Result, 0) =:= 0;
verify_chain(Fun, UserState, Chain, Result) ->
    Code = maps:get(code, Result, 0),
    Last = length(Chain) - 1,
    BadAt = case Code of
                0 -> none;
                _ -> min(maps:get(depth, Result, 0), Last)
            end,
    Bad = {bad_cert, bad_cert_reason(Code, maps:get(text, Result, <<>>))},
    %% The peer's own certificate is depth 0; OTP walks from the top.
    Steps = lists:append(
              [case {Depth, BadAt} of
                   {0, 0} -> [{Der, Bad}, {Der, valid_peer}];
                   {0, _} -> [{Der, valid_peer}];
                   {D, D} -> [{Der, Bad}];
                   _ -> [{Der, valid}]
               end || {Depth, #{der := Der}} <- lists:reverse(lists:zip(lists:seq(0, Last), Chain))]),
    walk(Fun, UserState, Steps).

walk(_Fun, _US, []) ->
    true;
walk(Fun, US, [{Der, Event} | Rest]) ->
    Otp = public_key:pkix_decode_cert(Der, otp),
    Verdict = case Fun of
                  _ when is_function(Fun, 4) -> Fun(Otp, Der, Event, US);
                  _ -> Fun(Otp, Event, US)
              end,
    case {Verdict, Event} of
        {{valid, US1}, _} -> walk(Fun, US1, Rest);
        {{unknown, US1}, {bad_cert, _}} -> _ = US1, false;
        {{unknown, US1}, _} -> walk(Fun, US1, Rest);
        _ -> false
    end.

%% OpenSSL's verify codes as the reasons OTP's ssl gives in {bad_cert, _}.
bad_cert_reason(N, _) when N =:= 2; N =:= 19; N =:= 20; N =:= 21 -> unknown_ca;
bad_cert_reason(18, _) -> selfsigned_peer;
bad_cert_reason(N, _) when N =:= 9; N =:= 10 -> cert_expired;
bad_cert_reason(N, _) when N =:= 4; N =:= 6; N =:= 7 -> invalid_signature;
bad_cert_reason(23, _) -> {revoked, unspecified};
bad_cert_reason(N, _) when N =:= 3; N =:= 12 -> {revocation_status_undetermined, N};
bad_cert_reason(24, _) -> missing_basic_constraint;
bad_cert_reason(N, _) when N =:= 22; N =:= 25 -> max_path_length_reached;
bad_cert_reason(26, _) -> invalid_ext_key_usage;
bad_cert_reason(62, _) -> hostname_check_failed;
bad_cert_reason(N, Text) when is_binary(Text) -> {openssl, N, binary_to_list(Text)};
bad_cert_reason(N, Text) -> {openssl, N, Text}.
