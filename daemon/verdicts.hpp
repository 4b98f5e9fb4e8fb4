// The verify callback (tls.verify_callback): the peer's chain and OpenSSL's
// verdict go to the owning client in a verify_peer event, and its answer
// decides, within a timeout that rejects. A client-side handshake waits
// for it mid-handshake; a server decides once the client's last flight is
// in, before the connection is handed to anyone.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>

#include "daemon/connection.hpp"

namespace tlsport::daemon {

struct Shared;

/// The default time a client has to answer.
inline constexpr std::chrono::milliseconds kDefaultCallbackTimeout{30000};

/// The time a client has to answer questions about these settings.
inline std::chrono::milliseconds callback_timeout_of(const protocol::TlsSettings& settings) {
  return settings.callback_timeout_ms ? std::chrono::milliseconds(*settings.callback_timeout_ms)
                                      : kDefaultCallbackTimeout;
}

/// For a client-side handshake: asks `client` (its command's `ref`) and
/// gives the connection the answer.
Connection::AskVerdict ask_client_verdict(Shared& shared, std::uint32_t client, nlohmann::json ref,
                                          std::chrono::milliseconds timeout);

/// For a server-side connection whose handshake is done: asks `client`
/// (`about` adds what the event concerns, e.g. {"listener":L}); `decide`
/// gets true only for an answer that accepts.
void ask_server_verdict(Shared& shared, std::uint32_t client, nlohmann::json about,
                        Connection& connection, std::chrono::milliseconds timeout,
                        std::function<void(bool accept)> decide);

/// True when `connection`'s context asks the owner to judge the peer.
bool wants_verdict(const Connection& connection);

}  // namespace tlsport::daemon
