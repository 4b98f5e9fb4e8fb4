// The error kinds of docs/protocol.md §2.3 and the classified error that
// replies and socket_closed events carry. Pure: no I/O, no OpenSSL.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <system_error>

namespace tlsport::protocol {

/// The kinds that are not errno names. Errors from the operating system keep
/// their errno (std::system_category or std::generic_category) and go on the
/// wire as its name in lower case: "econnrefused", "emfile", ...
enum class ErrorKind {
  bad_request = 1,       ///< malformed message; missing, wrong-typed or unknown field; unknown op
  no_such_socket,        ///< no socket or listener has that id (any more)
  not_owner,             ///< the socket belongs to another client
  no_such_client,        ///< controlling_process names a client that is not attached
  closed,                ///< the socket, the listener or the daemon closed
  cancelled,             ///< an accept or recv was withdrawn (cancel, hand-over)
  timeout,               ///< a connect, handshake, recv or close took too long
  tls,                   ///< a handshake or record failed: OpenSSL's reason text
  unsupported_protocol,  ///< SSLv2, SSLv3, TLS 1.0 or 1.1 was asked for
  bad_tls_config,        ///< a file that cannot be read, a wrong password, a key not matching
  nxdomain,              ///< a host name that does not resolve
  overloaded,            ///< a cap on sockets, clients or outstanding commands was reached
  bad_packet,            ///< a peer's byte stream broke the socket's framing (BER)
  error,                 ///< none of the above (the message says what)
};

const std::error_category& error_kind_category();
std::error_code make_error_code(ErrorKind kind);

/// A classified error as sent to clients: its kind and a message for people.
struct WireError {
  std::error_code code;  ///< an ErrorKind, or an errno in the system/generic category
  std::string message;   ///< for people (OpenSSL's reason text for tls)

  /// The stable word of the wire: "bad_request", "econnreset", ...
  std::string kind() const;
  /// {"kind":…,"message":…}
  nlohmann::json to_json() const { return {{"kind", kind()}, {"message", message}}; }
  /// True when the code is this kind.
  bool is(ErrorKind k) const { return code == make_error_code(k); }
};

/// A WireError of kind `kind`.
inline WireError wire_error(ErrorKind kind, std::string message) {
  return {make_error_code(kind), std::move(message)};
}
/// A WireError for an errno value (std::errc::message_size -> "emsgsize").
inline WireError wire_error(std::errc errc, std::string message) {
  return {std::make_error_code(errc), std::move(message)};
}

}  // namespace tlsport::protocol

namespace std {
template <>
struct is_error_code_enum<tlsport::protocol::ErrorKind> : true_type {};
}  // namespace std
