// Every reply and event the daemon sends, built in one place
// (docs/protocol.md §2): the JSON model that the control encoders write.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>

#include "protocol/wire_error.hpp"

namespace tlsport::protocol {

/// {"ok":true,…body,"ref":R} (no ref when `ref` is null).
nlohmann::json ok_reply(const nlohmann::json& ref, nlohmann::json body = nlohmann::json::object());
/// {"ok":false,"error":{kind,message},"ref":R}.
nlohmann::json error_reply(const nlohmann::json& ref, const WireError& error);
/// A deliver's error: as error_reply() with the socket's "id".
nlohmann::json deliver_error_reply(std::uint32_t id, const nlohmann::json& ref,
                                   const WireError& error);

/// socket_closed: reason "normal" when `error` is null, else the error.
nlohmann::json socket_closed_event(std::uint32_t id, const WireError* error);
/// passive: an active count reached zero.
nlohmann::json passive_event(std::uint32_t id);
/// busy: the socket's send buffer is above its mark.
nlohmann::json busy_event(std::uint32_t id);
/// ready: the socket's send buffer is below a quarter of its mark again.
nlohmann::json ready_event(std::uint32_t id);

/// What the new owner of a socket or listener learns with `owned`.
struct OwnedFacts {
  std::uint32_t id = 0;     ///< the socket
  std::uint32_t from = 0;   ///< the old owner's number
  std::string from_name;    ///< its name ("" = none)
  bool listener = false;    ///< a listener rather than a connection
  nlohmann::json endpoint;  ///< connection: its peer; listener: its address
  std::string mode;         ///< connection: its framing mode
  bool busy = false;        ///< connection: between busy and ready
};
/// owned: a socket was handed to this client.
nlohmann::json owned_event(const OwnedFacts& facts);

}  // namespace tlsport::protocol
