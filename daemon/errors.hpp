// Error kinds of docs/protocol.md §2.3: short stable words plus a message
// for people.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <system_error>

namespace tlsport::daemon {

/// A classified error as sent to clients.
struct ErrorInfo {
  std::string kind;     ///< stable word: errno name, "tls", "closed", ...
  std::string message;  ///< for people

  nlohmann::json to_json() const { return {{"kind", kind}, {"message", message}}; }
};

/// Classifies a system or asio error: errno names in lower case, "nxdomain"
/// for names that do not resolve, "cancelled" for aborted operations.
ErrorInfo classify(const std::error_code& ec);

/// The reason text of the oldest error on OpenSSL's error queue (clearing
/// it), or `fallback` when the queue is empty.
std::string take_openssl_error(const std::string& fallback);

}  // namespace tlsport::daemon
